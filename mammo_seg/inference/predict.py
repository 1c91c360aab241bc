"""``mammo predict``: full-scan inference on DICOM (and PGM/PNG/TIFF) files.

Per scan: the reader prep uses → resample to the model's training resolution (a lesion must look
as large as in training) → one pass, or exact strips when it would not fit (``--tile``: Gaussian-weighted
windows) → probabilities back on the original grid → threshold → outputs (``--format``; default all):

Findings outside the breast (the largest bright region: film labels and markers are not breast)
are dropped unless ``breast_mask=False``.

``<id>_mask.png`` (0/255 on the original grid), ``<id>_prob.npz`` (float16 probabilities),
``<id>_overlay.png`` (the scan with lesion outlines), ``<id>_seg.dcm`` (DICOM Segmentation of a
DICOM source), ``<id>_sr.dcm`` (DICOM Structured Report of its lesions, :mod:`mammo_seg.inference.sr`),
``<id>.json`` (lesions, areas in mm², boxes, probabilities, image-level call), and
``summary.json`` for the run. Ids are file ids (the path below the input, without UIDs); only the
DICOM SEG carries patient and study attributes. The layout of these files, the records and the
settings a ``--continue`` must match are :mod:`mammo_seg.inference.prediction_output`'s.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import stat
import sys
import threading
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from mammo_seg import __version__
from mammo_seg.data.resolution import ScanGrid
from mammo_seg.detection import detection_mask, min_area_px
from mammo_seg.errors import MammoError, printable, without_values
from mammo_seg.inference import prediction_output as po
from mammo_seg.inference import writers
from mammo_seg.inference.pipeline import sequential, staged
from mammo_seg.inference.postprocess import breast_region
from mammo_seg.inference.prediction_output import PredictionOutput
from mammo_seg.io import MAX_PIXELS, file_sha256, is_dicom, read_dicom, read_scan_with_dataset
from mammo_seg.io.dicom import INDEX_TAGS

FORMATS = tuple(po.SCAN_FILES)
SCAN_SUFFIXES = (".dcm", ".pgm", ".png", ".tif", ".tiff")
UID = re.compile(r"^\d+(\.\d+){3,}$")


@dataclass
class PredictOptions:
    threshold: float | None = None  # None: the model's recorded operating point, else 0.5
    min_area_mm2: float | None = None  # smallest lesion reported; None: the operating point's, else 0 (any)
    flip: bool | None = None  # left-right flip test-time augmentation; None: the operating point's, else off
    tile: int | None = None  # None: one pass when it fits, else exact strips (sliding_window)
    overlap: float = 0.25
    batch_size: int = 4
    formats: tuple = FORMATS
    force: bool = False  # run on DICOMs that are not mammograms
    breast_mask: bool = True  # drop findings outside the breast (film labels, markers)
    all_images: bool = False  # also crops and ROI masks (by default only full mammograms)
    spacing_mm: float | None = None  # override every scan's spacing (else PixelSpacing, else the model's nominal)


def _regular(path: str) -> bool:
    """True for a regular file (after symlinks); FIFOs, sockets, devices, dangling links and link loops
    are never opened (a FIFO would block the run forever)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def find_scans(path: str) -> tuple[str, list[str]]:
    """(root, scan files): a file, or every regular scan file below a directory (sorted)."""
    if os.path.isdir(path):
        files = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                full = os.path.join(root, name)
                if _regular(full) and (name.lower().endswith(SCAN_SUFFIXES) or ("." not in name and is_dicom(full))):
                    files.append(os.path.abspath(full))
        return os.path.abspath(path), files
    if _regular(path):
        return os.path.dirname(os.path.abspath(path)), [os.path.abspath(path)]
    if os.path.lexists(path):
        raise MammoError(path, "not a regular file (a FIFO, socket, device or broken link)")
    raise MammoError(path, "no such file or directory")


#: Longest output id; longer ones are cut and given a hash of the whole id, so they stay unique.
MAX_ID = 100
#: Folder names of the NBIA download of CBIS-DDSM: a study date folder and a numbered series folder.
NBIA_FOLDER = re.compile(r"^(\d{2}-\d{2}-\d{4}-.*|\d+\.\d+-.*)$")


