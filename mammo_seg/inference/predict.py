"""``mammo predict``: full-scan inference on DICOM (and PGM/PNG/TIFF) files.

Per scan: the reader prep uses → resample to the model's training resolution (a lesion must look
as large as in training) → one pass, or exact strips when it would not fit (``--tile``: Gaussian-weighted
windows) → probabilities back on the original grid (where the lesions need them, the whole map only for ``prob``)
→ threshold → outputs (``--format``; by default all but ``prob``, the probability map, written on request):

Findings outside the breast (the largest bright region: film labels and markers are not breast)
are dropped unless ``breast_mask=False``.

``<id>_mask.png`` (0/255 on the original grid), ``<id>_prob.npz`` (float16 probabilities),
``<id>_overlay.png`` (the scan with lesion outlines), ``<id>_seg.dcm`` (DICOM Segmentation of a
DICOM source), ``<id>_sr.dcm`` (DICOM Structured Report of its lesions, :mod:`mammo_seg.inference.sr`),
``<id>.json`` (lesions, areas in mm², boxes, probabilities, image-level call), and
``summary.json`` for the run. Ids are file ids (the path below the input, without UIDs); only the
DICOM SEG carries patient and study attributes. The layout of these files, the records and the
settings a ``--continue`` must match are :mod:`mammo_seg.inference.prediction_output`'s.

This module is the folder run: the error policy (a scan's failure is its line, one output it could not write
included, and leaves none of its outputs; a full disk or an unwritable folder stops the run), the jobs and their
journal, ``--continue`` and the summary; with ``--writers N`` each scan's post-processing and outputs are written in
worker processes (:mod:`~mammo_seg.inference.writer_processes`), the same bytes. Which files are scans:
:mod:`~mammo_seg.inference.scan_files`; one scan into a segmentation: :mod:`~mammo_seg.inference.segment`;
the header messages of the DICOM libraries: :mod:`~mammo_seg.inference.header_messages`; what overlaps with what:
:mod:`~mammo_seg.inference.pipeline`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from mammo_seg import __version__, atomic
from mammo_seg.data.resolution import ScanGrid
from mammo_seg.errors import MammoError, printable
from mammo_seg.inference import prediction_output as po
from mammo_seg.inference import writers
from mammo_seg.inference.pipeline import sequential, staged
from mammo_seg.inference.prediction_output import PredictionOutput
from mammo_seg.io import Scan, dicom_to_scan, file_sha256
from mammo_seg.inference.header_messages import header_messages_captured, notes_to
from mammo_seg.inference.writer_processes import Failure, WriterProcesses, default_writers
from mammo_seg.inference.scan_files import (SCAN_SUFFIXES, NotFullMammogram, file_id, find_scans,  # noqa: F401
                                            not_full_mammograms, read_checked, report_skipped, scan_ids)
from mammo_seg.inference.segment import (FORMATS, PredictOptions, Segmenter, network_probabilities,  # noqa: F401
                                         on_scan_grid, other_breast, resolve_options, training_input,
                                         _readable_model)


def _reason(error: BaseException) -> str:
    """One line naming the cause: a MammoError's reason, else the exception type and message."""
    if isinstance(error, MammoError):
        return printable(error.reason)
    message = " ".join(str(error).split())
    return printable(f"{type(error).__name__}: {message}" if message else type(error).__name__)


#: Errors writing outputs that no later scan can escape.
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _dooms_the_run(error: BaseException, out: str) -> bool:
    """A full disk anywhere, or no permission on the output folder: every later scan would fail too. A writer
    (pydicom, highdicom, Pillow) may raise its own exception from the ``OSError``: the chain is followed
    (:func:`~mammo_seg.inference.prediction_output.os_error`)."""
    error = po.os_error(error)
    if error is None or error.errno not in FATAL_ERRNOS:
        return False
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    names = [n for n in (error.filename, error.filename2) if n]
    out = os.path.abspath(out)
    return any(os.path.abspath(os.fspath(n)).startswith(out + os.sep) or os.path.abspath(os.fspath(n)) == out
               for n in names)


