"""Losses: exact values on hand-computed cases, stability at ±30 logits, gradients, serialisation."""

import os

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


def test_topk_bce_averages_each_images_hardest_pixels_ties_in_and_ignore_out():
    from mammo_seg.data.features import IGNORE

    def softplus(z):
        return float(np.log1p(np.exp(z)))

    y = np.array([[1, 0, 0, 0], [IGNORE, 0, 1, 0]], "float32").reshape(2, 2, 2, 1)
    x = np.array([[0, 2, -2, 0], [9, 1, 1, -1]], "float32").reshape(2, 2, 2, 1)
    # image 1, fraction 0.5 of 4 pixels: k = 2; its cross-entropies ln 2, softplus(2), softplus(-2), ln 2: the
    # 2nd largest is ln 2, held by two pixels, both in. Image 2: 3 pixels outside the ignore region, k = ⌈1.5⌉ = 2;
    # softplus(1), softplus(-1), softplus(-1): the two tied at the 2nd, both in
    first = [softplus(2), np.log(2), np.log(2)]
    second = [softplus(1), softplus(-1), softplus(-1)]
    assert value(L.TopKBCE(fraction=0.5), y, x) == pytest.approx((sum(first) + sum(second)) / 6, rel=1e-6)
    # a fraction of 1 is the plain cross-entropy; a small one keeps each image's worst pixel only
    rng = np.random.default_rng(0)
    y, x = (rng.random((3, 8, 8, 1)) < 0.2).astype("float32"), rng.normal(0, 2, (3, 8, 8, 1)).astype("float32")
    assert value(L.TopKBCE(fraction=1.0), y, x) == pytest.approx(value(L.WeightedBCE(pos_weight=1), y, x), rel=1e-6)
    worst = np.max(y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x), axis=(1, 2, 3))
    assert value(L.TopKBCE(fraction=0.01), y, x) == pytest.approx(worst.mean(), rel=1e-5)
    gradient = _gradient(L.TopKBCE(fraction=0.01), y, x)
    assert np.count_nonzero(gradient) == 3  # the worst pixel of each image, no other
    assert L.get_loss({"name": "topk_bce", "fraction": 0.1}).get_config()["fraction"] == 0.1
    with pytest.raises(MammoError, match="fraction"):
        L.get_loss({"name": "topk_bce", "fraction": 0})


def test_mixed_loss_is_the_weighted_sum():
    y, x = batch()
    mixed = L.get_loss({"name": "mixed", "coefs": [0.5, 0.5],
                        "losses": [{"name": "iou", "smooth": 0}, {"name": "weighted_bce", "pos_weight": 2}]})
    expected = 0.5 * value(L.SoftIoULoss(smooth=0), y, x) + 0.5 * value(L.WeightedBCE(2.0), y, x)
    assert value(mixed, y, x) == pytest.approx(expected, rel=1e-6)
    assert mixed.num_statistics == 3 + 2  # (TP, FP, FN) + (Σ pixel loss, pixels)


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


def _epoch_weights(loss, epochs):
    """The ``pos_weight`` that the loss's own callbacks log for each epoch."""
    callbacks, seen = L.loss_callbacks(loss), []
    for epoch in range(epochs):
        logs = {}
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        seen.append(logs["pos_weight"])
    return seen


def test_pos_weight_decays_per_epoch_towards_its_floor():
    loss = L.MixedLoss([L.SoftIoULoss(), {"name": "weighted_bce", "pos_weight": 15, "pos_weight_decay": 0.5,
                                          "pos_weight_min": 2}], [0.5, 0.5])
    assert _epoch_weights(loss, 5) == [15.0, 7.5, 3.75, 2.0, 2.0]
    y = np.array([1, 0], "float32").reshape(1, 1, 2, 1)  # the last epoch's weight is the one the loss uses
    assert value(loss.losses[1], y, np.zeros_like(y)) == pytest.approx((2.0 + 1.0) * np.log(2) / 2, rel=1e-6)