def file_id(path: str, root: str) -> str:
    """The path below ``root`` without its extension, UID and NBIA date/series folders, made file-name
    safe and at most :data:`MAX_ID` characters."""
    parts = os.path.splitext(os.path.relpath(path, root))[0].split(os.sep)
    kept = [p for p in parts[:-1] if not UID.match(p) and not NBIA_FOLDER.match(p)] + parts[-1:]
    scan_id = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(kept)).strip("-_.") or "scan"
    if len(scan_id) > MAX_ID:
        scan_id = scan_id[:MAX_ID - 9] + "-" + hashlib.sha256(scan_id.encode()).hexdigest()[:8]
    return scan_id


class NotFullMammogram(MammoError):
    """A crop or ROI mask beside the full mammograms: skipped unless ``all_images``."""


#: A DICOM with fewer than this fraction of the pixels of its study's largest image is a crop.
CROP_FRACTION = 0.25
CROP_WORDS = ("cropped", "roi mask")


def not_full_mammograms(files: list[str]) -> dict:
    """{path: reason} for the DICOMs whose headers say they are crops or ROI masks, not full mammograms:
    a SeriesDescription naming them (CBIS-DDSM, NBIA), or far fewer pixels than the largest image of
    the same study. Files whose header cannot be read are left to the scan's own error.

    The largest image of a study is the largest one that is itself a scan: its header within the reader's
    pixel limit and its file read successfully (:func:`_readable`, tried only in a study where some image
    would otherwise be a crop). A broken or forged file claiming far more pixels therefore never makes
    the good scans of its study look like crops.
    """
    headers = {}
    for path in files:
        if not is_dicom(path):
            continue
        try:
            with header_warnings():
                ds = read_dicom(path, header_only=True, tags=INDEX_TAGS)
                headers[path] = (str(ds.get("SeriesDescription", "") or "").lower(),
                                 str(ds.get("StudyInstanceUID", "")),
                                 int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0))
        except Exception:
            continue
    by_size: dict[str, list] = {}
    for path, (_, study, pixels) in headers.items():
        by_size.setdefault(study, []).append((pixels, path))
    largest: dict[str, int] = {}

    def largest_scan(study: str) -> int:
        if study not in largest:
            largest[study] = next((pixels for pixels, path in sorted(by_size[study], reverse=True)
                                   if pixels <= MAX_PIXELS and _readable(path)), 0)
        return largest[study]

    skipped = {}
    for path, (description, study, pixels) in headers.items():
        word = next((w for w in CROP_WORDS if w in description), None)
        if word:
            skipped[path] = f"SeriesDescription says {word!r}: not a full mammogram; --all-images includes it"
        elif (study and pixels and pixels < CROP_FRACTION * max(p for p, _ in by_size[study])
              and pixels < CROP_FRACTION * largest_scan(study)):
            skipped[path] = (f"{pixels} pixels, under {CROP_FRACTION:g} of the largest image of its study: a crop, "
                             f"not a full mammogram; --all-images includes it")
    return skipped


def _readable(path: str) -> bool:
    """True when the reader reads ``path`` as a scan (its header messages are kept off the console)."""
    try:
        with header_warnings():
            read_scan_with_dataset(path)
        return True
    except Exception:  # noqa: BLE001 - any failure means the file cannot stand for its study
        return False


def report_skipped(skipped: dict, done: dict, ids: list[str], files: list[str]) -> None:
    """One console line per scan skipped as a crop or ROI mask (not those a continued run already has)."""
    from tqdm import tqdm

    for path, scan_id in zip(files, ids):
        if path in skipped and scan_id not in done:
            tqdm.write(f"skipped: {printable(path)}: {skipped[path]}", file=sys.stderr)


#: Libraries whose warnings and log lines may quote header values (names, dates): never on the console.
HEADER_LIBRARIES = ("pydicom", "highdicom", "PIL")


_route = threading.local()


@contextlib.contextmanager
def notes_to(notes: list):
    """Header messages raised in this thread during the block go to ``notes`` (while they are captured:
    :func:`header_messages_captured`); each scan of a pipelined run collects its own."""
    saved = getattr(_route, "notes", None)
    _route.notes = notes
    try:
        yield notes
    finally:
        _route.notes = saved


