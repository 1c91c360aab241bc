"""Lesion-class segmentation metrics, accumulated over an epoch (``keras.metrics.Metric``).

All are ratios of sums over every pixel (or image) seen, from one set of counts per update:

* pixel level, lesion class only (not the background-inclusive 2-class mean IoU the original
  reported, which background inflates): IoU = TP / (TP + FP + FN) (the same :func:`mammo_seg.overlap.iou`
  the loss uses, on thresholded predictions), Dice = 2 TP / (2 TP + FP + FN), precision = TP / (TP + FP),
  recall = TP / (TP + FN), accuracy = (TP + TN) / N;
* image level, the original's rule: an image is called positive when its predicted lesion area
  exceeds ``image_area_fraction`` of the image (default 1/750: 546 px at 640²); accuracy and recall
  of that call against "the mask has a lesion".

A ratio whose denominator is 0 is reported as 0.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from mammo_seg.overlap import iou, overlap_sums

PACKAGE = "mammo_seg"
# index of each count in the state vector
I, U, PRED, TRUE, N, IMG_TP, IMG_FP, IMG_FN, IMG_TN = range(9)


class OverlapMetric(keras.metrics.Metric):
    """Accumulates pixel and image counts; subclasses turn them into one number."""

    def __init__(self, threshold: float = 0.5, from_logits: bool = True, image_area_fraction: float = 1 / 750,
                 name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold, self.from_logits, self.image_area_fraction = threshold, from_logits, image_area_fraction
        self.counts = self.add_variable(shape=(9,), initializer="zeros", dtype="float32", aggregation="sum",
                                        name="counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        cut = math.log(self.threshold / (1 - self.threshold)) if self.from_logits else self.threshold
        hard = ops.cast(y_pred > cut, "float32")
        intersection, union = overlap_sums(hard, y, axis=(1, 2, 3))
        predicted, true = ops.sum(hard, axis=(1, 2, 3)), ops.sum(y, axis=(1, 2, 3))
        pixels = ops.cast(ops.prod(ops.shape(y)[1:]), "float32")
        called = ops.cast(predicted > pixels * self.image_area_fraction, "float32")
        lesion = ops.cast(true > 0, "float32")
        update = ops.stack([
            ops.sum(intersection), ops.sum(union), ops.sum(predicted), ops.sum(true),
            pixels * ops.cast(ops.shape(y)[0], "float32"),
            ops.sum(called * lesion), ops.sum(called * (1 - lesion)),
            ops.sum((1 - called) * lesion), ops.sum((1 - called) * (1 - lesion)),
        ])
        self.counts.assign_add(update)

    def reset_state(self):
        self.counts.assign(ops.zeros((9,), dtype="float32"))

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold, "from_logits": self.from_logits,
                "image_area_fraction": self.image_area_fraction}


def _metric(name: str, formula, doc: str):
    def result(self):
        return formula(self.counts)

    def __init__(self, threshold=0.5, from_logits=True, image_area_fraction=1 / 750, name=name, dtype=None):
        OverlapMetric.__init__(self, threshold, from_logits, image_area_fraction, name=name, dtype=dtype)

    cls = type("".join(part.title() for part in name.split("_")).replace("Iou", "IoU"), (OverlapMetric,),
               {"result": result, "__init__": __init__, "__doc__": doc, "__module__": __name__})
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


def _ratio(a, b):
    return ops.divide_no_nan(a, b)


LesionIoU = _metric("lesion_iou", lambda c: iou(c[I], c[U]), "Lesion-class IoU, TP / (TP + FP + FN).")
LesionDice = _metric("lesion_dice", lambda c: _ratio(2 * c[I], c[PRED] + c[TRUE]), "Dice, 2TP / (2TP + FP + FN).")
PixelPrecision = _metric("precision", lambda c: _ratio(c[I], c[PRED]), "Pixel precision, TP / (TP + FP).")
PixelRecall = _metric("recall", lambda c: _ratio(c[I], c[TRUE]), "Pixel recall, TP / (TP + FN).")
PixelAccuracy = _metric("accuracy", lambda c: _ratio(c[N] - (c[U] - c[I]), c[N]), "Pixel accuracy.")
ImageAccuracy = _metric("image_accuracy", lambda c: _ratio(c[IMG_TP] + c[IMG_TN], c[IMG_TP] + c[IMG_FP] +
                                                           c[IMG_FN] + c[IMG_TN]), "Image-level accuracy.")
ImageRecall = _metric("image_recall", lambda c: _ratio(c[IMG_TP], c[IMG_TP] + c[IMG_FN]), "Image-level recall.")

ALL = (LesionIoU, LesionDice, PixelPrecision, PixelRecall, PixelAccuracy, ImageAccuracy, ImageRecall)


def standard_metrics(**kwargs) -> list[OverlapMetric]:
    """One instance of every metric above (create them inside the strategy's scope)."""
    return [cls(**kwargs) for cls in ALL]
