"""``mammo evaluate``: predictions against ground truth → an nnU-Net-style ``summary.json``.

Ground truth comes from

* a raw CBIS-DDSM or MIAS directory: masks built by the converters, on each scan's original grid;
* or a prep output with whole scans (``OUT`` or ``OUT/full``): masks at the training resolution;
  the predicted mask is resampled to that grid (coverage ≥ 0.5, as prep resamples masks).

Predictions are matched to ground truth by the SHA-256 of the scan file (recorded by predict and by
prep), so copies and symlinks of the scans match; no DICOM attribute is needed.

Per case: TP, FP, FN, TN pixels, lesion IoU, Dice, precision, recall (IoU and Dice are NaN, written
as null, when neither mask has a lesion, as in nnU-Net), and the image-level call against "the reference
has a lesion": a whole scan is called positive when predict reported any lesion (predict drops lesions
under its minimum area in mm²; the 1/750-of-the-image rule of the original is for tiles, see
``mammo_seg.metrics``). Means over cases ignore NaN; the pooled values sum the pixel counts over all
cases first; ``lesion_images`` gives the mean Dice and IoU over the scans that have a lesion.

Lesion-level detection (:mod:`mammo_seg.detection`), from predict's probability maps (``--format``
with ``prob``) and the reference lesions one by one (MIAS circles, CBIS-DDSM masks): FROC points and
the sensitivity at 0.25-4 false positives per image, and at predict's operating point the sensitivity
by lesion type and the share of lesion-free scans with any detection. A scan whose prediction failed
counts as an image with no detection (its lesions missed).

A bad item (a record without sha256, a missing or colour mask, a mask whose size or orientation
differs from the reference) is that case's line in ``problems``, counted in ``counts``; the rest
are evaluated. A predicted mask is resized only against prep ground truth (training resolution)
and only when its aspect matches.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from mammo_seg import __version__
from mammo_seg.data.resolution import resize_image, resize_mask
from mammo_seg.detection import ScanLesions, froc, score_scans
from mammo_seg.errors import MammoError
from mammo_seg.io import file_sha256, read_mask
from mammo_seg.overlap import confusion, scores


def case_metrics(pred: np.ndarray, ref: np.ndarray, image_area_fraction: float = 1 / 750) -> dict:
    """Pixel counts and scores of one case (:mod:`mammo_seg.overlap`) and its image-level call."""
    tp, fp, fn, tn = confusion(pred, ref)
    return {"TP": tp, "FP": fp, "FN": fn, "TN": tn, "n_pred": tp + fp, "n_ref": tp + fn, **scores(tp, fp, fn),
            "image_predicted_positive": bool(tp + fp > pred.size * image_area_fraction),
            "image_reference_positive": bool(tp + fn > 0)}


@dataclass
class Reference:
    """A scan's ground truth: the merged lesion mask and each lesion with its type."""

    mask: np.ndarray
    scan_id: str
    lesions: list  # bool masks, one per lesion
    types: list  # one type per lesion (MIAS CIRC/SPIC/…, CBIS mass/calcification, "lesion")


class Truth:
    """Reference masks by scan-file SHA-256; ``source`` names where they come from (a folder)."""

    source: str = ""

    def find(self, digest: str, size: int) -> Reference | None:
        raise NotImplementedError


class PrepTruth(Truth):
    """Whole-scan masks of a prep output (``--full-scans``), at the training resolution."""

    def __init__(self, out: str):
        from mammo_seg.data.features import iterate_records
        from mammo_seg.data.prep_output import PrepOutput

        self.source = out
        prep = PrepOutput.containing(out)
        manifest = prep.whole_scans()
        scan_of = {v["sha256"]: k for k, v in prep.scans().items()}
        self.masks = {}
        for split in manifest.splits:
            for file in manifest.shard_files(split):
                for rec in iterate_records(file):
                    self.masks[rec["scan_id"].decode()] = rec["mask"][..., 0].astype(bool)
        self.scan_of = scan_of

    def find(self, digest, size):
        from skimage.measure import label

        scan_id = self.scan_of.get(digest)
        if scan_id is None or scan_id not in self.masks:
            return None
        mask = self.masks[scan_id]
        components, n = label(mask, connectivity=2, return_num=True)
        return Reference(mask, scan_id, [components == k for k in range(1, n + 1)], ["lesion"] * n)


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


