"""Can a calcification-cluster finder beside the network find what the network misses on real mammograms, out of
fold? → JSON and a Markdown table.

    .venv/bin/python benchmarks/calcifications_mias.py --work /tmp/mammo_quality_mias   # after quality_mias.py; minutes

The recipe's network finds 1 of the dev women's 20 calcification clusters: at its 0.4 mm training pixel their
sub-millimetre specks are one or two pixels, and finer grids did not help (``levers_mias_grid_fine.md``). On the
scans' own 0.2 mm grid many of the specks are still visible as bright dots a few pixels across. This study scores
the classical way of finding them (microcalcification detection by a morphological top-hat, then clustering, as
in the CAD literature: e.g. Nishikawa et al., Med. Phys. 1995; Kallergi, Med. Phys. 2004), with nothing learnt:

* **speck contrast** (:func:`speck_contrast`): the scan minus its grey opening by a disk of ``TOPHAT_RADIUS_MM``
  (a white top-hat: bright detail smaller than the disk), divided by the robust noise level of the top-hat inside
  the breast (1.4826 × its median absolute deviation), so that the contrast is in noise units on every scan;
* **specks**: 8-connected components over the contrast threshold of at most ``MAX_SPECK_MM2``;
* **clusters** (:func:`find_clusters`): specks linked when their centres lie within ``LINK_MM`` (single
  linkage); a cluster needs ``MIN_SPECKS`` specks (the radiological definition of a cluster: three or more in about
  a square centimetre). A cluster is a detection placed at its specks' mean centre and scored by its third-highest
  speck contrast (the contrast at which it would still hold three specks).

**Out of fold** (the run's own folds by woman, ``run/cv.json``): for each fold the speck threshold (one of
``SPECK_THRESHOLDS``) and the cluster-score threshold are chosen on the other folds' women, in one of two ways,
keeping no cluster one of the choices; the fold's women are then scored with them. Pooled, that is the finder's
out-of-fold result, with no choice made on the women it scores.

Three arms on the same women, scored as :mod:`benchmarks.postprocess_mias` scores (paired bootstrap over women):

* ``network``: the run's out-of-fold probability maps at the operating point the recipe's rule chooses on them;
* ``network_and_clusters``: the same maps with the out-of-fold cluster detections added to every threshold's
  detections (they are neither swept nor filtered by area), at the operating point the same rule chooses on the
  combined detections. The lesion Dice is the network's (a cluster has no outline). The finder's thresholds are
  chosen for the most lesions of any kind with at most ``FP_BUDGET`` false positives per image (:func:`choose_finder`);
* ``network_and_clusters_by_rule``: the same, the finder's thresholds chosen for the best point the recipe's whole
  rule reaches beside the network on the other folds' women (:func:`choose_finder_by_rule`): the clusters' false
  positives on lesion-free scans then count against the rule's limit on them, which the budget ignores.

The constants (top-hat radius, speck size, linking distance, three specks, the 0.25 budget) were fixed after a
first look at these women's 20 cluster crops and a sweep of the speck threshold and the linking distance over all
of them; the out-of-fold choice covers the threshold only, so a resolved gain would still want women held back.

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
from out_of_fold import (complete_out_of_fold_cases, figure_text, lesion_dice, lesion_groups, point_arm,  # noqa: E402
                         same_models_figures, same_models_table, training_pixel_mm, write_results)
from quality_mias import GROUPS, finished_work_arguments  # noqa: E402

from mammo_seg.detection import (THRESHOLDS, Detection, ScanLesions, flagging, match, min_area_px,  # noqa: E402
                                 score_scans)

TOPHAT_RADIUS_MM = 0.6
BREAST_MARGIN_MM = 3.0  # the skin line is bright and thin: specks within this of the breast's edge are not counted
MAX_SPECK_MM2 = 1.2
LINK_MM = 3.0
MIN_SPECKS = 3
SPECK_THRESHOLDS = (6.0, 8.0, 10.0, 12.0)
FP_BUDGET = 0.25


def speck_contrast(pixels: np.ndarray, pixel_mm: float) -> np.ndarray:
    """The white top-hat of ``pixels`` (a scan, bright = dense) by a disk of ``TOPHAT_RADIUS_MM``, in units of its
    robust noise level inside the breast (:func:`mammo_seg.inference.postprocess.breast_region`, less a
    ``BREAST_MARGIN_MM`` band at its edge); 0 outside the breast."""
    from scipy import ndimage
    from skimage.morphology import disk

    from mammo_seg.inference.postprocess import breast_region

    image = pixels.astype(np.float32)
    span = float(image.max() - image.min()) or 1.0
    breast = breast_region((image - image.min()) / span)
    breast = ndimage.binary_erosion(breast, iterations=max(1, round(BREAST_MARGIN_MM / pixel_mm)))
    radius = max(1, round(TOPHAT_RADIUS_MM / pixel_mm))
    tophat = image - ndimage.grey_opening(image, footprint=disk(radius))
    inside = tophat[breast]
    if inside.size == 0:
        return np.zeros(image.shape, np.float32)
    noise = 1.4826 * float(np.median(np.abs(inside - np.median(inside))))
    return np.where(breast, tophat / max(noise, 1e-3 * span), 0.0).astype(np.float32)


def find_clusters(contrast: np.ndarray, pixel_mm: float, speck_threshold: float) -> list[Detection]:
    """The calcification clusters of a :func:`speck_contrast` map: specks (components of ``contrast >
    speck_threshold`` of at most ``MAX_SPECK_MM2``) linked within ``LINK_MM``, of at least ``MIN_SPECKS``; each a
    :class:`~mammo_seg.detection.Detection` at its specks' mean centre, scored by its third-highest speck peak
    (generally, the ``MIN_SPECKS``-th), its area its specks' pixels."""
    from scipy import ndimage
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    labels, n = ndimage.label(contrast > speck_threshold, structure=np.ones((3, 3)))
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    area = ndimage.sum_labels(np.ones_like(contrast), labels, index)
    small = area <= int(MAX_SPECK_MM2 / pixel_mm ** 2 + 1e-6)  # 30 px at 0.2 mm, not 29 by rounding
    if small.sum() < MIN_SPECKS:
        return []
    centres = np.array(ndimage.center_of_mass(contrast > speck_threshold, labels, index[small]))
    peaks = ndimage.maximum(contrast, labels, index[small])
    pixels = area[small]
    pairs = cKDTree(centres).query_pairs(LINK_MM / pixel_mm, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(centres),) * 2)
    _, member = connected_components(graph, directed=False)
    clusters = []
    for c in np.unique(member):
        inside = member == c
        if inside.sum() < MIN_SPECKS:
            continue
        y, x = np.rint(centres[inside].mean(axis=0)).astype(int)
        score = float(np.sort(peaks[inside])[-MIN_SPECKS])
        clusters.append(Detection((int(y), int(x)), score, int(pixels[inside].sum())))
    return clusters


