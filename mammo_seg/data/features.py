"""The TFRecord feature spec: the one definition of what a tile record holds (``tfrecords/README.md``).

============== ============ ==============================================================
key            type         content
============== ============ ==============================================================
image          bytes        PNG, uint16, T×T×1 (whole-scan records: H×W×1); scan in [0, 1] × 65535
mask           bytes        PNG, uint8, same size, 0 = background, 1 = lesion, 2 = ignore (:data:`IGNORE`)
scan_id        bytes        dataset id of the scan, e.g. ``P_00001_LEFT_CC`` or ``mdb005``
patient_id     bytes        dataset id of the patient (splits are by patient)
split          bytes        ``train``, ``val`` or ``test``
source         bytes        ``cbis-ddsm`` or ``mias``
abnormality    bytes list   abnormality types in the scan, e.g. ``[b"mass", b"calcification"]`` (ignored
                            ones too: the list says what the scan holds, the mask how it is learnt)
origin         int64 [2]    [row, col] of the crop's top-left on the original grid (may be < 0: padded)
crop_size      int64        native pixels the crop spans (whole scans: the longer native side)
scale          float        record pixels per native pixel
============== ============ ==============================================================

**The ignore region** (mask value :data:`IGNORE`): the abnormalities of the kinds prep's ``ignore_kinds``
names (e.g. calcifications at a grid too coarse to show them) are neither lesion nor background. Losses,
training metrics, the operating point and out-of-fold figures skip those pixels; a lesion crop is never
centred on them, and a scan whose only abnormality is ignored is not a lesion scan. Where a kept lesion and
an ignored one overlap, the lesion wins. Without ``ignore_kinds`` no mask holds the value.

PNG encoding uses Pillow at zlib level 1 (about 6× faster than the default for nearly the same
size), so prep workers need no TensorFlow; parsing uses ``tf.io``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

IMAGE_MAX = 65535  # uint16 full scale of the stored image
LESION = 1  # mask value of a lesion pixel (stored uint8 and float mask alike)
IGNORE = 2  # mask value of a pixel that is neither lesion nor background (see the module docstring)
PNG_LEVEL = 1
STRING_KEYS = ("scan_id", "patient_id", "split", "source")


def encode_png(array: np.ndarray) -> bytes:
    """Lossless single-channel PNG of a 2D uint8 or uint16 array."""
    array = np.ascontiguousarray(array)
    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png takes a 2D uint8/uint16 array, got {array.dtype} {array.shape}")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def image_to_uint16(pixels: np.ndarray) -> np.ndarray:
    """Scan values in [0, 1] → stored uint16."""
    return np.round(np.clip(pixels, 0.0, 1.0) * IMAGE_MAX).astype(np.uint16)


def serialize(record: dict) -> bytes:
    """A record dict (keys of the table above; image/mask as PNG bytes) → serialized tf.train.Example."""
    import tensorflow as tf

    def b(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))

    feature = {
        "image": b([record["image"]]),
        "mask": b([record["mask"]]),
        "abnormality": b([a.encode() for a in record["abnormality"]]),
        "origin": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in record["origin"]])),
        "crop_size": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(record["crop_size"])])),
        "scale": tf.train.Feature(float_list=tf.train.FloatList(value=[float(record["scale"])])),
    }
    for key in STRING_KEYS:
        feature[key] = b([record[key].encode()])
    # deterministic=True: map fields in key order, so the same tile gives the same bytes in any process
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def feature_spec() -> dict:
    import tensorflow as tf

    spec = {key: tf.io.FixedLenFeature([], tf.string) for key in ("image", "mask", *STRING_KEYS)}
    spec["abnormality"] = tf.io.VarLenFeature(tf.string)
    spec["origin"] = tf.io.FixedLenFeature([2], tf.int64)
    spec["crop_size"] = tf.io.FixedLenFeature([], tf.int64)
    spec["scale"] = tf.io.FixedLenFeature([], tf.float32)
    return spec


def parse(serialized) -> dict:
    """Serialized example → dict of tensors; ``image`` uint16 H×W×1 and ``mask`` uint8 H×W×1."""
    import tensorflow as tf

    ex = tf.io.parse_single_example(serialized, feature_spec())
    ex["image"] = tf.io.decode_png(ex["image"], channels=1, dtype=tf.uint16)
    ex["mask"] = tf.io.decode_png(ex["mask"], channels=1, dtype=tf.uint8)
    ex["abnormality"] = tf.sparse.to_dense(ex["abnormality"])
    return ex


def iterate_records(path: str):
    """Yield parsed records (numpy values) of one shard file."""
    import tensorflow as tf

    for serialized in tf.data.TFRecordDataset(path):
        ex = parse(serialized)
        yield {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in ex.items()}


def to_float(image, mask):
    """Stored tensors → float32 image in [0, 1] and float32 mask in {0, 1, :data:`IGNORE`}."""
    import tensorflow as tf

    return tf.cast(image, tf.float32) / IMAGE_MAX, tf.cast(mask, tf.float32)
