"""The other breast as a second input channel: the one definition of how it is placed beside a scan.

A lesion is often told from dense tissue by asymmetry: what one breast has and the other, in the same view, has
not. With ``prep.contralateral`` (and a model trained on it) the network sees, beside each scan on the training
grid, the same woman's other breast in the same view:

1. mirrored left-right, so that both chest walls lie on the same side;
2. resampled to the same training grid spacing (its own :class:`~mammo_seg.data.resolution.ScanGrid`);
3. fitted to the scan's training shape: rows from the top; columns from the chest wall, the side of the scan whose
   half holds more signal (:func:`chest_wall_on_left`), cropped or padded with zeros on the far side.

No registration: mammograms of the two breasts differ in compression and placement, and the network learns from
the roughly aligned pair. A scan with no contralateral scan gets a zero channel (the prep record says so).
"""

from __future__ import annotations

import numpy as np

from mammo_seg.data.resolution import ScanGrid, resample_image


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
    mirrored = np.ascontiguousarray(other_pixels[:, ::-1])
    other = resample_image(mirrored, other_grid.shape)
    return fit(other.astype(np.float32, copy=False), scan_training.shape, chest_wall_on_left(scan_training))