@dataclass
class WithClusters(ScanLesions):
    """A scan's network detections at every (threshold, minimum area) plus fixed cluster detections."""

    clusters: tuple = ()

    def detections(self, threshold: float, min_area_mm2: float) -> list[Detection]:
        return super().detections(threshold, min_area_mm2) + list(self.clusters)


def _cluster_scans(scans: list, clusters: list) -> list[ScanLesions]:
    """Lesion-scoring stand-ins whose detections are the clusters only (one constant map: no network)."""
    return [WithClusters(np.zeros((1, 1), np.float32), s.lesions, s.kinds, s.pixel_area_mm2, s.ignore,
                         clusters=tuple(c)) for s, c in zip(scans, clusters)]


def choose_finder(scans: list, candidates: dict) -> dict:
    """The speck threshold and cluster-score threshold that find the most lesions with at most ``FP_BUDGET``
    false positives per image on ``scans`` (``candidates``: speck threshold → each scan's clusters); ties: fewer
    false positives, then the higher thresholds. Each cluster is matched alone (:func:`mammo_seg.detection.match`)
    and the score threshold swept down through the clusters' scores; keeping no cluster (an infinite score
    threshold) is one of the choices."""
    none = {"speck_threshold": max(candidates), "score_threshold": float("inf"), "found": 0, "false_positives": 0,
            "fp_per_image": 0.0}
    best = ((0, 0, none["speck_threshold"], none["score_threshold"]), none)
    for speck, found in candidates.items():
        scored = []
        for i, (scan, clusters) in enumerate(zip(scans, found)):
            for d in clusters:
                hits, fp = match([d], scan.lesions, scan.ignore)
                scored.append((d.score, fp, {(i, j) for j, hit in enumerate(hits) if hit}))
        scored.sort(key=lambda c: -c[0])
        lesions, false_positives = set(), 0
        for k, (score, fp, hit) in enumerate(scored):
            lesions |= hit
            false_positives += fp
            if k + 1 < len(scored) and scored[k + 1][0] == score:
                continue  # the threshold keeps every cluster of this score
            if false_positives > FP_BUDGET * len(scans):
                break
            key = (len(lesions), -false_positives, speck, score)
            if key > best[0]:
                best = (key, {"speck_threshold": speck, "score_threshold": score, "found": len(lesions),
                              "false_positives": false_positives, "fp_per_image": false_positives / len(scans)})
    return best[1]


