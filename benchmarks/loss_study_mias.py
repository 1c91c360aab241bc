"""Which loss finds lesions on real mammograms: the losses the literature compares against IoU, trained on the same
folds, crops, augmentation and steps, scored out of fold with paired intervals → JSON, Markdown table, FROC plot.

    .venv/bin/python benchmarks/loss_study_mias.py     # about 20 minutes an arm on a 2-core CPU

Each arm is :mod:`benchmarks.quality_mias` (prep, K-fold training by woman, out-of-fold prediction, evaluation)
with the recipe's ``loss`` replaced and ``train.epochs`` set to ``--epochs`` (default 6, half the recipe's 12, so
that four arms fit in the time of two recipes); everything else — folds, seed, crop sampler, augmentation, learning
rate schedule, the operating-point rule applied to each arm's own out-of-fold predictions — is the recipe's.
An arm whose ``result.json`` exists in ``--work`` is not run again (the study resumes).

The arms (``--arms`` picks some):

* ``iou``: the sigmoid-probability soft IoU loss alone (Rahman & Wang 2016; the 2018 pipeline's loss);
* ``bce_iou``: 0.5 · cross-entropy + 0.5 · soft IoU (the original's mixed mode, one sigmoid);
* ``bce_dice``: cross-entropy + soft Dice (nnU-Net's default; the recipe's loss) — the baseline of the differences;
* ``weighted_ce``: lesion-weighted cross-entropy, the weight 15 decayed by 0.7 per epoch towards 1 (the 2018
  author's schedule);
* ``bce_dice_ignore_calc``: the baseline with MIAS's calcification circles (CALC) written as an ignore region at
  prep (``prep.ignore_kinds``), which no loss, training metric or operating-point count sees: the labels lever,
  not a loss, measured the same way;
* ``lovasz_finetune``: the best of the arms above (sensitivity at 1 FP/image, then lesion Dice), each fold model
  fine-tuned for ``--finetune-epochs`` more epochs with the Lovász hinge (Berman et al. 2018; PaddleSeg's advice:
  train with cross-entropy, fine-tune with Lovász), from that arm's same-fold model at a tenth of the learning rate.

Scored by the out-of-fold FROC (sensitivity at 0.25–4 false positives per image) and the lesion Dice at each
arm's operating point, with 95 % bootstrap intervals over women, and for each arm its difference from the
baseline with a *paired* bootstrap — the FROCs of the paired comparison all at one minimum detection area
(``--min-area``, default 160 mm², the recipe's choice), so that they compare the losses, not the minimum area
each arm's rule chose — (:func:`mammo_seg.intervals.paired_differences`: the same resampled women for
both arms); a difference whose interval excludes 0 is one these 108 women can resolve.

Data: J. Suckling et al., "The Mammographic Image Analysis Society Digital Mammogram Database", Excerpta Medica,
International Congress Series 1069, pp. 375-378, 1994. Research use only: nothing that shows a scan is written to
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine_description  # noqa: E402
from out_of_fold import (arm_recipe, arm_result, arm_tables, compare_arms, plot_frocs, run_arm,  # noqa: E402
                         training_pixel_mm, write_results)
from quality_mias import ARCHIVE, GROUPS, RECIPE, RESULTS, unpack  # noqa: E402

BASELINE = "bce_dice"
ARMS = {
    "iou": ("soft IoU", ["loss={name: iou}"]),
    "bce_iou": ("0.5 BCE + 0.5 soft IoU",
                ["loss={name: mixed, losses: [{name: weighted_bce, pos_weight: 1}, {name: iou}], coefs: [0.5, 0.5]}"]),
    "bce_dice": ("BCE + soft Dice (recipe)", []),
    "weighted_ce": ("weighted CE, weight 15 decayed 0.7/epoch",
                    ["loss={name: weighted_bce, pos_weight: 15, pos_weight_decay: 0.7, pos_weight_min: 1.0}"]),
    "lovasz_finetune": ("Lovász hinge fine-tune of the best", ["loss={name: lovasz_hinge}"]),
    "bce_dice_ignore_calc": ("BCE + soft Dice, calcification circles ignored", []),
}
#: arms that change the recipe's prep section too (the labels), not only its training
PREP = {"bce_dice_ignore_calc": {"ignore_kinds": ["calcification"]}}
FINETUNE = "lovasz_finetune"


def best_arm(names: list[str], args) -> str:
    """The arm with the highest out-of-fold sensitivity at 1 FP/image (then lesion Dice) among ``names``."""
    def key(name):
        real = arm_result(args.work, name)["real"]
        return real["groups"]["all"]["sensitivity_at_1_fp_per_image"]["value"], real["mean_lesion_dice"]["value"]
    return max(names, key=key)


def arm_overrides(name: str, names: list[str], args) -> list[str]:
    """The recipe keys an arm sets (``train.epochs`` first); the fine-tune starts from the best finished arm."""
    if name != FINETUNE:
        return [f"train.epochs={args.epochs}", *ARMS[name][1]]
    start = best_arm([n for n in names if n != FINETUNE], args)
    with open(args.recipe) as f:
        import yaml

        lr = float(yaml.safe_load(f)["train"]["lr"])
    return [f"train.epochs={args.finetune_epochs}", *ARMS[name][1],
            f"train.init_from={os.path.join(args.work, start, 'run')}", f"train.lr={lr / 10:g}",
            "train.warmup_epochs=0"]


def run(name: str, names: list[str], args) -> float:
    """The arm's quality benchmark (:func:`out_of_fold.run_arm`), its prep keys in a copy of the recipe."""
    recipe = arm_recipe(args.recipe, os.path.join(args.work, name), PREP.get(name, {}))
    return run_arm(name, ARMS[name][0], recipe, arm_overrides(name, names, args), args.archive, args.work,
                   "loss study")


