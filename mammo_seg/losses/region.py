"""Losses on the soft confusion counts (p = sigmoid(logits), y ∈ {0, 1}, sums over pixels):
TP = Σ p·y, FP = Σ p·(1 − y), FN = Σ (1 − p)·y, from :func:`mammo_seg.overlap.confusion_sums`, given p·w and
y·w so that the ignore region (w = 0, :func:`mammo_seg.losses.base.valid_labels`) is in none of them.
"""

from __future__ import annotations

import math

from keras import ops

from mammo_seg.losses.base import IMAGE_AXES, PooledLoss, mean_over_images, register, valid_labels
from mammo_seg.overlap import confusion_sums, iou


class RegionLoss(PooledLoss):
    """A loss on the soft confusion counts (TP, FP, FN), pooled over the batch or averaged per image.

    ``lesion_images_only`` (with ``per_image``) averages over the images that hold lesion pixels only: an image
    without any then adds nothing (0 when the batch has none). Otherwise such an image's Dice or IoU loss is
    1 − s / (FP + s) for smoothing s: with the Dice's s = 1, one pixel of false-positive probability costs half as
    much as a missed lesion. Left out, its false positives are a pixel term's beside it (``mixed``).
    """

    def __init__(self, from_logits: bool = True, per_image: bool = False, smooth: float = 0.0,
                 lesion_images_only: bool = False, name=None, **kwargs):
        super().__init__(from_logits=from_logits, name=name, **kwargs)
        if lesion_images_only and not per_image:
            raise ValueError("lesion_images_only needs per_image: true (a pooled loss has no images to leave out)")
        self.per_image, self.smooth, self.lesion_images_only = per_image, float(smooth), bool(lesion_images_only)

    @property
    def num_statistics(self):
        return 2 if self.per_image else 3  # (Σ per-image loss, images) or (TP, FP, FN)

    def from_counts(self, tp, fp, fn):
        raise NotImplementedError

    def statistics(self, y_true, y_pred):
        y, w = valid_labels(y_true)
        tp, fp, fn = confusion_sums(self.probabilities(y_pred) * w, y, axis=IMAGE_AXES if self.per_image else None)
        if not self.per_image:
            return [tp, fp, fn]
        has_lesion = ops.cast(ops.greater(tp + fn, 0.0), "float32") if self.lesion_images_only else None  # TP+FN = Σy
        return mean_over_images(self.from_counts(tp, fp, fn), counted=has_lesion)

    def from_statistics(self, stats):
        if not self.per_image:
            return self.from_counts(*stats)
        return ops.divide_no_nan(stats[0], stats[1])

    def get_config(self):
        return {**super().get_config(), "per_image": self.per_image, "smooth": self.smooth,
                "lesion_images_only": self.lesion_images_only}


@register
class SoftIoULoss(RegionLoss):
    """Soft IoU loss of Rahman & Wang (2016), as the original pipeline used it.

    L = 1 − (Σ p·y + s) / (Σ (p + y − p·y) + s) = 1 − (TP + s) / (TP + FP + FN + s),  p = sigmoid(logits).

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
                 lesion_images_only: bool = False, name="soft_iou", **kwargs):
        super().__init__(from_logits=from_logits, per_image=per_image, smooth=smooth,
                         lesion_images_only=lesion_images_only, name=name, **kwargs)

    def from_counts(self, tp, fp, fn):
        return 1.0 - iou(tp, tp + fp + fn, self.smooth)


@register
class DiceLoss(RegionLoss):
    """Soft Dice loss: L = 1 − (2 TP + s) / (2 TP + FP + FN + s).

    Reference: F. Milletari, N. Navab, S.-A. Ahmadi, "V-Net", 3DV 2016 (the squared-denominator
    variant aside; this is the linear form of Sudre et al. 2017).
    """

    def __init__(self, smooth: float = 1.0, per_image: bool = False, from_logits: bool = True,
                 lesion_images_only: bool = False, name="dice", **kwargs):
        super().__init__(from_logits=from_logits, per_image=per_image, smooth=smooth,
                         lesion_images_only=lesion_images_only, name=name, **kwargs)

    def from_counts(self, tp, fp, fn):
        return 1.0 - ops.divide_no_nan(2.0 * tp + self.smooth, 2.0 * tp + fp + fn + self.smooth)


@register
class TverskyLoss(RegionLoss):
    """Tversky loss: L = 1 − (TP + s) / (TP + α·FP + β·FN + s).

    ``alpha`` weights false **positives** and ``beta`` false **negatives**, as in the paper (Keras 3's
    ``keras.losses.Tversky`` applies them the other way round). α = β = 0.5 gives Dice; the paper's
    best lesion setting, α = 0.3, β = 0.7, favours recall. Reference: S. S. M. Salehi, D. Erdogmus,
    A. Gholipour, "Tversky loss function for image segmentation using 3D fully convolutional deep
    networks", MLMI 2017.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0, per_image: bool = False,
                 from_logits: bool = True, lesion_images_only: bool = False, name="tversky", **kwargs):
        super().__init__(from_logits=from_logits, per_image=per_image, smooth=smooth,
                         lesion_images_only=lesion_images_only, name=name, **kwargs)
        self.alpha, self.beta = float(alpha), float(beta)

    def tversky_index(self, tp, fp, fn):
        return ops.divide_no_nan(tp + self.smooth, tp + self.alpha * fp + self.beta * fn + self.smooth)

    def from_counts(self, tp, fp, fn):
        return 1.0 - self.tversky_index(tp, fp, fn)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}


