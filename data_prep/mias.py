"""MIAS (mini-MIAS) → cases: ``Info.txt`` rows and ``mdbNNN.pgm`` scans.

Info.txt quirks handled (all present in the real file, ``tests/data/mias_info.txt``):

* NORM rows have three fields (and a trailing space); they give negative-only scans;
* several rows for one image (several abnormalities, even of mixed severity: mdb144);
* rows without coordinates: ``*NOTE 3*`` calcifications "widely distributed" and mdb059. Such an
  image is reported and skipped: its lesion cannot be located, so neither positive nor negative
  tiles can be trusted;
* y is measured from the **bottom-left** corner: converted here to the top-left row H - 1 - y that
  :class:`~mammo_seg.data.cases.Case` circles take;
* the prose header of the original file (title, credits, column legend, notes: about 100 lines before
  the table) or the one-line header of the Kaggle copy (``REFNUM BG CLASS SEVERITY X Y RADIUS``): a
  line is a table row when its first word starts with ``mdb``; other lines are text and are skipped;
* a UTF-8 byte-order mark and Windows line endings, as editors save the file.

Consecutive images (mdb001/mdb002, …) are the right and left breast of one woman: the patient id is
``mias_<(n + 1) // 2>`` so that splits never separate them, and each kept image is the other's contralateral scan
(:func:`~mammo_seg.data.contralateral.other_mias_ref`): an image skipped for its Info.txt row is no one's pair, as
predict, given the kept images, finds none either.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

from PIL import Image

from mammo_seg.data.cases import Abnormality, Case, Problem
from mammo_seg.data.contralateral import other_mias_ref
from mammo_seg.io.scan import irregular_file

SOURCE = "mias"
NOMINAL_SPACING_MM = 0.2  # mini-MIAS: 50 µm scans reduced to 200 µm
BACKGROUNDS = {"F", "G", "D"}
CLASS_KIND = {"CALC": "calcification", "CIRC": "mass", "SPIC": "mass", "MISC": "mass",
              "ARCH": "architectural_distortion", "ASYM": "asymmetry", "NORM": None}
REF = re.compile(r"^mdb\d{3}$")
INFO_NAMES = ("info.txt", "mias_info.txt")


@dataclass(frozen=True)
class InfoRow:
    line_number: int
    ref: str
    background: str
    cls: str
    severity: str | None = None
    x: int | None = None
    y: int | None = None
    radius: int | None = None

    @property
    def has_coordinates(self) -> bool:
        return self.x is not None


def parse_info(path: str) -> tuple[list[InfoRow], list[Problem]]:
    """Parse Info.txt; malformed lines become problems and are skipped."""
    rows, problems = [], []
    reason = irregular_file(path)  # never open a FIFO: it would block for ever
    if reason:
        return [], [Problem(path, reason)]
    # utf-8-sig: a byte-order mark (how editors on Windows save it) is not part of the first line;
    # Windows (CRLF) and old Mac (CR) line endings are read as line ends
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens or not tokens[0].lower().startswith("mdb"):
                continue  # the prose header, the Kaggle header line, blank lines
            try:
                rows.append(_parse_tokens(number, tokens))
            except ValueError as e:
                problems.append(Problem(path, f"line {number}: {e}: {line.strip()!r}"))
    return rows, problems


def _parse_tokens(number: int, tokens: list[str]) -> InfoRow:
    ref, *rest = tokens
    if not REF.match(ref.lower()):
        raise ValueError(f"reference {ref!r} is not mdbNNN")
    if len(rest) < 2:
        raise ValueError("expected at least reference, background and class")
    bg, cls, rest = rest[0].upper(), rest[1].upper(), rest[2:]
    if bg not in BACKGROUNDS:
        raise ValueError(f"background tissue {bg!r} is not F, G or D")
    if cls not in CLASS_KIND:
        raise ValueError(f"class {cls!r} is not one of {', '.join(CLASS_KIND)}")
    if cls == "NORM":
        if rest:
            raise ValueError("a NORM row takes no severity or coordinates")
        return InfoRow(number, ref, bg, cls)
    if not rest or rest[0].upper() not in ("B", "M"):
        raise ValueError("abnormal row without severity B or M")
    severity, coords = rest[0].upper(), rest[1:]
    if not coords or coords[0].startswith("*"):
        return InfoRow(number, ref, bg, cls, severity)
    if len(coords) != 3:
        raise ValueError(f"expected x, y and radius, got {len(coords)} values")
    try:
        x, y, radius = (int(v) for v in coords)
    except ValueError:
        raise ValueError("x, y and radius must be integers") from None
    if x < 0 or y < 0 or radius <= 0:
        raise ValueError("x and y must be ≥ 0 and the radius > 0")
    return InfoRow(number, ref, bg, cls, severity, x, y, radius)


def _image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from the image header, or None for an unreadable image (left to prep to report)."""
    try:
        if irregular_file(path):  # never open a FIFO; prep reports the case
            return None
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - read and reported per case by prep
        return None


