"""The layout of a predict output (``mammo predict -o OUT``): written by predict, read by evaluate and
everything else, all through :class:`PredictionOutput`.

::

    OUT/<id>_mask.png     the lesion mask on the scan's grid (0 / 255)       ``--format mask``
    OUT/<id>_prob.npz     probability (float16), threshold, resampling_factor ``--format ...,prob`` (on request)
    OUT/<id>_overlay.png  the scan with lesion outlines                       ``--format overlay``
    OUT/<id>_seg.dcm      DICOM Segmentation (DICOM sources only)             ``--format seg``
    OUT/<id>_sr.dcm       DICOM Structured Report of the lesions, referencing the SEG  ``--format sr``
    OUT/<id>.json         the scan's record: lesions, areas, spacing, call    ``--format json``
    OUT/settings.json     the run's settings, written before the first scan: ``--continue`` must match them
    OUT/predictions.jsonl the journal: one record per finished scan, on disk before the next starts
    OUT/summary.json      the run: model, options, counts, every record without its lesions
    OUT/timings.json      seconds per phase per scan (the one file that differs between two runs)

A record (``<id>.json``, a journal line, an entry of ``summary.json``'s ``scans``) has ``id``,
``source`` (the path below the input) and ``status``: ``ok`` (with ``outputs``, the file names of the
scan's outputs by format), ``error`` or ``skipped`` (with a ``reason``).
"""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np

from mammo_seg import atomic
from mammo_seg.errors import MammoError
from mammo_seg.inference import sr, writers

#: The outputs of one scan, by ``--format`` name: the file name after its id.
SCAN_FILES = {"mask": "_mask.png", "prob": "_prob.npz", "overlay": "_overlay.png", "seg": "_seg.dcm",
              "sr": "_sr.dcm", "json": ".json"}
#: The outputs written when ``--format`` is not given: all but ``prob``, which is written on request (as nnU-Net's
#: ``--save_probabilities``): about 30 MB a CBIS-DDSM scan, read by evaluate's FROC and predict's ``--report`` alone.
DEFAULT_FORMATS = tuple(kind for kind in SCAN_FILES if kind != "prob")
#: The members of ``<id>_prob.npz``.
PROBABILITY, THRESHOLD, RESAMPLING_FACTOR = "probability", "threshold", "resampling_factor"
#: Settings a ``--continue`` may change: they never change an output.
FREE_SETTINGS = ("batch_size",)


def _name(setting: str) -> str:
    """The flag behind a settings key, as the user typed it."""
    flags = {"min_area_mm2": "--min-area", "spacing_mm": "--spacing", "formats": "--format",
             "breast_mask": "--no-breast-mask", "model_sha256": "--model", "flip": "--flip/--no-flip"}
    return flags.get(setting, "--" + setting.replace("_", "-"))


def os_error(error: BaseException | None) -> OSError | None:
    """The first ``OSError`` with an ``errno`` in ``error``'s chain, or None: a writer (pydicom, highdicom, Pillow)
    may raise its own exception from the ``OSError``, or (pydicom) an ``OSError`` of its own with a traceback for
    its message and no ``errno``."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno is not None:
            return error
        error = error.__cause__ or error.__context__
    return None


class OutputNotWritten(Exception):
    """An output of a scan could not be written: the ``OSError`` is in the chain (:func:`os_error`), ``name`` is
    the output's file name, and none of the scan's outputs is left behind."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"could not write {name}")


