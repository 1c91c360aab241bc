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
    return ndimage.binary_fill_holes(components == int(sizes.argmax()))
