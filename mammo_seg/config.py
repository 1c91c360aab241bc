"""Experiment configs: YAML in, strict dataclasses out, ``--set a.b=c`` overrides.

An unknown key, a value of the wrong type or a bad choice is a :class:`MammoError` naming the key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field

import yaml

from mammo_seg.data.augment_config import AugmentConfig as AugmentSection
from mammo_seg.data.prep_output import is_output_folder
from mammo_seg.errors import MammoError
from mammo_seg.run_dir import stage_folder
from mammo_seg.training.precision import SETTINGS as PRECISIONS

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
SCHEDULES = ("original", "constant", "cosine")
CHECKPOINTS = ("best", "last")
OBJECTIVES = ("dice", "sensitivity")
MAX_SEED = 2**32 - 1  # NumPy's legacy seeding, which keras.utils.set_random_seed uses, takes no more
#: Keys that left the experiment config, and where they went (an error that says so, not "unknown key").
MOVED = {"train.pos_weight_decay": "moved to loss.pos_weight_decay, a parameter of the weighted_bce loss",
         "train.pos_weight_min": "moved to loss.pos_weight_min, a parameter of the weighted_bce loss",
         "train.cpu_devices": "moved out of the config: the MAMMO_CPU_DEVICES environment variable (tests only)"}


@dataclass
class PrepSection:
    """``mammo prep`` settings, the one place their defaults are written: the defaults of its flags (its
    ``--help`` prints them from here), the ``prep:`` section of a recipe and the keywords of
    ``data_prep.prepare.prepare``. :meth:`validate` checks them, :meth:`prep_config` turns them into the
    config the scan workers, the shard writer and the manifest share."""

    tiles: list = field(default_factory=lambda: [320, 640])  # tile sizes in training pixels; [] for none
    scale: float = 320 / 598  # training px per native px at 50 µm (the original's: Resolution's default)
    full_scans: bool = False  # also every scan whole, on the training grid (the whole-scan stage)
    roi_crops: int = 2  # crops around each abnormality
    random_crops: int = 4  # crops anywhere in each scan
    val_fraction: float = 0.1  # patients held out for validation
    test_fraction: float = 0.2  # patients held out for test when the dataset has no official split
    scans_per_shard: int = 64
    seed: int = 0  # split and crop positions
    # abnormality kinds (cases.KINDS: mass, calcification, architectural_distortion, asymmetry) stored as an
    # ignore region (mask value 2: neither lesion nor background), e.g. [calcification] at a grid too coarse
    # to show them
    ignore_kinds: list = field(default_factory=list)
    # whole scans also carry the same woman's other breast in the same view, mirrored (data/contralateral.py):
    # the second input channel of a model trained with data.contralateral
    contralateral: bool = False

    def validate(self) -> "PrepSection":
        """Itself when every setting can be used; else a :class:`MammoError` naming the flag."""
        from mammo_seg.data import MAX_TILE

        if not self.tiles and not self.full_scans:
            raise MammoError(None, "nothing to write: give --tiles and/or --full-scans")
        if any(not 16 <= t <= MAX_TILE for t in self.tiles):
            raise MammoError("--tiles", f"tile sizes must be from 16 to {MAX_TILE} px, "
                                        f"got {list(self.tiles)}")
        if not 0 < self.scale < float("inf"):
            raise MammoError("--scale", f"must be a positive number, got {self.scale}")
        for flag, value in (("--roi-crops", self.roi_crops), ("--random-crops", self.random_crops),
                            ("--seed", self.seed)):
            if value < 0:
                raise MammoError(flag, f"must be at least 0, got {value}")
        if self.scans_per_shard < 1:
            raise MammoError("--scans-per-shard", f"must be at least 1, got {self.scans_per_shard}")
        for flag, value in (("--val-fraction", self.val_fraction), ("--test-fraction", self.test_fraction)):
            if not 0 <= value < 1:
                raise MammoError(flag, f"must be in [0, 1), got {value}")
        from mammo_seg.data.cases import KINDS

        if not isinstance(self.ignore_kinds, (list, tuple)):
            raise MammoError("prep.ignore_kinds", f"must be a list of abnormality kinds, e.g. [calcification], got "
                                                  f"{self.ignore_kinds!r}")
        unknown = [str(k) for k in self.ignore_kinds if k not in KINDS]
        if unknown:
            raise MammoError("prep.ignore_kinds", f"unknown abnormality kind {unknown[0]!r}; choose from "
                                                  f"{', '.join(KINDS)} (MIAS CALC is calcification)")
        if self.contralateral and not self.full_scans:
            raise MammoError("--contralateral", "the other breast is stored with whole scans only: add --full-scans "
                                                "(a recipe's prep: full_scans: true)")
        if self.val_fraction + self.test_fraction >= 1:
            raise MammoError("--val-fraction", f"and --test-fraction must sum to less than 1, got "
                                               f"{self.val_fraction} and {self.test_fraction}")
        return self

    def prep_config(self, dataset: str, nominal_spacing_mm: float | None = None, resolution=None,
                    tiling=None):
        """The :class:`~mammo_seg.data.prep_config.PrepConfig` of a run on ``dataset`` (validated first).

        ``nominal_spacing_mm``: the dataset's spacing for files that carry none (kept in the manifest).
        ``resolution`` and ``tiling``, when given, replace the scale and the crop counts with finer
        objects (a :class:`~mammo_seg.data.resolution.Resolution`, a
        :class:`~mammo_seg.data.tiling.TilingConfig`); a resolution without a nominal spacing gets this one.
        """
        from mammo_seg.data.prep_config import PrepConfig
        from mammo_seg.data.resolution import Resolution
        from mammo_seg.data.tiling import TilingConfig

        self.validate()
        resolution = resolution or Resolution(scale=self.scale)
        if resolution.nominal_spacing_mm is None and nominal_spacing_mm is not None:
            resolution = dataclasses.replace(resolution, nominal_spacing_mm=nominal_spacing_mm)
        tiling = tiling or TilingConfig(roi_crops=self.roi_crops, random_crops=self.random_crops)
        return PrepConfig(dataset=dataset, tiles=tuple(int(t) for t in self.tiles), resolution=resolution,
                          tiling=tiling,
                          seed=self.seed, val_fraction=self.val_fraction, test_fraction=self.test_fraction,
                          scans_per_shard=self.scans_per_shard, full_scans=self.full_scans,
                          ignore_kinds=tuple(self.ignore_kinds), contralateral=bool(self.contralateral))

    @classmethod
    def default_text(cls, name: str) -> str:
        """The default of setting ``name`` as ``mammo prep --help`` prints it (lists comma-separated)."""
        value = getattr(cls(), name)
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclass
class OperatingPointSection:
    """After training: choose the decision threshold and minimum lesion area on validation whole scans."""

    enabled: bool = False
    split: str = "val"
    max_normal_rate: float = 0.25  # at most this share of lesion-free scans with any detection
    min_areas_mm2: list = field(default_factory=lambda: [0.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0])  # candidates
    # flip test-time augmentation candidates; [false, true]: try both
    flips: list = field(default_factory=lambda: [False])
    # "dice": the highest mean lesion Dice; "sensitivity": the highest lesion sensitivity with at most
    # max_fp_per_image false positives per image (then the highest Dice)
    objective: str = "dice"
    max_fp_per_image: float = 1.0


@dataclass
class CrossValSection:
    """K-fold cross-validation by woman (``cv:``): K models, each trained without one fold of the women and
    scored on it; the run's model is their ensemble, its operating point chosen on the pooled out-of-fold
    predictions (:mod:`mammo_seg.training.cross_val`)."""

    folds: int = 0  # 0: off (one model on the train split); else K >= 2
    seed: int | None = None  # the fold assignment's seed; null: the config's seed
    # nested: also a model without each pair of folds (K(K-1)/2 more), so that the operating point is chosen on
    # means of K-1 models that never saw the woman, as the shipped ensemble is a mean
    nested: bool = False


@dataclass
class DataSection:
    dir: str = ""  # a prep output (OUT) or one of its folders (OUT/320)
    tile: str = "320"  # the folder of OUT to train on: a tile size, or "full" for whole scans
    crop: int | None = None  # whole scans: train on crops of this size
    lesion_share: float = 0.0  # whole-scan crops: this share of crops centred on a lesion (nnU-Net: 1/3)
    # whole-scan crops: the others centred on breast at or above this quantile of its intensities (0: anywhere in it)
    background_quantile: float = 0.0
    # lesion crops: the lesion pixel up to this share of the half crop off the crop's centre (0: centred; 1: nnU-Net's)
    lesion_offset: float = 0.0
    # the other breast as the model's second input channel (a prep output written with prep.contralateral)
    contralateral: bool = False
    train_split: str = "train"
    val_split: str = "val"
    shuffle_buffer: int = 512
    augment: AugmentSection = field(default_factory=AugmentSection)

    def path(self) -> str:
        if is_output_folder(self.dir):
            return self.dir
        return os.path.join(self.dir, str(self.tile))


@dataclass
class ModelSection:
    width: float = 1.0
    dropout: float = 0.25
    l2: float = 0.00125  # Keras L2 factor (l2·Σw²): the 2018 code's 0.0025·Σw²/2, see models/fcn.py
    sync_batchnorm: bool = True
    bn_momentum: float = 0.99  # BatchNorm moving averages; short runs need less (0.9)
    skips: bool = False  # U-Net's skip connections from the encoder to the decoder (the 2018 network had none)


@dataclass
class TrainSection:
    epochs: int = 30
    steps_per_epoch: int | None = None  # default: one pass over the training records
    validation_steps: int | None = None  # default: the whole validation split
    validation_freq: int = 1  # validate every this many epochs, and after the last (Keras's fit(validation_freq))
    batch_size: int = 16  # global, over all replicas
    lr: float = 1e-3
    schedule: str = "original"  # "original": lr × 0.85 every 15 epochs (staircase); "constant"; "cosine" (to 0)
    warmup_epochs: int = 0  # cosine: linear warm-up from 0 over this many epochs
    lr_decay: float = 0.85
    lr_decay_epochs: int = 15
    strategy: str = "auto"
    mixed_precision: bool | str = False  # True or "float16" (loss scaling), "bfloat16", "auto" (precision.py)
    freeze: list = field(default_factory=list)  # layer-name prefixes kept frozen, e.g. ["conv", "pool"]
    init_from: str | None = None  # weights (by layer name) from a .keras file or a run directory
    checkpoint_metric: str = "val_lesion_iou"  # best.keras: highest value of this log
    checkpoint: str = "best"  # the run's model: "best" (best.keras by checkpoint_metric) or "last" (last epoch)
    jit_compile: bool = False  # XLA: 1.8x slower on CPU (environment_notes.md §3)
    deep_supervision: bool = False  # auxiliary heads on the decoder while training (models/deep_supervision.py)
    # Polyak averaging: the stage ends on the exponential moving average of its weights, this momentum a step (0: off)
    ema: float = 0.0
    # AdamW's decoupled weight decay λ on every kernel (not biases or batch-norm scales and offsets); 0: off
    weight_decay: float = 0.0


@dataclass
class StageSection:
    """One curriculum stage: a name and overrides of data/train/loss for that stage."""

    name: str = ""
    data: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    loss: dict | None = None


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    loss: dict = field(default_factory=lambda: {"name": "iou"})
    train: TrainSection = field(default_factory=TrainSection)
    stages: list = field(default_factory=list)  # of StageSection; empty: one stage from data/train/loss
    prep: PrepSection = field(default_factory=PrepSection)  # how the data were prepared (mammo prep --config)
    operating_point: OperatingPointSection = field(default_factory=OperatingPointSection)
    cv: CrossValSection = field(default_factory=CrossValSection)

    def validate(self, where: str = "config") -> "ExperimentConfig":
        from mammo_seg.losses import get_loss

        checks = [
            (_stays_inside(self.name), "name", f"must be a relative folder name that stays inside runs/, got "
                                               f"{self.name!r}"),
            (0 <= self.seed <= MAX_SEED, "seed", f"must be from 0 to {MAX_SEED} (2**32 - 1), got {self.seed}"),
            (self.train.strategy in STRATEGIES, "train.strategy", f"must be one of {', '.join(STRATEGIES)}"),
            (self.train.schedule in SCHEDULES, "train.schedule", f"must be one of {', '.join(SCHEDULES)}"),
            (self.train.mixed_precision in PRECISIONS, "train.mixed_precision",
             "must be false, true, float16, bfloat16 or auto"),
            (self.train.checkpoint in CHECKPOINTS, "train.checkpoint", f"must be one of {', '.join(CHECKPOINTS)}"),
            (0 <= self.train.warmup_epochs < self.train.epochs, "train.warmup_epochs",
             "must be at least 0 and fewer than train.epochs"),
            (self.cv.folds == 0 or self.cv.folds >= 2, "cv.folds", "must be 0 (off) or at least 2"),
            (not self.cv.nested or self.cv.folds >= 3, "cv.nested", "needs cv.folds of at least 3 (a model "
                                                                    "without two folds trains on a third fold)"),
            (self.cv.seed is None or 0 <= self.cv.seed <= MAX_SEED, "cv.seed",
             f"must be from 0 to {MAX_SEED}, or null for the config's seed"),
            (self.operating_point.objective in OBJECTIVES, "operating_point.objective",
             f"must be one of {', '.join(OBJECTIVES)}"),
            (self.operating_point.max_fp_per_image > 0, "operating_point.max_fp_per_image", "must be positive"),
            (0 <= self.data.lesion_share <= 1, "data.lesion_share", "must be in [0, 1]"),
            (self.data.lesion_share == 0 or self.data.crop is not None, "data.lesion_share",
             "needs data.crop (lesion crops are cut from whole scans)"),
            (0 <= self.data.background_quantile < 1, "data.background_quantile", "must be in [0, 1)"),
            (0 <= self.data.lesion_offset <= 1, "data.lesion_offset", "must be in [0, 1]"),
            (self.data.background_quantile == 0 or self.data.crop is not None, "data.background_quantile",
             "needs data.crop (crops are cut from whole scans)"),
            (not self.data.contralateral or str(self.data.tile) == "full", "data.contralateral",
             "needs data.tile: full (the other breast is stored with whole scans)"),
            (self.train.epochs >= 1, "train.epochs", "must be at least 1"),
            (0 <= self.train.ema < 1, "train.ema", "must be in [0, 1) (0: off)"),
            (0 <= self.train.weight_decay < math.inf, "train.weight_decay", "must be a finite number, at least 0"),
            (self.train.batch_size >= 1, "train.batch_size", "must be at least 1"),
            (0 < self.train.lr < math.inf, "train.lr", f"must be a positive finite number, got {self.train.lr}"),
            (0 < self.train.lr_decay < math.inf, "train.lr_decay",
             f"must be a positive finite number, got {self.train.lr_decay}"),
            (self.train.lr_decay_epochs >= 1, "train.lr_decay_epochs", "must be at least 1"),
            (self.train.steps_per_epoch is None or self.train.steps_per_epoch >= 1, "train.steps_per_epoch",
             "must be at least 1, or null for one pass over the training records"),
            (self.train.validation_steps is None or self.train.validation_steps >= 1, "train.validation_steps",
             "must be at least 1, or null for the whole validation split"),
            (self.train.validation_freq >= 1, "train.validation_freq", "must be at least 1"),
            (self.train.checkpoint_metric in checkpoint_metrics(), "train.checkpoint_metric",
             f"must be one of {', '.join(checkpoint_metrics())}, got {self.train.checkpoint_metric!r}"),
            (self.data.shuffle_buffer >= 1, "data.shuffle_buffer", "must be at least 1"),
            (self.data.crop is None or self.data.crop >= 16, "data.crop", "must be at least 16, or null"),
            (0 < self.model.width < math.inf, "model.width", "must be a positive finite number"),
            (0 <= self.model.l2 < math.inf, "model.l2", "must be a finite number, at least 0"),
            (0 <= self.model.dropout < 1, "model.dropout", "must be in [0, 1)"),
            (0 <= self.model.bn_momentum < 1, "model.bn_momentum", "must be in [0, 1)"),
            (bool(self.data.dir), "data.dir", "is required (a `mammo prep` output)"),
            (all(isinstance(p, str) and p for p in self.train.freeze), "train.freeze",
             f"must be a list of layer-name prefixes (non-empty strings), got {self.train.freeze!r}"),
        ]
        for ok, key, reason in checks:
            if not ok:
                raise MammoError(f"{where}: {key}", reason)
        for key, reason in self.data.augment.problems():
            raise MammoError(f"{where}: data.augment.{key}", reason)
        try:
            get_loss(self.loss)  # built, so that its parameters' values are checked too
        except MammoError as e:
            raise MammoError(f"{where}: {e.where}", e.reason) from None
        for i, stage in enumerate(self.stages):
            if not stage.name:
                raise MammoError(f"{where}: stages[{i}].name", "every stage needs a name")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _stays_inside(name: str) -> bool:
    """A run name is a relative path of plain folder names (curriculum stages add ``/<stage>``)."""
    parts = name.replace("\\", "/").split("/")
    return bool(name) and not os.path.isabs(name) and all(p not in ("", ".", "..") for p in parts) \
        and ":" not in name


def checkpoint_metrics() -> tuple[str, ...]:
    """Logs that ``best.keras`` can follow: every standard metric, on training or validation data."""
    from mammo_seg.metrics import ALL

    names = [cls.default_name for cls in ALL]
    return tuple(f"val_{n}" for n in names) + tuple(names)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value, tp, key: str, where: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, where)
            except MammoError as e:
                errors.append(e)
        raise MammoError(f"{where}: {key}", f"expected {' or '.join(_type_name(o) for o in options)}, "
                                            f"got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, prefix=f"{key}.")
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise MammoError(f"{where}: {key}", f"expected a list, got {value!r}")
        if key == "stages":
            return [from_dict(StageSection, v, where, prefix=f"stages[{i}].") for i, v in enumerate(value)]
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise MammoError(f"{where}: {key}", f"expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise MammoError(f"{where}: {key}", f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise MammoError(f"{where}: {key}", f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):  # YAML 1.1 reads 1e-4 as a string
            return float(value)
        raise MammoError(f"{where}: {key}", f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise MammoError(f"{where}: {key}", f"expected a string, got {value!r}")
    return value


def _unknown_key(key, names, prefix: str) -> str:
    """The reason of an unknown key: the nearest known key (difflib), then all of them."""
    near = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    hint = f"; did you mean {prefix}{near[0]}?" if near else ""
    return f"unknown key{hint} (known: {', '.join(sorted(names))})"


def _from_set(error: MammoError, path: str, overrides) -> MammoError:
    """``error`` said of the ``--set`` that gave its key, when one did (else ``error`` itself)."""
    where = error.where or ""
    key = where[len(path) + 2:].replace(": ", ".") if where.startswith(f"{path}: ") else ""  # stages[1]: train.lr
    given = [parse_override(text)[0] for text in overrides]
    if key and any(k == key or k.startswith(key + ".") for k in given):
        return MammoError(f"--set {key}", error.reason)
    return error


def from_dict(cls, data, where: str = "config", prefix: str = ""):
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are errors naming the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MammoError(f"{where}: {prefix.rstrip('.') or 'top level'}", f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise MammoError(f"{where}: {prefix}{key}",
                             MOVED.get(f"{prefix}{key}", _unknown_key(key, names, prefix)))
    values = {k: _coerce(v, hints[k], f"{prefix}{k}", where) for k, v in data.items()}
    return cls(**values)


_KEY_PART = re.compile(r"([^.\[\]]+)((?:\[-?\d+\])*)")


def set_key(tree: dict, dotted: str, value) -> None:
    """``tree['a']['b'] = value`` for ``dotted='a.b'``, creating mappings on the way; ``a[i]`` is item ``i`` (from
    the end where negative) of the list ``a`` already holds, e.g. ``stages[-1].train.epochs``."""
    steps: list = []
    for part in dotted.split("."):
        match = _KEY_PART.fullmatch(part)
        if not match:
            raise MammoError(f"--set {dotted}", f"{part!r} is not a key or key[index]")
        steps += [match.group(1), *(int(i) for i in re.findall(r"-?\d+", match.group(2)))]
    node, path = tree, ""
    for k, step in enumerate(steps):
        if isinstance(step, int):
            if not isinstance(node, list):
                raise MammoError(f"--set {dotted}", f"{path!r} is not a list")
            if not -len(node) <= step < len(node):
                raise MammoError(f"--set {dotted}", f"{path!r} has {len(node)} items: no item [{step}]")
            inner = f"{path}[{step}]"
        else:
            if not isinstance(node, dict):
                raise MammoError(f"--set {dotted}", f"{path!r} is not a mapping")
            inner = f"{path}.{step}" if path else step
        if k == len(steps) - 1:
            node[step] = value
            return
        if isinstance(step, str) and not isinstance(steps[k + 1], int):
            node.setdefault(step, {})  # mappings are made on the way; a list must be there already
        node, path = node[step] if isinstance(step, int) else node.get(step), inner


def parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise MammoError(f"--set {text}", "expected key=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise MammoError(f"--set {text}", f"value is not valid YAML ({e})") from None


def read_yaml(path: str, sections: str) -> dict:
    """A YAML file holding a mapping; a missing file, bad YAML or another shape is a one-line error.

    YAML aliases (``*name``) are refused: a few hundred bytes of nested aliases (an "alias bomb") expand
    to gigabytes when the resolved config is written, and no setting needs them.
    """
    if not os.path.isfile(path):
        raise MammoError(path, "config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for event in yaml.parse(text, Loader=_UniqueKeyLoader):
            if isinstance(event, yaml.AliasEvent):
                line = event.start_mark.line + 1
                raise MammoError(path, f"line {line}: YAML aliases (*{event.anchor}) are not accepted; write the "
                                       f"value out")
        tree = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        raise MammoError(path, f"not valid YAML ({' '.join(str(e).split())})") from None
    except UnicodeDecodeError as e:
        raise MammoError(path, f"not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except OSError as e:
        raise MammoError(path, f"cannot be read ({e.strerror})") from None
    if not isinstance(tree, dict):
        raise MammoError(path, f"expected a mapping of sections ({sections})")
    return tree


def load_prep_config(path: str) -> PrepSection:
    """The ``prep:`` section of a recipe (a training config); absent: the defaults."""
    tree = read_yaml(path, "prep, and the training sections")
    return from_dict(PrepSection, tree.get("prep"), where=path, prefix="prep.")


def load_config(path: str, overrides=()) -> ExperimentConfig:
    """Read a YAML config, apply ``key=value`` overrides, and validate it."""
    tree = read_yaml(path, "name, seed, data, model, loss, train, stages")
    if "loss" not in tree or (isinstance(tree["loss"], dict) and "name" not in tree["loss"]):
        tree["loss"] = {**ExperimentConfig().loss, **(tree.get("loss") or {})}  # overrides refine the default
    for text in overrides:
        set_key(tree, *parse_override(text))
    try:
        config = from_dict(ExperimentConfig, tree, where=path)
    except MammoError as e:
        raise _from_set(e, path, overrides) from None
    base = os.path.dirname(os.path.abspath(path))
    if config.data.dir and not os.path.isabs(config.data.dir) and not os.path.exists(config.data.dir):
        candidate = os.path.join(base, config.data.dir)
        if os.path.exists(candidate):
            config.data.dir = candidate
    config.validate(path)
    try:
        stage_configs(config, path)  # every stage must be valid before anything trains
    except MammoError as e:
        raise _from_set(e, path, overrides) from None
    return config


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def stage_configs(config: ExperimentConfig, where: str = "config") -> list[tuple[str, ExperimentConfig]]:
    """(directory name, config) per curriculum stage: the base config with the stage's ``data``,
    ``train`` and ``loss`` overrides. A config without stages is one stage with directory name ""."""
    if not config.stages:
        return [("", config)]
    base = config.to_dict()
    base.pop("stages")
    stages = []
    for k, stage in enumerate(config.stages, start=1):
        tree = _merge(base, {"data": stage.data, "train": stage.train})
        if stage.loss is not None:
            tree["loss"] = stage.loss
        tree["name"] = f"{config.name}/{stage.name}"
        label = f"{where}: stages[{k - 1}]"
        stages.append((stage_folder(k, stage.name), from_dict(ExperimentConfig, tree, where=label).validate(label)))
    return stages


def dump_config(config: ExperimentConfig, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)
