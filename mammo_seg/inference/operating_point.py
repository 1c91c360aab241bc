"""The operating point of a trained model: decision threshold, minimum lesion area and flip test-time
augmentation, chosen on scans the model did not train on.

A probability map becomes findings through two numbers: the probability threshold and the smallest
connected component that counts as a lesion (in mm², so that it means the same on any scanner); the
map itself is the network's, or (``flip``) the mean of the network's on the scan and on its left-right
mirror. They are chosen once, on whole scans at the training grid, exactly as ``mammo predict`` sees a scan
(one pass, breast region): for one model, the validation split of the prep output it was trained on
(:func:`choose_operating_point`); for a cross-validated ensemble, the pooled out-of-fold predictions
(:mod:`mammo_seg.training.cross_val`). The record is ``operating_point.json`` beside the model file (or the
ensemble's ``ensemble.json``); ``mammo predict`` applies it by default.

Choice (:func:`choose`) among the (flip, threshold, minimum area) candidates (recipe ``operating_point:``
``flips`` and ``min_areas_mm2``; thresholds :data:`~mammo_seg.detection.THRESHOLDS`) whose share of lesion-free
scans with any detection is at most ``max_normal_rate``:

* ``objective: dice``: the highest mean lesion Dice over scans with a lesion (ties: no flip, the higher
  threshold, then the larger area);
* ``objective: sensitivity``: among those with at most ``max_fp_per_image`` false positives per image, the
  highest lesion sensitivity (a lesion is a connected component of the reference mask, found under
  :mod:`mammo_seg.detection`'s centre-in-lesion rule), then the highest Dice, no flip, the higher threshold,
  the larger area.

When no candidate keeps the normal scans that clean, the one with the fewest such scans (then the highest Dice).

A reference mask's ignore region (prep's ``ignore_kinds``) is no lesion, and a detection peaking in it is
neither a true nor a false positive, nor flags a lesion-free scan; Dice leaves its pixels out
(:mod:`mammo_seg.detection`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from mammo_seg.detection import (THRESHOLDS, detection_masks, find_detections, flagging, match, min_area_px,
                                 reference_lesions, reference_regions, without_ignore)
from mammo_seg.errors import MammoError

FILE = "operating_point.json"
MIN_AREAS_MM2 = (0.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)  # 80 mm²: a 10-mm lesion


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float = 0.5
    min_area_mm2: float = 0.0
    flip: bool = False  # average with the left-right mirror's probabilities


def path_for(model_file: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(model_file)), FILE)


def load_operating_point(model_file: str) -> tuple[OperatingPoint, str]:
    """The recorded operating point of ``model_file`` and where it came from ("default" when none is recorded)."""
    path = path_for(model_file)
    if not os.path.isfile(path):
        return OperatingPoint(), "default"
    try:
        with open(path) as f:
            content = json.load(f)
        if content.get("model") != os.path.basename(model_file):
            return OperatingPoint(), "default"
        point = OperatingPoint(float(content["threshold"]), float(content["min_area_mm2"]),
                               bool(content.get("flip", False)))  # records before flip existed: off
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MammoError(path, f"unreadable operating point ({type(e).__name__}: {e})") from None
    if not (0 < point.threshold < 1 and point.min_area_mm2 >= 0):
        raise MammoError(path, f"operating point out of range: {point}")
    return point, os.path.basename(path)


def validation_scans(data_dir: str, split: str, channels: int = 1):
    """(image, stored mask) pairs on the training grid: the whole scans of ``split`` in a prep output (the mask
    uint8: 0, 1 lesion, 2 ignore region; :func:`mammo_seg.detection.reference_regions` reads it). The image is
    a model's input (:func:`network_input`)."""
    from mammo_seg.data import features
    from mammo_seg.data.prep_output import PrepOutput

    for file in PrepOutput.containing(data_dir).whole_scan_files(split):  # OUT, OUT/320 or OUT/full
        for rec in features.iterate_records(file):
            yield network_input(rec, channels), rec["mask"][..., 0]


def chosen_on(point: dict | None) -> dict:
    """What a recorded point (or None) says it was chosen on (``chosen_on``; empty when it says nothing)."""
    return (point or {}).get("chosen_on") or {}


