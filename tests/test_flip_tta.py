"""Flip test-time augmentation: exact values on a hand-made network that looks one pixel to the left."""

import json
import math

import numpy as np
import pytest


def left_neighbour_predictor():
    """A 1x3 convolution with weights [1, 0, 0]: logit(r, c) = image(r, c - 1) (0 beyond the edge)."""
    import keras

    from mammo_seg.inference.sliding_window import Predictor

    inputs = keras.Input((None, None, 1))
    conv = keras.layers.Conv2D(1, (1, 3), padding="same", use_bias=False)
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.array([1.0, 0.0, 0.0], np.float32).reshape(1, 3, 1, 1)])
    return Predictor(model)


def test_flip_averages_the_scan_and_its_mirror_mapped_back():
    from mammo_seg.inference.sliding_window import predict_probabilities

    predictor = left_neighbour_predictor()
    image = np.zeros((2, 4), np.float32)
    image[:, 1] = 1.0
    s0, s1 = 0.5, 1 / (1 + math.exp(-1))
    plain = predict_probabilities(predictor, image)
    np.testing.assert_allclose(plain, [[s0, s0, s1, s0]] * 2, atol=1e-6)  # the bright column seen one to the right
    # mirror [0, 0, 1, 0] → logits [0, 0, 0, 1] → mirrored back [1, 0, 0, 0]: the bright column seen one to the left
    flipped = predict_probabilities(predictor, image, flip=True)
    np.testing.assert_allclose(flipped, [[(s0 + s1) / 2, s0, (s0 + s1) / 2, s0]] * 2, atol=1e-6)


def test_flip_is_read_from_the_operating_point_and_overridden_by_the_user(tmp_path):
    from mammo_seg.inference.operating_point import OperatingPoint, load_operating_point
    from mammo_seg.inference.predict import PredictOptions, resolve_options

    model = tmp_path / "best.keras"
    model.write_bytes(b"")
    record = tmp_path / "operating_point.json"
    record.write_text(json.dumps({"model": "best.keras", "threshold": 0.4, "min_area_mm2": 20}))
    assert load_operating_point(str(model))[0] == OperatingPoint(0.4, 20.0, False)  # older records: no flip
    record.write_text(json.dumps({"model": "best.keras", "threshold": 0.4, "min_area_mm2": 20, "flip": True}))
    assert resolve_options(PredictOptions(), str(model))[0].flip is True
    assert resolve_options(PredictOptions(flip=False), str(model))[0].flip is False


@pytest.mark.parametrize("text, flips", [("", [False]), ("  flips: [false, true]\n", [False, True])])
def test_operating_point_section_knobs(tmp_path, text, flips):
    from mammo_seg.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("data:\n  dir: x\noperating_point:\n  enabled: true\n" + text)
    section = load_config(str(path)).operating_point
    assert section.flips == flips and section.min_areas_mm2[-1] == 160.0
