"""Shared pieces of the real-data comparisons (:mod:`quality_mias`, :mod:`loss_study_mias`, :mod:`levers_mias`,
:mod:`flip_tta_mias`): arms (the recipe with some keys changed, each one :mod:`quality_mias` run), their out-of-fold
predictions lined up scan by scan and compared with paired intervals, result files and FROC plots."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def figure_text(figure: dict | None, signed: bool = False) -> str:
    """A figure of :mod:`mammo_seg.intervals` as "0.21 (0.12 to 0.30)"; a paired difference ``signed`` ("+0.01 (-0.04
    to +0.08)"), in bold when its interval excludes 0."""
    if figure is None or figure.get("value") is None:
        return "n/a"
    fmt = "+.2f" if signed else ".2f"
    ci = figure.get("ci95")
    text = f"{figure['value']:{fmt}}" + (f" ({ci[0]:{fmt}} to {ci[1]:{fmt}})" if ci else "")
    return f"**{text}**" if figure.get("resolved") else text


def write_results(prefix: str, report: dict, write_markdown, plot=None) -> None:
    """PREFIX.json, PREFIX.md (``write_markdown(report, path)``, then "Run: " and the report's ``provenance`` where
    it has one: how a result committed from another run was made) and, with ``plot(path)``, PREFIX_froc.png;
    prints the Markdown."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(prefix + ".json", "w") as f:
        json.dump(report, f, indent=2)
    write_markdown(report, prefix + ".md")
    if report.get("provenance"):
        with open(prefix + ".md", "a") as f:
            f.write(f"\nRun: {report['provenance']}\n")
    if plot is not None:
        plot(prefix + "_froc.png")
    with open(prefix + ".md") as f:
        print(f.read())


def _figure_cells(figures: dict, signed: bool) -> list[str]:
    """The cells of one row of :func:`same_models_table`: an arm's figures, or its paired differences (``signed``)."""
    s = figures["groups"]["all"]["sensitivity_at_fp_per_image"]
    return [figure_text(s[rate], signed) for rate in ("0.5", "1", "2")] + [
        figure_text(figures["groups"]["masses"]["sensitivity_at_fp_per_image"]["1"], signed),
        figure_text(figures["groups"]["all"]["sensitivity_at_operating_point"], signed),
        figure_text(figures["mean_lesion_dice"], signed), figure_text(figures["normal_with_detection_rate"], signed)]


def same_models_table(report: dict) -> list[str]:
    """The Markdown table of arms that score the same models' scans in other ways (``report``: ``arms``, each arm's
    :func:`mammo_seg.intervals.bootstrap` figures; ``operating_points``, each arm's threshold and minimum area;
    ``paired``, :func:`mammo_seg.intervals.paired_differences` from the baseline): a row an arm, then a row a
    difference."""
    lines = ["| arm | operating point | sens. @0.5 FP/image | @1 | @2 | masses @1 | at the point | lesion Dice | "
             "normals flagged |", "|---|---|---|---|---|---|---|---|---|"]
    for name, figures in report["arms"].items():
        point = report["operating_points"][name]
        cells = [name, f"{point['threshold']:g}, ≥ {point['min_area_mm2']:g} mm²", *_figure_cells(figures, False)]
        lines.append("| " + " | ".join(cells) + " |")
    baseline = report["paired"]["baseline"]
    for name, diff in report["paired"]["differences"].items():
        lines.append("| " + " | ".join([f"{name} − {baseline}", "", *_figure_cells(diff, True)]) + " |")
    return lines


def lesion_dice(scans: list, threshold: float, min_area_mm2: float) -> list:
    """Per scan, the lesion Dice of its detections at (``threshold``, ``min_area_mm2``)
    (:func:`mammo_seg.detection.detection_dice`); None for a scan without a lesion or without a probability map (a
    failed prediction), as ``mammo evaluate`` leaves them out of the mean."""
    from mammo_seg.detection import detection_dice, min_area_px

    return [detection_dice(scan.probability, np.any(scan.lesions, axis=0), threshold,
                           min_area_px(min_area_mm2, scan.pixel_area_mm2), scan.ignore)
            if scan.lesions and scan.probability is not None else None for scan in scans]