def test_the_recipe_decay_moved_into_the_loss_gives_the_same_weights_as_before():
    """experiments/loss_study/cpu.yaml's weighted CE: 15, × 0.7 per epoch, floor 1 (formerly ``train:`` keys)."""
    from mammo_seg.study import load_study

    study = load_study(os.path.join(os.path.dirname(__file__), "..", "experiments", "loss_study", "cpu.yaml"))
    config = next(c for name, _, c in study.runs("cpu.yaml") if name == "weighted_ce")
    weights = _epoch_weights(L.get_loss(config.loss), 10)
    # the former train.pos_weight_decay callback: max(minimum, start × decay**epoch) in the float32 variable, exactly
    assert weights == [float(np.float32(max(1.0, 15.0 * 0.7 ** e))) for e in range(10)]
    assert weights == pytest.approx([15, 10.5, 7.35, 5.145, 3.6015, 2.52105, 1.764735, 1.2353145, 1, 1])


def test_a_constant_pos_weight_needs_no_callback_and_the_decay_survives_serialisation():
    assert L.loss_callbacks(L.WeightedBCE(pos_weight=15)) == [] and L.loss_callbacks(L.SoftIoULoss()) == []
    loss = L.WeightedBCE(pos_weight=9, pos_weight_decay=0.8, pos_weight_min=3)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert (again.initial_pos_weight, again.pos_weight_decay, again.pos_weight_min) == (9.0, 0.8, 3.0)
    assert [again.pos_weight_at(e) for e in range(4)] == pytest.approx([9, 7.2, 5.76, 4.608])
    with pytest.raises(MammoError, match="pos_weight_decay must be positive"):
        L.get_loss({"name": "weighted_bce", "pos_weight_decay": 0})


def test_the_old_train_key_says_where_the_decay_moved(tmp_path):
    from mammo_seg.config import load_config

    path = tmp_path / "old.yaml"
    path.write_text("data: {dir: x}\nloss: {name: weighted_bce, pos_weight: 15}\ntrain: {pos_weight_decay: 0.7}\n")
    with pytest.raises(MammoError) as info:
        load_config(str(path))
    assert str(info.value) == (f"{path}: train.pos_weight_decay: moved to loss.pos_weight_decay, a parameter of "
                               f"the weighted_bce loss")


def test_the_loss_schedule_runs_first_in_a_training_stage(tmp_path):
    from mammo_seg.config import ExperimentConfig
    from mammo_seg.run_dir import RunDir
    from mammo_seg.training.run import build_callbacks

    decaying = L.WeightedBCE(pos_weight=4, pos_weight_decay=0.5)
    callbacks = build_callbacks(ExperimentConfig(), RunDir(str(tmp_path)), decaying, keras.callbacks.Callback(),
                                keras.callbacks.Callback(), chief=False, initial_epoch=0)
    assert isinstance(callbacks[0], L.PosWeightDecay) and callbacks[0].terms == [decaying]
    plain = build_callbacks(ExperimentConfig(), RunDir(str(tmp_path)), L.WeightedBCE(pos_weight=4),
                            keras.callbacks.Callback(), keras.callbacks.Callback(), chief=False, initial_epoch=0)
    assert not any(isinstance(c, L.PosWeightDecay) for c in plain)


def test_original_learning_rate_schedule():
    from mammo_seg.config import ExperimentConfig
    from mammo_seg.training.run import learning_rate

    config = ExperimentConfig()
    config.train.lr = 1e-3
    schedule = learning_rate(config, steps_per_epoch=10)
    lrs = [float(schedule(step)) for step in (0, 149, 150, 299, 300)]  # 15 epochs of 10 steps
    assert lrs == pytest.approx([1e-3, 1e-3, 0.85e-3, 0.85e-3, 0.85 ** 2 * 1e-3])


# --------------------------------------------------------------------- the literature's losses
def counts_case():
    """One 1x2x3 image: lesion at 2 pixels; p ≈ 1 at one of them and at 2 background pixels.
    TP = 1, FP = 2, FN = 1 (and one true negative)."""
    y = np.array([1, 1, 0, 0, 0, 0], "float32").reshape(1, 2, 3, 1)
    x = np.array([BIG, -BIG, BIG, BIG, -BIG, -BIG], "float32").reshape(1, 2, 3, 1)
    return y, x


