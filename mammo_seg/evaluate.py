"""``mammo evaluate``: predictions against ground truth → an nnU-Net-style ``summary.json``.

Ground truth comes from

* a raw CBIS-DDSM or MIAS directory: masks built by the converters, on each scan's original grid;
* or a prep output with whole scans (``OUT`` or ``OUT/full``): masks at the training resolution;
  the predicted mask is resampled to that grid (coverage ≥ 0.5, as prep resamples masks). Its ignore
  region (prep's ``ignore_kinds``) is no lesion: its pixels are left out of the predicted mask too, and a
  detection peaking in it is neither a true nor a false positive (:mod:`mammo_seg.detection`). Raw
  ground truth has none: there every annotated abnormality is a lesion.

Predictions are matched to ground truth by the SHA-256 of the scan file (recorded by predict and by
prep), so copies and symlinks of the scans match; no DICOM attribute is needed.

Per case: TP, FP, FN, TN pixels, lesion IoU, Dice, precision, recall (IoU and Dice are NaN, written
as null, when neither mask has a lesion, as in nnU-Net), and the image-level call against "the reference
has a lesion": a whole scan is called positive when predict reported any lesion (predict drops lesions
under its minimum area in mm²; the 1/750-of-the-image rule of the original is for tiles; both are
:func:`mammo_seg.detection.image_positive`). Means over cases ignore NaN; the pooled values sum the
pixel counts over all cases first; ``lesion_images`` gives the mean Dice and IoU over the scans that
have a lesion.

Lesion-level detection (:mod:`mammo_seg.detection`), from predict's probability maps (``--format``
with ``prob``) and the reference lesions one by one (MIAS circles, CBIS-DDSM masks): FROC points and
the sensitivity at 0.25-4 false positives per image, and at predict's operating point the sensitivity
by lesion type and the share of lesion-free scans with any detection. A scan whose prediction failed
counts as an image with no detection (its lesions missed).

Several prediction folders (``mammo evaluate -p A -p B``, e.g. the out-of-fold predictions of each fold
of a cross-validation) are pooled into one evaluation; they must share the threshold and minimum area.
Every lesion-level figure comes with a 95 % bootstrap interval over women (:mod:`mammo_seg.intervals`),
for all lesions and for each ``groups`` of lesion types (e.g. MIAS masses CIRC/SPIC/MISC apart).

A bad item (a record without sha256, a missing or colour mask, a mask whose size or orientation
differs from the reference) is that case's line in ``problems``, counted in ``counts``; the rest
are evaluated. A predicted mask is resized only against prep ground truth (training resolution)
and only when its aspect matches.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from mammo_seg import __version__
from mammo_seg.atomic import write_json
from mammo_seg.data.resolution import SPACING_HEADER, ScanGrid, isotropic_spacing, resize_image, resize_mask
from mammo_seg.detection import (TILE_IMAGE_AREA_FRACTION, ScanLesions, froc, image_positive,
                                 reference_lesions, reference_regions, score_scans, without_ignore)
from mammo_seg.errors import MammoError
from mammo_seg.inference.prediction_output import PredictionOutput
from mammo_seg.intervals import RESAMPLES, bootstrap
from mammo_seg.io import file_sha256, read_mask
from mammo_seg.overlap import confusion, scores


def case_metrics(pred: np.ndarray, ref: np.ndarray,
                 image_area_fraction: float = TILE_IMAGE_AREA_FRACTION) -> dict:
    """Pixel counts and scores of one case (:mod:`mammo_seg.overlap`) and its image-level call."""
    tp, fp, fn, tn = confusion(pred, ref)
    return {"TP": tp, "FP": fp, "FN": fn, "TN": tn, "n_pred": tp + fp, "n_ref": tp + fn, **scores(tp, fp, fn),
            "image_predicted_positive": bool(image_positive(tp + fp, pred.size, image_area_fraction)),
            "image_reference_positive": bool(tp + fn > 0)}


@dataclass
class Reference:
    """A scan's ground truth: the merged lesion mask and each lesion with its type."""

    mask: np.ndarray
    scan_id: str
    lesions: list  # bool masks, one per lesion
    types: list  # one type per lesion (MIAS CIRC/SPIC/…, CBIS mass/calcification, "lesion")
    patient: str | None = None  # the woman: the unit of the bootstrap intervals (None: the scan is its own)
    ignore: np.ndarray | None = None  # bool: the ignore region (prep ground truth with ignore_kinds), or None


