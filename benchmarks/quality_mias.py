"""Lesion finding on real mammograms: the mini-MIAS recipe end to end → JSON, Markdown table, FROC plot.

    .venv/bin/python benchmarks/quality_mias.py    # after the README's test install: about 32 minutes on a 2-core CPU

Every step is a ``mammo`` verb, run as a user would run it:

1. unpack ``../shared/data/mias_real_dev.tar.xz`` (216 real mini-MIAS scans of 108 women) into ``--work``;
2. ``mammo prep mias --raw DEV --out DATA --config RECIPE`` (patient-level split: the test women are
   fixed by the recipe's seed);
3. ``mammo train -c RECIPE --set data.dir=DATA --out RUN`` (the recipe's stages, then the operating
   point chosen on the validation women);
4. ``mammo predict -m RUN -i TEST_PGMS -o PRED`` on the test women's PGMs (no PixelSpacing: MIAS's
   200 µm nominal spacing recorded by prep, carried by the model);
5. ``mammo evaluate -p PRED -g DEV``: lesion-level detection against Info.txt (FROC, per-type
   sensitivity), lesion Dice and IoU, lesion-free scans with a detection.

The phantoms, for comparison: the same model on held-out MIAS-format phantoms, and a model trained by
the same recipe on phantoms only, scored on the real test women.

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
ARCHIVE = os.path.join(ROOT, "..", "shared", "data", "mias_real_dev.tar.xz")
RECIPE = os.path.join(ROOT, "experiments", "mias_real", "recipe.yaml")
RESULTS = os.path.join(ROOT, "benchmarks", "results")
TARGETS = {"sensitivity_at_1_fp_per_image": (">=", 0.6), "mean_lesion_dice": (">=", 0.30),
           "normal_scans_with_detection": ("<=", 0.25)}


def mammo(*args: str, log: str) -> float:
    """Run ``mammo ARGS`` in a fresh process (output appended to ``log``); returns its seconds."""
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ mammo {' '.join(args)}\n")
        f.flush()
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        result = subprocess.run([sys.executable, "-m", "mammo_seg.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"quality_mias: `mammo {' '.join(args)}` failed (exit {result.returncode}); see {log}")
    return round(time.perf_counter() - start, 1)


def unpack(work: str) -> str:
    dev = os.path.join(work, "mias_real_dev")
    if not os.path.isfile(os.path.join(dev, "Info.txt")):
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(work, filter="data")
    return dev


def train_and_score(name: str, raw: str, work: str, recipe: str, log: str, timings: dict) -> tuple[str, str]:
    """prep + train by the recipe on ``raw``; returns (prep output, run directory)."""
    data, run = os.path.join(work, f"{name}_data"), os.path.join(work, f"{name}_run")
    timings[f"{name}_prep"] = mammo("prep", "mias", "--raw", raw, "--out", data, "--config", recipe, "--workers", "2",
                                    "--quiet", log=log)
    timings[f"{name}_train"] = mammo("train", "-c", recipe, "--set", f"data.dir={data}", "--out", run, "--quiet",
                                     log=log)
    return data, run


def predict_and_evaluate(name: str, run: str, data: str, raw: str, work: str, log: str, timings: dict) -> dict:
    """Predict the test split of ``data`` with ``run`` and evaluate against ``raw``; returns the evaluation."""
    from mammo_seg.data.prep_output import PrepOutput

    folder = os.path.join(work, f"{name}_test_scans")
    PrepOutput(data).link_split("test", raw, folder)
    pred = os.path.join(work, f"{name}_pred")
    shutil.rmtree(pred, ignore_errors=True)
    timings[f"{name}_predict"] = mammo("predict", "-m", run, "-i", folder, "-o", pred, "--format", "mask,prob,json",
                                       "--quiet", log=log)
    evaluation = os.path.join(work, f"{name}_evaluation.json")
    timings[f"{name}_evaluate"] = mammo("evaluate", "-p", pred, "-g", raw, "-o", evaluation, log=log)
    with open(evaluation) as f:
        return json.load(f)


def headline(evaluation: dict) -> dict:
    detection = evaluation["detection"]
    return {"test_scans": evaluation["counts"]["scans"],
            "lesions": detection["at_operating_point"]["lesions"],
            "sensitivity_at_fp_per_image": detection["froc"]["sensitivity_at_fp_per_image"],
            "sensitivity_at_1_fp_per_image": detection["froc"]["sensitivity_at_fp_per_image"]["1"],
            "sensitivity_at_operating_point": detection["at_operating_point"]["sensitivity"],
            "fp_per_image_at_operating_point": detection["at_operating_point"]["fp_per_image"],
            "sensitivity_by_type": detection["at_operating_point"]["sensitivity_by_kind"],
            "lesions_by_type": detection["at_operating_point"]["lesions_by_kind"],
            "mean_lesion_dice": evaluation["lesion_images"]["Dice"],
            "mean_lesion_iou": evaluation["lesion_images"]["IoU"],
            "normal_scans_with_detection": detection["at_operating_point"]["normal_with_detection_rate"],
            "failed_predictions": evaluation["counts"]["failed_predictions"]}


def target_table(real: dict) -> dict:
    table = {}
    for key, (op, goal) in TARGETS.items():
        value = real[key]
        met = value is not None and (value >= goal if op == ">=" else value <= goal)
        table[key] = {"value": value, "target": f"{op} {goal}", "met": met}
    return table


def write_markdown(report: dict, path: str) -> None:
    def f(v):
        return "n/a" if v is None else f"{v:.2f}"

    lines = ["# Lesion finding on real mini-MIAS scans (dev set, held-out test women)", "",
             f"Recipe `{report['recipe']}`; {report['real']['test_scans']} test scans of the dev set's test women, "
             f"{report['real']['lesions']} lesions; total {report['seconds_total'] / 60:.1f} min on "
             f"{report['machine']}.", "",
             "| model → scored on | sens. @0.25 | @0.5 | @1 | @2 | @4 FP/image | lesion Dice | lesion IoU | "
             "normal scans flagged |", "|---|---|---|---|---|---|---|---|---|"]
    for label, key in (("real MIAS → real test women", "real"), ("real MIAS → held-out phantoms", "real_on_phantoms"),
                       ("phantoms only → real test women", "phantom_on_real")):
        r = report.get(key)
        if r is None:
            continue
        s = r["sensitivity_at_fp_per_image"]
        lines.append(f"| {label} | {f(s['0.25'])} | {f(s['0.5'])} | {f(s['1'])} | {f(s['2'])} | {f(s['4'])} | "
                     f"{f(r['mean_lesion_dice'])} | {f(r['mean_lesion_iou'])} | {f(r['normal_scans_with_detection'])} |")
    lines += ["", "| target (real test women) | value | goal | met |", "|---|---|---|---|"]
    for key, t in report["targets"].items():
        lines.append(f"| {key} | {f(t['value'])} | {t['target']} | {'yes' if t['met'] else 'no'} |")
    by_type = report["real"]["sensitivity_by_type"]
    lines += ["", "Sensitivity by MIAS type at the operating point: " + ", ".join(
        f"{k} {f(v)} ({report['real']['lesions_by_type'][k]})" for k, v in by_type.items()) + "."]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


def plot_froc(report: dict, evaluations: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, evaluation in evaluations.items():
        points = sorted((p["fp_per_image"], p["sensitivity"]) for p in evaluation["detection"]["froc"]["points"]
                        if p["sensitivity"] is not None)
        ax.step([p[0] for p in points], [p[1] for p in points], where="post", marker=".", label=label)
    ax.set_xscale("symlog", linthresh=0.25)
    ax.set_xlim(0, 8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title("FROC, mini-MIAS dev set, held-out test women")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=RECIPE)
    parser.add_argument("--work", default=os.path.join("/tmp", "mammo_quality_mias"),
                        help="working folder (the unpacked scans, preps, runs, predictions)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "quality_mias"),
                        help="results prefix: PREFIX.json, PREFIX.md, PREFIX_froc.png")
    parser.add_argument("--phantom-images", type=int, default=216, help="MIAS-format phantoms for the comparison")
    parser.add_argument("--no-phantoms", action="store_true", help="skip the phantom comparisons")
    args = parser.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    log = os.path.join(args.work, "quality_mias.log")
    start, timings = time.perf_counter(), {}
    dev = unpack(args.work)
    data, run = train_and_score("real", dev, args.work, args.recipe, log, timings)
    evaluations = {"real MIAS → real test women": predict_and_evaluate("real", run, data, dev, args.work, log, timings)}
    report = {"recipe": os.path.relpath(args.recipe, ROOT), "dataset": "mini-MIAS dev set (Suckling et al. 1994)",
              "machine": f"{os.cpu_count()}-core CPU", "real": headline(evaluations["real MIAS → real test women"])}
    with open(operating_point_file(run)) as f:
        report["operating_point"] = json.load(f)
    if not args.no_phantoms:
        phantoms = os.path.join(args.work, "phantoms")
        if not os.path.isdir(phantoms):
            timings["phantom_synth"] = mammo("synth", "mias", "--out", phantoms, "--images", str(args.phantom_images),
                                             "--seed", "11", "--quiet", log=log)
        ph_data, ph_run = train_and_score("phantom", phantoms, args.work, args.recipe, log, timings)
        on_phantoms = predict_and_evaluate("real_on_phantoms", run, ph_data, phantoms, args.work, log, timings)
        on_real = predict_and_evaluate("phantom_on_real", ph_run, data, dev, args.work, log, timings)
        evaluations["real MIAS → held-out phantoms"] = on_phantoms
        evaluations["phantoms only → real test women"] = on_real
        report["real_on_phantoms"], report["phantom_on_real"] = headline(on_phantoms), headline(on_real)
    report["targets"] = target_table(report["real"])
    report["seconds"] = timings
    report["seconds_total"] = round(time.perf_counter() - start, 1)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(report, f, indent=2)
    write_markdown(report, args.out + ".md")
    plot_froc(report, evaluations, args.out + "_froc.png")
    print(open(args.out + ".md").read())
    return 0


def operating_point_file(run: str) -> str:
    from mammo_seg.inference.operating_point import path_for
    from mammo_seg.run_dir import model_file

    return path_for(model_file(run))


if __name__ == "__main__":
    sys.exit(main())
