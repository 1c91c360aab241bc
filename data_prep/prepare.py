"""``mammo prep``: raw dataset → cases → patient-level splits → sharded tiles."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace

from data_prep import cbis_ddsm, mias
from data_prep.splits import assign_splits
from mammo_seg import atomic
from mammo_seg.data import MAX_TILE
from mammo_seg.data.prep_config import PrepConfig
from mammo_seg.data.prep_output import PrepOutput
from mammo_seg.data.resolution import Resolution
from mammo_seg.data.shards import write_dataset
from mammo_seg.data.tiling import TilingConfig
from mammo_seg.errors import MammoError

CONVERTERS = {"cbis-ddsm": cbis_ddsm.collect_cases, "mias": mias.collect_cases}
# the spacing of a scan whose file carries none; recorded in the manifest and, through it, in the model
NOMINAL_SPACING_MM = {"cbis-ddsm": cbis_ddsm.NOMINAL_SPACING_MM, "mias": mias.NOMINAL_SPACING_MM}


@dataclass
class PrepSummary:
    out: str
    records: dict  # output name -> number of records
    scans: int
    problems: list
    phase_seconds: dict = field(default_factory=dict)  # seconds per phase (header index, read, ...; benchmarks)

    @property
    def usable(self) -> bool:
        return any(self.records.values())


def prepare(dataset: str, raw: str, out: str, tiles=(320, 640), workers: int = 1, seed: int = 0,
            resolution: Resolution = Resolution(), tiling: TilingConfig = TilingConfig(),
            val_fraction: float = 0.1, test_fraction: float = 0.2, scans_per_shard: int = 64,
            full_scans: bool = False, progress: bool = True) -> PrepSummary:
    """Prepare ``dataset`` ("cbis-ddsm" or "mias") from ``raw`` into ``out``; see the README for the layout."""
    if dataset not in CONVERTERS:
        raise MammoError(None, f"unknown dataset {dataset!r}; choose from {', '.join(CONVERTERS)}")
    if not os.path.isdir(raw):
        raise MammoError(raw, "raw data directory not found")
    if not tiles and not full_scans:
        raise MammoError(None, "nothing to write: give --tiles and/or --full-scans")
    if any(not 16 <= t <= MAX_TILE for t in tiles):
        raise MammoError("--tiles", f"tile sizes must be from 16 to {MAX_TILE} px, got {list(tiles)}")
    if workers < 1 or scans_per_shard < 1:
        raise MammoError(None, "--workers and --scans-per-shard must be at least 1")
    if seed < 0:
        raise MammoError("--seed", f"must be at least 0, got {seed}")
    for flag, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= value < 1:
            raise MammoError(flag, f"must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1:
        raise MammoError("--val-fraction", f"and --test-fraction must sum to less than 1, got {val_fraction} "
                                           f"and {test_fraction}")
    if resolution.nominal_spacing_mm is None:
        resolution = replace(resolution, nominal_spacing_mm=NOMINAL_SPACING_MM[dataset])
    start = time.perf_counter()
    cases, problems, report = CONVERTERS[dataset](raw, progress=progress)
    index_seconds = time.perf_counter() - start
    for p in problems:
        print(f"problem: {p.line()}", file=sys.stderr)
    scan_split, splits = assign_splits(cases, val_fraction, test_fraction, seed)
    os.makedirs(out, exist_ok=True)
    config = PrepConfig(dataset=dataset, tiles=tuple(int(t) for t in tiles), resolution=resolution,
                        tiling=tiling, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                        scans_per_shard=scans_per_shard, full_scans=full_scans)
    atomic.write_json(PrepOutput(out).splits_file, {"dataset": dataset, **splits}, PrepOutput(out).tmp_dir)
    result = write_dataset(cases, scan_split, config, out, workers=workers, problems=problems,
                           extra_manifest={"dataset": dataset, "collection": report}, progress=progress,
                           raw_root=raw)
    records = {name: sum(m["records_per_shard"].values()) for name, m in result["manifests"].items()}
    return PrepSummary(out, records, len(cases), result["problems"],
                       {"header_index": round(index_seconds, 3), **result["phase_seconds"]})