def _strerror(error: OSError) -> str:
    """The system's words for ``error`` ("No space left on device"), without the file name or a traceback."""
    return printable(error.strerror or (os.strerror(error.errno) if error.errno else _reason(error)))


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
    channels: int = 1  # the model's input channels: 2 with the other breast (pairs.py, segment.other_breast)
    pair: str | None = None  # the other breast's scan file, for a two-channel model (None: none found)
    pair_source: str | None = None  # its path below the input folder, as the record names it
    other: np.ndarray | None = None  # the second input channel

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
        if job.channels == 2:
            with _phase(job, "contralateral"):
                _read_other_breast(job, loaded, options)
    except Exception as e:  # one scan's failure, whatever it is, is that scan's problem alone
        job.error = e
    return job


def _read_other_breast(job: _Job, loaded, options: PredictOptions) -> None:
    """The second input channel of a two-channel model; a contralateral scan that cannot be used leaves a zero
    channel, and the record says so (``contralateral``: null, and a note why)."""
    other = other_breast(loaded, job.small, job.pair, options)
    job.other = other.channel
    if other.path is None:
        job.pair = job.pair_source = None
    if other.note:
        job.notes.append(printable(other.note))

def _network(job: _Job, predictor, options: PredictOptions) -> _Job:
    """Stage 2: the network on the training grid."""
    if job.record is not None or job.error is not None:
        return job
    try:
        with _phase(job, "model"):
            job.prob = network_probabilities(predictor, job.small, options, job.other)
        job.other = None
    except Exception as e:
        job.error = e
    return job

def _write_outputs(job: _Job, output: PredictionOutput, options: PredictOptions, model_hash: str) -> dict:
    """Stage 3 of a predicted scan: post-process, write its outputs, return its summary record."""
    with _phase(job, "postprocess"):
        result = on_scan_grid(job.grid, job.scan, job.small, job.prob, options, probability="prob" in options.formats)
    job.small = job.prob = None
    with _phase(job, "write"):
        scan = job.scan
        record = po.scan_record(
            scan_id=job.scan_id, source=job.source, file_size=os.path.getsize(job.path), sha256=job.digest,
            shape=scan.pixels.shape, grid=result.grid.to_dict(), laterality=scan.meta.laterality,
            view=scan.meta.view, threshold=options.threshold,
            contralateral=job.pair_source if job.channels == 2 else po.ONE_CHANNEL,
            lesions=writers.lesion_report(result.mask, result.lesion_probability, result.pixel_area_mm2,
                                          options.min_area_mm2, result.max_probability))
        return output.write_scan(options.formats, scan_id=job.scan_id, record=record, pixels=scan.pixels,
                                 probability=result.probability, mask=result.mask, threshold=options.threshold,
                                 factor=result.grid.factor, dataset=job.dataset, model_hash=model_hash,
                                 source_hash=job.digest, notes=job.notes)

def _failure_record(job: _Job, error: BaseException, out: str, options: PredictOptions) -> dict:
    """The record of a scan that failed or was found not to be a full mammogram (printed as one line)."""
    if _dooms_the_run(error, out):
        cause = po.os_error(error)
        what = error.name if isinstance(error, po.OutputNotWritten) else "the outputs"
        remedy = ("free some space" if cause.errno in (errno.ENOSPC, errno.EDQUOT)
                  else "make the output folder writable")
        raise MammoError(out, f"cannot write {what} ({_strerror(cause)}); stopped: the scans finished so far are "
                              f"kept, {remedy} and run again with --continue") from None
    if isinstance(error, NotFullMammogram) and not options.all_images:
        return po.skipped_record(job.scan_id, job.source, _reason(error))
    if isinstance(error, po.OutputNotWritten):
        reason = f"could not write {printable(error.name)}: {_strerror(po.os_error(error))}"
    else:
        reason = _reason(error)
    if job.notes and not isinstance(error, NotFullMammogram):
        reason += f" (warnings: {'; '.join(job.notes)})"
    from tqdm import tqdm

    tqdm.write(f"problem: {printable(job.path)}: {reason}", file=sys.stderr)
    return po.error_record(job.scan_id, job.source, reason)

def _to_send(job: _Job) -> _Job:
    """``job`` as it travels to a writer process: a DICOM scan without its pixels, which the writer decodes again
    from the dataset's bytes (the same values: 48 MB less to pickle in the predict process for a CBIS-DDSM film,
    0.04 CPU s to pickle instead of 0.11); another scan whole."""
    return job if job.dataset is None else replace(job, scan=Scan(None, job.scan.meta))

