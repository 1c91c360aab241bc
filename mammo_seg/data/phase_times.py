"""Seconds spent per phase of prep (read, mask, hashing, resampling, tiling, encoding, ...), for the
throughput benchmark.

A worker times its phases of each scan into its :class:`PhaseTimes`, the parent merges them with its own
(serialising, writing); :func:`data_prep.prepare.prepare` returns the total. Timings never reach a
file of the prep output, so the output stays byte-identical from run to run.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field


@dataclass
class PhaseTimes:
    """Seconds per phase name, summed over scans (and over worker processes)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str):
        """Add the time the block takes to phase ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def merge(self, other: PhaseTimes) -> PhaseTimes:
        """Add ``other``'s seconds into this one (returned)."""
        for name, seconds in other.seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        return self

    def rounded(self, digits: int = 3) -> dict[str, float]:
        return {name: round(seconds, digits) for name, seconds in self.seconds.items()}
