"""The scan container every reader returns, and the one intensity normalisation."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass

import numpy as np

from mammo_seg.errors import MammoError


#: The most pixels a scan may have (CBIS-DDSM's largest are about 5000 × 3000 = 15 Mpx). Checked from
#: the header, before any pixel is decoded: a forged header cannot make a reader allocate gigabytes.
MAX_PIXELS = 60_000_000


#: What a file that is not regular is, by its ``stat`` mode.
SPECIAL_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                 (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory"))


def irregular_file(path: str) -> str | None:
    """Why ``path`` cannot be read as a file, or None for a regular file (after symlinks): ``file not found``,
    ``dangling link (to <target>)``, ``link loop``, or ``not a regular file (FIFO)`` (socket, character device,
    block device, directory). Only ``stat`` is called: nothing is opened, so a FIFO cannot block the caller."""
    try:
        mode = os.stat(path).st_mode
    except ValueError:  # a NUL byte in the name
        return "file not found"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "link loop"
        if os.path.islink(path):
            with contextlib.suppress(OSError):
                return f"dangling link (to {os.readlink(path)})"
            return "dangling link"
        return "file not found" if e.errno in (errno.ENOENT, errno.ENOTDIR) else f"cannot be examined ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    return f"not a regular file ({next((kind for test, kind in SPECIAL_KINDS if test(mode)), 'unknown kind')})"


def check_regular_file(path: str) -> None:
    """Refuse a path that is not a regular file, saying why (:func:`irregular_file`): opening a FIFO would block
    for ever."""
    reason = irregular_file(path)
    if reason:
        raise MammoError(path, reason)


def check_pixel_count(where: str, rows: int, columns: int, frames: int = 1, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image whose header claims more than ``max_pixels`` pixels."""
    count = rows * columns * frames
    if count > max_pixels:
        raise MammoError(where, f"image of {rows} x {columns}" + (f" x {frames} frames" if frames > 1 else "")
                         + f" = {count} pixels exceeds the limit of {max_pixels} pixels")


@dataclass(frozen=True)
class ScanMeta:
    """What the pipeline needs to know about a scan besides its pixels.

    ``raw_*`` describe the stored values after the modality LUT and before normalisation, so that
    intensity shifts between sources stay visible in manifests. No DICOM UID is kept: the DICOM SEG
    takes its UIDs from the source dataset itself, so none can reach tiles, manifests or logs.
    """

    path: str
    format: str  # "dicom" or "image"
    shape: tuple[int, int]
    spacing_mm: tuple[float, float] | None = None  # (row, column) pixel spacing
    laterality: str | None = None  # "L" or "R"
    view: str | None = None  # "CC", "MLO", ...
    modality: str | None = None
    body_part: str | None = None  # BodyPartExamined, upper case
    photometric: str | None = None
    bits_stored: int | None = None
    raw_min: float = 0.0
    raw_max: float = 0.0
    raw_mean: float = 0.0


#: ViewPosition values of mammography (DICOM PS3.3 C.8.11.7, CID 4014 as ACR MQSA codes).
MAMMOGRAPHY_VIEWS = frozenset({"CC", "MLO", "ML", "LM", "LMO", "SIO", "XCC", "XCCL", "XCCM", "FB", "AT", "CV"})
#: Modalities a mammogram is also found under: "OT" (other, as Secondary Capture exports and digitised films
#: write), "CR" and "DX" (computed and digital radiography), "SC": accepted when the header says breast.
GENERIC_MODALITIES = frozenset({"OT", "CR", "DX", "SC"})


def not_a_mammogram(meta: ScanMeta) -> str | None:
    """Why the header says this scan is no mammogram, or None: Modality MG (whatever the SOP class: CBIS-DDSM's
    are Secondary Capture), no Modality (PGM, PNG, TIFF), or a generic modality (:data:`GENERIC_MODALITIES`) with
    BodyPartExamined BREAST or a mammography ViewPosition are mammograms; CT, MR, US, PT … are not.

    Prep and predict both ask this, so that a scan one refuses the other refuses too."""
    modality = meta.modality
    if modality in (None, "MG"):
        return None
    if modality in GENERIC_MODALITIES and (meta.body_part == "BREAST" or meta.view in MAMMOGRAPHY_VIEWS):
        return None
    return f"is not a mammogram (Modality {modality})"


@dataclass(frozen=True)
class Scan:
    """A mammogram as float32 in [0, 1] on its original grid, bright = dense."""

    pixels: np.ndarray
    meta: ScanMeta


def normalise(values: np.ndarray, where: str, invert: bool = False) -> tuple[np.ndarray, dict]:
    """Min-max scale ``values`` to float32 [0, 1]; ``invert`` flips it (MONOCHROME1 → bright = dense).

    The whole scan is scaled at once, so a tile cut from it and the full scan at prediction time see
    the same intensities. Returns the scaled array and the raw statistics.
    """
    values = np.asarray(values)
    if values.size == 0:
        raise MammoError(where, "image has no pixels")
    lo, hi = float(values.min()), float(values.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise MammoError(where, "image contains NaN or infinite values")
    if hi <= lo:
        raise MammoError(where, f"image is constant (every pixel is {lo:g})")
    out = values.astype(np.float32)  # a copy, scaled in place: no temporary of the scan's size
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    if invert:
        np.subtract(np.float32(1.0), out, out=out)
    stats = {"raw_min": lo, "raw_max": hi, "raw_mean": float(values.mean(dtype=np.float64))}
    return out, stats