def models_per_scan(point: dict | None) -> int:
    """How many models' mean predicted each scan a recorded point was chosen on: 1 (one fold model a scan, or no
    cross-validation), or K-1 (nested cross-validation, :mod:`mammo_seg.training.cross_val`)."""
    return chosen_on(point).get("models_per_scan", 1)


def network_input(record: dict, channels: int = 1) -> np.ndarray:
    """A parsed whole-scan record as a model of ``channels`` input channels takes it: the scan (H×W, float32 in
    [0, 1]), or the scan and the other breast (H×W×2; prep.contralateral)."""
    from mammo_seg.data import features
    from mammo_seg.data.contralateral import with_other_breast

    def scaled(stored):
        return stored[..., 0].astype(np.float32) / features.IMAGE_MAX

    image = scaled(record["image"])
    return with_other_breast(image, scaled(record["contralateral"])) if channels == 2 else image


def scan_probabilities(models, image: np.ndarray, flip: bool = False) -> np.ndarray:
    """The mean probability map of ``models`` on one training-grid image (H×W, or H×W×2 with the other breast),
    zero outside the breast: what ``mammo predict`` computes on the training grid."""
    from mammo_seg.inference.postprocess import breast_region
    from mammo_seg.inference.sliding_window import Predictor, predict_probabilities

    prob = predict_probabilities(models if isinstance(models, Predictor) else Predictor(models), image, flip=flip)
    prob[~breast_region(image if image.ndim == 2 else image[..., 0])] = 0.0
    return prob


def choose_operating_point(model_file: str, data_dir: str, split: str = "val", max_normal_rate: float = 0.25,
                           thresholds=THRESHOLDS, min_areas_mm2=MIN_AREAS_MM2, flips=(False,),
                           write: bool = True, objective: str = "dice", max_fp_per_image: float = 1.0) -> dict:
    """Choose the operating point of ``model_file`` on ``split`` of ``data_dir``; returns the record, also
    written beside the model unless ``write`` is False (a what-if).
    The record's ``candidates`` hold every candidate's validation figures."""
    from mammo_seg.inference.model import load_model
    from mammo_seg.inference.sliding_window import Predictor

    loaded = load_model(model_file)
    predictor = Predictor(loaded.models)
    flips = sorted({bool(f) for f in flips})
    scans = {flip: [] for flip in flips}
    for image, mask in validation_scans(data_dir, split, loaded.channels):
        for flip in flips:
            scans[flip].append((scan_probabilities(predictor, image, flip), mask))
    record = choose(scans, loaded.resolution.pixel_area_mm2, max_normal_rate, thresholds, min_areas_mm2,
                    objective, max_fp_per_image)
    record = {"model": os.path.basename(loaded.path), **record,
              "chosen_on": {"data": os.path.abspath(data_dir), "split": split,
                            **record.pop("chosen_on")}}
    if write:
        write_operating_point(loaded.path, record)
    return record


def write_operating_point(model_file: str, record: dict) -> None:
    """``operating_point.json`` beside ``model_file`` (a ``.keras`` file or an ensemble's ``ensemble.json``)."""
    from mammo_seg.atomic import write_json as atomic_write_json

    atomic_write_json(path_for(model_file), {k: v for k, v in record.items() if k != "candidates"})


def choose(scans: dict, pixel_mm2: float, max_normal_rate: float = 0.25, thresholds=THRESHOLDS,
           min_areas_mm2=MIN_AREAS_MM2, objective: str = "dice", max_fp_per_image: float = 1.0) -> dict:
    """The operating point of probability maps ``scans`` ({flip: [(probability, reference mask), ...]}, all on
    one grid of ``pixel_mm2`` mm² pixels; a reference mask bool, or a stored mask with an ignore region) by the
    rule of the module; the record with every candidate."""
    flips = sorted(scans)
    min_areas = [min_area_px(area, pixel_mm2) for area in min_areas_mm2]
    candidates = []
    for flip in flips:
        candidates += _candidates(scans[flip], flip, thresholds, min_areas, min_areas_mm2)
    best, rule = select(candidates, max_normal_rate, objective, max_fp_per_image)
    first = scans[flips[0]]
    point = OperatingPoint(best["threshold"], best["min_area_mm2"], best["flip"])
    return {**asdict(point),
            "chosen_on": {"scans": len(first),
                          "scans_with_lesion": sum(bool(reference_regions(m)[0].any()) for _, m in first)},
            "rule": rule, "validation": best, "candidates": candidates}


