"""Arithmetic cost of the network, for the benchmarks' throughput figures (not needed to train or predict)."""

from __future__ import annotations

import keras
from keras import layers

from mammo_seg.models.fcn import STRIDE


def forward_flops(model: keras.Model, height: int, width: int) -> float:
    """Forward FLOPs (2 × multiply-adds of convolutions) for one ``height × width`` input."""
    flops = 0.0
    size = (-(-height // STRIDE) * STRIDE, -(-width // STRIDE) * STRIDE)  # after padding
    for layer in model.layers:
        if isinstance(layer, layers.Conv2DTranspose):
            kh, kw = layer.kernel_size
            c_in, c_out = layer.kernel.shape[3], layer.kernel.shape[2]
            flops += 2.0 * size[0] * size[1] * kh * kw * c_in * c_out
            size = (size[0] * layer.strides[0], size[1] * layer.strides[1])
        elif isinstance(layer, layers.Conv2D):
            kh, kw = layer.kernel_size
            c_in, c_out = layer.kernel.shape[2], layer.kernel.shape[3]
            size = (-(-size[0] // layer.strides[0]), -(-size[1] // layer.strides[1]))
            flops += 2.0 * size[0] * size[1] * kh * kw * c_in * c_out
        elif isinstance(layer, layers.MaxPooling2D):
            size = (-(-size[0] // layer.strides[0]), -(-size[1] // layer.strides[1]))
        elif isinstance(layer, layers.UpSampling2D) and layer.name != "logits_full":
            size = (size[0] * layer.size[0], size[1] * layer.size[1])
    return flops