def reference_mask(scan) -> np.ndarray:
    """The stored-mask form (:mod:`mammo_seg.data.features`) of a scan's lesions and ignore region."""
    from mammo_seg.data.features import IGNORE, LESION

    mask = np.zeros(scan.probability.shape, np.uint8)
    if scan.ignore is not None:
        mask[scan.ignore] = IGNORE
    if scan.lesions:
        mask[np.any(scan.lesions, axis=0)] = LESION
    return mask


def own_point(scans: list, section) -> dict:
    """The operating point the recipe's rule (its ``operating_point`` ``section``) chooses on the scans with a
    probability map (on their grid, without flip: the arms' maps are the network's on the scan alone)."""
    from mammo_seg.inference.operating_point import choose_by_section

    predicted = [scan for scan in scans if scan.probability is not None]
    areas = {scan.pixel_area_mm2 for scan in predicted}
    if len(areas) != 1:
        raise SystemExit(f"the scans have {len(areas)} pixel sizes; the rule needs one grid")
    record = choose_by_section({False: [(scan.probability, reference_mask(scan)) for scan in predicted]},
                               areas.pop(), section)
    return {k: record[k] for k in ("threshold", "min_area_mm2", "rule", "validation")}


def point_arm(scans: list, section) -> tuple:
    """(:class:`mammo_seg.intervals.Arm`, the operating point's record) of scans with probability maps on one grid:
    the point :func:`own_point` chooses, and each scan's lesion Dice there (:func:`lesion_dice`)."""
    from mammo_seg.intervals import Arm

    point = own_point(scans, section)
    return Arm(scans, lesion_dice(scans, point["threshold"], point["min_area_mm2"]), point["threshold"],
               point["min_area_mm2"]), point


def lesion_groups(scans: list, groups: dict) -> dict:
    """The lesion groups a study reports (:mod:`mammo_seg.intervals`): "all", every kind of ``scans``' lesions,
    then each of ``groups`` (name → kinds)."""
    return {"all": {k for s in scans for k in s.kinds}, **{g: set(k) for g, k in groups.items()}}


def same_models_figures(arms: dict, women: list, baseline: str, groups: dict) -> dict:
    """``arms``: each arm's :func:`mammo_seg.intervals.bootstrap` figures at its own point; ``paired``: each arm's
    paired differences from ``baseline`` (what :func:`same_models_table` shows)."""
    from mammo_seg.intervals import bootstrap, paired_differences

    return {"arms": {name: bootstrap(arm.scans, women, arm.threshold, arm.min_area_mm2, arm.dice, groups=groups)
                     for name, arm in arms.items()},
            "paired": paired_differences(arms, women, baseline, groups=groups)}


def aligned_arms(cases: dict, min_area_mm2: float | None = None) -> tuple[dict, list]:
    """({name: :class:`mammo_seg.intervals.Arm`}, the woman of each scan) from each model's
    :class:`mammo_seg.evaluate.Cases`, on the scans every model predicted, in one order (by reference scan id).
    Each arm at its own operating point, or every arm's detections at ``min_area_mm2`` when given."""
    from mammo_seg.intervals import Arm

    common = sorted(set.intersection(*(set(c.references) for c in cases.values())))
    arms, women = {}, []
    for name, c in cases.items():
        at = {ref: i for i, ref in enumerate(c.references)}
        order = [at[ref] for ref in common]
        arms[name] = Arm([c.scans[i] for i in order], [c.dice[i] for i in order], c.threshold,
                         c.min_area_mm2 if min_area_mm2 is None else min_area_mm2)
        women = [c.women[i] for i in order]
    return arms, women


