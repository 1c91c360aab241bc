"""Exact strip inference (mammo_seg.inference.strips): strips equal one pass; the reach bounds the network's."""

import keras
import numpy as np
import pytest

from mammo_seg.inference import strips
from mammo_seg.inference.sliding_window import Predictor, activation_bytes, predict_probabilities
from mammo_seg.models.fcn import MammoFCN


@pytest.fixture(scope="module")
def predictors():
    keras.utils.set_random_seed(7)
    models = {width: MammoFCN(width=width) for width in (0.125, 0.25)}
    for model in models.values():  # spread the untrained logits, so that probabilities are not all near 0.5
        kernel = model.get_layer("logits").kernel
        kernel.assign(kernel * 30)
    return {width: Predictor(model) for width, model in models.items()}


@pytest.mark.parametrize("width, shape, budget_rows", [
    (0.125, (999, 45), 400),  # odd height; encoder strips of 192 + 2 x 96 halo rows, decoder strips too
    (0.125, (333, 61), 0),  # the smallest strips: 32 rows (the stride) of encoder, one row of 1/32 after
    (0.25, (257, 37), 0),  # 257 = 8 x 32 + 1: the last strip is one row, padded as the one pass pads it
    (0.125, (70, 3), 0),  # three columns; the halo reaches past both ends
])
def test_strips_equal_one_pass(predictors, monkeypatch, width, shape, budget_rows):
    predictor = predictors[width]
    image = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
    one = predict_probabilities(predictor, image)
    calls = []
    run = strips.run_in_strips

    def counting(fn, stage, x, max_rows):
        return run(lambda t: calls.append(t.shape[1]) or fn(t), stage, x, max_rows)

    monkeypatch.setattr(strips, "run_in_strips", counting)
    budget = activation_bytes(predictor.model, budget_rows * shape[1]) if budget_rows else 1
    stripped = predict_probabilities(predictor, image, memory_bytes=budget)
    assert len(calls) > 3  # really in strips, not one call per stage
    assert stripped.shape == one.shape and stripped.dtype == np.float32
    assert 0.05 < one.std()  # not saturated: the comparison means something
    np.testing.assert_allclose(stripped, one, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(stripped >= 0.5, one >= 0.5)


def test_plan_of_the_fcn(predictors):
    encoder, bottleneck, decoder = [stage for stage, _ in predictors[0.125].stages()]
    assert (encoder.jump_in, encoder.jump_out, encoder.align) == (1, 32, 32)
    assert encoder.halo % 32 == 0 and 64 < encoder.halo <= 128
    assert (bottleneck.jump_in, bottleneck.jump_out, bottleneck.finest) == (32, 32, 32)
    assert (decoder.jump_in, decoder.jump_out, decoder.align) == (32, 1, 1) and decoder.halo <= 4
    # the same plan at any width: the geometry has no filter counts in it
    assert [s.halo for s, _ in predictors[0.25].stages()] == [encoder.halo, bottleneck.halo, decoder.halo]


def test_reach_bounds_the_impulse_response(predictors):
    """A change on one input row moves only output rows within the analytic reach, for every stage."""
    for stage, fn in predictors[0.125].stages():
        rng = np.random.default_rng(1)
        rows = 1280 // stage.jump_in  # taller than twice the reach, at every stage
        x = rng.standard_normal((1, rows, 3, stage.model.inputs[0].shape[-1])).astype(np.float32)
        base = fn(x).numpy()
        reach = stage.reach
        r0 = rows // 2
        x[0, r0] += 10.0
        moved = np.nonzero(np.abs(fn(x).numpy() - base).max(axis=(0, 2, 3)))[0]
        assert moved.size
        # output row j (input pixels [J_out j, J_out (j+1)) depends on rows within ``reach`` of them only
        assert moved.max() * stage.jump_out - reach <= (r0 + 1) * stage.jump_in - 1
        assert (moved.min() + 1) * stage.jump_out - 1 + reach >= r0 * stage.jump_in


def test_a_layer_without_a_rule_falls_back_to_windows():
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(1, 3, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(x))
    with pytest.raises(ValueError, match="no receptive-field rule"):
        strips.stage_plan(model)
    predictor = Predictor(model)
    image = np.random.default_rng(0).random((40, 30), dtype=np.float32)
    out = predict_probabilities(predictor, image, memory_bytes=activation_bytes(model, image.size) - 1)
    assert predictor.stages() is None and out.shape == image.shape
