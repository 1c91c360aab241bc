"""The per-epoch schedules of a loss, as Keras callbacks (the decaying lesion weight of WeightedBCE)."""

from __future__ import annotations

import keras
from keras import ops

from mammo_seg.losses.mixture import MixedLoss
from mammo_seg.losses.pixel import WeightedBCE


def weighted_bce_terms(loss):
    """The :class:`WeightedBCE` terms of ``loss`` (itself, or inside a :class:`MixedLoss`)."""
    if isinstance(loss, WeightedBCE):
        yield loss
    elif isinstance(loss, MixedLoss):
        for child in loss.losses:
            yield from weighted_bce_terms(child)


class PosWeightDecay(keras.callbacks.Callback):
    """Sets every decaying :class:`WeightedBCE` term of a loss to its epoch's lesion weight
    (:meth:`WeightedBCE.pos_weight_at`) at the start of each epoch, and logs the first one's as ``pos_weight``."""

    def __init__(self, loss):
        super().__init__()
        self.terms = [t for t in weighted_bce_terms(loss) if t.pos_weight_decay is not None]

    def on_epoch_begin(self, epoch, logs=None):
        for term in self.terms:
            term.pos_weight.assign(term.pos_weight_at(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if self.terms and logs is not None:
            logs["pos_weight"] = float(ops.convert_to_numpy(self.terms[0].pos_weight))


def loss_callbacks(loss) -> list:
    """The Keras callbacks that ``loss`` needs during training (its per-epoch schedules); run them first."""
    decay = PosWeightDecay(loss)
    return [decay] if decay.terms else []
