"""Losses made of other losses: Combo (cross-entropy and Dice) and weighted sums of any losses."""

from __future__ import annotations

import keras
from keras import ops

from mammo_seg.losses.base import PooledLoss, pixel_mean, register, valid_labels
from mammo_seg.losses.region import DiceLoss


@register
class ComboLoss(PooledLoss):
    """Combo loss: L = α · L_wBCE − (1 − α) · DSC (negative at best: −(1 − α) for a perfect mask).

    L_wBCE = −1/N Σ [β·y·log p + (1 − β)·(1 − y)·log(1 − p)] (β > 0.5 penalises false negatives more),
    DSC the batch soft Dice coefficient (2 TP + s)/(2 TP + FP + FN + s). Reference: S. A. Taghanaki et
    al., "Combo loss: Handling input and output imbalance in multi-organ segmentation", CMIG 2019.
    """

    num_statistics = 5

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1.0, from_logits: bool = True,
                 name="combo", **kwargs):
        super().__init__(from_logits=from_logits, name=name, **kwargs)
        self.alpha, self.beta, self.smooth = float(alpha), float(beta), float(smooth)
        self._dice = DiceLoss(smooth=smooth)

    def statistics(self, y_true, y_pred):
        y, w = valid_labels(y_true)
        log_p, log_not_p = self.log_probabilities(y_pred)
        bce = pixel_mean(-(self.beta * y * log_p + (1.0 - self.beta) * (1.0 - y) * log_not_p), w)
        return bce + self._dice.statistics(y_true, y_pred)

    def from_statistics(self, stats):
        bce = ops.divide_no_nan(stats[0], stats[1])
        dice = 1.0 - self._dice.from_statistics(stats[2:])
        return self.alpha * bce - (1.0 - self.alpha) * dice

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "smooth": self.smooth}


@register
class MixedLoss(PooledLoss):
    """Σ coef_i · loss_i, e.g. 0.5 · WeightedBCE + 0.5 · SoftIoU (the original's optional mode), or
    PaddleSeg's CE + Lovász-softmax with coefs [0.8, 0.2] and CE + Lovász hinge with [1, 0.02].

    ``losses`` are loss objects or ``{"name": ..., **params}`` dicts (as in YAML configs).
    """

    def __init__(self, losses, coefs=None, name="mixed", **kwargs):
        from mammo_seg.losses.registry import get_loss  # the registry names this class: imported when used

        super().__init__(name=name, **kwargs)
        self.losses = [get_loss(spec) for spec in losses]
        self.coefs = [float(c) for c in (coefs if coefs is not None else [1.0] * len(self.losses))]
        if not self.losses or len(self.coefs) != len(self.losses):
            raise ValueError("MixedLoss needs one coefficient per loss")

    @property
    def num_statistics(self):
        return sum(loss.num_statistics for loss in self.losses)

    def _offsets(self):
        start = 0
        for loss in self.losses:
            yield loss, start
            start += loss.num_statistics

    @property
    def gathered(self):
        return tuple(start + i for loss, start in self._offsets() for i in loss.gathered)

    @property
    def gather_padding(self):
        return tuple(pad for loss, _ in self._offsets() for pad in loss.gather_padding)

    def statistics(self, y_true, y_pred):
        return [s for loss in self.losses for s in loss.statistics(y_true, y_pred)]

    def from_statistics(self, stats):
        total = 0.0
        for (loss, start), coef in zip(self._offsets(), self.coefs):
            total = total + coef * loss.from_statistics(stats[start:start + loss.num_statistics])
        return total

    def get_config(self):
        return {**super().get_config(), "losses": [keras.saving.serialize_keras_object(l) for l in self.losses],
                "coefs": self.coefs}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["losses"] = [keras.saving.deserialize_keras_object(l) for l in config["losses"]]
        return cls(**config)
