"""The one training step, written by hand because ``tf.distribute`` correctness needs it.

Keras 3's ``model.fit`` (a) fails under MultiWorkerMirroredStrategy (keras-team/keras#20585) and
(b) sums a batch-pooled scalar loss over replicas, so with two replicas the IoU loss and its
gradient double, and each replica's IoU covers only its half of the batch. Here every replica
computes its loss *statistics* (for the batch IoU: Σpy and Σ(p+y−py)), they are all-reduced, and
every replica evaluates the loss L = F(S) of the global sums. The gradient uses the surrogate

    Σ_k stop_gradient(∂F/∂S_k) · s_k          (s_k: this replica's sums)

whose gradients, summed over replicas by the optimizer, equal ∇L of one device on the global
batch. Per-pixel statistics that cannot be summed (a batch-level Lovász loss sorts every pixel of
the batch) are concatenated over replicas instead, through the same all-reduce. Regularisation terms
are divided by the number of replicas for the same reason. BatchNorm is synchronised
(``MammoFCN(sync_batchnorm=True)``), so its statistics are global too.

Dynamic loss scaling (float16, ``keras.optimizers.LossScaleOptimizer``) needs every replica to agree
on whether the step overflowed. Keras 3.15 checks only the local replica's gradients (the first
replica's under MirroredStrategy) before they are all-reduced, so an overflow on another replica
put inf/NaN into every weight and left the loss scale unchanged. Here each replica's "gradients
finite" flag is all-reduced first; if any replica overflowed, every replica's gradients are set to
NaN, so that Keras's own check skips the update and halves the loss scale on every replica.

The train step returns ``{"loss": L, "regularization": R}``: the data loss of the global batch and
the weight-decay penalty, apart (their sum is what the gradient descends), so that a logged IoU loss
stays within [0, 1]. The eval step returns the data loss alone. A model with several outputs (deep
supervision, :mod:`mammo_seg.models.deep_supervision`) descends Σ_i w_i · L_i over its outputs; L, the
metrics and the eval step are its first output's, the network's own logits.

The steps' graphs are built without grappler's arithmetic optimizer (:func:`reproducible_rewrites`):
it collapses chains of additions into one ``AddN``, and TensorFlow's CPU ``AddN`` adds its inputs in
an order that depends on which input buffer it could reuse, so on which other ops had finished. On
whole scans that made the same step from the same weights and batch differ in the last bit now and
then (first in the loss's derivatives ∂F/∂S_k, from identical statistics S_k), and two trainings of
one config and seed drift apart (docs/training.md, "Reproducibility").
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf


@contextlib.contextmanager
def reproducible_rewrites():
    """Within the block, tf.functions are optimised without grappler's arithmetic optimizer (it costs no
    measurable speed here: a whole-scan step 0.38-0.39 s with it or without); the process's setting is
    restored afterwards."""
    before = tf.config.optimizer.get_experimental_options().get("arithmetic_optimization")
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"arithmetic_optimization": True if before is None else before})


def _replica_slot(ctx, values, pad_value):
    """This replica's per-pixel ``values`` in its own slot of an [R, n_max, ...] buffer of zeros.

    Summing these buffers over replicas concatenates every replica's values (``all_gather`` does not
    run under MultiWorkerMirroredStrategy; an all-reduce does). Shorter vectors are padded with
    ``pad_value``, which the loss ignores.
    """
    replicas = ctx.num_replicas_in_sync
    slot = tf.one_hot(ctx.replica_id_in_sync_group, replicas, dtype=values.dtype)
    n = tf.shape(values)[0]
    n_max = tf.reduce_max(ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                         tf.one_hot(ctx.replica_id_in_sync_group, replicas, dtype=tf.int32) * n))
    padding = tf.concat([[n_max - n], tf.shape(values)[1:]], axis=0)
    padded = tf.concat([values, tf.fill(padding, tf.cast(pad_value, values.dtype))], axis=0)
    return tf.reshape(slot, [replicas] + [1] * len(values.shape)) * padded[None]


def _global_statistics(loss, y, logits):
    """(this replica's statistics, the global batch's statistics): sums summed, per-pixel ones concatenated."""
    ctx = tf.distribute.get_replica_context()
    local = loss.statistics(y, logits)
    pads = dict(zip(loss.gathered, loss.gather_padding))
    local = [_replica_slot(ctx, s, pads[k]) if k in pads else s for k, s in enumerate(local)]
    total = [tf.stop_gradient(s) for s in ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)]
    flat = [tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], 0)) if k in pads else t for k, t in enumerate(total)]
    return local, flat


def _global_loss(loss, y, logits):
    """(loss of the global batch, this replica's surrogate objective)."""
    local, flat = _global_statistics(loss, y, logits)
    with tf.GradientTape() as tape:
        tape.watch(flat)
        value = loss.from_statistics(flat)
    slopes = tape.gradient(value, flat, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    surrogate = tf.add_n([tf.reduce_sum(tf.stop_gradient(tf.reshape(g, tf.shape(s))) * s)
                          for g, s in zip(slopes, local)])
    return value, surrogate


def _agree_on_overflow(ctx, gradients):
    """``gradients``, or NaN in their place on every replica if any replica's gradients are not finite."""
    present = [g for g in gradients if g is not None]
    finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in present]))
    overflowed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32)) > 0
    return [None if g is None else tf.where(overflowed, tf.constant(float("nan"), g.dtype), g) for g in gradients]


