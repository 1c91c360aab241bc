"""The layout of a prep output (``mammo prep --out OUT``): written by :mod:`mammo_seg.data.shards`, read
by everything else through :class:`PrepOutput` and :class:`Manifest`.

::

    OUT/splits.json      patient-level splits         OUT/scans.json   every scan written: patient, split,
    OUT/problems.csv     skipped inputs and why                         source, file, SHA-256
    OUT/<tile>/          tiles of that size: manifest.json and {split}-NNNNN-of-NNNNN.tfrecord shards
    OUT/full/            whole scans on the training grid (``--full-scans``), laid out the same way
    OUT/.prep/           prep's resume state and temporaries
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass

from mammo_seg import __version__, atomic
from mammo_seg.errors import MammoError, printable

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
SCANS = "scans.json"
SPLITS = "splits.json"
PROBLEMS = "problems.csv"
FULL = "full"
STATE_DIR = ".prep"
SHARD_PATTERN = "{split}-{index:05d}-of-{total:05d}.tfrecord"
WHOLE_SCANS, TILES = "whole_scans", "tiles"  # the manifest's "kind"


def output_kind(name: str) -> str:
    """The kind of records in output folder ``name`` (a tile size, or ``full``)."""
    return WHOLE_SCANS if name == FULL else TILES


def output_tile_size(name: str) -> int | None:
    return None if name == FULL else int(name)


def manifest_content(name: str, *, config: dict, resolution: dict, seed: int, splits: dict, records_per_shard: dict,
                     intensity: dict, problems: int, extra: dict) -> dict:
    """The content of output folder ``name``'s ``manifest.json`` (``extra``: the dataset and its collection report)."""
    return {
        "format_version": MANIFEST_VERSION,
        "package_version": __version__,
        "kind": output_kind(name),
        "tile_size": output_tile_size(name),
        "resolution": resolution,
        "seed": seed,
        "config": config,
        "splits": splits,
        "records_per_shard": records_per_shard,
        "intensity": intensity,
        "problems": problems,
        **extra,
    }


def write_problems(path: str, problems, tmp_dir: str) -> None:
    """``problems.csv`` of :class:`~mammo_seg.data.cases.Problem` rows: UTF-8 CSV; a file name that is not
    UTF-8 is written with its odd bytes as ``\\xNN``, so no name can stop the run after all shards are written."""
    with atomic.replacing(path, tmp_dir) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "item", "reason"])
        for p in problems:
            w.writerow([printable(p.file), printable(p.item), printable(p.reason)])


