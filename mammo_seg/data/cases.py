"""Cases: one scan with its merged lesion mask, as the dataset converters describe them.

A converter (``data_prep.cbis_ddsm``, ``data_prep.mias``) turns a raw dataset into :class:`Case`
objects and :class:`Problem` rows; :func:`load_case` reads the scan and builds the binary mask on
the scan's grid, :func:`stored_mask` the mask prep stores (lesion 1, ignore region 2). Everything here is
plain data, picklable for worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.draw import disk

from mammo_seg.errors import MammoError, printable
from mammo_seg.io import Scan, read_mask, read_scan


#: The abnormality kinds of every dataset (MIAS's CALC is a calcification; CIRC, SPIC and MISC are masses;
#: ARCH an architectural distortion; ASYM an asymmetry): the vocabulary of prep's ``ignore_kinds``.
KINDS = ("mass", "calcification", "architectural_distortion", "asymmetry")


@dataclass(frozen=True)
class Abnormality:
    """One annotated abnormality: a mask file (CBIS-DDSM) or a circle (MIAS)."""

    kind: str  # one of KINDS
    mask_path: str | None = None
    circle: tuple[float, float, float] | None = None  # (x = column, y = row, radius) in pixels, origin top-left
    label: str = ""  # the dataset's own class (MIAS CIRC/SPIC/MISC/CALC/ARCH/ASYM); "" where it is ``kind``

    @property
    def type(self) -> str:
        """The lesion type that evaluation reports sensitivity by."""
        return self.label or self.kind


@dataclass(frozen=True)
class Case:
    scan_id: str
    patient_id: str
    source: str
    scan_path: str
    abnormalities: tuple[Abnormality, ...] = ()
    official_split: str | None = None  # "train"/"test" where the dataset defines one
    # the same woman's other breast in the same view (MIAS: the other image of the pair; CBIS-DDSM: the other
    # side's case), the second input channel of a model trained with ``prep.contralateral``; None: not in the data
    contralateral_path: str | None = None

    @property
    def kinds(self) -> list[str]:
        return sorted({a.kind for a in self.abnormalities})


@dataclass(frozen=True)
class Problem:
    """A bad input item: reported in ``problems.csv`` and on the console, then skipped."""

    file: str
    reason: str
    item: str = ""
    group: str = ""  # problems of one group are one console line (each still a row of problems.csv)

    def line(self) -> str:
        where = f"{self.file} [{self.item}]" if self.item else self.file
        return printable(f"{where}: {self.reason}")


def circle_mask(shape: tuple[int, int], x: float, y: float, radius: float) -> np.ndarray:
    """A filled disc centred on pixel (row = y, col = x), 0-based from the top-left corner.

    Pixel (row, col) is inside when its centre lies within ``radius`` of the centre. (A dataset with
    another origin converts in its converter: ``data_prep.mias`` flips MIAS's bottom-left y.)
    """
    mask = np.zeros(shape, dtype=bool)
    rr, cc = disk((y, x), radius + 1e-9, shape=shape)
    mask[rr, cc] = True
    return mask


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def load_case(case: Case) -> tuple[Scan, np.ndarray, list[tuple[int, int, int, int]]]:
    """Read the scan and merge its abnormalities into one mask.

    Returns the scan, the bool mask and one ROI bounding box per abnormality. Raises
    :class:`MammoError` for an unreadable scan or mask, a mask whose size differs from the scan, or
    an empty mask (an annotation that marks nothing cannot be trusted for the other pixels either).
    """
    scan = read_scan(case.scan_path)
    return (scan, *merged_mask(case, scan.pixels.shape))


def merged_mask(case: Case, shape: tuple[int, int]) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """The union of ``case``'s lesion masks on a scan of ``shape`` and one ROI bounding box per abnormality
    (errors as :func:`load_case`)."""
    merged = np.zeros(shape, dtype=bool)
    rois = []
    for mask in lesion_masks(case, shape):
        merged |= mask
        rois.append(bounding_box(mask))
    return merged, rois


def stored_mask(case: Case, shape: tuple[int, int], ignore_kinds=()) -> tuple[np.ndarray,
                                                                            list[tuple[int, int, int, int]]]:
    """The mask prep stores for ``case`` (uint8: 0 background, :data:`~mammo_seg.data.features.LESION`,
    :data:`~mammo_seg.data.features.IGNORE`) and the ROI bounding boxes of its kept lesions.

    An abnormality whose kind is in ``ignore_kinds`` is an ignore region, not a lesion: it gets no ROI, and
    where it overlaps a kept lesion the lesion wins. Without ``ignore_kinds`` this is :func:`merged_mask`
    as 0/1. Errors as :func:`load_case`.
    """
    from mammo_seg.data.features import IGNORE, LESION

    lesion = np.zeros(shape, dtype=bool)
    ignore = np.zeros(shape, dtype=bool)
    rois = []
    for abn, mask in zip(case.abnormalities, lesion_masks(case, shape)):
        if abn.kind in ignore_kinds:
            ignore |= mask
        else:
            lesion |= mask
            rois.append(bounding_box(mask))
    labels = lesion.astype(np.uint8) * np.uint8(LESION)
    labels[ignore & ~lesion] = IGNORE
    return labels, rois


def lesion_masks(case: Case, shape: tuple[int, int]) -> list[np.ndarray]:
    """One bool mask per abnormality of ``case`` on a scan of ``shape`` (errors as :func:`load_case`)."""
    masks = []
    for abn in case.abnormalities:
        if abn.mask_path is not None:
            mask = read_mask(abn.mask_path)
            if mask.shape != tuple(shape):
                raise MammoError(abn.mask_path, f"mask size {mask.shape[0]}x{mask.shape[1]} does not match "
                                                f"image {shape[0]}x{shape[1]} ({case.scan_id})")
            where = abn.mask_path
        elif abn.circle is None:
            raise MammoError(case.scan_path, f"{abn.kind} of {case.scan_id} has neither a mask file nor a circle")
        else:
            x, y, radius = abn.circle
            if not (0 <= x < shape[1] and 0 <= y < shape[0] and 0 < radius <= max(shape) / 2):
                raise MammoError(case.scan_path, f"{abn.kind} circle x={x}, y={y}, radius={radius} does not fit "
                                                 f"the {shape[1]}x{shape[0]} image ({case.scan_id})")
            mask = circle_mask(shape, x, y, radius)
            where = case.scan_path
        if not mask.any():
            raise MammoError(where, f"{abn.kind} mask of {case.scan_id} is empty")
        masks.append(mask)
    return masks