def _write_remote(job: _Job, folder: str, options: PredictOptions, model_hash: str) -> tuple:
    """In a writer process: :func:`_write_outputs` of one scan (sent by :func:`_to_send`) → (its record or None,
    None or its :class:`~mammo_seg.inference.writer_processes.Failure`, its notes, its timings). The header
    messages of decoding the pixels again were noted by the reading already: they are not noted twice."""
    with header_messages_captured():
        try:
            if job.scan.pixels is None:
                start = time.perf_counter()
                job.scan = Scan(dicom_to_scan(job.dataset, job.path).pixels, job.scan.meta)
                job.timings["decode_again"] = round(time.perf_counter() - start, 3)
            return _write_outputs(job, PredictionOutput(folder), options, model_hash), None, job.notes, job.timings
        except Exception as e:
            return None, Failure.of(e, _reason(e)), job.notes, job.timings

def _written_remotely(job: _Job, pool: WriterProcesses, future, *args) -> None:
    """Take what :func:`_write_remote` sent back for ``job`` into it (record or error, notes, timings); the
    scan's arrays are let go."""
    try:
        record, failure, notes, timings = pool.result(future, _write_remote, _to_send(job), *args)
    except Exception as e:  # a writer that died twice on this scan, or a job that could not be sent
        job.error = e
    else:
        job.notes[:], job.record = notes, record
        job.timings.update(timings)
        if failure is not None:
            job.error = failure.exception()
    job.scan = job.dataset = job.small = job.prob = None

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

def _pair_jobs(jobs: list[_Job], root: str, skipped: dict, special: dict, single_file: bool = False) -> None:
    """For a two-channel model: each job's contralateral scan among the input's full mammograms
    (:func:`~mammo_seg.inference.pairs.contralateral_files`), those a continued run finished before included; for a
    single file, among the files of its folder. One line says how many scans to predict have none."""
    from tqdm import tqdm

    from mammo_seg.inference.pairs import contralateral_files
    from mammo_seg.inference.segment import pairs_in_folder

    if single_file:
        pairs = pairs_in_folder(root)
    else:
        pairs = contralateral_files([job.path for job in jobs if job.path not in skipped and job.path not in special])
    for job in jobs:
        job.channels, job.pair = 2, pairs.get(job.path)
        job.pair_source = None if job.pair is None else os.path.relpath(job.pair, root)
    todo = [job for job in jobs if job.record is None]
    alone = sum(job.pair is None for job in todo)
    if alone:
        tqdm.write(f"mammo predict: {alone} of {len(todo)} scans have no other breast in the input (mini-MIAS pair "
                   f"names; DICOM patient, study, view and laterality): predicted beside a zero channel",
                   file=sys.stderr)


def _jobs(files: list[str], ids: list[str], root: str, done: dict, skipped: dict, special: dict) -> list[_Job]:
    """One job per scan file, in order; continued, skipped and special files (never opened: their problem line is
    printed here) carry their record already."""
    from tqdm import tqdm

    jobs = []
    for path, scan_id in zip(files, ids):
        job = _Job(path, scan_id, os.path.relpath(path, root))
        if path in special:
            tqdm.write(f"problem: {printable(path)}: {printable(special[path])}", file=sys.stderr)
            job.record = po.error_record(scan_id, job.source, printable(special[path]))
        elif scan_id in done and done[scan_id]["source"] == job.source:
            job.record, job.journal = done[scan_id], False
        elif path in skipped:
            job.record = po.skipped_record(scan_id, job.source, skipped[path])
        jobs.append(job)
    return jobs

