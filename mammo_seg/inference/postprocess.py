"""Post-processing of predictions: keep findings inside the breast.

Scanned-film mammograms (CBIS-DDSM, MIAS) carry film labels, markers and scanner borders outside
the breast; a segmentation network trained on lesion tiles can fire on these bright objects. As in
Li Shen's and GMIC's preprocessing, the breast is taken as the largest connected region brighter
than a low threshold (5 % of the scan's range, after light smoothing), with holes filled.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import gaussian
from skimage.measure import label

BREAST_LEVEL = 0.05


def breast_region(pixels: np.ndarray, level: float = BREAST_LEVEL) -> np.ndarray:
    """Bool mask of the breast in a scan in [0, 1] (bright = dense); all True if nothing stands out."""
    foreground = gaussian(pixels, sigma=2, preserve_range=True) > level
    components = label(foreground, connectivity=1)
    if components.max() == 0:
        return np.ones(pixels.shape, bool)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return fill_holes(components == int(sizes.argmax()))


def fill_holes(region: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes(region)`` in one labelling pass: the background is what of
    ``~region`` is 4-connected to the image border; everything else is filled (same result, faster)."""
    background, n = ndimage.label(~region)
    if n == 0:
        return region.copy()
    border = np.zeros(n + 1, bool)
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        border[edge] = True
    border[0] = False
    return ~np.take(border, background)  # as border[background], in half the time