def out_of_fold_clusters(scans: list, folds: list, candidates: dict, choose=None) -> tuple[list, dict]:
    """(each scan's clusters under the finder chosen without its fold, {fold: the choice}). ``choose``: the
    training scans' numbers → the choice (its ``speck_threshold`` and ``score_threshold``); by default
    :func:`choose_finder` on those scans."""
    def within_budget(training: list) -> dict:
        return choose_finder([scans[i] for i in training],
                             {s: [found[i] for i in training] for s, found in candidates.items()})

    chosen, clusters = {}, [[] for _ in scans]
    for fold in sorted(set(folds)):
        choice = (choose or within_budget)([i for i, f in enumerate(folds) if f != fold])
        chosen[fold] = choice
        for i, f in enumerate(folds):
            if f == fold:
                clusters[i] = [d for d in candidates[choice["speck_threshold"]][i]
                               if d.score >= choice["score_threshold"]]
    return clusters, chosen


def network_candidates(scans: list, min_areas_mm2):
    """The recipe's rule's :class:`~mammo_seg.inference.operating_point.CandidateTable` of ``scans``' network
    detections at every threshold of :data:`mammo_seg.detection.THRESHOLDS` and minimum area of ``min_areas_mm2``
    (the scans on one grid), their lesions ``ScanLesions.lesions``."""
    from mammo_seg.inference.operating_point import candidate_table

    areas = {s.pixel_area_mm2 for s in scans}
    if len(areas) != 1:
        raise ValueError(f"the scans' pixels differ in area ({sorted(areas)} mm²): the rule weighs one grid")
    pixel = areas.pop()
    references = [(np.any(s.lesions, axis=0) if s.lesions else np.zeros(s.probability.shape, bool), s.lesions,
                   s.ignore) for s in scans]
    return candidate_table([s.probability for s in scans], references, THRESHOLDS,
                           [min_area_px(a, pixel) for a in min_areas_mm2], min_areas_mm2)


@dataclass
class ClusterMatches:
    """Clusters matched to the lesions of their scans (lesions numbered as in :func:`network_candidates`)."""

    scan: np.ndarray  # [cluster]: its scan
    score: np.ndarray  # [cluster]
    false_positive: np.ndarray  # [cluster] bool: its peak lies in no lesion and outside the ignore region
    flags: np.ndarray  # [cluster] bool: it flags its scan (outside the ignore region)
    hits: list  # [cluster]: the numbers of the lesions it finds