def test_region_losses_exact():
    y, x = counts_case()  # TP 1, FP 2, FN 1
    assert value(L.DiceLoss(smooth=0), y, x) == pytest.approx(1 - 2 / 5, abs=1e-6)
    assert value(L.TverskyLoss(alpha=0.5, beta=0.5, smooth=0), y, x) == pytest.approx(1 - 2 / 5, abs=1e-6)
    assert value(L.TverskyLoss(alpha=1, beta=0, smooth=0), y, x) == pytest.approx(1 - 1 / 3, abs=1e-6)  # 1 - precision
    assert value(L.TverskyLoss(alpha=0, beta=1, smooth=0), y, x) == pytest.approx(1 - 1 / 2, abs=1e-6)  # 1 - recall
    ti = 1 / (1 + 0.3 * 2 + 0.7 * 1)
    assert value(L.FocalTverskyLoss(smooth=0), y, x) == pytest.approx((1 - ti) ** 0.75, abs=1e-6)
    assert value(L.FocalTverskyLoss(gamma=1, smooth=0), y, x) == pytest.approx(1 - ti, abs=1e-6)
    assert value(L.SoftIoULoss(smooth=0), y, x) == pytest.approx(1 - 1 / 4, abs=1e-6)


def test_dice_per_image_weighs_a_missed_small_lesion_as_much_as_its_image():
    """Image 0: a 1-pixel lesion, missed; image 1: a 4-pixel lesion, found (the recipe's smoothing s = 1)."""
    y = np.zeros((2, 2, 2, 1), "float32")
    y[0, 0, 0] = 1
    y[1] = 1
    x = np.where(np.arange(2).reshape(2, 1, 1, 1) == 1, BIG, -BIG).astype("float32") * np.ones_like(y)
    # per image: image 0 gives 1 - (0 + 1)/(0 + 0 + 1 + 1) = 1/2, image 1 gives 1 - (8 + 1)/(8 + 1) = 0
    assert value(L.DiceLoss(per_image=True), y, x) == pytest.approx(0.25, abs=1e-6)
    # pooled over the batch: TP 4, FN 1 -> 1 - 9/10: the large lesion found dilutes the small one missed
    assert value(L.DiceLoss(), y, x) == pytest.approx(0.1, abs=1e-6)


def test_lesion_images_only_leaves_lesion_free_images_out_of_the_per_image_mean(tmp_path):
    """The two images above, then a lesion-free one with one false-positive pixel (s = 1)."""
    y = np.zeros((3, 2, 2, 1), "float32")
    y[0, 0, 0] = 1
    y[1] = 1
    x = np.full_like(y, -BIG)
    x[1] = BIG
    x[2, 1, 1] = BIG
    # lesion-free image: 1 - (0 + 1)/(0 + 1 + 0 + 1) = 1/2, as much as the missed lesion of image 0
    assert value(L.DiceLoss(per_image=True), y, x) == pytest.approx((1 / 2 + 0 + 1 / 2) / 3, abs=1e-6)
    only = L.DiceLoss(per_image=True, lesion_images_only=True)
    assert value(only, y, x) == pytest.approx((1 / 2 + 0) / 2, abs=1e-6)
    assert value(only, y[2:], x[2:]) == 0.0  # no lesion in the batch: nothing to average
    assert value(L.SoftIoULoss(per_image=True, smooth=1, lesion_images_only=True), y, x) == pytest.approx(
        (1 / 2 + 0) / 2, abs=1e-6)  # IoU: image 0 gives 1 - 1/(0 + 0 + 1 + 1) as well
    from mammo_seg.config import load_config

    path = tmp_path / "pooled.yaml"
    path.write_text("data: {dir: x}\nloss: {name: dice, lesion_images_only: true}\n")
    with pytest.raises(MammoError, match="lesion_images_only needs per_image: true") as info:
        load_config(str(path))
    assert str(info.value).startswith(f"{path}: loss: ")  # one line that names the file