def is_output_folder(directory: str) -> bool:
    """``directory`` is one folder of a prep output (``OUT/320``, ``OUT/full``): it has a manifest."""
    return os.path.isfile(os.path.join(directory, MANIFEST))


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` of one output folder, read through accessors."""

    directory: str
    content: dict

    @classmethod
    def load(cls, directory: str) -> Manifest:
        path = os.path.join(directory, MANIFEST)
        if not os.path.isfile(path):
            raise MammoError(directory, f"no {MANIFEST}: not a prep output folder (give OUT/<tile>)")
        try:
            with open(path) as f:
                return cls(directory, json.load(f))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MammoError(path, f"manifest is not valid JSON ({e})") from None

    @property
    def kind(self) -> str | None:
        return self.content.get("kind")

    @property
    def whole_scans(self) -> bool:
        return self.kind == WHOLE_SCANS

    @property
    def tile_size(self) -> int | None:
        return self.content.get("tile_size")

    @property
    def dataset(self) -> str | None:
        return self.content.get("dataset")

    @property
    def resolution(self) -> dict:
        return self.content["resolution"]

    @property
    def splits(self) -> dict[str, dict]:
        """Per split: its ``shards`` (names), ``records``, ``positive_pixels`` and other counts."""
        return self.content.get("splits", {})

    def has_split(self, split: str) -> bool:
        return split in self.splits

    def shards(self, split: str) -> list[str]:
        """The shard file names of ``split`` (none when the split is absent)."""
        return list(self.splits.get(split, {}).get("shards", []))

    def shard_files(self, split: str) -> list[str]:
        return [os.path.join(self.directory, name) for name in self.shards(split)]

    def records(self, split: str) -> int:
        return int(self.splits.get(split, {}).get("records", 0))

    @property
    def ignore_kinds(self) -> set[str]:
        """The abnormality kinds prep stored as the ignore region (``prep.ignore_kinds``; none before it existed)."""
        return set(self.content.get("config", {}).get("ignore_kinds", []))

    @property
    def contralateral(self) -> bool:
        """Whether whole-scan records carry the other breast (``prep.contralateral``)."""
        return bool(self.content.get("config", {}).get("contralateral", False))

    def positive_pixels(self, split: str) -> int | None:
        """Lesion pixels over the records of ``split``, as prep counted them."""
        return self.splits.get(split, {}).get("positive_pixels")

    def records_in_shard(self, name: str) -> int | None:
        return self.content.get("records_per_shard", {}).get(name)


def _inside(name: str) -> property:
    return property(lambda self: self.file(name), doc=f"the path of ``{name}`` in this prep output")


class PrepOutput:
    """A prep output root ``OUT``."""

    def __init__(self, root: str):
        self.root = root

    @classmethod
    def containing(cls, path: str) -> PrepOutput:
        """The prep output of ``OUT`` or of one of its folders (``OUT/320``, ``OUT/full``)."""
        path = os.path.normpath(path)
        return cls(os.path.dirname(path) if is_output_folder(path) or os.path.basename(path) == FULL else path)

    def file(self, name: str) -> str:
        return os.path.join(self.root, name)

    scans_file = _inside(SCANS)
    splits_file = _inside(SPLITS)
    problems_file = _inside(PROBLEMS)
    state_dir = _inside(STATE_DIR)

    @property
    def tmp_dir(self) -> str:
        """The only folder where prep keeps temporaries; emptied at the start of every run."""
        return os.path.join(self.state_dir, "tmp")

    def folder(self, name: str | int) -> str:
        """Output folder ``name``: a tile size, or :data:`FULL`."""
        return self.file(str(name))

    @property
    def full_folder(self) -> str:
        return self.folder(FULL)

    def manifest_file(self, name: str | int) -> str:
        return os.path.join(self.folder(name), MANIFEST)

    def manifest(self, name: str | int) -> Manifest:
        return Manifest.load(self.folder(name))

    def whole_scans(self) -> Manifest:
        """The manifest of the whole-scan folder; says so when prep ran without ``--full-scans``."""
        manifest = self.manifest(FULL)
        if not manifest.whole_scans:
            raise MammoError(self.full_folder, "not a whole-scan prep output (run mammo prep with --full-scans)")
        return manifest

    def whole_scan_files(self, split: str) -> list[str]:
        """The whole-scan shards of ``split``; says so when there are none."""
        files = self.whole_scans().shard_files(split)
        if not files:
            raise MammoError(self.full_folder, f"no whole scans of the {split!r} split (prep with --full-scans)")
        return files

    def scans(self) -> dict[str, dict]:
        """``scans.json``: scan id → patient_id, split, source, file, sha256."""
        with open(self.scans_file) as f:
            return json.load(f)

    def link_split(self, split: str, raw: str, folder: str) -> int:
        """Symlink the scan files of ``split`` (below ``raw``) into ``folder`` as ``<scan id><ext>``, a folder
        for ``mammo predict``; returns how many."""
        os.makedirs(folder, exist_ok=True)
        n = 0
        for scan_id, info in sorted(self.scans().items()):
            if info["split"] != split:
                continue
            link = os.path.join(folder, scan_id + os.path.splitext(info["file"])[1])
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(os.path.join(raw, info["file"])), link)
            n += 1
        return n
