"""The base of every loss: statistics of the batch, then the loss from them (see :mod:`mammo_seg.losses`).

**The ignore region.** A pixel whose label is :data:`~mammo_seg.data.features.IGNORE` (prep's
``ignore_kinds``) is neither lesion nor background: every loss skips it, in no sum and no pixel count.
:func:`valid_labels` gives each loss the labels with those pixels set to 0 and the weight w = 1 − [y = IGNORE]:
pixel losses sum w·ℓ over Σ w pixels, region losses count TP = Σ w·p·y, FP = Σ w·p·(1 − y) and
FN = Σ w·(1 − p)·y, the Lovász losses leave those pixels out of the sorted errors."""

from __future__ import annotations

import keras
from keras import ops

from mammo_seg.data.features import IGNORE

PACKAGE = "mammo_seg"
IMAGE_AXES = (1, 2, 3)


def register(cls):
    """Register ``cls`` with Keras as ``mammo_seg>ClassName`` (the name saved ``.keras`` files carry)."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


class PooledLoss(keras.losses.Loss):
    """Base class: ``loss = from_statistics(statistics(y_true, y_pred))``.

    ``num_statistics`` is the length of the list ``statistics`` returns; ``gathered`` the indices
    of per-pixel statistics (concatenated over replicas along axis 0, padded with ``gather_padding``);
    all others are sums over images (summed over replicas).
    """

    num_statistics = 2
    gathered: tuple = ()
    gather_padding: tuple = ()

    def __init__(self, from_logits: bool = True, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = from_logits

    def probabilities(self, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        return ops.sigmoid(y_pred) if self.from_logits else y_pred

    def log_probabilities(self, y_pred):
        """(log p, log(1 − p)), stable for logits of any size."""
        if self.from_logits:
            x = ops.cast(y_pred, "float32")
            return -ops.softplus(-x), -ops.softplus(x)
        p = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1 - 1e-7)
        return ops.log(p), ops.log(1.0 - p)

    def statistics(self, y_true, y_pred) -> list:
        raise NotImplementedError

    def from_statistics(self, stats):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        return self.from_statistics(self.statistics(y_true, y_pred))

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


def valid_labels(y_true):
    """(y, w), float32: w = 1 − [y_true = IGNORE] (0 on the ignore region, 1 elsewhere) and y = y_true·w (the
    lesion mask, 0 on the ignore region)."""
    y = ops.cast(y_true, "float32")
    w = ops.cast(ops.not_equal(y, float(IGNORE)), "float32")
    return y * w, w


def mean_over_images(per_image, counted=None) -> list:
    """Statistics of a mean over images: (Σ per-image loss, number of images), or over the images where the 0/1
    float ``counted`` is 1 only."""
    if counted is None:
        return [ops.sum(per_image), ops.cast(ops.shape(per_image)[0], "float32")]
    return [ops.sum(per_image * counted), ops.sum(counted)]


def pixel_mean(per_pixel, w) -> list:
    """Statistics of a mean over the pixels outside the ignore region (``w`` of :func:`valid_labels`):
    (Σ w·per-pixel loss, Σ w)."""
    return [ops.sum(w * per_pixel), ops.sum(w)]
