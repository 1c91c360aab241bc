"""Each lever over three trainings: the mean of its paired out-of-fold differences from the recipe across the
training seeds it was run with (:mod:`benchmarks.levers_mias`'s ``NAME``, ``NAME_seed_1`` and ``NAME_seed_2`` arms,
each against the recipe trained with the same seed: ``recipe``, ``seed_1``, ``seed_2``) → JSON and a Markdown table.

    .venv/bin/python benchmarks/levers_seeds_mias.py --work W0,W1,W2 --levers ignore_calc,deep_supervision  # minutes

``--work`` names the :mod:`benchmarks.levers_mias` work folder of each seed (0, 1, 2), in which the seed's recipe arm
and the levers' arms have finished (``result.json``). Nothing is trained: the arms' out-of-fold predictions are
scored again, every arm's FROC at one minimum detection area (``--min-area``, as :mod:`benchmarks.levers_mias`),
and :func:`mammo_seg.intervals.mean_paired_difference` gives each lever's mean difference over the seeds with a 95 %
paired bootstrap interval over women (the same women drawn for every arm). One training moves these figures by up to
0.05-0.1; the mean of three moves less, so a lever's effect is easier to tell from the seed's than in any one
seed's table. The interval is over women for these trainings: it does not include what other seeds would give.

An arm folder that recorded its overrides (``arm.json``) must have recorded the lever's (a folder of another setting
under the arm's name is refused); its recipe's SHA-256 is not compared, so that arms run before a change to the
recipe's comments stay usable.

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
from levers_mias import ARMS, SEED_BASELINES, seed_twin  # noqa: E402
from out_of_fold import (DIFFERENCE_GROUPS, aligned_arms, figure_text, lesion_groups, out_of_fold_cases,  # noqa: E402
                         recorded_arm, write_results)
from quality_mias import GROUPS, RESULTS  # noqa: E402


def seed_arms(lever: str, seeds: int) -> list[tuple[int, str, str]]:
    """(seed, the lever's arm, the recipe's arm) for each training seed 0 … ``seeds`` − 1."""
    return [(seed, seed_twin(lever, seed), SEED_BASELINES[seed]) for seed in range(seeds)]


def check_folder(folder: str, name: str) -> None:
    """``folder`` holds the finished arm ``name``: its ``result.json``, and, where it recorded them, its overrides
    (SystemExit with one line otherwise)."""
    if not os.path.isfile(os.path.join(folder, "result.json")):
        raise SystemExit(f"levers_seeds: {folder}: arm {name} has not finished (no result.json)")
    record = recorded_arm(folder, "levers_seeds")
    if record is not None and record.get("overrides") != ARMS[name][1]:
        raise SystemExit(f"levers_seeds: {folder} was run with overrides {record.get('overrides')}, not arm {name}'s "
                         f"{ARMS[name][1]}")


def lever_difference(lever: str, works: list[str], truth, min_area_mm2: float, baselines: dict) -> dict:
    """The lever's :func:`mammo_seg.intervals.mean_paired_difference` over the seeds of ``works`` (one work folder a
    seed), every arm at ``min_area_mm2`` on the scans all of them predicted. ``baselines``: the recipe arms' cases,
    filled on first use and shared by the levers (their detections are computed once)."""
    from mammo_seg.intervals import mean_paired_difference

    triples = seed_arms(lever, len(works))
    cases = {}
    for seed, arm, base in triples:
        if base not in baselines:
            check_folder(os.path.join(works[seed], base), base)
            baselines[base] = out_of_fold_cases(os.path.join(works[seed], base), truth)
        check_folder(os.path.join(works[seed], arm), arm)
        cases[arm], cases[base] = out_of_fold_cases(os.path.join(works[seed], arm), truth), baselines[base]
    arms, women = aligned_arms(cases, min_area_mm2)
    groups = lesion_groups(arms[SEED_BASELINES[0]].scans, GROUPS)
    return {"arms": [[arm, base] for _, arm, base in triples],
            **mean_paired_difference([(arms[arm], arms[base]) for _, arm, base in triples], women, groups=groups)}


def write_markdown(report: dict, path: str) -> None:
    f = figure_text
    seeds = report["seeds"]
    first = next(iter(report["levers"].values()))
    lines = [f"# Each lever over {seeds} trainings, real mini-MIAS, out of fold", "",
             f"Each lever against the recipe, trained with the same seed (0 to {seeds - 1}) on the same folds by "
             f"woman; {first['scans']} scans of {first['women']} women, {first['mean']['groups']['all']['lesions']} "
             f"lesions; every scan predicted by the fold model that never saw its "
             f"woman. The mean over the {seeds} trainings of (lever − recipe), with a 95 % paired bootstrap interval "
             f"over women (the same women drawn for every arm), **bold** where it excludes 0; then each training's "
             f"own difference. FROC sensitivities at one minimum detection area for every arm "
             f"({report['min_area_mm2']:g} mm²); the lesion Dice at each arm's own operating point. The interval is "
             f"over women for these trainings: it leaves out what other training seeds would give.", "",
             "| lever | setting | lesions @1 FP/image: mean (seeds) | @2 | masses @1 | "
             + "".join(f"{header} | " for header, _ in DIFFERENCE_GROUPS[1:]) + "lesion Dice: mean (seeds) |",
             "|---|---|---|---|---|" + "---|" * len(DIFFERENCE_GROUPS[1:]) + "---|"]

    def at(entry, group, rate="1"):
        return entry["groups"][group]["sensitivity_at_fp_per_image"][rate]

    def seeds_text(values):
        return ", ".join("n/a" if v is None else f"{v:+.2f}" for v in values)

    for lever, d in report["levers"].items():
        mean = d["mean"]
        dice_seeds = seeds_text(e["mean_lesion_dice"] for e in d["each"])
        lines.append(f"| {lever} | {d['setting']} | {f(at(mean, 'all'), True)} "
                     f"({seeds_text(at(e, 'all') for e in d['each'])}) | {f(at(mean, 'all', '2'), True)} | "
                     f"{f(at(mean, 'masses'), True)} | "
                     + "".join(f"{f(at(mean, group), True)} | " for _, group in DIFFERENCE_GROUPS[1:])
                     + f"{f(mean['mean_lesion_dice'], True)} ({dice_seeds}) |")
    lines += ["", f"Machine: {report['machine']}. Levers: `benchmarks/levers_mias.py`; work folders: "
                  + ", ".join(f"seed {i}: {w}" for i, w in enumerate(report["work"])) + "."]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True,
                        help="comma-separated: the levers_mias work folder of seed 0, 1, … (with its recipe arm)")
    parser.add_argument("--levers", required=True,
                        help="comma-separated levers_mias arms that have seed twins (NAME_seed_1, NAME_seed_2)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "levers_seeds_mias"),
                        help="results prefix: PREFIX.json, PREFIX.md")
    parser.add_argument("--min-area", type=float, default=160.0,
                        help="mm²: the smallest detection of every arm's FROC (levers_mias's default)")
    args = parser.parse_args(argv)
    works = [w for w in args.work.split(",") if w]
    levers = [lever for lever in args.levers.split(",") if lever]
    if not 2 <= len(works) <= len(SEED_BASELINES):
        parser.error(f"--work: one folder a seed, 2 to {len(SEED_BASELINES)} of them")
    missing = [w for w in works if not os.path.isdir(w)]
    if missing:
        parser.error(f"--work: not a folder: {', '.join(missing)}")
    unknown = [lever for lever in levers if any(arm not in ARMS for _, arm, _ in seed_arms(lever, len(works)))]
    if unknown or not levers:
        parser.error(f"--levers: levers_mias arms with seed twins (unknown: {', '.join(unknown) or 'none given'})")
    from data_prep.ground_truth import ground_truth
    from mammo_seg.errors import MammoError

    check_folder(os.path.join(works[0], SEED_BASELINES[0]), SEED_BASELINES[0])
    try:
        truth = ground_truth(os.path.join(works[0], SEED_BASELINES[0], "mias_real_dev"))
    except MammoError as e:
        raise SystemExit(f"levers_seeds: {e}") from None
    report = {"machine": machine_description(), "seeds": len(works), "work": works, "min_area_mm2": args.min_area,
              "levers": {}}
    baselines: dict = {}
    for lever in levers:
        print(f"levers_seeds: {lever}", flush=True)
        report["levers"][lever] = {"setting": ARMS[lever][0],
                                   **lever_difference(lever, works, truth, args.min_area, baselines)}
    write_results(args.out, report, write_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
