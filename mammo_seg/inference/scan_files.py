"""Which files ``mammo predict`` takes from its input, under which ids, and which it screens out: files that
are not regular, DICOMs that are crops or ROI masks of a study (smaller than a quarter of the study's largest
readable image), and, once read, images that are not mammograms."""

from __future__ import annotations

import hashlib
import os
import re
import sys

import numpy as np

from mammo_seg.errors import MammoError, printable
from mammo_seg.inference.header_messages import header_warnings
from mammo_seg.io import MAX_PIXELS, is_dicom, not_a_mammogram, read_dicom, read_scan_with_dataset
from mammo_seg.io.dicom import INDEX_TAGS
from mammo_seg.io.scan import irregular_file

SCAN_SUFFIXES = (".dcm", ".pgm", ".png", ".tif", ".tiff")
UID = re.compile(r"^\d+(\.\d+){3,}$")


def find_scans(path: str) -> tuple[str, list[str], dict[str, str]]:
    """(root, scan files, special files): a file, or every regular scan file below a directory (sorted), and
    ``{path: reason}`` for the names with a scan suffix that are no regular file (a dangling link, a link loop,
    a FIFO, socket or device: :func:`~mammo_seg.io.scan.irregular_file`), which are never opened (a FIFO would
    block the run for ever). Names without a scan suffix that are not DICOM files (notes, other files) are
    ignored."""
    if os.path.isdir(path):
        files, special = [], {}
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                full = os.path.join(root, name)
                reason = irregular_file(full)
                if reason is None and is_scan_file(full, checked=True):
                    files.append(os.path.abspath(full))
                elif reason is not None and name.lower().endswith(SCAN_SUFFIXES):
                    special[os.path.abspath(full)] = reason
        return os.path.abspath(path), files, special
    reason = irregular_file(path)
    if reason is not None:
        raise MammoError(path, "no such file or directory" if reason == "file not found" else reason)
    return os.path.dirname(os.path.abspath(path)), [os.path.abspath(path)], {}


def is_scan_file(path: str, checked: bool = False) -> bool:
    """Whether ``mammo predict`` takes ``path`` from a folder: a regular file (``checked``: known already) with a
    scan suffix, or a DICOM file without any suffix."""
    if not checked and irregular_file(path) is not None:
        return False
    name = os.path.basename(path)
    return name.lower().endswith(SCAN_SUFFIXES) or ("." not in name and is_dicom(path))


#: Longest output id; longer ones are cut and given a hash of the whole id, so they stay unique.
MAX_ID = 100
#: Folder names of the NBIA download of CBIS-DDSM: a study date folder and a numbered series folder.
NBIA_FOLDER = re.compile(r"^(\d{2}-\d{2}-\d{4}-.*|\d+\.\d+-.*)$")

def file_id(path: str, root: str) -> str:
    """The path below ``root`` without its extension, UID and NBIA date/series folders, made file-name
    safe and at most :data:`MAX_ID` characters."""
    parts = os.path.splitext(os.path.relpath(path, root))[0].split(os.sep)
    kept = [p for p in parts[:-1] if not UID.match(p) and not NBIA_FOLDER.match(p)] + parts[-1:]
    scan_id = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(kept)).strip("-_.") or "scan"
    if len(scan_id) > MAX_ID:
        scan_id = scan_id[:MAX_ID - 9] + "-" + hashlib.sha256(scan_id.encode()).hexdigest()[:8]
    return scan_id

def scan_ids(files: list[str], root: str) -> list[str]:
    """Each file's id (:func:`file_id`), numbered where two files would share one."""
    ids, used = [], set()
    for path in files:
        scan_id = base = file_id(path, root)
        n = 2
        while scan_id in used:
            scan_id, n = f"{base}-{n}", n + 1
        used.add(scan_id)
        ids.append(scan_id)
    return ids

class NotFullMammogram(MammoError):
    """A crop or ROI mask beside the full mammograms: skipped unless ``all_images``."""