class Truth:
    """Reference masks by scan-file SHA-256; ``source`` names where they come from (a folder)."""

    source: str = ""

    def find(self, digest: str, size: int) -> Reference | None:
        raise NotImplementedError


class PrepTruth(Truth):
    """Whole-scan masks of a prep output (``--full-scans``), at the training resolution."""

    def __init__(self, out: str):
        import tensorflow as tf

        from mammo_seg.data.features import iterate_records
        from mammo_seg.data.inspect import read_error_reason
        from mammo_seg.data.prep_output import PrepOutput

        self.source = out
        prep = PrepOutput.containing(out)
        manifest = prep.whole_scans()
        scans = prep.scans()
        scan_of = {v["sha256"]: k for k, v in scans.items()}
        self.patients = {k: v.get("patient_id") for k, v in scans.items()}
        self.masks = {}
        self.unreadable = {}  # shard → why: its records up to the damage are kept, the scans after it are problems
        for split in manifest.splits:
            for file in manifest.shard_files(split):
                try:
                    for rec in iterate_records(file):
                        self.masks[rec["scan_id"].decode()] = rec["mask"][..., 0]  # 0, 1 lesion, 2 ignore
                except tf.errors.OpError as e:
                    self.unreadable[file] = read_error_reason(e)
        self.scan_of = scan_of

    @property
    def shard_problems(self) -> list[dict]:
        """Each unreadable shard as a problem of the evaluation."""
        return [{"file": file, "reason": f"unreadable shard ({reason})"} for file, reason in self.unreadable.items()]

    def find(self, digest, size):
        scan_id = self.scan_of.get(digest)
        if scan_id is not None and scan_id not in self.masks and self.unreadable:
            raise MammoError(self.source, f"the ground truth of {scan_id} is lost in an unreadable shard")
        if scan_id is None or scan_id not in self.masks:
            return None
        lesions, ignore = reference_lesions(self.masks[scan_id])
        return Reference(reference_regions(self.masks[scan_id])[0], scan_id, lesions, ["lesion"] * len(lesions),
                         self.patients.get(scan_id), ignore)


def _mean(values):
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else math.nan


def _json_safe(value):
    """NaN (and ±inf) → None, recursively: the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _check_record(record, number: int) -> str:
    """The record's id; raises MammoError when a field evaluate needs is missing or malformed."""
    if not isinstance(record, dict):
        raise MammoError(f"scans[{number}]", f"record is not a mapping: {str(record)[:80]!r}")
    name = record.get("id")
    name = name if isinstance(name, str) and name else f"scans[{number}]"
    checks = [(isinstance(record.get("sha256"), str) and len(record["sha256"]) == 64, "sha256"),
              (isinstance(record.get("file_size"), int), "file_size"),
              (isinstance(record.get("outputs"), dict) and isinstance(record["outputs"].get("mask"), str),
               "outputs.mask (predict with --format including mask)")]
    bad = [what for ok, what in checks if not ok]
    if bad:
        raise MammoError(name, f"record without a valid {', '.join(bad)}")
    return name


def _fits(pred_shape, ref_shape, resampled: bool) -> bool:
    """The predicted mask has the reference's grid, or (prep ground truth at the training resolution)
    the same aspect: a transposed or other-size mask is never silently resized."""
    if pred_shape == ref_shape:
        return True
    (ph, pw), (rh, rw) = pred_shape, ref_shape
    return resampled and abs(pw * rh / ph - rw) <= 1.5 and abs(ph * rw / pw - rh) <= 1.5