def select(candidates: list[dict], max_normal_rate: float = 0.25, objective: str = "dice",
           max_fp_per_image: float = 1.0) -> tuple[dict, str]:
    """(the chosen candidate, the rule in words): the module's rule over scored candidates, each a dict of
    ``flip``, ``threshold``, ``min_area_mm2``, ``mean_dice``, ``sensitivity``, ``fp_per_image`` and
    ``normal_with_detection_rate`` (as :func:`choose` scores them, or a study that adds detections of its own)."""
    clean = [c for c in candidates if within_limits(c, max_normal_rate, objective, max_fp_per_image)]
    if objective == "sensitivity":
        def key(c):
            return (c["sensitivity"], c["mean_dice"], not c["flip"], c["threshold"], c["min_area_mm2"])
        rule = (f"highest lesion sensitivity with at most {max_fp_per_image:g} false positives per image and "
                f"{max_normal_rate:g} of lesion-free scans flagged (ties: mean lesion Dice)")
    else:
        def key(c):
            return (c["mean_dice"], not c["flip"], c["threshold"], c["min_area_mm2"])
        rule = f"highest mean lesion Dice with at most {max_normal_rate:g} of lesion-free scans flagged"
    if clean:
        return max(clean, key=key), rule
    return max(candidates, key=lambda c: (-c["normal_with_detection_rate"], c["mean_dice"], not c["flip"])), rule


def within_limits(candidate: dict, max_normal_rate: float = 0.25, objective: str = "dice",
                  max_fp_per_image: float = 1.0) -> bool:
    """Whether a scored candidate keeps the rule's limits: at most ``max_normal_rate`` of lesion-free scans
    flagged and, under the ``sensitivity`` objective, at most ``max_fp_per_image`` false positives per image."""
    return candidate["normal_with_detection_rate"] <= max_normal_rate and (
        objective == "dice" or candidate["fp_per_image"] <= max_fp_per_image)


def choose_by_section(scans: dict, pixel_mm2: float, section) -> dict:
    """:func:`choose` by a recipe's ``operating_point`` section (its rule and candidate minimum areas)."""
    return choose(scans, pixel_mm2, section.max_normal_rate, min_areas_mm2=[float(a) for a in section.min_areas_mm2],
                  objective=section.objective, max_fp_per_image=section.max_fp_per_image)


def _candidates(scans, flip: bool, thresholds, min_areas: list, min_areas_mm2) -> list[dict]:
    """Mean lesion Dice, lesion sensitivity, false positives per image and share of lesion-free scans flagged of
    every (threshold, minimum area) on ``scans``. A reference lesion is a connected component of the reference
    mask; it is found when a detection's peak lies in it (:mod:`mammo_seg.detection`)."""
    # per scan: its lesion mask, its lesions one by one and its ignore region (None: none)
    references = [(reference_regions(ref)[0], *reference_lesions(ref)) for _, ref in scans]
    table = candidate_table([prob for prob, _ in scans], references, thresholds, min_areas, min_areas_mm2)
    return table.scored(flip)


