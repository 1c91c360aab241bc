"""tf.data input from a prep output folder (``OUT/<tile>`` or ``OUT/full``).

Training: shard files shuffled → interleaved → parsed with the one feature spec → records of the
run's women only (cross-validation folds) → shuffled → for whole scans, crops → joint augmentation of
image and mask (flips, 90° rotations; gamma/contrast/brightness, noise and blur on the image only) →
batched (full batches only) → prefetched.
Evaluation: files in order, no augmentation, every record of the run's women.

Crops of whole scans (``crop``), two samplers:

* plain (``lesion_share`` and ``background_quantile`` 0, no rotation or scaling): a uniformly placed ``crop``²
  window;
* the lesion sampler (nnU-Net's foreground oversampling, with rotation and scaling on the fly): element
  ``i`` of the stream is a *lesion crop* exactly when ⌊(i+1)·s⌋ > ⌊i·s⌋ for the share ``s`` (so the share
  of lesion crops in any run of 1/s elements is exact), drawn from the scans that have a lesion and
  centred on one of their lesion pixels (value 1: never an ignore pixel, and a scan whose only abnormality
  is an ignore region is not a lesion scan), or with ``lesion_offset`` holding it off centre
  (:func:`sampled_crop`); the other crops come from every scan, centred on a pixel of the
  breast (image > :data:`TISSUE_LEVEL`) at or above its ``background_quantile`` q of the breast's intensities
  (q 0: any breast pixel; q 0.5: the denser half, where false positives lie; the quantile is the lower edge of
  its bin in a 256-bin histogram of [0, 1], :func:`dense_level`). The window is rotated by θ ~ U(±``rotate``°)
  and scaled by s ~ log-uniform within ``scale`` about its centre, in one projective resampling per crop
  (bilinear for the image, nearest for the mask, which keeps its values 0, 1 and
  :data:`~mammo_seg.data.features.IGNORE` exact; outside the scan is zero).

Deterministic for (seed, epoch): every random choice uses stateless ops seeded by the seed, the
epoch and the element's position, so a resumed run sees the same data as an uninterrupted one.
Under multi-worker training, shards are divided between workers by file when there are at least
two files per worker, else by element.
"""

from __future__ import annotations

import math
import os
import zlib

import tensorflow as tf

from mammo_seg.data import features
from mammo_seg.data.augment_config import AugmentConfig
from mammo_seg.data.prep_output import MANIFEST, Manifest
from mammo_seg.errors import MammoError


def split_files(data_dir: str, split: str) -> list[str]:
    files = Manifest.load(data_dir).shard_files(split)
    if not files:
        raise MammoError(data_dir, f"no {split!r} shards in {MANIFEST}")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise MammoError(missing[0], f"shard listed in {MANIFEST} is missing")
    return files


def count_records(data_dir: str, split: str) -> int:
    return Manifest.load(data_dir).records(split)


def _seed(seed: int, epoch: int, salt: str) -> int:
    return zlib.crc32(f"{seed}/{epoch}/{salt}".encode()) & 0x7FFFFFFF


TISSUE_LEVEL = 0.1  # a crop that is not a lesion crop is centred on a pixel brighter than this
DENSITY_BINS = 256  # the histogram that :func:`dense_level` takes the breast's intensity quantile on


def _decode_with_patient(serialized, contralateral: bool = False):
    """(patient id, (image, mask)); with ``contralateral`` the image's second channel is the other breast."""
    ex = features.parse(serialized)
    image = tf.concat([ex["image"], ex["contralateral"]], axis=-1) if contralateral else ex["image"]
    return ex["patient_id"], features.to_float(image, ex["mask"])


def is_lesion_crop(index, share: float):
    """Element ``index`` of the training stream is a lesion crop: ⌊(i+1)·share⌋ > ⌊i·share⌋ (exact share)."""
    i = tf.cast(index, tf.float64)
    return tf.floor((i + 1.0) * share) > tf.floor(i * share)


