"""Curriculum: stages of one config, e.g. 320-px tiles → 640-px tiles → whole scans.

Each stage is the base config with the stage's ``data``/``train``/``loss`` overrides. Stage k writes
``<root>/stage<k>_<name>/`` and starts from stage k−1's ``best.keras`` (weights copied by layer
name: the network is fully convolutional, so every layer fits any input size). A finished stage
leaves ``done.json``; rerunning the same command skips finished stages and resumes the first
unfinished one from its last completed epoch.
"""

from __future__ import annotations

import json
import os
import re

from mammo_seg.config import ExperimentConfig, stage_configs
from mammo_seg.training.run import StageResult, train_stage
from mammo_seg.training.strategy import is_chief, make_strategy

DONE = "done.json"


def run_curriculum(config: ExperimentConfig, root: str, progress: bool = True) -> list[StageResult]:
    """Train every stage in turn under one strategy (created first, before any TensorFlow op)."""
    stages = stage_configs(config)
    strategy = make_strategy(stages[0][1].train.strategy, stages[0][1].train.cpu_devices)
    results, previous = [], None
    for directory, stage in stages:
        run_dir = os.path.join(root, directory)
        done = os.path.join(run_dir, DONE)
        if os.path.isfile(done):
            with open(done) as f:
                results.append(StageResult(**json.load(f)))
            previous = run_dir
            continue
        resume = os.path.isfile(os.path.join(run_dir, "config.yaml"))
        result = train_stage(stage, run_dir, resume=resume, strategy=strategy, progress=progress,
                             init_from=previous)
        if is_chief():
            from mammo_seg.data.writer import atomic_write_json

            atomic_write_json(done, {"run_dir": result.run_dir, "epochs_done": result.epochs_done,
                                     "best": result.best, "logs": result.logs})
        results.append(result)
        previous = run_dir
    return results


def final_run(root: str) -> str:
    """The directory whose model a curriculum root stands for: its last stage with a model."""
    stages = sorted((d for d in os.listdir(root) if re.fullmatch(r"stage\d+_.*", d)
                     and os.path.isdir(os.path.join(root, d))), key=lambda d: int(re.match(r"stage(\d+)", d)[1]))
    for name in reversed(stages):
        run = os.path.join(root, name)
        if any(os.path.isfile(os.path.join(run, f)) for f in ("best.keras", "last.keras")):
            return run
    return root
