"""The one IoU: used by the soft-IoU loss (probabilities) and by the metrics (thresholded masks)."""

from __future__ import annotations

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
