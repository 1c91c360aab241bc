"""The 2018 final network (candidate 3.9.4.02) as a Keras 3 functional model.

Layer table (input H; filter counts at ``width=1``; every conv is 3×3 + BatchNorm + ReLU unless noted):

=================  =======================================  ==========  ====================
layer              operation                                filters     output
=================  =======================================  ==========  ====================
normalize          x - 0.5 (the original's (x - 127)/255)               H
conv0_1..0_3       s2 conv, 2 convs, residual 0_3 + 0_1     32          H/2
pool0              3×3 stride-2 conv instead of a pool      48          H/4
conv1_1..1_3       residual 1_3 + 1_1; then 3×3 max pool    48          H/8
conv2_1..2_3       residual; then 2×2 max pool              64          H/16
conv3_1..3_3       residual; then 2×2 max pool              128         H/32
conv4, 4_1..4_3    residual 4_3 + 4 (pool4 removed)         256         H/32
conv5, 5_1..5_3    dilation 2, residual 5_3 + 5             512         H/32
fc_1               1×1 conv, L2 (below), dropout 0.25       256         H/32
up_conv2           nearest ×4, conv                         128         H/8
up_conv6           nearest ×2, conv                         64          H/4
upsample_4         4×4 transposed conv stride 2, ReLU       64          H/2
upsample_5         4×4 transposed conv stride 1, ReLU       32          H/2
up_conv9           conv                                     16          H/2
logits             1×1 conv, 1 filter, L2 (below)           1           H/2
logits_full        nearest ×2 (float32 under mixed precision)           H
=================  =======================================  ==========  ====================

Precision: under a mixed policy (``mixed_float16``, ``mixed_bfloat16``) the padding, the normalisation
and conv0_1 still compute in float32 (``INPUT_DTYPE``): bfloat16 has an 8-bit mantissa, so a 16-bit
scan normalised in it keeps about 256 levels per octave (4096 levels inside a 1 % intensity band
came out as 4), erasing the low contrast of subtle masses. conv0_1's output is cast to the policy's
compute dtype by its BatchNorm; the logits are float32 again.

Weight decay: fc_1 and the logits only (the convolutions had none), Keras ``L2(0.00125)``, i.e. a
penalty 0.00125·Σw². The 2018 code's ``tf.contrib.layers.l2_regularizer(0.0025)`` is
0.0025·``tf.nn.l2_loss(w)`` = 0.0025·Σw²/2: the same effective weight decay. (Keras's ``L2(λ)`` has no
½, so ``L2(0.0025)`` decayed twice as hard as the original.)

Fixes to the original (``original_pipeline.md`` §1.3.1):

* conv5_1's output was discarded (``conv5_relu = relu(conv5)`` fed conv5_2); here conv5_1 feeds conv5_2,
  so the dilated block really is four convolutions in series;
* fc_1 read the pre-ReLU residual sum; here it reads the block's activated output;
* the last pooling is replaced by dilated convolutions, as in the original, and the 0.0001 dropout
  after the pools (a no-op) is left out;
* He-normal initialisation instead of a truncated normal of σ = 0.05; BatchNorm is synchronised
  across replicas, so every ``tf.distribute`` strategy computes the same statistics as one device,
  and uses TensorFlow's fused kernel on one replica (:class:`mammo_seg.models.layers.BatchNorm`).

Any input size works: the input is zero-padded to a multiple of 32 and the logits are cropped back.
The model takes a scan as ``mammo_seg.io`` returns it (float32 in [0, 1], bright = dense) and
returns **logits** (apply a sigmoid for lesion probabilities). No skip connections, on purpose
(the author found they made predictions "resemble the input"); ``skips=True`` adds U-Net's.
"""

from __future__ import annotations

import keras
from keras import layers

from mammo_seg.models.layers import BatchNorm, CropToReference, PadToMultiple

STRIDE = 32
#: dtype policy of the input layers (pad, normalize, conv0_1) whatever the global mixed-precision policy
INPUT_DTYPE = "float32"
#: Keras L2 factor equal to the 2018 code's l2_regularizer(0.0025), which halves Σw² (tf.nn.l2_loss)
ORIGINAL_L2 = 0.0025 / 2


