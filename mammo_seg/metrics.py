"""Lesion-class segmentation metrics, accumulated over an epoch (``keras.metrics.Metric``).

All are ratios of sums over every pixel (or image) seen, from one set of counts per update:

* pixel level, lesion class only (not the background-inclusive 2-class mean IoU the original
  reported, which background inflates): IoU = TP / (TP + FP + FN) (the same :func:`mammo_seg.overlap.iou`
  the loss uses, on thresholded predictions), Dice = 2 TP / (2 TP + FP + FN), precision = TP / (TP + FP),
  recall = TP / (TP + FN), accuracy = (TP + TN) / N;
* image level, the original's rule for tiles (:func:`mammo_seg.detection.image_positive`): an image is
  called positive when its predicted lesion area exceeds ``image_area_fraction`` of the image (default
  1/750: 546 px at 640²); accuracy and recall of that call against "the mask has a lesion".

A ratio whose denominator is 0 is reported as 0 (:func:`mammo_seg.overlap.ratio`).

Pixels of the ignore region (label :data:`~mammo_seg.data.features.IGNORE`) count nowhere: not in TP, FP, FN
or N, and not in an image's area for the image-level call (:func:`mammo_seg.losses.base.valid_labels`).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from mammo_seg.detection import TILE_IMAGE_AREA_FRACTION, image_positive
from mammo_seg.losses.base import valid_labels
from mammo_seg.overlap import confusion_sums, iou, ratio

PACKAGE = "mammo_seg"
# index of each count in the state vector
I, U, PRED, TRUE, N, IMG_TP, IMG_FP, IMG_FN, IMG_TN = range(9)


class OverlapMetric(keras.metrics.Metric):
    """Accumulates pixel and image counts; each subclass turns them into one number, its :meth:`result`."""

    default_name: str = "overlap"

    def __init__(self, threshold: float = 0.5, from_logits: bool = True,
                 image_area_fraction: float = TILE_IMAGE_AREA_FRACTION, name=None, dtype=None):
        super().__init__(name=name or self.default_name, dtype=dtype)
        self.threshold, self.from_logits, self.image_area_fraction = threshold, from_logits, image_area_fraction
        self.counts = self.add_variable(shape=(9,), initializer="zeros", dtype="float32", aggregation="sum",
                                        name="counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y, w = valid_labels(y_true)
        y_pred = ops.cast(y_pred, "float32")
        cut = math.log(self.threshold / (1 - self.threshold)) if self.from_logits else self.threshold
        hard = ops.cast(y_pred > cut, "float32") * w
        tp, fp, fn = confusion_sums(hard, y, axis=(1, 2, 3))
        intersection, union, predicted, true = tp, tp + fp + fn, tp + fp, tp + fn
        pixels = ops.sum(w, axis=(1, 2, 3))  # per image, outside the ignore region
        called = ops.cast(image_positive(predicted, pixels, self.image_area_fraction), "float32")
        lesion = ops.cast(true > 0, "float32")
        update = ops.stack([
            ops.sum(intersection), ops.sum(union), ops.sum(predicted), ops.sum(true), ops.sum(pixels),
            ops.sum(called * lesion), ops.sum(called * (1 - lesion)),
            ops.sum((1 - called) * lesion), ops.sum((1 - called) * (1 - lesion)),
        ])
        self.counts.assign_add(update)

    def reset_state(self):
        self.counts.assign(ops.zeros((9,), dtype="float32"))

    def result(self):
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold, "from_logits": self.from_logits,
                "image_area_fraction": self.image_area_fraction}


register = keras.saving.register_keras_serializable(package=PACKAGE)


@register
class LesionIoU(OverlapMetric):
    """Lesion-class IoU, TP / (TP + FP + FN)."""

    default_name = "lesion_iou"

    def result(self):
        return iou(self.counts[I], self.counts[U])


@register
class LesionDice(OverlapMetric):
    """Dice, 2TP / (2TP + FP + FN)."""

    default_name = "lesion_dice"

    def result(self):
        c = self.counts
        return ratio(2 * c[I], c[PRED] + c[TRUE])


@register
class PixelPrecision(OverlapMetric):
    """Pixel precision, TP / (TP + FP)."""

    default_name = "precision"

    def result(self):
        return ratio(self.counts[I], self.counts[PRED])


@register
class PixelRecall(OverlapMetric):
    """Pixel recall, TP / (TP + FN)."""

    default_name = "recall"

    def result(self):
        return ratio(self.counts[I], self.counts[TRUE])


@register
class PixelAccuracy(OverlapMetric):
    """Pixel accuracy, (TP + TN) / N."""

    default_name = "accuracy"

    def result(self):
        c = self.counts
        return ratio(c[N] - (c[U] - c[I]), c[N])


@register
class ImageAccuracy(OverlapMetric):
    """Image-level accuracy of the image call."""

    default_name = "image_accuracy"

    def result(self):
        c = self.counts
        return ratio(c[IMG_TP] + c[IMG_TN], c[IMG_TP] + c[IMG_FP] + c[IMG_FN] + c[IMG_TN])


@register
class ImageRecall(OverlapMetric):
    """Image-level recall of the image call."""

    default_name = "image_recall"

    def result(self):
        c = self.counts
        return ratio(c[IMG_TP], c[IMG_TP] + c[IMG_FN])


ALL = (LesionIoU, LesionDice, PixelPrecision, PixelRecall, PixelAccuracy, ImageAccuracy, ImageRecall)


def standard_metrics(**kwargs) -> list[OverlapMetric]:
    """One instance of every metric above (create them inside the strategy's scope)."""
    return [cls(**kwargs) for cls in ALL]
