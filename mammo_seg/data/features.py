"""The TFRecord feature spec: the one definition of what a tile record holds (``tfrecords/README.md``).

============== ============ ==============================================================
key            type         content
============== ============ ==============================================================
image          bytes        raw uint16, little-endian, row by row, T×T (whole-scan records: H×W); scan in
                            [0, 1] × 65535 (records written before ``shape`` existed: PNG, uint16)
shape          int64 [2]    [rows, cols] of ``image`` (absent: ``image`` is a PNG)
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
contralateral  bytes        whole scans of a ``prep.contralateral`` output: the woman's other breast in the
                            same view, turned to the scan's chest-wall side and fitted to ``image``'s grid
                            (:mod:`mammo_seg.data.contralateral`), encoded as ``image``; absent or empty: there
                            was none (a zero channel)
============== ============ ==============================================================

**The ignore region** (mask value :data:`IGNORE`): the abnormalities of the kinds prep's ``ignore_kinds``
names (e.g. calcifications at a grid too coarse to show them) are neither lesion nor background. Losses,
training metrics, the operating point and out-of-fold figures skip those pixels; a lesion crop is never
centred on them, and a scan whose only abnormality is ignored is not a lesion scan. Where a kept lesion and
an ignored one overlap, the lesion wins. Without ``ignore_kinds`` no mask holds the value.

**Encodings.** The image is stored raw: encoding it is a copy, where PNG (zlib level 1) took 0.09 s for
eight tiles of a real CBIS-DDSM film and PNG without compression still 0.05 s. The cost is disk: the tiles
prep keeps from real films (mostly breast) shrank to about 0.7 of raw as level-1 PNG, so prep's output is
about 1.4 × as large (``benchmarks/results/prep_throughput_cpu.md``). The mask stays a PNG (Pillow, zlib level 1: about 6× faster than the
default for nearly the same size): mostly zeros, it compresses about 200-fold for 5 ms a scan. Prep
workers need no TensorFlow; parsing uses ``tf.io`` and reads either image encoding.
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


def encode_image(array: np.ndarray) -> bytes:
    """The stored bytes of a 2D uint16 image: raw, little-endian, row by row (its shape goes into ``shape``)."""
    if array.ndim != 2 or array.dtype != np.uint16:
        raise ValueError(f"encode_image takes a 2D uint16 array, got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array, dtype="<u2").tobytes()


def encode_png(array: np.ndarray) -> bytes:
    """Lossless single-channel PNG of a 2D uint8 or uint16 array."""
    array = np.ascontiguousarray(array)
    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png takes a 2D uint8/uint16 array, got {array.dtype} {array.shape}")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def image_to_uint16(pixels: np.ndarray) -> np.ndarray:
    """Scan values in [0, 1] → stored uint16 (rounded half to even)."""
    scaled = np.clip(pixels, 0.0, 1.0)
    scaled *= IMAGE_MAX
    return np.rint(scaled, out=scaled).astype(np.uint16)


def serialize(record: dict) -> bytes:
    """A record dict (keys of the table above; ``image`` as :func:`encode_image`'s bytes with its ``shape``, or as
    PNG bytes without one; ``mask`` as PNG bytes) → serialized tf.train.Example."""
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
    if record.get("contralateral"):
        feature["contralateral"] = b([record["contralateral"]])
    if record.get("shape") is not None:
        feature["shape"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in record["shape"]]))
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
    spec["shape"] = tf.io.FixedLenFeature([2], tf.int64, default_value=[0, 0])  # [0, 0]: a PNG image
    spec["contralateral"] = tf.io.FixedLenFeature([], tf.string, default_value="")
    return spec


def parse(serialized) -> dict:
    """Serialized example → dict of tensors; ``image`` and ``contralateral`` (zeros where there is none) uint16
    H×W×1 and ``mask`` uint8 H×W×1."""
    import tensorflow as tf

    ex = tf.io.parse_single_example(serialized, feature_spec())
    shape = ex.pop("shape")
    encoded = ex["image"]
    ex["image"] = tf.cond(shape[0] > 0,
                          lambda: tf.reshape(tf.io.decode_raw(encoded, tf.uint16, little_endian=True),
                                             tf.concat([shape, [1]], 0)),
                          lambda: tf.io.decode_png(encoded, channels=1, dtype=tf.uint16))
    ex["mask"] = tf.io.decode_png(ex["mask"], channels=1, dtype=tf.uint8)
    other = ex["contralateral"]
    ex["contralateral"] = tf.cond(tf.strings.length(other) > 0,
                                  lambda: tf.reshape(tf.io.decode_raw(other, tf.uint16, little_endian=True),
                                                     tf.shape(ex["image"])),
                                  lambda: tf.zeros_like(ex["image"]))
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