def plot_frocs(curves: dict, path: str, title: str, intervals: dict | None = None) -> None:
    """Step FROC curves (``curves``: label → :func:`mammo_seg.detection.froc`'s result) on one plot; ``intervals``:
    the 95 % intervals at each false-positive rate (``bootstrap``'s ``sensitivity_at_fp_per_image``) drawn as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, froc in curves.items():
        points = sorted((p["fp_per_image"], p["sensitivity"]) for p in froc["points"] if p["sensitivity"] is not None)
        ax.step([p[0] for p in points], [p[1] for p in points], where="post", marker=".", label=label)
    if intervals:
        rates = [float(r) for r in intervals]
        lo = [intervals[r]["ci95"][0] if intervals[r]["ci95"] else None for r in intervals]
        hi = [intervals[r]["ci95"][1] if intervals[r]["ci95"] else None for r in intervals]
        ax.vlines(rates, lo, hi, color="grey", alpha=0.6, label="95 % interval over women")
    ax.set_xscale("symlog", linthresh=0.25)
    ax.set_xlim(0, 8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def arm_recipe(recipe: str, work: str, prep: dict) -> str:
    """The recipe an arm runs: ``recipe``, or, when the arm changes prep keys (``prep``), a copy in ``work``
    with them set (prep reads only the recipe file; ``--set`` reaches the training)."""
    if not prep:
        return recipe
    import yaml

    with open(recipe) as f:
        content = yaml.safe_load(f)
    content["prep"] = {**content.get("prep", {}), **prep}
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "recipe.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(content, f, sort_keys=False)
    return path


#: the file in an arm's folder that says how the arm was run: its recipe's SHA-256 and its overrides
ARM_RECORD = "arm.json"


def arm_record(recipe: str, overrides: list[str]) -> dict:
    """What an arm's results depend on beyond the data: the recipe file's SHA-256 and the ``--set`` overrides."""
    with open(recipe, "rb") as f:
        return {"recipe_sha256": hashlib.sha256(f.read()).hexdigest(), "overrides": list(overrides)}


def recorded_arm(folder: str, study: str) -> dict | None:
    """What ``folder`` recorded of how its arm was run (:data:`ARM_RECORD`), None when it recorded nothing (an arm
    run before arms were recorded); an unreadable record is one line naming it (SystemExit)."""
    path = os.path.join(folder, ARM_RECORD)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise SystemExit(f"{study}: {path}: unreadable ({type(e).__name__}: {e}); remove the arm folder to rerun it")


def check_arm_record(folder: str, record: dict, study: str) -> bool:
    """Whether ``folder`` recorded ``record``: True when it did, False when it recorded nothing (an arm run
    before arms were recorded); a folder run otherwise is one line naming it and what differs (SystemExit)."""
    earlier = recorded_arm(folder, study)
    if earlier is None:
        return False
    differences = []
    if earlier.get("recipe_sha256") != record["recipe_sha256"]:
        was = str(earlier.get("recipe_sha256"))[:12]
        differences.append(f"recipe SHA-256 {was}, now {record['recipe_sha256'][:12]}")
    if earlier.get("overrides") != record["overrides"]:
        differences.append(f"overrides {earlier.get('overrides')}, now {record['overrides']}")
    if differences:
        raise SystemExit(f"{study}: {folder} was run with another recipe or overrides ({'; '.join(differences)}); "
                         f"remove it or use another --work")
    return True


def run_arm(name: str, label: str, recipe: str, overrides: list[str], archive: str, work: str, study: str) -> float:
    """Arm ``name``: ``quality_mias.py --recipe RECIPE --set ...`` in ``work/name``; returns the seconds it took
    now. The folder records the recipe's SHA-256 and the overrides (``arm.json``) before the arm runs; an arm whose
    ``result.json`` exists is reused (so a study resumes) when it recorded the same, and refused when it recorded
    others. An arm folder from before arms were recorded is reused with a warning."""
    folder = os.path.join(work, name)
    record = arm_record(recipe, overrides)
    recorded = check_arm_record(folder, record, study)
    if os.path.isfile(os.path.join(folder, "result.json")):
        if not recorded:
            print(f"{study}: warning: {folder} has no {ARM_RECORD} (its recipe and overrides are not known); its "
                  f"result.json is reused as it is", file=sys.stderr, flush=True)
        return 0.0
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ARM_RECORD), "w") as f:
        json.dump(record, f, indent=2)
    start = time.perf_counter()
    command = [sys.executable, os.path.join(HERE, "quality_mias.py"), "--recipe", recipe, "--archive", archive,
               "--work", folder, "--out", os.path.join(folder, "result"), *[a for s in overrides for a in ("--set", s)]]
    print(f"{study}: arm {name} ({label})", flush=True)
    with open(os.path.join(work, f"{name}.out"), "w") as log:
        if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            raise SystemExit(f"{study}: arm {name} failed; see {log.name}")
    return round(time.perf_counter() - start, 1)


def training_pixel_mm(folder: str) -> float:
    """The training grid of a ``quality_mias`` work folder (an arm's), mm per training pixel (its prep output's
    manifest)."""
    with open(os.path.join(folder, "data", "full", "manifest.json")) as f:
        return json.load(f)["resolution"]["spacing_mm"]


def arm_result(work: str, name: str) -> dict:
    """The arm's ``quality_mias`` report (``result.json``)."""
    with open(os.path.join(work, name, "result.json")) as f:
        return json.load(f)