#: A DICOM with fewer than this fraction of the pixels of its study's largest image is a crop.
CROP_FRACTION = 0.25
CROP_WORDS = ("cropped", "roi mask")

def not_full_mammograms(files: list[str]) -> dict:
    """{path: reason} for the DICOMs whose headers say they are crops or ROI masks, not full mammograms:
    a SeriesDescription naming them (CBIS-DDSM, NBIA), or far fewer pixels than the largest image of
    the same study. Files whose header cannot be read are left to the scan's own error.

    The largest image of a study is the largest one that is itself a scan: its header within the reader's
    pixel limit and its file read successfully (:func:`_readable`, tried only in a study where some image
    would otherwise be a crop). A broken or forged file claiming far more pixels therefore never makes
    the good scans of its study look like crops.
    """
    headers = {}
    for path in files:
        if not is_dicom(path):
            continue
        try:
            with header_warnings():
                ds = read_dicom(path, header_only=True, tags=INDEX_TAGS)
                headers[path] = (str(ds.get("SeriesDescription", "") or "").lower(),
                                 str(ds.get("StudyInstanceUID", "")),
                                 int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0))
        except Exception:
            continue
    by_size: dict[str, list] = {}
    for path, (_, study, pixels) in headers.items():
        by_size.setdefault(study, []).append((pixels, path))
    largest: dict[str, int] = {}

    def largest_scan(study: str) -> int:
        if study not in largest:
            largest[study] = next((pixels for pixels, path in sorted(by_size[study], reverse=True)
                                   if pixels <= MAX_PIXELS and _readable(path)), 0)
        return largest[study]

    skipped = {}
    for path, (description, study, pixels) in headers.items():
        word = next((w for w in CROP_WORDS if w in description), None)
        if word:
            skipped[path] = f"SeriesDescription says {word!r}: not a full mammogram; --all-images includes it"
        elif (study and pixels and pixels < CROP_FRACTION * max(p for p, _ in by_size[study])
              and pixels < CROP_FRACTION * largest_scan(study)):
            skipped[path] = (f"{pixels} pixels, under {CROP_FRACTION:g} of the largest image of its study: a crop, "
                             f"not a full mammogram; --all-images includes it")
    return skipped

def _readable(path: str) -> bool:
    """True when the reader reads ``path`` as a scan (its header messages are kept off the console)."""
    try:
        with header_warnings():
            read_scan_with_dataset(path)
        return True
    except Exception:  # noqa: BLE001 - any failure means the file cannot stand for its study
        return False

def report_skipped(skipped: dict, done: dict, ids: list[str], files: list[str]) -> None:
    """One console line per scan skipped as a crop or ROI mask (not those a continued run already has)."""
    from tqdm import tqdm

    for path, scan_id in zip(files, ids):
        if path in skipped and scan_id not in done:
            tqdm.write(f"skipped: {printable(path)}: {skipped[path]}", file=sys.stderr)


#: Libraries whose warnings and log lines may quote header values (names, dates): never on the console.

def read_checked(path: str, force: bool):
    """The scan (same reader as prep) and its DICOM dataset; refuses what is not a mammogram."""
    scan, dataset = read_scan_with_dataset(path)
    if not force:
        reason = not_a_mammogram(scan.meta)
        if reason:
            raise MammoError(path, f"{reason}; --force runs it anyway")
        if two_grey_levels(scan.pixels):
            raise NotFullMammogram(path, "has only two grey levels: a mask, not a mammogram; --force runs it anyway")
    return scan, dataset


def two_grey_levels(pixels: np.ndarray) -> bool:
    """Whether every pixel of a scan in [0, 1] is 0 or 1 (a mask). A sample of every 16th pixel of every 16th row
    answers first: for a mammogram it finds grey at once, sparing the pass over all pixels (0.007 s for 12 Mpx)."""
    for part in (pixels[::16, ::16], pixels):
        if ((part > 0) & (part < 1)).any():
            return False
    return True
