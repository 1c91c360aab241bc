"""DICOM reading with pydicom: header, stored pixels, and the mammogram as a normalised scan.

Order of operations for a scan (DICOM PS3.3 C.11): stored values → modality LUT (rescale slope and
intercept or a LUT) → MONOCHROME1 inversion → min-max to [0, 1]. VOI windows are display settings
and are not applied: they would clip dense tissue and make the network depend on each vendor's
window. Pixel padding (``PixelPaddingValue``) is set to the darkest value before scaling.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, pixel_array

from mammo_seg.errors import MammoError
from mammo_seg.io.scan import MAX_PIXELS, Scan, ScanMeta, check_pixel_count, check_regular_file, normalise

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


def _refuse_inflation_bomb(path: str, max_pixels: int) -> None:
    """A deflated dataset (the whole file after its meta header is zlib data) must not inflate beyond
    what ``max_pixels`` 32-bit pixels and a header need: pydicom would inflate it all into memory."""
    meta = pydicom.filereader.read_file_meta_info(path)
    if meta.get("TransferSyntaxUID") != pydicom.uid.DeflatedExplicitVRLittleEndian:
        return
    limit = 4 * max_pixels + (1 << 20)
    inflate, size = zlib.decompressobj(-zlib.MAX_WBITS), 0
    with open(path, "rb") as f:
        # the deflated stream starts after the preamble, "DICM" and the group length element
        f.seek(128 + 4 + 12 + int(meta.FileMetaInformationGroupLength))
        for block in iter(lambda: f.read(1 << 16), b""):
            while block:
                size += len(inflate.decompress(block, limit + 1 - size))
                if size > limit:
                    raise MammoError(path, f"deflated DICOM inflates beyond {limit} bytes (decompression bomb)")
                block = inflate.unconsumed_tail


def read_dicom(path: str | os.PathLike, header_only: bool = False, tags=None,
               max_pixels: int = MAX_PIXELS) -> pydicom.Dataset:
    """Read a DICOM file; bad files raise :class:`MammoError` naming the file and the reason."""
    path = os.fspath(path)
    check_regular_file(path)
    try:
        if not header_only:
            _refuse_inflation_bomb(path, max_pixels)
        ds = pydicom.dcmread(path, stop_before_pixels=header_only, specific_tags=tags)
    except InvalidDicomError as e:
        raise MammoError(path, f"not a DICOM file ({e})") from None
    except MammoError:
        raise
    except (EOFError, OSError, ValueError, TypeError, KeyError, AttributeError, zlib.error) as e:
        raise MammoError(path, f"corrupt or truncated DICOM ({type(e).__name__}: {e})") from None
    except Exception as e:  # pydicom's parsers raise many more; their messages may quote header bytes
        raise MammoError(path, f"corrupt or truncated DICOM ({type(e).__name__})") from None
    if not header_only and tags is None and "PixelData" not in ds and _ends_early(ds, path):
        raise MammoError(path, "truncated DICOM: the file ends before its pixel data")
    return ds


def _ends_early(ds: pydicom.Dataset, path: str) -> bool:
    """True when the file stops inside its last element (pydicom keeps the short value silently) or
    right after its meta header. Call it on a freshly read dataset: its last element, still raw, must
    end exactly where the file does.
    """
    if not len(ds):
        return True
    last = ds.get_item(max(ds.keys()))
    tell, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return False
    return tell + length != os.path.getsize(path)


def _header_int(ds: pydicom.Dataset, keyword: str, path: str, default: int | None = None) -> int:
    """An integer attribute of the image header; a value that is not a number is refused by name."""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            if default is None:
                raise MammoError(path, f"DICOM image has no {keyword}")
            return default
        return int(value)
    except (TypeError, ValueError):
        raise MammoError(path, f"{keyword} is not a number") from None


#: The first bytes of compressed pixel data that a file may carry under an uncompressed transfer syntax.
COMPRESSED_MAGIC = ((b"\xff\x4f\xff\x51", "JPEG 2000"), (b"\x00\x00\x00\x0cjP  \r\n", "JPEG 2000 (JP2)"),
                    (b"\xff\xd8\xff", "JPEG"))


def _check_stored_length(ds: pydicom.Dataset, path: str, rows: int, columns: int) -> None:
    """Native (uncompressed) pixel data must hold exactly Rows × Columns values: pydicom would drop
    the excess of a too-small Rows silently. Compressed data under an uncompressed transfer syntax is
    recognised by its first bytes and named as such (not as a truncated file)."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    bits = _header_int(ds, "BitsAllocated", path, 16)
    if syntax is None or syntax.is_compressed or bits % 8:
        return
    expected, actual = rows * columns * bits // 8, len(ds.PixelData)
    codec = next((name for magic, name in COMPRESSED_MAGIC if bytes(ds.PixelData[:len(magic)]) == magic), None)
    if codec and actual != expected:
        raise MammoError(path, f"pixel data is a {codec} stream but the transfer syntax says uncompressed "
                               f"({syntax.name}): the file's transfer syntax is wrong")
    if actual < expected:
        raise MammoError(path, f"truncated DICOM: {actual} bytes of pixel data for the {expected} that "
                               f"{rows} rows x {columns} columns need")
    if actual > expected + expected % 2:
        raise MammoError(path, f"pixel data holds {actual} bytes, more than the {expected} that {rows} rows x "
                               f"{columns} columns need (Rows or Columns is wrong)")