def test_our_tversky_weights_false_positives_with_alpha_unlike_keras():
    y, x = counts_case()
    p = 1 / (1 + np.exp(-x))
    ours = value(L.TverskyLoss(alpha=1.0, beta=0.0, smooth=0, from_logits=False), y, p)
    theirs = float(keras.losses.Tversky(alpha=1.0, beta=0.0)(y, p))
    assert ours == pytest.approx(1 - 1 / 3, abs=1e-6)  # alpha on FP: 1 - TP/(TP + FP)
    assert theirs == pytest.approx(1 - 1 / 2, abs=1e-5)  # Keras puts alpha on FN: 1 - TP/(TP + FN)


def test_combo_and_adaptive_log_exact():
    y, x = counts_case()
    bce = (BIG + BIG + BIG) / 6  # one missed lesion pixel and two false positives at |logit| 30
    dice = 2 * 1 / (2 + 2 + 1)
    combo = L.ComboLoss(alpha=0.5, beta=0.5, smooth=0)
    assert value(combo, y, x) == pytest.approx(0.5 * 0.5 * bce - 0.5 * dice, rel=1e-5)
    perfect = np.where(y > 0, BIG, -BIG).astype("float32")
    assert value(L.ComboLoss(smooth=0), y, perfect) == pytest.approx(-0.5, abs=1e-6)
    loss = L.AdaptiveLogLoss(omega=10, epsilon=0.5, theta=0.1)
    c = 0.1 - 10 * np.log(1 + 0.1 / 0.5)
    f = lambda v: float(loss.from_counts(*[tf.constant(t) for t in v]))  # noqa: E731
    # Dice loss x from counts (TP, FP, FN) with smooth 1: choose counts that give x = 0.05 and x = 0.5
    assert f((18.0, 1.0, 1.0)) == pytest.approx(10 * np.log(1 + (1 - 37 / 39) / 0.5), rel=1e-5)
    assert f((1.0, 1.0, 1.0)) == pytest.approx((1 - 3 / 5) - c, rel=1e-5)
    below, above = 0.1 - 1e-6, 0.1
    assert 10 * np.log(1 + below / 0.5) == pytest.approx(above - c, rel=1e-4)  # continuous at theta


def test_focal_exact():
    y = np.array([1, 0], "float32").reshape(1, 1, 2, 1)
    x = np.zeros_like(y)  # p = 0.5 at both
    pos, neg = 0.25 * 0.5 ** 2 * np.log(2), 0.75 * 0.5 ** 2 * np.log(2)
    assert value(L.BinaryFocal(), y, x) == pytest.approx((pos + neg) / 2, rel=1e-6)
    assert value(L.BinaryFocal(alpha=0.5, gamma=0.0), y, x) == pytest.approx(0.5 * np.log(2), rel=1e-6)
    assert np.isfinite(value(L.BinaryFocal(), *counts_case()))


def test_distance_gaussian_and_distance_aware_focal_exact():
    mask = np.zeros((1, 1, 6, 1), "float32")
    mask[0, 0, 0] = 1
    near = L.distance_gaussian(tf.constant(mask), sigma=1.0).numpy().ravel()
    # d = 0..5 px; 3 sigma = 3 px: beyond it exactly 0
    np.testing.assert_allclose(near, [1, np.exp(-0.5), np.exp(-2), np.exp(-4.5), 0, 0], atol=1e-6)
    square = np.zeros((1, 7, 7, 1), "float32")
    square[0, 3, 3] = 1
    grid = L.distance_gaussian(tf.constant(square), sigma=2.0).numpy()[0, :, :, 0]
    assert grid[4, 4] == pytest.approx(np.exp(-2 / 8)) and grid[5, 6] == pytest.approx(np.exp(-13 / 8))
    x = np.zeros_like(mask)  # p = 0.5 everywhere
    ln2 = np.log(2)
    expected = 0.25 * ln2 + sum((1 - v) ** 4 * 0.25 * ln2 for v in near[1:])  # one lesion pixel: N_pos = 1
    assert value(L.DistanceAwareFocal(sigma=1.0), mask, x) == pytest.approx(expected, rel=1e-5)
    assert value(L.DistanceAwareFocal(), np.zeros_like(mask), x) == pytest.approx(6 * 0.25 * ln2, rel=1e-5)


