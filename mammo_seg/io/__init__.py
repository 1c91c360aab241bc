"""Reading scans and masks: the one reader used by prep, predict and evaluate.

``read_scan(path)`` returns a :class:`Scan`: float32 pixels in [0, 1] on the original grid, bright =
dense, plus :class:`ScanMeta` (spacing, laterality, view, modality, raw intensity range).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from mammo_seg.errors import MammoError, without_values
from mammo_seg.io.dicom import dicom_to_scan, is_dicom, read_dicom, stored_pixels
from mammo_seg.io.image import read_image_array, read_image_scan
from mammo_seg.io.scan import MAX_PIXELS, Scan, ScanMeta, check_regular_file, normalise, not_a_mammogram

__all__ = ["MAX_PIXELS", "Scan", "ScanMeta", "MammoError", "not_a_mammogram", "read_scan", "read_scan_with_dataset", "read_mask", "binary_mask", "normalise",
           "read_dicom", "is_dicom", "file_sha256"]


def read_scan_with_dataset(path: str | os.PathLike, max_pixels: int = MAX_PIXELS):
    """(:class:`Scan`, its pydicom dataset or None for image files): for writing derived DICOM objects."""
    path = os.fspath(path)
    check_regular_file(path)
    try:
        if is_dicom(path):
            dataset = read_dicom(path, max_pixels=max_pixels)
            return dicom_to_scan(dataset, path, max_pixels), dataset
        return read_image_scan(path, max_pixels), None
    except (MammoError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - pydicom/Pillow raise many types on damaged files: one reason
        message = without_values(e)[:200]
        raise MammoError(path, f"unreadable {'DICOM' if is_dicom(path) else 'image'} "
                               f"({type(e).__name__}{': ' + message if message else ''})") from None


def read_scan(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Scan:
    """Read a mammogram (DICOM, PGM, PNG or TIFF) as a normalised :class:`Scan`; images claiming more
    than ``max_pixels`` pixels are refused from their header, before decoding."""
    return read_scan_with_dataset(path, max_pixels)[0]


def binary_mask(values: np.ndarray, where: str) -> np.ndarray:
    """A stored lesion mask (0/255 or 0/1) as bool; more than two distinct values is an error.

    The distinct values are found from the minimum, the maximum and two counts (linear passes instead of
    ``np.unique``'s sort of every pixel); ``np.unique`` runs only to word the error of a mask that is not binary.
    """
    values = np.asarray(values)
    if values.size == 0:
        levels = values.ravel()
    elif (lo := values.min()) == (hi := values.max()):
        levels = np.array([lo], dtype=values.dtype)
    elif np.count_nonzero(values != lo) == np.count_nonzero(values == hi):  # every value is lo or hi
        levels = np.array([lo, hi], dtype=values.dtype)
    else:  # a third value (or NaN): np.unique words the error
        levels = np.unique(values)
    if levels.size > 2:
        raise MammoError(where, f"mask is not binary ({levels.size} distinct values)")
    if levels.size == 2 and levels[0] != 0:
        raise MammoError(where, f"mask is not binary (values {levels[0]} and {levels[1]}, no zero)")
    return values > 0


def read_mask(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a binary lesion mask (DICOM or image file) as a bool array."""
    path = os.fspath(path)
    if is_dicom(path):
        values = stored_pixels(read_dicom(path, max_pixels=max_pixels), path, max_pixels)
    else:
        values = read_image_array(path, max_pixels)
    return binary_mask(values, path)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file: identifies a scan across copies without any DICOM attribute."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
