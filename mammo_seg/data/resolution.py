"""The training grid: the one place that maps a scan between its original grid and the grid the network sees.

Everything that changes a scan's scale asks this module: prep (tiles and whole scans), predict (the
model input and the probabilities back on the original grid), evaluate (predictions against whole-scan
ground truth) and export (``resolution.json``).

**The scale.** The original cut 598-px windows from CBIS-DDSM scans and resized them to 320 px, a
scale of 320/598 ≈ 0.535. A scale only means something for a given scan resolution, so it is tied
here to the spacing it was defined on (CBIS-DDSM's nominal 50 µm): one training pixel covers
``reference_spacing_mm / scale`` ≈ 93 µm of tissue, whatever the source, and a scan with spacing
``s`` is resampled by ``factor = s / 0.0934``. A lesion therefore appears at the same size in training
tiles and at prediction time.

**The spacing of a scan** (:meth:`Resolution.decide_spacing`), in this order:

1. an explicit override (``mammo predict --spacing MM``), for every scan of the run;
2. the file's PixelSpacing (DICOM), mean of row and column spacing (mammograms have square pixels);
3. the nominal spacing of the training data (``nominal_spacing_mm``: MIAS 200 µm, CBIS-DDSM 50 µm),
   recorded by prep in the manifest and carried by the model, for files that carry no spacing
   (MIAS PGMs, PNG/TIFF, CBIS-DDSM DICOMs without PixelSpacing);
4. otherwise the scan is refused with the reason: guessing would change lesion sizes silently.

A spacing outside :data:`PLAUSIBLE_SPACING_MM` (zero, negative, infinite, or ``50\\50`` written in cm
where mm was meant) is refused too; the override is the way to run such a scan.

**The field of view.** A mammogram's field is bounded by its detector or film: the largest are
24 × 30 cm. A spacing that would make a scan's long side longer than :data:`MAX_FIELD_MM` is wrong for
that scan (a CBIS-DDSM film of 4432 px given MIAS's nominal 200 µm would be an 886-mm breast, seen by the
network at four times its training scale): :meth:`Resolution.grid` refuses it with the reason, rather
than guess. So does a long side under :data:`MIN_FIELD_MM` (5 cm, less than the smallest spot or biopsy
detector): a scan that small is not a mammogram at that spacing (a thumbnail, a 3 × 3 test image).

**Resampling** (:class:`ScanGrid`): images bilinearly with Gaussian anti-aliasing when shrinking;
masks as a coverage fraction thresholded at 0.5 (a pixel is lesion when at least half of the tissue
it covers is), which neither erodes nor dilates the lesion. :func:`resize_image` is scikit-image's
``resize``; :func:`resample_image` gives the same values (to float32 rounding) as one sparse matrix per
axis, about eight times faster on a whole mammogram (0.03 s against 0.27 s for 5000 × 3000 → 0.535): prep
resamples every scan whole with it, once, and predict resamples its network input with it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy import sparse

from mammo_seg.errors import MammoError

DEFAULT_SCALE = 320 / 598
REFERENCE_SPACING_MM = 0.05
PLAUSIBLE_SPACING_MM = (0.02, 1.0)  # mammography detectors and digitisers: 25-200 µm; MIAS 200 µm

#: Longest side (mm) a mammogram's field of view may have: the largest detectors and films are 24 × 30 cm.
MAX_FIELD_MM = 400.0
#: Shortest long side (mm): the smallest (spot-compression) paddles and biopsy detectors are about 5 cm across.
MIN_FIELD_MM = 50.0

#: Who asks for a scan's grid, as the refusal of its field of view says it: (what the nominal spacing is called,
#: what the user can do). Predict can be given the spacing; prep cannot, a file with an impossible field is left out.
PREDICT = ("the model's nominal spacing", "give its pixel spacing with --spacing MM")
PREP = ("the dataset's nominal spacing", "the scan is left out (prep takes no spacing but the file's or the "
                                         "dataset's)")

SPACING_OVERRIDE = "override"
SPACING_HEADER = "PixelSpacing"
SPACING_NOMINAL = "training data nominal"


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with anti-aliasing when shrinking; float32 out."""
    if image.shape == tuple(shape):
        return image.astype(np.float32, copy=False)
    shrinking = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    from skimage.transform import resize  # imported here: prep's workers never need it, and it takes 0.3 s

    out = resize(image.astype(np.float32, copy=False), shape, order=1, mode="edge",
                 anti_aliasing=shrinking, preserve_range=True)
    return out.astype(np.float32, copy=False)


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a stored mask (uint8: 0, :data:`~mammo_seg.data.features.LESION`,
    :data:`~mammo_seg.data.features.IGNORE`): the lesion and the ignore region each as :func:`resize_mask`
    does, the lesion winning where both cover a pixel. A 0/1 mask gives :func:`resize_mask`'s pixels as 0/1."""
    from mammo_seg.data.features import IGNORE, LESION

    lesion = resize_mask(labels == LESION, shape)
    out = lesion.astype(np.uint8)
    out[resize_mask(labels == IGNORE, shape) & ~lesion] = IGNORE
    return out


