"""Where do the false positives lie? The detections of a finished :mod:`benchmarks.quality_mias` run (or a
:mod:`benchmarks.levers_mias` arm) at its operating point, on its out-of-fold maps → JSON and a Markdown table.

    .venv/bin/python benchmarks/false_positives_mias.py --run recipe=/tmp/mammo_quality_mias   # a minute a run

Every detection (a component of the map over the run's threshold, of at least its minimum area, :mod:`mammo_seg.
detection`) is a true one when its most probable pixel lies in a lesion, else a false positive. For each, on the scan's
own grid: how bright it is against its own breast (the share of the breast's pixels darker than the detection's mean
intensity; the breast as predict finds it, :func:`mammo_seg.inference.postprocess.breast_region`), its area, and how
deep in the breast its peak lies (the distance to the breast's edge, the skin line). The lesions' circles are measured
the same way. The lesion-free scans are compared by whether the run flags them: their breast's median intensity, and
MIAS's background tissue class (fatty, glandular, dense).

Data: J. Suckling et al., "The Mammographic Image Analysis Society Digital Mammogram Database", Excerpta Medica,
International Congress Series 1069, pp. 375-378, 1994. Research use only.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine_description  # noqa: E402
from out_of_fold import complete_out_of_fold_cases, write_results  # noqa: E402
from quality_mias import finished_runs_arguments  # noqa: E402

#: MIAS's background tissue classes (Info.txt's second column)
TISSUE = {"F": "fatty", "G": "glandular", "D": "dense"}
QUARTILES = (25, 50, 75)


@dataclass(frozen=True)
class Region:
    """A detection or a lesion circle: whether it is (or finds) a lesion, the share of its breast's pixels darker
    than its mean intensity, its area in mm², and its peak's (or centre's) distance from the breast's edge in mm."""

    lesion: bool
    brighter_than: float
    area_mm2: float
    depth_mm: float


def darker_share(breast_values: np.ndarray, value: float) -> float:
    """The share of ``breast_values`` (sorted) strictly under ``value``."""
    return float(np.searchsorted(breast_values, value, side="left") / max(breast_values.size, 1))


def scan_regions(pixels: np.ndarray, breast: np.ndarray, probability: np.ndarray, threshold: float, detections: list,
                 lesions: list, pixel_mm: float, ignore: np.ndarray | None = None) -> tuple[list[Region], list[Region]]:
    """(detections, lesion circles) of one scan as :class:`Region`: ``pixels`` and the ``breast``'s bool mask on the
    probability's grid, ``detections`` those of ``probability ≥ threshold`` (:func:`mammo_seg.detection.
    find_detections`), ``lesions`` bool masks; a detection is true or false as :func:`mammo_seg.detection.match`
    scores it (one peaking in the ``ignore`` region is neither, and left out); a lesion circle's depth is its centre
    pixel's."""
    from scipy import ndimage

    from mammo_seg.detection import lesion_components, match

    values = np.sort(pixels[breast])
    depth = ndimage.distance_transform_edt(breast) * pixel_mm
    components, _ = lesion_components(probability >= threshold)
    regions = []
    for d in detections:
        found, false_positives = match([d], lesions, ignore)
        if not any(found) and not false_positives:
            continue
        region = components == components[d.peak]
        regions.append(Region(any(found), darker_share(values, pixels[region].mean()), d.area_px * pixel_mm ** 2,
                                 float(depth[d.peak])))
    circles = []
    for lesion in lesions:
        centre = tuple(int(round(c)) for c in np.argwhere(lesion).mean(axis=0))
        circles.append(Region(True, darker_share(values, pixels[lesion].mean()),
                              float(np.count_nonzero(lesion)) * pixel_mm ** 2, float(depth[centre])))
    return regions, circles


def summary(values) -> dict:
    """n and the quartiles of ``values`` (None when empty)."""
    values = list(values)
    return {"n": len(values), "quartiles": [float(q) for q in np.percentile(values, QUARTILES)] if values else None}


def region_table(detections: list[Region], circles: list[Region]) -> dict:
    """Per kind of region (false positives, true detections, all lesion circles): the quartiles of each measure."""
    kinds = {"false positives": [r for r in detections if not r.lesion],
             "true detections": [r for r in detections if r.lesion], "lesion circles": circles}
    return {kind: {measure: summary(getattr(r, measure) for r in regions)
                   for measure in ("brighter_than", "area_mm2", "depth_mm")}
            for kind, regions in kinds.items()}


