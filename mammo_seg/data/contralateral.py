"""The other breast as a second input channel: the one definition of which scan it is and how it is placed.

A lesion is often told from dense tissue by asymmetry: what one breast has and the other, in the same view, has
not. With ``prep.contralateral`` (and a model trained on it) the network sees, beside each scan on the training
grid, the same woman's other breast in the same view (the *pair*):

* **which scan**: mini-MIAS images come in pairs, ``mdb001`` ↔ ``mdb002``, ``mdb003`` ↔ ``mdb004``, …
  (:func:`other_mias_ref`); CBIS-DDSM: the same patient number and view, the other side (:func:`cbis_pair_keys`;
  the dataset keeps a view under a ``Mass-`` and a ``Calc-`` copy, so the set is not part of the key); DICOM in
  general: the same patient, study and view, the other laterality (:mod:`mammo_seg.inference.pairs`, which finds
  them among predict's input files);
* **how it is placed** (:func:`contralateral_channel`):

  1. turned so that its chest wall lies on the same side as the scan's (:func:`chest_wall_on_left`: the side
     whose half holds more signal), that is mirrored left-right for two breasts stored as mirror images;
  2. resampled to the same training grid spacing (its own :class:`~mammo_seg.data.resolution.ScanGrid`);
  3. fitted to the scan's training shape: rows from the top; columns from the chest wall, cropped or padded with
     zeros on the far side.

No registration: mammograms of the two breasts differ in compression and placement, and the network learns from
the roughly aligned pair. A scan without a pair gets a zero channel (the prep record has none).
"""

from __future__ import annotations

import re

import numpy as np

from mammo_seg.data.resolution import ScanGrid, resample_image

MIAS_REF = re.compile(r"^mdb(\d{3})$", re.IGNORECASE)
OTHER_SIDE = {"LEFT": "RIGHT", "RIGHT": "LEFT", "L": "R", "R": "L"}


def other_mias_ref(ref: str) -> str | None:
    """The other image of a mini-MIAS image's woman (``mdb001`` → ``mdb002``, ``mdb002`` → ``mdb001``); None for a
    name that is not ``mdbNNN``."""
    match = MIAS_REF.match(ref)
    if not match:
        return None
    n = int(match.group(1))
    return f"mdb{n + 1 if n % 2 else n - 1:03d}"


def cbis_pair_keys(patient: str, side: str, view: str) -> tuple[tuple, tuple]:
    """(this view's key, its pair's key) for a CBIS-DDSM breast view: patient number (``P_00016``), side, view."""
    side, view = side.upper(), view.upper()
    return ("cbis", patient.upper(), side, view), ("cbis", patient.upper(), OTHER_SIDE[side], view)


def chest_wall_on_left(image: np.ndarray) -> bool:
    """Whether the chest wall of a mammogram is at column 0: its left half holds at least as much signal."""
    half = image.shape[1] // 2
    return float(np.sum(image[:, :half], dtype=np.float64)) >= float(np.sum(image[:, image.shape[1] - half:],
                                                                             dtype=np.float64))


def fit(image: np.ndarray, shape: tuple[int, int], left: bool) -> np.ndarray:
    """``image`` cropped or zero-padded to ``shape``: rows kept from the top, columns from the left edge
    (``left``) or the right edge."""
    h, w = shape
    out = np.zeros(shape, image.dtype)
    rows = min(h, image.shape[0])
    cols = min(w, image.shape[1])
    if left:
        out[:rows, :cols] = image[:rows, :cols]
    else:
        out[:rows, w - cols:] = image[:rows, image.shape[1] - cols:]
    return out


def contralateral_channel(scan_training: np.ndarray, other_pixels: np.ndarray, other_grid: ScanGrid) -> np.ndarray:
    """The other breast (``other_pixels``, float32 in [0, 1] on its own grid ``other_grid``) placed beside
    ``scan_training`` (the scan on the training grid) as the module describes; float32 of the scan's shape."""
    left = chest_wall_on_left(scan_training)
    if chest_wall_on_left(other_pixels) == left:
        turned = other_pixels
    else:
        turned = np.ascontiguousarray(other_pixels[:, ::-1])
    other = resample_image(turned, other_grid.shape)
    return fit(other.astype(np.float32, copy=False), scan_training.shape, left)


def with_other_breast(scan: np.ndarray, other: np.ndarray) -> np.ndarray:
    """A two-channel model's input: the scan (H×W) and the placed other breast (H×W) as H×W×2, float32."""
    return np.stack([scan, other], axis=-1).astype(np.float32, copy=False)