def augment(image, mask, seed, config: AugmentConfig):
    """Same flips and rotation for image (any number of channels) and mask; intensity jitter on the image only,
    the same for each of its channels."""
    def draw(i, maxval):
        return tf.random.stateless_uniform([], seed=seed + i, minval=0, maxval=maxval, dtype=tf.int32)

    channels = image.shape[-1]
    both = tf.concat([image, mask], axis=-1)
    if config.flips:
        both = tf.cond(draw(1, 2) > 0, lambda: tf.reverse(both, [1]), lambda: both)
        both = tf.cond(draw(2, 2) > 0, lambda: tf.reverse(both, [0]), lambda: both)
    if config.rot90:
        both = tf.image.rot90(both, k=draw(3, 4))
    image, mask = both[..., :channels], both[..., channels:]
    if config.intensity > 0:
        a = config.intensity
        u = tf.random.stateless_uniform([2], seed=seed + 4, minval=-1.0, maxval=1.0)
        gamma = tf.exp(u[0] * tf.math.log(1.0 + a))
        image = tf.pow(tf.clip_by_value(image, 0.0, 1.0), gamma)
        mean = tf.reduce_mean(image)  # with the other breast: the pivot of both channels together
        image = tf.clip_by_value((image - mean) * (1.0 + a * u[1]) + mean, 0.0, 1.0)
    if config.brightness > 0:
        shift = tf.random.stateless_uniform([], seed=seed + 5, minval=-config.brightness, maxval=config.brightness)
        image = tf.clip_by_value(image + shift, 0.0, 1.0)
    if config.blur > 0:
        sigma = tf.random.stateless_uniform([], seed=seed + 6, minval=0.0, maxval=config.blur)
        image = gaussian_blur(image, sigma)
    if config.noise > 0:
        sigma = tf.random.stateless_uniform([], seed=seed + 7, minval=0.0, maxval=config.noise)
        image = image + sigma * tf.random.stateless_normal(tf.shape(image), seed=seed + 8)
        image = tf.clip_by_value(image, 0.0, 1.0)
    return image, mask