def _outside(size: tuple[int, int], rows: list[InfoRow]) -> str | None:
    """Why a row's circle does not fit an image of ``size`` (centre outside it, or a radius over half its
    larger side: such a disc labels most of the scan), or None."""
    width, height = size
    for r in rows:
        if r.x >= width or r.y >= height:
            return (f"line {r.line_number}: centre x={r.x}, y={r.y} is outside the {width}x{height} image; "
                    f"image skipped")
        if r.radius > max(width, height) / 2:
            return (f"line {r.line_number}: radius {r.radius} exceeds half the {width}x{height} image; "
                    f"image skipped")
    return None


def top_left_circle(row: InfoRow, height: int) -> tuple[int, int, int]:
    """(x, y, radius) of a row's circle with y from the top row, as :class:`Case` takes it: MIAS measures y from
    the bottom-left corner, so pixel row = H - 1 - y."""
    return row.x, height - 1 - row.y, row.radius


def find_info(raw: str) -> str | None:
    for root, _, files in sorted(os.walk(raw)):
        for name in sorted(files):
            if name.lower() in INFO_NAMES:
                return os.path.join(root, name)
    return None


def collect_cases(raw: str, progress: bool = True) -> tuple[list[Case], list[Problem], dict]:
    """Turn a MIAS directory (PGMs + Info.txt) into cases, problems and a collection report."""
    info = find_info(raw)
    if info is None:
        return [], [Problem(raw, "no Info.txt found (the MIAS annotation list)")], {}
    rows, problems = parse_info(info)
    images = {}
    for root, _, files in os.walk(raw):
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() == ".pgm" and REF.match(stem.lower()):
                images.setdefault(stem.lower(), os.path.join(root, name))
    by_ref: dict[str, list[InfoRow]] = {}
    for row in rows:
        by_ref.setdefault(row.ref, []).append(row)
    cases, skipped_no_coords = [], 0
    for ref in sorted(by_ref):
        refs_rows = by_ref[ref]
        path = images.get(ref)
        if path is None:
            problems.append(Problem(info, f"line {refs_rows[0].line_number}: image {ref}.pgm not found", ref,
                                    group="images listed in Info.txt not found"))
            continue
        abnormal = [r for r in refs_rows if r.cls != "NORM"]
        if any(r.cls == "NORM" for r in refs_rows) and abnormal:
            problems.append(Problem(info, f"{ref} is listed both as NORM and abnormal; skipped", ref))
            continue
        missing = [r for r in abnormal if not r.has_coordinates]
        if missing:
            skipped_no_coords += 1
            lines = ", ".join(str(r.line_number) for r in missing)
            problems.append(Problem(info, f"line {lines}: {ref} {missing[0].cls} has no coordinates; "
                                          f"image skipped (its lesion cannot be located)", ref))
            continue
        size = _image_size(path)  # None: unreadable; prep reports it when reading, so no circle is placed
        outside = _outside(size, abnormal) if size else None
        if outside:
            problems.append(Problem(info, outside, ref))
            continue
        abnormalities = tuple(Abnormality(CLASS_KIND[r.cls], circle=top_left_circle(r, size[1]) if size else None,
                                          label=r.cls) for r in abnormal)
        n = int(ref[3:])
        cases.append(Case(scan_id=ref, patient_id=f"mias_{(n + 1) // 2:03d}", source=SOURCE, scan_path=path,
                          abnormalities=abnormalities))
    kept = {c.scan_id: c.scan_path for c in cases}
    cases = [replace(c, contralateral_path=kept.get(other_mias_ref(c.scan_id))) for c in cases]
    listed = set(by_ref)
    unlisted = sorted(set(images) - listed)
    for ref in unlisted:
        problems.append(Problem(images[ref], "image is not listed in Info.txt; skipped", ref))
    report = {"info_file": os.path.relpath(info, raw), "rows": len(rows), "images_listed": len(by_ref),
              "cases": len(cases), "normal_cases": sum(not c.abnormalities for c in cases),
              "skipped_without_coordinates": skipped_no_coords}
    return cases, problems, report
