"""Small layers that let the FCN take any input size; registered for `.keras` safe-mode loading."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mammo_seg")
class PadToMultiple(keras.layers.Layer):
    """Zero-pads height and width at the bottom and right up to a multiple of ``multiple``.

    Zero is the darkest value of a scan (background), so padding adds no tissue.
    """

    def __init__(self, multiple: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, x):
        h, w = ops.shape(x)[1], ops.shape(x)[2]
        m = self.multiple
        return ops.pad(x, [[0, 0], [0, (m - h % m) % m], [0, (m - w % m) % m], [0, 0]])

    def compute_output_shape(self, input_shape):
        def padded(d):
            return None if d is None else -(-d // self.multiple) * self.multiple

        return (input_shape[0], padded(input_shape[1]), padded(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="mammo_seg")
class CropToReference(keras.layers.Layer):
    """Crops ``x`` to the height and width of ``reference`` (undoes :class:`PadToMultiple`)."""

    def call(self, inputs):
        x, reference = inputs
        return x[:, : ops.shape(reference)[1], : ops.shape(reference)[2], :]

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[3])


def _single_replica() -> bool:
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return context is not None and context.num_replicas_in_sync == 1


@keras.saving.register_keras_serializable(package="mammo_seg")
class BatchNorm(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` that uses TensorFlow's fused kernel where it can.

    Keras 3 normalises with unfused ops (``tf.nn.moments`` and elementwise arithmetic), and its
    synchronised variant also builds a tensor of ones per layer to count pixels. With the TensorFlow
    backend and float32/float16 inputs this layer calls ``FusedBatchNormV3`` instead (the kernel
    Keras 2 used): in training on one replica, with the batch mean and (biased) variance, updating
    the moving averages as Keras does; in inference, with the moving statistics, where grappler can
    fold it into the preceding convolution and the following ReLU. The arithmetic is the same.
    Everywhere else (several replicas, where the statistics must be synchronised; other backends)
    it is Keras's layer unchanged.
    """

    def _fusable(self, inputs, mask) -> bool:
        return (mask is None and not self.renorm and self.axis in (-1, 3)
                and keras.backend.backend() == "tensorflow"
                and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "float16"))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        gamma = tf.cast(self.gamma if self.scale else tf.ones_like(self.moving_mean), "float32")
        beta = tf.cast(self.beta if self.center else tf.zeros_like(self.moving_mean), "float32")
        if not (training and self.trainable):
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=tf.cast(self.moving_mean, "float32"),
                variance=tf.cast(self.moving_variance, "float32"), epsilon=self.epsilon, is_training=False)
            return tf.cast(outputs, self.compute_dtype)
        if not _single_replica():
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(inputs, gamma, beta, epsilon=self.epsilon,
                                                                   is_training=True)
        # the kernel reports the unbiased variance; Keras averages the biased one
        n = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], "float32")
        variance = variance * (n - 1.0) / tf.maximum(n, 2.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)
