"""``mammo study``: the same model trained under each loss, several seeds, equal step budget.

A study config (``experiments/loss_study/``) holds a base experiment, the losses to compare (each
a loss spec, optionally with ``train`` overrides such as a learning rate) and the seeds. Every
(loss, seed) run trains with the base config's step budget and is scored on the held-out test
split with its best checkpoint (by validation lesion IoU) at threshold 0.5. Outputs in ``--out``:

``results.csv`` and ``results.md`` (lesion IoU, Dice, pixel precision and recall, image-level recall:
mean ± sd over seeds), ``precision_recall.png`` (validation precision and recall per epoch, per
loss), ``val_iou.png`` (validation lesion IoU per epoch), and ``runs/<loss>/seed<k>/`` (each a run
directory). Rerunning skips finished runs, so an interrupted study continues where it stopped.
When ``data.dir`` holds no prep output, the phantom benchmark described by ``benchmark`` is built
there first (synth + prep, by the builder the caller passes: ``mammo study`` passes
``data_prep.benchmark.build_phantom_benchmark``), so one command runs the whole study.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mammo_seg import atomic
from mammo_seg.config import ExperimentConfig, _merge, from_dict, parse_override, read_yaml, set_key
from mammo_seg.data.prep_output import is_output_folder
from mammo_seg.errors import MammoError
from mammo_seg.run_dir import RunDir, load_keras

METRICS = (("lesion_iou", "lesion IoU"), ("lesion_dice", "Dice"), ("precision", "pixel precision"),
           ("recall", "pixel recall"), ("image_recall", "image-level recall"))


@dataclass
class BenchmarkSection:
    """A phantom benchmark: CBIS-DDSM phantoms prepared into tiles (built when missing)."""

    patients: int = 24
    seed: int = 11
    synth_scale: float = 0.25
    tiles: list = field(default_factory=lambda: [128])
    scale: float = 0.1
    roi_crops: int = 1
    random_crops: int = 6
    workers: int = 2


@dataclass
class StudyConfig:
    name: str = "loss_study"
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    experiment: dict = field(default_factory=dict)
    losses: dict = field(default_factory=dict)
    benchmark: BenchmarkSection | None = None
    test_split: str = "test"

    def runs(self, where: str, out: str = "runs/loss_study") -> list[tuple[str, int, ExperimentConfig]]:
        """(loss name, seed, config) for every run, each checked like a training config; ``data.dir``
        defaults to ``<out>/data``."""
        if not self.losses:
            raise MammoError(f"{where}: losses", "name at least one loss to compare")
        runs = []
        for name, spec in self.losses.items():
            if not isinstance(spec, dict) or "loss" not in spec or set(spec) - {"loss", "train"}:
                raise MammoError(f"{where}: losses.{name}", "expected {loss: <loss spec>, train: <overrides>}")
            for seed in self.seeds:
                tree = _merge(self.experiment, {"train": spec.get("train", {})})
                tree.update({"loss": spec["loss"], "seed": seed, "name": f"{self.name}/{name}/seed{seed}"})
                tree.setdefault("data", {}).setdefault("dir", os.path.join(out, "data"))
                label = f"{where}: losses.{name}"
                runs.append((name, seed, from_dict(ExperimentConfig, tree, where=label).validate(label)))
        return runs


def load_study(path: str, overrides=()) -> StudyConfig:
    tree = read_yaml(path, "name, seeds, benchmark, experiment, losses, test_split")
    for text in overrides:
        set_key(tree, *parse_override(text))
    study = from_dict(StudyConfig, tree, where=path)
    study.runs(path)
    return study


def test_metrics(run_dir: str, data_dir: str, split: str, batch_size: int) -> dict:
    """The run's best checkpoint on a split: the standard metrics at threshold 0.5."""
    from mammo_seg.data.pipeline import make_dataset
    from mammo_seg.metrics import standard_metrics

    model = load_keras(RunDir(run_dir).best_model)
    metrics = standard_metrics()
    for x, y in make_dataset(data_dir, split, batch_size, training=False,
                             contralateral=getattr(model, "channels", 1) == 2):
        logits = model(x, training=False)
        for m in metrics:
            m.update_state(y, logits)
    return {m.name: float(m.result()) for m in metrics}


