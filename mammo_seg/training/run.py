"""One training stage: strategy → data → model → loss → optimizer → epochs, into a run directory
(its layout: :mod:`mammo_seg.run_dir`)."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from functools import partial

import numpy as np

from mammo_seg import atomic
from mammo_seg.config import ExperimentConfig, dump_config
from mammo_seg.data.prep_output import Manifest
from mammo_seg.errors import MammoError
from mammo_seg.run_dir import RunDir, load_keras, model_file
from mammo_seg.training import precision
from mammo_seg.training.strategy import cluster, is_chief, make_strategy

log = logging.getLogger("mammo_seg.train")


@dataclass
class StageResult:
    run_dir: str
    epochs_done: int
    best: float | None
    logs: dict


def _setup_logging(log_file: str, write: bool, echo: bool) -> None:
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if write:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(formatter)
        log.addHandler(handler)
    if echo:
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)


def transfer_weights(model, source_path: str) -> int:
    """Copy weights from a saved model, layer by layer by name (the net is fully convolutional, so
    every layer of a 320-px model fits a 640-px or whole-scan stage). Returns layers copied.

    A model of one input channel (the scan) starts a model that also takes the other breast
    (``data.contralateral``): the first convolution's kernel gets zero weights for the new channel, so the
    model starts as the same function of the scan."""
    source = load_keras(model_file(source_path))
    by_name = {layer.name: layer for layer in source.layers}
    copied = 0
    for layer in model.layers:
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        theirs = [_with_input_channels(w, tuple(mine.shape)) for w, mine in zip(other.get_weights(), layer.weights)]
        if [w.shape for w in theirs] != [tuple(w.shape) for w in layer.weights]:
            raise MammoError(source_path, f"layer {layer.name} has other shapes (was it trained with another "
                                          f"model.width?)")
        layer.set_weights(theirs)
        copied += 1
    if copied == 0:
        raise MammoError(source_path, "no layer of that model matches this one by name")
    return copied


def _with_input_channels(kernel: np.ndarray, shape: tuple) -> np.ndarray:
    """A convolution kernel (kh, kw, 1, filters) given zero weights for the input channels of ``shape`` it lacks;
    any other array as it is."""
    if kernel.ndim == 4 and kernel.shape[2] == 1 < shape[2] and kernel.shape[:2] + kernel.shape[3:] == \
            shape[:2] + shape[3:]:
        grown = np.zeros(shape, kernel.dtype)
        grown[:, :, :1] = kernel
        return grown
    return kernel


@dataclass(frozen=True)
class FoldPatients:
    """A cross-validation fold's women: the model trains on ``train`` and is watched (never chosen) on ``held_out``."""

    train: frozenset
    held_out: frozenset


def learning_rate(config: ExperimentConfig, steps_per_epoch: int):
    """``train.lr``; the original's staircase: × ``lr_decay`` (0.85) every ``lr_decay_epochs`` (15); or cosine
    decay to 0 over the stage (Loshchilov & Hutter 2017), after a linear warm-up of ``warmup_epochs``."""
    import keras

    train = config.train
    if train.schedule == "constant":
        return train.lr
    if train.schedule == "cosine":
        warmup = train.warmup_epochs * steps_per_epoch
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else train.lr, decay_steps=train.epochs * steps_per_epoch - warmup,
            warmup_target=train.lr if warmup else None, warmup_steps=warmup)
    return keras.optimizers.schedules.ExponentialDecay(train.lr, decay_steps=steps_per_epoch * train.lr_decay_epochs,
                                                       decay_rate=train.lr_decay, staircase=True)


