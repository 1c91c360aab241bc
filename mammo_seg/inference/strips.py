"""Exact strip inference: a fully convolutional network run on horizontal strips, equal to one pass.

**Receptive-field argument.** Every layer of the FCN reads a bounded neighbourhood of its input, so
an output row depends only on a bounded band of input rows. Walking the layers of the Keras graph
(:func:`_walk`), each tensor gets a *jump* ``J`` (input pixels per row: 1 for the scan, 32 at the
bottleneck) and a *reach* ``R`` (input pixels): its row ``j`` depends only on input rows
``[J·j − R, J·(j+1) − 1 + R]``. Bounds per layer, all safe (never too small):

* convolution or pooling, span ``n = d·(k−1) + 1`` (kernel ``k``, dilation ``d``), stride ``s``
  ('same', or 'valid' with ``k = s``): output row ``i`` reads rows ``s·i − p … s·i − p + n − 1`` with
  TensorFlow's ``p = ⌊(n − s)/2⌋`` (``⌊(n − 1)/2⌋`` at most, whatever the size's phase), so
  ``R += J·max(⌊(n−1)/2⌋, ⌈(n−s)/2⌉, 0)`` and ``J *= s``;
* transposed convolution, kernel ``k``, stride ``s``, any padding offset: ``R += (J/s)·(k+s−2)``, ``J /= s``;
* nearest upsampling by ``f``: ``R += J − J/f`` (bilinear: ``2·J``), ``J /= f``;
* pointwise layers (BatchNorm, ReLU, Add, Rescaling, Dropout, the model's pad and crop): ``R`` is the
  largest of the inputs'. Any other layer is refused (:class:`ValueError`), never guessed.

A strip whose rows start at a multiple of the (stage's) total stride (32 for the encoder) and whose height is one
too (or which ends at the image's bottom, padded exactly as the one pass pads it) meets every
'same' padding, pooling window and nearest-neighbour copy at the same phase as the one pass, so its
rows farther than ``R`` from a cut edge are the one pass's values; at the image's own edges there is
no cut, the zero padding is the one pass's. Hence: run strips extended by a halo ≥ ``R`` (rounded up
to the alignment) and keep their central rows.

**Stages.** The whole network's reach is large (536 px at the training resolution, of which 384 px
from conv4/conv5, dilated 3×3 kernels at 1/32; an impulse probe moves rows up to 499 px away), which
would make whole-network strips nearly as tall as a scan. Its memory, though, is in the
full-resolution ends. So the graph is cut at the first and last tensors of the largest jump through
which everything flows (:func:`stage_plan`): the encoder (scan → 1/32, reach 95 px, halo 96 rows)
and the decoder (1/32 → logits, reach 57 px, halo 2 rows at 1/32) run in strips, the bottleneck
between them (1/1024 of the pixels) in one pass. Every stage is exact by the argument above, so the
whole is: ``tests/test_strips.py`` checks strips against one pass and the reach against an impulse.
The plan depends on the layer geometry only, not on the filter counts (the same at every width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

#: layers that act on each pixel (or combine same-size tensors): they keep the jump and the reach
_POINTWISE = {"InputLayer", "BatchNormalization", "BatchNorm", "ReLU", "Activation", "Add", "Multiply", "Subtract",
              "Average", "Maximum", "Concatenate", "Rescaling", "Dropout", "PadToMultiple", "CropToReference",
              "Identity", "LeakyReLU", "Softmax"}


def _walk(operations, start: dict) -> dict:
    """``{id(tensor): (jump, reach)}`` for the tensors computed from ``start`` (``{id: (jump, reach)}``)."""
    geometry = dict(start)
    for op in operations:
        node = op._inbound_nodes[0]
        inputs = [geometry[id(t)] for t in node.input_tensors if id(t) in geometry]
        if not inputs or all(id(t) in geometry for t in node.output_tensors):
            continue
        name = type(op).__name__
        jump, reach = inputs[0][0], max(r for _, r in inputs)
        if any(j != jump for j, _ in inputs):
            raise ValueError(f"{op.name}: inputs at different resolutions")
        if name in ("Conv2D", "MaxPooling2D", "AveragePooling2D"):
            k = op.kernel_size[0] if name == "Conv2D" else op.pool_size[0]
            s = op.strides[0]
            d = op.dilation_rate[0] if name == "Conv2D" else 1
            if op.padding != "same" and k != s:
                raise ValueError(f"{op.name}: 'valid' {name} with kernel {k} ≠ stride {s} shifts rows")
            span = d * (k - 1) + 1  # TF 'same': pad_top = pad_total // 2, pad_total ≥ span - s
            jump, reach = jump * s, reach + jump * max((span - 1) // 2, -(-(span - s) // 2), 0)
        elif name == "Conv2DTranspose":
            if op.padding != "same":
                raise ValueError(f"{op.name}: only 'same' transposed convolutions are supported")
            k, s = op.kernel_size[0], op.strides[0]  # any padding offset in [0, k-1]
            jump, reach = jump / s, reach + jump / s * (k + s - 2)
        elif name == "UpSampling2D":
            nearest = op.interpolation == "nearest"
            jump, reach = jump / op.size[0], reach + (jump - jump / op.size[0] if nearest else 2 * jump)
        elif name not in _POINTWISE:
            raise ValueError(f"{op.name}: no receptive-field rule for {name}")
        for t in node.output_tensors:
            geometry[id(t)] = (Fraction(jump), reach)
    return geometry


@dataclass(frozen=True)
class Stage:
    """A piece of the network from one tensor to another, run in strips of its input's rows."""

    model: object  # keras.Model from the stage's input tensor to its output tensor
    jump_in: int  # input pixels per row of the stage's input
    jump_out: Fraction  # input pixels per row of its output
    align: int  # strips start at multiples of this many input rows (the stage's own total stride)
    halo: int  # input rows added on each side of a strip (≥ reach / jump_in, a multiple of align)
    finest: Fraction  # the smallest jump inside the stage: where its activations are largest
    reach: Fraction  # input pixels: an output row depends only on input rows this far from its own