def _read_predictions(pred_dir: str, summary_path: str) -> dict:
    """Predict's ``summary.json`` (its ``scans`` a list); an unreadable file is an error for the whole run."""
    if not os.path.isfile(summary_path):
        raise MammoError(pred_dir, "no summary.json: not a mammo predict output")
    try:
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
        scans = summary["scans"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MammoError(summary_path, f"not a mammo predict summary ({type(e).__name__}: {e})") from None
    if not isinstance(scans, list):
        raise MammoError(summary_path, "not a mammo predict summary (scans is not a list)")
    return summary


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
    """The area of one pixel of the prediction's grid (its spacing: PixelSpacing or the nominal one)."""
    spacing = record.get("spacing_mm")
    if isinstance(spacing, (int, float)) and spacing > 0:
        return float(spacing) ** 2
    if isinstance(spacing, list) and len(spacing) == 2:
        return float(spacing[0]) * float(spacing[1])
    raise MammoError(record.get("id", "record"), "record without a pixel spacing: lesion areas cannot be measured")


def _scan_lesions(record: dict, pred_dir: str, ref: Reference) -> ScanLesions | None:
    """The case for detection scoring, on the reference's grid; None without a probability map."""
    name = record["outputs"].get("prob")
    if not name:
        return None
    path = os.path.join(pred_dir, name)
    try:
        with np.load(path) as npz:
            prob = npz["probability"].astype(np.float32)
    except (OSError, ValueError, KeyError) as e:
        raise MammoError(path, f"unreadable probability map ({type(e).__name__}: {e})") from None
    area = _pixel_area_mm2(record) * prob.size / ref.mask.size
    if prob.shape != ref.mask.shape:  # prep ground truth, at the training resolution (aspect checked)
        prob = resize_image(prob, ref.mask.shape)
    return ScanLesions(prob, ref.lesions, ref.types, area)


def _failed_scan(record: dict, input_root, truth: Truth) -> ScanLesions | None:
    """A scan predict failed on, when its ground truth is known: an image with no detection."""
    source = record.get("source")
    if not isinstance(source, str) or not isinstance(input_root, str):
        return None
    path = os.path.join(input_root, source)
    if not os.path.isfile(path):
        return None
    ref = truth.find(file_sha256(path), os.path.getsize(path))
    return None if ref is None else ScanLesions(None, ref.lesions, ref.types, 1.0)


def _evaluate_record(record, number, pred_dir, truth, image_area_fraction):
    """("case", per-case entry, ScanLesions or None), ("unmatched", id, None) or raises MammoError naming the item."""
    name = _check_record(record, number)
    mask_file = os.path.join(pred_dir, record["outputs"]["mask"])
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
    return "case", {"prediction": name, "reference": scan_id,
                    "metrics": {"1": case_metrics(pred, ref, image_area_fraction)}}, _scan_lesions(record, pred_dir,
                                                                                                   found)


def evaluate(pred_dir: str, truth: Truth, out: str | None = None, image_area_fraction: float = 0.0,
             min_area_mm2: float | None = None) -> dict:
    """Score every prediction; a bad record, mask or reference is that case's problem (``problems``),
    the others are evaluated. NaN values (IoU of two empty masks) are written to ``out`` as null.

    ``truth``: :class:`PrepTruth`, or the raw-dataset truth that ``data_prep.ground_truth.ground_truth(path)``
    builds for either (the dataset converters live above this library).

    ``image_area_fraction``: a scan is called positive when its predicted lesion area exceeds this
    share of it (0: any reported lesion, the whole-scan rule). ``min_area_mm2``: the smallest
    detection (None: predict's own minimum).

    With ``out``, ``report.html`` beside it is the page a person reads (:mod:`mammo_seg.report`).
    """
    summary_path = os.path.join(pred_dir, "summary.json")
    if out and os.path.realpath(out) == os.path.realpath(summary_path):
        raise MammoError(out, "is predict's summary.json; choose another evaluation output")
    summary = _read_predictions(pred_dir, summary_path)
    predictions = summary["scans"]
    options = summary.get("options") if isinstance(summary.get("options"), dict) else {}
    threshold = options.get("threshold") if isinstance(options.get("threshold"), float) else 0.5
    if min_area_mm2 is None:
        min_area_mm2 = options.get("min_area_mm2") if isinstance(options.get("min_area_mm2"), (int, float)) else 0.0
    per_case, unmatched, problems, scans, failed = [], [], [], [], 0
    without_prob = 0
    for number, record in enumerate(predictions):
        try:
            if isinstance(record, dict) and record.get("status", "ok") != "ok":  # predict's own failures
                if record.get("status") == "error":
                    failed += 1
                    scan = _failed_scan(record, summary.get("input"), truth)
                    if scan is not None:
                        scans.append(scan)
                continue
            kind, value, scan = _evaluate_record(record, number, pred_dir, truth, image_area_fraction)
        except MammoError as e:
            problems.append({"file": e.where or pred_dir, "reason": e.reason})
            continue
        except Exception as e:  # noqa: BLE001 - one bad case never loses the others
            problems.append({"file": summary_path, "reason": f"scans[{number}]: {type(e).__name__}: {e}"})
            continue
        (per_case if kind == "case" else unmatched).append(value)
        if kind == "case":
            if scan is None:
                without_prob += 1
            else:
                scans.append(scan)
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
        "package_version": __version__, "predictions": os.path.abspath(pred_dir),
        "ground_truth": os.path.abspath(truth.source), "labels": {"1": "lesion"},
        "metric_per_case": per_case, "mean": {"1": mean}, "foreground_mean": mean,
        "pooled": {"1": pooled}, "image_level": image, "lesion_images": lesion_images,
        "unmatched_predictions": unmatched, "problems": problems,
        "counts": {"predictions": len(predictions), "evaluated": len(per_case), "problems": len(problems),
                   "unmatched": len(unmatched), "failed_predictions": failed,
                   "scans": len(per_case) + failed,  # evaluated or failed in predict
                   "without_probabilities": without_prob}}
    if scans:
        result["detection"] = {"froc": froc(scans, min_area_mm2),
                               "at_operating_point": score_scans(scans, threshold, min_area_mm2)}
    if out:
        from mammo_seg.inference.writers import write_json

        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        write_json(out, _json_safe(result))
        if per_case:
            from mammo_seg.report import report_path, write_report

            write_report(report_path(out), result, summary, pred_dir, truth, threshold, min_area_mm2)
    return result
