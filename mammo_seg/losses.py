"""Segmentation losses, each a registered ``keras.losses.Loss`` computed in float32 from logits.

Every loss here is a function of *statistics of the batch*: ``statistics`` returns them and
``from_statistics`` the loss. ``call`` composes the two, so the losses work in ``model.compile``.
The training step (``mammo_seg.training.step``) combines the statistics of all replicas first, so
that under any ``tf.distribute`` strategy the loss and its gradient are those of one device on the
global batch. Most statistics are sums (summed over replicas); a batch-level Lovász loss needs every
pixel's error, so its statistics are per-pixel vectors that are concatenated over replicas
(``gathered`` names them, ``gather_padding`` gives values that pad a replica's vector without
changing the loss).

Losses on soft confusion counts (p = sigmoid(logits), y ∈ {0, 1}, sums over pixels):
TP = Σ p·y, FP = Σ p·(1 − y), FN = Σ (1 − p)·y.
"""

from __future__ import annotations

import inspect
import math

import keras
from keras import ops

from mammo_seg.errors import MammoError
from mammo_seg.overlap import confusion_sums, iou

PACKAGE = "mammo_seg"
IMAGE_AXES = (1, 2, 3)
FAR = -1e9  # a logit that puts a padded pixel at the very end of a Lovász ordering, with error 0


def register(cls):
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


def _mean_over_images(per_image) -> list:
    """Statistics of a mean over images: (Σ per-image loss, number of images)."""
    return [ops.sum(per_image), ops.cast(ops.shape(per_image)[0], "float32")]


def _pixel_mean(per_pixel) -> list:
    return [ops.sum(per_pixel), ops.cast(ops.size(per_pixel), "float32")]


# ------------------------------------------------------------------------------------- region losses
class RegionLoss(PooledLoss):
    """A loss on the soft confusion counts (TP, FP, FN), pooled over the batch or averaged per image."""

    def __init__(self, from_logits: bool = True, per_image: bool = False, smooth: float = 0.0, name=None,
                 **kwargs):
        super().__init__(from_logits=from_logits, name=name, **kwargs)
        self.per_image, self.smooth = per_image, float(smooth)

    @property
    def num_statistics(self):
        return 2 if self.per_image else 3  # (Σ per-image loss, images) or (TP, FP, FN)

    def from_counts(self, tp, fp, fn):
        raise NotImplementedError

    def statistics(self, y_true, y_pred):
        p, y = self.probabilities(y_pred), ops.cast(y_true, "float32")
        tp, fp, fn = confusion_sums(p, y, axis=IMAGE_AXES if self.per_image else None)
        if not self.per_image:
            return [tp, fp, fn]
        return _mean_over_images(self.from_counts(tp, fp, fn))

    def from_statistics(self, stats):
        if not self.per_image:
            return self.from_counts(*stats)
        return ops.divide_no_nan(stats[0], stats[1])

    def get_config(self):
        return {**super().get_config(), "per_image": self.per_image, "smooth": self.smooth}


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
                 name="soft_iou", **kwargs):
        super().__init__(from_logits=from_logits, per_image=per_image, smooth=smooth, name=name, **kwargs)

    def from_counts(self, tp, fp, fn):
        return 1.0 - iou(tp, tp + fp + fn, self.smooth)


@register
class DiceLoss(RegionLoss):
    """Soft Dice loss: L = 1 − (2 TP + s) / (2 TP + FP + FN + s).

    Reference: F. Milletari, N. Navab, S.-A. Ahmadi, "V-Net", 3DV 2016 (the squared-denominator
    variant aside; this is the linear form of Sudre et al. 2017).
    """

    def __init__(self, smooth: float = 1.0, per_image: bool = False, from_logits: bool = True, name="dice",
                 **kwargs):
        super().__init__(from_logits=from_logits, per_image=per_image, smooth=smooth, name=name, **kwargs)

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
                 from_logits: bool = True, name="tversky", **kwargs):
        super().__init__(from_logits=from_logits, per_image=per_image, smooth=smooth, name=name, **kwargs)
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
                 per_image: bool = False, from_logits: bool = True, name="focal_tversky", **kwargs):
        super().__init__(alpha=alpha, beta=beta, smooth=smooth, per_image=per_image, from_logits=from_logits,
                         name=name, **kwargs)
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
                 smooth: float = 1.0, per_image: bool = False, from_logits: bool = True, name="adaptive_log",
                 **kwargs):
        super().__init__(from_logits=from_logits, per_image=per_image, smooth=smooth, name=name, **kwargs)
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


