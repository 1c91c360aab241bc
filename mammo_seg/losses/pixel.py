"""Per-pixel losses, averaged over pixels (or over lesion pixels, or the hardest pixels): weighted cross-entropy,
cross-entropy over the hardest pixels, and focal losses.

Pixels of the ignore region (:func:`mammo_seg.losses.base.valid_labels`) are in no sum and no count."""

from __future__ import annotations

import math

import keras
from keras import ops

from mammo_seg.losses.base import PooledLoss, pixel_mean, register, valid_labels


@register
class WeightedBCE(PooledLoss):
    """Binary cross-entropy with a weight on lesion pixels, from logits, averaged over pixels.

    ℓ = −[w·y·log σ(x) + (1 − y)·log(1 − σ(x))] = w·y·softplus(−x) + (1 − y)·softplus(x).

    The original passed sigmoid probabilities as logits (a double sigmoid, weak gradients); this
    takes the logits. With ``pos_weight=1`` this is plain cross-entropy.

    The lesion weight may decay over epochs, as the 2018 author's did ("began with a high weight …
    and gradually decayed the weight", IOU Loss blog post: the high weight first drives recall up,
    the decay then trades it back for precision). At epoch e (0-based)

        w_e = max(pos_weight_min, pos_weight · pos_weight_decay^e),

    and w_e = ``pos_weight`` throughout when ``pos_weight_decay`` is None. ``w`` is a variable, so
    :class:`PosWeightDecay` (from :func:`loss_callbacks`) sets it at the start of every epoch.
    """

    def __init__(self, pos_weight: float = 15.0, pos_weight_decay: float | None = None, pos_weight_min: float = 1.0,
                 from_logits: bool = True, name="weighted_bce", **kwargs):
        super().__init__(from_logits=from_logits, name=name, **kwargs)
        if pos_weight_decay is not None and not pos_weight_decay > 0:
            raise ValueError(f"pos_weight_decay must be positive or null, got {pos_weight_decay!r}")
        self.initial_pos_weight = float(pos_weight)
        self.pos_weight_decay = None if pos_weight_decay is None else float(pos_weight_decay)
        self.pos_weight_min = float(pos_weight_min)
        self.pos_weight = keras.Variable(float(pos_weight), trainable=False, dtype="float32", name="pos_weight")

    def pos_weight_at(self, epoch: int) -> float:
        """w_e, the lesion weight of 0-based epoch ``epoch``."""
        if self.pos_weight_decay is None:
            return self.initial_pos_weight
        return max(self.pos_weight_min, self.initial_pos_weight * self.pos_weight_decay ** epoch)

    def statistics(self, y_true, y_pred):
        y, w = valid_labels(y_true)
        log_p, log_not_p = self.log_probabilities(y_pred)
        return pixel_mean(-(self.pos_weight * y * log_p + (1.0 - y) * log_not_p), w)

    def from_statistics(self, stats):
        return ops.divide_no_nan(stats[0], stats[1])

    def get_config(self):
        return {**super().get_config(), "pos_weight": self.initial_pos_weight,
                "pos_weight_decay": self.pos_weight_decay, "pos_weight_min": self.pos_weight_min}


@register
class TopKBCE(PooledLoss):
    """Cross-entropy over each image's hardest pixels (online hard-example mining), from logits:

        ℓ = −[y·log σ(x) + (1 − y)·log(1 − σ(x))],   L = Σ_i Σ_{p ∈ H_i} ℓ_p / Σ_i |H_i|,

    H_i the pixels of image i whose ℓ is at least its k_i-th largest, k_i = ⌈fraction · n_i⌉ of its n_i pixels
    outside the ignore region (ties at the k_i-th value are all in). Easy pixels, most of the background, drop out;
    the background the network calls lesion stays in. The selection carries no gradient. Reference: nnU-Net's
    TopK loss (F. Isensee et al., Nature Methods 18, 2021; its Dice + TopK10 trainer: fraction 0.1), after the
    bootstrapped cross-entropy of Z. Wu, C. Shen, A. van den Hengel, "Bridging Category-level and Instance-level
    Semantic Image Segmentation", arXiv:1605.06885, 2016.
    """

    def __init__(self, fraction: float = 0.1, from_logits: bool = True, name="topk_bce", **kwargs):
        super().__init__(from_logits=from_logits, name=name, **kwargs)
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        self.fraction = float(fraction)

    def statistics(self, y_true, y_pred):
        y, w = valid_labels(y_true)
        log_p, log_not_p = self.log_probabilities(y_pred)
        per_pixel = -(y * log_p + (1.0 - y) * log_not_p)
        images = ops.shape(per_pixel)[0]
        losses, valid = ops.reshape(per_pixel, (images, -1)), ops.reshape(w, (images, -1))
        ranked = ops.flip(ops.sort(ops.stop_gradient(ops.where(valid > 0, losses, -1.0)), axis=1), axis=1)
        k = ops.cast(ops.ceil(self.fraction * ops.sum(valid, axis=1)), "int32")
        kth = ops.take_along_axis(ranked, ops.maximum(k - 1, 0)[:, None], axis=1)
        hard = ops.cast((losses >= kth) & (valid > 0) & (k > 0)[:, None], "float32")
        return [ops.sum(hard * losses), ops.sum(hard)]

    def from_statistics(self, stats):
        return ops.divide_no_nan(stats[0], stats[1])

    def get_config(self):
        return {**super().get_config(), "fraction": self.fraction}


