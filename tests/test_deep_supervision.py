"""Deep supervision: the auxiliary heads' outputs, and the step that descends the weighted sum of their losses."""

import numpy as np
import pytest


def test_the_heads_are_further_outputs_of_the_input_size_and_leave_the_network_as_it_is():
    import keras

    from mammo_seg.models.deep_supervision import WEIGHTS, supervised
    from mammo_seg.models.fcn import MammoFCN

    keras.utils.set_random_seed(0)
    model = MammoFCN(width=0.125)
    names = [layer.name for layer in model.layers]
    assert supervised(model, False) == (model, (1.0,))
    trained, weights = supervised(model, True)
    assert weights == WEIGHTS and sum(weights) == pytest.approx(1.0)
    assert weights == pytest.approx((4 / 7, 2 / 7, 1 / 7))
    assert [layer.name for layer in model.layers] == names  # the saved network gains no layer
    x = np.random.default_rng(0).random((1, 40, 40, 1), dtype="float32")
    logits, h4, h8 = (keras.ops.convert_to_numpy(o) for o in trained(x))
    np.testing.assert_array_equal(logits, keras.ops.convert_to_numpy(model(x)))  # the same layers, the same logits
    assert logits.shape == h4.shape == h8.shape == (1, 40, 40, 1)
    # nearest resizing: up_conv2's head is constant over each 8x8 cell of the (padded) input, up_conv6's over 4x4
    assert np.ptp(h8[0, :8, :8]) == 0 and np.ptp(h8[0, :16, :16]) > 0
    assert np.ptp(h4[0, :4, :4]) == 0 and np.ptp(h4[0, :8, :8]) > 0
    assert len(trained.trainable_variables) == len(model.trainable_variables) + 4  # two 1x1 heads: kernel and bias
    # each head: a 1x1 convolution of its decoder layer's activations, repeated over its cells, cropped to the input
    taps = keras.Model(model.inputs[0], [model.get_layer(n).output for n in ("up_conv6_relu", "up_conv2_relu")])
    for head, tap, factor, name in zip((h4, h8), taps(x), (4, 8), ("up_conv6", "up_conv2")):
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in trained.get_layer(f"{name}_aux_logits").weights)
        cells = keras.ops.convert_to_numpy(tap) @ kernel[0, 0] + bias
        np.testing.assert_allclose(head, cells.repeat(factor, 1).repeat(factor, 2)[:, :40, :40], rtol=1e-5, atol=1e-6)


def test_under_mixed_float16_the_heads_compute_in_float32_and_the_step_trains_them():
    import keras
    import tensorflow as tf

    from mammo_seg.losses import get_loss
    from mammo_seg.models.deep_supervision import supervised
    from mammo_seg.models.fcn import MammoFCN
    from mammo_seg.training.step import Steps

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        trained, weights = supervised(MammoFCN(width=0.125), True)
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
        optimizer.build(trained.trainable_variables)
        steps = Steps(trained, get_loss({"name": "dice"}), optimizer, tf.distribute.get_strategy(), [], [],
                      output_weights=weights)
        x = np.random.default_rng(1).random((2, 64, 64, 1), dtype="float32")
        y = np.zeros_like(x)
        y[:, 20:40, 24:44] = 1
        assert [keras.backend.standardize_dtype(o.dtype) for o in trained(x)] == ["float32"] * 3
        heads = [trained.get_layer(f"{n}_aux_logits").kernel for n in ("up_conv6", "up_conv2")]
        before = [h.numpy().copy() for h in heads]
        out = steps.train_step(iter(tf.data.Dataset.from_tensors((x, y))))
        assert np.isfinite(float(out["loss"]))
        for h, b in zip(heads, before):
            assert np.isfinite(h.numpy()).all() and not np.array_equal(h.numpy(), b)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_the_step_descends_the_weighted_sum_of_its_outputs_losses_and_reports_the_first():
    import keras
    import tensorflow as tf

    from mammo_seg.losses import get_loss
    from mammo_seg.training.step import Steps

    # two 1x1 convolutions of one input, kernels 2 and -1: the step's update is -lr · ∇(0.75 L(2x) + 0.25 L(-x))
    scan = keras.Input((1, 4, 1))
    a = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(2.0))
    b = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(-1.0))
    model = keras.Model(scan, [a(scan), b(scan)])
    loss = get_loss({"name": "mixed", "losses": [{"name": "weighted_bce", "pos_weight": 1}, {"name": "dice"}],
                     "coefs": [1.0, 1.0]})
    x = np.array([1.5, 0.5, -0.5, -1.0], "float32").reshape(1, 1, 4, 1)
    y = np.array([1, 0, 1, 0], "float32").reshape(1, 1, 4, 1)
    with tf.GradientTape() as tape:
        first, second = model(x)
        losses = [loss.from_statistics(loss.statistics(y, out)) for out in (first, second)]
        expected = 0.75 * losses[0] + 0.25 * losses[1]
    gradients = [g.numpy() for g in tape.gradient(expected, model.trainable_variables)]
    before = [v.numpy() for v in model.trainable_variables]
    optimizer = keras.optimizers.SGD(1.0)
    optimizer.build(model.trainable_variables)
    steps = Steps(model, loss, optimizer, tf.distribute.get_strategy(), [], [], output_weights=(0.75, 0.25))
    out = steps.train_step(iter(tf.data.Dataset.from_tensors((x, y))))
    assert float(out["loss"]) == pytest.approx(float(losses[0]), rel=1e-6)  # the network's own logits' loss
    for v, w, g in zip(model.trainable_variables, before, gradients):
        np.testing.assert_allclose(v.numpy(), w - g, rtol=1e-6)
    updated = model(x)[0]  # validation scores the first output alone
    assert float(steps.eval_step((x, y))) == pytest.approx(float(loss.from_statistics(loss.statistics(y, updated))),
                                                          rel=1e-6)
