"""Losses: exact values on hand-computed cases, stability at ±30 logits, gradients, serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mammo_seg import losses as L
from mammo_seg.errors import MammoError

BIG = 30.0  # sigmoid(30) rounds to 1 in float32, sigmoid(-30) ≈ 9.4e-14


def batch():
    """Two 2x2 images. Image 0: lesion at (0,0),(0,1); predicted (p≈1) at (0,0),(1,0). Image 1: empty, p≈0."""
    y = np.zeros((2, 2, 2, 1), "float32")
    y[0, 0, 0] = y[0, 0, 1] = 1
    x = np.full((2, 2, 2, 1), -BIG, "float32")
    x[0, 0, 0] = x[0, 1, 0] = BIG
    return y, x


def value(loss, y, x):
    return float(loss(tf.constant(y), tf.constant(x)))


def test_soft_iou_batch_and_per_image_exact():
    y, x = batch()
    # batch: I = 1, U = 2 + 2 - 1 = 3 -> 1 - 1/3
    assert value(L.SoftIoULoss(smooth=0), y, x) == pytest.approx(2 / 3, abs=1e-6)
    # per image: image 0 gives 1 - 1/3; image 1 has nothing to find and nothing predicted -> 1 without smoothing
    assert value(L.SoftIoULoss(smooth=0, per_image=True), y, x) == pytest.approx((2 / 3 + 1) / 2, abs=1e-6)
    # smoothing s: (I + s) / (U + s)
    assert value(L.SoftIoULoss(smooth=1), y, x) == pytest.approx(1 - 2 / 4, abs=1e-6)
    # per image with s = 1: image 0: 1 - 2/4; image 1: 1 - 1/1 = 0
    assert value(L.SoftIoULoss(smooth=1, per_image=True), y, x) == pytest.approx(0.25, abs=1e-6)


def test_soft_iou_with_probabilities_and_half_probabilities():
    y = np.array([1, 1, 0, 0], "float32").reshape(1, 2, 2, 1)
    p = np.full_like(y, 0.5)
    # I = 1, U = Σp + Σy - I = 2 + 2 - 1 = 3
    assert value(L.SoftIoULoss(from_logits=False, smooth=0), y, p) == pytest.approx(2 / 3, abs=1e-6)
    assert value(L.SoftIoULoss(from_logits=True, smooth=0), y, np.zeros_like(y)) == pytest.approx(2 / 3, abs=1e-6)


def test_perfect_prediction_at_30_logits_is_zero_and_finite():
    y, _ = batch()
    x = np.where(y > 0, BIG, -BIG).astype("float32")
    for loss in (L.SoftIoULoss(), L.SoftIoULoss(per_image=True), L.WeightedBCE()):
        v = value(loss, y, x)
        assert np.isfinite(v) and v == pytest.approx(0.0, abs=1e-6)
    wrong = -x  # confidently wrong everywhere: finite, maximal
    assert value(L.SoftIoULoss(smooth=0), y, wrong) == pytest.approx(1.0, abs=1e-6)
    assert value(L.WeightedBCE(pos_weight=1.0), y, wrong) == pytest.approx(BIG, rel=1e-6)


def _gradient(loss, y, x):
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        v = loss(tf.constant(y), x)
    return tape.gradient(v, x).numpy()


def test_empty_tile_gets_a_gradient_only_with_smoothing():
    y = np.zeros((1, 4, 4, 1), "float32")
    x = np.zeros((1, 4, 4, 1), "float32")  # p = 0.5: 8 units of false-positive mass
    assert value(L.SoftIoULoss(smooth=0), y, x) == 1.0
    assert not _gradient(L.SoftIoULoss(smooth=0), y, x).any()  # stuck at exactly 1, no signal
    g = _gradient(L.SoftIoULoss(smooth=100.0), y, x)
    # L = Σp/(Σp + s): dL/dp = s/(Σp + s)², dp/dx = p(1-p) = 1/4
    assert g == pytest.approx(np.full_like(g, 100.0 / 108.0 ** 2 / 4), rel=1e-5)
    assert value(L.SoftIoULoss(), y, x) == pytest.approx(8 / 108, rel=1e-6)


def test_gradients_are_finite_at_30_logits():
    y, x = batch()
    for loss in (L.SoftIoULoss(), L.SoftIoULoss(per_image=True, smooth=0), L.WeightedBCE()):
        assert np.isfinite(_gradient(loss, y, x)).all()


def test_weighted_bce_exact_and_from_probabilities():
    y = np.array([1, 0, 0, 0], "float32").reshape(1, 2, 2, 1)
    x = np.zeros_like(y)
    # one lesion pixel weighted 3 and three background pixels, all at p = 0.5: (3 ln2 + 3 ln2) / 4
    assert value(L.WeightedBCE(pos_weight=3.0), y, x) == pytest.approx(6 * np.log(2) / 4, rel=1e-6)
    p = np.array([0.9, 0.2, 0.2, 0.2], "float32").reshape(1, 2, 2, 1)
    expected = -(3 * np.log(0.9) + 3 * np.log(0.8)) / 4
    assert value(L.WeightedBCE(pos_weight=3.0, from_logits=False), y, p) == pytest.approx(expected, rel=1e-5)
    logits = np.log(p / (1 - p))
    assert value(L.WeightedBCE(pos_weight=3.0), y, logits) == pytest.approx(expected, rel=1e-5)


def test_mixed_loss_is_the_weighted_sum():
    y, x = batch()
    mixed = L.get_loss({"name": "mixed", "coefs": [0.5, 0.5],
                        "losses": [{"name": "iou", "smooth": 0}, {"name": "weighted_bce", "pos_weight": 2}]})
    expected = 0.5 * value(L.SoftIoULoss(smooth=0), y, x) + 0.5 * value(L.WeightedBCE(2.0), y, x)
    assert value(mixed, y, x) == pytest.approx(expected, rel=1e-6)
    assert mixed.num_statistics == 4


def test_float16_logits_give_the_float32_loss():
    y, x = batch()
    x = x / 4  # representable in float16
    for loss in (L.SoftIoULoss(), L.WeightedBCE()):
        assert value(loss, y, x.astype("float16")) == pytest.approx(value(loss, y, x), rel=1e-3)
        assert loss(tf.constant(y), tf.constant(x.astype("float16"))).dtype == tf.float32


@pytest.mark.parametrize("loss", [L.SoftIoULoss(per_image=True, smooth=3.0), L.WeightedBCE(pos_weight=7.0),
                                  L.MixedLoss([L.SoftIoULoss(), {"name": "weighted_bce"}], [1.0, 0.25])])
def test_losses_round_trip_through_keras_serialisation(loss):
    y, x = batch()
    config = keras.saving.serialize_keras_object(loss)
    assert config["registered_name"].startswith("mammo_seg>")
    again = keras.saving.deserialize_keras_object(config)
    assert type(again) is type(loss) and again.get_config() == loss.get_config()
    assert value(again, y, x) == pytest.approx(value(loss, y, x), rel=1e-7)


def test_loss_specs_are_checked_by_key():
    with pytest.raises(MammoError, match="loss.smoth"):
        L.get_loss({"name": "iou", "smoth": 1})
    with pytest.raises(MammoError, match="unknown loss 'dice_x'"):
        L.get_loss("dice_x")
    with pytest.raises(MammoError, match="loss.bogus"):
        L.resolve_loss({"name": "mixed", "losses": [{"name": "iou", "bogus": 1}]})


def test_pos_weight_decays_per_epoch_towards_its_floor():
    from mammo_seg.training.callbacks import PosWeightDecay

    loss = L.MixedLoss([L.SoftIoULoss(), L.WeightedBCE(pos_weight=15.0)], [0.5, 0.5])
    callback = PosWeightDecay(loss, decay=0.5, minimum=2.0)
    bce = loss.losses[1]
    seen = []
    for epoch in range(5):
        callback.on_epoch_begin(epoch)
        logs = {}
        callback.on_epoch_end(epoch, logs)
        seen.append(logs["pos_weight"])
    assert seen == [15.0, 7.5, 3.75, 2.0, 2.0]
    y = np.array([1, 0], "float32").reshape(1, 1, 2, 1)
    assert value(bce, y, np.zeros_like(y)) == pytest.approx((2.0 + 1.0) * np.log(2) / 2, rel=1e-6)


def test_original_learning_rate_schedule():
    from mammo_seg.config import ExperimentConfig
    from mammo_seg.training.run import learning_rate

    config = ExperimentConfig()
    config.train.lr = 1e-3
    schedule = learning_rate(config, steps_per_epoch=10)
    lrs = [float(schedule(step)) for step in (0, 149, 150, 299, 300)]  # 15 epochs of 10 steps
    assert lrs == pytest.approx([1e-3, 1e-3, 0.85e-3, 0.85e-3, 0.85 ** 2 * 1e-3])