def _optimizer(config: ExperimentConfig, steps_per_epoch: int):
    import keras

    train = config.train
    # with train.ema, Adam keeps the moving average a ← m·a + (1 − m)·w after each step (a = w after the first)
    # with train.weight_decay, before each step every kernel w ← w − lr·λ·w (AdamW, decoupled from the gradient)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate(config, steps_per_epoch), use_ema=train.ema > 0,
                                      ema_momentum=train.ema or 0.99, weight_decay=train.weight_decay or None)
    if train.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if train.mixed_precision in (True, "float16"):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_model(config: ExperimentConfig, resolution: dict, init_from: str | None = None):
    """The stage's model (its layers frozen as ``train.freeze`` says), initialised from ``init_from`` or
    ``train.init_from``; call it inside the strategy's scope."""
    from mammo_seg.models.fcn import MammoFCN

    model = MammoFCN(width=config.model.width, dropout=config.model.dropout, l2=config.model.l2,
                     sync_batchnorm=config.model.sync_batchnorm, bn_momentum=config.model.bn_momentum,
                     resolution=resolution, channels=2 if config.data.contralateral else 1, skips=config.model.skips)
    source = init_from or config.train.init_from
    if source:
        log.info("initialised %d layers from %s", transfer_weights(model, source), source)
    names = [layer.name for layer in model.layers]
    for prefix in config.train.freeze:
        if not any(name.startswith(prefix) for name in names):
            families = ", ".join(dict.fromkeys(name.split("_")[0] for name in names))
            raise MammoError("train.freeze", f"prefix {prefix!r} matches no layer of the model (its layer names "
                                             f"begin: {families})")
    for layer in model.layers:
        if any(layer.name.startswith(prefix) for prefix in config.train.freeze):
            layer.trainable = False
    return model


def build_callbacks(config: ExperimentConfig, run: RunDir, loss, saver, backup, chief: bool, initial_epoch: int):
    """The loss's own schedules (first: they set the epoch's loss before it runs), logging, history, TensorBoard,
    best/last checkpoints, the progress plot (after the validated epochs), the backup (last: it commits the epoch)."""
    import keras

    from mammo_seg.losses import loss_callbacks
    from mammo_seg.training.callbacks import EpochLog, ProgressPlot

    train = config.train
    callbacks = loss_callbacks(loss) + [EpochLog(train.epochs)]
    if chief:
        callbacks += [keras.callbacks.CSVLogger(run.history, append=initial_epoch > 0),
                      keras.callbacks.TensorBoard(run.tensorboard, write_graph=False)]
    plot = ProgressPlot(run.history, run.progress_plot, write=chief, drawn_after=partial(validates, train))
    return callbacks + [saver, plot, backup]


def train_stage(config: ExperimentConfig, run_dir: str, resume: bool = False, strategy=None,
                progress: bool = True, init_from: str | None = None, fold: FoldPatients | None = None) -> StageResult:
    """Train one stage as ``config`` says, writing ``run_dir``. ``init_from`` overrides ``train.init_from``;
    ``fold``: train on these women of the train split and watch the held-out ones (cross-validation). The
    process's Keras dtype policy is the stage's while it trains, and what it was before afterwards; so is its
    graph optimisation (:func:`~mammo_seg.training.step.reproducible_rewrites`)."""
    strategy = strategy or make_strategy(config.train.strategy)  # before any TF op
    import keras

    from mammo_seg.training.step import reproducible_rewrites

    before = keras.mixed_precision.global_policy()
    try:
        with reproducible_rewrites():
            return _train_stage(config, run_dir, resume, strategy, progress, init_from, fold)
    finally:
        keras.mixed_precision.set_global_policy(before)


def check_training_data(config: ExperimentConfig, data_dir: str) -> Manifest:
    """The manifest of the prep output ``data_dir``, refused (before any file is written) when it lacks what the
    config trains on."""
    manifest = Manifest.load(data_dir)
    if config.data.contralateral and not manifest.contralateral:
        raise MammoError(data_dir, "data.contralateral: these whole scans carry no other breast (prep them with "
                                   "prep.contralateral: true)")
    return manifest


