"""The loss names of YAML configs (``loss.name``) and loss objects built from a name or a spec."""

from __future__ import annotations

import inspect

from mammo_seg.errors import MammoError
from mammo_seg.losses.base import PooledLoss
from mammo_seg.losses.lovasz import LovaszHinge, LovaszSoftmax
from mammo_seg.losses.mixture import ComboLoss, MixedLoss
from mammo_seg.losses.pixel import BinaryFocal, DistanceAwareFocal, TopKBCE, WeightedBCE
from mammo_seg.losses.region import AdaptiveLogLoss, DiceLoss, FocalTverskyLoss, SoftIoULoss, TverskyLoss

#: Names usable as ``loss.name`` in YAML configs.
LOSSES = {"iou": SoftIoULoss, "soft_iou": SoftIoULoss, "weighted_bce": WeightedBCE, "mixed": MixedLoss,
          "lovasz_hinge": LovaszHinge, "lovasz_softmax": LovaszSoftmax, "focal": BinaryFocal,
          "distance_focal": DistanceAwareFocal, "dice": DiceLoss, "tversky": TverskyLoss,
          "focal_tversky": FocalTverskyLoss, "combo": ComboLoss, "adaptive_log": AdaptiveLogLoss,
          "topk_bce": TopKBCE}


def resolve_loss(spec) -> tuple[type, dict]:
    """Check a loss spec (a name or ``{"name": ..., **params}``) without building it: (class, params).

    Nested specs (``MixedLoss.losses``) are checked too. Errors name the key, e.g. ``loss.smoth``.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise MammoError("loss", f"expected a loss name or a mapping with 'name', got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "name"}
    cls = LOSSES.get(spec["name"])
    if cls is None:
        raise MammoError("loss.name", f"unknown loss {spec['name']!r}; choose from {', '.join(sorted(LOSSES))}")
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs", "name"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise MammoError(f"loss.{unknown[0]}", f"unknown parameter for loss {spec['name']!r} "
                                               f"(allowed: {', '.join(sorted(allowed))})")
    for nested in params.get("losses", []) if cls is MixedLoss else []:
        if not isinstance(nested, PooledLoss):
            resolve_loss(nested)
    return cls, params


def get_loss(spec) -> PooledLoss:
    """A loss object from a loss, a name, or a ``{"name": ..., **params}`` dict."""
    if isinstance(spec, PooledLoss):
        return spec
    cls, params = resolve_loss(spec)
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        raise MammoError("loss", f"bad parameters for {cls.__name__}: {e}") from None