@register
class BinaryFocal(PooledLoss):
    """Focal loss, averaged over pixels: FL = −α_t · (1 − p_t)^γ · log p_t.

    p_t = p and α_t = α on lesion pixels, p_t = 1 − p and α_t = 1 − α on background. γ down-weights
    the many easy background pixels. Reference: T.-Y. Lin, P. Goyal, R. Girshick, K. He, P. Dollár,
    "Focal Loss for Dense Object Detection", ICCV 2017 (α = 0.25, γ = 2 there).
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, from_logits: bool = True, name="focal", **kwargs):
        super().__init__(from_logits=from_logits, name=name, **kwargs)
        self.alpha, self.gamma = float(alpha), float(gamma)

    def statistics(self, y_true, y_pred):
        y, w = valid_labels(y_true)
        p = self.probabilities(y_pred)
        log_p, log_not_p = self.log_probabilities(y_pred)
        positive = -self.alpha * ops.power(1.0 - p, self.gamma) * log_p
        negative = -(1.0 - self.alpha) * ops.power(p, self.gamma) * log_not_p
        return pixel_mean(y * positive + (1.0 - y) * negative, w)

    def from_statistics(self, stats):
        return ops.divide_no_nan(stats[0], stats[1])

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}


def distance_gaussian(mask, sigma: float):
    """exp(−d²/(2σ²)), d the Euclidean distance (px) to the nearest lesion pixel; 1 on lesions, 0 beyond 3σ.

    A max-plus convolution with the separable quadratic kernel −δ²/(2σ²), one axis after the other
    (exact within the 3σ window), in backend-neutral ops.
    """
    radius = int(math.ceil(3 * sigma))
    log_target = (ops.cast(mask, "float32") - 1.0) * 1e4  # 0 on lesions, −1e4 elsewhere
    for axis in (1, 2):
        length = ops.shape(log_target)[axis]
        pad = [[0, 0]] * 4
        pad[axis] = [radius, radius]
        padded = ops.pad(log_target, pad, constant_values=-1e4)
        best = None
        for offset in range(2 * radius + 1):
            window = padded[:, offset:offset + length] if axis == 1 else padded[:, :, offset:offset + length]
            candidate = window - (offset - radius) ** 2 / (2 * sigma ** 2)
            best = candidate if best is None else ops.maximum(best, candidate)
        log_target = best
    return ops.exp(log_target)


@register
class DistanceAwareFocal(PooledLoss):
    """CornerNet's penalty-reduced focal loss for lesion masks, normalised by the lesion pixels:

        L = −1/N_pos · Σ [ y=1: (1 − p)^α · log p ;  y=0: (1 − ŷ)^β · p^α · log(1 − p) ],

    ŷ = exp(−d²/(2σ²)) with d the distance to the nearest lesion pixel: background just outside a
    lesion, where outlines are uncertain, is penalised less. N_pos is the number of lesion pixels in
    the batch (at least 1). ``sigma`` is in training pixels (default 5, about 0.5 mm at 93 µm).
    Reference: H. Law, J. Deng, "CornerNet: Detecting Objects as Paired Keypoints", ECCV 2018.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 4.0, sigma: float = 5.0, from_logits: bool = True,
                 name="distance_focal", **kwargs):
        super().__init__(from_logits=from_logits, name=name, **kwargs)
        self.alpha, self.beta, self.sigma = float(alpha), float(beta), float(sigma)

    def statistics(self, y_true, y_pred):
        y, w = valid_labels(y_true)
        p = self.probabilities(y_pred)
        log_p, log_not_p = self.log_probabilities(y_pred)
        near = ops.stop_gradient(distance_gaussian(y, self.sigma))
        positive = -ops.power(1.0 - p, self.alpha) * log_p
        negative = -ops.power(1.0 - near, self.beta) * ops.power(p, self.alpha) * log_not_p
        return [ops.sum(w * (y * positive + (1.0 - y) * negative)), ops.sum(y)]

    def from_statistics(self, stats):
        return stats[0] / ops.maximum(stats[1], 1.0)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "sigma": self.sigma}