def cluster_matches(scans: list, clusters: list) -> ClusterMatches:
    """:class:`ClusterMatches` of ``clusters`` (each scan's list of cluster detections), each matched alone."""
    first = np.cumsum([0] + [len(s.lesions) for s in scans])
    rows = []
    for i, (scan, found) in enumerate(zip(scans, clusters)):
        for d in found:
            hits, fp = match([d], scan.lesions, scan.ignore)
            rows.append((i, d.score, bool(fp), bool(flagging([d], scan.ignore)),
                         [int(first[i]) + j for j, hit in enumerate(hits) if hit]))
    return ClusterMatches(np.array([r[0] for r in rows], int), np.array([r[1] for r in rows], float),
                          np.array([r[2] for r in rows], bool), np.array([r[3] for r in rows], bool),
                          [r[4] for r in rows])


def rule_point(network, scans: np.ndarray, clusters: ClusterMatches, kept: np.ndarray, section) -> dict:
    """The recipe's rule (:func:`mammo_seg.inference.operating_point.select` with the run's ``operating_point``
    ``section``) on the scans numbered ``scans``, their detections the network's at each candidate (``network``:
    :func:`network_candidates`) plus the ``kept`` clusters (a bool per cluster; clusters of other scans are left
    out). A cluster is matched alone and counted at every candidate (it has no probability to sweep); the lesion
    Dice is the network's outlines'."""
    from mammo_seg.inference.operating_point import select

    inside = np.zeros(network.flagged.shape[1], bool)
    inside[scans] = True
    kept = kept & inside[clusters.scan]
    cluster_found = np.zeros(len(network.lesion_scan), bool)
    for c in np.flatnonzero(kept):
        cluster_found[clusters.hits[c]] = True
    cluster_flags = np.zeros(len(inside), bool)
    cluster_flags[clusters.scan[kept & clusters.flags]] = True
    candidates = network.scored(False, inside, cluster_found, int(clusters.false_positive[kept].sum()),
                                cluster_flags)
    best, _ = select(candidates, section.max_normal_rate, section.objective, section.max_fp_per_image)
    return best


def combined_point(network, scans: list, clusters: list, section) -> dict:
    """:func:`rule_point` on every scan of ``scans`` with all of ``clusters`` (each scan's list)."""
    matched = cluster_matches(scans, clusters)
    return rule_point(network, np.arange(len(scans)), matched, np.ones(len(matched.scan), bool), section)


def rule_key(point: dict, section) -> tuple:
    """How the recipe's rule ranks a chosen point: within its limits first
    (:func:`mammo_seg.inference.operating_point.within_limits`), then its objective, then lesion Dice."""
    from mammo_seg.inference.operating_point import within_limits

    within = within_limits(point, section.max_normal_rate, section.objective, section.max_fp_per_image)
    objective = point["sensitivity"] if section.objective == "sensitivity" else point["mean_dice"]
    return within, objective, point["mean_dice"]


def choose_finder_by_rule(network, scans: np.ndarray, candidates: dict, section) -> dict:
    """The speck and cluster-score thresholds under which the recipe's whole rule, choosing the network's point
    beside the clusters on the scans numbered ``scans`` (:func:`rule_point`), reaches the best point it can
    (:func:`rule_key`: its limits on normals flagged and false positives included); ``candidates``: speck
    threshold → :class:`ClusterMatches` of every scan. Keeping no cluster is the first choice; a choice replaces
    it only when strictly better, so ties keep fewer clusters."""
    first = next(iter(candidates.values()))
    point = rule_point(network, scans, first, np.zeros(len(first.scan), bool), section)
    best = (rule_key(point, section), {"speck_threshold": max(candidates), "score_threshold": float("inf"),
                                       "point": point})
    inside = np.zeros(network.flagged.shape[1], bool)
    inside[scans] = True
    for speck, clusters in sorted(candidates.items()):
        for score in sorted(set(clusters.score[inside[clusters.scan]]), reverse=True):
            point = rule_point(network, scans, clusters, clusters.score >= score, section)
            if rule_key(point, section) > best[0]:
                best = (rule_key(point, section), {"speck_threshold": speck, "score_threshold": float(score),
                                                   "point": point})
    return best[1]


