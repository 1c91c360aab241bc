"""``mammo export``: a TensorFlow SavedModel (default) or an ONNX model, for serving.

``--format savedmodel``: signatures built with ``keras.export.ExportArchive`` (what ``model.export`` uses):

* ``serving_default`` / ``serve``: ``scan`` float32 [H, W] in [0, 1] (a scan as ``mammo_seg.io``
  returns it, any size) → lesion probabilities float32 [H, W];
* ``serve_batch``: [N, H, W, 1] → [N, H, W, 1] probabilities (two-channel models: below).

A model trained with the other breast as a second channel (``data.contralateral``) takes [H, W, 2] and
[N, H, W, 2]: the scan, then the other breast placed beside it as :mod:`mammo_seg.data.contralateral` says
(zeros where there is none); ``resolution.json`` gives its ``channels``.

``--format onnx``: ``OUT/model.onnx`` through Keras's own ``model.export(format="onnx")`` (tf2onnx),
input ``scans`` float32 [N, H, W, 1] (or 2) of any size, one output: probabilities [N, H, W, 1]. Needs the
``onnx`` extra (``pip install 'mammo-seg[onnx]'``: onnx, tf2onnx; onnxruntime to run it).

A cross-validated run exports its ensemble: the mean of the fold models' probabilities, in one graph.

The scan must be at the model's training resolution: ``resolution.json`` in the export folder gives
the factor (``mammo predict`` does this resampling, and also windows very large scans). The run's
``operating_point.json`` (threshold, minimum lesion area) and model card travel with it, so that the
exported model's probabilities give predict's masks.
"""

from __future__ import annotations

import json
import os

from mammo_seg.errors import MammoError

FORMATS = ("savedmodel", "onnx")
ONNX_FILE = "model.onnx"


def _write_savedmodel(models: list, out: str, channels: int = 1) -> None:
    import keras
    import tensorflow as tf

    def probabilities(x):
        members = [tf.sigmoid(tf.cast(m(x, training=False), tf.float32)) for m in models]
        return members[0] if len(members) == 1 else tf.add_n(members) / float(len(members))

    archive = keras.export.ExportArchive()
    for model in models:
        archive.track(model)
    if channels == 1:
        archive.add_endpoint(name="serve", fn=lambda scan: probabilities(scan[None, :, :, None])[0, :, :, 0],
                             input_signature=[tf.TensorSpec([None, None], tf.float32, name="scan")])
    else:
        archive.add_endpoint(name="serve", fn=lambda scan: probabilities(scan[None])[0, :, :, 0],
                             input_signature=[tf.TensorSpec([None, None, channels], tf.float32, name="scan")])
    archive.add_endpoint(name="serve_batch", fn=probabilities,
                         input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32, name="scans")])
    archive.write_out(out, verbose=False)


def _write_onnx(models: list, out: str, channels: int = 1) -> None:
    import importlib.util

    missing = [m for m in ("onnx", "tf2onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise MammoError("--format onnx", f"needs {' and '.join(missing)}: pip install 'mammo-seg[onnx]'")
    import keras
    import tensorflow as tf

    scans = keras.Input((None, None, channels), name="scans")
    if len(models) == 1:
        probabilities = keras.layers.Activation("sigmoid", dtype="float32", name="probabilities")(models[0](scans))
    else:
        members = [keras.layers.Activation("sigmoid", dtype="float32", name=f"member{k}")(m(scans))
                   for k, m in enumerate(models, start=1)]
        probabilities = keras.layers.Average(name="probabilities")(members)
    path = os.path.join(out, ONNX_FILE)
    keras.Model(scans, probabilities).export(
        path, format="onnx", verbose=False,
        input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32, name="scans")])
    _name_output(path, "probabilities")


def _name_output(path: str, name: str) -> None:
    """Rename the ONNX graph's one output (the converter calls it ``Identity:0``) to ``name``."""
    import onnx

    model = onnx.load(path)
    old = model.graph.output[0].name
    for node in model.graph.node:
        node.input[:] = [name if v == old else v for v in node.input]
        node.output[:] = [name if v == old else v for v in node.output]
    model.graph.output[0].name = name
    onnx.checker.check_model(model)
    onnx.save(model, path)


def export_model(model_path: str, out: str, format: str = "savedmodel") -> dict:
    """Export ``model_path`` (a .keras file or a run) to the folder ``out`` as ``format`` (see ``FORMATS``)."""
    from mammo_seg.inference.model import load_model

    if format not in FORMATS:
        raise MammoError("--format", f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    loaded = load_model(model_path)
    if os.path.exists(out) and os.listdir(out):
        raise MammoError(out, "export folder exists and is not empty")
    channels = loaded.channels
    if format == "onnx":
        os.makedirs(out, exist_ok=True)
        _write_onnx(loaded.models, out, channels)
    else:
        _write_savedmodel(loaded.models, out, channels)
    carried = _carry_run_files(loaded.path, out)
    info = {"model": os.path.abspath(loaded.path), "format": format, "members": len(loaded.models),
            "resolution": loaded.resolution.to_dict(), **({"channels": channels} if channels > 1 else {}),
            "carried": carried,
            "note": "resample scans by spacing_mm / resolution.spacing_mm (resolution.nominal_spacing_mm when "
                    "the scan carries none) "
                    "before calling the model, as mammo predict does"}
    with open(os.path.join(out, "resolution.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info


def _carry_run_files(model: str, out: str) -> list[str]:
    """Copy the model's operating point and the run's model card into ``out``; returns the names copied."""
    import shutil

    from mammo_seg.inference.operating_point import path_for
    from mammo_seg.model_card import CARD_FILES

    here = os.path.dirname(os.path.abspath(model))
    candidates = [path_for(model)] + [os.path.join(here, name) for name in CARD_FILES]
    carried = []
    for path in candidates:
        if os.path.isfile(path):
            shutil.copy(path, os.path.join(out, os.path.basename(path)))
            carried.append(os.path.basename(path))
    return carried