def test_lovasz_hinge_exact_and_jaccard_at_indicator_errors():
    # hand case: errors [-1, 2, 1.5] sorted → g = [0.5, 1/6, 1/3]: 2 * 0.5 + 1.5 / 6
    y = np.array([1, 1, 0], "float32").reshape(1, 1, 3, 1)
    x = np.array([2, -1, 0.5], "float32").reshape(1, 1, 3, 1)
    assert value(L.LovaszHinge(), y, x) == pytest.approx(1.25, abs=1e-6)
    # errors exactly 0/1: the loss is the Jaccard loss of the mispredicted set M = {0, 2}: |M| / |y ∪ M| = 2/3
    y = np.array([1, 1, 0, 0], "float32").reshape(1, 1, 4, 1)
    x = np.array([0, 1, 0, -1], "float32").reshape(1, 1, 4, 1)
    assert value(L.LovaszHinge(), y, x) == pytest.approx(2 / 3, abs=1e-6)
    # per image vs the whole batch sorted at once
    y2 = np.concatenate([y, np.zeros_like(y)])
    x2 = np.concatenate([x, np.full_like(x, -1.0)])  # second image: all right
    assert value(L.LovaszHinge(per_image=True), y2, x2) == pytest.approx((2 / 3 + 0) / 2, abs=1e-6)
    assert value(L.LovaszHinge(per_image=False), y2, x2) == pytest.approx(2 / 3, abs=1e-6)  # same set, same union
    assert np.isfinite(_gradient(L.LovaszHinge(per_image=False), *counts_case())).all()


def test_lovasz_softmax_binary_multiclass_and_ignore():
    y = np.array([1, 1, 0, 0], "float32").reshape(1, 1, 4, 1)
    p = np.array([1, 0, 1, 0], "float32").reshape(1, 1, 4, 1)  # hard predictions: Jaccard loss of each class
    assert value(L.LovaszSoftmax(from_logits=False), y, p) == pytest.approx(2 / 3, abs=1e-6)
    only_fg = L.LovaszSoftmax(classes=[1], from_logits=False)
    assert value(only_fg, y, p) == pytest.approx(2 / 3, abs=1e-6)
    ignored = np.array([1, 1, 255, 0], "float32").reshape(1, 1, 4, 1)  # the false positive is not counted
    # class 1: M = {1}, |fg ∪ M| = 2 → 1/2; class 0: fg = {3}, M = {1} → 1/2
    assert value(L.LovaszSoftmax(from_logits=False, ignore=255), ignored, p) == pytest.approx(0.5, abs=1e-6)
    labels = np.array([0, 1, 2, 2], "float32").reshape(1, 1, 4, 1)
    onehot = np.eye(3, dtype="float32")[[0, 1, 1, 2]].reshape(1, 1, 4, 3)  # pixel 2 wrong: class 1 instead of 2
    # class 0: 0; class 1: M = {2}, fg ∪ M = {1, 2} → 1/2; class 2: M = {2}, fg ∪ M = {2, 3} → 1/2
    assert value(L.LovaszSoftmax(from_logits=False), labels, onehot) == pytest.approx(1 / 3, abs=1e-6)
    empty = np.zeros_like(y)  # "present": only the background class counts
    assert value(L.LovaszSoftmax(from_logits=False), empty, np.zeros_like(p)) == pytest.approx(0.0, abs=1e-6)
    assert value(L.LovaszSoftmax(from_logits=False, classes="all"), empty, np.zeros_like(p)) == 0.0


def test_paddleseg_recipes_and_two_phase_curriculum(tmp_path):
    from mammo_seg.config import load_config, stage_configs

    y, x = counts_case()
    ce = L.WeightedBCE(pos_weight=1.0)
    recipe = L.get_loss({"name": "mixed", "coefs": [0.8, 0.2],
                         "losses": [{"name": "weighted_bce", "pos_weight": 1}, {"name": "lovasz_softmax"}]})
    assert value(recipe, y, x) == pytest.approx(0.8 * value(ce, y, x) + 0.2 * value(L.LovaszSoftmax(), y, x),
                                                rel=1e-6)
    hinge = L.get_loss({"name": "mixed", "coefs": [1, 0.02],
                        "losses": [{"name": "weighted_bce", "pos_weight": 1}, {"name": "lovasz_hinge"}]})
    assert value(hinge, y, x) == pytest.approx(value(ce, y, x) + 0.02 * value(L.LovaszHinge(), y, x), rel=1e-6)
    config = tmp_path / "two_phase.yaml"
    config.write_text("data: {dir: x}\nloss: {name: weighted_bce, pos_weight: 1}\nstages:\n"
                      "  - {name: ce, train: {epochs: 2}}\n  - {name: lovasz, loss: {name: lovasz_hinge}}\n")
    stages = stage_configs(load_config(str(config)))
    assert [c.loss["name"] for _, c in stages] == ["weighted_bce", "lovasz_hinge"]