def gaussian_blur(image, sigma, radius: int = 3):
    """``image`` (H×W×C) convolved, each channel alone, with a separable Gaussian of ``sigma`` pixels (σ → 0:
    unchanged)."""
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(x / tf.maximum(sigma, 1e-3)))
    kernel = kernel / tf.reduce_sum(kernel)
    planes = tf.transpose(image, [2, 0, 1])[..., None]  # C×H×W×1: the channels as a batch
    padded = tf.pad(planes, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    rows = tf.nn.conv2d(padded, tf.reshape(kernel, [-1, 1, 1, 1]), 1, "VALID")
    return tf.transpose(tf.nn.conv2d(rows, tf.reshape(kernel, [1, -1, 1, 1]), 1, "VALID")[..., 0], [1, 2, 0])


def random_crop(image, mask, size: int, seed):
    """A ``size``² crop of a whole scan (zero-padded first where the scan is smaller)."""
    channels = image.shape[-1]
    both = tf.concat([image, mask], axis=-1)
    h, w = tf.shape(both)[0], tf.shape(both)[1]
    both = tf.pad(both, [[0, tf.maximum(size - h, 0)], [0, tf.maximum(size - w, 0)], [0, 0]])
    both = tf.image.stateless_random_crop(both, [size, size, channels + 1], seed=seed)
    return both[..., :channels], both[..., channels:]


def dense_level(image, quantile: float):
    """The lower edge of the bin that holds the ``quantile`` of the breast's intensities, on a histogram of the
    first channel in :data:`DENSITY_BINS` bins of [0, 1] whose bins wholly above :data:`TISSUE_LEVEL` are the
    breast: the bin of the first b with cdf(b) > quantile, so that at least 1 − ``quantile`` of the breast is at or
    above it. 0 for no breast."""
    counts = tf.histogram_fixed_width(image[..., 0], [0.0, 1.0], nbins=DENSITY_BINS)
    first = math.ceil(TISSUE_LEVEL * DENSITY_BINS)
    counts = tf.concat([tf.zeros([first], counts.dtype), counts[first:]], axis=0)
    n = tf.reduce_sum(counts)
    below = tf.reduce_sum(tf.cast(tf.cumsum(counts) <= tf.cast(quantile * tf.cast(n, tf.float64), tf.int32), tf.int32))
    return tf.cast(tf.where(n > 0, below, 0), tf.float32) / DENSITY_BINS


def _centre(image, mask, lesion_crop, seed, background_quantile: float = 0.0):
    """A crop centre (row, col) as float32: a lesion pixel for a lesion crop, else a breast pixel at or above the
    breast's ``background_quantile`` (else any breast pixel, else the middle)."""
    def pick(candidates, salt):
        n = tf.shape(candidates)[0]
        k = tf.random.stateless_uniform([], seed=seed + salt, minval=0, maxval=tf.maximum(n, 1), dtype=tf.int32)
        return tf.cast(candidates[tf.minimum(k, n - 1)], tf.float32)

    shape = tf.shape(image)
    anywhere = tf.cast(tf.stack([shape[0] // 2, shape[1] // 2]), tf.float32)

    def breast_pixel():  # only crops not on a lesion need the breast's pixels (and its histogram)
        tissue = image[..., 0] > TISSUE_LEVEL
        if background_quantile > 0:
            tissue = tf.logical_and(tissue, image[..., 0] >= dense_level(image, background_quantile))
        tissue = tf.where(tissue)
        return tf.cond(tf.shape(tissue)[0] > 0, lambda: pick(tissue, 22), lambda: anywhere)

    lesion = tf.where(tf.equal(mask[..., 0], features.LESION))
    return tf.cond(tf.logical_and(lesion_crop, tf.shape(lesion)[0] > 0), lambda: pick(lesion, 21), breast_pixel)


def sampled_crop(image, mask, size: int, lesion_crop, seed, rotate_degrees: float = 0.0,
                 scale: tuple = (1.0, 1.0), background_quantile: float = 0.0, lesion_offset: float = 0.0):
    """A ``size``² crop about the point :func:`_centre` picks, rotated and scaled about it (see the module). The
    point is the crop's centre pixel, or for a lesion crop with ``lesion_offset`` f, the pixel (half + dy,
    half + dx) of the crop, each of dy, dx a whole number of pixels ~ U(±f·(half − 1)) (f = 1: anywhere in the
    crop but its first row and column, nnU-Net's lesion crops)."""
    centre = _centre(image, mask, lesion_crop, seed, background_quantile)
    u = tf.random.stateless_uniform([2], seed=seed + 23, minval=0.0, maxval=1.0)
    theta = (2.0 * u[0] - 1.0) * rotate_degrees * 3.141592653589793 / 180.0
    log_lo, log_hi = tf.math.log(float(scale[0])), tf.math.log(float(scale[1]))
    zoom = tf.exp(log_lo + u[1] * (log_hi - log_lo))  # > 1 magnifies: the crop covers less of the scan
    c, s = tf.cos(theta) / zoom, tf.sin(theta) / zoom
    # output (x, y) → input (a0 x + a1 y + a2, b0 x + b1 y + b2): the output pixel (hy, hx) lands on ``centre``,
    # so that without rotation or scaling the crop copies pixels
    half = float(size // 2)
    hy, hx = half, half
    if lesion_offset > 0:
        reach = lesion_offset * (half - 1.0)
        offset = tf.round(tf.random.stateless_uniform([2], seed=seed + 24, minval=-reach, maxval=reach))
        offset = tf.where(lesion_crop, offset, 0.0)
        hy, hx = half + offset[0], half + offset[1]
    transform = tf.stack([c, -s, centre[1] - c * hx + s * hy,
                          s, c, centre[0] - s * hx - c * hy, 0.0, 0.0])[None]

    def warp(x, interpolation):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=x[None], transforms=transform, output_shape=tf.constant([size, size]), fill_value=0.0,
            interpolation=interpolation, fill_mode="CONSTANT")[0]

    return warp(image, "BILINEAR"), warp(mask, "NEAREST")


def _keeps(patients):
    """A predicate on a record's patient id: in ``patients`` (None: every record)."""
    if patients is None:
        return lambda patient: tf.constant(True)
    table = tf.constant(sorted(patients) or [""], tf.string)
    empty = not patients
    return lambda patient: tf.logical_and(tf.logical_not(empty), tf.reduce_any(tf.equal(patient, table)))


def make_dataset(data_dir: str, split: str, batch_size: int, training: bool, seed: int = 0, epoch: int = 0,
                 augmentation: AugmentConfig = AugmentConfig(), crop: int | None = None,
                 shuffle_buffer: int = 512, num_workers: int = 1, patients=None,
                 lesion_share: float = 0.0, contralateral: bool = False,
                 background_quantile: float = 0.0, lesion_offset: float = 0.0) -> tf.data.Dataset:
    """Batches of (image, mask), float32 [B, H, W, 1]: image in [0, 1], mask in {0, 1, IGNORE}; with
    ``contralateral`` the image has a second channel, the other breast (zeros where the scan has none).

    ``crop`` (training on whole scans): ``crop``² crops, a ``lesion_share`` of them on a lesion (placed by
    ``lesion_offset``), the others on breast at or above its ``background_quantile`` (see the module).
    ``patients``: only the records of these patient ids (a cross-validation fold); None: all.
    Evaluation on whole scans uses batches of one, since scans differ in size.
    """
    files = split_files(data_dir, split)
    options = tf.data.Options()
    options.deterministic = True
    # No autotuning: deleting an autotuned iterator (each epoch's, at the next epoch's start) sometimes waited 15-20 s
    # with the CPU idle, in 2-4 of a fold's 18 epochs. AUTOTUNE parallelism is then min(16, cores), fixed.
    options.autotune.enabled = False
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = (policy.FILE if len(files) >= 2 * num_workers
                                                         else policy.DATA)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=_seed(seed, epoch, "files"))
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8), block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    keep = _keeps(patients)

    def kept(patient, pair):
        return keep(patient)

    def without_patient(patient, pair):
        return pair

    def decode(serialized):
        return _decode_with_patient(serialized, contralateral)

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).filter(kept).map(without_patient)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=_seed(seed, epoch, "records"), reshuffle_each_iteration=False)
        ds = ds.repeat()
        base = _seed(seed, epoch, "augment")
        sampler = bool(crop) and (lesion_share > 0 or background_quantile > 0 or augmentation.rotate > 0
                                  or tuple(augmentation.scale) != (1.0, 1.0))
        if sampler and lesion_share > 0:
            if Manifest.load(data_dir).positive_pixels(split) == 0:
                raise MammoError(data_dir, f"data.lesion_share {lesion_share:g} asks for lesion crops, but the "
                                           f"{split!r} split has no lesion pixel")
            lesions = ds.filter(lambda image, mask: tf.reduce_any(tf.equal(mask, features.LESION)))
            choice = tf.data.Dataset.range(2 ** 62).map(lambda i: tf.cast(is_lesion_crop(i, lesion_share), tf.int64))
            ds = tf.data.Dataset.choose_from_datasets([ds, lesions], choice)

        def train_map(index, pair):
            image, mask = pair
            element_seed = tf.stack([tf.constant(base, tf.int64), index])
            if sampler:
                image, mask = sampled_crop(image, mask, crop, is_lesion_crop(index, lesion_share), element_seed + 10,
                                           augmentation.rotate, tuple(augmentation.scale), background_quantile,
                                           lesion_offset)
            elif crop:
                image, mask = random_crop(image, mask, crop, element_seed + 10)
            return augment(image, mask, element_seed, augmentation)

        ds = ds.enumerate().map(train_map, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size, drop_remainder=True)
    else:
        ds = ds.batch(1 if Manifest.load(data_dir).whole_scans else batch_size)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
