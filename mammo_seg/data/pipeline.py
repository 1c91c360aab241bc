"""tf.data input from a prep output folder (``OUT/<tile>`` or ``OUT/full``).

Training: shard files shuffled → interleaved → parsed with the one feature spec → shuffled →
joint augmentation of image and mask (flips, 90° rotations, optional gamma/contrast jitter on the
image only) → random crops for whole scans → batched (full batches only) → prefetched.
Evaluation: files in order, no augmentation, every record.

Deterministic for (seed, epoch): every random choice uses stateless ops seeded by the seed, the
epoch and the element's position, so a resumed run sees the same data as an uninterrupted one.
Under multi-worker training, shards are divided between workers by file when there are at least
two files per worker, else by element.
"""

from __future__ import annotations

import os
import zlib

import tensorflow as tf

from mammo_seg.config import AugmentSection as AugmentConfig
from mammo_seg.data import features
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


def _decode(serialized):
    ex = features.parse(serialized)
    return features.to_float(ex["image"], ex["mask"])


def augment(image, mask, seed, config: AugmentConfig):
    """Same flips and rotation for image and mask; intensity jitter on the image only."""
    def draw(i, maxval):
        return tf.random.stateless_uniform([], seed=seed + i, minval=0, maxval=maxval, dtype=tf.int32)

    both = tf.concat([image, mask], axis=-1)
    if config.flips:
        both = tf.cond(draw(1, 2) > 0, lambda: tf.reverse(both, [1]), lambda: both)
        both = tf.cond(draw(2, 2) > 0, lambda: tf.reverse(both, [0]), lambda: both)
    if config.rot90:
        both = tf.image.rot90(both, k=draw(3, 4))
    image, mask = both[..., :1], both[..., 1:]
    if config.intensity > 0:
        a = config.intensity
        u = tf.random.stateless_uniform([2], seed=seed + 4, minval=-1.0, maxval=1.0)
        gamma = tf.exp(u[0] * tf.math.log(1.0 + a))
        image = tf.pow(tf.clip_by_value(image, 0.0, 1.0), gamma)
        mean = tf.reduce_mean(image)
        image = tf.clip_by_value((image - mean) * (1.0 + a * u[1]) + mean, 0.0, 1.0)
    return image, mask


def random_crop(image, mask, size: int, seed):
    """A ``size``² crop of a whole scan (zero-padded first where the scan is smaller)."""
    both = tf.concat([image, mask], axis=-1)
    h, w = tf.shape(both)[0], tf.shape(both)[1]
    both = tf.pad(both, [[0, tf.maximum(size - h, 0)], [0, tf.maximum(size - w, 0)], [0, 0]])
    both = tf.image.stateless_random_crop(both, [size, size, 2], seed=seed)
    return both[..., :1], both[..., 1:]


def make_dataset(data_dir: str, split: str, batch_size: int, training: bool, seed: int = 0, epoch: int = 0,
                 augmentation: AugmentConfig = AugmentConfig(), crop: int | None = None,
                 shuffle_buffer: int = 512, num_workers: int = 1) -> tf.data.Dataset:
    """Batches of (image, mask), float32 [B, H, W, 1]: image in [0, 1], mask in {0, 1}.

    ``crop`` (training on whole scans): random ``crop``² crops. Evaluation on whole scans uses
    batches of one, since scans differ in size.
    """
    files = split_files(data_dir, split)
    options = tf.data.Options()
    options.deterministic = True
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = (policy.FILE if len(files) >= 2 * num_workers
                                                         else policy.DATA)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=_seed(seed, epoch, "files"))
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8), block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(_decode, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=_seed(seed, epoch, "records"), reshuffle_each_iteration=False)
        ds = ds.repeat()
        base = _seed(seed, epoch, "augment")

        def train_map(index, pair):
            image, mask = pair
            element_seed = tf.stack([tf.constant(base, tf.int64), index])
            if crop:
                image, mask = random_crop(image, mask, crop, element_seed + 10)
            return augment(image, mask, element_seed, augmentation)

        ds = ds.enumerate().map(train_map, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size, drop_remainder=True)
    else:
        ds = ds.batch(1 if Manifest.load(data_dir).whole_scans else batch_size)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