@pytest.mark.parametrize("spec", [
    {"name": "lovasz_hinge", "per_image": False}, {"name": "lovasz_softmax", "classes": [1], "ignore": 255},
    {"name": "focal", "alpha": 0.3}, {"name": "distance_focal", "sigma": 2.5}, {"name": "dice", "smooth": 2},
    {"name": "tversky", "alpha": 0.2, "beta": 0.8}, {"name": "focal_tversky", "gamma": 2},
    {"name": "combo", "alpha": 0.7}, {"name": "adaptive_log", "base": "iou"}])
def test_literature_losses_serialise_and_are_stable(spec):
    loss = L.get_loss(spec)
    y, x = counts_case()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert again.get_config() == loss.get_config()
    assert value(again, y, x) == pytest.approx(value(loss, y, x), rel=1e-7)
    assert np.isfinite(value(loss, y, x)) and np.isfinite(_gradient(loss, y, x)).all()
    assert value(loss, y, x.astype("float16")) == pytest.approx(value(loss, y, x), rel=1e-3, abs=1e-4)
    assert np.isfinite(value(loss, np.zeros_like(y), x))  # an all-background mask


@pytest.mark.parametrize("spec, confident, uncertain", [
    # a 2x2 all-background mask; logits -30 (right, p ≈ 0) or 0 (p = 0.5, Σp = 2)
    ({"name": "iou"}, 0.0, 2 / 102),  # Σp / (Σp + 100)
    ({"name": "dice"}, 0.0, 1 - 1 / 3),  # 1 - (0 + 1) / (Σp + 1)
    ({"name": "tversky"}, 0.0, 1 - 1 / (0.3 * 2 + 1)),
    ({"name": "focal_tversky", "gamma": 1}, 0.0, 1 - 1 / (0.3 * 2 + 1)),
    ({"name": "adaptive_log"}, 0.0, (1 - 1 / 3) - (0.1 - 10 * np.log(1.2))),  # Dice loss 2/3 ≥ θ: linear branch
    ({"name": "combo"}, -0.5, 0.5 * 0.5 * np.log(2) - 0.5 / 3),
    ({"name": "weighted_bce"}, 0.0, np.log(2)),
    ({"name": "focal"}, 0.0, 0.75 * 0.25 * np.log(2)),
    ({"name": "distance_focal"}, 0.0, 4 * 0.25 * np.log(2)),  # no lesion: ŷ = 0, N_pos floored at 1
    ({"name": "lovasz_hinge"}, 0.0, 1.0),  # errors 1 at every pixel, gradient [1, 0, 0, 0]
    ({"name": "lovasz_softmax"}, 0.0, 0.5),  # only the background class is present: mean |1 - 0.5|
])
def test_every_loss_on_an_all_background_mask(spec, confident, uncertain):
    y = np.zeros((1, 2, 2, 1), "float32")
    assert value(L.get_loss(spec), y, np.full_like(y, -BIG)) == pytest.approx(confident, abs=1e-6)
    assert value(L.get_loss(spec), y, np.zeros_like(y)) == pytest.approx(uncertain, rel=1e-5)


