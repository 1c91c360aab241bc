"""Lesion finding on real mammograms, out of fold: the mini-MIAS recipe end to end → JSON, Markdown table, FROC plot.

    .venv/bin/python benchmarks/quality_mias.py    # after the README's test install: 15-49 minutes on a 2-core CPU

Every step is a ``mammo`` verb, run as a user would run it:

1. unpack the real mini-MIAS dev archive (216 scans of 108 women, ``--archive``) into ``--work``;
2. ``mammo prep mias --raw DEV --out DATA --config RECIPE`` (every woman in the training split);
3. ``mammo train -c RECIPE --set data.dir=DATA --out RUN``: K-fold cross-validation by woman (the recipe's
   ``cv.folds``), the fold models, their ensemble and its operating point chosen on the pooled out-of-fold
   predictions;
4. for each fold k, ``mammo predict -m RUN/fold<k> -i FOLD_K_PGMS -o PRED_K`` at the ensemble's operating point,
   on the PGMs of the women of fold k: every scan predicted by the one model that never saw its woman, on its
   own 1024² grid (MIAS's 200 µm nominal spacing, recorded by prep, carried by the model); with ``cv.nested``,
   ``-m RUN/nested/fold<k>``: the mean of the K-1 nested models that never saw its woman, as the point was chosen;
5. ``mammo evaluate -p PRED_1 … -p PRED_K -g DEV``: lesion-level detection against Info.txt, pooled over the
   folds (FROC, sensitivity by kind), lesion Dice, lesion-free scans with a detection, each with a 95 %
   bootstrap interval over women.

What was chosen on which scans: nothing of the recipe was chosen on these women's out-of-fold predictions
except the operating point (threshold, minimum area) of step 3, which is chosen on the same pooled
predictions that step 5 scores; the FROC does not depend on the threshold (it sweeps it) but does on the
minimum area.

Data: J. Suckling et al., "The Mammographic Image Analysis Society Digital Mammogram Database",
Excerpta Medica, International Congress Series 1069, pp. 375-378, 1994. Research use only: the scans
stay in ``--work`` and nothing that shows them is written to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine_description  # noqa: E402
from out_of_fold import plot_frocs, write_results  # noqa: E402
ARCHIVE = os.path.join(ROOT, "..", "shared", "data", "mias_real_dev.tar.xz")
RECIPE = os.path.join(ROOT, "experiments", "mias_real", "recipe.yaml")
RESULTS = os.path.join(ROOT, "benchmarks", "results")
WORK = os.path.join("/tmp", "mammo_quality_mias")
TARGETS = {("all", "sensitivity_at_1_fp_per_image"): (">=", 0.6), ("masses", "sensitivity_at_1_fp_per_image"): (">=", 0.7),
           ("all", "mean_lesion_dice"): (">=", 0.30), ("all", "normal_scans_flagged"): ("<=", 0.25)}
#: MIAS classes reported apart (the remaining class, NORM, has no lesion)
GROUPS = {"masses": ["CIRC", "MISC", "SPIC"], "calcifications": ["CALC"], "distortions and asymmetries": ["ARCH", "ASYM"]}


def mammo(*args: str, log: str) -> float:
    """Run ``mammo ARGS`` in a fresh process (output appended to ``log``); returns its seconds."""
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ mammo {' '.join(args)}\n")
        f.flush()
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        result = subprocess.run([sys.executable, "-m", "mammo_seg.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"quality_mias: `mammo {' '.join(args)}` failed (exit {result.returncode}); see {log}")
    return round(time.perf_counter() - start, 1)


def unpack(archive: str, work: str) -> str:
    dev = os.path.join(work, "mias_real_dev")
    if not os.path.isfile(os.path.join(dev, "Info.txt")):
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
    return dev


def link_fold(data: str, raw: str, fold_of: dict, fold: int, folder: str) -> int:
    """Symlink the scan files of fold ``fold``'s women into ``folder``; returns how many."""
    from mammo_seg.data.prep_output import PrepOutput

    os.makedirs(folder, exist_ok=True)
    n = 0
    for scan_id, info in sorted(PrepOutput(data).scans().items()):
        if fold_of.get(info["patient_id"]) == fold:
            os.symlink(os.path.abspath(os.path.join(raw, info["file"])),
                       os.path.join(folder, scan_id + os.path.splitext(info["file"])[1]))
            n += 1
    return n


