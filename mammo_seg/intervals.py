"""95 % intervals for lesion-level figures: a percentile bootstrap over women.

With a few dozen lesions one lesion moves a sensitivity by several points, so every figure on real data
comes with its interval. The unit of resampling is the woman (patient id), not the scan or the lesion: a
woman's scans (both breasts, every view) and their lesions are drawn together, which keeps the correlation
between them (Efron & Tibshirani 1993, ch. 13; the cluster bootstrap of Field & Welsh 2007). Each of
``resamples`` resamples draws as many women as there are, with replacement, by a fixed seed; the interval is
the 2.5th and 97.5th percentile of the figure over the resamples (resamples in which a figure does not exist,
e.g. no lesion drawn, are left out of its interval).

The figures are those of :mod:`mammo_seg.detection` (same hit rule, same step FROC), computed here from each
scan's counts at every threshold, so that a resample only re-weights sums.

Two models on the same scans (:func:`paired_differences`, e.g. two losses trained on the same folds) are compared
by the difference of their figures over the same resampled women (a paired bootstrap): the interval of a
difference is then much narrower than the two figures' own intervals suggest, because the women both models find
easy or hard cancel out. A difference whose interval excludes 0 is one the data can resolve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mammo_seg.detection import FP_RATES, FROC_THRESHOLDS, ScanLesions, flagging, match

RESAMPLES = 2000
SEED = 0


class _Counts:
    """Per scan and threshold: lesions found (by group), false positives, any detection."""

    def __init__(self, scans: list[ScanLesions], thresholds, min_area_mm2: float, groups: dict):
        n, t = len(scans), len(thresholds)
        self.groups = groups
        self.lesions = {g: np.zeros(n) for g in groups}
        self.found = {g: np.zeros((n, t)) for g in groups}
        self.false_positives = np.zeros((n, t))
        self.detected = np.zeros((n, t), bool)
        self.normal = np.array([not s.lesions for s in scans])
        for i, scan in enumerate(scans):
            for g, kinds in groups.items():
                self.lesions[g][i] = sum(kind in kinds for kind in scan.kinds)
            if scan.probability is None:
                continue
            for j, threshold in enumerate(thresholds):
                detections = scan.detections(threshold, min_area_mm2)
                hits, fp = match(detections, scan.lesions, scan.ignore)
                self.false_positives[i, j] = fp
                self.detected[i, j] = bool(flagging(detections, scan.ignore))
                for g, kinds in groups.items():
                    self.found[g][i, j] = sum(hit for hit, kind in zip(hits, scan.kinds) if kind in kinds)


def _sensitivity_at_rates(found, lesions, fp_per_image, rates):
    """The step FROC's sensitivity at each rate (:func:`mammo_seg.detection.froc`); NaN without lesions."""
    if lesions == 0:
        return [np.nan] * len(rates)
    sensitivity = found / lesions
    return [max((s for s, f in zip(sensitivity, fp_per_image) if f <= rate), default=0.0) for rate in rates]


def _figures(counts: _Counts, weights: np.ndarray, operating: int, dice: np.ndarray, rates) -> dict:
    images = weights.sum()
    fp_per_image = (weights[:, None] * counts.false_positives).sum(0) / images
    figures = {}
    for g in counts.groups:
        lesions = float(weights @ counts.lesions[g])
        found = weights @ counts.found[g]
        for rate, value in zip(rates, _sensitivity_at_rates(found, lesions, fp_per_image, rates)):
            figures[(g, f"{rate:g}")] = value
        figures[(g, "operating_point")] = found[operating] / lesions if lesions else np.nan
    normal = float(weights @ counts.normal)
    figures["fp_per_image"] = fp_per_image[operating]
    figures["normal_with_detection_rate"] = (float(weights @ (counts.normal & counts.detected[:, operating])) / normal
                                             if normal else np.nan)
    has_dice = ~np.isnan(dice)
    dice_weight = float(weights[has_dice].sum())
    figures["mean_lesion_dice"] = float(weights[has_dice] @ dice[has_dice]) / dice_weight if dice_weight else np.nan
    return figures


