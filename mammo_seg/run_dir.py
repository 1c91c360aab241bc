"""The run directory of ``mammo train``: where every file of a run lives, and which model a path stands for.

One stage (or a run without stages)::

    config.yaml     the resolved config          data.json     data folder, tile, dataset, the precision that ran
    train.log       a line per epoch              history.csv   every logged value per epoch
    tensorboard/    TensorBoard events            progress.png  loss, lesion IoU, precision, recall (redrawn
                                                                after each validated epoch)
    best.keras      best by ``train.checkpoint_metric`` (validation lesion IoU)
    last.keras      the latest epoch              backup/       the state ``--resume`` continues from
    done.json       a finished curriculum stage

A curriculum root holds one such directory per stage, ``stage<k>_<name>/``; the root stands for
its last stage with a model. A cross-validated run (``cv.folds: K``) holds one run directory per fold
and their ensemble::

    config.yaml       the resolved config           cv.json            the fold of every woman, the seed
    fold<k>/          fold k's run (stages inside)  ensemble.json      the members: each fold's model file
    operating_point.json  chosen on the pooled out-of-fold predictions
    oof.json          the out-of-fold figures the operating point was chosen on

and stands for the ensemble: the mean of its members' probabilities. With ``cv.nested`` it also holds::

    nested/without<i>-<j>/   a model trained without the women of folds i and j (every pair i < j)
    nested/fold<k>/          ensemble.json: the K-1 models ``without`` fold k, the mean that predicts fold k's
                             women when the operating point is chosen

Training writes this layout and prediction reads it; both ask here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from mammo_seg.errors import MammoError

_STAGE = re.compile(r"stage(\d+)_.*")
_FOLD = re.compile(r"fold(\d+)")


def stage_folder(number: int, name: str) -> str:
    """The folder name of curriculum stage ``number`` (counted from 1) called ``name``."""
    return f"stage{number}_{name}"


def _inside(name: str) -> property:
    return property(lambda self: self.file(name), doc=f"the path of ``{name}`` in this run directory")


class RunDir:
    """The files of one run directory (nothing is created or read until asked)."""

    CONFIG = "config.yaml"
    DATA_INFO = "data.json"
    LOG = "train.log"
    HISTORY = "history.csv"
    TENSORBOARD = "tensorboard"
    PROGRESS_PLOT = "progress.png"
    BEST_MODEL = "best.keras"
    LAST_MODEL = "last.keras"
    BACKUP = "backup"
    DONE = "done.json"
    FOLDS = "cv.json"
    ENSEMBLE = "ensemble.json"
    OUT_OF_FOLD = "oof.json"

    config = _inside(CONFIG)
    data_info = _inside(DATA_INFO)
    log = _inside(LOG)
    history = _inside(HISTORY)
    tensorboard = _inside(TENSORBOARD)
    progress_plot = _inside(PROGRESS_PLOT)
    best_model = _inside(BEST_MODEL)
    last_model = _inside(LAST_MODEL)
    backup = _inside(BACKUP)
    done = _inside(DONE)
    folds_file = _inside(FOLDS)
    ensemble = _inside(ENSEMBLE)
    out_of_fold = _inside(OUT_OF_FOLD)

    def __init__(self, path: str):
        self.path = path

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def holds_run(self) -> bool:
        """A run was started here (its config is written first), so it can be resumed."""
        return os.path.isfile(self.config)

    def is_done(self) -> bool:
        return os.path.isfile(self.done)

    def model(self) -> str | None:
        """Its ``best.keras``, else its ``last.keras``; None when it has neither."""
        for candidate in (self.best_model, self.last_model):
            if os.path.isfile(candidate):
                return candidate
        return None

    def recorded_precision(self) -> tuple[str, str] | None:
        """(the Keras dtype policy this run trained in, why), as its ``data.json`` records them; None where it
        records none (a run not started yet, or stopped before it wrote ``data.json``)."""
        try:
            with open(self.data_info) as f:
                info = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise MammoError(self.data_info, f"unreadable ({type(e).__name__}: {e})") from None
        if not isinstance(info, dict) or "precision" not in info:
            return None
        return info["precision"], info.get("precision_reason", "")

    def stage(self, folder: str) -> RunDir:
        return RunDir(self.file(folder))

    def stages(self) -> list[RunDir]:
        """The curriculum stage directories inside, in stage order."""
        if not os.path.isdir(self.path):
            return []
        folders = [d for d in os.listdir(self.path) if _STAGE.fullmatch(d) and os.path.isdir(self.file(d))]
        return [self.stage(d) for d in sorted(folders, key=lambda d: int(_STAGE.fullmatch(d)[1]))]

    def fold(self, number: int) -> RunDir:
        """Cross-validation fold ``number`` (counted from 1)."""
        return RunDir(self.file(f"fold{number}"))

    def folds(self, count: int) -> list[RunDir]:
        """Folds 1 to ``count``."""
        return [self.fold(k) for k in range(1, count + 1)]

    def without_folds(self, i: int, j: int) -> RunDir:
        """The nested cross-validation's model trained without the women of folds ``i`` and ``j``."""
        i, j = sorted((i, j))
        return RunDir(os.path.join(self.path, "nested", f"without{i}-{j}"))

    def nested_fold(self, number: int) -> RunDir:
        """The nested cross-validation's ensemble for fold ``number``'s women (its ``ensemble.json``)."""
        return RunDir(os.path.join(self.path, "nested", f"fold{number}"))

    def is_ensemble(self) -> bool:
        return os.path.isfile(self.ensemble)

    def write_ensemble(self, runs: list[RunDir]) -> str:
        """``ensemble.json``: the model file of each of ``runs`` (relative to this directory) and its SHA-256;
        returns its path."""
        from mammo_seg import atomic

        members = []
        for run in runs:
            found = run.final_run().model()
            if found is None:
                raise MammoError(run.path, "has no trained model")
            members.append({"file": os.path.relpath(found, self.path), "sha256": _sha256(found)})
        os.makedirs(self.path, exist_ok=True)
        atomic.write_json(self.ensemble, {"members": members})
        return self.ensemble

    def ensemble_members(self) -> list[str]:
        """The model files of ``ensemble.json``, each checked to exist and to be the file it was."""
        try:
            with open(self.ensemble) as f:
                members = json.load(f)["members"]
            files = [(os.path.join(self.path, m["file"]), m["sha256"]) for m in members]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise MammoError(self.ensemble, f"unreadable ensemble ({type(e).__name__}: {e})") from None
        for file, digest in files:
            if not os.path.isfile(file):
                raise MammoError(self.ensemble, f"member {os.path.relpath(file, self.path)} is missing")
            if _sha256(file) != digest:
                raise MammoError(self.ensemble, f"member {os.path.relpath(file, self.path)} changed since the "
                                                f"ensemble was made")
        if not files:
            raise MammoError(self.ensemble, "ensemble without members")
        return [file for file, _ in files]

    def trained_precision(self) -> str | None:
        """The precision the model this directory stands for was trained in, as recorded: its final run's, or
        its ensemble members' runs' when they agree, else "fold1: …, fold2: …"; None where a run recorded none."""
        if self.is_ensemble():
            runs = [RunDir(os.path.dirname(file)) for file in self.ensemble_members()]
        else:
            runs = [self.final_run()]
        recorded = [run.recorded_precision() for run in runs]
        if None in recorded:
            return None
        policies = [policy for policy, _ in recorded]
        if len(set(policies)) == 1:
            return policies[0]
        return ", ".join(f"{os.path.relpath(run.path, self.path)}: {policy}" for run, policy in zip(runs, policies))

    def final_run(self) -> RunDir:
        """The directory whose model this one stands for: a curriculum's last stage with a model, else itself."""
        for stage in reversed(self.stages()):
            if stage.model() is not None:
                return stage
        return self


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_keras(file: str):
    """One ``.keras`` file of this project in Keras safe mode (no Lambda layers, no pickles), with its registered
    layers and losses; a file Keras cannot load is one line naming it."""
    import keras

    import mammo_seg.losses  # noqa: F401  (registers the custom objects)
    import mammo_seg.models.fcn  # noqa: F401

    check_keras_archive(file)
    try:
        return keras.models.load_model(file, compile=False, safe_mode=True)
    except (ValueError, OSError, TypeError, KeyError) as e:
        message = " ".join(str(e).split())
        if "`Lambda` layer" in message:
            raise MammoError(file, "holds a Lambda layer (Python code inside the model): refused, models are "
                                   "loaded in Keras safe mode only") from None
        raise MammoError(file, f"cannot load the model ({message[:200]})") from None


