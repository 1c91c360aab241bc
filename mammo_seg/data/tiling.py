"""Cutting training tiles from a scan, as the original did (``crop_cbis_images_13.ipynb``), from the scan
resampled once to its training grid (nnU-Net's way).

The scan and its mask are resampled whole to the training grid (:class:`TrainingScan`,
:func:`~mammo_seg.data.resolution.resample_image`), and every tile of every size is cut from that array: a
T-px tile covers T training pixels, ``T × Resolution.spacing_mm`` of tissue a side, whatever the scan's
spacing; its ``origin`` is its top-left on the native grid (to the nearest native pixel), ``crop_size``
the native pixels it spans (rounded) and ``scale`` the scan's factor. The positions follow the original's
rules, in training pixels:

* ROI-centred crops: for each abnormality, ``roi_crops`` random crops (one more when the lesion is
  larger than 1.5 crops) inside a region centred on it of ``max(1.4·crop, lesion)`` per side
  (``max(1.15·crop, lesion)`` when the lesion is at least a crop wide);
* random crops: ``random_crops`` crops anywhere in the scan (the negatives and partial positives);
* background rejection: a tile is dropped when more than 90 % (ROI) or 80 % (random) of its pixels
  are at or below 10/255 of the scan's range. Crops that reach past the scan are padded with 0.

Resampling: the image bilinearly with Gaussian anti-aliasing when shrinking. The mask is resampled
the same way *as a coverage fraction* and thresholded at 0.5: a tile pixel is lesion when at least half
of the tissue it covers is lesion. That neither erodes nor dilates the lesion (its area is kept up to
boundary quantisation), unlike the original's bilinear + integer cast (erodes) or JPEG + ``> 0`` (dilates).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mammo_seg.data.features import image_to_uint16
from mammo_seg.data.resolution import ScanGrid, resample_image, resample_labels


@dataclass(frozen=True)
class TilingConfig:
    """How tiles are cut (see the module docstring). The crop counts are ``mammo prep`` settings, whose
    defaults :class:`mammo_seg.config.PrepSection` holds; the rest is the original's recipe."""

    roi_crops: int
    random_crops: int
    roi_context: float = 1.4
    large_roi_context: float = 1.15
    background_level: float = 10 / 255
    max_background_roi: float = 0.9
    max_background_random: float = 0.8

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Tile:
    image: np.ndarray  # uint16 (T, T)
    mask: np.ndarray  # uint8 (T, T): 0, 1 = lesion, 2 = ignore (features.IGNORE)
    origin: tuple[int, int]  # top-left on the native grid (nearest native pixel)
    crop_size: int  # native pixels the tile spans (rounded)
    scale: float  # tile px per native px (the scan's ScanGrid.factor)
    kind: str  # "roi", "random" or "full"


@dataclass
class TileCounts:
    roi: int = 0
    random: int = 0
    full: int = 0
    rejected_background: int = 0


def extract(array: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """``array[top:top+size, left:left+size]``, padded with zeros where it reaches past the edges."""
    h, w = array.shape
    out = np.zeros((size, size), dtype=array.dtype)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + size, h), min(left + size, w)
    if r1 > r0 and c1 > c0:
        out[r0 - top:r1 - top, c0 - left:c1 - left] = array[r0:r1, c0:c1]
    return out


def _start(lo: float, hi: float, size: int, rng: np.random.Generator) -> int:
    """A random top-left coordinate so that [start, start+size) lies within [lo, hi) when it fits."""
    span = hi - lo - size
    if span <= 0:
        return int(round((lo + hi - size) / 2))
    return int(lo + rng.integers(0, int(span) + 1))


def _clamp(start: int, length: int, size: int) -> int:
    """Keep a crop inside the scan when the scan is large enough to hold it."""
    return start if length < size else min(max(start, 0), length - size)