def _women_weights(women: list[str], resamples: int, seed: int):
    """The observed weights (every scan once), then ``resamples`` draws: each scan weighted by how many times its
    woman was drawn (as many women as there are, with replacement)."""
    ids = sorted(set(women))
    member = np.array([ids.index(w) for w in women])
    yield np.ones(len(women))
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        times = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))
        yield times[member].astype(float)


def _prepare(scans, threshold, min_area_mm2, dice, groups, thresholds):
    thresholds = tuple(thresholds)
    if threshold not in thresholds:
        thresholds = tuple(sorted(set(thresholds) | {threshold}))
    counts = _Counts(scans, thresholds, min_area_mm2, groups)
    return counts, thresholds.index(threshold), np.array([np.nan if d is None else float(d) for d in dice])


def _layout(summary, counts: _Counts, rates) -> dict:
    """The figures of :func:`bootstrap` and :func:`paired_differences`, ``summary(key)`` for each."""
    return {"groups": {g: {"kinds": sorted(kinds), "lesions": int(counts.lesions[g].sum()),
                           "sensitivity_at_fp_per_image": {f"{r:g}": summary((g, f"{r:g}")) for r in rates},
                           "sensitivity_at_operating_point": summary((g, "operating_point"))}
                       for g, kinds in counts.groups.items()},
            "fp_per_image_at_operating_point": summary("fp_per_image"),
            "normal_with_detection_rate": summary("normal_with_detection_rate"),
            "mean_lesion_dice": summary("mean_lesion_dice")}


def _interval(observed: float, values) -> dict:
    values = np.array(values, float)
    values = values[~np.isnan(values)]
    interval = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values.size else None
    return {"value": None if np.isnan(observed) else float(observed), "ci95": interval}


