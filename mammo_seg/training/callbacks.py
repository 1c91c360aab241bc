"""Keras callbacks of a training run: backup/restore, checkpoints, log, plot (a loss's own schedules:
:func:`mammo_seg.losses.loss_callbacks`).

Files are replaced atomically (:mod:`mammo_seg.atomic`), so a run killed at any moment leaves every
file either in its old or its new state.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import warnings

import keras
import numpy as np

from mammo_seg import atomic
from mammo_seg.run_dir import RunDir

log = logging.getLogger("mammo_seg.train")


class TrainingBackup(keras.callbacks.Callback):
    """Backs up the training state at the end of every epoch; :meth:`restore` brings it back.

    Like ``keras.callbacks.BackupAndRestore``, but the model weights, the optimizer state (Adam
    moments, iteration count, hence the learning-rate schedule; the loss scale), the dropout RNG
    state and the epoch number are committed together by one directory rename: Keras's callback writes the weights and
    then a separate metadata file, so a ``kill -9`` between the two would repeat an epoch. Put it
    last in the callback list, so that an epoch's other outputs are written before it counts as done.
    """

    def __init__(self, directory: str, state_fn=None, write: bool = True):
        super().__init__()
        self.directory, self.state_fn, self.write = directory, state_fn or (lambda: {}), write

    def _latest(self) -> str | None:
        if not os.path.isdir(self.directory):
            return None
        done = sorted(d for d in os.listdir(self.directory) if d.startswith("epoch-")
                      and os.path.isfile(os.path.join(self.directory, d, "state.json")))
        return os.path.join(self.directory, done[-1]) if done else None

    def restore(self) -> dict | None:
        """Load the latest backup into the model and its optimizer; returns its state (``epoch``: epochs done)."""
        latest = self._latest()
        if latest is None:
            return None
        with warnings.catch_warnings(record=True) as caught:  # Keras skips what does not fit with a warning
            warnings.simplefilter("always")
            self.model.load_weights(os.path.join(latest, "model.weights.h5"))
        skipped = [str(w.message).strip() for w in caught if "Skipping variable loading" in str(w.message)]
        if skipped:
            raise ValueError(skipped[0])
        with np.load(os.path.join(latest, "state.npz")) as saved:
            values = [saved[f"v{i}"] for i in range(len(saved.files))]
        variables = self._state_variables()
        if len(values) != len(variables):
            raise ValueError(f"{latest}: backup holds {len(values)} state variables, expected {len(variables)}")
        for variable, value in zip(variables, values):
            variable.assign(value)
        with open(os.path.join(latest, "state.json")) as f:
            return json.load(f)

    def _state_variables(self):
        """Optimizer variables, and model variables that are not weights (the dropout RNG state)."""
        weights = {id(w) for w in self.model.weights}
        return list(self.model.optimizer.variables) + [v for v in self.model.variables if id(v) not in weights]

    def on_epoch_end(self, epoch, logs=None):
        if not self.write:
            return
        os.makedirs(self.directory, exist_ok=True)
        staging = os.path.join(self.directory, f".staging-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        self.model.save_weights(os.path.join(staging, "model.weights.h5"))
        values = {f"v{i}": np.asarray(keras.ops.convert_to_numpy(v)) for i, v in
                  enumerate(self._state_variables())}
        np.savez(os.path.join(staging, "state.npz"), **values)
        with open(os.path.join(staging, "state.json"), "w") as f:
            json.dump({"epoch": epoch + 1, **self.state_fn()}, f)
        final = os.path.join(self.directory, f"epoch-{epoch + 1:05d}")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if path != final and (name.startswith("epoch-") or name.startswith(".staging-")):
                shutil.rmtree(path, ignore_errors=True)


class ModelSaver(keras.callbacks.Callback):
    """``last.keras`` every epoch and ``best.keras`` when ``monitor`` reaches a new maximum (atomically), of
    ``model``: the network, which is not the model trained when deep supervision adds its heads."""

    def __init__(self, run: RunDir, model, monitor: str = "val_lesion_iou", best: float | None = None,
                 write: bool = True):
        super().__init__()
        self.run, self.saved, self.monitor, self.best, self.write = run, model, monitor, best, write

    def _save(self, path: str):
        with atomic.replacing(path) as tmp:
            self.saved.save(tmp)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        improved = value is not None and np.isfinite(value) and (self.best is None or value > self.best)
        if improved:
            self.best = float(value)
        if not self.write:
            return
        self._save(self.run.last_model)
        if improved:
            self._save(self.run.best_model)
            log.info("epoch %d: %s improved to %.4f, saved %s", epoch + 1, self.monitor, value, RunDir.BEST_MODEL)


class EpochLog(keras.callbacks.Callback):
    """One line per epoch in ``train.log``."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        text = "  ".join(f"{k} {v:.4g}" for k, v in sorted((logs or {}).items())
                         if not (k.startswith("val_") and np.isnan(v)))  # an epoch without validation
        log.info("epoch %d/%d  %s", epoch + 1, self.epochs, text)


class ProgressPlot(keras.callbacks.Callback):
    """``progress.png``: loss, lesion IoU, precision and recall per epoch (train and validation), drawn after the
    epochs ``drawn_after(epoch)`` names (0-based; default every one) and after the first epoch of a run without the
    file: the run passes its validated epochs, since drawing takes about half a CPU second."""

    PANELS = (("loss", "loss"), ("lesion_iou", "lesion IoU"), ("precision", "pixel precision"),
              ("recall", "pixel recall"))

    def __init__(self, history_csv: str, path: str, write: bool = True, drawn_after=lambda epoch: True):
        super().__init__()
        self.history_csv, self.path, self.write, self.drawn_after = history_csv, path, write, drawn_after

    def on_epoch_end(self, epoch, logs=None):
        if self.write and (self.drawn_after(epoch) or not os.path.isfile(self.path)) and \
                os.path.isfile(self.history_csv):
            plot_history(read_history(self.history_csv), self.path, self.PANELS)


def read_history(path: str) -> list[dict]:
    """history.csv as dicts of floats; "NA" (Keras's CSVLogger fills val_ columns with it when a run
    has no validation), "nan" (an epoch that was not validated, ``train.validation_freq``) and empty cells are
    left out."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", "NA", "nan", None)}
                for row in csv.DictReader(f)]


def truncate_history(path: str, epochs_done: int) -> None:
    """Drop rows of epochs that were not committed by the last backup (before appending again)."""
    if not os.path.isfile(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) < epochs_done]
    with atomic.replacing(path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(kept)


def plot_history(rows: list[dict], path: str, panels) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    for ax, (key, title) in zip(np.atleast_1d(axes), panels):
        for prefix, style in (("", "-"), ("val_", "--")):
            points = [(e, r[prefix + key]) for e, r in zip(epochs, rows) if prefix + key in r]
            if points:
                ax.plot(*zip(*points), style, marker="o", ms=3, label="validation" if prefix else "train")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
