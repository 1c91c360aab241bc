"""Does predicting a scan in windows of the training crop's size help on real mammograms, out of fold? A paired
comparison on a finished :mod:`benchmarks.quality_mias` run → JSON and a Markdown table.

    .venv/bin/python benchmarks/tiled_inference_mias.py --work /tmp/mammo_quality_mias   # after quality_mias.py

The recipe trains on 128-px crops and ``mammo predict`` runs the network on a whole 512-px scan in one pass. Both
arms are the same fold models, each fold's women predicted by its own model:

* ``one_pass``: the benchmark's own out-of-fold predictions (``fold<k>_pred``);
* ``tiled``: ``mammo predict --tile T --overlap 0.5`` (T the run's ``data.crop``): windows of the
  training crop's size, their probabilities weighted by a Gaussian centred on each window and averaged, as nnU-Net
  predicts (:func:`mammo_seg.inference.sliding_window.predict_probabilities`).

Each arm at the operating point the recipe's rule chooses on its own pooled maps (the scans' native grid, for both,
so the ``one_pass`` arm's may differ from the one the run recorded on the training grid). Scored against ``Info.txt``
as the benchmark scores, and compared with a paired bootstrap over women
(:func:`mammo_seg.intervals.paired_differences`).

Data: J. Suckling et al., "The Mammographic Image Analysis Society Digital Mammogram Database", Excerpta Medica,
International Congress Series 1069, pp. 375-378, 1994. Research use only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine_description  # noqa: E402
from out_of_fold import (aligned_arms, lesion_groups, out_of_fold_cases, point_arm, same_models_figures,  # noqa: E402
                         same_models_table, training_pixel_mm, write_results)
from quality_mias import GROUPS, finished_work_arguments, link_fold, mammo  # noqa: E402

OVERLAP = 0.5


def predict_tiled(run: str, data: str, dev: str, work: str, tile: int, overlap: float, point: dict,
                  log: str) -> list[str]:
    """Each fold's women predicted in ``tile``² windows by their fold's model (masks at the run's recorded
    ``point``); the prediction folders."""
    with open(os.path.join(run, "cv.json")) as f:
        table = json.load(f)
    folders = []
    for k in range(1, table["folds"] + 1):
        scans, pred = os.path.join(work, f"fold{k}_scans"), os.path.join(work, f"fold{k}_pred_tile{tile}")
        shutil.rmtree(scans, ignore_errors=True)
        shutil.rmtree(pred, ignore_errors=True)
        link_fold(data, dev, table["fold_of"], k, scans)
        mammo("predict", "-m", os.path.join(run, f"fold{k}"), "-i", scans, "-o", pred, "--format", "mask,prob,json",
              "--quiet", "--tile", str(tile), "--overlap", f"{overlap}", "--threshold", f"{point['threshold']}",
              "--min-area", f"{point['min_area_mm2']}", log=log)
        folders.append(pred)
    return folders


def main(argv=None) -> int:
    doc = __doc__.split("\n\n")[0]
    args = finished_work_arguments(doc, "tiled_inference_mias", argv)
    from data_prep.ground_truth import ground_truth
    from mammo_seg.config import load_config
    from mammo_seg.evaluate import collect_cases

    run, data, dev = (os.path.join(args.work, d) for d in ("run", "data", "mias_real_dev"))
    config = load_config(os.path.join(run, "config.yaml"))
    tile = config.data.crop
    with open(os.path.join(run, "operating_point.json")) as f:
        point = json.load(f)
    start = time.perf_counter()
    tiled = predict_tiled(run, data, dev, args.work, tile, OVERLAP, point, os.path.join(args.work, "tiled.log"))
    seconds = round(time.perf_counter() - start, 1)
    truth = ground_truth(dev)
    cases = {"one_pass": out_of_fold_cases(args.work, truth), "tiled": collect_cases(tiled, truth)}
    aligned, women = aligned_arms(cases)  # the scans both predicted, in one order
    scored = {name: point_arm(arm.scans, config.operating_point) for name, arm in aligned.items()}
    arms = {name: arm for name, (arm, _) in scored.items()}
    report = {"run": args.work, "machine": machine_description(), "seed": config.seed, "scans": len(women),
              "women": len(set(women)), "training_pixel_mm": training_pixel_mm(args.work), "tile": tile,
              "overlap": OVERLAP, "tiled_prediction_seconds": seconds,
              "operating_points": {name: point for name, (_, point) in scored.items()},
              **same_models_figures(arms, women, "one_pass", lesion_groups(arms["one_pass"].scans, GROUPS))}
    write_results(args.out, report, write_markdown)
    return 0


def write_markdown(report: dict, path: str) -> None:
    lines = ["# Predicting in windows of the training crop's size, real mini-MIAS scans, out of fold", "",
             f"The same fold models of one run (seed {report['seed']}, {report['training_pixel_mm']:g} mm per "
             f"training pixel), {report['scans']} scans of {report['women']} women: each scan in one pass "
             f"(`one_pass`) or in {report['tile']}-px windows overlapping by {report['overlap']:g}, Gaussian-weighted "
             f"(`tiled`). Each arm at the operating point the recipe's rule chose on its own pooled maps (native "
             f"grid). 95 % bootstrap intervals over women; differences paired, **bold** where the interval excludes "
             f"0.", ""]
    lines += same_models_table(report)
    lines += ["", f"Machine: {report['machine']}; the tiled predictions took {report['tiled_prediction_seconds']:g} s. "
              f"Run: `{report['run']}`."]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
