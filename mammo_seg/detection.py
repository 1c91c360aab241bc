"""Lesion-level detection on whole scans: detections, matching to reference lesions, FROC.

* **Lesion** (:func:`lesion_components`): a connected component of a mask under 8-connectivity (pixels
  touching at an edge or a corner), for predictions and reference masks alike.
* **Detection**: a lesion of ``probability ≥ threshold`` whose area is at least ``min_area_mm2``; its
  score is its maximum probability and its *peak* the pixel where that maximum lies (the first in
  row-major order on ties).
* **Hit criterion** (centre-in-lesion, as in LUNA16 and the mammography CAD literature): a detection
  hits a reference lesion when its peak lies inside the lesion. A lesion is *found* when at least one
  detection hits it; further detections on a found lesion are neither true nor false positives; a
  detection whose peak lies in no lesion is a false positive.
* **Ignore region** (mask value :data:`~mammo_seg.data.features.IGNORE` of a prep output made with
  ``ignore_kinds``; LUNA16's "irrelevant findings"): it is no reference lesion; a detection whose peak lies in
  it is neither a true nor a false positive and does not flag a lesion-free scan (:func:`match`,
  :func:`flagging`); Dice leaves its pixels out of both masks (:func:`reference_regions`).
* **FROC** (Bunch et al. 1978; Chakraborty 1989): for each threshold of :data:`FROC_THRESHOLDS` the
  detections give one point (false positives per image, lesion sensitivity). The sensitivity at a
  false-positive rate ``r`` is the highest sensitivity of the points with at most ``r`` false
  positives per image (a step curve, never interpolated upwards; 0 when no point qualifies). Beyond
  the highest rate any point reaches (``fp_per_image_reached``) the curve is extended flat, as in
  LUNA16: a sensitivity "at 4 FP/image" from a curve that ends at 0.3 FP/image is the one at 0.3.
  The sweep goes down to 0.01 because a minimum area of 100+ mm² keeps the false positives of a
  well-trained model under 0.5 per image even at 0.05 (mini-MIAS: 0.27 at 160 mm²).
* **Image-level call** (:func:`image_positive`): positive when the predicted lesion area exceeds a share
  of the image. On whole scans the share is 0: positive when the scan has at least one detection (a
  lesion area of ``min_area_mm2``), not the 1/750-of-the-image rule of the original, which is meant for
  320-px tiles (on a 15-Mpx scan it would demand 50 mm² and call a well-segmented 7-mm lesion negative)
  and which the training metrics keep (:data:`TILE_IMAGE_AREA_FRACTION`).

A scan whose prediction failed or is missing is counted: its lesions are missed, it adds an image
with no detection. Values that do not exist (sensitivity without lesions) are ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from skimage.measure import label

from mammo_seg.data.features import IGNORE, LESION
from mammo_seg.overlap import confusion, scores

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))
FROC_THRESHOLDS = (0.01, 0.02) + THRESHOLDS  # lower ones for the FROC's high false-positive end
FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0)
#: The original's image-level rule for training tiles: a lesion area over 1/750 of the tile (546 px at 640²).
TILE_IMAGE_AREA_FRACTION = 1 / 750


@dataclass(frozen=True)
class Detection:
    peak: tuple[int, int]
    score: float
    area_px: int


@dataclass
class ScanLesions:
    """One scan for detection scoring: its probabilities (None: prediction failed) and reference lesions."""

    probability: np.ndarray | None
    lesions: list  # bool masks on the probability's grid, one per reference lesion
    kinds: list  # one label per lesion (MIAS CIRC/SPIC/…, CBIS mass/calcification)
    pixel_area_mm2: float
    ignore: np.ndarray | None = None  # bool mask of the ignore region on the probability's grid (None: none)
    _found: dict = field(default_factory=dict, repr=False, compare=False)

    def detections(self, threshold: float, min_area_mm2: float) -> list[Detection]:
        """:func:`find_detections` on this scan (none when its prediction failed), each (threshold, minimum area)
        computed once: the FROC and its bootstrap intervals sweep the same thresholds."""
        key = (float(threshold), float(min_area_mm2))
        if key not in self._found:
            self._found[key] = [] if self.probability is None else find_detections(
                self.probability, threshold, min_area_px(min_area_mm2, self.pixel_area_mm2))
        return self._found[key]


def lesion_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels, n): the lesions of a bool mask, its 8-connected components numbered 1 … n in raster
    order (0: background)."""
    return label(mask, connectivity=2, return_num=True)