@dataclass
class CandidateTable:
    """Every candidate (threshold, minimum area) scored scan by scan and lesion by lesion (lesions numbered scan by
    scan), so that the rule's figures can be summed over any of the scans, with detections of another finder
    added (:meth:`scored`)."""

    points: list  # (threshold, min_area_mm2): thresholds in order, each with every minimum area in order
    lesion_scan: np.ndarray  # [lesion]: its scan
    found: np.ndarray  # [point, lesion] bool: a detection's peak lies in the lesion
    false_positives: np.ndarray  # [point, scan]: detections whose peak lies in no lesion nor the ignore region
    flagged: np.ndarray  # [point, scan] bool: a detection flags the scan (:func:`mammo_seg.detection.flagging`)
    dice: np.ndarray  # [point, scan]: the lesion Dice of the detections (NaN: a scan without a lesion)

    def scored(self, flip: bool = False, inside=None, found=None, false_positives: int = 0, flagged=None) -> list:
        """The candidates as :func:`select` weighs them, on the scans ``inside`` (a bool per scan; None: all),
        with another finder's lesions ``found`` (a bool per lesion), ``false_positives`` (their number on those
        scans) and ``flagged`` scans (a bool per scan) counted beside each candidate's detections; the lesion
        Dice stays the detections'."""
        n_scans = self.flagged.shape[1]
        inside = np.ones(n_scans, bool) if inside is None else np.asarray(inside, bool)
        lesions = inside[self.lesion_scan]
        with_lesion = np.zeros(n_scans, bool)
        with_lesion[self.lesion_scan] = True
        normals = inside & ~with_lesion
        hits = self.found[:, lesions] | (False if found is None else np.asarray(found, bool)[lesions])
        flags = self.flagged[:, normals] | (False if flagged is None else np.asarray(flagged, bool)[normals])
        counted = self.false_positives[:, inside].sum(axis=1) + false_positives
        dice = self.dice[:, inside & with_lesion]
        n_lesions, n_normals, n_inside = int(lesions.sum()), int(normals.sum()), int(inside.sum())
        return [{"flip": flip, "threshold": threshold, "min_area_mm2": area,
                 "mean_dice": float(np.mean(dice[k])) if dice.shape[1] else 0.0,
                 "sensitivity": int(hits[k].sum()) / n_lesions if n_lesions else 0.0,
                 "fp_per_image": int(counted[k]) / n_inside if n_inside else 0.0,
                 "normal_with_detection_rate": int(flags[k].sum()) / n_normals if n_normals else 0.0}
                for k, (threshold, area) in enumerate(self.points)]


def candidate_table(probabilities: list, references: list, thresholds, min_areas: list,
                    min_areas_mm2) -> CandidateTable:
    """The :class:`CandidateTable` of probability maps at ``thresholds`` × ``min_areas`` (pixels; ``min_areas_mm2``
    the same in mm², as recorded); ``references``: per scan (its lesion mask, its lesions as one bool mask each,
    its ignore region or None)."""
    points = [(float(t), float(a)) for t in thresholds for a in min_areas_mm2]
    lesion_scan = np.array([i for i, (_, lesions, _) in enumerate(references) for _ in lesions], int)
    first = np.concatenate([[0], np.cumsum([len(lesions) for _, lesions, _ in references])]).astype(int)
    found = np.zeros((len(points), len(lesion_scan)), bool)
    false_positives = np.zeros((len(points), len(references)), int)
    flagged = np.zeros((len(points), len(references)), bool)
    dice = np.full((len(points), len(references)), np.nan)
    for t, threshold in enumerate(thresholds):
        for s, (prob, (lesion, lesions, ignore)) in enumerate(zip(probabilities, references)):
            detections = find_detections(prob, threshold, 1)
            masks = detection_masks(prob, threshold, min_areas) if lesions else [None] * len(min_areas)
            for i, pred in enumerate(masks):
                k = t * len(min_areas) + i
                kept = [d for d in detections if d.area_px >= min_areas[i]]
                hits, false_positives[k, s] = match(kept, lesions, ignore)
                found[k, first[s]:first[s + 1]] = hits
                flagged[k, s] = bool(flagging(kept, ignore))
                if lesions:
                    dice[k, s] = _dice(without_ignore(pred, ignore), lesion)
    return CandidateTable(points, lesion_scan, found, false_positives, flagged, dice)


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of a scan with a lesion (its reference is never empty, so the denominator is never 0)."""
    from mammo_seg.overlap import confusion, scores

    tp, fp, fn, _ = confusion(pred, ref)
    return scores(tp, fp, fn)["Dice"]


def choose_for_run(run: str, config) -> dict | None:
    """After ``mammo train``: choose the operating point of the run's final model (on the chief only)."""
    from mammo_seg.run_dir import model_file
    from mammo_seg.training.strategy import is_chief

    if not is_chief():
        return None
    section = config.operating_point
    return choose_operating_point(model_file(run), config.data.dir, section.split, section.max_normal_rate,
                                  min_areas_mm2=[float(a) for a in section.min_areas_mm2],
                                  flips=[bool(f) for f in section.flips], objective=section.objective,
                                  max_fp_per_image=section.max_fp_per_image)