def predict(model_path: str, input_path: str, out: str, options: PredictOptions = PredictOptions(),
            progress: bool = True, resume: bool = False, pipelined: bool = True, writers: int | None = 0) -> dict:
    """Predict every scan of ``input_path`` (a file or a directory) into ``out``; returns the run summary.

    Each finished scan's record is appended to ``predictions.jsonl`` at once (valid after a kill);
    ``summary.json`` is rebuilt from the records at the end. ``resume`` (``--continue``) skips the
    scans the journal lists as finished with all their outputs present. Timings go to
    ``timings.json`` alone, so that every other output is the same bytes on every run.

    ``pipelined`` (the default) reads and resamples the next scan and post-processes and writes the
    previous one while the network runs on the current one (:mod:`mammo_seg.inference.pipeline`);
    the outputs are the same bytes as one scan at a time (``pipelined=False``). A scan's timings are
    then the seconds of its own phases, which overlap those of its neighbours. ``writers`` > 0 (pipelined only)
    post-processes and writes up to that many scans at once in worker processes
    (:mod:`~mammo_seg.inference.writer_processes`): the same bytes again, and the same records in the same order;
    None: as many as :func:`~mammo_seg.inference.writer_processes.default_writers` gives (some with a GPU, else 0).
    """
    from mammo_seg.inference.model import load_model
    from mammo_seg.progress import progress as progress_bar
    from mammo_seg.inference.sliding_window import Predictor

    if writers is not None and (isinstance(writers, bool) or not isinstance(writers, int) or writers < 0):
        raise MammoError("--writers", f"must be a whole number, 0 or more, got {writers!r}")
    unknown = set(options.formats) - set(FORMATS)
    if unknown:
        raise MammoError("--format", f"unknown format {sorted(unknown)[0]!r}; choose from {', '.join(FORMATS)}")
    if "sr" in options.formats and "seg" not in options.formats:
        raise MammoError("--format", "sr needs seg: the structured report references the SEG's segment")
    root, files, special = find_scans(input_path)
    if not files and not special:
        raise MammoError(input_path, f"no scan files ({', '.join(SCAN_SUFFIXES)}) found")
    model_file = _readable_model(model_path)
    options, point_source = resolve_options(options, model_file)
    model_hash = file_sha256(model_file)
    settings = run_settings(options, model_hash)
    _check_writable(out)
    output = PredictionOutput(out)
    output.check_start(settings, resume)  # before TensorFlow: a refused run costs nothing
    atomic.remove_stale_temporaries(out)  # a killed run's half-written files
    loaded = load_model(model_file)
    predictor = Predictor(loaded.models)
    if writers is None:
        import tensorflow as tf

        writers = default_writers(accelerator=bool(tf.config.list_logical_devices("GPU")))
    output.write_settings(settings)
    done = output.completed() if resume else {}
    skipped = {} if options.all_images else not_full_mammograms(files)
    files = files + list(special)  # after the scans, under ids of their own
    ids = scan_ids(files, root)
    report_skipped(skipped, done, ids, files)
    jobs = _jobs(files, ids, root, done, skipped, special)
    if loaded.channels == 2:
        _pair_jobs(jobs, root, skipped, special, single_file=not os.path.isdir(input_path))
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

    def read(job: _Job) -> _Job:
        return _read(job, loaded, options)

    def network(job: _Job) -> _Job:
        return _network(job, predictor, options)

    with output.journal_writer(resume) as append, header_messages_captured():
        try:
            if not pipelined:
                records = sequential(jobs, read, network, finish)
            elif not writers:
                records = staged(jobs, read, network, finish)
            else:
                args = (output.folder, options, model_hash)
                with WriterProcesses(writers) as pool:
                    def send(job: _Job):
                        if job.record is None and job.error is None:
                            return pool.submit(_write_remote, _to_send(job), *args)
                        return None

                    def settle(job: _Job, future) -> dict:
                        if future is not None:
                            _written_remotely(job, pool, future, *args)
                        return finish(job)

                    records = staged(jobs, read, network, send, settle, in_flight=writers)
        finally:
            bar.close()
    summary = po.summary_content(
        records, package_version=__version__,
        model={"file": os.path.abspath(loaded.path), "sha256": model_hash,
               "resolution": loaded.resolution.to_dict(), "width": getattr(loaded.model, "width", None)},
        input_root=root, options=settings["options"], operating_point=point_source)
    # the journal in the order of the scans (a continued run appended out of order), then the summary
    run_timings = {"seconds": round(time.perf_counter() - started, 3), "scans": timings}
    try:
        output.write_journal(records)
        output.write_timings(run_timings)
        output.write_summary(summary)
    except OSError as e:
        name = os.path.basename(os.fspath(e.filename)) if e.filename else "the run's summary"
        raise MammoError(out, f"could not write {printable(name)} ({_strerror(e)}); every scan's outputs and "
                              f"{po.PredictionOutput.JOURNAL} are kept: run again with --continue to write "
                              f"it") from None
    return {**summary, "timings": run_timings}

def run_settings(options: PredictOptions, model_hash: str) -> dict:
    """What ``settings.json`` records: the model and the resolved options (``--continue`` must match them)."""
    return {"model_sha256": model_hash, "options": {**asdict(options), "formats": list(options.formats)}}