def one_area_frocs(arms: dict, women: list, area: float) -> dict:
    """The arms' FROC sensitivities and their paired differences from the first arm at one minimum area for all
    (clusters are not filtered by area): a difference of FROCs that the arms' own minimum areas do not move."""
    from mammo_seg.intervals import Arm

    at_area = {name: Arm(arm.scans, arm.dice, arm.threshold, area) for name, arm in arms.items()}
    return {"min_area_mm2": area, **same_models_figures(at_area, women, next(iter(arms)), lesion_groups(
        next(iter(arms.values())).scans, GROUPS))}


def main(argv=None) -> int:
    from mammo_seg.intervals import Arm

    args = finished_work_arguments(__doc__.split("\n\n")[0], "calcifications_mias", argv)
    run, dev = os.path.join(args.work, "run"), os.path.join(args.work, "mias_real_dev")
    from mammo_seg.config import load_config
    from mammo_seg.io.image import read_image_array

    cases = complete_out_of_fold_cases(args.work, "calcifications")
    with open(os.path.join(run, "cv.json")) as f:
        fold_of = json.load(f)["fold_of"]
    folds = [fold_of[w] for w in cases.women]
    pixel_mm = float(np.sqrt(cases.scans[0].pixel_area_mm2))
    candidates = {t: [] for t in SPECK_THRESHOLDS}
    for ref, scan in zip(cases.references, cases.scans):
        pixels = read_image_array(os.path.join(dev, f"{ref}.pgm"))
        if pixels.shape != scan.probability.shape:
            raise SystemExit(f"{ref}: scan {pixels.shape} and probability map {scan.probability.shape} differ")
        contrast = speck_contrast(pixels, pixel_mm)
        for t in SPECK_THRESHOLDS:
            candidates[t].append(find_clusters(contrast, pixel_mm, t))
    section = load_config(os.path.join(run, "config.yaml")).operating_point
    network_table = network_candidates(cases.scans, [float(a) for a in section.min_areas_mm2])
    matched = {t: cluster_matches(cases.scans, found) for t, found in candidates.items()}
    choices = {"network_and_clusters": out_of_fold_clusters(cases.scans, folds, candidates),
               "network_and_clusters_by_rule": out_of_fold_clusters(
                   cases.scans, folds, candidates,
                   lambda training: choose_finder_by_rule(network_table, np.array(training), matched, section))}

    network, network_point = point_arm(cases.scans, section)
    alone_point = combined_point(network_table, cases.scans, [[] for _ in cases.scans], section)
    if (alone_point["threshold"], alone_point["min_area_mm2"]) != (network_point["threshold"],
                                                                   network_point["min_area_mm2"]):
        raise SystemExit("calcifications: the rule on the network's candidates chose another point than the recipe's")
    arms, points, alone, chosen = {"network": network}, {"network": network_point}, {}, {}
    for name, (clusters, by_fold) in choices.items():
        point = combined_point(network_table, cases.scans, clusters, section)
        combined_scans = [WithClusters(s.probability, s.lesions, s.kinds, s.pixel_area_mm2, s.ignore,
                                       clusters=tuple(c)) for s, c in zip(cases.scans, clusters)]
        arms[name] = Arm(combined_scans, lesion_dice(cases.scans, point["threshold"], point["min_area_mm2"]),
                         point["threshold"], point["min_area_mm2"])
        points[name] = point
        alone[name] = score_scans(_cluster_scans(cases.scans, clusters), threshold=2.0, min_area_mm2=0.0)
        chosen[name] = {str(k): v for k, v in by_fold.items()}
    frocs = one_area_frocs(arms, cases.women, network_point["min_area_mm2"])
    report = {"run": args.work, "machine": machine_description(), "scans": len(cases.scans),
              "women": len(set(cases.women)), "training_pixel_mm": training_pixel_mm(args.work),
              "scan_pixel_mm": pixel_mm,
              "finder": {"tophat_radius_mm": TOPHAT_RADIUS_MM, "breast_margin_mm": BREAST_MARGIN_MM,
                         "max_speck_mm2": MAX_SPECK_MM2, "link_mm": LINK_MM, "min_specks": MIN_SPECKS,
                         "speck_thresholds": list(SPECK_THRESHOLDS), "fp_budget": FP_BUDGET},
              "chosen_without_fold": chosen,
              "clusters_alone_out_of_fold": alone,
              "operating_points": points,
              **same_models_figures(arms, cases.women, "network", lesion_groups(cases.scans, GROUPS)),
              "frocs_at_one_area": frocs}
    write_results(args.out, report, write_markdown)
    return 0