@register
class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss: L = (1 − TI)^(1/γ), TI the Tversky index (α on FP, β on FN).

    γ > 1 (default 4/3) raises the loss and its gradient where TI is already high, focusing on hard,
    small lesions. Reference: N. Abraham, N. M. Khan, "A novel focal Tversky loss function with
    improved attention U-Net for lesion segmentation", ISBI 2019.

    Computed as max(1 − TI, ε)^(1/γ) with ε = ``FLOOR`` = 1e-7: d/dTI of (1 − TI)^(1/γ) is infinite
    at TI = 1 (a perfect prediction, or an empty tile with logits below about −28, where TI rounds
    to 1 in float32), which made the gradient NaN. Below ε (about the float32 resolution of 1 − TI,
    6e-8 just under 1) the loss is constant at ε^(1/γ) (5.6e-6 for γ = 4/3) with zero gradient; above
    it the gradient is at most (1/γ)·ε^(1/γ − 1) (42 for γ = 4/3).
    """

    FLOOR = 1e-7

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 4 / 3, smooth: float = 1.0,
                 per_image: bool = False, from_logits: bool = True, lesion_images_only: bool = False,
                 name="focal_tversky", **kwargs):
        super().__init__(alpha=alpha, beta=beta, smooth=smooth, per_image=per_image, from_logits=from_logits,
                         lesion_images_only=lesion_images_only, name=name, **kwargs)
        self.gamma = float(gamma)

    def from_counts(self, tp, fp, fn):
        return ops.power(ops.maximum(1.0 - self.tversky_index(tp, fp, fn), self.FLOOR), 1.0 / self.gamma)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@register
class AdaptiveLogLoss(RegionLoss):
    """Adaptive Logarithmic Loss (Kaul et al.) on a region loss x (Dice or IoU loss):

        ALL(x) = ω · ln(1 + x/ε)   for x < θ,
                 x − C             for x ≥ θ,   C = θ − ω · ln(1 + θ/ε)  (continuous at θ).

    Near a good segmentation (small x) the logarithm keeps the gradient large (ω/ε at x = 0); far
    from it the loss is linear. Defaults ω = 10, ε = 0.5, θ = 0.1: the best cells of the paper's
    tables. The paper's typeset formula is not in our copy: this is the Wing-loss-style piecewise
    form its text describes. Reference: C. Kaul, N. Pears, S. Manandhar, "Penalizing small errors
    using an Adaptive Logarithmic Loss", ICPR 2020 workshops.
    """

    def __init__(self, base: str = "dice", omega: float = 10.0, epsilon: float = 0.5, theta: float = 0.1,
                 smooth: float = 1.0, per_image: bool = False, from_logits: bool = True,
                 lesion_images_only: bool = False, name="adaptive_log", **kwargs):
        super().__init__(from_logits=from_logits, per_image=per_image, smooth=smooth,
                         lesion_images_only=lesion_images_only, name=name, **kwargs)
        if base not in ("dice", "iou"):
            raise ValueError(f"base must be 'dice' or 'iou', got {base!r}")
        self.base, self.omega, self.epsilon, self.theta = base, float(omega), float(epsilon), float(theta)
        self._base = (DiceLoss if base == "dice" else SoftIoULoss)(smooth=smooth)

    def from_counts(self, tp, fp, fn):
        x = self._base.from_counts(tp, fp, fn)
        c = self.theta - self.omega * math.log1p(self.theta / self.epsilon)
        return ops.where(x < self.theta, self.omega * ops.log1p(ops.maximum(x, 0.0) / self.epsilon), x - c)

    def get_config(self):
        return {**super().get_config(), "base": self.base, "omega": self.omega, "epsilon": self.epsilon,
                "theta": self.theta}
