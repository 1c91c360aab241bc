"""Prep throughput on CBIS-DDSM-size phantoms → JSON: scans/s with 1 and 2 workers against the read-only floor.

    .venv/bin/python benchmarks/prep_throughput.py --out benchmarks/results/prep_throughput_cpu.json

Real-size phantoms (``mammo synth cbis-ddsm --scale 1.0``: full mammograms of about 3000 × 5000 at 50 µm, with
their crops and masks) go through ``mammo_seg``'s own functions, timed in one process run as ratios:

* the header index and case list (``collect_cases``),
* the read-only floor: every full mammogram read by the reader (with the same worker count; 2 workers are
  spawned processes, whose start-up is part of their time),
* ``prepare`` with tiles 320 and 640, with 1 and 2 workers (the output is byte-identical for any count; the
  tests check that), with the seconds per phase that prep itself measures (``PrepSummary.phase_seconds``):
  the header index, then per scan in the workers read, mask, hashing, tiling (crop, resample image and mask,
  background rejection), PNG encoding and statistics, and in the parent serialising, writing (shards,
  resume state, manifests) and waiting for the workers. Worker phases are summed over the worker processes
  (CPU-bound, so about CPU seconds); ``phase_seconds_per_scan`` divides them by the scans.

Targets (issue "prep and predict as fast as their unavoidable parts"): prep ≤ 2 × the read-only time with the
same worker count, and ≥ 5 CBIS-size scans/s on 2 cores.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import write_report  # noqa: E402


def _read(path: str) -> int:
    from mammo_seg.io import read_scan

    return read_scan(path).pixels.size


def read_floor(paths: list[str], workers: int) -> float:
    start = time.perf_counter()
    if workers == 1:
        for path in paths:
            _read(path)
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_read, paths, chunksize=1)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON file (default: print only)")
    parser.add_argument("--patients", type=int, default=3, help="phantom patients (4 views each)")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    from data_prep.cbis_ddsm import collect_cases
    from data_prep.prepare import prepare
    from mammo_seg.synthetic.cbis_ddsm import write_cbis_ddsm

    work = args.work or tempfile.mkdtemp(prefix="prep_throughput_")
    raw = os.path.join(work, "raw")
    if not os.path.isdir(raw):
        write_cbis_ddsm(raw, args.patients, seed=0, scale=1.0, progress=False)
    import tensorflow  # noqa: F401 - prep's parent writes the records with it: import it before any timing

    start = time.perf_counter()
    cases, _, _ = collect_cases(raw, progress=False)
    index_seconds = time.perf_counter() - start
    paths = sorted({c.scan_path for c in cases})
    report = {"scans": len(paths), "patients": args.patients, "cpu_count": os.cpu_count(),
              "load_average_at_start": [round(v, 2) for v in os.getloadavg()],  # other jobs on the machine
              "header_index_seconds": round(index_seconds, 3), "workers": {}}
    for workers in (1, 2):
        floor = read_floor(paths, workers)
        out = os.path.join(work, f"out{workers}")
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        summary = prepare("cbis-ddsm", raw, out, tiles=(320, 640), workers=workers, progress=False)
        seconds = time.perf_counter() - start
        phases = dict(sorted(summary.phase_seconds.items(), key=lambda kv: -kv[1]))
        report["workers"][str(workers)] = {
            "read_only_seconds": round(floor, 3), "prep_seconds": round(seconds, 3),
            "scans_per_second": round(len(paths) / seconds, 3),
            "prep_over_read_only": round(seconds / floor, 2),
            "phase_seconds": phases,
            "phase_seconds_per_scan": {k: round(v / len(paths), 3) for k, v in phases.items()}}
    report["targets"] = {"prep_over_read_only": "<= 2", "scans_per_second_2_workers": ">= 5"}
    write_report(report, args.out)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