def out_of_fold(run: str, data: str, raw: str, work: str, log: str, timings: dict) -> list[str]:
    """Step 4: each fold's women predicted at the ensemble's operating point by the model(s) it was chosen with:
    their fold's model, or the mean of the nested models without their fold."""
    from mammo_seg.run_dir import RunDir

    with open(RunDir(run).folds_file) as f:
        table = json.load(f)
    with open(os.path.join(run, "operating_point.json")) as f:
        point = json.load(f)
    folders, seconds = [], 0.0
    for k in range(1, table["folds"] + 1):
        scans, pred = os.path.join(work, f"fold{k}_scans"), os.path.join(work, f"fold{k}_pred")
        shutil.rmtree(scans, ignore_errors=True)
        shutil.rmtree(pred, ignore_errors=True)
        link_fold(data, raw, table["fold_of"], k, scans)
        flags = ["--threshold", f"{point['threshold']}", "--min-area", f"{point['min_area_mm2']}"]
        model = (RunDir(run).nested_fold(k) if nested(point) else RunDir(run).fold(k)).path
        seconds += mammo("predict", "-m", model, "-i", scans, "-o", pred, "--format",
                         "mask,prob,json", "--quiet", *flags, *(["--flip"] if point["flip"] else []), log=log)
        folders.append(pred)
    timings["predict_out_of_fold"] = round(seconds, 1)
    return folders


def is_finished(folder: str) -> bool:
    """Whether ``folder`` holds a finished run of this benchmark: its run recorded an operating point."""
    return os.path.isfile(os.path.join(folder, "run", "operating_point.json"))


def finished_work_arguments(description: str, out_name: str, argv=None) -> argparse.Namespace:
    """``--work`` (a finished run's working folder, checked: its run recorded an operating point) and ``--out`` (the
    results prefix, ``benchmarks/results/OUT_NAME`` by default): the arguments of a study on a finished run of this
    benchmark."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work", default=WORK, help="a finished benchmarks/quality_mias.py working folder")
    parser.add_argument("--out", default=os.path.join(RESULTS, out_name), help="PREFIX.json, PREFIX.md")
    args = parser.parse_args(argv)
    if not is_finished(args.work):
        parser.error(f"--work {args.work}: no finished quality_mias run (run/operating_point.json)")
    return args


def finished_runs_arguments(description: str, out_name: str, argv=None) -> tuple[dict, str]:
    """({name: folder}, results prefix) from ``--run NAME=FOLDER`` (repeatable; each a finished run's working folder,
    checked as by :func:`finished_work_arguments`) and ``--out``: the arguments of a study of several finished runs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run", action="append", required=True, metavar="NAME=FOLDER",
                        help="a finished quality_mias working folder (a levers arm's folder too); repeatable")
    parser.add_argument("--out", default=os.path.join(RESULTS, out_name), help="PREFIX.json, PREFIX.md")
    args = parser.parse_args(argv)
    folders = dict(r.split("=", 1) for r in args.run if "=" in r)
    if len(folders) != len(args.run):
        parser.error("--run: NAME=FOLDER, each NAME once")
    for name, folder in folders.items():
        if not is_finished(folder):
            parser.error(f"--run {name}={folder}: no finished quality_mias run (run/operating_point.json)")
    return folders, args.out


def nested(point: dict) -> bool:
    """Whether the operating point was chosen on means of nested models (``cv.nested``)."""
    from mammo_seg.inference.operating_point import models_per_scan

    return models_per_scan(point) > 1