def _pixel_area_mm2(record: dict) -> float:
    """The area of one pixel of the prediction's grid (:meth:`ScanGrid.pixel_area_mm2` of the spacing the
    record carries: a number, the one predict decided, or a (row, column) pair read from a file)."""
    spacing = record.get("spacing_mm")
    pair = spacing if isinstance(spacing, list) and len(spacing) == 2 else None
    mm = isotropic_spacing(pair) if pair else spacing
    if not (isinstance(mm, (int, float)) and mm > 0):
        raise MammoError(record.get("id", "record"), "record without a pixel spacing: lesion areas cannot be "
                                                     "measured")
    source = SPACING_HEADER if pair else str(record.get("spacing_source", ""))
    return ScanGrid((0, 0), float(mm), source, 1.0).pixel_area_mm2(pair)


def _scan_lesions(record: dict, pred_dir: str, ref: Reference) -> ScanLesions | None:
    """The case for detection scoring, on the reference's grid; None without a probability map."""
    prob = PredictionOutput(pred_dir).probability(record)
    if prob is None:
        return None
    area = _pixel_area_mm2(record) * prob.size / ref.mask.size
    if prob.shape != ref.mask.shape:  # prep ground truth, at the training resolution (aspect checked)
        prob = resize_image(prob, ref.mask.shape)
    return ScanLesions(prob, ref.lesions, ref.types, area, ref.ignore)


def _failed_scan(record: dict, input_root, truth: Truth) -> tuple[ScanLesions, Reference] | None:
    """A scan predict failed on, when its ground truth is known: an image with no detection."""
    source = record.get("source")
    if not isinstance(source, str) or not isinstance(input_root, str):
        return None
    path = os.path.join(input_root, source)
    if not os.path.isfile(path):
        return None
    ref = truth.find(file_sha256(path), os.path.getsize(path))
    return None if ref is None else (ScanLesions(None, ref.lesions, ref.types, 1.0, ref.ignore), ref)


def _evaluate_record(record, number, pred_dir, truth, image_area_fraction):
    """("case", per-case entry, ScanLesions or None), ("unmatched", id, None) or raises MammoError naming the item."""
    name = _check_record(record, number)
    mask_file = PredictionOutput(pred_dir).output(record, "mask")
    if not os.path.isfile(mask_file):
        raise MammoError(mask_file, f"{name}: mask PNG not found")
    found = truth.find(record["sha256"], record["file_size"])
    if found is None:
        return "unmatched", name, None
    ref, scan_id = found.mask, found.scan_id
    pred = read_mask(mask_file)
    if not _fits(pred.shape, ref.shape, isinstance(truth, PrepTruth)):
        raise MammoError(mask_file, f"{name}: mask {pred.shape[0]}x{pred.shape[1]} does not fit the reference "
                                    f"{scan_id} ({ref.shape[0]}x{ref.shape[1]}); not resized")
    if pred.shape != ref.shape:  # documented: prep ground truth is at the training resolution
        pred = resize_mask(pred, ref.shape)
    pred = without_ignore(pred, found.ignore)
    entry = {"prediction": name, "reference": scan_id, "woman": found.patient or scan_id,
             "metrics": {"1": case_metrics(pred, ref, image_area_fraction)}}
    return "case", (entry, found), _scan_lesions(record, pred_dir, found)


def _read_all(pred_dirs: list[str], out: str | None) -> list[tuple[str, dict]]:
    """(folder, predict's summary) of every folder; they must share the threshold and the minimum area."""
    summaries = []
    for pred_dir in pred_dirs:
        output = PredictionOutput(pred_dir)
        if out and os.path.realpath(out) == os.path.realpath(output.summary_file):
            raise MammoError(out, "is predict's summary.json; choose another evaluation output")
        summaries.append((pred_dir, output.read_summary()))
    settings = {(_option(s, "threshold", float), _option(s, "min_area_mm2", (int, float))) for _, s in summaries}
    if len(settings) > 1:
        raise MammoError(pred_dirs[0], f"the prediction folders were made at other thresholds or minimum areas "
                                       f"({sorted(settings, key=str)}); pool only folders of one operating point")
    return summaries


