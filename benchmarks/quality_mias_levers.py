"""Predict-time levers on the saved mini-MIAS run: flip test-time augmentation and a wider minimum-area grid.

    .venv/bin/python benchmarks/quality_mias_levers.py --work /tmp/mammo_quality_mias   # about 5 minutes, 2-core CPU

Needs a finished ``benchmarks/quality_mias.py`` work folder (``--work``): its trained run (``real_run``),
prep output (``real_data``), test-women PGMs (``real_test_scans``) and unpacked dev set (``mias_real_dev``).
No retraining. For each lever setting the operating point is chosen on the VALIDATION women only
(:func:`~mammo_seg.inference.operating_point.choose_operating_point`, not written beside the model); then
``mammo predict`` with that point (``--threshold --min-area --flip/--no-flip``) and ``mammo evaluate`` score
the test women: FROC points, sensitivity at 0.25-4 FP/image, lesion Dice, lesion-free scans flagged. The
setting validation prefers (highest mean lesion Dice; ties: the recipe's) is marked. One trained model and
16 test lesions: a lesion is 0.06 of sensitivity. Only numbers are written (the scans are MIAS-licensed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality_mias import RESULTS, ROOT, mammo  # noqa: E402

sys.path.insert(0, ROOT)
GRID = (0.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
WIDE = GRID + (320.0, 640.0, 1280.0)
SETTINGS = {"recipe (no flip, areas ≤ 160 mm²)": ((False,), GRID),
            "areas ≤ 1280 mm²": ((False,), WIDE),
            "flip TTA": ((True,), GRID),
            "flip TTA, areas ≤ 1280 mm²": ((True,), WIDE)}


def main(argv=None) -> int:
    from mammo_seg.inference.operating_point import choose_operating_point
    from mammo_seg.run_dir import model_file

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join("/tmp", "mammo_quality_mias"),
                        help="a finished benchmarks/quality_mias.py work folder")
    parser.add_argument("--out", default=os.path.join(RESULTS, "quality_mias_levers"), help="results prefix")
    args = parser.parse_args(argv)
    run, data = os.path.join(args.work, "real_run"), os.path.join(args.work, "real_data")
    scans, dev = os.path.join(args.work, "real_test_scans"), os.path.join(args.work, "mias_real_dev")
    if not all(os.path.isdir(p) for p in (run, data, scans, dev)):
        raise SystemExit(f"{args.work}: not a finished benchmarks/quality_mias.py work folder")
    log = os.path.join(args.work, "quality_mias_levers.log")
    start, rows = time.perf_counter(), []
    for name, (flips, areas) in SETTINGS.items():
        point = choose_operating_point(model_file(run), data, "val", 0.25, min_areas_mm2=areas, flips=flips,
                                       write=False)
        pred = os.path.join(args.work, "levers_pred_" + str(len(rows)))
        shutil.rmtree(pred, ignore_errors=True)
        mammo("predict", "-m", run, "-i", scans, "-o", pred, "--format", "mask,prob,json", "--quiet",
              "--threshold", str(point["threshold"]), "--min-area", str(point["min_area_mm2"]),
              "--flip" if point["flip"] else "--no-flip", log=log)
        evaluation = os.path.join(args.work, f"levers_evaluation_{len(rows)}.json")
        mammo("evaluate", "-p", pred, "-g", dev, "-o", evaluation, log=log)
        with open(evaluation) as f:
            result = json.load(f)
        detection = result["detection"]
        rows.append({"setting": name, "flips": list(flips), "min_areas_mm2": list(areas),
                     "validation": point["validation"],
                     "test": {"sensitivity_at_fp_per_image": detection["froc"]["sensitivity_at_fp_per_image"],
                              "fp_per_image_reached": detection["froc"]["fp_per_image_reached"],
                              "froc_points": detection["froc"]["points"],
                              "at_operating_point": {k: detection["at_operating_point"][k] for k in (
                                  "sensitivity", "fp_per_image", "found", "lesions")},
                              "mean_lesion_dice": result["lesion_images"]["Dice"],
                              "normal_scans_with_detection": detection["at_operating_point"][
                                  "normal_with_detection_rate"]}})
    best = max(range(len(rows)), key=lambda i: (rows[i]["validation"]["mean_dice"], -i))  # ties: the earlier
    report = {"work": os.path.abspath(args.work), "rule": "operating point and lever chosen on the validation "
              "women (highest mean lesion Dice with at most 0.25 of lesion-free scans flagged); test scored after",
              "validation_choice": rows[best]["setting"], "settings": rows,
              "caveat": "One trained model, 18 validation scans (6 with a lesion), 44 test scans with 16 lesions",
              "seconds": round(time.perf_counter() - start, 1)}
    with open(args.out + ".json", "w") as f:
        json.dump(report, f, indent=2)
    write_markdown(report, args.out + ".md")
    print(open(args.out + ".md").read())
    return 0


def write_markdown(report: dict, path: str) -> None:
    def f(v):
        return "n/a" if v is None else f"{v:.2f}"

    lines = ["# Predict-time levers on the mini-MIAS run (no retraining)", "",
             "Each setting's threshold and minimum area chosen on the validation women; scored on the test women "
             f"afterwards. {report['caveat']}: one lesion is 0.06 of sensitivity. Validation chose: "
             f"**{report['validation_choice']}**.", "",
             "| setting | val: threshold / min area / flip | val Dice | test sens. @0.25 | @0.5 | @1 | @2 | @4 FP/image "
             "| FP/image reached | test lesion Dice | test normal flagged |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["settings"]:
        v, t = r["validation"], r["test"]
        s = t["sensitivity_at_fp_per_image"]
        lines.append(f"| {r['setting']} | {v['threshold']:g} / {v['min_area_mm2']:g} mm² / {'on' if v['flip'] else 'off'}"
                     f" | {v['mean_dice']:.3f} | {f(s['0.25'])} | {f(s['0.5'])} | {f(s['1'])} | {f(s['2'])} | "
                     f"{f(s['4'])} | {f(t['fp_per_image_reached'])} | {f(t['mean_lesion_dice'])} | "
                     f"{f(t['normal_scans_with_detection'])} |")
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
