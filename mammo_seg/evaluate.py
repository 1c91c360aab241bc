"""``mammo evaluate``: predictions against ground truth → an nnU-Net-style ``summary.json``.

Ground truth comes from

* a raw CBIS-DDSM or MIAS directory: masks built by the converters, on each scan's original grid;
* or a prep output with whole scans (``OUT`` or ``OUT/full``): masks at the training resolution;
  the predicted mask is resampled to that grid (coverage ≥ 0.5, as prep resamples masks).

Predictions are matched to ground truth by the SHA-256 of the scan file (recorded by predict and by
prep), so copies and symlinks of the scans match; no DICOM attribute is needed.

Per case: TP, FP, FN, TN pixels, lesion IoU, Dice, precision, recall (IoU and Dice are NaN, written
as null, when neither mask has a lesion, as in nnU-Net), and the image-level call (positive when the lesion area
exceeds 1/750 of the image) against "the reference has a lesion". Means over cases ignore NaN; the
pooled values sum the pixel counts over all cases first.

A bad item (a record without sha256, a missing or colour mask, a mask whose size or orientation
differs from the reference) is that case's line in ``problems``, counted in ``counts``; the rest
are evaluated. A predicted mask is resized only against prep ground truth (training resolution)
and only when its aspect matches.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict

import numpy as np

from mammo_seg import __version__
from mammo_seg.data.tiling import resize_mask
from mammo_seg.errors import MammoError
from mammo_seg.io import file_sha256, read_mask


def case_metrics(pred: np.ndarray, ref: np.ndarray, image_area_fraction: float = 1 / 750) -> dict:
    pred, ref = pred.astype(bool), ref.astype(bool)
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred & ~ref))
    fn = int(np.count_nonzero(~pred & ref))
    tn = int(pred.size - tp - fp - fn)

    def ratio(a, b):
        return a / b if b else math.nan

    return {"TP": tp, "FP": fp, "FN": fn, "TN": tn, "n_pred": tp + fp, "n_ref": tp + fn,
            "IoU": ratio(tp, tp + fp + fn), "Dice": ratio(2 * tp, 2 * tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "image_predicted_positive": bool(tp + fp > pred.size * image_area_fraction),
            "image_reference_positive": bool(tp + fn > 0)}


class Truth:
    """Reference masks by scan-file SHA-256."""

    def mask(self, digest: str, size: int) -> tuple[np.ndarray, str] | None:
        raise NotImplementedError


class RawTruth(Truth):
    def __init__(self, raw: str, dataset: str):
        from data_prep.prepare import CONVERTERS

        self.cases, self.problems, _ = CONVERTERS[dataset](raw, progress=False)
        self.by_size = defaultdict(list)
        for case in self.cases:
            self.by_size[os.path.getsize(case.scan_path)].append(case)
        self.digests = {}

    def mask(self, digest, size):
        from mammo_seg.data.cases import load_case

        for case in self.by_size.get(size, []):
            if case.scan_path not in self.digests:
                self.digests[case.scan_path] = file_sha256(case.scan_path)
            if self.digests[case.scan_path] == digest:
                return load_case(case)[1], case.scan_id
        return None


class PrepTruth(Truth):
    def __init__(self, out: str):
        from mammo_seg.data.inspect import iterate_records, load_manifest

        full = out if os.path.basename(os.path.normpath(out)) == "full" else os.path.join(out, "full")
        root = os.path.dirname(os.path.normpath(full))
        manifest = load_manifest(full)
        if manifest.get("kind") != "whole_scans":
            raise MammoError(full, "not a whole-scan prep output (run mammo prep with --full-scans)")
        with open(os.path.join(root, "scans.json")) as f:
            scan_of = {v["sha256"]: k for k, v in json.load(f).items()}
        self.masks = {}
        for split in manifest["splits"].values():
            for name in split["shards"]:
                for rec in iterate_records(os.path.join(full, name)):
                    self.masks[rec["scan_id"].decode()] = rec["mask"][..., 0].astype(bool)
        self.scan_of = scan_of

    def mask(self, digest, size):
        scan_id = self.scan_of.get(digest)
        if scan_id is None or scan_id not in self.masks:
            return None
        return self.masks[scan_id], scan_id


def ground_truth(path: str) -> Truth:
    from data_prep import cbis_ddsm, mias

    if not os.path.isdir(path):
        raise MammoError(path, "ground truth directory not found")
    if os.path.isfile(os.path.join(path, "scans.json")) or os.path.basename(os.path.normpath(path)) == "full":
        try:
            return PrepTruth(path)
        except MammoError:
            raise
        except Exception as e:  # noqa: BLE001 - a damaged prep output: one line, not a traceback
            raise MammoError(path, f"unreadable prep output ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                                   f"check it with mammo inspect") from None
    if cbis_ddsm.find_csvs(path):
        return RawTruth(path, "cbis-ddsm")
    if mias.find_info(path):
        return RawTruth(path, "mias")
    raise MammoError(path, "not a prep output (scans.json), a CBIS-DDSM directory (case CSVs) or MIAS (Info.txt)")


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


def _read_predictions(pred_dir: str, summary_path: str) -> list:
    """The records of predict's ``summary.json``; an unreadable file is an error for the whole run."""
    if not os.path.isfile(summary_path):
        raise MammoError(pred_dir, "no summary.json: not a mammo predict output")
    try:
        with open(summary_path, encoding="utf-8") as f:
            scans = json.load(f)["scans"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MammoError(summary_path, f"not a mammo predict summary ({type(e).__name__}: {e})") from None
    if not isinstance(scans, list):
        raise MammoError(summary_path, "not a mammo predict summary (scans is not a list)")
    return scans


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


def _evaluate_record(record, number, pred_dir, truth, image_area_fraction):
    """("case", per-case entry), ("unmatched", id) or raises MammoError naming the item."""
    name = _check_record(record, number)
    mask_file = os.path.join(pred_dir, record["outputs"]["mask"])
    if not os.path.isfile(mask_file):
        raise MammoError(mask_file, f"{name}: mask PNG not found")
    found = truth.mask(record["sha256"], record["file_size"])
    if found is None:
        return "unmatched", name
    ref, scan_id = found
    pred = read_mask(mask_file)
    if not _fits(pred.shape, ref.shape, isinstance(truth, PrepTruth)):
        raise MammoError(mask_file, f"{name}: mask {pred.shape[0]}x{pred.shape[1]} does not fit the reference "
                                    f"{scan_id} ({ref.shape[0]}x{ref.shape[1]}); not resized")
    if pred.shape != ref.shape:  # documented: prep ground truth is at the training resolution
        pred = resize_mask(pred, ref.shape)
    return "case", {"prediction": name, "reference": scan_id,
                    "metrics": {"1": case_metrics(pred, ref, image_area_fraction)}}


def evaluate(pred_dir: str, truth_path: str, out: str | None = None, image_area_fraction: float = 1 / 750) -> dict:
    """Score every prediction; a bad record, mask or reference is that case's problem (``problems``),
    the others are evaluated. NaN values (IoU of two empty masks) are written to ``out`` as null."""
    summary_path = os.path.join(pred_dir, "summary.json")
    if out and os.path.realpath(out) == os.path.realpath(summary_path):
        raise MammoError(out, "is predict's summary.json; choose another evaluation output")
    predictions = _read_predictions(pred_dir, summary_path)
    truth = ground_truth(truth_path)
    per_case, unmatched, problems = [], [], []
    for number, record in enumerate(predictions):
        if isinstance(record, dict) and record.get("status", "ok") != "ok":  # predict's own failures
            continue
        try:
            kind, value = _evaluate_record(record, number, pred_dir, truth, image_area_fraction)
        except MammoError as e:
            problems.append({"file": e.where or pred_dir, "reason": e.reason})
            continue
        except Exception as e:  # noqa: BLE001 - one bad case never loses the others
            problems.append({"file": summary_path, "reason": f"scans[{number}]: {type(e).__name__}: {e}"})
            continue
        (per_case if kind == "case" else unmatched).append(value)
    if not per_case and not problems:
        raise MammoError(pred_dir, f"no prediction matches a scan of {truth_path}")
    metrics = [c["metrics"]["1"] for c in per_case]
    keys = ("IoU", "Dice", "precision", "recall", "TP", "FP", "FN", "TN", "n_pred", "n_ref")
    mean = {k: _mean([m[k] for m in metrics]) for k in keys}
    tp, fp, fn = (sum(m[k] for m in metrics) for k in ("TP", "FP", "FN"))
    pooled = {"IoU": tp / (tp + fp + fn) if tp + fp + fn else math.nan,
              "Dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan,
              "precision": tp / (tp + fp) if tp + fp else math.nan, "recall": tp / (tp + fn) if tp + fn else math.nan}
    called = [(m["image_predicted_positive"], m["image_reference_positive"]) for m in metrics]
    positives = [p for p, r in called if r]
    image = {"accuracy": sum(p == r for p, r in called) / len(called) if called else math.nan,
             "recall": sum(positives) / len(positives) if positives else math.nan,
             "cases": len(called), "reference_positive": len(positives)}
    result = {
        "package_version": __version__, "predictions": os.path.abspath(pred_dir),
        "ground_truth": os.path.abspath(truth_path), "labels": {"1": "lesion"},
        "metric_per_case": per_case, "mean": {"1": mean}, "foreground_mean": mean,
        "pooled": {"1": pooled}, "image_level": image, "unmatched_predictions": unmatched,
        "problems": problems,
        "counts": {"predictions": len(predictions), "evaluated": len(per_case), "problems": len(problems),
                   "unmatched": len(unmatched)}}
    if out:
        from mammo_seg.inference.writers import write_json

        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        write_json(out, _json_safe(result))
    return result