class Steps:
    """Compiled train and evaluation steps for one model, loss, optimizer and strategy."""

    def __init__(self, model, loss, optimizer, strategy, train_metrics, val_metrics, jit_compile=False,
                 output_weights=(1.0,)):
        self.model, self.loss, self.optimizer, self.strategy = model, loss, optimizer, strategy
        self.output_weights = tuple(output_weights)  # one per model output
        if len(self.output_weights) != len(model.outputs):
            raise ValueError(f"{len(model.outputs)} model outputs, {len(self.output_weights)} output weights")
        self.train_metrics, self.val_metrics = train_metrics, val_metrics
        self.loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.train_step = tf.function(self._train_step, jit_compile=jit_compile)
        self.eval_step = tf.function(self._eval_step, reduce_retracing=True)

    def _regularisation(self):
        return tf.add_n([tf.cast(l, tf.float32) for l in self.model.losses]) if self.model.losses else 0.0

    def _outputs(self, x, training):
        """The model's outputs as a list (its first: the network's logits)."""
        outputs = self.model(x, training=training)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    def _train_replica(self, x, y):
        ctx = tf.distribute.get_replica_context()
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self._outputs(x, training=True)
            logits = outputs[0]
            losses = [_global_loss(self.loss, y, output) for output in outputs]
            value = losses[0][0]
            surrogate = tf.add_n([w * s for w, (_, s) in zip(self.output_weights, losses)])  # w = 1: exactly s
            regularisation = self._regularisation()
            objective = surrogate + regularisation / ctx.num_replicas_in_sync
            scaled = self.optimizer.scale_loss(objective)
        gradients = tape.gradient(scaled, variables)
        if self.loss_scaled:
            gradients = _agree_on_overflow(ctx, gradients)
        self.optimizer.apply_gradients(zip(gradients, variables))
        for metric in self.train_metrics:
            metric.update_state(y, logits)
        return {"loss": value, "regularization": tf.cast(regularisation, tf.float32)}

    def _train_step(self, iterator):
        """One step on the next global batch: {"loss": data loss, "regularization": weight-decay penalty}."""
        x, y = next(iterator)
        per_replica = self.strategy.run(self._train_replica, args=(x, y))
        return self.strategy.experimental_local_results(per_replica)[0]

    def _eval_replica(self, x, y):
        # The last partial batch can leave a replica with no images. Skip the model then (a strided
        # convolution on an empty batch returns a wrong shape on TF 2.21's CPU kernels); empty
        # statistics are zeros (or only padding), and the replica still joins the all-reduce.
        logits = tf.cond(tf.shape(x)[0] > 0, lambda: self._outputs(x, training=False)[0], lambda: tf.zeros_like(y))
        value = self.loss.from_statistics(_global_statistics(self.loss, y, logits)[1])
        for metric in self.val_metrics:
            metric.update_state(y, logits)
        return value

    def _eval_step(self, batch):
        x, y = batch
        per_replica = self.strategy.run(self._eval_replica, args=(x, y))
        return self.strategy.experimental_local_results(per_replica)[0]
