"""``mammo export --format onnx``: onnxruntime gives the ``.keras`` model's probabilities."""

import os

import keras
import numpy as np
import pytest

from mammo_seg.cli import main
from mammo_seg.data.resolution import Resolution
from mammo_seg.models.fcn import MammoFCN


def test_onnx_export_gives_the_keras_probabilities_on_a_non_square_batch(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    keras.utils.set_random_seed(4)
    model = MammoFCN(width=0.125, resolution=Resolution(scale=0.25).to_dict())
    path = str(tmp_path / "model.keras")
    model.save(path)
    out = str(tmp_path / "onnx")
    assert main(["export", "-m", path, "-o", out, "--format", "onnx"]) == 0
    assert "model.onnx" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["model.onnx", "resolution.json"]
    session = ort.InferenceSession(os.path.join(out, "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["scans"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]  # named, not Identity:0
    # 2 scans of 77 x 51: neither a multiple of 32 nor square (the model pads and crops inside)
    scans = np.random.default_rng(5).random((2, 77, 51, 1), dtype=np.float32)
    (probabilities,) = session.run(None, {"scans": scans})
    expected = keras.ops.convert_to_numpy(keras.ops.sigmoid(keras.models.load_model(path)(scans, training=False)))
    assert probabilities.shape == (2, 77, 51, 1)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert np.ptp(expected) > 1e-3  # not a constant map that any export would match


def test_unknown_export_format_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", "-m", "m.keras", "-o", str(tmp_path), "--format", "tflite"])
    assert "--format" in capsys.readouterr().err
