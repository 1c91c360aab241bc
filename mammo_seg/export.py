"""``mammo export``: a TensorFlow SavedModel (default) or an ONNX model, for serving.

``--format savedmodel``: signatures built with ``keras.export.ExportArchive`` (what ``model.export`` uses):

* ``serving_default`` / ``serve``: ``scan`` float32 [H, W] in [0, 1] (a scan as ``mammo_seg.io``
  returns it, any size) → lesion probabilities float32 [H, W];
* ``serve_batch``: [N, H, W, 1] → [N, H, W, 1] probabilities.

``--format onnx``: ``OUT/model.onnx`` through Keras's own ``model.export(format="onnx")`` (tf2onnx),
input ``scans`` float32 [N, H, W, 1] of any size, one output: probabilities [N, H, W, 1]. Needs the
``onnx`` extra (``pip install 'mammo-seg[onnx]'``: onnx, tf2onnx; onnxruntime to run it).

The scan must be at the model's training resolution: ``resolution.json`` in the export folder gives
the factor (``mammo predict`` does this resampling, and also windows very large scans).
"""

from __future__ import annotations

import json
import os

from mammo_seg.errors import MammoError

FORMATS = ("savedmodel", "onnx")
ONNX_FILE = "model.onnx"


def _write_savedmodel(model, out: str) -> None:
    import keras
    import tensorflow as tf

    def probabilities(x):
        return tf.sigmoid(tf.cast(model(x, training=False), tf.float32))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=lambda scan: probabilities(scan[None, :, :, None])[0, :, :, 0],
                         input_signature=[tf.TensorSpec([None, None], tf.float32, name="scan")])
    archive.add_endpoint(name="serve_batch", fn=probabilities,
                         input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32, name="scans")])
    archive.write_out(out, verbose=False)


def _write_onnx(model, out: str) -> None:
    import importlib.util

    missing = [m for m in ("onnx", "tf2onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise MammoError("--format onnx", f"needs {' and '.join(missing)}: pip install 'mammo-seg[onnx]'")
    import keras
    import tensorflow as tf

    scans = keras.Input((None, None, 1), name="scans")
    probabilities = keras.layers.Activation("sigmoid", dtype="float32", name="probabilities")(model(scans))
    keras.Model(scans, probabilities).export(
        os.path.join(out, ONNX_FILE), format="onnx", verbose=False,
        input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32, name="scans")])


def export_model(model_path: str, out: str, format: str = "savedmodel") -> dict:
    """Export ``model_path`` (a .keras file or a run) to the folder ``out`` as ``format`` (see ``FORMATS``)."""
    from mammo_seg.inference.model import load_model

    if format not in FORMATS:
        raise MammoError("--format", f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    loaded = load_model(model_path)
    if os.path.exists(out) and os.listdir(out):
        raise MammoError(out, "export folder exists and is not empty")
    if format == "onnx":
        os.makedirs(out, exist_ok=True)
        _write_onnx(loaded.model, out)
    else:
        _write_savedmodel(loaded.model, out)
    info = {"model": os.path.abspath(loaded.path), "format": format, "resolution": loaded.resolution.to_dict(),
            "note": "resample scans by spacing_mm / resolution.spacing_mm (resolution.nominal_spacing_mm when "
                    "the scan carries none) "
                    "before calling the model, as mammo predict does"}
    with open(os.path.join(out, "resolution.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info
