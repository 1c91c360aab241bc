"""Does a post-processing rule help find lesions on real mammograms, out of fold? Two rules against the pipeline's
own, on a finished :mod:`benchmarks.quality_mias` run's out-of-fold probability maps → JSON and a Markdown table.

    .venv/bin/python benchmarks/postprocess_mias.py --work /tmp/mammo_quality_mias   # after quality_mias.py; minutes

Every arm scores the same maps (each scan predicted by the fold model that never saw its woman); a rule is a
transformation of a scan's probability map, after which detections are what they always are
(:mod:`mammo_seg.detection`: components over the threshold of at least the minimum area, scored and placed by their
most probable pixel):

* ``pipeline``: the maps as they are;
* ``extent_0.5``: a detection reaches down to probability 0.5 (hysteresis, as in nnU-Net's argmax outline): every
  component of ``p ≥ 0.5`` takes its peak's value (its other pixels a float32 step below it, so that the peak stays
  where it was), so at a threshold above 0.5 a detection is the whole 0.5-component of a peak over the threshold,
  not only its pixels over the threshold;
* ``contralateral_0.5``: each pixel minus half the highest probability of the woman's other breast (same view,
  mirrored) within 25 mm of the mirrored position: a reader's asymmetry rule, after the network, where a second
  input channel did not help (``levers_mias_contralateral.md``); dense tissue lights up both breasts, a lesion one.

Each arm's operating point is chosen by the recipe's rule on its own pooled maps (the native grid of the scans, for
all three, so the ``pipeline`` arm's may differ from the one the run recorded on the training grid). Scored against
``Info.txt`` as the benchmark scores, and compared with a paired bootstrap over women
(:func:`mammo_seg.intervals.paired_differences`). The rules' constants (0.5, half, 25 mm) were fixed after a first
look at these women's maps, before this comparison: a resolved gain would still want women held back from it.

Data: J. Suckling et al., "The Mammographic Image Analysis Society Digital Mammogram Database", Excerpta Medica,
International Congress Series 1069, pp. 375-378, 1994. Research use only.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine_description  # noqa: E402
from out_of_fold import (complete_out_of_fold_cases, lesion_groups, point_arm, same_models_figures,  # noqa: E402
                         same_models_table, training_pixel_mm, write_results)
from quality_mias import GROUPS, finished_work_arguments  # noqa: E402

EXTENT_LEVEL = 0.5
CONTRALATERAL_WEIGHT = 0.5
CONTRALATERAL_RADIUS_MM = 25.0


def extent(probability: np.ndarray, level: float = EXTENT_LEVEL) -> np.ndarray:
    """The map whose detections above ``level`` are whole ``level``-components: each component of ``p ≥ level``
    set to its peak's value, its peak pixel (the first in raster order) exactly, the others one float32 step below."""
    from mammo_seg.detection import find_detections, lesion_components

    out = probability.astype(np.float32)
    components, n = lesion_components(out >= level)
    if n == 0:
        return out
    peaks = np.zeros(n + 1, np.float32)
    np.maximum.at(peaks, components.ravel(), out.ravel())
    inside = components > 0
    out[inside] = np.nextafter(peaks[components[inside]], np.float32(0))
    for detection in find_detections(probability.astype(np.float32), level, 1):
        out[detection.peak] = detection.score
    return out


def contralateral(probability: np.ndarray, other: np.ndarray | None, pixel_mm: float,
                  weight: float = CONTRALATERAL_WEIGHT, radius_mm: float = CONTRALATERAL_RADIUS_MM) -> np.ndarray:
    """``p − weight · max(other breast's mirrored map within radius_mm)``, clipped at 0 (unchanged without the other
    breast, or when its map has another shape)."""
    from scipy.ndimage import maximum_filter

    out = probability.astype(np.float32)
    if other is None or other.shape != out.shape:
        return out
    size = 2 * int(round(radius_mm / pixel_mm)) + 1
    nearby = maximum_filter(other.astype(np.float32)[:, ::-1], size=size, mode="constant")
    return np.clip(out - weight * nearby, 0.0, 1.0)


def rule_arms(cases, pixel_mm: float) -> dict[str, list]:
    """{arm: each scan's map under its rule} of the pooled out-of-fold cases."""
    from mammo_seg.data.contralateral import other_mias_ref

    index = {ref: i for i, ref in enumerate(cases.references)}
    maps = [scan.probability for scan in cases.scans]

    def other(ref):
        j = index.get(other_mias_ref(ref) or "")
        return None if j is None else maps[j]

    return {"pipeline": maps,
            "extent_0.5": [None if p is None else extent(p) for p in maps],
            "contralateral_0.5": [None if p is None else contralateral(p, other(ref), pixel_mm)
                                  for p, ref in zip(maps, cases.references)]}


def main(argv=None) -> int:
    args = finished_work_arguments(__doc__.split("\n\n")[0], "postprocess_mias", argv)
    run = os.path.join(args.work, "run")
    from mammo_seg.config import load_config

    cases = complete_out_of_fold_cases(args.work, "postprocess")
    section = load_config(os.path.join(run, "config.yaml")).operating_point
    pixel_mm = float(np.sqrt(cases.scans[0].pixel_area_mm2))
    scored = {name: point_arm([replace(scan, probability=p, _found={}) for scan, p in zip(cases.scans, maps)], section)
              for name, maps in rule_arms(cases, pixel_mm).items()}
    arms = {name: arm for name, (arm, _) in scored.items()}
    report = {"run": args.work, "machine": machine_description(), "scans": len(cases.scans),
              "women": len(set(cases.women)), "training_pixel_mm": training_pixel_mm(args.work),
              "scan_pixel_mm": pixel_mm,
              "rules": {"extent_level": EXTENT_LEVEL, "contralateral_weight": CONTRALATERAL_WEIGHT,
                        "contralateral_radius_mm": CONTRALATERAL_RADIUS_MM},
              "operating_points": {name: point for name, (_, point) in scored.items()},
              **same_models_figures(arms, cases.women, "pipeline", lesion_groups(cases.scans, GROUPS))}
    write_results(args.out, report, write_markdown)
    return 0


def write_markdown(report: dict, path: str) -> None:
    rules = report["rules"]
    lines = ["# Post-processing rules on real mini-MIAS scans, out of fold", "",
             f"The same out-of-fold probability maps of one run ({report['training_pixel_mm']:g} mm per training "
             f"pixel), {report['scans']} scans of {report['women']} women, under three rules: `pipeline` (the maps as "
             f"they are), `extent_0.5` (a detection reaches down to probability {rules['extent_level']:g}), "
             f"`contralateral_0.5` (minus {rules['contralateral_weight']:g} × the other breast's highest mirrored "
             f"probability within {rules['contralateral_radius_mm']:g} mm). Each arm at the operating point the "
             f"recipe's rule chose on its own pooled maps (native grid, {report['scan_pixel_mm']:g} mm). 95 % "
             f"bootstrap intervals over women; differences paired, **bold** where the interval excludes 0.", ""]
    lines += same_models_table(report)
    lines += ["", f"Machine: {report['machine']}. Run: `{report['run']}`."]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
