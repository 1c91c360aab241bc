"""``mammo export``: a TensorFlow SavedModel for serving.

Signatures (built with ``keras.export.ExportArchive``, what ``model.export`` uses):

* ``serving_default`` / ``serve``: ``scan`` float32 [H, W] in [0, 1] (a scan as ``mammo_seg.io``
  returns it, any size) → lesion probabilities float32 [H, W];
* ``serve_batch``: [N, H, W, 1] → [N, H, W, 1] probabilities.

The scan must be at the model's training resolution: ``resolution.json`` in the export folder gives
the factor (``mammo predict`` does this resampling, and also windows very large scans).
"""

from __future__ import annotations

import json
import os

from mammo_seg.errors import MammoError


def export_model(model_path: str, out: str) -> dict:
    import keras
    import tensorflow as tf

    from mammo_seg.inference.model import load_model

    loaded = load_model(model_path)
    model = loaded.model
    if os.path.exists(out) and os.listdir(out):
        raise MammoError(out, "export folder exists and is not empty")

    def probabilities(x):
        return tf.sigmoid(tf.cast(model(x, training=False), tf.float32))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=lambda scan: probabilities(scan[None, :, :, None])[0, :, :, 0],
                         input_signature=[tf.TensorSpec([None, None], tf.float32, name="scan")])
    archive.add_endpoint(name="serve_batch", fn=probabilities,
                         input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32, name="scans")])
    archive.write_out(out, verbose=False)
    info = {"model": os.path.abspath(loaded.path), "resolution": loaded.resolution.to_dict(),
            "note": "resample scans by spacing_mm / resolution.spacing_mm (resolution.nominal_spacing_mm when the scan carries none) "
                    "before calling the model, as mammo predict does"}
    with open(os.path.join(out, "resolution.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info
