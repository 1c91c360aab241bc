"""Prep's statistics: what one scan contributes to an output folder, merged per shard, per split and per source.

A worker makes one :class:`OutputStats` per scan and output folder (a tile size, or ``full``); the shard
writer merges its scans' into the shard's, which the resume state keeps (:meth:`OutputStats.to_dict`);
the manifest merges the shards' into its ``splits`` (:func:`split_summaries`) and its ``intensity`` per
source (:func:`intensity_summary`). Every merge adds in the same order as before the split into modules,
so the numbers, and the manifest's bytes, are those of earlier versions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from mammo_seg.data.features import IMAGE_MAX, LESION
from mammo_seg.data.tiling import TileCounts


@dataclass(frozen=True)
class Intensity:
    """Σx, Σx², n, min and max of stored tile pixels scaled to [0, 1]; the empty one has min 1 and max 0."""

    total: float = 0.0
    total_sq: float = 0.0
    n: int = 0
    lo: float = 1.0
    hi: float = 0.0

    @classmethod
    def of(cls, values: np.ndarray) -> Intensity:
        """The statistics of one array of values in [0, 1] (float64, as stored tiles are scaled)."""
        return cls(float(values.sum()), float(np.square(values).sum()), int(values.size),
                   float(values.min()), float(values.max()))

    def merge(self, other: Intensity) -> Intensity:
        return Intensity(self.total + other.total, self.total_sq + other.total_sq, self.n + other.n,
                         min(self.lo, other.lo), max(self.hi, other.hi))

    def to_list(self) -> list:
        """The resume state's form: ``[Σx, Σx², n, min, max]``."""
        return [self.total, self.total_sq, self.n, self.lo, self.hi]

    @classmethod
    def from_list(cls, values) -> Intensity:
        return cls(*values)

    def summary(self) -> dict:
        """The manifest's ``records`` entry of one source: mean, contrast (standard deviation), min, max."""
        mean = self.total / self.n if self.n else None
        contrast = float(np.sqrt(max(self.total_sq / self.n - mean * mean, 0.0))) if self.n else None
        return {"mean": mean, "contrast": contrast, "min": self.lo, "max": self.hi}


NO_RECORDS = {"mean": None, "contrast": None, "min": None, "max": None}  # a source without any record


def merge_by_source(into: dict[str, Intensity], other: dict[str, Intensity]) -> None:
    """Add ``other``'s per-source statistics to ``into``, in ``other``'s order."""
    for source, stats in other.items():
        into[source] = into.get(source, Intensity()).merge(stats)


@dataclass
class OutputStats:
    """Records and pixels of one output folder, for one scan, one shard or one split."""

    records: int = 0
    scans: int = 0
    counts: TileCounts = field(default_factory=TileCounts)
    positive_pixels: int = 0
    pixels: int = 0
    positive_tiles: int = 0
    by_source: dict[str, Intensity] = field(default_factory=dict)  # tile pixel intensity per source

    def merge(self, other: OutputStats) -> OutputStats:
        """Add ``other`` into this one (returned)."""
        self.records += other.records
        self.scans += other.scans
        for key, value in asdict(other.counts).items():
            setattr(self.counts, key, getattr(self.counts, key) + value)
        self.positive_pixels += other.positive_pixels
        self.pixels += other.pixels
        self.positive_tiles += other.positive_tiles
        merge_by_source(self.by_source, other.by_source)
        return self

    def to_dict(self) -> dict:
        """The resume state's form of a shard's statistics."""
        return {"records": self.records, "scans": self.scans, "counts": asdict(self.counts),
                "positive_pixels": self.positive_pixels, "pixels": self.pixels,
                "positive_tiles": self.positive_tiles,
                "tiles_by_source": {s: i.to_list() for s, i in self.by_source.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> OutputStats:
        return cls(d["records"], d["scans"], TileCounts(**d["counts"]), d["positive_pixels"], d["pixels"],
                   d["positive_tiles"], {s: Intensity.from_list(v) for s, v in d["tiles_by_source"].items()})

    def split_entry(self, shards: list[str]) -> dict:
        """The manifest's entry of one split made of ``shards``, with these statistics."""
        return {"shards": shards, "records": self.records, "scans": self.scans,
                "positive_tiles": self.positive_tiles, "positive_pixels": self.positive_pixels,
                "pixels": self.pixels, **asdict(self.counts),
                "positive_pixel_fraction": self.positive_pixels / self.pixels if self.pixels else 0.0}


def scan_output_stats(source: str, tiles, counts: TileCounts) -> OutputStats:
    """What one scan's kept ``tiles`` (uint16 images, stored masks whose lesion pixels are those of value 1),
    counted by kind in ``counts``, add to an output folder."""
    stats = OutputStats(records=len(tiles), scans=1, counts=counts)
    intensity = Intensity()
    for t in tiles:
        n_pos = int(np.count_nonzero(t.mask == LESION))
        stats.positive_pixels += n_pos
        stats.positive_tiles += n_pos > 0
        stats.pixels += t.mask.size
        intensity = intensity.merge(Intensity.of(t.image.astype(np.float64) / IMAGE_MAX))
    stats.by_source[source] = intensity
    return stats


def split_summaries(shards: list[tuple[str, str, OutputStats]]) -> dict[str, dict]:
    """The manifest's ``splits`` from (split, shard name, shard statistics) in shard order."""
    merged: dict[str, tuple[list[str], OutputStats]] = {}
    for split, name, stats in shards:
        names, total = merged.setdefault(split, ([], OutputStats()))
        names.append(name)
        total.merge(stats)
    return {split: total.split_entry(names) for split, (names, total) in merged.items()}


@dataclass
class RawStats:
    """Raw scan values of one source before scaling (min, max and mean over scans of the per-scan mean)."""

    raw_min: float | None = None
    raw_max: float | None = None
    mean_sum: float = 0.0
    scans: int = 0

    def add(self, scan: dict) -> None:
        """Add one scan's ``raw_min``, ``raw_max`` and ``raw_mean``."""
        self.raw_min = scan["raw_min"] if self.raw_min is None else min(self.raw_min, scan["raw_min"])
        self.raw_max = scan["raw_max"] if self.raw_max is None else max(self.raw_max, scan["raw_max"])
        self.mean_sum += scan["raw_mean"]
        self.scans += 1

    def to_dict(self) -> dict:
        return {"raw_min": self.raw_min, "raw_max": self.raw_max,
                "raw_mean": self.mean_sum / self.scans if self.scans else None, "scans": self.scans}


def intensity_summary(raw: dict[str, RawStats], tiles: dict[str, Intensity]) -> dict[str, dict]:
    """The manifest's ``intensity``: per source, its scans' raw values and its records' stored values."""
    return {source: {"scans": agg.to_dict(), "records": tiles[source].summary() if source in tiles else dict(NO_RECORDS)}
            for source, agg in raw.items()}