def out_of_fold_cases(folder: str, truth):
    """:func:`mammo_seg.evaluate.collect_cases` of a finished ``quality_mias`` working folder's out-of-fold
    predictions (``fold<k>_pred``, one per fold of its ``run/cv.json``) against ``truth``."""
    from mammo_seg.evaluate import collect_cases

    with open(os.path.join(folder, "run", "cv.json")) as f:
        folds = json.load(f)["folds"]
    return collect_cases([os.path.join(folder, f"fold{k}_pred") for k in range(1, folds + 1)], truth)


def complete_out_of_fold_cases(folder: str, study: str):
    """:func:`out_of_fold_cases` of a finished ``quality_mias`` working folder against its own raw scans
    (``mias_real_dev``), with every scan's probability map: a missing or unreadable prediction stops ``study``."""
    from data_prep.ground_truth import ground_truth

    cases = out_of_fold_cases(folder, ground_truth(os.path.join(folder, "mias_real_dev")))
    if cases.problems or any(scan.probability is None for scan in cases.scans):
        raise SystemExit(f"{study}: {folder}: some predictions are missing or unreadable")
    return cases


def compare_arms(names: list[str], work: str, truth, min_area_mm2: float, baseline: str,
                 groups: dict) -> tuple[dict, dict, dict]:
    """(each arm's report, each arm's figures with its FROC at the common minimum area, the paired differences
    from ``baseline``) on the scans every arm predicted (``truth``: :func:`data_prep.ground_truth.ground_truth`
    of the raw scans; ``groups``: name → MIAS classes reported apart).

    Every arm's FROC is taken at one minimum area: an arm whose operating point keeps components of any size
    would otherwise be scored with the specks that upsampling to the scan's grid makes of its probabilities."""
    from mammo_seg.detection import froc
    from mammo_seg.intervals import bootstrap, paired_differences

    cases = {name: out_of_fold_cases(os.path.join(work, name), truth) for name in names}
    arms, women = aligned_arms(cases, min_area_mm2)
    groups = lesion_groups(arms[names[0]].scans, groups)
    results = {name: arm_result(work, name) for name in names}
    common_area = {name: {**bootstrap(arm.scans, women, arm.threshold, arm.min_area_mm2, arm.dice, groups=groups),
                          "froc": froc(arm.scans, arm.min_area_mm2)} for name, arm in arms.items()}
    return results, common_area, paired_differences(arms, women, baseline, groups=groups)