ARM_TEXT = {"network_and_clusters": "the most lesions found at ≤ {budget:g} false positives per image there",
            "network_and_clusters_by_rule": "the best point the recipe's whole rule then reaches there beside the "
                                            "network, its limit on lesion-free scans flagged included"}


def write_markdown(report: dict, path: str) -> None:
    f = report["finder"]
    lines = ["# A calcification-cluster finder beside the network, real mini-MIAS scans, out of fold", "",
             f"{report['scans']} scans of {report['women']} women. The finder: white top-hat (disk of "
             f"{f['tophat_radius_mm']:g} mm) in units of the scan's noise, specks of at most {f['max_speck_mm2']:g} "
             f"mm², linked within {f['link_mm']:g} mm, clusters of at least {f['min_specks']} specks scored by the "
             "third-highest speck contrast. Its two thresholds are chosen for each fold on the other folds' women, "
             "in two ways (keeping no cluster is one of the choices):", ""]
    for name, chosen in report["chosen_without_fold"].items():
        alone = report["clusters_alone_out_of_fold"][name]
        by_kind = ", ".join(f"{k} {round(v * alone['lesions_by_kind'][k])}/{alone['lesions_by_kind'][k]}"
                            for k, v in alone["sensitivity_by_kind"].items() if v is not None)
        choices = "; ".join(f"fold {k}: " + ("no cluster" if v["score_threshold"] == float("inf") else
                                             f"speck contrast > {v['speck_threshold']:g}, cluster score ≥ "
                                             f"{v['score_threshold']:.1f}") for k, v in chosen.items())
        lines.append(f"* `{name}`: {ARM_TEXT[name].format(budget=f['fp_budget'])}: {choices}. Its clusters alone, "
                     f"out of fold: {alone['found']} of {alone['lesions']} lesions ({by_kind}) at "
                     f"{alone['fp_per_image']:.2f} false positives per image, "
                     f"{alone['normal_scans_with_detection']} of {alone['normal_scans']} lesion-free scans flagged.")
    lines += ["", "The network's out-of-fold maps alone and with each arm's clusters added, each at the operating "
              "point the recipe's rule chose on its own pooled detections (native grid, "
              f"{report['scan_pixel_mm']:g} mm; the lesion Dice is the network's). 95 % bootstrap intervals over "
              "women; differences paired, **bold** where the interval excludes 0.", ""]
    lines += same_models_table(report)
    frocs = report["frocs_at_one_area"]
    lines += ["", f"The FROCs at one minimum area for all arms ({frocs['min_area_mm2']:g} mm², the network's "
              "point's; the clusters are not filtered by area), so that only the clusters differ:", "",
              "| arm | sens. @0.5 FP/image | @1 | @2 | masses @1 | calcifications @1 |", "|---|---|---|---|---|---|"]
    rows = [(name, figures, False) for name, figures in frocs["arms"].items()]
    rows += [(f"{name} − {frocs['paired']['baseline']}", diff, True)
             for name, diff in frocs["paired"]["differences"].items()]
    for name, figures, signed in rows:
        cells = [figures["groups"][g]["sensitivity_at_fp_per_image"][r]
                 for g, r in (("all", "0.5"), ("all", "1"), ("all", "2"), ("masses", "1"), ("calcifications", "1"))]
        lines.append("| " + " | ".join([name, *(figure_text(c, signed) for c in cells)]) + " |")
    lines += ["", f"Machine: {report['machine']}. Run: `{report['run']}`."]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
