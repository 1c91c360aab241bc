"""DICOM reading with pydicom: header, stored pixels, and the mammogram as a normalised scan.

Order of operations for a scan (DICOM PS3.3 C.11): stored values → modality LUT (rescale slope and
intercept or a LUT) → MONOCHROME1 inversion → min-max to [0, 1]. VOI windows are display settings
and are not applied: they would clip dense tissue and make the network depend on each vendor's
window. Pixel padding (``PixelPaddingValue``) is set to the darkest value before scaling.
"""

from __future__ import annotations

import os

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from mammo_seg.errors import MammoError
from mammo_seg.io.scan import Scan, ScanMeta, normalise

UID_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
)

#: Header fields the dataset index needs; read without touching pixel data.
INDEX_TAGS = ("SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID", "Rows", "Columns",
              "InstanceNumber", "SeriesDescription", "BitsAllocated")


def is_dicom(path: str | os.PathLike) -> bool:
    """True when the file has the DICOM preamble (``DICM`` at byte 128) or a ``.dcm`` suffix."""
    path = str(path)
    if path.lower().endswith(".dcm"):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def read_dicom(path: str | os.PathLike, header_only: bool = False, tags=None) -> pydicom.Dataset:
    """Read a DICOM file; bad files raise :class:`MammoError` naming the file and the reason."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MammoError(path, "file not found")
    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only, specific_tags=tags)
    except InvalidDicomError as e:
        raise MammoError(path, f"not a DICOM file ({e})") from None
    except (EOFError, OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise MammoError(path, f"corrupt or truncated DICOM ({type(e).__name__}: {e})") from None


def stored_pixels(ds: pydicom.Dataset, path: str | os.PathLike) -> np.ndarray:
    """The stored pixel values of a single-frame grayscale image, decoded (compressed syntaxes too)."""
    path = os.fspath(path)
    if "PixelData" not in ds:
        kind = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
        name = getattr(kind, "name", kind) or "unknown SOP class"
        if "Rows" in ds or "Image" in str(name):
            raise MammoError(path, f"truncated DICOM: the file ends before its pixel data ({name})")
        raise MammoError(path, f"DICOM has no pixel data (not an image: {name})")
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise MammoError(path, f"multi-frame DICOM ({ds.NumberOfFrames} frames) is not a 2D mammogram")
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
        raise MammoError(path, f"colour DICOM ({ds.get('PhotometricInterpretation', '?')}) is not a mammogram")
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises many types for broken or truncated pixel data
        raise MammoError(path, f"pixel data cannot be decoded ({type(e).__name__}: {e})") from None
    if arr.ndim != 2:
        raise MammoError(path, f"expected a 2D image, got pixel array of shape {arr.shape}")
    return arr


def _spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            row, col = float(value[0]), float(value[1])
            if row > 0 and col > 0:
                return row, col
    return None


def _laterality(ds: pydicom.Dataset) -> str | None:
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(ds.get(keyword, "") or "").strip().upper()
        if value in ("L", "R"):
            return value
    return None


def dicom_to_scan(ds: pydicom.Dataset, path: str | os.PathLike) -> Scan:
    """Turn a read DICOM dataset into a :class:`Scan` (see the module docstring for the steps)."""
    path = os.fspath(path)
    stored = stored_pixels(ds, path)
    values = apply_modality_lut(stored, ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise MammoError(path, f"photometric interpretation {photometric} is not a grayscale mammogram")
    padding = ds.get("PixelPaddingValue")
    if padding is not None:
        pad_mask = stored == padding
        if pad_mask.any() and not pad_mask.all():
            # the darkest value once displayed: the highest stored value where MONOCHROME1 is inverted
            darkest = values[~pad_mask].max() if photometric == "MONOCHROME1" else values[~pad_mask].min()
            values = np.where(pad_mask, darkest, values)
    pixels, stats = normalise(values, path, invert=photometric == "MONOCHROME1")
    view = str(ds.get("ViewPosition", "") or "").strip().upper() or None
    meta = ScanMeta(
        path=path,
        format="dicom",
        shape=pixels.shape,
        spacing_mm=_spacing(ds),
        laterality=_laterality(ds),
        view=view,
        modality=str(ds.get("Modality", "") or "").strip().upper() or None,
        photometric=photometric,
        bits_stored=int(ds.get("BitsStored", stored.dtype.itemsize * 8)),
        uids={k: str(ds.get(k)) for k in UID_KEYWORDS if ds.get(k)},
        **stats,
    )
    return Scan(pixels, meta)