def run_study(study: StudyConfig, out: str, progress: bool = True,
              build_benchmark: Callable[[BenchmarkSection, str, str], None] | None = None) -> dict:
    """Train and score every (loss, seed) run into ``out``. ``build_benchmark(benchmark, raw, data)`` builds the
    phantom benchmark when ``data.dir`` holds no prep output (the library does not prepare datasets itself)."""
    from mammo_seg.training.callbacks import read_history
    from mammo_seg.training.run import train_stage
    from mammo_seg.training.strategy import make_strategy

    runs = study.runs("study", out)
    base = runs[0][2]
    data_dir = base.data.path()
    if not is_output_folder(data_dir):
        if study.benchmark is None:
            raise MammoError(data_dir, "no prep output here and no benchmark section to build one")
        if build_benchmark is None:
            raise MammoError(data_dir, "no prep output here, and no benchmark builder was given to build one")
        print(f"building the phantom benchmark in {base.data.dir}")
        build_benchmark(study.benchmark, os.path.join(os.path.dirname(os.path.abspath(base.data.dir)), "raw"),
                        base.data.dir)
    strategy = make_strategy(base.train.strategy)
    results = []
    for k, (name, seed, config) in enumerate(runs, start=1):
        run = RunDir(os.path.join(out, "runs", name, f"seed{seed}"))
        done = run.file("test_metrics.json")
        if not os.path.isfile(done):
            print(f"[{k}/{len(runs)}] {name}, seed {seed}", flush=True)
            train_stage(config, run.path, resume=run.holds_run(), strategy=strategy, progress=progress)
            scores = test_metrics(run.path, data_dir, study.test_split, config.train.batch_size)
            atomic.write_json(done, scores)
        with open(done) as f:
            scores = json.load(f)
        results.append({"loss": name, "seed": seed, **scores,
                        "history": read_history(run.history)})
    summary = summarise(results, [name for name in study.losses])
    write_tables(summary, out, study, base, data_dir)
    plot_curves(results, [name for name in study.losses], out)
    return summary


def summarise(results: list[dict], losses: list[str]) -> list[dict]:
    rows = []
    for name in losses:
        mine = [r for r in results if r["loss"] == name]
        row = {"loss": name, "seeds": len(mine)}
        for key, _ in METRICS:
            values = np.array([r[key] for r in mine], dtype=float)
            row[f"{key}_mean"] = float(values.mean())
            row[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    return rows


def write_tables(rows: list[dict], out: str, study: StudyConfig, base: ExperimentConfig, data_dir: str) -> None:
    os.makedirs(out, exist_ok=True)
    fields = ["loss", "seeds"] + [f"{k}_{s}" for k, _ in METRICS for s in ("mean", "sd")]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    budget = f"{base.train.epochs} epochs × {base.train.steps_per_epoch or 'all'} steps × batch {base.train.batch_size}"
    lines = [f"# {study.name}: test split of `{data_dir}`, threshold 0.5, mean ± sd over seeds {study.seeds}",
             "", f"Every loss: the same model (width {base.model.width}) and step budget ({budget}); best checkpoint "
             "by validation lesion IoU.", "",
             "| loss | " + " | ".join(label for _, label in METRICS) + " |",
             "|---" * (len(METRICS) + 1) + "|"]
    best = {key: max(r[f"{key}_mean"] for r in rows) for key, _ in METRICS}
    for row in rows:
        cells = []
        for key, _ in METRICS:
            mean, sd = row[f"{key}_mean"], row[f"{key}_sd"]
            text = f"{mean:.3f} ± {sd:.3f}" if not math.isnan(sd) else f"{mean:.3f}"
            cells.append(f"**{text}**" if mean == best[key] else text)
        lines.append(f"| {row['loss']} | " + " | ".join(cells) + " |")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _curve(results, name, key):
    """Mean and sd over seeds of ``key`` per epoch."""
    curves = [[h.get(key, math.nan) for h in r["history"]] for r in results if r["loss"] == name]
    length = min(len(c) for c in curves)
    values = np.array([c[:length] for c in curves], dtype=float)
    return np.arange(1, length + 1), values.mean(axis=0), values.std(axis=0)


def plot_curves(results: list[dict], losses: list[str], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(5, len(losses))
    rows = -(-len(losses) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False, sharey=True)
    for ax in axes.ravel()[len(losses):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), losses):
        for key, label, colour in (("val_precision", "precision", "tab:blue"), ("val_recall", "recall", "tab:red")):
            epochs, mean, sd = _curve(results, name, key)
            ax.plot(epochs, mean, color=colour, marker="o", ms=3, label=label)
            ax.fill_between(epochs, mean - sd, mean + sd, color=colour, alpha=0.15)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_xlabel("epoch", fontsize=8)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("validation pixel precision and recall per epoch (mean ± sd over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "precision_recall.png"), dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in losses:
        epochs, mean, sd = _curve(results, name, "val_lesion_iou")
        line, = ax.plot(epochs, mean, marker="o", ms=3, label=name)
        ax.fill_between(epochs, mean - sd, mean + sd, color=line.get_color(), alpha=0.1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation lesion IoU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "val_iou.png"), dpi=90)
    plt.close(fig)