# ------------------------------------------------------------------ gradients at the extremes
def _registered_losses():
    """Every loss class of the registry (``L.LOSSES``), with per_image both ways where it has it.
    MixedLoss mixes one default instance of each other class, so a new loss is covered twice."""
    import inspect

    classes = sorted(set(L.LOSSES.values()), key=lambda c: c.__name__)
    singles = [c for c in classes if c is not L.MixedLoss]
    cases = []
    for cls in singles:
        has_per_image = "per_image" in inspect.signature(cls.__init__).parameters
        for per_image in ((False, True) if has_per_image else (None,)):
            kwargs = {} if per_image is None else {"per_image": per_image}
            cases.append(pytest.param(cls, kwargs, id=f"{cls.__name__}-{kwargs}"))
    cases.append(pytest.param(L.MixedLoss, {"losses": [c() for c in singles]}, id="MixedLoss-all"))
    return cases


def _extreme_cases():
    """(mask, logits) pairs: empty, full and half masks; logits +30 and −30 everywhere, perfect and
    confidently wrong at ±30."""
    half = np.zeros((2, 4, 4, 1), "float32")
    half[0, :2] = 1
    half[1, :, :3] = 1
    for name, y in (("empty", np.zeros_like(half)), ("full", np.ones_like(half)), ("half", half)):
        perfect = np.where(y > 0, BIG, -BIG).astype("float32")
        for kind, x in (("+30", np.full_like(y, BIG)), ("-30", np.full_like(y, -BIG)), ("perfect", perfect),
                        ("wrong", -perfect)):
            yield f"{name} mask, {kind} logits", y, x


@pytest.mark.parametrize("cls, kwargs", _registered_losses())
def test_every_registered_loss_has_finite_gradients_at_the_extremes(cls, kwargs):
    loss = cls(**kwargs)
    for case, y, x in _extreme_cases():
        assert np.isfinite(value(loss, y, x)), case
        assert np.isfinite(_gradient(loss, y, x)).all(), case


def test_focal_tversky_is_floored_not_singular_at_a_perfect_prediction():
    y = np.zeros((1, 2, 2, 1), "float32")
    y[0, 0] = 1
    perfect = np.where(y > 0, BIG, -BIG).astype("float32")
    for per_image in (False, True):
        loss = L.FocalTverskyLoss(per_image=per_image)  # γ = 4/3: TI rounds to 1, loss ε^0.75
        assert value(loss, y, perfect) == pytest.approx(1e-7 ** 0.75, rel=1e-5)
        assert not _gradient(loss, y, perfect).any()  # below the floor: constant, zero gradient
    # from the counts: TI = 1 exactly gives the floor; TI = 0.5 is untouched, 0.5^0.75
    assert float(L.FocalTverskyLoss().from_counts(tf.constant(1.0), tf.constant(0.0), tf.constant(0.0))) \
        == pytest.approx(1e-7 ** 0.75, rel=1e-5)
    tp, fp = tf.constant(0.0), tf.constant(1 / 0.3)  # smooth 1: TI = 1 / (0 + 0.3·(1/0.3) + 1) = 0.5
    assert float(L.FocalTverskyLoss().from_counts(tp, fp, tf.constant(0.0))) == pytest.approx(0.5 ** 0.75, rel=1e-6)


def _as_saved_before_the_package(config):
    """``config`` as a file saved when every loss lived in the single module ``mammo_seg.losses``."""
    if isinstance(config, dict):
        return {k: ("mammo_seg.losses" if k == "module" and str(v).startswith("mammo_seg.losses")
                    else _as_saved_before_the_package(v)) for k, v in config.items()}
    if isinstance(config, list):
        return [_as_saved_before_the_package(v) for v in config]
    return config


def test_losses_saved_by_the_single_module_load_from_the_package():
    loss = L.MixedLoss([L.WeightedBCE(pos_weight=3.0), L.FocalTverskyLoss(gamma=2.0), L.LovaszHinge(),
                        L.ComboLoss(alpha=0.7)], coefs=[0.5, 0.2, 0.2, 0.1])
    saved = _as_saved_before_the_package(keras.saving.serialize_keras_object(loss))
    assert saved["module"] == "mammo_seg.losses" and saved["registered_name"] == "mammo_seg>MixedLoss"
    again = keras.saving.deserialize_keras_object(saved)
    assert type(again) is L.MixedLoss and again.get_config() == loss.get_config()
    assert [type(child) for child in again.losses] == [L.WeightedBCE, L.FocalTverskyLoss, L.LovaszHinge,
                                                       L.ComboLoss]