def write_markdown(report: dict, path: str) -> None:
    first = next(iter(report["arms"].values()))["real"]
    area = report["paired_min_area_mm2"]
    lines = ["# Which loss finds lesions on real mini-MIAS scans, out of fold", "",
             f"Each arm: the recipe `{report['recipe']}` with its loss (or its labels) replaced, {report['epochs']} "
             f"epochs per fold (the recipe trains {report['recipe_epochs']}), the same {report['folds']} folds by "
             f"woman, crops, augmentation and schedule, at {_grid(report)} mm per training pixel; {first['scans']} "
             f"scans of {first['women']} women, "
             f"{first['lesions']} lesions; every scan predicted by the fold model that never saw its woman. The FROC "
             f"sensitivities are at one minimum detection area for all arms ({area:g} mm²); the lesion Dice, false "
             f"positives and normals flagged at each arm's own operating point (chosen by the recipe's rule on its "
             f"pooled out-of-fold predictions). 95 % bootstrap intervals over women; the differences from "
             f"`{report['baseline']}` are paired (the same women resampled for both arms), **bold** where the "
             f"interval excludes 0. Total {report['seconds_total'] / 60:.0f} min on {report['machine']}.", "",
             *arm_tables(report, ("loss", "loss"))]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


def _grid(report: dict) -> str:
    """The arms' training grid(s) in mm per pixel, e.g. "0.8"."""
    return " / ".join(f"{mm:g}" for mm in sorted(set(report["training_pixel_mm"].values())))


def plot(report: dict, path: str) -> None:
    plot_frocs({name: arm["froc_at_common_area"]["froc"] for name, arm in report["arms"].items()}, path,
               f"FROC by loss (≥ {report['paired_min_area_mm2']:g} mm²), real mini-MIAS, out of fold")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=RECIPE)
    parser.add_argument("--archive", default=ARCHIVE, help="the real mini-MIAS dev archive (.tar.xz)")
    parser.add_argument("--work", default=os.path.join("/tmp", "mammo_loss_study_mias"),
                        help="working folder: one sub-folder per arm (prep output, run, predictions)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "loss_study_mias"),
                        help="results prefix: PREFIX.json, PREFIX.md, PREFIX_froc.png")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per fold model, the same for every arm")
    parser.add_argument("--baseline", default=BASELINE, help="the arm the others are compared with (paired)")
    parser.add_argument("--min-area", type=float, default=160.0,
                        help="mm²: the smallest detection of every arm's FROC in the paired comparison")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="the Lovász fine-tune's epochs per fold")
    args = parser.parse_args(argv)
    names = [a for a in args.arms.split(",") if a]
    unknown = [a for a in names if a not in ARMS]
    if FINETUNE in names:  # it starts from the others
        names = [n for n in names if n != FINETUNE] + [FINETUNE]
    if unknown or len(names) < 2 or names == [FINETUNE]:
        parser.error(f"--arms: at least two of {', '.join(ARMS)} (unknown: {', '.join(unknown) or 'none'})")
    if not os.path.isfile(args.archive):
        parser.error(f"--archive {args.archive}: not found")
    os.makedirs(args.work, exist_ok=True)
    for name in names:
        run(name, names, args)
    from data_prep.ground_truth import ground_truth

    results, common_area, paired = compare_arms(names, args.work, ground_truth(unpack(args.archive, args.work)),
                                                args.min_area, args.baseline if args.baseline in names else names[0],
                                                GROUPS)
    import yaml

    with open(args.recipe) as f:
        recipe_epochs = yaml.safe_load(f)["train"]["epochs"]
    report = {"recipe": os.path.relpath(args.recipe, ROOT), "epochs": args.epochs, "recipe_epochs": recipe_epochs,
              "folds": next(iter(results.values()))["folds"], "machine": machine_description(),
              "baseline": paired["baseline"],
              "arms": {name: {"loss": ARMS[name][0], "overrides": results[name]["overrides"],
                              "prep": PREP.get(name, {}),
                              "operating_point": results[name]["operating_point"], "real": results[name]["real"],
                              "froc_at_common_area": common_area[name],
                              "seconds": results[name]["seconds_total"]} for name in names},
              "paired": paired, "paired_min_area_mm2": args.min_area,
              "training_pixel_mm": {name: training_pixel_mm(os.path.join(args.work, name)) for name in names},
              "seconds_total": round(sum(r["seconds_total"] for r in results.values()), 1)}
    write_results(args.out, report, write_markdown, lambda path: plot(report, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
