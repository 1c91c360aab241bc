"""``mammo inspect OUT/<tile>``: validate shards against their manifest, draw a contact sheet."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

from mammo_seg.data import features
from mammo_seg.data.features import iterate_records
from mammo_seg.data.prep_output import Manifest


@dataclass
class InspectReport:
    directory: str
    records: int = 0
    positive_pixels: int = 0
    errors: list = field(default_factory=list)
    contact_sheet: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def read_error_reason(error) -> str:
    """A TensorFlow read error (``DataLossError`` of a truncated or corrupted TFRecord) as a short reason, without
    the graph node, op and device names TensorFlow wraps it in."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{[^}]*\}\}|\[\[[^]]*\]\]|\[Op:[^]]*\]|\bname:\s*$", " ", text)
    text = " ".join(text.replace("'", " ").split())
    return text or type(error).__name__


def unreadable_shard(files) -> tuple[str, str] | None:
    """(the first of ``files`` that cannot be read to its end, why) or None: finds which shard a ``DataLossError``
    raised inside a ``tf.data`` pipeline (which does not name its file) came from."""
    import tensorflow as tf

    for path in files:
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except tf.errors.OpError as e:
            return path, read_error_reason(e)
    return None


def unreadable_data(data_dir: str, files, error):
    """The one-line error of a shard of ``files`` that broke a read (truncated or corrupted), naming the shard when it
    can be found, else ``data_dir``."""
    from mammo_seg.errors import MammoError

    where, reason = unreadable_shard(files) or (data_dir, read_error_reason(error))
    return MammoError(where, f"unreadable shard ({reason}); check the data with `mammo inspect {data_dir}` and "
                             f"prepare it again")


def validate(directory: str, sheet: str | None = None, samples: int = 24, seed: int = 0) -> InspectReport:
    """Check every shard the manifest lists; optionally write a contact sheet of random records."""
    import tensorflow as tf

    manifest = Manifest.load(directory)
    report = InspectReport(directory)
    tile = manifest.tile_size
    picks = []
    rng = np.random.default_rng(seed)
    seen = 0
    for split in sorted(manifest.splits):
        positives = 0
        for name in manifest.shards(split):
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                report.errors.append(f"{path}: shard listed in the manifest is missing")
                continue
            count = 0
            try:
                for rec in iterate_records(path):
                    count += 1
                    image, mask = rec["image"], rec["mask"]
                    where = f"{path}: record {count} ({rec['scan_id'].decode()})"
                    if image.shape != mask.shape:
                        report.errors.append(f"{where}: image {image.shape} and mask {mask.shape} differ in size")
                    if tile is not None and image.shape[:2] != (tile, tile):
                        report.errors.append(f"{where}: size {image.shape[:2]} is not the manifest's {tile}")
                    if not np.isin(np.unique(mask), (0, features.LESION, features.IGNORE)).all():
                        report.errors.append(f"{where}: mask has values other than 0, 1 and 2")
                    if rec["split"].decode() != split:
                        report.errors.append(f"{where}: split {rec['split'].decode()!r} in a {split} shard")
                    positives += int(np.count_nonzero(mask == features.LESION))
                    seen += 1
                    if len(picks) < samples:  # reservoir sampling: a uniform sample in one pass
                        picks.append(rec)
                    elif (j := rng.integers(seen)) < samples:
                        picks[j] = rec
            except tf.errors.OpError as e:
                report.errors.append(f"{path}: corrupt shard ({read_error_reason(e)})")
            expected = manifest.records_in_shard(name)
            if expected is not None and count != expected:
                report.errors.append(f"{path}: {count} records, manifest says {expected}")
            report.records += count
        expected = manifest.positive_pixels(split)
        if expected is not None and positives != expected:
            report.errors.append(f"{directory}: {split} has {positives} lesion pixels, manifest says {expected}")
        report.positive_pixels += positives
    if sheet and picks:
        report.contact_sheet = contact_sheet(picks, sheet)
    return report


def contact_sheet(records: list[dict], path: str, columns: int = 6) -> str:
    """A grid of tiles with the lesion outline in red, titled with scan id and split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(records) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, rec in zip(axes.ravel(), records):
        ax.imshow(rec["image"][..., 0], cmap="gray", vmin=0, vmax=features.IMAGE_MAX)
        if (rec["mask"] == features.LESION).any():
            lesion = (rec["mask"][..., 0] == features.LESION).astype(np.uint8)
            ax.contour(lesion, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"{rec['scan_id'].decode()}\n{rec['split'].decode()}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
