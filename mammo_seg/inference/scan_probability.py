"""The network's probabilities on the scan's own grid, and the lesion mask they give, computed only where needed.

A CBIS-DDSM scan has about 12 million pixels; the probabilities back on its grid take more time than any other
step after the network, and the mask, the lesion report and the SEG need them only where they reach the
threshold, and at their maximum. Bilinear interpolation never exceeds the largest of the training-grid values it
mixes, and the float16 rounding and the clipping that follow keep the order of values, so a tile of the scan's
grid (:data:`TILE` px a side) whose training-grid neighbourhood (one pixel of margin) stays under the threshold
holds no lesion pixel: only the other tiles are computed (:meth:`ScanGrid.image_to_native_window`, the same values
as the whole map), and for the maximum, the tiles in decreasing order of that bound until none can beat the best
found. The mask, the lesion values and the maximum are those of the whole map (:func:`scan_probability`), which
is computed only when asked for (``mammo predict --format prob``, :class:`~mammo_seg.inference.segment.Segmenter`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mammo_seg.data.resolution import ScanGrid
from mammo_seg.detection import detection_mask

TILE = 256
#: Above this share of tiles to compute, the whole map is computed at once (no cheaper, no dearer).
WHOLE_SHARE = 0.5


def stored(values: np.ndarray) -> np.ndarray:
    """Probabilities as the NPZ stores them: clipped to [0, 1], float16 values in float32."""
    return np.clip(values, 0.0, 1.0).astype(np.float16).astype(np.float32)


def scan_probability(grid: ScanGrid, prob: np.ndarray) -> np.ndarray:
    """The whole map: the training-grid probabilities ``prob`` on the scan's grid, as stored."""
    return stored(grid.image_to_native(prob))


@dataclass
class ScanLesionMask:
    """The lesion mask on the scan's grid, with the probabilities it needs (see the module docstring)."""

    mask: np.ndarray  # bool: probability ≥ threshold, components under the minimum area dropped
    values: np.ndarray  # float32: the whole map's values on every pixel of the mask (elsewhere possibly 0)
    maximum: float  # the whole map's maximum


def lesion_mask(grid: ScanGrid, prob: np.ndarray, threshold: float, min_area: int,
                whole: np.ndarray | None = None) -> ScanLesionMask:
    """``detection_mask(scan_probability(grid, prob), threshold, min_area)``, its values and the map's maximum,
    from the tiles that can hold them; from ``whole`` (that map) when it was computed anyway."""
    enlarged = all(n >= t for n, t in zip(grid.native_shape, prob.shape))  # else the whole is resampled at once
    if whole is None and threshold > 0 and enlarged:
        values, maximum = _needed_tiles(grid, prob, threshold)
    else:
        values = scan_probability(grid, prob) if whole is None else whole
        maximum = float(values.max()) if values.size else 0.0
    mask = np.zeros(values.shape, bool)
    over = values >= threshold
    rows, cols = np.flatnonzero(over.any(axis=1)), np.flatnonzero(over.any(axis=0))
    if rows.size:  # components lie inside the box of the pixels over the threshold: labelled there alone
        box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        mask[box] = detection_mask(values[box], threshold, min_area)
    return ScanLesionMask(mask, values, maximum)


def _tiles(n_native: int, n_training: int) -> list[tuple[slice, slice]]:
    """[(native slice, training slice it interpolates from, one pixel of margin)] along one axis."""
    zoom = n_training / n_native
    tiles = []
    for start in range(0, n_native, TILE):
        stop = min(start + TILE, n_native)
        first = int(np.floor((start + 0.5) * zoom - 0.5)) - 1
        last = int(np.floor((stop - 0.5) * zoom - 0.5)) + 2
        tiles.append((slice(start, stop), slice(max(0, first), min(n_training, last + 1))))
    return tiles


def _needed_tiles(grid: ScanGrid, prob: np.ndarray, threshold: float) -> tuple[np.ndarray, float]:
    """(the map on the tiles that may reach ``threshold`` or hold the maximum, zeros elsewhere; the maximum)."""
    (h, w), (th, tw) = grid.native_shape, prob.shape
    row_tiles, col_tiles = _tiles(h, th), _tiles(w, tw)
    prob = prob.astype(np.float32, copy=False)
    if np.isnan(np.min(prob)):  # NaN does not order: the whole map decides
        whole = scan_probability(grid, prob)
        return whole, float(whole.max())
    bounds = np.empty((len(row_tiles), len(col_tiles)), np.float32)  # each tile's largest possible value
    for i, (_, source_rows) in enumerate(row_tiles):
        strip = prob[source_rows].max(axis=0)
        for j, (_, source_cols) in enumerate(col_tiles):
            bounds[i, j] = strip[source_cols].max()
    bounds = stored(bounds)
    wanted = bounds >= threshold
    if wanted.mean() > WHOLE_SHARE:
        whole = scan_probability(grid, prob)
        return whole, float(whole.max())
    values = np.zeros((h, w), np.float32)
    done = np.zeros(bounds.shape, bool)

    def compute(i: int, j: int) -> float:
        rows, cols = row_tiles[i][0], col_tiles[j][0]
        values[rows, cols] = stored(grid.image_to_native_window(prob, rows, cols))
        done[i, j] = True
        return float(values[rows, cols].max())

    best = max((compute(i, j) for i, j in zip(*np.nonzero(wanted))), default=-1.0)
    for flat in np.argsort(-bounds, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, bounds.shape)
        if bounds[i, j] <= best:
            break
        if not done[i, j]:
            best = max(best, compute(i, j))
    return values, best