def bootstrap(scans: list[ScanLesions], women: list[str], threshold: float, min_area_mm2: float,
              dice: list, groups: dict | None = None, thresholds=FROC_THRESHOLDS, rates=FP_RATES,
              resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Values and 95 % intervals over women of: the sensitivity at each false-positive rate and at the operating
    point (``threshold``, ``min_area_mm2``) for every group of lesion kinds (``groups``: name → kinds; default one
    group "all" of every kind), the false positives per image and the share of lesion-free scans with a detection
    there, and the mean lesion Dice (``dice``: one value per scan, None or NaN for a scan without a lesion).
    ``women``: the woman of each scan."""
    if len(women) != len(scans) or len(dice) != len(scans):
        raise ValueError("one woman and one Dice value per scan")
    groups = groups or {"all": {k for s in scans for k in s.kinds}}
    counts, operating, dice = _prepare(scans, threshold, min_area_mm2, dice, groups, thresholds)
    observed, *draws = [_figures(counts, w, operating, dice, rates) for w in _women_weights(women, resamples, seed)]
    return {"method": f"percentile bootstrap over women, {resamples} resamples, seed {seed}",
            "women": len(set(women)), "scans": len(scans),
            **_layout(lambda key: _interval(observed[key], [d[key] for d in draws]), counts, rates)}


@dataclass
class Arm:
    """One model's predictions of the scans of a comparison (the same scans, in the same order, for every arm)
    and its operating point."""

    scans: list[ScanLesions]
    dice: list  # per scan, None for a scan without a lesion
    threshold: float
    min_area_mm2: float


def paired_differences(arms: dict[str, Arm], women: list[str], baseline: str, groups: dict | None = None,
                       thresholds=FROC_THRESHOLDS, rates=FP_RATES, resamples: int = RESAMPLES,
                       seed: int = SEED) -> dict:
    """Each arm's figures minus the ``baseline`` arm's (arm − baseline), with a 95 % paired bootstrap interval over
    women: every resample draws the same women for all arms, so what the women have in common (easy and hard
    lesions) cancels in the difference. A difference is ``resolved`` when its interval excludes 0. The figures are
    those of :func:`bootstrap`, each at its arm's own operating point."""
    _check_aligned(arms.values(), women)
    if baseline not in arms:
        raise ValueError(f"baseline {baseline!r} is not an arm")
    first = arms[baseline].scans
    groups = groups or {"all": {k for s in first for k in s.kinds}}
    prepared = {name: _prepare(arm.scans, arm.threshold, arm.min_area_mm2, arm.dice, groups, thresholds)
                for name, arm in arms.items()}
    figures = {name: [] for name in arms}
    for weights in _women_weights(women, resamples, seed):
        for name, (counts, operating, dice) in prepared.items():
            figures[name].append(_figures(counts, weights, operating, dice, rates))
    result = {"method": f"paired percentile bootstrap over women, {resamples} resamples, seed {seed}",
              "women": len(set(women)), "scans": len(women), "baseline": baseline, "differences": {}}
    for name in arms:
        if name == baseline:
            continue

        def summary(key, name=name):
            return _difference([a[key] - b[key] for a, b in zip(figures[name], figures[baseline])])

        result["differences"][name] = _layout(summary, prepared[name][0], rates)
    return result


def _check_aligned(arms, women: list[str]) -> None:
    """Every arm has one scan and one Dice value per entry of ``women`` (ValueError otherwise)."""
    if {len(arm.scans) for arm in arms} | {len(arm.dice) for arm in arms} != {len(women)}:
        raise ValueError("every arm needs one scan and one Dice value per woman's scan, in the same order")


def _difference(values) -> dict:
    """The observed difference (``values[0]``) and the 95 % interval of the resampled ones; ``resolved`` when the
    interval excludes 0."""
    entry = _interval(values[0], values[1:])
    entry["resolved"] = bool(entry["ci95"] and (entry["ci95"][0] > 0 or entry["ci95"][1] < 0))
    return entry


def mean_paired_difference(pairs: list[tuple[Arm, Arm]], women: list[str], groups: dict | None = None,
                           thresholds=FROC_THRESHOLDS, rates=FP_RATES, resamples: int = RESAMPLES,
                           seed: int = SEED) -> dict:
    """One setting against a baseline over several trainings: ``pairs`` holds, for each training seed, the arm
    trained with the setting and the baseline trained with the same seed, all on the same scans in the same order.
    The figure is the mean over the pairs of (arm − baseline), each at its arm's own operating point; its 95 %
    interval is the paired bootstrap's (:func:`paired_differences`): every resample draws the same women for every
    pair. Averaging the trainings shrinks the part of a difference that one training's randomness makes; the
    interval is over women for these trainings, and does not include what other seeds would give. ``each``: every
    pair's own observed difference, in order."""
    if not pairs:
        raise ValueError("no pair of arms to compare")
    _check_aligned([arm for pair in pairs for arm in pair], women)
    groups = groups or {"all": {k for s in pairs[0][1].scans for k in s.kinds}}
    prepared = [tuple(_prepare(arm.scans, arm.threshold, arm.min_area_mm2, arm.dice, groups, thresholds)
                      for arm in pair) for pair in pairs]
    differences = []  # per draw (the observed weights first), per pair: {figure: arm − baseline}
    for weights in _women_weights(women, resamples, seed):
        draw = []
        for (arm_counts, arm_point, arm_dice), (base_counts, base_point, base_dice) in prepared:
            a = _figures(arm_counts, weights, arm_point, arm_dice, rates)
            b = _figures(base_counts, weights, base_point, base_dice, rates)
            draw.append({key: a[key] - b[key] for key in a})
        differences.append(draw)
    counts = prepared[0][1][0]
    mean = _layout(lambda key: _difference([np.mean([d[key] for d in draw]) for draw in differences]), counts,
                   rates)
    each = [_layout(lambda key, i=i: (None if np.isnan(differences[0][i][key]) else float(differences[0][i][key])),
                    counts, rates) for i in range(len(pairs))]
    return {"method": f"paired percentile bootstrap over women, {resamples} resamples, seed {seed}; the mean over "
                      f"{len(pairs)} trainings of arm − baseline",
            "women": len(set(women)), "scans": len(women), "trainings": len(pairs), "mean": mean, "each": each}
