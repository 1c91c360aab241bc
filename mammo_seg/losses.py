"""Segmentation losses, each a registered ``keras.losses.Loss`` computed in float32 from logits.

Every loss here is a function of *sums over the batch* (its sufficient statistics): ``statistics``
returns those sums and ``from_statistics`` the loss. ``call`` composes the two, so the losses work
in ``model.compile``; the training step (``mammo_seg.training.step``) all-reduces the statistics
across replicas first, so that under any ``tf.distribute`` strategy the loss and its gradient are
those of one device on the global batch (a batch-pooled IoU must pool Σpy and Σ(p+y−py) over
every replica, not average per-replica IoUs).
"""

from __future__ import annotations

import inspect

import keras
from keras import ops

from mammo_seg.errors import MammoError
from mammo_seg.overlap import iou, overlap_sums

PACKAGE = "mammo_seg"
IMAGE_AXES = (1, 2, 3)


class PooledLoss(keras.losses.Loss):
    """Base class: ``loss = from_statistics(statistics(y_true, y_pred))``, statistics additive over images.

    ``num_statistics`` is the length of the list ``statistics`` returns.
    """

    num_statistics = 2

    def __init__(self, from_logits: bool = True, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = from_logits

    def probabilities(self, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        return ops.sigmoid(y_pred) if self.from_logits else y_pred

    def statistics(self, y_true, y_pred) -> list:
        raise NotImplementedError

    def from_statistics(self, stats):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        return self.from_statistics(self.statistics(y_true, y_pred))

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}


def _mean_over_images(per_image) -> list:
    """Statistics of a mean over images: (Σ per-image loss, number of images)."""
    return [ops.sum(per_image), ops.cast(ops.shape(per_image)[0], "float32")]


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftIoULoss(PooledLoss):
    """Soft IoU loss of Rahman & Wang (2016), as the original pipeline used it.

    L = 1 − (Σ p·y + s) / (Σ (p + y − p·y) + s),  p = sigmoid(logits).

    ``per_image=False`` pools the sums over the whole batch (the original's code); ``per_image=True``
    averages the loss of each image (the paper's). Reference: M. A. Rahman, Y. Wang, "Optimizing
    Intersection-Over-Union in Deep Neural Networks for Image Segmentation", ISVC 2016.

    Smoothing ``s`` (default 100 pixels). Without it, an image or batch with no lesion gives
    L = 1 − 0/Σp = 1 whatever p is: zero gradient, so false positives on empty tiles are never
    penalised. With s, such a tile costs L = Σp / (Σp + s): a penalty of about 1/s per unit of
    false-positive probability mass until that mass reaches s, then saturating. s = 100 px (about
    0.9 mm² at the 93 µm training resolution) keeps that penalty steep for small false-positive
    blobs, comparable per pixel to the gradient on lesion tiles (≈ 1/lesion area), while changing
    the IoU of lesion tiles very little (CBIS-DDSM lesions span thousands of training pixels: a
    fully missed 2000 px lesion still costs 0.95).
    """

    def __init__(self, from_logits: bool = True, per_image: bool = False, smooth: float = 100.0,
                 name="soft_iou", **kwargs):
        super().__init__(from_logits=from_logits, name=name, **kwargs)
        self.per_image, self.smooth = per_image, float(smooth)

    def statistics(self, y_true, y_pred):
        p, y = self.probabilities(y_pred), ops.cast(y_true, "float32")
        if not self.per_image:
            return list(overlap_sums(p, y))
        intersection, union = overlap_sums(p, y, axis=IMAGE_AXES)
        return _mean_over_images(1.0 - iou(intersection, union, self.smooth))

    def from_statistics(self, stats):
        if not self.per_image:
            return 1.0 - iou(stats[0], stats[1], self.smooth)
        return ops.divide_no_nan(stats[0], stats[1])

    def get_config(self):
        return {**super().get_config(), "per_image": self.per_image, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package=PACKAGE)
class WeightedBCE(PooledLoss):
    """Binary cross-entropy with a weight on lesion pixels, from logits, averaged over pixels.

    ℓ = −[w·y·log σ(x) + (1 − y)·log(1 − σ(x))] = w·y·softplus(−x) + (1 − y)·softplus(x).

    The original passed sigmoid probabilities as logits (a double sigmoid, weak gradients); this
    takes the logits. ``pos_weight`` is a variable, so :class:`mammo_seg.training.callbacks.PosWeightDecay`
    can lower it from a high start towards 1 over epochs, as the 2018 author did.
    """

    def __init__(self, pos_weight: float = 15.0, from_logits: bool = True, name="weighted_bce", **kwargs):
        super().__init__(from_logits=from_logits, name=name, **kwargs)
        self.initial_pos_weight = float(pos_weight)
        self.pos_weight = keras.Variable(float(pos_weight), trainable=False, dtype="float32", name="pos_weight")

    def statistics(self, y_true, y_pred):
        y = ops.cast(y_true, "float32")
        if self.from_logits:
            x = ops.cast(y_pred, "float32")
            log_p, log_not_p = -ops.softplus(-x), -ops.softplus(x)
        else:
            p = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1 - 1e-7)
            log_p, log_not_p = ops.log(p), ops.log(1.0 - p)
        pixel = -(self.pos_weight * y * log_p + (1.0 - y) * log_not_p)
        return [ops.sum(pixel), ops.cast(ops.size(pixel), "float32")]

    def from_statistics(self, stats):
        return ops.divide_no_nan(stats[0], stats[1])

    def get_config(self):
        return {**super().get_config(), "pos_weight": self.initial_pos_weight}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MixedLoss(PooledLoss):
    """Σ coef_i · loss_i, e.g. 0.5 · WeightedBCE + 0.5 · SoftIoU (the original's optional mode).

    ``losses`` are loss objects or ``{"name": ..., **params}`` dicts (as in YAML configs).
    """

    def __init__(self, losses, coefs=None, name="mixed", **kwargs):
        super().__init__(name=name, **kwargs)
        self.losses = [get_loss(spec) for spec in losses]
        self.coefs = [float(c) for c in (coefs if coefs is not None else [1.0] * len(self.losses))]
        if not self.losses or len(self.coefs) != len(self.losses):
            raise ValueError("MixedLoss needs one coefficient per loss")

    @property
    def num_statistics(self):
        return sum(loss.num_statistics for loss in self.losses)

    def statistics(self, y_true, y_pred):
        return [s for loss in self.losses for s in loss.statistics(y_true, y_pred)]

    def from_statistics(self, stats):
        total, start = 0.0, 0
        for loss, coef in zip(self.losses, self.coefs):
            total = total + coef * loss.from_statistics(stats[start:start + loss.num_statistics])
            start += loss.num_statistics
        return total

    def get_config(self):
        return {**super().get_config(), "losses": [keras.saving.serialize_keras_object(l) for l in self.losses],
                "coefs": self.coefs}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["losses"] = [keras.saving.deserialize_keras_object(l) for l in config["losses"]]
        return cls(**config)


#: Names usable as ``loss.name`` in YAML configs.
LOSSES = {"iou": SoftIoULoss, "soft_iou": SoftIoULoss, "weighted_bce": WeightedBCE, "mixed": MixedLoss}


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
