"""How many lesions could any threshold find? The highest out-of-fold probability inside each lesion of finished
:mod:`benchmarks.quality_mias` runs (or :mod:`benchmarks.levers_mias` arms) → JSON and a Markdown table.

    .venv/bin/python benchmarks/lesion_peaks_mias.py --run recipe=/tmp/mammo_quality_mias   # seconds a run

A detection is a component over the threshold whose most probable pixel lies inside the lesion
(:mod:`mammo_seg.detection`), so a lesion whose every pixel stays under the FROC's thresholds is missed at every
false-positive rate: the FROC flattens where these lesions begin. Each lesion's peak is the highest probability of
the scan's out-of-fold map inside its circle (the map on the scan's own grid, as the benchmark scores it); the table
counts the lesions under 0.05 (the lowest threshold the operating point may choose) and under 0.5, by group and by
size (the diameter of the circle of the same area as the lesion's on the scan's grid).

Data: J. Suckling et al., "The Mammographic Image Analysis Society Digital Mammogram Database", Excerpta Medica,
International Congress Series 1069, pp. 375-378, 1994. Research use only.
"""

from __future__ import annotations

import os
import sys

import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine_description  # noqa: E402
from out_of_fold import out_of_fold_cases, write_results  # noqa: E402
from quality_mias import GROUPS, finished_runs_arguments  # noqa: E402

#: peaks under these are counted: 0.05 is the lowest threshold of the operating point's sweep, 0.5 a coin toss
LEVELS = (0.05, 0.5)
#: lesion sizes counted apart, name → [smallest, largest) diameter in mm
SIZES = {"under 16 mm across": (0.0, 16.0), "16 mm across or more": (16.0, float("inf"))}


def lesion_peaks(scans: list) -> list[tuple[str, float, float]]:
    """(kind, diameter in mm, highest probability inside the lesion) of every reference lesion of ``scans``
    (:class:`mammo_seg.detection.ScanLesions`); the diameter is the circle's of the lesion's area on the scan's grid,
    and the peak is 0 for the lesions of a scan whose prediction failed."""
    return [(kind, 2.0 * float(np.sqrt(np.count_nonzero(lesion) * scan.pixel_area_mm2 / np.pi)),
             0.0 if scan.probability is None else float(scan.probability[lesion].max()))
            for scan in scans for lesion, kind in zip(scan.lesions, scan.kinds)]


def peak_table(peaks: list[tuple[str, float, float]], groups: dict, sizes: dict | None = None) -> dict:
    """Per group (``"all"``, ``groups``: name → kinds, and ``sizes``: name → [smallest, largest) diameter in mm,
    :data:`SIZES` by default): the lesions, how many peak under each of :data:`LEVELS`, and the median peak."""
    selected = {"all": [p for _, _, p in peaks],
                **{name: [p for kind, _, p in peaks if kind in kinds] for name, kinds in groups.items()},
                **{name: [p for _, size, p in peaks if low <= size < high]
                   for name, (low, high) in (SIZES if sizes is None else sizes).items()}}
    return {name: {"lesions": len(values), **{f"under_{level:g}": int(np.count_nonzero(np.array(values) < level))
                                             for level in LEVELS},
                   "median_peak": float(np.median(values)) if values else None}
            for name, values in selected.items()}


def run_peaks(folder: str) -> list[tuple[str, float, float]]:
    """:func:`lesion_peaks` of a finished ``quality_mias`` working folder's out-of-fold predictions."""
    from data_prep.ground_truth import ground_truth

    return lesion_peaks(out_of_fold_cases(folder, ground_truth(os.path.join(folder, "mias_real_dev"))).scans)


def write_markdown(report: dict, path: str) -> None:
    levels = " | ".join(f"under {level:g}" for level in LEVELS)
    lines = ["# The highest out-of-fold probability inside each lesion, real mini-MIAS", "",
             "Each lesion's peak: the highest probability inside its circle on the scan's out-of-fold map (the fold "
             "model that never saw the woman). No threshold above a lesion's peak finds it (and one below may still "
             "miss it, when the detection's most probable pixel lies outside the circle): the lesions under 0.05, the "
             "lowest threshold the operating point may choose, are missed at every operating point. The rows by size "
             "count lesions by the diameter of a circle of their area (mini-MIAS marks each with a circle).", "",
             f"| run | lesions | n | {levels} | median peak |", "|---|---|---|" + "---|" * len(LEVELS) + "---|"]
    for run, table in report["runs"].items():
        for group, row in table.items():
            counts = " | ".join(str(row[f"under_{level:g}"]) for level in LEVELS)
            median = "–" if row["median_peak"] is None else f"{row['median_peak']:.3f}"
            lines.append(f"| {run} | {group} | {row['lesions']} | {counts} | {median} |")
    lines += ["", f"Machine: {report['machine']}. Runs: " +
              "; ".join(f"`{name}` {folder}" for name, folder in report["folders"].items()) + "."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    folders, out = finished_runs_arguments(__doc__.split("\n\n")[0], "lesion_peaks_mias", argv)
    report = {"machine": machine_description(), "levels": list(LEVELS), "folders": folders,
              "runs": {name: peak_table(run_peaks(folder), GROUPS) for name, folder in folders.items()}}
    write_results(out, report, write_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