# ------------------------------------------------------------------------------------ pixel losses
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
        y = ops.cast(y_true, "float32")
        log_p, log_not_p = self.log_probabilities(y_pred)
        return _pixel_mean(-(self.pos_weight * y * log_p + (1.0 - y) * log_not_p))

    def from_statistics(self, stats):
        return ops.divide_no_nan(stats[0], stats[1])

    def get_config(self):
        return {**super().get_config(), "pos_weight": self.initial_pos_weight,
                "pos_weight_decay": self.pos_weight_decay, "pos_weight_min": self.pos_weight_min}


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
        y = ops.cast(y_true, "float32")
        p = self.probabilities(y_pred)
        log_p, log_not_p = self.log_probabilities(y_pred)
        positive = -self.alpha * ops.power(1.0 - p, self.gamma) * log_p
        negative = -(1.0 - self.alpha) * ops.power(p, self.gamma) * log_not_p
        return _pixel_mean(y * positive + (1.0 - y) * negative)

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
        y = ops.cast(y_true, "float32")
        p = self.probabilities(y_pred)
        log_p, log_not_p = self.log_probabilities(y_pred)
        near = ops.stop_gradient(distance_gaussian(y, self.sigma))
        positive = -ops.power(1.0 - p, self.alpha) * log_p
        negative = -ops.power(1.0 - near, self.beta) * ops.power(p, self.alpha) * log_not_p
        return [ops.sum(y * positive + (1.0 - y) * negative), ops.sum(y)]

    def from_statistics(self, stats):
        return stats[0] / ops.maximum(stats[1], 1.0)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "sigma": self.sigma}


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
        y = ops.cast(y_true, "float32")
        log_p, log_not_p = self.log_probabilities(y_pred)
        bce = _pixel_mean(-(self.beta * y * log_p + (1.0 - self.beta) * (1.0 - y) * log_not_p))
        return bce + self._dice.statistics(y_true, y_pred)

    def from_statistics(self, stats):
        bce = ops.divide_no_nan(stats[0], stats[1])
        dice = 1.0 - self._dice.from_statistics(stats[2:])
        return self.alpha * bce - (1.0 - self.alpha) * dice

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "smooth": self.smooth}


