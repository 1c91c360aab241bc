"""What averaging models does to lesion finding on real mini-MIAS, estimated out of fold → JSON and a Markdown table.

    .venv/bin/python benchmarks/ensemble_mias.py --arm recipe=WORK --arm other=WORK2 [--arm ...] --out PREFIX

``mammo train`` ships the mean of its K fold models' probabilities, and ``mammo predict`` applies to that mean the
operating point chosen on the fold models' out-of-fold predictions, one model per woman. Every dev woman was seen
by K − 1 of the fold models, so the ensemble itself cannot be scored out of fold. This estimates what averaging
does from models that never saw a woman: the out-of-fold predictions of finished ``quality_mias.py`` or
``levers_mias.py`` arm folders (the same folds of women, other training settings) averaged scan by scan. The first
arm alone, then the mean of the first two, three, …, all of them, each

* at the first arm's recorded operating point (a threshold chosen for one model, applied to an average), with each
  other arm alone at that point beside them (so that what is the other model's own is not taken for averaging),
* at the operating point the first arm's recipe rule chooses on the averaged predictions themselves (on the scan
  grid), and
* on the FROC at one minimum detection area,

with 95 % bootstrap intervals over women and paired differences from the first arm. Models of one recipe
trained on other folds resemble each other more than models of other settings do, so this is an estimate of the
direction and the size of the effect, not of the shipped ensemble's figures.

Data: J. Suckling et al., "The Mammographic Image Analysis Society Digital Mammogram Database", Excerpta Medica,
International Congress Series 1069, pp. 375-378, 1994. Research use only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine_description  # noqa: E402
from out_of_fold import (aligned_arms, figure_text, lesion_dice, lesion_groups, own_point,  # noqa: E402
                         plot_frocs, write_results)
from quality_mias import GROUPS, RESULTS  # noqa: E402


def mean_scans(arms: list) -> list:
    """The scans of aligned arms (:class:`mammo_seg.intervals.Arm`) with each probability map replaced by the
    arms' mean (None where any arm's prediction failed)."""
    from mammo_seg.detection import ScanLesions

    scans = []
    for at, first in enumerate(arms[0].scans):
        maps = [arm.scans[at].probability for arm in arms]
        mean = None if any(m is None for m in maps) else np.mean([m.astype(np.float32) for m in maps], axis=0)
        scans.append(ScanLesions(mean, first.lesions, first.kinds, first.pixel_area_mm2, first.ignore))
    return scans


def point_figures(figures: dict) -> dict:
    """:func:`mammo_seg.intervals.bootstrap`'s figures (or a paired difference) at the operating point only: its FROC
    would be at that point's minimum area, which differs between rows."""
    return {**figures, "groups": {g: {k: v for k, v in entry.items() if k != "sensitivity_at_fp_per_image"}
                                  for g, entry in figures["groups"].items()}}