def _option(summary: dict, key: str, kind):
    options = summary.get("options") if isinstance(summary.get("options"), dict) else {}
    return options.get(key) if isinstance(options.get(key), kind) else None


@dataclass
class Cases:
    """What the prediction folders hold against the ground truth: the evaluated cases, and for lesion-level
    scoring every scan with a probability map (or a failed prediction) with its woman, Dice and reference id."""

    summaries: list
    threshold: float
    min_area_mm2: float
    per_case: list = field(default_factory=list)
    unmatched: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    scans: list = field(default_factory=list)  # ScanLesions
    women: list = field(default_factory=list)
    dice: list = field(default_factory=list)  # None for a scan without a lesion
    references: list = field(default_factory=list)  # the reference scan id of each of ``scans``
    failed: int = 0
    without_probabilities: int = 0
    predictions: int = 0

    def add_scan(self, scan: ScanLesions, ref: Reference, dice) -> None:
        self.scans.append(scan)
        self.women.append(ref.patient or ref.scan_id)
        self.dice.append(dice)
        self.references.append(ref.scan_id)


def collect_cases(pred_dirs, truth: Truth, image_area_fraction: float = 0.0, out: str | None = None) -> Cases:
    """Match every prediction of ``pred_dirs`` (a folder or a list pooled into one) to ``truth``; a bad record,
    mask or reference is that case's problem, the others are collected (see :func:`evaluate`)."""
    pred_dirs = [pred_dirs] if isinstance(pred_dirs, str) else list(pred_dirs)
    summaries = _read_all(pred_dirs, out)
    cases = Cases(summaries, _option(summaries[0][1], "threshold", float) or 0.5,
                  _option(summaries[0][1], "min_area_mm2", (int, float)) or 0.0,
                  problems=truth.shard_problems if isinstance(truth, PrepTruth) else [])
    for pred_dir, summary in summaries:
        cases.predictions += len(summary["scans"])
        summary_path = PredictionOutput(pred_dir).summary_file
        for number, record in enumerate(summary["scans"]):
            try:
                if isinstance(record, dict) and record.get("status", "ok") != "ok":  # predict's own failures
                    if record.get("status") == "error":
                        cases.failed += 1
                        found = _failed_scan(record, summary.get("input"), truth)
                        if found is not None:
                            cases.add_scan(found[0], found[1], None)
                    continue
                kind, value, scan = _evaluate_record(record, number, pred_dir, truth, image_area_fraction)
            except MammoError as e:
                cases.problems.append({"file": e.where or pred_dir, "reason": e.reason})
                continue
            except Exception as e:  # noqa: BLE001 - one bad case never loses the others
                cases.problems.append({"file": summary_path, "reason": f"scans[{number}]: {type(e).__name__}: {e}"})
                continue
            if kind != "case":
                cases.unmatched.append(value)
                continue
            entry, ref = value
            cases.per_case.append(entry)
            if scan is None:
                cases.without_probabilities += 1
            else:
                metrics = entry["metrics"]["1"]
                cases.add_scan(scan, ref, metrics["Dice"] if metrics["n_ref"] else None)
    return cases