_BAND = 64  # rows of an image resampled along its columns at a time (resample_image)


@lru_cache(maxsize=32)
def axis_weights(n_in: int, n_out: int, truncate: float = 4.0) -> sparse.csr_array:
    """The ``n_out × n_in`` matrix that resamples one axis as :func:`resize_image` does: when shrinking, the
    Gaussian anti-aliasing filter of scikit-image (σ = (n_in / n_out − 1) / 2, ``truncate`` σ wide, edge
    values repeated), then linear interpolation at output pixel centres (``scipy.ndimage.zoom`` with
    ``grid_mode=True``: output pixel ``i`` samples input coordinate ``(i + ½)·n_in/n_out − ½``, clamped to
    the edge pixels). Every row holds non-negative weights that sum to one."""
    zoom = n_in / n_out
    x = np.clip((np.arange(n_out) + 0.5) * zoom - 0.5, 0, n_in - 1)
    left = np.floor(x).astype(np.int64)
    right = np.minimum(left + 1, n_in - 1)
    w = x - left
    rows = np.arange(n_out)
    weights = sparse.csr_array((np.r_[1 - w, w], (np.r_[rows, rows], np.r_[left, right])), shape=(n_out, n_in))
    sigma = max(0.0, (zoom - 1) / 2)
    if sigma > 1e-15:  # scipy's gaussian_filter skips an axis with no width, as here
        radius = int(truncate * sigma + 0.5)
        offsets = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 / sigma ** 2 * offsets ** 2)
        kernel /= kernel.sum()
        columns = np.clip(np.arange(n_in)[:, None] + offsets[None, :], 0, n_in - 1)
        gauss = sparse.csr_array((np.tile(kernel, n_in), (np.repeat(np.arange(n_in), offsets.size),
                                                         columns.ravel())), shape=(n_in, n_in))
        weights = weights @ gauss
    weights.sum_duplicates()
    weights.eliminate_zeros()
    return weights.astype(np.float32)


def resample_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """:func:`resize_image`'s values (to float32 rounding: a few 1e-7) as ``rows · image · colsᵀ`` with the
    sparse :func:`axis_weights` of each axis; float32 out. The weights are convex, so the values stay in the
    image's range."""
    image = image.astype(np.float32, copy=False)
    if image.shape == tuple(shape):
        return image
    rows, cols = axis_weights(image.shape[0], shape[0]), axis_weights(image.shape[1], shape[1])
    by_rows = rows @ image
    out = np.empty(shape, np.float32)
    for top in range(0, shape[0], _BAND):  # transposing a band at a time stays in the cache: 3x faster whole
        out[top:top + _BAND] = (cols @ np.ascontiguousarray(by_rows[top:top + _BAND].T)).T
    return out


