"""Two training steps under a strategy, for ``test_train.py`` (run in a fresh process).

    python distributed_check.py mirrored OUT.json   one device, one device on the batch in reverse
                                                    order (the float32 noise floor), MirroredStrategy
                                                    over two logical CPUs, and the naive per-replica
                                                    loss Keras's fit() uses; same start, same data;
                                                    and the soft IoU with deep supervision's heads
    python distributed_check.py single OUT.json     one device
    python distributed_check.py worker OUT.json     MultiWorkerMirroredStrategy from TF_CONFIG
    MAMMO_CPU_DEVICES=2 python distributed_check.py overflow OUT.json
                                                    mixed_float16 with a LossScaleOptimizer on two
                                                    logical CPUs (made by make_strategy from the
                                                    environment, as for mammo train): a float16
                                                    overflow on replica 1 only, then a clean step

Each for two losses: the batch-pooled soft IoU (sums over replicas) and the batch-level Lovász
hinge (every pixel of the global batch sorted at once: statistics concatenated over replicas).
Writes the loss of each step and each variable's change. With plain SGD the change is
-lr × gradient, so equal changes mean equal gradients.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GLOBAL_BATCH, SIZE, STEPS, LR = 8, 64, 2, 0.5


def data(reverse=False):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((GLOBAL_BATCH * STEPS, SIZE, SIZE, 1), dtype=np.float32) * 0.5
    y = np.zeros_like(x)
    for i in range(len(x)):
        if i % 3:  # a third of the tiles have no lesion
            r, c = rng.integers(8, SIZE - 24, 2)
            y[i, r:r + 16, c:c + 16] = 1
            x[i, r:r + 16, c:c + 16] += 0.4
    if reverse:  # the same global batches, each in reverse order: same gradient up to rounding
        order = np.concatenate([np.arange(s + GLOBAL_BATCH - 1, s - 1, -1) for s in range(0, len(x), GLOBAL_BATCH)])
        x, y = x[order], y[order]
    return x, y


def naive_step(model, loss, optimizer, strategy):
    """What Keras's fit() does with a scalar loss: each replica's own IoU, summed over replicas."""
    import tensorflow as tf

    @tf.function
    def step(iterator):
        def replica(x, y):
            with tf.GradientTape() as tape:
                value = loss(y, model(x, training=True))
            grads = tape.gradient(value, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return value

        x, y = next(iterator)
        return strategy.reduce("SUM", strategy.run(replica, args=(x, y)), axis=None)

    return step


LOSSES = ("iou", "lovasz")


def make_loss(name):
    from mammo_seg.losses import LovaszHinge, SoftIoULoss

    return SoftIoULoss() if name == "iou" else LovaszHinge(per_image=False)


def run(strategy, loss_name="iou", reverse=False, naive=False, deep=False):
    import keras
    import numpy as np
    import tensorflow as tf

    from mammo_seg.metrics import standard_metrics
    from mammo_seg.models.deep_supervision import supervised
    from mammo_seg.models.fcn import MammoFCN
    from mammo_seg.training.step import Steps

    keras.utils.set_random_seed(1)
    with strategy.scope():
        model, weights = supervised(MammoFCN(width=0.125, dropout=0.0), deep)  # deep: with its auxiliary heads
        loss = make_loss(loss_name)  # batch-level losses: the case fit() gets wrong
        optimizer = keras.optimizers.SGD(LR)
        optimizer.build(model.trainable_variables)
        train_metrics = standard_metrics()
    if naive:
        step = naive_step(model, loss, optimizer, strategy)
    else:
        steps = Steps(model, loss, optimizer, strategy, train_metrics, [], output_weights=weights)
        step = lambda iterator: steps.train_step(iterator)["loss"]  # noqa: E731  (the data loss)
    x, y = data(reverse)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    iterator = iter(strategy.experimental_distribute_dataset(ds.with_options(options)))
    before = [v.numpy().copy() for v in model.trainable_variables]
    losses = [float(step(iterator)) for _ in range(STEPS)]
    after = [v.numpy() for v in model.trainable_variables]
    return {"losses": losses, "iou": float(train_metrics[0].result()),
            "deltas": [np.asarray(a - b).ravel().tolist() for a, b in zip(after, before)]}


def overflow(strategy):
    """Two steps of a 1x1 convolution under mixed_float16, one image per replica. Step 1: replica 1's
    image holds 1e6, infinite in float16, so only replica 1's gradients overflow. Step 2: clean.
    Writes the kernel and the loss scale before and after each step."""
    import keras
    import numpy as np
    import tensorflow as tf

    from mammo_seg.losses import SoftIoULoss
    from mammo_seg.training.step import Steps

    keras.mixed_precision.set_global_policy("mixed_float16")
    with strategy.scope():
        model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(
            1, 1, kernel_initializer=keras.initializers.Constant(1.0), name="conv")])
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=2.0 ** 15)
        optimizer.build(model.trainable_variables)
    steps = Steps(model, SoftIoULoss(), optimizer, strategy, [], [])
    x = np.tile(np.linspace(-1, 1, 16, dtype="float32").reshape(1, 4, 4, 1), (4, 1, 1, 1))
    y = (x > 0.3).astype("float32")
    x[1, 2, 2] = 1e6  # the second image of the first global batch: replica 1's
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    iterator = iter(strategy.experimental_distribute_dataset(ds.with_options(options)))

    def state():
        return {"kernel": model.get_layer("conv").kernel.numpy().ravel().tolist(),
                "bias": model.get_layer("conv").bias.numpy().ravel().tolist(),
                "scale": float(optimizer.dynamic_scale.numpy())}

    result = {"before": state()}
    steps.train_step(iterator)
    result["overflow"] = state()
    steps.train_step(iterator)
    result["clean"] = state()
    return result


def main(mode, out):
    import tensorflow as tf

    from mammo_seg.training.strategy import make_strategy, split_cpu

    if mode == "overflow":
        mirrored = make_strategy("mirrored")  # over the logical CPUs that MAMMO_CPU_DEVICES asks for, as mammo train
        result = {"replicas": mirrored.num_replicas_in_sync, **overflow(mirrored)}
    elif mode == "worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TF op
        result = {name: {"mwms": run(strategy, name)} for name in LOSSES}
        result["replicas"] = strategy.num_replicas_in_sync
    elif mode == "single":
        default = tf.distribute.get_strategy()
        result = {name: {"single": run(default, name), "reversed": run(default, name, reverse=True)}
                  for name in LOSSES}
    else:
        split_cpu(2)
        default = tf.distribute.get_strategy()
        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        result = {name: {"single": run(default, name), "reversed": run(default, name, reverse=True),
                         "mirrored": run(mirrored, name), "naive": run(mirrored, name, naive=True)}
                  for name in LOSSES}
        result["iou_deep"] = {"single": run(default, deep=True), "reversed": run(default, reverse=True, deep=True),
                              "mirrored": run(mirrored, deep=True)}
        result["replicas"] = mirrored.num_replicas_in_sync
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
