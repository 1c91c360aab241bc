"""Progress of a long loop: a bar on a terminal; in a log file, one line per tenth of the work.

A progress bar written to a file is hundreds of kilobytes of carriage-return redraws; a person reading
``train.log`` or a CI log wants a line now and then (nnU-Net and Keras do the same).
"""

from __future__ import annotations

import sys


class _Lines:
    """tqdm's ``update``/``set_postfix``/``close`` as a line every tenth of ``total`` (and at the end)."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every = max(1, total // 10)
        self.next = (initial // self.every + 1) * self.every

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self.next or self.n == self.total:
            print(f"{self.desc}: {self.n}/{self.total} {self.unit}s", file=sys.stderr, flush=True)
            self.next = (self.n // self.every + 1) * self.every

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0, **tqdm_args):
    """A tqdm bar on a terminal, lines in a file, nothing when not ``enabled``."""
    from tqdm import tqdm

    if enabled and not sys.stderr.isatty():
        return _Lines(total, desc, unit, initial)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, **tqdm_args)