def resample_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """:func:`resize_labels`'s rule (coverage ≥ 0.5 for the lesion and for the ignore region, the lesion winning)
    with :func:`resample_image`'s weights, computed over the rows and columns the labelled pixels reach only
    (the rest of a mask resamples to exact zeros)."""
    from mammo_seg.data.features import IGNORE, LESION

    lesion = _resample_mask(labels == LESION, shape)
    out = lesion.astype(np.uint8)
    ignore = labels == IGNORE
    if ignore.any():
        out[_resample_mask(ignore, shape) & ~lesion] = IGNORE
    return out


def _resample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Coverage ≥ 0.5 of a bool mask, computed between the first and last rows and columns it covers."""
    if mask.shape == tuple(shape):
        return mask.copy()
    out = np.zeros(shape, dtype=bool)
    r = np.flatnonzero(mask.any(axis=1))
    if r.size == 0:
        return out
    c = np.flatnonzero(mask.any(axis=0))
    (r0, r1), (c0, c1) = (r[0], r[-1] + 1), (c[0], c[-1] + 1)
    rows, cols = axis_weights(mask.shape[0], shape[0])[:, r0:r1], axis_weights(mask.shape[1], shape[1])[:, c0:c1]
    reached_rows, reached_cols = _reached(rows), _reached(cols)
    block = mask[r0:r1, c0:c1].astype(np.float32)
    coverage = (cols[reached_cols] @ (rows[reached_rows] @ block).T).T
    out[reached_rows, reached_cols] = coverage >= 0.5
    return out


def _reached(weights: sparse.csr_array) -> slice:
    """The output pixels (rows of banded ``weights``) that draw on any of its input pixels (columns)."""
    hit = np.flatnonzero(np.diff(weights.indptr))
    return slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, 0)


def resize_image_window(image: np.ndarray, shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    """``resize_image(image, shape)[rows, cols]``, the same values, computing that window alone when ``shape``
    enlarges ``image`` (bilinear interpolation at the coordinates ``scipy.ndimage.zoom`` uses for the whole, then
    clipped to the image's range, as ``skimage.transform.resize`` does); otherwise the whole is resized and cut.
    ``rows`` and ``cols`` are slices with steps of one inside ``shape``."""
    image = image.astype(np.float32, copy=False)
    if image.shape == tuple(shape):
        return image[rows, cols]
    if shape[0] < image.shape[0] or shape[1] < image.shape[1]:  # anti-aliased: the filter needs the whole
        return resize_image(image, shape)[rows, cols]
    zoom = np.divide(image.shape, shape)
    r, c = (np.arange(*s.indices(n)[:2], dtype=np.float64) for s, n in zip((rows, cols), shape))
    coordinates = np.meshgrid((r + 0.5) * zoom[0] - 0.5, (c + 0.5) * zoom[1] - 0.5, indexing="ij", copy=False)
    from scipy import ndimage  # as skimage above

    out = ndimage.map_coordinates(image, coordinates, output=np.float32, order=1, mode="nearest")
    lo, hi = np.min(image), np.max(image)
    if np.isnan(lo):
        lo, hi = np.nanmin(image), np.nanmax(image)
    return np.clip(out, lo, hi, out=out)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a binary mask without eroding or dilating it: coverage ≥ 0.5 (see the module docstring).

    A mask without any lesion pixel resizes to one without any, so it is not resampled (the filter and the
    interpolation of zeros give exact zeros): most tiles and scans hold no lesion.
    """
    if mask.shape == tuple(shape):
        return mask.astype(bool)
    if not mask.any():
        return np.zeros(shape, dtype=bool)
    return resize_image(mask.astype(np.float32), shape) >= 0.5


def isotropic_spacing(spacing: tuple[float, float] | float | None) -> float | None:
    """One spacing for a (row, col) pair: their mean (mammograms have square pixels)."""
    if spacing is None:
        return None
    if isinstance(spacing, (int, float)):
        return float(spacing)
    return (float(spacing[0]) + float(spacing[1])) / 2.0


def check_spacing(spacing_mm: float, what: str) -> float:
    """``spacing_mm`` when it is a plausible mammography pixel spacing; else a :class:`MammoError`."""
    lo, hi = PLAUSIBLE_SPACING_MM
    if not (math.isfinite(spacing_mm) and lo <= spacing_mm <= hi):
        raise MammoError(None, f"{what} {spacing_mm:g} mm is outside the plausible range {lo:g}-{hi:g} mm "
                               f"(--spacing MM overrides it)")
    return float(spacing_mm)


def check_field_of_view(native_shape: tuple[int, int], spacing_mm: float, spacing_source: str,
                        whole: bool = True, context: tuple[str, str] = PREDICT) -> None:
    """Refuse a spacing that puts the scan's long side beyond :data:`MAX_FIELD_MM` or, for a ``whole`` mammogram,
    under :data:`MIN_FIELD_MM` (see the module docstring): a 3 × 3 "mammogram" is refused here too, whatever its
    spacing. A crop or ROI image (``whole=False``: ``mammo predict --all-images``) may be smaller. ``context``:
    :data:`PREDICT` or :data:`PREP`, whose words the refusal uses."""
    h, w = native_shape
    long_side = max(h, w) * spacing_mm
    if (MIN_FIELD_MM <= long_side or not whole) and long_side <= MAX_FIELD_MM:
        return
    where = {SPACING_OVERRIDE: "--spacing", SPACING_HEADER: "its PixelSpacing",
             SPACING_NOMINAL: f"{context[0]} (the file has none)"}.get(spacing_source, spacing_source)
    size = f"{h * spacing_mm:.3g} x {w * spacing_mm:.3g} mm" if long_side < 100 else \
        f"{h * spacing_mm:.0f} x {w * spacing_mm:.0f} mm"
    if long_side > MAX_FIELD_MM:
        bound = f"larger than any mammography detector or film (at most {MAX_FIELD_MM:g} mm a side)"
    else:
        bound = f"far outside any mammography detector (at least {MIN_FIELD_MM:g} mm on the long side)"
    raise MammoError(None, f"at {spacing_mm:g} mm ({where}) the {h} x {w} px scan would be {size}, {bound}: "
                           f"{context[1]}")


@dataclass(frozen=True)
class ScanGrid:
    """One scan's two grids: its original ``native_shape`` and the training grid, ``factor`` apart."""

    native_shape: tuple[int, int]
    spacing_mm: float
    spacing_source: str  # SPACING_OVERRIDE, SPACING_HEADER or SPACING_NOMINAL
    factor: float  # training px per native px

    @property
    def shape(self) -> tuple[int, int]:
        """The scan's shape on the training grid."""
        h, w = self.native_shape
        return max(1, round(h * self.factor)), max(1, round(w * self.factor))

    def image_to_training(self, image: np.ndarray) -> np.ndarray:
        """The scan on the training grid, as prep resamples it (:func:`resample_image`): predict's network input."""
        return resample_image(image, self.shape)

    def mask_to_training(self, mask: np.ndarray) -> np.ndarray:
        return resize_mask(mask, self.shape)

    def labels_to_training(self, labels: np.ndarray) -> np.ndarray:
        """A stored mask (0 / lesion / ignore, :func:`resize_labels`) on the training grid."""
        return resize_labels(labels, self.shape)

    def image_to_native(self, image: np.ndarray) -> np.ndarray:
        return resize_image(image, self.native_shape)

    def image_to_native_window(self, image: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        """``image_to_native(image)[rows, cols]``, computed alone where it can be (:func:`resize_image_window`)."""
        return resize_image_window(image, self.native_shape, rows, cols)

    def mask_to_native(self, mask: np.ndarray) -> np.ndarray:
        return resize_mask(mask, self.native_shape)

    def pixel_area_mm2(self, header_spacing=None) -> float:
        """The tissue one pixel of the scan's own grid covers, in mm²: the file's row × column spacing
        (``header_spacing``, its PixelSpacing) when the spacing came from the file, else ``spacing_mm``²."""
        if self.spacing_source == SPACING_HEADER and header_spacing is not None \
                and not isinstance(header_spacing, (int, float)):
            return float(header_spacing[0]) * float(header_spacing[1])
        return self.spacing_mm * self.spacing_mm

    def to_dict(self) -> dict:
        return {"spacing_mm": self.spacing_mm, "spacing_source": self.spacing_source,
                "resampling_factor": self.factor, "model_input_shape": list(self.shape)}


@dataclass(frozen=True)
class Resolution:
    """Training resolution: ``scale`` training px per native px at ``reference_spacing_mm``.

    ``nominal_spacing_mm`` is the spacing assumed for a scan that carries none: the nominal spacing of
    the dataset the model was trained on, recorded by prep (None: such scans are refused).
    """

    scale: float = DEFAULT_SCALE
    reference_spacing_mm: float = REFERENCE_SPACING_MM
    nominal_spacing_mm: float | None = None

    def __post_init__(self):
        if not (self.scale > 0 and math.isfinite(self.scale)) or not self.reference_spacing_mm > 0:
            raise ValueError(f"scale and reference spacing must be positive, got {self}")
        if self.nominal_spacing_mm is not None:
            check_spacing(self.nominal_spacing_mm, "nominal spacing")

    @property
    def spacing_mm(self) -> float:
        """Millimetres covered by one training pixel."""
        return self.reference_spacing_mm / self.scale

    @property
    def pixel_area_mm2(self) -> float:
        """The tissue one training pixel covers, in mm² (the training grid's counterpart of
        :meth:`ScanGrid.pixel_area_mm2`)."""
        return self.spacing_mm * self.spacing_mm

    def factor(self, spacing_mm: float) -> float:
        """Resize factor (training px per native px) for a scan with ``spacing_mm``."""
        return float(spacing_mm) / self.spacing_mm

    def decide_spacing(self, header_spacing, override_mm: float | None = None) -> tuple[float, str]:
        """(spacing in mm, its source) for a scan whose file says ``header_spacing`` (see the module docstring)."""
        if override_mm is not None:
            return check_spacing(float(override_mm), "--spacing"), SPACING_OVERRIDE
        if header_spacing is not None:
            for value in (header_spacing,) if isinstance(header_spacing, (int, float)) else header_spacing:
                check_spacing(float(value), "PixelSpacing")  # each: -0.05\\0.15 must not pass as 0.05
            return check_spacing(isotropic_spacing(header_spacing), "PixelSpacing"), SPACING_HEADER
        if self.nominal_spacing_mm is not None:
            return self.nominal_spacing_mm, SPACING_NOMINAL
        raise MammoError(None, "the file has no pixel spacing and the model records no nominal spacing of its "
                               "training data: give --spacing MM")

    def grid(self, native_shape: tuple[int, int], header_spacing, override_mm: float | None = None,
             whole: bool = True, context: tuple[str, str] = PREDICT) -> ScanGrid:
        """The training grid of a scan of ``native_shape`` whose file says ``header_spacing``; ``whole=False`` for
        a crop or ROI image, which may be smaller than any mammogram (see :func:`check_field_of_view`)."""
        spacing, source = self.decide_spacing(header_spacing, override_mm)
        h, w = (int(v) for v in native_shape)
        check_field_of_view((h, w), spacing, source, whole, context)
        return ScanGrid((h, w), spacing, source, self.factor(spacing))

    def to_dict(self) -> dict:
        return {**asdict(self), "spacing_mm": self.spacing_mm}

    @classmethod
    def from_dict(cls, d: dict) -> "Resolution":
        nominal = d.get("nominal_spacing_mm")
        return cls(scale=float(d["scale"]), reference_spacing_mm=float(d["reference_spacing_mm"]),
                   nominal_spacing_mm=None if nominal is None else float(nominal))