# ---------------------------------------------------------------------------------- Lovász losses
def lovasz_gradient(gt_sorted):
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted in decreasing order
    (Berman et al. 2018, Alg. 1), along the last axis."""
    gts = ops.sum(gt_sorted, axis=-1, keepdims=True)
    intersection = gts - ops.cumsum(gt_sorted, axis=-1)
    union = gts + ops.cumsum(1.0 - gt_sorted, axis=-1)
    jaccard = 1.0 - ops.divide_no_nan(intersection, union)
    previous = ops.concatenate([ops.zeros_like(jaccard[..., :1]), jaccard[..., :-1]], axis=-1)
    return jaccard - previous


def _sorted_by(errors, *others):
    order = ops.argsort(-errors, axis=-1)
    return [ops.take_along_axis(t, order, axis=-1) for t in (errors, *others)]


def lovasz_hinge_flat(logits, labels):
    """Lovász hinge of rows of logits [..., n] and binary labels [..., n] → [...]."""
    signs = 2.0 * labels - 1.0
    errors, gt_sorted = _sorted_by(1.0 - logits * signs, labels)
    return ops.sum(ops.relu(errors) * ops.stop_gradient(lovasz_gradient(gt_sorted)), axis=-1)


@register
class LovaszHinge(PooledLoss):
    """Lovász hinge loss for binary segmentation, a convex surrogate of the IoU loss:

        L = Σ_k relu(e_(k)) · g_k,   e = 1 − logit · (2y − 1),

    e sorted in decreasing order and g the gradient of the Lovász extension of the Jaccard loss at
    that ordering. ``per_image=True`` averages the loss of each image; ``per_image=False`` sorts the
    whole batch at once (across replicas too). Reference: M. Berman, A. Rannen Triki, M. B. Blaschko,
    "The Lovász-Softmax loss", CVPR 2018.
    """

    def __init__(self, per_image: bool = True, name="lovasz_hinge", **kwargs):
        kwargs.pop("from_logits", None)  # a hinge on logits: always from logits
        super().__init__(from_logits=True, name=name, **kwargs)
        self.per_image = per_image

    @property
    def gathered(self):
        return () if self.per_image else (0, 1)

    @property
    def gather_padding(self):
        return () if self.per_image else (FAR, 0.0)

    def statistics(self, y_true, y_pred):
        batch = ops.shape(y_pred)[0]
        logits = ops.reshape(ops.cast(y_pred, "float32"), (batch, -1))
        labels = ops.reshape(ops.cast(y_true, "float32"), (batch, -1))
        if self.per_image:
            return _mean_over_images(lovasz_hinge_flat(logits, labels))
        return [ops.reshape(logits, (-1,)), ops.reshape(labels, (-1,))]

    def from_statistics(self, stats):
        if self.per_image:
            return ops.divide_no_nan(stats[0], stats[1])
        return lovasz_hinge_flat(stats[0], stats[1])

    def get_config(self):
        return {**super().get_config(), "per_image": self.per_image}


@register
class LovaszSoftmax(PooledLoss):
    """Lovász-softmax loss, multi-class (Berman et al., CVPR 2018):

        L = mean over classes c of Σ_k m_c,(k) · g_c,k,   m_c = |[y = c] − p_c|,

    m_c sorted in decreasing order and g_c the Lovász gradient at that ordering. ``classes``:
    "present" (classes found in the labels), "all", or a list of class ids. ``ignore``: a label value
    whose pixels count for nothing. A one-channel output (this project's network) is the binary
    case: p_1 = sigmoid(logit), p_0 = 1 − p_1; several channels are a softmax and ``y_true`` holds
    class ids. ``per_image=False`` sorts the whole batch at once (across replicas too).
    """

    def __init__(self, classes="present", per_image: bool = False, ignore=None, from_logits: bool = True,
                 name="lovasz_softmax", **kwargs):
        super().__init__(from_logits=from_logits, name=name, **kwargs)
        if not (classes in ("present", "all") or isinstance(classes, (list, tuple))):
            raise ValueError(f"classes must be 'present', 'all' or a list of class ids, got {classes!r}")
        self.classes = list(classes) if isinstance(classes, (list, tuple)) else classes
        self.per_image, self.ignore = per_image, ignore

    @property
    def gathered(self):
        return () if self.per_image else (0, 1)

    @property
    def gather_padding(self):
        return () if self.per_image else (0.0, -1.0)

    def _probabilities(self, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        if y_pred.shape[-1] == 1:
            p = ops.sigmoid(y_pred) if self.from_logits else y_pred
            return ops.concatenate([1.0 - p, p], axis=-1)
        return ops.softmax(y_pred, axis=-1) if self.from_logits else y_pred

    def _flat(self, probas, labels):
        """Loss of rows: probas [..., n, C], labels [..., n] (negative or ``ignore``: no pixel)."""
        n_classes = probas.shape[-1]
        valid = ops.cast(labels >= 0, "float32")
        if self.ignore is not None:
            valid = valid * ops.cast(ops.not_equal(labels, float(self.ignore)), "float32")
        class_ids = range(n_classes) if not isinstance(self.classes, list) else self.classes
        losses, weights = [], []
        for c in class_ids:
            fg = ops.cast(ops.equal(labels, float(c)), "float32") * valid
            errors, fg_sorted = _sorted_by(ops.abs(fg - probas[..., c]) * valid, fg)
            losses.append(ops.sum(errors * ops.stop_gradient(lovasz_gradient(fg_sorted)), axis=-1))
            present = ops.cast(ops.sum(fg, axis=-1) > 0, "float32")
            weights.append(present if self.classes == "present" else ops.ones_like(present))
        losses, weights = ops.stack(losses, axis=-1), ops.stack(weights, axis=-1)
        return ops.divide_no_nan(ops.sum(losses * weights, axis=-1), ops.sum(weights, axis=-1))

    def statistics(self, y_true, y_pred):
        probas = self._probabilities(y_pred)
        batch, n_classes = ops.shape(probas)[0], probas.shape[-1]
        probas = ops.reshape(probas, (batch, -1, n_classes))
        labels = ops.reshape(ops.cast(y_true, "float32"), (batch, -1))
        if self.per_image:
            return _mean_over_images(self._flat(probas, labels))
        return [ops.reshape(probas, (-1, n_classes)), ops.reshape(labels, (-1,))]

    def from_statistics(self, stats):
        if self.per_image:
            return ops.divide_no_nan(stats[0], stats[1])
        return self._flat(stats[0], stats[1])

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "per_image": self.per_image,
                "ignore": self.ignore}


# ---------------------------------------------------------------------------------------- mixture
@register
class MixedLoss(PooledLoss):
    """Σ coef_i · loss_i, e.g. 0.5 · WeightedBCE + 0.5 · SoftIoU (the original's optional mode), or
    PaddleSeg's CE + Lovász-softmax with coefs [0.8, 0.2] and CE + Lovász hinge with [1, 0.02].

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


#: Names usable as ``loss.name`` in YAML configs.
LOSSES = {"iou": SoftIoULoss, "soft_iou": SoftIoULoss, "weighted_bce": WeightedBCE, "mixed": MixedLoss,
          "lovasz_hinge": LovaszHinge, "lovasz_softmax": LovaszSoftmax, "focal": BinaryFocal,
          "distance_focal": DistanceAwareFocal, "dice": DiceLoss, "tversky": TverskyLoss,
          "focal_tversky": FocalTverskyLoss, "combo": ComboLoss, "adaptive_log": AdaptiveLogLoss}


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


# ------------------------------------------------------------------------------- epoch schedules
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