def headline(evaluation: dict) -> dict:
    detection, intervals = evaluation["detection"], evaluation["intervals"]
    groups = {}
    for name, group in intervals["groups"].items():
        groups[name] = {"lesions": group["lesions"], "kinds": group["kinds"],
                        "sensitivity_at_fp_per_image": group["sensitivity_at_fp_per_image"],
                        "sensitivity_at_1_fp_per_image": group["sensitivity_at_fp_per_image"]["1"],
                        "sensitivity_at_operating_point": group["sensitivity_at_operating_point"]}
    return {"scans": evaluation["counts"]["scans"], "women": intervals["women"],
            "lesions": detection["at_operating_point"]["lesions"],
            "lesions_by_type": detection["at_operating_point"]["lesions_by_kind"],
            "sensitivity_by_type": detection["at_operating_point"]["sensitivity_by_kind"],
            "fp_per_image_reached": detection["froc"]["fp_per_image_reached"],
            "groups": groups,
            "fp_per_image_at_operating_point": intervals["fp_per_image_at_operating_point"],
            "mean_lesion_dice": intervals["mean_lesion_dice"],
            "mean_lesion_iou": evaluation["lesion_images"]["IoU"],
            "normal_scans_flagged": intervals["normal_with_detection_rate"],
            "failed_predictions": evaluation["counts"]["failed_predictions"],
            "interval_method": intervals["method"]}


def target_table(real: dict) -> list:
    rows = []
    for (group, key), (op, goal) in TARGETS.items():
        figure = real["groups"][group][key] if key.startswith("sensitivity") else real[key]
        value = figure["value"]
        met = value is not None and (value >= goal if op == ">=" else value <= goal)
        rows.append({"group": group, "figure": key, "value": value, "ci95": figure["ci95"],
                     "target": f"{op} {goal}", "met": met})
    return rows


def predicted_by(point: dict) -> str:
    from mammo_seg.inference.operating_point import models_per_scan

    if nested(point):
        return (f"the mean of the {models_per_scan(point)} nested models that never saw its woman "
                f"(nested cross-validation, `cv.nested`)")
    return "the fold model that never saw its woman"


def write_markdown(report: dict, path: str) -> None:
    def f(figure):
        if figure is None or figure.get("value") is None:
            return "n/a"
        ci = figure.get("ci95")
        return f"{figure['value']:.2f}" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")

    real, point = report["real"], report["operating_point"]
    lines = ["# Lesion finding on real mini-MIAS scans, out of fold", "",
             f"Recipe `{report['recipe']}`: {report['folds']}-fold cross-validation by woman over the dev set, "
             f"{real['scans']} scans of {real['women']} women, {real['lesions']} lesions with coordinates; every "
             f"scan predicted by {predicted_by(point)}. Operating point chosen on the pooled "
             f"out-of-fold predictions ({point['rule']}): threshold {point['threshold']:g}, minimum lesion "
             f"{point['min_area_mm2']:g} mm², flip {point['flip']}. 95 % intervals: {real['interval_method']}. "
             f"Total {report['seconds_total'] / 60:.1f} min on {report['machine']}.", "",
             "| lesions | n | sens. @0.25 | @0.5 | @1 | @2 | @4 FP/image | at the operating point |",
             "|---|---|---|---|---|---|---|---|"]
    for name, group in real["groups"].items():
        s = group["sensitivity_at_fp_per_image"]
        lines.append(f"| {name} ({', '.join(group['kinds'])}) | {group['lesions']} | {f(s['0.25'])} | {f(s['0.5'])} | "
                     f"{f(s['1'])} | {f(s['2'])} | {f(s['4'])} | {f(group['sensitivity_at_operating_point'])} |")
    lines += ["", f"At the operating point: {f(real['fp_per_image_at_operating_point'])} false positives per image, "
              f"mean lesion Dice {f(real['mean_lesion_dice'])} over scans with a lesion, lesion-free scans with a "
              f"detection {f(real['normal_scans_flagged'])}. The FROC reaches "
              f"{real['fp_per_image_reached']:.2f} false positives per image at its lowest threshold; beyond, it is "
              f"extended flat.", "",
              "| target | value (95 % interval) | goal | met |", "|---|---|---|---|"]
    for t in report["targets"]:
        figure = {"value": t["value"], "ci95": t["ci95"]}
        lines.append(f"| {t['figure']} ({t['group']}) | {f(figure)} | {t['target']} | {'yes' if t['met'] else 'no'} |")
    by_type = real["sensitivity_by_type"]
    lines += ["", "Sensitivity by MIAS class at the operating point: " + ", ".join(
        f"{k} {v:.2f} ({real['lesions_by_type'][k]})" for k, v in by_type.items() if v is not None) + "."]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


