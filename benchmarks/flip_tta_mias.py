"""Does flip test-time augmentation help on real mammograms, out of fold? A paired comparison on a finished
:mod:`benchmarks.quality_mias` run → JSON and a Markdown table.

    .venv/bin/python benchmarks/flip_tta_mias.py --work /tmp/mammo_quality_mias   # after quality_mias.py; minutes

Both arms are the same fold models of the quality benchmark's cross-validated run:

* ``no_flip``: the benchmark's own out-of-fold predictions (``fold<k>_pred``) at the run's operating point;
* ``flip``: each scan predicted by its fold's model (in a ``cv.nested`` run, the mean of the nested models without
  its fold, as the run's point was chosen) as the mean of the model on the scan and on its left-right mirror
  (``mammo predict --flip``), at the operating point the recipe's rule chooses on the pooled out-of-fold
  flip predictions (the same rule, on the training grid, as ``mammo train`` chose the other).

Scored against ``Info.txt`` as the benchmark scores, and compared with a paired bootstrap over women
(:func:`mammo_seg.intervals.paired_differences`): flip TTA is worth its doubled prediction time only where the
difference's interval excludes 0.

Data: J. Suckling et al., "The Mammographic Image Analysis Society Digital Mammogram Database", Excerpta Medica,
International Congress Series 1069, pp. 375-378, 1994. Research use only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from out_of_fold import (aligned_arms, lesion_groups, out_of_fold_cases, same_models_figures,  # noqa: E402
                         same_models_table, training_pixel_mm, write_results)
from quality_mias import GROUPS, finished_work_arguments, link_fold, mammo, nested  # noqa: E402


def flip_point(run: str, by_means: bool) -> dict:
    """The operating point the recipe's rule chooses on the pooled out-of-fold flip predictions (training grid;
    ``by_means``: each scan's the mean of the nested models without its fold)."""
    from mammo_seg.config import load_config, stage_configs
    from mammo_seg.data.prep_output import Manifest
    from mammo_seg.data.resolution import Resolution
    from mammo_seg.inference.operating_point import choose_by_section
    from mammo_seg.run_dir import RunDir
    from mammo_seg.training.cross_val import out_of_fold_scans

    config = load_config(os.path.join(run, "config.yaml"))
    data = stage_configs(config)[-1][1].data.path()  # the whole scans the run was trained on (DATA/full)
    with open(RunDir(run).folds_file) as f:
        table = json.load(f)
    scans = [(p[True], mask) for _, _, _, p, mask in out_of_fold_scans(RunDir(run), data, table["split"],
                                                                        table["fold_of"], flips=(True,),
                                                                        nested=by_means)]
    pixel_mm2 = Resolution.from_dict(Manifest.load(data).resolution).pixel_area_mm2
    record = choose_by_section({True: scans}, pixel_mm2, config.operating_point)
    return {k: v for k, v in record.items() if k != "candidates"}


def predict_flipped(run: str, data: str, dev: str, work: str, point: dict, log: str, by_means: bool) -> list[str]:
    """Each fold's women predicted with --flip by their fold's model (``by_means``: the mean of the nested models
    without their fold, as a ``cv.nested`` run's point was chosen)."""
    from mammo_seg.run_dir import RunDir

    with open(os.path.join(run, "cv.json")) as f:
        table = json.load(f)
    folders = []
    for k in range(1, table["folds"] + 1):
        scans, pred = os.path.join(work, f"fold{k}_scans"), os.path.join(work, f"fold{k}_pred_flip")
        shutil.rmtree(scans, ignore_errors=True)
        shutil.rmtree(pred, ignore_errors=True)
        link_fold(data, dev, table["fold_of"], k, scans)
        model = (RunDir(run).nested_fold(k) if by_means else RunDir(run).fold(k)).path
        mammo("predict", "-m", model, "-i", scans, "-o", pred, "--format", "mask,prob,json",
              "--quiet", "--flip", "--threshold", f"{point['threshold']}", "--min-area", f"{point['min_area_mm2']}",
              log=log)
        folders.append(pred)
    return folders


def main(argv=None) -> int:
    args = finished_work_arguments(__doc__.split("\n\n")[0], "flip_tta_mias", argv)
    run, data, dev = (os.path.join(args.work, d) for d in ("run", "data", "mias_real_dev"))
    from data_prep.ground_truth import ground_truth
    from mammo_seg.evaluate import collect_cases

    log = os.path.join(args.work, "flip_tta.log")
    with open(os.path.join(run, "operating_point.json")) as f:  # flip and no_flip: the models it was chosen with
        by_means = nested(json.load(f))
    point = flip_point(run, by_means)
    flipped = predict_flipped(run, data, dev, args.work, point, log, by_means)
    truth = ground_truth(dev)
    cases = {"no_flip": out_of_fold_cases(args.work, truth), "flip": collect_cases(flipped, truth)}
    arms, women = aligned_arms(cases)
    report = {"run": args.work, "scans": len(women), "women": len(set(women)),
              "training_pixel_mm": training_pixel_mm(args.work),
              "operating_points": {name: {"threshold": arm.threshold, "min_area_mm2": arm.min_area_mm2}
                                   for name, arm in arms.items()},
              "flip_point_chosen_on": point,
              **same_models_figures(arms, women, "no_flip", lesion_groups(arms["flip"].scans, GROUPS))}
    write_results(args.out, report, write_markdown)
    return 0


def write_markdown(report: dict, path: str) -> None:
    lines = ["# Flip test-time augmentation on real mini-MIAS scans, out of fold", "",
             f"The same fold models (trained at {report['training_pixel_mm']:g} mm per training pixel), "
             f"{report['scans']} scans of {report['women']} women; each arm at the operating "
             f"point the recipe's rule chose on its own pooled out-of-fold predictions. 95 % bootstrap intervals over "
             f"women; differences paired, **bold** where the interval excludes 0.", ""]
    lines += same_models_table(report)
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