def _roi_region(r0: float, c0: float, r1: float, c1: float, crop: int, config: TilingConfig):
    """The region around one ROI bounding box (half-open, training pixels) that its crops are drawn from."""
    extent = max(r1 - r0, c1 - c0)
    context = config.roi_context if extent < crop else config.large_roi_context
    half_h = max(context * crop, r1 - r0) / 2
    half_w = max(context * crop, c1 - c0) / 2
    cr, cc = (r0 + r1) / 2, (c0 + c1) / 2
    return cr - half_h, cr + half_h, cc - half_w, cc + half_w, extent


@dataclass
class TrainingScan:
    """One scan and its stored mask resampled once to the training grid: every tile is cut from it."""

    image: np.ndarray  # uint16 on grid.shape
    labels: np.ndarray  # uint8 on grid.shape: 0, 1 = lesion, 2 = ignore
    grid: ScanGrid

    @classmethod
    def resample(cls, pixels: np.ndarray, mask: np.ndarray, grid: ScanGrid) -> "TrainingScan":
        """``pixels`` (float32 in [0, 1]) and ``mask`` (bool or uint8 labels) on the native grid → the training
        grid (:func:`~mammo_seg.data.resolution.resample_image` and ``resample_labels``)."""
        image = image_to_uint16(resample_image(pixels, grid.shape))
        return cls(image, resample_labels(np.asarray(mask, dtype=np.uint8), grid.shape), grid)

    @property
    def per_native(self) -> tuple[float, float]:
        """Training pixels per native pixel along rows and columns (``grid.factor`` up to the rounding of the
        training shape)."""
        (h, w), (th, tw) = self.grid.native_shape, self.image.shape
        return th / h, tw / w

    def tile(self, top: int, left: int, size: int, kind: str) -> Tile:
        """The ``size``-px tile whose top-left is (``top``, ``left``) on the training grid (padded with 0 past
        the scan)."""
        fy, fx = self.per_native
        origin = (int(round(top / fy)), int(round(left / fx)))
        return Tile(extract(self.image, top, left, size), extract(self.labels, top, left, size), origin,
                    max(1, round(size / self.grid.factor)), self.grid.factor, kind)


def is_background(tile: Tile, limit: float, config: TilingConfig) -> bool:
    dark = np.count_nonzero(tile.image <= round(config.background_level * 65535))
    return dark > limit * tile.image.size


def tile_scan(scan: TrainingScan, rois, tile: int, rng: np.random.Generator, config: TilingConfig):
    """Cut ROI-centred and random tiles from one scan on its training grid.

    Args:
        scan: the scan and its stored mask (0 / 1 lesion / 2 ignore: see
            :func:`mammo_seg.data.cases.stored_mask`) on the training grid.
        rois: (r0, c0, r1, c1) half-open bounding boxes on the native grid, one per kept (not ignored)
            abnormality.
        tile: output tile size in pixels.

    Returns the kept tiles and a :class:`TileCounts`.
    """
    h, w = scan.image.shape
    fy, fx = scan.per_native
    tiles, counts = [], TileCounts()
    wanted = []
    for r0, c0, r1, c1 in rois:
        lo_r, hi_r, lo_c, hi_c, extent = _roi_region(r0 * fy, c0 * fx, r1 * fy, c1 * fx, tile, config)
        n = config.roi_crops + (1 if extent > 1.5 * tile else 0)
        for _ in range(n):
            top = _clamp(_start(lo_r, hi_r, tile, rng), h, tile)
            left = _clamp(_start(lo_c, hi_c, tile, rng), w, tile)
            wanted.append((top, left, "roi"))
    for _ in range(config.random_crops):
        wanted.append((_start(0, h, tile, rng), _start(0, w, tile, rng), "random"))
    for top, left, kind in wanted:
        t = scan.tile(top, left, tile, kind)
        limit = config.max_background_roi if kind == "roi" else config.max_background_random
        if is_background(t, limit, config):
            counts.rejected_background += 1
            continue
        setattr(counts, kind, getattr(counts, kind) + 1)
        tiles.append(t)
    return tiles, counts


def full_scan_record(scan: TrainingScan) -> Tile:
    """The whole scan on the training grid (for the whole-scan curriculum stage)."""
    return Tile(scan.image, scan.labels, (0, 0), max(scan.grid.native_shape), scan.grid.factor, "full")
