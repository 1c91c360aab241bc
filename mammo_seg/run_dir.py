"""The run directory of ``mammo train``: where every file of a run lives, and which model a path stands for.

One stage (or a run without stages)::

    config.yaml     the resolved config          data.json     data folder, tile, dataset
    train.log       a line per epoch              history.csv   every logged value per epoch
    tensorboard/    TensorBoard events            progress.png  loss, lesion IoU, precision, recall
    best.keras      best by ``train.checkpoint_metric`` (validation lesion IoU)
    last.keras      the latest epoch              backup/       the state ``--resume`` continues from
    done.json       a finished curriculum stage

A curriculum root holds one such directory per stage, ``stage<k>_<name>/``; the root stands for
its last stage with a model. Training writes this layout and prediction reads it; both ask here.
"""

from __future__ import annotations

import os
import re

from mammo_seg.errors import MammoError

_STAGE = re.compile(r"stage(\d+)_.*")


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

    def stage(self, folder: str) -> RunDir:
        return RunDir(self.file(folder))

    def stages(self) -> list[RunDir]:
        """The curriculum stage directories inside, in stage order."""
        if not os.path.isdir(self.path):
            return []
        folders = [d for d in os.listdir(self.path) if _STAGE.fullmatch(d) and os.path.isdir(self.file(d))]
        return [self.stage(d) for d in sorted(folders, key=lambda d: int(_STAGE.fullmatch(d)[1]))]

    def final_run(self) -> RunDir:
        """The directory whose model this one stands for: a curriculum's last stage with a model, else itself."""
        for stage in reversed(self.stages()):
            if stage.model() is not None:
                return stage
        return self


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

