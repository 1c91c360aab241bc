"""Lesion probabilities for a whole image: one pass when it fits, else exact strips; windows on request.

The network is fully convolutional, so a whole scan can go through in one pass (exact, and the
fastest). When the network's estimated memory for one pass exceeds ``memory_bytes``
(:func:`activation_bytes`), the image goes through in full-width strips sized to that memory, with
halos that make the result equal to the one pass (:mod:`mammo_seg.inference.strips`).

Only when a ``tile`` is asked for, the image is covered by ``tile``² windows overlapping by
``overlap``, batched as many at a time as ``memory_bytes`` allows; each window's probabilities are
weighted by a Gaussian centred on it (σ = tile/8, as nnU-Net and MONAI do) and the weighted average is
taken, which removes seams at window borders (not equal to the one pass: each window zero-pads its
own borders).
"""

from __future__ import annotations

import math

import numpy as np

#: Peak memory of the network's activations per input pixel at width 1.0 (TensorFlow 2.21 on CPU,
#: float32): 0.59-0.61 GB per megapixel measured with ``ru_maxrss`` for inputs of 0.26-4.3 Mpx, above
#: the 0.76 GB of TensorFlow and the model. It scales with the width (every filter count does).
ACTIVATION_BYTES_PER_PIXEL = 610
#: Memory one network call may take for its activations. A CBIS-DDSM scan (4.3 Mpx at the training
#: resolution, 2.6 GB at width 1.0 in one pass) goes in exact strips. With 1 GB the network alone peaked
#: at 1.83 GB RSS but a whole ``predict`` of the scan at 2.26 GB (the scan and its outputs on the
#: original grid come on top): 0.6 GB leaves that room (``benchmarks/results/predict_*_cpu.json``).
NETWORK_MEMORY_BYTES = 600_000_000


def activation_bytes(model, pixels: int) -> float:
    """Estimated peak bytes of ``model``'s activations for a call on ``pixels`` input pixels."""
    return ACTIVATION_BYTES_PER_PIXEL * float(getattr(model, "width", 1.0) or 1.0) * pixels


class Predictor:
    """``models`` (logits; one model or an ensemble's members) → probabilities, the members' mean (nnU-Net's
    ensembling), each compiled once for any input size."""

    def __init__(self, models):
        self.members = [_Member(m) for m in (models if isinstance(models, (list, tuple)) else [models])]
        self.model = self.members[0].model  # every member has the same architecture

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return _mean([member(batch) for member in self.members])

    def stages(self) -> list | None:
        """The first member's strip plan (None when a layer has no receptive-field rule)."""
        return self.members[0].stages()

    def strips(self, image: np.ndarray, memory_bytes: float) -> np.ndarray:
        """Probabilities of an H×W×C image in exact strips whose activations each fit ``memory_bytes``."""
        return _mean([member.strips(image, memory_bytes) for member in self.members])


def _mean(probabilities: list) -> np.ndarray:
    """The members' mean, summed in member order (one member: its own values, bit for bit)."""
    if len(probabilities) == 1:
        return probabilities[0]
    total = probabilities[0].astype(np.float32)
    for p in probabilities[1:]:
        total = total + p
    return (total / np.float32(len(probabilities))).astype(np.float32)