def evaluate(pred_dirs, truth: Truth, out: str | None = None, image_area_fraction: float = 0.0,
             min_area_mm2: float | None = None, groups: dict | None = None, resamples: int = RESAMPLES) -> dict:
    """Score every prediction; a bad record, mask or reference is that case's problem (``problems``),
    the others are evaluated. NaN values (IoU of two empty masks) are written to ``out`` as null.

    ``pred_dirs``: a predict output folder, or a list of them pooled into one evaluation.
    ``truth``: :class:`PrepTruth`, or the raw-dataset truth that ``data_prep.ground_truth.ground_truth(path)``
    builds for either (the dataset converters live above this library).

    ``image_area_fraction``: a scan is called positive when its predicted lesion area exceeds this
    share of it (0: any reported lesion, the whole-scan rule). ``min_area_mm2``: the smallest
    detection (None: predict's own minimum). ``groups``: name → lesion types, reported apart in the intervals.

    With ``out``, ``report.html`` beside it is the page a person reads (:mod:`mammo_seg.report`).
    """
    pred_dirs = [pred_dirs] if isinstance(pred_dirs, str) else list(pred_dirs)
    cases = collect_cases(pred_dirs, truth, image_area_fraction, out)
    summaries, threshold = cases.summaries, cases.threshold
    if min_area_mm2 is None:
        min_area_mm2 = cases.min_area_mm2
    per_case, unmatched, problems, scans = cases.per_case, cases.unmatched, cases.problems, cases.scans
    failed, without_prob, predictions = cases.failed, cases.without_probabilities, cases.predictions
    pred_dir = pred_dirs[0]
    if not per_case and not problems:
        raise MammoError(pred_dir, f"no prediction matches a scan of {truth.source}")
    metrics = [c["metrics"]["1"] for c in per_case]
    keys = ("IoU", "Dice", "precision", "recall", "TP", "FP", "FN", "TN", "n_pred", "n_ref")
    mean = {k: _mean([m[k] for m in metrics]) for k in keys}
    tp, fp, fn = (sum(m[k] for m in metrics) for k in ("TP", "FP", "FN"))
    pooled = scores(tp, fp, fn)
    called = [(m["image_predicted_positive"], m["image_reference_positive"]) for m in metrics]
    positives = [p for p, r in called if r]
    image = {"accuracy": sum(p == r for p, r in called) / len(called) if called else math.nan,
             "recall": sum(positives) / len(positives) if positives else math.nan,
             "cases": len(called), "reference_positive": len(positives),
             "rule": ("positive when any lesion was reported" if image_area_fraction == 0
                      else f"positive when the lesion area exceeds {image_area_fraction:.6g} of the image")}
    with_lesion = [m for m in metrics if m["n_ref"] > 0]
    lesion_images = {"cases": len(with_lesion), "Dice": _mean([m["Dice"] for m in with_lesion]),
                     "IoU": _mean([m["IoU"] for m in with_lesion])}
    result = {
        "package_version": __version__,
        "predictions": (os.path.abspath(pred_dir) if len(pred_dirs) == 1 else [os.path.abspath(p) for p in pred_dirs]),
        "ground_truth": os.path.abspath(truth.source), "labels": {"1": "lesion"},
        "metric_per_case": per_case, "mean": {"1": mean}, "foreground_mean": mean,
        "pooled": {"1": pooled}, "image_level": image, "lesion_images": lesion_images,
        "unmatched_predictions": unmatched, "problems": problems,
        "counts": {"predictions": predictions, "evaluated": len(per_case), "problems": len(problems),
                   "unmatched": len(unmatched), "failed_predictions": failed,
                   "scans": len(per_case) + failed,  # evaluated or failed in predict
                   "without_probabilities": without_prob}}
    if scans:
        result["detection"] = {"froc": froc(scans, min_area_mm2),
                               "at_operating_point": score_scans(scans, threshold, min_area_mm2)}
        result["intervals"] = bootstrap(scans, cases.women, threshold, min_area_mm2, cases.dice,
                                        groups=_groups(groups, scans),
                                        resamples=resamples)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        write_json(out, _json_safe(result), final_newline=False)
        if per_case:
            from mammo_seg.report import report_path, write_report

            write_report(report_path(out), result, summaries, truth, threshold, min_area_mm2)
    return result


def _groups(groups: dict | None, scans: list[ScanLesions]) -> dict:
    """"all" lesions, then each group of ``groups`` (name → types) that names a type of these scans."""
    kinds = {k for scan in scans for k in scan.kinds}
    chosen = {"all": kinds}
    for name, types in (groups or {}).items():
        chosen[name] = set(types)
    return chosen
