"""``mammo prep``: raw dataset → cases → patient-level splits → sharded tiles."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace

from data_prep import cbis_ddsm, mias
from data_prep.splits import assign_splits
from mammo_seg import atomic
from mammo_seg.config import PrepSection
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
    scans: int  # scans written (those of scans.json): a scan that failed is a problem, not a scan
    problems: list
    phase_seconds: dict = field(default_factory=dict)  # seconds per phase (header index, read, ...; benchmarks)

    @property
    def usable(self) -> bool:
        return any(self.records.values())


def print_problems(problems: list, listed_in: str) -> None:
    """One console line per problem, except that a group of them (e.g. the 210 images an Info.txt lists that a
    partial download lacks) is one line with its count; ``problems.csv`` lists every one."""
    groups: dict[str, list] = {}
    for p in problems:
        if p.group:
            groups.setdefault(p.group, []).append(p)
        else:
            print(f"problem: {p.line()}", file=sys.stderr)
    for group, members in groups.items():
        if len(members) == 1:
            print(f"problem: {members[0].line()}", file=sys.stderr)
        else:
            print(f"problem: {members[0].file}: {len(members)} {group} (each listed in {listed_in})", file=sys.stderr)


def warn_lesion_free_splits(cases: list, scan_split: dict, val_fraction: float, ignore_kinds=()) -> None:
    """A warning naming a split that ends with no scan with a lesion (an abnormality of a kind not in
    ``ignore_kinds``): training, or validation (where an operating point would be chosen)."""
    for split in ("train", "val") if val_fraction > 0 else ("train",):
        scans = [c for c in cases if scan_split.get(c.scan_id) == split]
        if scans and not any(a.kind not in ignore_kinds for c in scans for a in c.abnormalities):
            print(f"warning: the {split!r} split has {len(scans)} scans and none with a lesion", file=sys.stderr)


def prepare(dataset: str, raw: str, out: str, settings: PrepSection | None = None, workers: int = 1,
            progress: bool = True, resolution: Resolution | None = None, tiling: TilingConfig | None = None,
            **fields) -> PrepSummary:
    """Prepare ``dataset`` ("cbis-ddsm" or "mias") from ``raw`` into ``out``; see the README for the layout.

    ``settings`` (default: :class:`PrepSection`'s defaults) with any of its ``fields`` given as keywords
    (``tiles=(64,)``, ``seed=3``, …), checked before anything is read. ``resolution`` and ``tiling``
    replace its scale and crop counts with finer objects (see :meth:`PrepSection.prep_config`).
    ``workers`` only changes the speed: the output is the same for any number.
    """
    if dataset not in CONVERTERS:
        raise MammoError(None, f"unknown dataset {dataset!r}; choose from {', '.join(CONVERTERS)}")
    if not os.path.isdir(raw):
        raise MammoError(raw, "raw data directory not found")
    config = replace(settings or PrepSection(), **fields).prep_config(dataset, NOMINAL_SPACING_MM[dataset],
                                                                     resolution, tiling)
    if workers < 1:
        raise MammoError("--workers", f"must be at least 1, got {workers}")
    start = time.perf_counter()
    cases, problems, report = CONVERTERS[dataset](raw, progress=progress)
    index_seconds = time.perf_counter() - start
    print_problems(problems, PrepOutput(out).problems_file)
    scan_split, splits = assign_splits(cases, config.val_fraction, config.test_fraction, config.seed)
    warn_lesion_free_splits(cases, scan_split, config.val_fraction, config.ignore_kinds)
    os.makedirs(out, exist_ok=True)
    atomic.write_json(PrepOutput(out).splits_file, {"dataset": dataset, **splits}, PrepOutput(out).tmp_dir)
    result = write_dataset(cases, scan_split, config, out, workers=workers, problems=problems,
                           extra_manifest={"dataset": dataset, "collection": report}, progress=progress,
                           raw_root=raw)
    records = {name: sum(m["records_per_shard"].values()) for name, m in result["manifests"].items()}
    return PrepSummary(out, records, result["scans"], result["problems"],
                       {"header_index": round(index_seconds, 3), **result["phase_seconds"]})
