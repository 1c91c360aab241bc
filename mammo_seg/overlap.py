"""The overlap arithmetic, in one place.

* :func:`overlap_sums` and :func:`iou` (``keras.ops``): the soft-IoU loss (probabilities) and the Keras
  metrics (thresholded masks);
* :func:`confusion` and :func:`scores` (NumPy, exact integer counts): evaluation of whole-scan masks,
  the choice of the operating point and the pooled scores.

IoU = TP / (TP + FP + FN), Dice = 2TP / (2TP + FP + FN), precision = TP / (TP + FP), recall = TP / (TP + FN).
"""

from __future__ import annotations

import math

from keras import ops


def overlap_sums(p, y, axis=None):
    """Intersection Σ p·y and union Σ (p + y − p·y) over ``axis`` (None: everything).

    With binary p these are the true positives and TP + FP + FN; with probabilities they are the
    soft counts of Rahman & Wang (2016).
    """
    intersection = ops.sum(p * y, axis=axis)
    union = ops.sum(p + y - p * y, axis=axis)
    return intersection, union


def iou(intersection, union, smooth=0.0):
    """(intersection + smooth) / (union + smooth); 0 where both the union and ``smooth`` are 0."""
    return ops.divide_no_nan(intersection + smooth, union + smooth)


def confusion(pred, ref) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) pixel counts of two bool masks of one shape."""
    import numpy as np

    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(ref)) - tp
    return tp, fp, fn, int(pred.size) - tp - fp - fn


def scores(tp: int, fp: int, fn: int) -> dict:
    """IoU, Dice, precision and recall of counts; NaN where a denominator is 0 (as nnU-Net reports it)."""
    def ratio(a, b):
        return a / b if b else math.nan

    return {"IoU": ratio(tp, tp + fp + fn), "Dice": ratio(2 * tp, 2 * tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}