def stored_pixels(ds: pydicom.Dataset, path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The stored pixel values of a single-frame grayscale image, decoded (compressed syntaxes too).

    Its size is checked from the header (Rows × Columns × frames ≤ ``max_pixels``) before decoding.
    """
    path = os.fspath(path)
    if "PixelData" not in ds:
        floating = next((k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds), None)
        if floating:
            raise MammoError(path, f"DICOM holds {floating} (a parametric map's float values), not the stored "
                                   f"integer pixels of a mammogram")
        kind = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
        name = getattr(kind, "name", kind) or "unknown SOP class"
        raise MammoError(path, f"DICOM has no pixel data (not an image: {name})")
    frames = _header_int(ds, "NumberOfFrames", path, 1)
    rows, columns = _header_int(ds, "Rows", path), _header_int(ds, "Columns", path)
    check_pixel_count(path, rows, columns, frames, max_pixels)
    if frames > 1:
        raise MammoError(path, f"multi-frame DICOM ({frames} frames) is not a 2D mammogram")
    if _header_int(ds, "SamplesPerPixel", path, 1) != 1:
        raise MammoError(path, f"colour DICOM ({ds.get('PhotometricInterpretation', '?')}) is not a mammogram")
    _check_stored_length(ds, path, rows, columns)
    try:  # decoded without a copy cached in ``ds``: predict copies the dataset for its SEG and writer processes
        arr = pixel_array(ds)
    except Exception as e:  # pydicom raises many types for broken or truncated pixel data
        raise MammoError(path, f"pixel data cannot be decoded ({type(e).__name__}: {e})") from None
    if arr.ndim != 2:
        raise MammoError(path, f"expected a 2D image, got pixel array of shape {arr.shape}")
    return arr


def _spacing(ds: pydicom.Dataset, path: str) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing; None when neither is there.

    Values that are numbers are returned as they are, even 0, negative or NaN: whether a spacing is
    plausible is decided with the scan's shape in :mod:`mammo_seg.data.resolution`, which refuses it by
    name. A value that is not two numbers is refused here, naming the attribute.
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = ds.get(keyword)
        except Exception:  # pydicom parses DS values on access
            raise MammoError(path, f"{keyword} is not two numbers (row\\column spacing in mm)") from None
        if value is None or value == "":
            continue
        values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
        if len(values) != 2:
            raise MammoError(path, f"{keyword} has {len(values)} value{'s' * (len(values) != 1)}, not two "
                                   f"(row\\column spacing in mm)")
        try:
            return float(values[0]), float(values[1])
        except (TypeError, ValueError):
            raise MammoError(path, f"{keyword} is not two numbers (row\\column spacing in mm)") from None
    return None


def _laterality(ds: pydicom.Dataset) -> str | None:
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(ds.get(keyword, "") or "").strip().upper()
        if value in ("L", "R"):
            return value
    return None


def _check_rescale(ds: pydicom.Dataset, path: str) -> None:
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        try:
            value = ds.get(keyword)
            if value is not None and value != "":
                float(value)
        except (TypeError, ValueError):
            raise MammoError(path, f"{keyword} is not a number") from None


def dicom_to_scan(ds: pydicom.Dataset, path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Scan:
    """Turn a read DICOM dataset into a :class:`Scan` (see the module docstring for the steps)."""
    path = os.fspath(path)
    stored = stored_pixels(ds, path, max_pixels)
    _check_rescale(ds, path)
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
        spacing_mm=_spacing(ds, path),
        laterality=_laterality(ds),
        view=view,
        modality=str(ds.get("Modality", "") or "").strip().upper() or None,
        body_part=str(ds.get("BodyPartExamined", "") or "").strip().upper() or None,
        photometric=photometric,
        bits_stored=int(ds.get("BitsStored", stored.dtype.itemsize * 8)),
        **stats,
    )
    return Scan(pixels, meta)