def normal_table(normals: list[tuple[bool, float, str]]) -> dict:
    """Lesion-free scans as (flagged, median breast intensity in [0, 1], MIAS background class): per flagged and
    clean, their number and median breast intensity quartiles; per background class, scans and flagged."""
    return {"flagged": summary(m for flagged, m, _ in normals if flagged),
            "clean": summary(m for flagged, m, _ in normals if not flagged),
            "by_tissue": {name: {"scans": sum(t == code for _, _, t in normals),
                                 "flagged": sum(flagged and t == code for flagged, _, t in normals)}
                          for code, name in TISSUE.items()}}


def run_report(folder: str) -> dict:
    """The tables of a finished ``quality_mias`` working folder at its recorded operating point."""
    from data_prep.mias import find_info, parse_info
    from mammo_seg.detection import flagging
    from mammo_seg.inference.postprocess import breast_region
    from mammo_seg.io import read_scan

    raw = os.path.join(folder, "mias_real_dev")
    with open(os.path.join(folder, "run", "operating_point.json")) as f:
        point = json.load(f)
    tissue = {row.ref: row.background for row in parse_info(find_info(raw))[0]}
    cases = complete_out_of_fold_cases(folder, "false_positives_mias")
    detections, circles, normals = [], [], []
    for scan, reference in zip(cases.scans, cases.references):
        pixels = read_scan(os.path.join(raw, f"{reference}.pgm")).pixels
        if pixels.shape != scan.probability.shape:
            raise SystemExit(f"false_positives_mias: {reference}: the map is {scan.probability.shape}, the scan "
                             f"{pixels.shape}")
        pixel_mm = float(np.sqrt(scan.pixel_area_mm2))
        breast = breast_region(pixels)
        found = scan.detections(point["threshold"], point["min_area_mm2"])
        regions, lesion_circles = scan_regions(pixels, breast, scan.probability, point["threshold"], found,
                                               scan.lesions, pixel_mm, scan.ignore)
        detections += regions
        circles += lesion_circles
        if not scan.lesions:
            normals.append((bool(flagging(found, scan.ignore)), float(np.median(pixels[breast])), tissue[reference]))
    return {"threshold": point["threshold"], "min_area_mm2": point["min_area_mm2"], "scans": len(cases.scans),
            "regions": region_table(detections, circles), "lesion_free_scans": normal_table(normals)}


def _quartiles(entry: dict, scale: float = 1.0, digits: int = 2) -> str:
    if entry["quartiles"] is None:
        return "–"
    low, median, high = (q * scale for q in entry["quartiles"])
    return f"{median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def write_markdown(report: dict, path: str) -> None:
    lines = ["# Where the false positives lie, real mini-MIAS, out of fold", "",
             "Each detection at the run's operating point on the out-of-fold maps (the fold model that never saw the "
             "woman): a true detection when its most probable pixel lies in a lesion, else a false positive. Brighter "
             "than: the share of its own breast's pixels darker than its mean intensity. Depth: its peak's distance "
             "from the breast's edge. Medians (quartiles).", ""]
    for run, table in report["runs"].items():
        lines += [f"## {run}: threshold {table['threshold']:g}, at least {table['min_area_mm2']:g} mm², "
                  f"{table['scans']} scans", "",
                  "| regions | n | brighter than | area, mm² | depth, mm |", "|---|---|---|---|---|"]
        for kind, row in table["regions"].items():
            lines.append(f"| {kind} | {row['brighter_than']['n']} | {_quartiles(row['brighter_than'])} | "
                         f"{_quartiles(row['area_mm2'], digits=0)} | {_quartiles(row['depth_mm'], digits=0)} |")
        normals = table["lesion_free_scans"]
        lines += ["", "| lesion-free scans | n | median breast intensity (the scan's range as 0-255) |",
                  "|---|---|---|"]
        for kind in ("flagged", "clean"):
            lines.append(f"| {kind} | {normals[kind]['n']} | {_quartiles(normals[kind], 255, 0)} |")
        lines += ["", "| MIAS background | lesion-free scans | flagged |", "|---|---|---|"]
        for name, row in normals["by_tissue"].items():
            lines.append(f"| {name} | {row['scans']} | {row['flagged']} |")
        lines.append("")
    lines += [f"Machine: {report['machine']}. Runs: " +
              "; ".join(f"`{name}` {folder}" for name, folder in report["folders"].items()) + "."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    folders, out = finished_runs_arguments(__doc__.split("\n\n")[0], "false_positives_mias", argv)
    report = {"machine": machine_description(), "folders": folders,
              "runs": {name: run_report(folder) for name, folder in folders.items()}}
    write_results(out, report, write_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
