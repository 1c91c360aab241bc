"""Deep supervision (Lee et al. 2015, "Deeply-Supervised Nets"; on by default in nnU-Net): auxiliary heads on the
decoder of :class:`~mammo_seg.models.fcn.MammoFCN`, scored by the training loss beside the network's own logits.

The decoder reaches the network's logits through two stages of nearest-neighbour resizing and convolution:
``up_conv2`` at H/8 and ``up_conv6`` at H/4. Each gets a 1×1 convolution to one logit map, resized (nearest) to the
input's size, and the training objective becomes

    L = Σ_i w_i · loss(y, logits_i),    w ∝ (1, ½, ¼) for (the logits, up_conv6's head, up_conv2's head), Σ w_i = 1

(nnU-Net's weights, halving with each coarser output, normalised to 1). Scoring the resized logits against the
full-size mask, rather than coarse logits against a downsampled mask, leaves every loss and the ignore region
exactly as they are: one coarse logit's gradient is its cell's, as if scored against the cell's mean label.

The heads exist while training only: the model saved, and every later stage's starting point, is the network
without them.
"""

from __future__ import annotations

import keras
from keras import layers

from mammo_seg.models.layers import CropToReference

#: decoder layer → how far below the input's size its output is (the padded input: a multiple of 32)
AUXILIARY = {"up_conv6_relu": 4, "up_conv2_relu": 8}
#: the objective's weights for (the logits, up_conv6's head, up_conv2's head): nnU-Net's 1, ½, ¼, normalised
WEIGHTS = tuple(w / 1.75 for w in (1.0, 0.5, 0.25))


def supervised(model: keras.Model, enabled: bool) -> tuple[keras.Model, tuple[float, ...]]:
    """(the model to train, the weights of its outputs): ``model`` itself and (1,), or a model of the same layers
    with the auxiliary heads' logits as further outputs and :data:`WEIGHTS`. Call it inside the strategy's scope
    (the heads' variables are created here)."""
    if not enabled:
        return model, (1.0,)
    scan = model.inputs[0]
    outputs = [model.outputs[0]]
    for layer, factor in AUXILIARY.items():
        head = layer.removesuffix("_relu")
        x = layers.Conv2D(1, 1, dtype="float32", name=f"{head}_aux_logits")(model.get_layer(layer).output)
        x = layers.UpSampling2D(factor, interpolation="nearest", dtype="float32", name=f"{head}_aux_full")(x)
        outputs.append(CropToReference(dtype="float32", name=f"{head}_aux_crop")([x, scan]))
    return keras.Model(scan, outputs, name=f"{model.name}_deeply_supervised"), WEIGHTS