def _train_stage(config: ExperimentConfig, run_dir: str, resume: bool, strategy, progress: bool,
                 init_from: str | None, fold: FoldPatients | None) -> StageResult:
    import keras
    import tensorflow as tf

    from mammo_seg.data.pipeline import count_records
    from mammo_seg.losses import get_loss
    from mammo_seg.metrics import standard_metrics
    from mammo_seg.models.deep_supervision import supervised
    from mammo_seg.training.callbacks import ModelSaver, TrainingBackup, truncate_history
    from mammo_seg.training.step import Steps

    train = config.train
    data_dir = config.data.path()
    manifest = check_training_data(config, data_dir)
    chief = is_chief()
    run = RunDir(run_dir)
    if chief and run.holds_run() and not resume:
        raise MammoError(run_dir, "run directory already holds a run; use --resume to continue it or another --out")
    os.makedirs(run_dir, exist_ok=True)
    _setup_logging(run.log, chief, progress)
    keras.utils.set_random_seed(config.seed)
    if resume:  # the precision the run started in, whatever this machine would choose now
        try:
            policy, why = precision.resolve_resumed(train.mixed_precision, run.recorded_precision(), strategy=strategy)
        except ValueError as e:
            raise MammoError(run.data_info, str(e)) from None
    else:
        policy, why = precision.resolve(train.mixed_precision, strategy=strategy)
    keras.mixed_precision.set_global_policy(policy)
    n_records = count_records(data_dir, config.data.train_split)
    if n_records == 0:
        raise MammoError(data_dir, f"no {config.data.train_split!r} records to train on")
    steps_per_epoch = train.steps_per_epoch or max(1, n_records // train.batch_size)
    has_val = bool(fold.held_out) if fold else manifest.has_split(config.data.val_split)
    monitor = train.checkpoint_metric if has_val or not train.checkpoint_metric.startswith("val_") \
        else train.checkpoint_metric[4:]
    if train.checkpoint == "last":
        monitor = None  # the run's model is last.keras
    with strategy.scope():  # before the run's files: a bad init_from or freeze prefix leaves no run behind
        model = build_model(config, manifest.resolution, init_from)
        trained, output_weights = supervised(model, train.deep_supervision)  # the model, or it and its heads
        loss = get_loss(config.loss)
        optimizer = _optimizer(config, steps_per_epoch)
        trained.compile(optimizer=optimizer, loss=loss, jit_compile=False)
        optimizer.build(trained.trainable_variables)
        train_metrics, val_metrics = standard_metrics(), standard_metrics()
    if chief:
        dump_config(config, run.config)
        atomic.write_json(run.data_info, {
            "data_dir": os.path.abspath(data_dir), "kind": manifest.kind, "tile_size": manifest.tile_size,
            "dataset": manifest.dataset, "crop": config.data.crop,
            "patients": sorted(fold.train) if fold else None, "precision": policy, "precision_reason": why})
    steps = Steps(trained, loss, optimizer, strategy, train_metrics, val_metrics, jit_compile=train.jit_compile,
                  output_weights=output_weights)

    saver = ModelSaver(run, model, monitor=monitor, write=chief)
    backup = TrainingBackup(run.backup, state_fn=lambda: {"best": saver.best}, write=chief)
    backup.set_model(trained)
    try:
        state = backup.restore() if resume else None
    except ValueError as e:  # weights or optimizer state of another model: a setting changed since the run began
        first = str(e).strip().splitlines()[0]
        raise MammoError(run.backup, f"the backup does not fit this model and optimizer ({first}); resume with the "
                                     f"settings the run began with (model.*, train.deep_supervision)") from None
    initial_epoch = state["epoch"] if state else 0
    saver.best = state.get("best") if state else None
    if chief:
        truncate_history(run.history, initial_epoch)
    callbacks = keras.callbacks.CallbackList(
        build_callbacks(config, run, loss, saver, backup, chief, initial_epoch), model=trained)

    _, workers = cluster()
    log.info("%s: %d replica(s), %d worker(s); %d records of %s, batch %d, %d steps/epoch, epochs %d-%d; %s (%s)",
             type(strategy).__name__, strategy.num_replicas_in_sync, workers, n_records, data_dir,
             train.batch_size, steps_per_epoch, initial_epoch + 1, train.epochs, policy, why)
    if initial_epoch >= train.epochs:
        log.info("nothing to do: %d of %d epochs already done", initial_epoch, train.epochs)
        return StageResult(run_dir, initial_epoch, saver.best, {})
    datasets = _Datasets(config, data_dir, strategy, workers, fold)
    try:
        logs = run_epochs(config, steps, datasets, callbacks, range(initial_epoch, train.epochs), steps_per_epoch,
                          validate=has_val, progress=progress and chief)
    except tf.errors.DataLossError as e:
        raise _unreadable_data(data_dir, manifest, e) from None
    return StageResult(run_dir, train.epochs, saver.best, logs)


def _unreadable_data(data_dir: str, manifest: Manifest, error) -> MammoError:
    """The one line of a shard that broke training (truncated or corrupted), naming the shard when it can be found;
    the epochs completed before it stay in the run (``--resume`` continues once the data are fixed)."""
    from mammo_seg.data.inspect import unreadable_data

    return unreadable_data(data_dir, [f for split in sorted(manifest.splits) for f in manifest.shard_files(split)],
                           error)


class _Datasets:
    """The stage's distributed ``tf.data`` pipelines: a new shuffled training pass per epoch, the validation split."""

    def __init__(self, config: ExperimentConfig, data_dir: str, strategy, workers: int,
                 fold: FoldPatients | None = None):
        self.config, self.data_dir, self.strategy, self.workers, self.fold = config, data_dir, strategy, workers, fold

    def _make(self, split: str, training: bool, epoch: int = 0, patients=None):
        from mammo_seg.data.pipeline import make_dataset

        data, train = self.config.data, self.config.train
        ds = make_dataset(self.data_dir, split, train.batch_size, training=training, seed=self.config.seed,
                          epoch=epoch, augmentation=data.augment, crop=data.crop,
                          shuffle_buffer=data.shuffle_buffer, num_workers=self.workers, patients=patients,
                          lesion_share=data.lesion_share, contralateral=data.contralateral,
                          background_quantile=data.background_quantile, lesion_offset=data.lesion_offset)
        if not training and train.validation_steps:
            ds = ds.take(train.validation_steps)
        return self.strategy.experimental_distribute_dataset(ds)

    def train(self, epoch: int):
        return self._make(self.config.data.train_split, True, epoch, self.fold and self.fold.train)

    def validation(self):
        if self.fold:
            return self._make(self.config.data.train_split, False, patients=self.fold.held_out)
        return self._make(self.config.data.val_split, False)


def run_epochs(config: ExperimentConfig, steps, datasets: _Datasets, callbacks, epochs, steps_per_epoch: int,
               validate: bool, progress: bool) -> dict:
    """The epoch loop: ``steps_per_epoch`` training steps, then the validation split (``validate``, on the epochs
    :func:`validates` names; the others log NaN for its figures), callbacks. After the last epoch's steps, with
    ``train.ema``, the weights become their moving average, which the last validation scores and the saver keeps."""
    import keras

    train_metrics, val_metrics = steps.train_metrics, steps.val_metrics
    val_data = datasets.validation() if validate else None
    logs = {}
    callbacks.on_train_begin()
    for epoch in epochs:
        callbacks.on_epoch_begin(epoch)
        for metric in train_metrics + val_metrics:
            metric.reset_state()
        started = time.perf_counter()
        iterator = iter(datasets.train(epoch))
        totals = {"loss": 0.0, "regularization": 0.0}
        bar = _progress(progress, steps_per_epoch, f"epoch {epoch + 1}/{config.train.epochs}")
        for step in range(steps_per_epoch):
            values = {k: float(v) for k, v in steps.train_step(iterator).items()}
            for name, value in values.items():
                if not math.isfinite(value):
                    raise FloatingPointError(f"{name} became {value} at epoch {epoch + 1}, step {step + 1}")
                totals[name] += value
            bar.update(1)
            bar.set_postfix({k: f"{v / (step + 1):.4f}" for k, v in totals.items()})
        bar.close()
        if epoch + 1 == config.train.epochs:  # train.ema: the stage's model is the average (no-op without it)
            steps.optimizer.finalize_variable_values(steps.model.trainable_variables)
        seconds = time.perf_counter() - started
        # "loss" is the data loss alone (an IoU loss stays in [0, 1]); "regularization" the weight decay
        logs = {**{k: v / steps_per_epoch for k, v in totals.items()},
                **{m.name: float(m.result()) for m in train_metrics},
                "learning_rate": float(keras.ops.convert_to_numpy(steps.optimizer.learning_rate)),
                "epoch_seconds": seconds, "tiles_per_second": steps_per_epoch * config.train.batch_size / seconds}
        if val_data is not None and validates(config.train, epoch):
            values = [float(steps.eval_step(batch)) for batch in val_data]
            logs["val_loss"] = sum(values) / max(1, len(values))
            logs.update({f"val_{m.name}": float(m.result()) for m in val_metrics})
        elif val_data is not None:  # NaN keeps history.csv's columns whichever epoch a run starts or resumes at
            logs.update({"val_loss": math.nan, **{f"val_{m.name}": math.nan for m in val_metrics}})
        callbacks.on_epoch_end(epoch, logs)
    callbacks.on_train_end(logs)
    return logs


def validates(train, epoch: int) -> bool:
    """Whether the validation split is scored after ``epoch`` (0-based): every ``train.validation_freq``-th epoch
    and the last, whose figures a run ends with."""
    return (epoch + 1) % train.validation_freq == 0 or epoch + 1 == train.epochs


def _progress(enabled: bool, total: int, description: str):
    """A progress bar on a terminal only: written to a file, redraws would bury the one line per epoch."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="step", disable=not (enabled and sys.stderr.isatty()),
                leave=False)