class _Member:
    """One model (logits) → probabilities, compiled once for any input size."""

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self._fn = tf.function(lambda x: tf.sigmoid(tf.cast(model(x, training=False), tf.float32)),
                               reduce_retracing=True)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._fn(batch).numpy()

    def stages(self) -> list | None:
        """The model's strip plan with a compiled call per stage, once per model; None when a layer has no
        receptive-field rule (:func:`mammo_seg.inference.strips.stage_plan`)."""
        import tensorflow as tf

        from mammo_seg.inference.strips import stage_plan

        if not hasattr(self, "_stages"):
            try:
                plan = stage_plan(self.model)
            except ValueError:
                plan = None
            self._stages = plan and [(stage, tf.function(lambda x, m=stage.model: m(x, training=False),
                                                         reduce_retracing=True)) for stage in plan]
        return self._stages

    def strips(self, image: np.ndarray, memory_bytes: float) -> np.ndarray:
        """Probabilities of an H×W×C image in exact strips whose activations each fit ``memory_bytes``."""
        import tensorflow as tf

        from mammo_seg.inference.strips import run_in_strips

        x = image[None]
        for stage, fn in self.stages():
            # a row of the stage's input is jump_in / finest rows of width / finest at its finest resolution,
            # priced as if they were scan pixels (the network's costliest tensors are full-resolution ones)
            row_pixels = stage.jump_in * image.shape[1] / stage.finest ** 2
            rows = int(memory_bytes // activation_bytes(self.model, row_pixels))
            x = run_in_strips(lambda t, fn=fn: fn(t).numpy(), stage, x, rows)
        return tf.sigmoid(tf.cast(x[0, :image.shape[0], :image.shape[1], 0], tf.float32)).numpy()


def gaussian_weights(tile: int, sigma_fraction: float = 1 / 8) -> np.ndarray:
    centre = (tile - 1) / 2
    axis = np.exp(-((np.arange(tile) - centre) ** 2) / (2 * (tile * sigma_fraction) ** 2))
    weights = np.outer(axis, axis).astype(np.float32)
    return np.maximum(weights / weights.max(), 1e-3)  # never zero: every pixel keeps a weight


def window_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Window starts covering [0, length) with at least ``overlap`` between neighbours."""
    if length <= tile:
        return [0]
    step = tile * (1 - overlap)
    n = math.ceil((length - tile) / step) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def predict_probabilities(predictor: Predictor, image: np.ndarray, tile: int | None = None, overlap: float = 0.25,
                          batch_size: int = 4, memory_bytes: float = NETWORK_MEMORY_BYTES,
                          flip: bool = False) -> np.ndarray:
    """Probabilities (float32, H×W) for an image in [0, 1]: H×W, or H×W×C for a model of C input channels (the
    scan, then the other breast: :mod:`mammo_seg.data.contralateral`).

    ``flip``: test-time augmentation, the mean of the image's probabilities and those of its left-right
    mirror (mirrored back); twice the network time.

    ``tile=None``: one pass when its activations fit ``memory_bytes`` (:func:`activation_bytes`), else
    exact strips that each fit it (:meth:`Predictor.strips`; 1024-px windows for a model with a layer the
    strip plan does not know). A ``tile``: Gaussian-weighted windows, ``batch_size`` at a time, fewer
    where ``memory_bytes`` demands it.
    """
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"expected an H×W or H×W×C image, got shape {image.shape}")
    if flip:
        def once(x):
            return predict_probabilities(predictor, x, tile, overlap, batch_size, memory_bytes)

        return (once(image) + once(np.ascontiguousarray(image[:, ::-1]))[:, ::-1]) / 2
    h, w, channels = image.shape
    if tile is None:
        if activation_bytes(predictor.model, h * w) <= memory_bytes:
            return predictor(image[None])[0, :, :, 0]
        if predictor.stages():
            return predictor.strips(image, memory_bytes)
    tile = tile or 1024
    batch_size = max(1, min(batch_size, int(memory_bytes // activation_bytes(predictor.model, tile * tile))))
    if not 0 <= overlap < 1:
        raise ValueError("overlap must be in [0, 1)")
    padded = np.zeros((max(h, tile), max(w, tile), channels), np.float32)
    padded[:h, :w] = image
    weights = gaussian_weights(tile)
    total = np.zeros(padded.shape[:2], np.float32)
    norm = np.zeros(padded.shape[:2], np.float32)
    corners = [(r, c) for r in window_starts(padded.shape[0], tile, overlap)
               for c in window_starts(padded.shape[1], tile, overlap)]
    for i in range(0, len(corners), batch_size):
        group = corners[i:i + batch_size]
        batch = np.stack([padded[r:r + tile, c:c + tile] for r, c in group])
        for (r, c), prob in zip(group, predictor(batch)[..., 0]):
            total[r:r + tile, c:c + tile] += prob * weights
            norm[r:r + tile, c:c + tile] += weights
    return (total / norm)[:h, :w]