def check_keras_archive(file: str) -> str:
    """``file`` when it is a ``.keras`` archive (a zip holding ``config.json``), else one line saying what it is:
    Keras itself calls a file that is not a zip "not found" and a zip without the config a missing "item"."""
    import zipfile

    if not os.path.isfile(file):
        raise MammoError(file, "model file not found")
    try:
        with zipfile.ZipFile(file) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as e:
        reason = "not a zip archive" if isinstance(e, zipfile.BadZipFile) else e.strerror or type(e).__name__
        raise MammoError(file, f"corrupt or truncated .keras model ({reason})") from None
    if "config.json" not in names:
        raise MammoError(file, "not a .keras model: the archive holds no config.json (the model's architecture)")
    return file


def model_files(path: str) -> tuple[str, list[str]]:
    """(what the model is known by, its ``.keras`` files): a run's ``ensemble.json`` and its members, else
    ``(model_file(path), [model_file(path)])``. The first names the operating point (beside it) and the run."""
    if os.path.isdir(path) and RunDir(path).is_ensemble():
        run = RunDir(path)
        return run.ensemble, run.ensemble_members()
    if os.path.basename(path) == RunDir.ENSEMBLE and os.path.isfile(path):
        run = RunDir(os.path.dirname(os.path.abspath(path)))
        return run.ensemble, run.ensemble_members()
    file = model_file(path)
    return file, [file]


def model_file(path: str) -> str:
    """A ``.keras`` file, a run directory (its best.keras, else last.keras) or a curriculum root (its last stage)."""
    if os.path.isfile(path):
        if not path.endswith(".keras"):
            raise MammoError(path, "not a .keras model file")
        return path
    if not os.path.isdir(path):
        raise MammoError(path, "no such model file or run directory")
    found = RunDir(path).final_run().model()
    if found is None:
        raise MammoError(path, f"no {RunDir.BEST_MODEL} or {RunDir.LAST_MODEL} in this run directory")
    return found