def _note(message) -> None:
    """Add a captured message, its quoted values replaced by ``'…'``, to this thread's notes (if any)."""
    notes = getattr(_route, "notes", None)
    text = without_values(message)
    if notes is not None and text not in notes:
        notes.append(text)


@contextlib.contextmanager
def header_messages_captured():
    """While the block runs, in every thread, the warnings and log lines of :data:`HEADER_LIBRARIES` go
    to the notes of the scan that thread works on (:func:`notes_to`) instead of the console; other
    warnings are shown as usual. Enter it from the main thread."""

    class Collect(logging.Handler):
        def emit(self, record):
            _note(record.getMessage())

    loggers = [logging.getLogger(name) for name in HEADER_LIBRARIES]
    saved = [(logger.propagate, logger.handlers[:]) for logger in loggers]
    handler = Collect()
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if any(f"{os.sep}{name}{os.sep}" in str(filename) for name in HEADER_LIBRARIES):
            _note(message)
        else:
            show(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = showwarning
        for logger in loggers:
            logger.handlers, logger.propagate = [handler], False
        try:
            yield
        finally:
            for logger, (propagate, handlers) in zip(loggers, saved):
                logger.handlers, logger.propagate = handlers, propagate


@contextlib.contextmanager
def header_warnings():
    """Collect the warnings and log lines of :data:`HEADER_LIBRARIES` instead of printing them.

    Yields a live list of their messages with every quoted value replaced by ``'…'`` (pydicom
    quotes the malformed value: a birth date, a name). Other warnings are shown as usual.
    """
    notes: list[str] = []
    with header_messages_captured(), notes_to(notes):
        yield notes


def _reason(error: BaseException) -> str:
    """One line naming the cause: a MammoError's reason, else the exception type and message."""
    if isinstance(error, MammoError):
        return printable(error.reason)
    message = " ".join(str(error).split())
    return printable(f"{type(error).__name__}: {message}" if message else type(error).__name__)


#: Errors writing outputs that no later scan can escape.
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _dooms_the_run(error: BaseException, out: str) -> bool:
    """A full disk anywhere, or no permission on the output folder: every later scan would fail too."""
    if not isinstance(error, OSError) or error.errno not in FATAL_ERRNOS:
        return False
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    names = [n for n in (error.filename, error.filename2) if n]
    out = os.path.abspath(out)
    return any(os.path.abspath(os.fspath(n)).startswith(out + os.sep) or os.path.abspath(os.fspath(n)) == out
               for n in names)


def _check_writable(out: str) -> None:
    """Create ``out`` and prove a file can be written there, before any scan is read."""
    probe = os.path.join(out, ".mammo-write-test")
    try:
        os.makedirs(out, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"x")
        os.remove(probe)
    except OSError as e:
        raise MammoError(out, f"output folder is not writable ({e.strerror or _reason(e)})") from None


def _readable_model(path: str) -> str:
    """The model (a ``.keras`` file or an ensemble's ``ensemble.json``), its files checked to be zip archives
    (``.keras`` files), so that a corrupt one says so."""
    from mammo_seg.run_dir import model_files

    name, files = model_files(path)
    for file in files:
        if not zipfile.is_zipfile(file):
            raise MammoError(file, "corrupt or truncated .keras model (not a zip archive)")
    return name


def read_checked(path: str, force: bool):
    """The scan (same reader as prep) and its DICOM dataset; refuses what is not a mammogram."""
    scan, dataset = read_scan_with_dataset(path)
    if not force:
        modality = scan.meta.modality
        if modality and modality != "MG":
            raise MammoError(path, f"is a {modality} image, not a mammogram (Modality {modality}); "
                                   f"--force runs it anyway")
        if not np.count_nonzero((scan.pixels > 0) & (scan.pixels < 1)):
            raise NotFullMammogram(path, "has only two grey levels: a mask, not a mammogram; --force runs it anyway")
    return scan, dataset


@dataclass
class Segmentation:
    """One scan's result on its original grid: what ``mammo predict`` writes."""

    probability: np.ndarray  # float32, values of float16 (as the NPZ stores them)
    mask: np.ndarray  # bool: probability ≥ threshold, lesions under the minimum area dropped
    grid: ScanGrid  # the scan's spacing and its training grid
    pixel_area_mm2: float  # the area of one pixel of the scan's grid (ScanGrid.pixel_area_mm2): lesion areas


def training_input(loaded, scan, options: PredictOptions) -> tuple[ScanGrid, np.ndarray]:
    """The scan's grid and the scan resampled to the model's training grid: the network's input."""
    grid = loaded.resolution.grid(scan.pixels.shape, scan.meta.spacing_mm, options.spacing_mm)
    return grid, grid.image_to_training(scan.pixels)


def network_probabilities(predictor, small: np.ndarray, options: PredictOptions) -> np.ndarray:
    """The network's probabilities on the training grid (one pass or windows, see sliding_window)."""
    from mammo_seg.inference.sliding_window import predict_probabilities

    return predict_probabilities(predictor, small, tile=options.tile, overlap=options.overlap,
                                 batch_size=options.batch_size, flip=bool(options.flip))


def on_scan_grid(grid: ScanGrid, scan, small: np.ndarray, prob: np.ndarray, options: PredictOptions) -> Segmentation:
    """Probabilities on the training grid → the scan's grid, float16 values, lesions (threshold, minimum area).

    ``options`` must hold the threshold and minimum area (see :func:`resolve_options`).
    """
    if options.breast_mask:
        prob[~breast_region(small)] = 0.0
    # stored as float16: threshold the stored values, so that the NPZ reproduces the mask exactly
    prob = np.clip(grid.image_to_native(prob), 0.0, 1.0).astype(np.float16).astype(np.float32)
    pixel_area = grid.pixel_area_mm2(scan.meta.spacing_mm)
    mask = detection_mask(prob, options.threshold, min_area_px(options.min_area_mm2, pixel_area))
    return Segmentation(prob, mask, grid, pixel_area)


def segment(loaded, predictor, scan, options: PredictOptions) -> Segmentation:
    """The network on one scan read by the reader: training grid → probabilities → back → lesions.

    ``options`` must hold the threshold and minimum area (see :func:`resolve_options`).
    """
    grid, small = training_input(loaded, scan, options)
    prob = network_probabilities(predictor, small, options)
    return on_scan_grid(grid, scan, small, prob, options)


def resolve_options(options: PredictOptions, model_file: str) -> tuple[PredictOptions, str]:
    """``options`` with the threshold, minimum area and flip augmentation the user left open taken from the
    model's operating point (:mod:`mammo_seg.inference.operating_point`), and where they came from."""
    from mammo_seg.inference.operating_point import load_operating_point

    if options.threshold is not None and not 0 < options.threshold < 1:
        raise MammoError("--threshold", "must be between 0 and 1")
    if options.min_area_mm2 is not None and not options.min_area_mm2 >= 0:
        raise MammoError("--min-area", "must be at least 0")
    point, source = load_operating_point(model_file)
    return replace(options, threshold=point.threshold if options.threshold is None else options.threshold,
                   min_area_mm2=point.min_area_mm2 if options.min_area_mm2 is None else options.min_area_mm2,
                   flip=point.flip if options.flip is None else options.flip), source


class Segmenter:
    """The Python entry point: a trained model with its training grid and operating point; scan in, arrays out.

    ``Segmenter("runs/mias_real")("mdb001.pgm")`` gives the probabilities and mask that
    ``mammo predict -m runs/mias_real`` writes for that scan.
    """

    def __init__(self, model_path: str, options: PredictOptions = PredictOptions()):
        from mammo_seg.inference.model import load_model
        from mammo_seg.inference.sliding_window import Predictor

        self.loaded = load_model(_readable_model(model_path))
        self.options, self.operating_point = resolve_options(options, self.loaded.path)
        self.predictor = Predictor(self.loaded.models)

    def __call__(self, path: str) -> Segmentation:
        scan, _ = read_checked(path, self.options.force)
        return segment(self.loaded, self.predictor, scan, self.options)


@dataclass
class _Job:
    """One scan on its way through predict's stages: read → network → write (see :func:`predict`)."""

    path: str
    scan_id: str
    source: str
    record: dict | None = None  # set in advance for a scan not predicted (continued or skipped)
    journal: bool = True  # append the record to the journal (not again for a continued scan)
    notes: list = field(default_factory=list)  # header messages, values masked
    timings: dict = field(default_factory=dict)
    error: BaseException | None = None
    scan: object = None
    dataset: object = None
    digest: str = ""
    grid: ScanGrid | None = None
    small: np.ndarray | None = None
    prob: np.ndarray | None = None


@contextlib.contextmanager
def _phase(job: _Job, name: str):
    """Time one phase of ``job`` (seconds, rounded to ms) and route its header messages to its notes."""
    start = time.perf_counter()
    with notes_to(job.notes):
        yield
    job.timings[name] = round(time.perf_counter() - start, 3)


def _read(job: _Job, loaded, options: PredictOptions) -> _Job:
    """Stage 1: read the scan and resample it to the training grid; a failure is kept as the job's error."""
    if job.record is not None:
        return job
    try:
        with _phase(job, "read"):
            job.scan, job.dataset = read_checked(job.path, options.force)
            job.digest = file_sha256(job.path)
        with _phase(job, "resample"):
            job.grid, job.small = training_input(loaded, job.scan, options)
    except Exception as e:  # one scan's failure, whatever it is, is that scan's problem alone
        job.error = e
    return job


def _network(job: _Job, predictor, options: PredictOptions) -> _Job:
    """Stage 2: the network on the training grid."""
    if job.record is not None or job.error is not None:
        return job
    try:
        with _phase(job, "model"):
            job.prob = network_probabilities(predictor, job.small, options)
    except Exception as e:
        job.error = e
    return job


def _write_outputs(job: _Job, output: PredictionOutput, options: PredictOptions, model_hash: str) -> dict:
    """Stage 3 of a predicted scan: post-process, write its outputs, return its summary record."""
    with _phase(job, "postprocess"):
        result = on_scan_grid(job.grid, job.scan, job.small, job.prob, options)
    job.small = job.prob = None
    with _phase(job, "write"):
        scan = job.scan
        record = po.scan_record(
            scan_id=job.scan_id, source=job.source, file_size=os.path.getsize(job.path), sha256=job.digest,
            shape=scan.pixels.shape, grid=result.grid.to_dict(), laterality=scan.meta.laterality,
            view=scan.meta.view, threshold=options.threshold,
            lesions=writers.lesion_report(result.mask, result.probability, result.pixel_area_mm2, options.min_area_mm2))
        return output.write_scan(options.formats, scan_id=job.scan_id, record=record, pixels=scan.pixels,
                                 probability=result.probability, mask=result.mask, threshold=options.threshold,
                                 factor=result.grid.factor, dataset=job.dataset, model_hash=model_hash,
                                 source_hash=job.digest, notes=job.notes)


def _failure_record(job: _Job, error: BaseException, out: str, options: PredictOptions) -> dict:
    """The record of a scan that failed or was found not to be a full mammogram (printed as one line)."""
    if _dooms_the_run(error, out):
        raise MammoError(out, f"cannot write the outputs ({_reason(error)}); stopped") from None
    if isinstance(error, NotFullMammogram) and not options.all_images:
        return po.skipped_record(job.scan_id, job.source, _reason(error))
    reason = _reason(error)
    if job.notes and not isinstance(error, NotFullMammogram):
        reason += f" (warnings: {'; '.join(job.notes)})"
    from tqdm import tqdm

    tqdm.write(f"problem: {printable(job.path)}: {reason}", file=sys.stderr)
    return po.error_record(job.scan_id, job.source, reason)


def _finish(job: _Job, output: PredictionOutput, options: PredictOptions, model_hash: str) -> dict:
    """Stage 3: the scan's record (its outputs written, or its failure), journalled before the next one."""
    if job.record is None and job.error is None:
        try:
            job.record = _write_outputs(job, output, options, model_hash)
        except Exception as e:
            job.error = e
    if job.record is None:
        job.record = _failure_record(job, job.error, output.folder, options)
    return job.record


def scan_ids(files: list[str], root: str) -> list[str]:
    """Each file's id (:func:`file_id`), numbered where two files would share one."""
    ids, used = [], set()
    for path in files:
        scan_id = base = file_id(path, root)
        n = 2
        while scan_id in used:
            scan_id, n = f"{base}-{n}", n + 1
        used.add(scan_id)
        ids.append(scan_id)
    return ids


def _jobs(files: list[str], ids: list[str], root: str, done: dict, skipped: dict) -> list[_Job]:
    """One job per scan file, in order; continued and skipped scans carry their record already."""
    jobs = []
    for path, scan_id in zip(files, ids):
        job = _Job(path, scan_id, os.path.relpath(path, root))
        if scan_id in done and done[scan_id]["source"] == job.source:
            job.record, job.journal = done[scan_id], False
        elif path in skipped:
            job.record = po.skipped_record(scan_id, job.source, skipped[path])
        jobs.append(job)
    return jobs


def predict(model_path: str, input_path: str, out: str, options: PredictOptions = PredictOptions(),
            progress: bool = True, resume: bool = False, pipelined: bool = True) -> dict:
    """Predict every scan of ``input_path`` (a file or a directory) into ``out``; returns the run summary.

    Each finished scan's record is appended to ``predictions.jsonl`` at once (valid after a kill);
    ``summary.json`` is rebuilt from the records at the end. ``resume`` (``--continue``) skips the
    scans the journal lists as finished with all their outputs present. Timings go to
    ``timings.json`` alone, so that every other output is the same bytes on every run.

    ``pipelined`` (the default) reads and resamples the next scan and post-processes and writes the
    previous one while the network runs on the current one (:mod:`mammo_seg.inference.pipeline`);
    the outputs are the same bytes as one scan at a time (``pipelined=False``). A scan's timings are
    then the seconds of its own phases, which overlap those of its neighbours.
    """
    from mammo_seg.inference.model import load_model
    from mammo_seg.progress import progress as progress_bar
    from mammo_seg.inference.sliding_window import Predictor

    unknown = set(options.formats) - set(FORMATS)
    if unknown:
        raise MammoError("--format", f"unknown format {sorted(unknown)[0]!r}; choose from {', '.join(FORMATS)}")
    if "sr" in options.formats and "seg" not in options.formats:
        raise MammoError("--format", "sr needs seg: the structured report references the SEG's segment")
    root, files = find_scans(input_path)
    if not files:
        raise MammoError(input_path, f"no scan files ({', '.join(SCAN_SUFFIXES)}) found")
    model_file = _readable_model(model_path)
    options, point_source = resolve_options(options, model_file)
    model_hash = file_sha256(model_file)
    settings = run_settings(options, model_hash)
    _check_writable(out)
    output = PredictionOutput(out)
    output.check_start(settings, resume)  # before TensorFlow: a refused run costs nothing
    loaded = load_model(model_file)
    predictor = Predictor(loaded.models)
    output.write_settings(settings)
    done = output.completed() if resume else {}
    ids = scan_ids(files, root)
    skipped = {} if options.all_images else not_full_mammograms(files)
    report_skipped(skipped, done, ids, files)
    jobs = _jobs(files, ids, root, done, skipped)
    timings, started = output.earlier_timings(done), time.perf_counter()
    bar = progress_bar(len(jobs), "predict", "scan", enabled=progress)

    def finish(job: _Job) -> dict:
        record = _finish(job, output, options, model_hash)
        if job.journal:
            append(record)
        if record["status"] == "ok" and job.timings:
            timings[job.scan_id] = {**job.timings, "seconds": round(sum(job.timings.values()), 3)}
        bar.update(1)
        return record

    run = staged if pipelined else sequential
    with output.journal_writer(resume) as append, header_messages_captured():
        try:
            records = run(jobs, lambda job: _read(job, loaded, options),
                          lambda job: _network(job, predictor, options), finish)
        finally:
            bar.close()
    summary = po.summary_content(
        records, package_version=__version__,
        model={"file": os.path.abspath(loaded.path), "sha256": model_hash,
               "resolution": loaded.resolution.to_dict(), "width": getattr(loaded.model, "width", None)},
        input_root=root, options=settings["options"], operating_point=point_source)
    # the journal in the order of the scans (a continued run appended out of order), then the summary
    output.write_journal(records)
    run_timings = {"seconds": round(time.perf_counter() - started, 3), "scans": timings}
    output.write_timings(run_timings)
    output.write_summary(summary)
    return {**summary, "timings": run_timings}


def run_settings(options: PredictOptions, model_hash: str) -> dict:
    """What ``settings.json`` records: the model and the resolved options (``--continue`` must match them)."""
    return {"model_sha256": model_hash, "options": {**asdict(options), "formats": list(options.formats)}}