def _filters(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


class MammoFCN(keras.Model):
    """The Scuccimarra FCN. ``width`` scales every filter count (1.0 = the original, about 11.5 M
    parameters); ``dropout`` is fc_1's; ``l2`` the Keras L2 factor on fc_1 and the logits (penalty
    l2·Σw²; the default 0.00125 is the original's 0.0025·Σw²/2, see the module docstring).

    ``bn_momentum`` is BatchNorm's moving-average momentum (the original's 0.99 suits long runs; a
    run of a few hundred steps needs less, or its moving statistics still carry their initial values).
    ``resolution`` (a :class:`mammo_seg.data.resolution.Resolution` as a dict) records the training
    resolution, so that a saved model tells predict how to resample a scan; it does not change the
    network. ``channels``: 1, the scan; 2, the scan and the woman's other breast beside it
    (:mod:`mammo_seg.data.contralateral`).

    ``skips``: U-Net's skip connections (Ronneberger et al., MICCAI 2015), which the 2018 network left out on
    purpose: the encoder's blocks at H/8 (conv2_3), H/4 (conv1_3) and H/2 (conv0_3) concatenated, channel-wise, to
    the decoder's inputs of up_conv2, up_conv6 and up_conv9 (layers ``skip_8``, ``skip_4``, ``skip_2``), so that
    the outline of a lesion a few pixels across need not come back from the 32-px grid of the deepest features.
    """

    def __init__(self, width: float = 1.0, dropout: float = 0.25, l2: float = ORIGINAL_L2,
                 sync_batchnorm: bool = True, bn_momentum: float = 0.99, resolution: dict | None = None,
                 channels: int = 1, skips: bool = False, name: str = "mammo_fcn", **kwargs):
        def f(n):
            return _filters(n, width)

        def conv(x, filters, name, stride=1, dilation=1, activate=True, dtype=None):
            x = layers.Conv2D(filters, 3, strides=stride, dilation_rate=dilation, padding="same", use_bias=False,
                              kernel_initializer="he_normal", dtype=dtype, name=name)(x)
            x = BatchNorm(momentum=bn_momentum, synchronized=sync_batchnorm, name=f"{name}_bn")(x)
            return layers.ReLU(name=f"{name}_relu")(x) if activate else x

        def residual(x, names, filters, stride=1, dilation=1, first_dtype=None):
            first = conv(x, filters, names[0], stride=stride, dilation=dilation, dtype=first_dtype)
            h = first
            for i, n in enumerate(names[1:], start=1):
                h = conv(h, filters, n, dilation=dilation, activate=i < len(names) - 1)
            h = layers.Add(name=f"{names[-1]}_add")([h, first])
            return layers.ReLU(name=f"{names[-1]}_out")(h)

        def l2_reg():
            return keras.regularizers.L2(l2) if l2 else None

        def skip(x, encoder, name):
            return layers.Concatenate(name=name)([x, encoder]) if skips else x

        scan = keras.Input((None, None, channels), name="scan")
        # float32 under every policy: bfloat16 keeps 8 bits, merging a 16-bit scan's subtle contrast
        x = PadToMultiple(STRIDE, dtype=INPUT_DTYPE, name="pad")(scan)
        x = layers.Rescaling(1.0, offset=-0.5, dtype=INPUT_DTYPE, name="normalize")(x)
        x = half = residual(x, ["conv0_1", "conv0_2", "conv0_3"], f(32), stride=2, first_dtype=INPUT_DTYPE)
        x = conv(x, f(48), "pool0", stride=2)
        x = quarter = residual(x, ["conv1_1", "conv1_2", "conv1_3"], f(48))
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
        x = eighth = residual(x, ["conv2_1", "conv2_2", "conv2_3"], f(64))
        x = layers.MaxPooling2D(2, name="pool2")(x)
        x = residual(x, ["conv3_1", "conv3_2", "conv3_3"], f(128))
        x = layers.MaxPooling2D(2, padding="same", name="pool3")(x)
        x = residual(x, ["conv4", "conv4_1", "conv4_2", "conv4_3"], f(256))
        x = residual(x, ["conv5", "conv5_1", "conv5_2", "conv5_3"], f(512), dilation=2)
        x = layers.Conv2D(f(256), 1, use_bias=False, kernel_initializer="he_normal", kernel_regularizer=l2_reg(),
                          name="fc_1")(x)
        x = BatchNorm(momentum=bn_momentum, synchronized=sync_batchnorm, name="fc_1_bn")(x)
        x = layers.ReLU(name="fc_1_relu")(x)
        x = layers.Dropout(dropout, name="fc_1_dropout")(x)
        x = layers.UpSampling2D(4, interpolation="nearest", name="resize_1")(x)
        x = conv(skip(x, eighth, "skip_8"), f(128), "up_conv2")
        x = layers.UpSampling2D(2, interpolation="nearest", name="resize_6")(x)
        x = conv(skip(x, quarter, "skip_4"), f(64), "up_conv6")
        x = layers.Conv2DTranspose(f(64), 4, strides=2, padding="same", activation="relu",
                                   kernel_initializer="he_normal", name="upsample_4")(x)
        x = layers.Conv2DTranspose(f(32), 4, strides=1, padding="same", activation="relu",
                                   kernel_initializer="he_normal", name="upsample_5")(x)
        x = conv(skip(x, half, "skip_2"), f(16), "up_conv9")
        x = layers.Conv2D(1, 1, kernel_regularizer=l2_reg(), name="logits")(x)
        x = layers.UpSampling2D(2, interpolation="nearest", dtype="float32", name="logits_full")(x)
        logits = CropToReference(dtype="float32", name="crop")([x, scan])
        super().__init__(inputs=scan, outputs=logits, name=name, **kwargs)
        self.width, self.dropout, self.l2, self.sync_batchnorm = width, dropout, l2, sync_batchnorm
        self.bn_momentum, self.channels, self.skips = bn_momentum, channels, skips
        self.resolution = dict(resolution) if resolution else None

    def get_config(self):
        return {**super().get_config(), "width": self.width, "dropout": self.dropout, "l2": self.l2,
                "sync_batchnorm": self.sync_batchnorm, "bn_momentum": self.bn_momentum, "resolution": self.resolution,
                "channels": self.channels, "skips": self.skips}

    @classmethod
    def from_config(cls, config):
        """The model, its layers built under the dtype policy it was saved with (``config["dtype"]``): a functional
        model's layers take the global policy of the moment they are built, which the saved policy alone would not
        change."""
        policy = config.get("dtype")
        name = policy.get("config", {}).get("name") if isinstance(policy, dict) else policy
        before = keras.mixed_precision.global_policy()
        if not isinstance(name, str) or name == before.name:
            return cls(**config)
        keras.mixed_precision.set_global_policy(name)
        try:
            return cls(**config)
        finally:
            keras.mixed_precision.set_global_policy(before)


keras.saving.register_keras_serializable(package="mammo_seg")(MammoFCN)
