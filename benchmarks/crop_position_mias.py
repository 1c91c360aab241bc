"""Does a model trained on crops rely on where a lesion lies in a crop? Finished :mod:`benchmarks.quality_mias` runs'
fold models on their own training women's lesions, at a crop's centre and off it, and on whole scans → JSON and a
Markdown table.

    .venv/bin/python benchmarks/crop_position_mias.py --arm recipe=WORK [--arm NAME=WORK ...]   # a minute or two an arm

The recipe's lesion crops are centred on a lesion pixel: a network can learn that a lesion is where a crop's centre
is; and it sees 128-px crops in training and whole 512-px scans in prediction. For each fold model of each run, on lesion scans of the
women it trained on (the first ``--scans`` of each fold's training women in the prep output's order):

* ``centred``: the crop of the training size centred on the lesion's centre of mass (the scan zero-padded);
* ``off 40 px``: the same crop moved 40 px down, right, and up-left (the mean of the three): the lesion still in it;
* ``whole scan``: the whole scan, as ``mammo predict`` sees it (the breast region only);

and ``whole scan, held out``: the lesion scans of the fold's own held-out women. Each figure is the mean Dice at
probability 0.5 of the scan's lesion mask within what the network saw (the first lesion's crop holds the others
that fall in it). A model that outlines lesions at a crop's centre much better than 40 px off it has learned the
sampler's placement; one that outlines them in crops but not in whole scans depends on the crop's size or borders.

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
from out_of_fold import write_results  # noqa: E402
from quality_mias import RESULTS  # noqa: E402

SHIFTS = ((40, 0), (0, 40), (-40, -40))
FIGURES = ("centred", "off 40 px", "whole scan", "whole scan, held out")


def dice(probability: np.ndarray, mask: np.ndarray) -> float:
    """Dice of ``probability ≥ 0.5`` against ``mask`` (1 when both are empty)."""
    from mammo_seg.overlap import confusion, scores

    tp, fp, fn, _ = confusion(probability >= 0.5, mask)
    value = scores(tp, fp, fn)["Dice"]
    return 1.0 if np.isnan(value) else float(value)


def crop_dice(model, image: np.ndarray, mask: np.ndarray, centre: tuple[int, int], size: int) -> float:
    """Dice of the model's crop of ``size``² centred on ``centre`` (the scan zero-padded) against the mask's crop."""
    import keras

    half = size // 2
    image, mask = np.pad(image, size), np.pad(mask, size)
    rows, cols = slice(centre[0] + size - half, centre[0] + size + half), slice(centre[1] + size - half,
                                                                              centre[1] + size + half)
    logits = model(image[rows, cols][None, ..., None], training=False)
    return dice(keras.ops.convert_to_numpy(keras.ops.sigmoid(logits))[0, ..., 0], mask[rows, cols])


def fold_figures(run: str, data: str, fold: int, fold_of: dict, patient_of: dict, size: int, scans: int) -> dict:
    """Each figure of :data:`FIGURES`, one value per scan, for fold ``fold``'s model."""
    from scipy import ndimage

    from mammo_seg.data import features
    from mammo_seg.data.prep_output import PrepOutput
    from mammo_seg.inference.operating_point import network_input, scan_probabilities
    from mammo_seg.run_dir import RunDir, load_keras, model_file

    model = load_keras(model_file(RunDir(run).fold(fold).path))
    values = {name: [] for name in FIGURES}
    trained = 0
    for file in PrepOutput.containing(data).whole_scan_files("train"):
        for record in features.iterate_records(file):
            mask = record["mask"][..., 0] == features.LESION
            if not mask.any():
                continue
            held_out = fold_of[patient_of[record["scan_id"].decode()]] == fold
            if not held_out and trained >= scans:
                continue
            image = network_input(record)
            whole = dice(scan_probabilities([model], image), mask)
            if held_out:
                values["whole scan, held out"].append(whole)
                continue
            trained += 1
            values["whole scan"].append(whole)
            labels, _ = ndimage.label(mask)
            row, col = (int(round(v)) for v in ndimage.center_of_mass(mask, labels, 1))
            values["centred"].append(crop_dice(model, image, mask, (row, col), size))
            values["off 40 px"].append(float(np.mean([crop_dice(model, image, mask, (row + dr, col + dc), size)
                                                      for dr, dc in SHIFTS])))
    return values


def arm_figures(work: str, scans: int) -> dict:
    """The figures of one finished quality run (``work``), over its folds: mean, and each fold's mean."""
    from mammo_seg.config import load_config

    run, data = os.path.join(work, "run"), os.path.join(work, "data", "full")
    with open(os.path.join(run, "cv.json")) as f:
        table = json.load(f)
    with open(os.path.join(work, "data", "scans.json")) as f:
        patient_of = {scan: entry["patient_id"] for scan, entry in json.load(f).items()}
    config = load_config(os.path.join(run, "config.yaml"))
    folds = [fold_figures(run, data, k, table["fold_of"], patient_of, config.data.crop, scans)
             for k in range(1, table["folds"] + 1)]
    return {"crop": config.data.crop, "seed": config.seed,
            "figures": {name: {"mean": float(np.mean([v for fold in folds for v in fold[name]])),
                               "scans": sum(len(fold[name]) for fold in folds),
                               "folds": [round(float(np.mean(fold[name])), 3) for fold in folds]}
                        for name in FIGURES}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm", action="append", required=True, metavar="NAME=WORK",
                        help="a finished benchmarks/quality_mias.py working folder, by name; repeatable")
    parser.add_argument("--scans", type=int, default=8, help="training women's lesion scans a fold model is shown")
    parser.add_argument("--out", default=os.path.join(RESULTS, "crop_position_mias"), help="PREFIX.json, PREFIX.md")
    args = parser.parse_args(argv)
    arms = dict(item.split("=", 1) for item in args.arm if "=" in item)
    missing = [w for w in arms.values() if not os.path.isfile(os.path.join(w, "run", "cv.json"))]
    if len(arms) != len(args.arm) or missing:
        parser.error(f"--arm: NAME=WORK, WORK a finished quality_mias run ({', '.join(missing) or 'no NAME='})")
    report = {"machine": machine_description(), "scans_per_fold": args.scans, "shifts_px": SHIFTS,
              "arms": {name: {"work": work, **arm_figures(work, args.scans)} for name, work in arms.items()}}
    write_results(args.out, report, write_markdown)
    return 0


def write_markdown(report: dict, path: str) -> None:
    lines = ["# Where a lesion lies in a crop: fold models on their training women and on whole scans", "",
             f"Mean Dice at probability 0.5 over each run's fold models: on {report['scans_per_fold']} lesion scans of "
             f"each fold's training women, the crop of the training size centred on the lesion, the same crop 40 px "
             f"off it (down, right, up-left), and the whole scan; and the whole lesion scans of each fold's held-out "
             f"women. In brackets, the five folds.", "",
             "| run | seed | " + " | ".join(FIGURES) + " |", "|---|---|" + "---|" * len(FIGURES)]
    for name, arm in report["arms"].items():
        cells = [f"{arm['figures'][f]['mean']:.2f} ({', '.join(f'{v:.2f}' for v in arm['figures'][f]['folds'])})"
                 for f in FIGURES]
        lines.append(f"| {name} | {arm['seed']} | " + " | ".join(cells) + " |")
    lines += ["", f"Machine: {report['machine']}."]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
