"""Plain image files (MIAS PGM, 8/16-bit PNG, TIFF) through Pillow."""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

from mammo_seg.errors import MammoError
from mammo_seg.io.scan import MAX_PIXELS, Scan, ScanMeta, check_pixel_count, check_regular_file, normalise


def read_image_array(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The pixel values of a single-channel image file as a 2D array (uint8 or uint16).

    The size in the header is checked against ``max_pixels`` before the pixels are decoded.
    """
    path = os.fspath(path)
    check_regular_file(path)
    try:
        with Image.open(path) as im:
            check_pixel_count(path, im.height, im.width, max_pixels=max_pixels)
            im.load()
            if im.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV"):
                raise MammoError(path, f"colour image (mode {im.mode}) is not a mammogram")
            arr = np.array(im)
    except MammoError:
        raise
    except Image.DecompressionBombError:  # Pillow's own limit, met before ours only if ours is raised
        raise MammoError(path, "image header claims too many pixels (decompression bomb)") from None
    except UnidentifiedImageError:
        raise MammoError(path, "not a readable image file") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise MammoError(path, f"corrupt or truncated image ({e})") from None
    if arr.ndim != 2:
        raise MammoError(path, f"expected a single-channel image, got shape {arr.shape}")
    _check_pgm_maxval(path, arr.shape)
    if arr.dtype == np.int32:  # Pillow's mode "I" for 16-bit files
        arr = arr.astype(np.uint16) if arr.min() >= 0 and arr.max() < 65536 else arr
    return arr


def _check_pgm_maxval(path: str, shape: tuple[int, int]) -> None:
    """A binary PGM (P5) of one byte a sample must hold no value above its header's maxval: Pillow scales
    by 255/maxval and clips, so an 8-bit image under ``maxval 1`` would be read as a mask or a constant."""
    with open(path, "rb") as f:
        head = f.read(512)
    match = _PGM_HEADER.match(head)
    if not match or int(match.group(3)) >= 255:
        return
    maxval = int(match.group(3))
    with open(path, "rb") as f:
        f.seek(match.end())
        data = np.frombuffer(f.read(shape[0] * shape[1]), np.uint8)
    if data.size and int(data.max()) > maxval:
        raise MammoError(path, f"PGM header says maxval {maxval} but its pixels hold values up to {int(data.max())}: "
                               f"header and pixel data disagree")


#: A binary PGM header: magic, width, height and maxval separated by whitespace (comments allowed), then one
#: whitespace byte before the pixels.
_PGM_HEADER = re.compile(rb"P5(?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)\s")


def read_image_scan(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Scan:
    path = os.fspath(path)
    arr = read_image_array(path, max_pixels)
    pixels, stats = normalise(arr, path)
    bits = 8 if arr.dtype == np.uint8 else 16
    meta = ScanMeta(path=path, format="image", shape=pixels.shape, bits_stored=bits, **stats)
    return Scan(pixels, meta)


def write_pgm(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an 8-bit array as a binary (P5) PGM, the MIAS format."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise ValueError("write_pgm takes a 2D uint8 array")
    Image.fromarray(array).save(os.fspath(path), format="PPM")