class PredictionOutput:
    """The files of one predict output folder (nothing is created or read until asked)."""

    JOURNAL = "predictions.jsonl"
    SUMMARY = "summary.json"
    TIMINGS = "timings.json"
    SETTINGS = "settings.json"
    RUN_FILES = (SETTINGS, JOURNAL, SUMMARY)  # a folder holding one of these holds a run

    def __init__(self, folder: str):
        self.folder = folder

    def file(self, name: str) -> str:
        return os.path.join(self.folder, name)

    journal = property(lambda self: self.file(self.JOURNAL), doc="the path of ``predictions.jsonl``")
    summary_file = property(lambda self: self.file(self.SUMMARY), doc="the path of ``summary.json``")
    timings_file = property(lambda self: self.file(self.TIMINGS), doc="the path of ``timings.json``")
    settings_file = property(lambda self: self.file(self.SETTINGS), doc="the path of ``settings.json``")

    def scan_file(self, scan_id: str, kind: str) -> str:
        """The path of scan ``scan_id``'s output of ``--format`` ``kind`` (:data:`SCAN_FILES`)."""
        return self.file(scan_id + SCAN_FILES[kind])

    def output(self, record: dict, kind: str) -> str | None:
        """The path of a record's output of ``kind``; None when the record lists none."""
        name = (record.get("outputs") or {}).get(kind)
        return self.file(name) if isinstance(name, str) and name else None

    # ---------------------------------------------------------------------------------------- writing
    @contextlib.contextmanager
    def _writing(self, scan_id: str):
        """Every output of ``scan_id`` removed when the block fails (an earlier run's too: a scan has all its
        outputs or none); a failure caused by an ``OSError`` is raised as :class:`OutputNotWritten` naming the
        output being written (``target[0]``)."""
        target = [self.file(scan_id)]
        try:
            yield target
        except Exception as e:
            self.remove_scan(scan_id)
            if os_error(e) is not None:
                raise OutputNotWritten(os.path.basename(target[0])) from e
            raise

    def remove_scan(self, scan_id: str) -> None:
        """Remove every output file of ``scan_id`` there is (:data:`SCAN_FILES`)."""
        for kind in SCAN_FILES:
            with contextlib.suppress(OSError):
                os.remove(self.scan_file(scan_id, kind))

    def write_scan(self, formats, *, scan_id: str, record: dict, pixels: np.ndarray, probability: np.ndarray | None,
                   mask: np.ndarray, threshold: float, factor: float, dataset=None, model_hash: str = "",
                   source_hash: str = "", notes=()) -> dict:
        """Write one segmented scan's ``formats`` outputs; returns ``record`` completed with ``seg_filled``
        (when a SEG was written), ``warnings`` (``notes``: the header messages of the scan, values masked,
        read after the SEG is written, which may add some) and ``outputs``, written as ``<id>.json`` when
        ``json`` is among them. ``record`` holds everything else a scan's record says (:func:`scan_record`).

        A failure leaves none of the scan's outputs behind; one caused by an ``OSError`` (a full disk, an I/O
        error) is raised as :class:`OutputNotWritten`.
        """
        outputs, filled = {}, None

        def target(kind: str) -> str:
            writing[0] = self.scan_file(scan_id, kind)
            return writing[0]

        with self._writing(scan_id) as writing:
            if "mask" in formats:
                outputs["mask"] = writers.write_mask_png(target("mask"), mask)
            if "prob" in formats:
                outputs["prob"] = writers.write_npz(target("prob"), {
                    PROBABILITY: probability.astype(np.float16), THRESHOLD: np.float32(threshold),
                    RESAMPLING_FACTOR: np.float32(factor)})
            if "overlay" in formats:
                outputs["overlay"], _ = writers.write_overlay(target("overlay"), pixels, mask, record.get("lesions", ()))
            if "seg" in formats and dataset is not None:
                outputs["seg"], filled = writers.write_seg(target("seg"), dataset, mask,
                                                           model_hash=model_hash, source_hash=source_hash)
            if "sr" in formats and "seg" in outputs:  # the report references the SEG's segment
                outputs["sr"] = sr.write_sr(target("sr"), outputs["seg"], dataset, record, source_hash)
            if "seg" in outputs:
                record["seg_filled"] = filled
            if dataset is None and {"seg", "sr"} & set(formats):
                record["dicom_outputs"] = sr.NOT_DICOM
            if notes:
                record["warnings"] = list(notes)
            if "json" in formats:
                outputs["json"] = self.scan_file(scan_id, "json")
            record["outputs"] = {k: os.path.basename(v) for k, v in outputs.items()}
            if "json" in formats:
                writers.write_json(target("json"), record)
        return record

    def write_settings(self, settings: dict) -> None:
        writers.write_json(self.settings_file, settings)

    def write_timings(self, timings: dict) -> None:
        writers.write_json(self.timings_file, timings)

    def write_summary(self, summary: dict) -> None:
        writers.write_json(self.summary_file, summary)

    def write_journal(self, records: list) -> None:
        """The journal rewritten with ``records``, in their order."""
        atomic.write_text(self.journal, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))

    @contextlib.contextmanager
    def journal_writer(self, resume: bool):
        """A function appending one record to the journal, each on disk before the next scan starts: a
        killed run loses no finished scan. ``resume``: appended to the journal there, else a new one."""
        with open(self.journal, "a" if resume else "w") as log:
            def append(record: dict) -> None:
                log.write(json.dumps(record, sort_keys=True) + "\n")
                log.flush()
                os.fsync(log.fileno())

            yield append

    # ---------------------------------------------------------------------------------------- reading
    def completed(self) -> dict:
        """{id: record} of the journal's scans that finished and whose outputs are all still there; the
        journal is rewritten with those alone (a line cut by a kill, a failed scan and a scan with a
        missing output are predicted again, and appended lines start on a line of their own)."""
        done = {}
        if not os.path.isfile(self.journal):
            return done
        with open(self.journal) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if (isinstance(record, dict) and record.get("status") == "ok"
                        and all(os.path.isfile(self.file(name)) for name in record.get("outputs", {}).values())):
                    done[record["id"]] = record
        self.write_journal(list(done.values()))
        return done

    def earlier_timings(self, done: dict) -> dict:
        """The timings a continued run keeps: those of the scans it will not predict again."""
        try:
            with open(self.timings_file) as f:
                return {k: v for k, v in json.load(f)["scans"].items() if k in done}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def read_settings(self) -> dict | None:
        """The recorded settings; None when there are none (a run before settings were recorded)."""
        if not os.path.isfile(self.settings_file):
            return None
        try:
            with open(self.settings_file, encoding="utf-8") as f:
                settings = json.load(f)
        except (OSError, ValueError) as e:
            raise MammoError(self.settings_file, f"unreadable predict settings ({type(e).__name__}); "
                                                 f"choose a new --output") from None
        if not isinstance(settings, dict):
            raise MammoError(self.settings_file, "unreadable predict settings (not a mapping); choose a new --output")
        return settings

    def read_summary(self) -> dict:
        """``summary.json`` (its ``scans`` a list); a missing or unreadable one is a :class:`MammoError`."""
        if not os.path.isfile(self.summary_file):
            raise MammoError(self.folder, "no summary.json: not a mammo predict output")
        try:
            with open(self.summary_file, encoding="utf-8") as f:
                summary = json.load(f)
            scans = summary["scans"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise MammoError(self.summary_file, f"not a mammo predict summary ({type(e).__name__}: {e})") from None
        if not isinstance(scans, list):
            raise MammoError(self.summary_file, "not a mammo predict summary (scans is not a list)")
        return summary

    def probability(self, record: dict) -> np.ndarray | None:
        """A record's probability map (float32, the float16 values written); None when it has none."""
        path = self.output(record, "prob")
        if path is None:
            return None
        try:
            with np.load(path) as npz:
                return npz[PROBABILITY].astype(np.float32)
        except (OSError, ValueError, KeyError) as e:
            raise MammoError(path, f"unreadable probability map ({type(e).__name__}: {e})") from None

    # ------------------------------------------------------------------------------------ guard rails
    def check_start(self, settings: dict, resume: bool) -> None:
        """Before any work: refuse a plain run into a folder holding another run, and a ``--continue`` whose
        ``settings`` differ from the recorded ones (naming the first that differs). A ``--continue`` of a
        run that recorded no settings is allowed."""
        held = [name for name in self.RUN_FILES if os.path.exists(self.file(name))]
        if held and not resume:
            raise MammoError(self.folder, f"holds the outputs of another predict run ({held[0]}); choose a new "
                                          f"--output, delete it, or --continue that run with its settings")
        recorded = self.read_settings() if resume else None
        if recorded is not None:
            settings, recorded = _flat(settings), _flat(recorded)
            for key in sorted(set(settings) | set(recorded)):
                if key not in FREE_SETTINGS and settings.get(key) != recorded.get(key):
                    raise MammoError(self.folder, f"--continue with other settings than the run it continues: "
                                                  f"{_name(key)} is {_shown(settings.get(key))} here, "
                                                  f"{_shown(recorded.get(key))} in {self.SETTINGS}; give the same "
                                                  f"flags, or choose a new --output")


def _flat(settings: dict) -> dict:
    """The model's hash and each option, side by side."""
    options = settings.get("options")
    return {**{k: v for k, v in settings.items() if k != "options"}, **(options if isinstance(options, dict) else {})}


def _shown(value) -> str:
    return ",".join(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else json.dumps(value)


#: ``scan_record``'s ``contralateral`` for a one-channel model: the record has no such key.
ONE_CHANNEL = object()


def scan_record(*, scan_id: str, source: str, file_size: int, sha256: str, shape, grid: dict, laterality, view,
                threshold: float, lesions: dict, contralateral=ONE_CHANNEL) -> dict:
    """The record of a segmented scan, in the key order ``<id>.json`` keeps (before its outputs). A model with the
    other breast as a second channel adds ``contralateral``: the file it used (below the input folder), or None
    when there was none (a zero channel)."""
    pairing = {} if contralateral is ONE_CHANNEL else {"contralateral": contralateral}
    return {"id": scan_id, "source": source, "status": "ok", "file_size": file_size, "sha256": sha256,
            "shape": list(shape), **grid, "laterality": laterality, "view": view, **pairing,
            "threshold": threshold, **lesions}


def skipped_record(scan_id: str, source: str, reason: str) -> dict:
    return {"id": scan_id, "source": source, "status": "skipped", "reason": reason}


def error_record(scan_id: str, source: str, reason: str) -> dict:
    return {"id": scan_id, "source": source, "status": "error", "reason": reason}


def summary_content(records: list, *, package_version: str, model: dict, input_root: str, options: dict,
                    operating_point: str) -> dict:
    """``summary.json``: the run's model, input, options and counts, and every record without its lesions."""
    ok = [r for r in records if r["status"] == "ok"]
    return {
        "package_version": package_version, "model": model, "input": input_root, "options": options,
        "operating_point": operating_point,
        "counts": {"scans": len(records), "ok": len(ok),
                   "failed": sum(r["status"] == "error" for r in records),
                   "skipped": sum(r["status"] == "skipped" for r in records),
                   "positive": sum(r["image_positive"] for r in ok),
                   **({"without_contralateral": sum(r["contralateral"] is None for r in ok)}
                      if any("contralateral" in r for r in ok) else {})},
        "scans": [{k: v for k, v in r.items() if k != "lesions"} for r in records],
    }
