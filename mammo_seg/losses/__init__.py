"""Segmentation losses, each a registered ``keras.losses.Loss`` computed in float32 from logits.

Every loss here is a function of *statistics of the batch* (:class:`~mammo_seg.losses.base.PooledLoss`):
``statistics`` returns them and ``from_statistics`` the loss. ``call`` composes the two, so the losses work
in ``model.compile``. The training step (``mammo_seg.training.step``) combines the statistics of all
replicas first, so that under any ``tf.distribute`` strategy the loss and its gradient are those of one
device on the global batch. Most statistics are sums (summed over replicas); a batch-level Lovász loss
needs every pixel's error, so its statistics are per-pixel vectors that are concatenated over replicas
(``gathered`` names them, ``gather_padding`` gives values that pad a replica's vector without changing
the loss).

One module per family:

* :mod:`~mammo_seg.losses.region`: losses on the soft confusion counts (TP, FP, FN of
  :func:`mammo_seg.overlap.confusion_sums`): soft IoU, Dice, Tversky, focal Tversky, adaptive log;
* :mod:`~mammo_seg.losses.pixel`: per-pixel losses: weighted cross-entropy, cross-entropy over the hardest pixels
  (TopK), focal, distance-aware focal;
* :mod:`~mammo_seg.losses.lovasz`: the Lovász hinge and Lovász-softmax;
* :mod:`~mammo_seg.losses.mixture`: Combo (cross-entropy and Dice) and weighted sums of any losses;
* :mod:`~mammo_seg.losses.registry`: the names of YAML configs, and loss objects built from them;
* :mod:`~mammo_seg.losses.schedules`: the per-epoch schedules of a loss (Keras callbacks).

Every name is importable from ``mammo_seg.losses``; the classes are registered with Keras as
``mammo_seg>ClassName`` whatever module holds them, so saved ``.keras`` files load unchanged.
"""

from mammo_seg.losses.base import IMAGE_AXES, PACKAGE, PooledLoss, register
from mammo_seg.losses.lovasz import FAR, LovaszHinge, LovaszSoftmax, lovasz_gradient, lovasz_hinge_flat
from mammo_seg.losses.mixture import ComboLoss, MixedLoss
from mammo_seg.losses.pixel import BinaryFocal, DistanceAwareFocal, TopKBCE, WeightedBCE, distance_gaussian
from mammo_seg.losses.region import (AdaptiveLogLoss, DiceLoss, FocalTverskyLoss, RegionLoss, SoftIoULoss,
                                     TverskyLoss)
from mammo_seg.losses.registry import LOSSES, get_loss, resolve_loss
from mammo_seg.losses.schedules import PosWeightDecay, loss_callbacks, weighted_bce_terms

__all__ = ["AdaptiveLogLoss", "BinaryFocal", "ComboLoss", "DiceLoss", "DistanceAwareFocal", "FAR",
           "FocalTverskyLoss", "IMAGE_AXES", "LOSSES", "LovaszHinge", "LovaszSoftmax", "MixedLoss", "PACKAGE",
           "PooledLoss", "PosWeightDecay", "RegionLoss", "SoftIoULoss", "TopKBCE", "TverskyLoss", "WeightedBCE",
           "distance_gaussian", "get_loss", "loss_callbacks", "lovasz_gradient", "lovasz_hinge_flat",
           "register", "resolve_loss", "weighted_bce_terms"]