def resolved_differences(differences: dict) -> list[str]:
    """"arm: figure" for every paired difference whose interval excludes 0 (the FROC's sensitivities, every group
    and rate, and the lesion Dice)."""
    found = []
    for name, diff in differences.items():
        entries = [(f"{group} sensitivity at {rate} FP/image", value) for group, entry in diff["groups"].items()
                   for rate, value in entry["sensitivity_at_fp_per_image"].items()]
        entries.append(("mean lesion Dice", diff["mean_lesion_dice"]))
        found += [f"{name}: {key}" for key, value in entries if value.get("resolved")]
    return found


#: the groups of a study's differences table beyond all lesions: (column header, group name)
DIFFERENCE_GROUPS = (("masses @1", "masses"), ("distortions, asymmetries @1", "distortions and asymmetries"))


def arm_tables(report: dict, what: tuple[str, str], extra: tuple = (),
               groups: tuple = DIFFERENCE_GROUPS) -> list[str]:
    """The Markdown tables of a study of arms (``report``: ``arms`` each with ``real``, ``operating_point`` and
    ``froc_at_common_area``; ``paired``; ``baseline``; ``paired_min_area_mm2``): each arm's figures, then its paired
    differences from the baseline, then the differences resolved. ``what``: (column header, the arm's key that
    says what it changes); ``extra``: (header, function of the arm → text) columns; ``groups``: the differences
    table's columns at 1 FP/image beyond all lesions."""
    f = figure_text
    area = report["paired_min_area_mm2"]
    lines = [f"| arm | {what[0]} | sens. @0.5 / @1 / @2 FP/image, all (≥ {area:g} mm²) | masses @1 | lesion Dice | "
             f"operating point: threshold, min. area, FP/image, normals flagged |"
             + "".join(f" {header} |" for header, _ in extra),
             "|---|---|---|---|---|---|" + "---|" * len(extra)]
    for name, arm in report["arms"].items():
        real, point, froc = arm["real"], arm["operating_point"], arm["froc_at_common_area"]
        s = froc["groups"]["all"]["sensitivity_at_fp_per_image"]
        lines.append(f"| {name} | {arm[what[1]]} | {f(s['0.5'])} / {f(s['1'])} / {f(s['2'])} | "
                     f"{f(froc['groups']['masses']['sensitivity_at_fp_per_image']['1'])} | "
                     f"{f(real['mean_lesion_dice'])} | {point['threshold']:g}, {point['min_area_mm2']:g} mm², "
                     f"{real['fp_per_image_at_operating_point']['value']:.2f}, "
                     f"{real['normal_scans_flagged']['value']:.2f} |" + "".join(f" {cell(arm)} |" for _, cell in extra))
    lines += ["", f"Differences from `{report['baseline']}` (arm − baseline, paired 95 % interval):", "",
              "| arm | sens. @0.5 FP/image | @1 | @2 | " + "".join(f"{header} | " for header, _ in groups)
              + "lesion Dice |", "|---|---|---|---|" + "---|" * len(groups) + "---|"]
    for name, diff in report["paired"]["differences"].items():
        s = diff["groups"]["all"]["sensitivity_at_fp_per_image"]
        lines.append(f"| {name} | {f(s['0.5'], True)} | {f(s['1'], True)} | {f(s['2'], True)} | "
                     + "".join(f"{f(diff['groups'][group]['sensitivity_at_fp_per_image']['1'], True)} | "
                               for _, group in groups)
                     + f"{f(diff['mean_lesion_dice'], True)} |")
    resolved = resolved_differences(report["paired"]["differences"])
    return lines + ["", "Differences these women resolve: " + ("; ".join(resolved) if resolved else "none") + "."]