def stage_plan(model) -> list[Stage]:
    """``model`` cut into stages at its first and last cut tensors of the largest jump (see the module)."""
    import keras

    from mammo_seg.models.layers import CropToReference

    ops = list(model.operations)
    scan = model.inputs[0]
    end = model.outputs[0]
    crop = end._keras_history.operation
    if isinstance(crop, CropToReference):  # the crop needs the scan; done by the caller instead
        end = crop._inbound_nodes[0].input_tensors[0]
    geometry = _walk(ops, {id(scan): (Fraction(1), 0)})
    # producer index of every tensor; a tensor is a cut when nothing after it reads anything before it
    producer = {id(t): i for i, op in enumerate(ops) for t in op._inbound_nodes[0].output_tensors}
    last_read = [0] * len(ops)
    for i, op in enumerate(ops):
        for t in op._inbound_nodes[0].input_tensors:
            if not (op is crop and t is scan):
                last_read[producer[id(t)]] = max(last_read[producer[id(t)]], i)
    top = max(j for j, _ in geometry.values())
    cuts, reads_before = [], 0
    for i, op in enumerate(ops):
        out = op._inbound_nodes[0].output_tensors[0]
        if reads_before <= i and geometry[id(out)][0] == top and producer[id(end)] > i > 0:
            cuts.append(out)
        reads_before = max(reads_before, last_read[i])
    bounds = [scan] + ([cuts[0], cuts[-1]] if len(cuts) > 1 else cuts) + [end]
    stages = []
    for a, b in zip(bounds, bounds[1:]):
        jump_in = geometry[id(a)][0]
        local = _walk(ops[producer[id(a)] + 1:producer[id(b)] + 1], {id(a): (jump_in, 0)})
        inner = [j for j, _ in local.values()]
        align = int(max(inner) / jump_in)
        reach = local[id(b)][1]
        halo = -(-math.ceil(reach / jump_in) // align) * align
        stages.append(Stage(keras.Model(a, b), int(jump_in), local[id(b)][0], align, halo,
                            min(inner + [jump_in]), reach))
    return stages


def run_in_strips(fn, stage: Stage, x: np.ndarray, max_rows: int) -> np.ndarray:
    """``fn`` (the stage's network call) on ``x`` (NHWC) in strips of at most about ``max_rows`` rows."""
    n = x.shape[1]
    ratio = Fraction(stage.jump_in) / stage.jump_out  # output rows per input row
    unit = math.lcm(stage.align, max(1, int(1 / ratio)) if ratio < 1 else 1)
    core = max(unit, (max_rows - 2 * stage.halo) // unit * unit)
    if n <= core:
        return fn(x)
    pieces = []
    for top in range(0, n, core):
        bottom = min(top + core, n)
        start, stop = max(0, top - stage.halo), min(n, bottom + stage.halo)
        y = fn(x[:, start:stop])
        pieces.append(y[:, int((top - start) * ratio):math.ceil((bottom - start) * ratio)])
    return np.concatenate(pieces, axis=1)