def plot_froc(evaluation: dict, path: str) -> None:

    plot_frocs({"all lesions, out of fold": evaluation["detection"]["froc"]}, path,
               "FROC, real mini-MIAS dev set, out of fold",
               intervals=evaluation["intervals"]["groups"]["all"]["sensitivity_at_fp_per_image"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=RECIPE)
    parser.add_argument("--archive", default=ARCHIVE, help="the real mini-MIAS dev archive (.tar.xz)")
    parser.add_argument("--work", default=WORK,
                        help="working folder (the unpacked scans, prep output, run, predictions)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "quality_mias"),
                        help="results prefix: PREFIX.json, PREFIX.md, PREFIX_froc.png")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key for the training (a lever under study); repeatable")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: delete --work's prep output, run and earlier timings")
    args = parser.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    log = os.path.join(args.work, "quality_mias.log")
    data, run = os.path.join(args.work, "data"), os.path.join(args.work, "run")
    spent = os.path.join(args.work, "seconds.json")  # an interrupted benchmark continues: its seconds add up
    if args.fresh:
        for path in (data, run, spent):
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else \
                os.path.exists(path) and os.remove(path)
    earlier = json.load(open(spent)) if os.path.isfile(spent) else {}
    timings = {}
    dev = unpack(args.archive, args.work)
    if not os.path.isfile(os.path.join(data, "scans.json")):
        timings["prep"] = mammo("prep", "mias", "--raw", dev, "--out", data, "--config", args.recipe, "--workers",
                                "2", "--quiet", log=log)
    overrides = [a for s in args.set for a in ("--set", s)]
    # continues a run of the same recipe (finished folds are kept), refuses one of another
    timings["train"] = mammo("train", "-c", args.recipe, "--set", f"data.dir={data}", *overrides, "--out", run,
                             "--quiet", log=log)
    with open(spent, "w") as f:
        json.dump({k: round(earlier.get(k, 0) + timings.get(k, 0), 1) for k in ("prep", "train")}, f)
    folders = out_of_fold(run, data, dev, args.work, log, timings)
    evaluation_file = os.path.join(args.work, "evaluation.json")
    groups = [a for name, kinds in GROUPS.items() for a in ("--group", f"{name}={','.join(kinds)}")]
    timings["evaluate"] = mammo("evaluate", *[a for p in folders for a in ("-p", p)], "-g", dev, *groups,
                                "-o", evaluation_file, log=log)
    with open(evaluation_file) as f:
        evaluation = json.load(f)
    with open(os.path.join(run, "operating_point.json")) as f:
        point = json.load(f)
    with open(os.path.join(run, "cv.json")) as f:
        folds = json.load(f)["folds"]
    report = {"recipe": os.path.relpath(args.recipe, ROOT), "overrides": args.set,
              "dataset": "mini-MIAS dev set (Suckling et al. 1994)", "folds": folds,
              "machine": machine_description(), "operating_point": point, "real": headline(evaluation)}
    report["targets"] = target_table(report["real"])
    for key in ("prep", "train"):  # with the seconds of earlier, interrupted invocations
        timings[key] = round(earlier.get(key, 0) + timings.get(key, 0), 1)
    report["seconds"] = timings
    report["seconds_total"] = round(sum(timings.values()), 1)
    write_results(args.out, report, write_markdown, lambda path: plot_froc(evaluation, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
