"""The overlap arithmetic, in one place.

* :func:`confusion_sums`, :func:`overlap_sums`, :func:`iou` and :func:`ratio` (``keras.ops``): the region
  losses (soft counts of probabilities) and the Keras metrics (thresholded masks);
* :func:`confusion` and :func:`scores` (NumPy, exact integer counts): evaluation of whole-scan masks,
  the choice of the operating point and the pooled scores.

IoU = TP / (TP + FP + FN), Dice = 2TP / (2TP + FP + FN), precision = TP / (TP + FP), recall = TP / (TP + FN).

**An empty denominator** (no lesion predicted for precision, none in the reference for recall, neither
for IoU and Dice) leaves a score undefined. Evaluation says so: :func:`scores` gives NaN (``null`` in
JSON; means over cases skip it), as nnU-Net reports it. Inside the graph (:func:`iou`, :func:`ratio`:
the losses and the metrics Keras logs, averages and monitors during training, where a NaN would poison
the epoch's mean and every comparison) the same ratio is 0.
"""

from __future__ import annotations

import math


def confusion_sums(p, y, axis=None):
    """(TP, FP, FN) over ``axis`` (None: everything): Σ p·y, Σ p·(1 − y), Σ (1 − p)·y.

    With binary p these are pixel counts; with probabilities the soft counts of Rahman & Wang (2016).
    """
    from keras import ops  # here: evaluation needs only the NumPy functions below, without Keras's 5-s import

    tp = ops.sum(p * y, axis=axis)
    return tp, ops.sum(p, axis=axis) - tp, ops.sum(y, axis=axis) - tp


def overlap_sums(p, y, axis=None):
    """Intersection TP and union TP + FP + FN (:func:`confusion_sums`) over ``axis`` (None: everything)."""
    tp, fp, fn = confusion_sums(p, y, axis)
    return tp, tp + fp + fn


def ratio(numerator, denominator):
    """``numerator / denominator``; 0 where the denominator is 0 (see the module docstring)."""
    from keras import ops

    return ops.divide_no_nan(numerator, denominator)


def iou(intersection, union, smooth=0.0):
    """(intersection + smooth) / (union + smooth); 0 where both the union and ``smooth`` are 0."""
    return ratio(intersection + smooth, union + smooth)


def confusion(pred, ref) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) pixel counts of two bool masks of one shape."""
    import numpy as np

    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(ref)) - tp
    return tp, fp, fn, int(pred.size) - tp - fp - fn


def scores(tp: int, fp: int, fn: int) -> dict:
    """IoU, Dice, precision and recall of counts; NaN where a denominator is 0 (see the module docstring)."""
    def ratio(a, b):
        return a / b if b else math.nan

    return {"IoU": ratio(tp, tp + fp + fn), "Dice": ratio(2 * tp, 2 * tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}
