"""Curriculum: stages of one config, e.g. 320-px tiles → 640-px tiles → whole scans.

Each stage is the base config with the stage's ``data``/``train``/``loss`` overrides. Stage k writes
``<root>/stage<k>_<name>/`` and starts from stage k−1's ``best.keras`` (weights copied by layer
name: the network is fully convolutional, so every layer fits any input size). A finished stage
leaves ``done.json``; rerunning the same command skips finished stages and resumes the first
unfinished one from its last completed epoch.
"""

from __future__ import annotations

import json

from mammo_seg import atomic
from mammo_seg.config import ExperimentConfig, stage_configs
from mammo_seg.run_dir import RunDir
from mammo_seg.training.run import FoldPatients, StageResult, check_training_data, train_stage
from mammo_seg.training.strategy import is_chief, make_strategy


def run_curriculum(config: ExperimentConfig, root: str, progress: bool = True, fold: FoldPatients | None = None,
                   strategy=None, init_from: str | None = None) -> list[StageResult]:
    """Train every stage in turn under one strategy (created first, before any TensorFlow op); ``fold``: on a
    cross-validation fold's women (:mod:`mammo_seg.training.cross_val`); ``init_from``: what the first stage
    starts from (default ``train.init_from``), each later stage starting from the one before."""
    stages = stage_configs(config)
    for _, stage in stages:  # before the first stage trains: a later stage's data must do too
        check_training_data(stage, stage.data.path())
    strategy = strategy or make_strategy(stages[0][1].train.strategy)
    results, previous = [], init_from
    for folder, stage in stages:
        run = RunDir(root).stage(folder)
        if run.is_done():
            with open(run.done) as f:
                results.append(StageResult(**json.load(f)))
            previous = run.path
            continue
        result = train_stage(stage, run.path, resume=run.holds_run(), strategy=strategy, progress=progress,
                             init_from=previous, fold=fold)
        if is_chief():
            atomic.write_json(run.done, {"run_dir": result.run_dir, "epochs_done": result.epochs_done,
                                         "best": result.best, "logs": result.logs})
        results.append(result)
        previous = run.path
    return results