def reference_regions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(lesion, ignore) bool masks of a stored reference mask (bool, or uint8 0 / 1 lesion / 2 ignore: see
    :mod:`mammo_seg.data.features`); ``ignore`` is None when the mask has no ignore region."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask, None
    ignore = mask == IGNORE
    return mask == LESION, (ignore if ignore.any() else None)


def reference_lesions(mask: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
    """(one bool mask per reference lesion, the ignore region or None) of a stored reference mask: the lesions are
    the connected components of its lesion pixels (:func:`lesion_components`), never of the ignore region."""
    lesion, ignore = reference_regions(mask)
    components, n = lesion_components(lesion)
    return [components == k for k in range(1, n + 1)], ignore


def without_ignore(pred: np.ndarray, ignore: np.ndarray | None) -> np.ndarray:
    """A predicted mask with the ignore region's pixels left out (unchanged without one): scored against the
    lesion mask, the ignore region is then in neither mask."""
    return pred if ignore is None else pred & ~ignore


def image_positive(lesion_area_px, image_px, image_area_fraction: float = 0.0):
    """The image-level call: the predicted lesion area (pixels) exceeds ``image_area_fraction`` of the
    image's ``image_px`` pixels (0: any lesion pixel). Plain numbers give a bool; ``keras.ops`` tensors
    (the training metrics, one value per image) a bool tensor."""
    return lesion_area_px > image_px * image_area_fraction


def min_area_px(min_area_mm2: float, pixel_area_mm2: float) -> int:
    """The smallest component, in pixels, that covers ``min_area_mm2`` (at least one pixel)."""
    return max(1, int(np.ceil(min_area_mm2 / pixel_area_mm2 - 1e-9)))


def detection_masks(probability: np.ndarray, threshold: float, min_areas) -> list[np.ndarray]:
    """``probability ≥ threshold`` without its components smaller than each of ``min_areas`` pixels
    (the components are labelled once for all of them)."""
    mask = probability >= threshold
    if all(area <= 1 for area in min_areas):
        return [mask for _ in min_areas]
    components, _ = lesion_components(mask)
    sizes = np.bincount(components.ravel())
    masks = []
    for area in min_areas:
        keep = sizes >= area
        keep[0] = False
        masks.append(mask if area <= 1 else keep[components])
    return masks


def detection_mask(probability: np.ndarray, threshold: float, min_area: int) -> np.ndarray:
    """``probability ≥ threshold`` without its components smaller than ``min_area`` pixels."""
    return detection_masks(probability, threshold, [min_area])[0]


def detection_dice(probability: np.ndarray, lesion: np.ndarray, threshold: float, min_area: int,
                   ignore: np.ndarray | None = None) -> float:
    """The lesion Dice of a scan with a lesion: 2·|D ∩ L| / (|D| + |L|) of its detections D at (``threshold``,
    ``min_area`` pixels; :func:`detection_mask`) and its lesion mask L, the ignore region in neither."""
    tp, fp, fn, _ = confusion(without_ignore(detection_mask(probability, threshold, min_area), ignore), lesion)
    return scores(tp, fp, fn)["Dice"]


def find_detections(probability: np.ndarray, threshold: float, min_area: int) -> list[Detection]:
    """Connected components of ``probability ≥ threshold`` with at least ``min_area`` pixels, best first (equal
    scores in raster order of the components).

    Computed within the bounding box of the pixels over the threshold (a window keeps the raster order of its
    pixels, so the components, their order and their peaks are those of the whole map), and over those pixels
    alone.
    """
    mask = probability >= threshold
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return []
    top, left = int(rows[0]), int(cols[0])
    window = (slice(top, int(rows[-1]) + 1), slice(left, int(cols[-1]) + 1))
    components, n = lesion_components(mask[window])
    flat = components.ravel()
    inside = np.flatnonzero(flat)  # raster order within the window
    labels = flat[inside]
    values = probability[window].ravel()[inside]
    areas = np.bincount(labels, minlength=n + 1)
    exact = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64  # the map's own values
    peak = np.full(n + 1, -np.inf, exact)
    np.maximum.at(peak, labels, values)
    at_peak = np.flatnonzero(values == peak[labels])
    first = np.full(n + 1, inside.size)
    np.minimum.at(first, labels[at_peak], at_peak)  # the first pixel of each component's maximum
    width = components.shape[1]
    found = [Detection((top + int(inside[i]) // width, left + int(inside[i]) % width), float(values[i]),
                       int(areas[k]))
             for k, i in enumerate(first[1:], start=1) if areas[k] >= min_area]
    return sorted(found, key=lambda d: -d.score)


def match(detections: list[Detection], lesions: list[np.ndarray],
          ignore: np.ndarray | None = None) -> tuple[list[bool], int]:
    """(found flag per lesion, false positives) under the centre-in-lesion criterion; a detection whose peak
    lies in no lesion but in ``ignore`` (the ignore region's bool mask) is neither."""
    found = [False] * len(lesions)
    false_positives = 0
    for d in detections:
        hits = [i for i, lesion in enumerate(lesions) if lesion[d.peak]]
        if not hits and not (ignore is not None and ignore[d.peak]):
            false_positives += 1
        for i in hits:
            found[i] = True
    return found, false_positives


def flagging(detections: list[Detection], ignore: np.ndarray | None = None) -> list[Detection]:
    """The detections that flag a scan: those whose peak lies outside the ignore region (all without one)."""
    return detections if ignore is None else [d for d in detections if not ignore[d.peak]]


def score_scans(scans: list[ScanLesions], threshold: float, min_area_mm2: float) -> dict:
    """Lesion sensitivity (overall and per kind), false positives per image and scan-level calls at one threshold."""
    found_by_kind: dict[str, list[bool]] = {}
    false_positives = 0
    normal_with_detection = normal = 0
    for scan in scans:
        detections = scan.detections(threshold, min_area_mm2)
        found, fp = match(detections, scan.lesions, scan.ignore)
        false_positives += fp
        for kind, hit in zip(scan.kinds, found):
            found_by_kind.setdefault(kind, []).append(hit)
        if not scan.lesions:
            normal += 1
            normal_with_detection += bool(flagging(detections, scan.ignore))
    every = [hit for hits in found_by_kind.values() for hit in hits]
    return {"threshold": threshold, "lesions": len(every), "found": sum(every),
            "sensitivity": _share(sum(every), len(every)),
            "false_positives": false_positives, "fp_per_image": _share(false_positives, len(scans)),
            "sensitivity_by_kind": {k: _share(sum(v), len(v)) for k, v in sorted(found_by_kind.items())},
            "lesions_by_kind": {k: len(v) for k, v in sorted(found_by_kind.items())},
            "normal_scans": normal, "normal_scans_with_detection": normal_with_detection,
            "normal_with_detection_rate": _share(normal_with_detection, normal)}


def froc(scans: list[ScanLesions], min_area_mm2: float, thresholds=FROC_THRESHOLDS, fp_rates=FP_RATES) -> dict:
    """FROC points over ``thresholds`` and the sensitivity at each false-positive rate of ``fp_rates``."""
    points = [score_scans(scans, t, min_area_mm2) for t in thresholds]
    at_rate = {}
    for rate in fp_rates:
        eligible = [p["sensitivity"] for p in points if p["fp_per_image"] is not None
                    and p["fp_per_image"] <= rate and p["sensitivity"] is not None]
        at_rate[f"{rate:g}"] = max(eligible, default=0.0) if any(p["lesions"] for p in points) else None
    return {"criterion": "centre-in-lesion: the detection's maximum-probability pixel lies inside the lesion",
            "min_area_mm2": min_area_mm2, "images": len(scans),
            "points": [{k: p[k] for k in ("threshold", "sensitivity", "fp_per_image")} for p in points],
            "fp_per_image_reached": max((p["fp_per_image"] for p in points if p["fp_per_image"] is not None),
                                        default=None),
            "sensitivity_at_fp_per_image": at_rate,
            "mean_sensitivity": (float(np.mean(list(at_rate.values())))
                                 if all(v is not None for v in at_rate.values()) else None)}


def _share(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None