def froc_figures(figures: dict) -> dict:
    """The FROC's sensitivities of :func:`mammo_seg.intervals.bootstrap`'s figures (or of a paired difference)."""
    at_point = ("fp_per_image_at_operating_point", "normal_with_detection_rate", "mean_lesion_dice")
    return {**{k: v for k, v in figures.items() if k not in at_point},
            "groups": {g: {k: v for k, v in entry.items() if k != "sensitivity_at_operating_point"}
                       for g, entry in figures["groups"].items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm", action="append", default=[], metavar="NAME=FOLDER", required=True,
                        help="a finished quality_mias.py --work folder (or a levers_mias.py arm folder); the first "
                             "is the baseline, the others are averaged with it in the order given")
    parser.add_argument("--min-area", type=float, default=160.0, help="the FROC's minimum detection area, mm²")
    parser.add_argument("--out", default=os.path.join(RESULTS, "ensemble_mias"), help="PREFIX.json, PREFIX.md")
    args = parser.parse_args(argv)
    arms_given = dict(a.split("=", 1) for a in args.arm if "=" in a)
    if len(arms_given) != len(args.arm) or len(arms_given) < 2:
        parser.error("--arm NAME=FOLDER, at least two, names distinct")
    from mammo_seg.run_dir import RunDir

    tables = {}
    for name, folder in arms_given.items():
        folds_file = RunDir(os.path.join(folder, "run")).folds_file
        if not os.path.isfile(folds_file):
            parser.error(f"--arm {name}={folder}: no finished run there (run/cv.json)")
        with open(folds_file) as f:
            tables[name] = json.load(f)
    names = list(arms_given)
    baseline = names[0]
    for name in names[1:]:
        if tables[name]["fold_of"] != tables[baseline]["fold_of"]:
            parser.error(f"--arm {name}: its folds of women differ from {baseline}'s: averaging would let a model "
                         f"see the women it predicts")

    from data_prep.ground_truth import ground_truth
    from mammo_seg.config import load_config
    from mammo_seg.detection import froc
    from mammo_seg.evaluate import collect_cases
    from mammo_seg.intervals import Arm, bootstrap, paired_differences

    first = arms_given[baseline]
    truth = ground_truth(os.path.join(first, "mias_real_dev"))
    folds = tables[baseline]["folds"]
    cases = {name: collect_cases([os.path.join(folder, f"fold{k}_pred") for k in range(1, folds + 1)], truth)
             for name, folder in arms_given.items()}
    arms, women = aligned_arms(cases)
    recorded = {"threshold": arms[baseline].threshold, "min_area_mm2": arms[baseline].min_area_mm2}
    section = load_config(os.path.join(first, "run", "config.yaml")).operating_point
    groups = lesion_groups(arms[baseline].scans, GROUPS)

    def at_point(scans: list, point: dict) -> Arm:
        return Arm(scans, lesion_dice(scans, point["threshold"], point["min_area_mm2"]), point["threshold"],
                   point["min_area_mm2"])

    at_recorded, at_own, at_area, points, curves = {}, {}, {}, {}, {}

    def add_recorded(label: str, scans: list) -> None:  # and its FROC at the common area (Dice unused there)
        at_recorded[label] = at_point(scans, recorded)
        at_area[label] = Arm(scans, at_recorded[label].dice, recorded["threshold"], args.min_area)

    for size in range(1, len(names) + 1):
        label = "+".join(names[:size])
        scans = mean_scans([arms[name] for name in names[:size]])
        points[label] = own_point(scans, section)
        add_recorded(label, scans)
        at_own[label] = at_point(scans, points[label])
        curves[label] = froc(scans, args.min_area)
    for name in names[1:]:  # each other model alone at the recorded point: what is its own, not the averaging
        add_recorded(f"{name} alone", mean_scans([arms[name]]))

    def figures(arms_at: dict, keep) -> dict:
        return {label: keep(bootstrap(arm.scans, women, arm.threshold, arm.min_area_mm2, arm.dice, groups=groups))
                for label, arm in arms_at.items()}

    def paired(arms_at: dict, keep) -> dict:
        result = paired_differences(arms_at, women, baseline, groups=groups)
        return {**result, "differences": {label: keep(d) for label, d in result["differences"].items()}}

    report = {"arms": arms_given, "scans": len(women), "women": len(set(women)),
              "lesions": sum(len(s.lesions) for s in arms[baseline].scans), "machine": machine_description(),
              "recorded_operating_point": recorded, "own_operating_points": points, "froc_min_area_mm2": args.min_area,
              "at_recorded_point": figures(at_recorded, point_figures), "at_own_point": figures(at_own, point_figures),
              "froc_at_min_area": figures(at_area, froc_figures),
              "paired_at_recorded_point": paired(at_recorded, point_figures),
              "paired_at_own_point": paired(at_own, point_figures),
              "paired_froc_at_min_area": paired(at_area, froc_figures)}
    write_results(args.out, report, write_markdown,
                  plot=lambda path: plot_frocs(curves, path, f"Averaged out-of-fold models, ≥ {args.min_area:g} mm²"))
    return 0


def _rows(report: dict, at: str) -> list[str]:
    """The table rows of each mean at one kind of operating point (``at``: "recorded_point" or "own_point"), its
    FROC at the report's minimum area, and its paired differences from the first arm."""
    f = figure_text
    baseline = next(iter(report["arms"]))
    rows = []
    for label, figure in report[f"at_{at}"].items():
        s = report["froc_at_min_area"][label]["groups"]["all"]["sensitivity_at_fp_per_image"]
        rows.append(f"| {label} | {f(figure['groups']['all']['sensitivity_at_operating_point'])} | "
                    f"{f(figure['fp_per_image_at_operating_point'])} | "
                    f"{f(figure['normal_with_detection_rate'])} | {f(figure['mean_lesion_dice'])} | {f(s['1'])} | "
                    f"{f(s['2'])} |")
        if label != baseline:
            d = report[f"paired_at_{at}"]["differences"][label]
            ds = report["paired_froc_at_min_area"]["differences"][label]["groups"]["all"]["sensitivity_at_fp_per_image"]
            rows.append(f"| − {baseline} | {f(d['groups']['all']['sensitivity_at_operating_point'], True)} | "
                        f"{f(d['fp_per_image_at_operating_point'], True)} | "
                        f"{f(d['normal_with_detection_rate'], True)} | {f(d['mean_lesion_dice'], True)} | "
                        f"{f(ds['1'], True)} | {f(ds['2'], True)} |")
    return rows


def write_markdown(report: dict, path: str) -> None:
    recorded, area = report["recorded_operating_point"], report["froc_min_area_mm2"]
    baseline = next(iter(report["arms"]))
    header = ["| models averaged | sensitivity at the point | FP/image | normals flagged | lesion Dice | "
              f"FROC sens. @1 FP/image (≥ {area:g} mm²) | @2 |", "|---|---|---|---|---|---|---|"]
    lines = ["# Averaging out-of-fold models on real mini-MIAS", "",
             f"The out-of-fold predictions of {len(report['arms'])} cross-validated runs with the same folds of women "
             f"({', '.join(f'`{n}`' for n in report['arms'])}), averaged scan by scan: every scan is predicted only "
             f"by models that never saw its woman. {report['scans']} scans of {report['women']} women, "
             f"{report['lesions']} lesions. 95 % bootstrap intervals over women; the rows under each mean are its "
             f"paired differences from `{baseline}` alone, **bold** where the interval excludes 0. The FROC columns "
             f"are at one minimum detection area for every row. Machine: {report['machine']}.", "",
             f"## At `{baseline}`'s recorded operating point (threshold {recorded['threshold']:g}, "
             f"≥ {recorded['min_area_mm2']:g} mm²)", "",
             "What `mammo predict` does with a fold ensemble: the point chosen on single models' out-of-fold "
             "predictions, applied to a mean of models. The rows `NAME alone` are the other models by themselves at "
             "the same point.", "",
             *header, *_rows(report, "recorded_point"), "",
             "## At the operating point the recipe's rule chooses on the averaged predictions", "",
             *header, *_rows(report, "own_point"), "",
             "Operating points chosen: " + "; ".join(
                 f"{label} {p['threshold']:g}, ≥ {p['min_area_mm2']:g} mm²"
                 for label, p in report["own_operating_points"].items()) + "."]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
