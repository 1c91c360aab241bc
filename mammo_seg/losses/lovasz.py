"""The Lovász losses (Berman et al., CVPR 2018): convex surrogates of the IoU loss on sorted errors.

Pixels of the ignore region (:func:`mammo_seg.losses.base.valid_labels`) add nothing: the hinge gives them the
logit :data:`FAR` and label 0, as a replica's padding (error 1 − 10⁹: sorted after every real pixel, where the
Lovász gradient of the pixels before it is already fixed, with relu(error) = 0); the softmax form gives them
no valid class."""

from __future__ import annotations

from keras import ops

from mammo_seg.data.features import IGNORE
from mammo_seg.losses.base import PooledLoss, mean_over_images, register, valid_labels

FAR = -1e9  # a logit that puts a padded pixel at the very end of a Lovász ordering, with error 0


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
        y, w = valid_labels(y_true)
        logits = ops.where(w > 0, ops.cast(y_pred, "float32"), FAR)  # the ignore region: as padding
        logits = ops.reshape(logits, (batch, -1))
        labels = ops.reshape(y, (batch, -1))
        if self.per_image:
            return mean_over_images(lovasz_hinge_flat(logits, labels))
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
    whose pixels count for nothing; with a one-channel output, :data:`~mammo_seg.data.features.IGNORE` (the
    ignore region) is such a value too. A one-channel output (this project's network) is the binary
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
        if n_classes == 2:  # one-channel output: the ignore region's label is no class
            valid = valid * ops.cast(ops.not_equal(labels, float(IGNORE)), "float32")
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
            return mean_over_images(self._flat(probas, labels))
        return [ops.reshape(probas, (-1, n_classes)), ops.reshape(labels, (-1,))]

    def from_statistics(self, stats):
        if self.per_image:
            return ops.divide_no_nan(stats[0], stats[1])
        return self._flat(stats[0], stats[1])

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "per_image": self.per_image,
                "ignore": self.ignore}
