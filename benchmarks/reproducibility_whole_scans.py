"""Is the recipe's whole-scan stage reproducible bit for bit? One fold's whole-scan stage trained twice, each time
in a fresh process, from the same crop-trained weights, with the same config and seed → JSON and a Markdown table.

    .venv/bin/python benchmarks/reproducibility_whole_scans.py --work /tmp/mammo_quality_mias   # after quality_mias.py

Two arms, each trained twice:

* ``shipped``: as ``mammo train`` trains (its tf.functions optimised without grappler's arithmetic optimizer,
  :func:`mammo_seg.training.step.reproducible_rewrites`);
* ``arithmetic_optimizer``: the same with TensorFlow's default graph optimisation, which collapses chains of
  additions into ``AddN``, whose CPU kernel adds in an order that depends on which input buffer it could reuse.

For each arm: how many of the model's weight arrays differ between its two trainings and by how much at most, the
first epoch whose logged training loss differs, and the median epoch time (the machine's other load included).

Data: J. Suckling et al., "The Mammographic Image Analysis Society Digital Mammogram Database", Excerpta Medica,
International Congress Series 1069, pp. 375-378, 1994. Research use only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine_description, print_result, run_child, write_report  # noqa: E402

ARMS = {"shipped": "as mammo train trains (no arithmetic optimizer)",
        "arithmetic_optimizer": "TensorFlow's default graph optimisation (arithmetic optimizer on)"}


def train_once(arm: str, work: str, fold: int, epochs: int, out: str) -> dict:
    """The child's side: fold ``fold``'s whole-scan stage of the run in ``work``, ``epochs`` epochs, into ``out``."""
    from mammo_seg.config import load_config, stage_configs
    from mammo_seg.run_dir import RunDir
    from mammo_seg.training import step
    from mammo_seg.training.cross_val import _patients
    from mammo_seg.training.run import train_stage

    run = RunDir(os.path.join(work, "run"))
    stages = stage_configs(load_config(run.config, [f"stages[-1].train.epochs={epochs}"]))
    with open(run.folds_file) as f:
        women = _patients(json.load(f), {fold})
    init = run.fold(fold).stage(stages[-2][0]).last_model  # the stage before: the crops
    if arm == "arithmetic_optimizer":
        step.reproducible_rewrites = contextlib.nullcontext
    start = time.perf_counter()
    train_stage(stages[-1][1], out, progress=False, init_from=init, fold=women)
    return {"seconds": time.perf_counter() - start}


def compare(a: str, b: str) -> dict:
    """How two trainings' final models and logged training losses differ."""
    import numpy as np

    from mammo_seg.run_dir import RunDir, load_keras
    from mammo_seg.training.callbacks import read_history

    wa, wb = (load_keras(RunDir(d).last_model).get_weights() for d in (a, b))
    differing = [float(np.max(np.abs(x - y))) for x, y in zip(wa, wb) if not np.array_equal(x, y)]
    ha, hb = (read_history(RunDir(d).history) for d in (a, b))
    first = next((int(ra["epoch"]) + 1 for ra, rb in zip(ha, hb) if ra["loss"] != rb["loss"]), None)
    seconds = sorted(float(r["epoch_seconds"]) for r in ha + hb if r.get("epoch_seconds"))
    return {"weight_arrays": len(wa), "differing_arrays": len(differing),
            "max_abs_difference": max(differing, default=0.0), "first_epoch_loss_differs": first,
            "median_epoch_seconds": seconds[len(seconds) // 2] if seconds else None}


def table(report: dict) -> str:
    lines = ["# Is the whole-scan stage reproducible bit for bit?\n",
             f"Fold {report['fold']}'s whole-scan stage of `{report['recipe']}`, {report['epochs']} epochs "
             f"({report['steps']} steps), trained twice per arm, each time in a fresh process, from the same "
             f"crop-trained weights; {report['machine']}.\n",
             "| arm | setting | weight arrays that differ | largest difference | first epoch whose loss differs "
             "| median epoch s |", "|---|---|---|---|---|---|"]
    for name, r in report["arms"].items():
        lines.append(f"| {name} | {ARMS[name]} | {r['differing_arrays']} of {r['weight_arrays']} | "
                     f"{r['max_abs_difference']:.2g} | {r['first_epoch_loss_differs'] or 'none'} | "
                     f"{r['median_epoch_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="a finished quality_mias.py work folder (run/, data/)")
    p.add_argument("--fold", type=int, default=1)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    p.add_argument("--scratch", default=None, help="where the trainings go (default: WORK/reproducibility)")
    p.add_argument("--out", default=None, help="write PREFIX.json and PREFIX.md")
    p.add_argument("--reuse", action="store_true", help="keep the finished trainings already in --scratch")
    p.add_argument("--child", nargs=2, metavar=("ARM", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print_result(train_once(args.child[0], args.work, args.fold, args.epochs, args.child[1]))
        return 0
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        p.error(f"--arms: unknown {', '.join(unknown)} (known: {', '.join(ARMS)})")
    from mammo_seg.config import load_config, stage_configs
    from mammo_seg.run_dir import RunDir

    run = RunDir(os.path.join(args.work, "run"))
    if not os.path.isfile(run.folds_file):
        p.error(f"--work: {args.work} holds no cross-validated run (run/cv.json)")
    with open(run.folds_file) as f:
        folds = sorted(set(json.load(f)["fold_of"].values()))
    if args.fold not in folds:
        p.error(f"--fold: {args.fold} is not a fold of that run (its folds: {', '.join(map(str, folds))})")
    if args.epochs < 1:
        p.error(f"--epochs: {args.epochs}: must be at least 1")
    scratch = args.scratch or os.path.join(args.work, "reproducibility")
    stage = stage_configs(load_config(run.config))[-1][1]
    report = {"recipe": "experiments/mias_real/recipe.yaml", "fold": args.fold, "epochs": args.epochs,
              "steps": args.epochs * stage.train.steps_per_epoch, "machine": machine_description(), "arms": {}}
    for arm in arms:
        dirs = [os.path.join(scratch, f"{arm}_{i}") for i in (1, 2)]
        for d in dirs:
            if args.reuse and os.path.isfile(RunDir(d).last_model):
                continue
            shutil.rmtree(d, ignore_errors=True)
            run_child(__file__, ["--work", args.work, "--fold", args.fold, "--epochs", args.epochs,
                                 "--child", arm, d], f"{arm} training")
        report["arms"][arm] = compare(*dirs)
    write_report(report, args.out + ".json" if args.out else None)
    if args.out:
        with open(args.out + ".md", "w") as f:
            f.write(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
