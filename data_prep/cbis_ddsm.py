"""CBIS-DDSM → cases: the four case-description CSVs and the DICOM tree.

Quirks handled (original_pipeline.md §2; ``tests/data/cbis_ddsm_*_sample.csv`` are real rows):

* headers differ (mass ``breast_density``, calc ``breast density``): column names are normalised
  (lower case, ``_`` → space) and every cell is stripped, which also removes the newline inside
  some quoted path cells;
* files are found by DICOM UIDs, not folder names: every DICOM under ``--raw`` is indexed by its
  SeriesInstanceUID (header only), so both the CSV's ``<folder>/<StudyUID>/<SeriesUID>/000000.dcm``
  layout and the later NBIA readable folders (``…/1.000000-full mammogram images-07312/1-1.dcm``)
  work;
* crop and mask columns are swapped in some rows and the instance numbers are inconsistent: the
  mask is the file of the row's ROI series(es) with the image's size (and, when that is not unique,
  8-bit and binary);
* a mask whose size does not match its image (different aspect: resizing would deform the lesion)
  is reported and its **image skipped**, since tiles of that image would show an unlabelled lesion;
* one breast view can appear as a ``Mass-`` and a ``Calc-`` copy: rows are grouped by
  (patient, side, view) and all their masks merged onto one copy, after checking the copies have the
  same size;
* the official train/test split comes from the ``Training``/``Test`` folder prefix;
* a row whose pathology is not one of the three CBIS-DDSM knows (any case, any spacing) or whose abnormality
  id, assessment, subtlety or breast density is not a whole number in its range (NaN, inf, -1) is reported and
  its **image skipped**: the row cannot be trusted, and dropping it alone would leave its lesion unlabelled.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from mammo_seg.data.cases import Abnormality, Case, Problem
from mammo_seg.data.contralateral import cbis_pair_keys
from mammo_seg.errors import MammoError
from mammo_seg.io.dicom import INDEX_TAGS, read_dicom
from mammo_seg.io.scan import irregular_file

SOURCE = "cbis-ddsm"
NOMINAL_SPACING_MM = 0.05  # DDSM scanners: 42-50 µm; used when a file carries no PixelSpacing
REQUIRED = ("patient id", "left or right breast", "image view", "abnormality id", "abnormality type",
            "image file path", "cropped image file path", "roi mask file path")
ABNORMALITY_KIND = {"mass": "mass", "calcification": "calcification"}
UID = re.compile(r"^\d+(\.\d+)+$")
PATHS = ("image file path", "cropped image file path", "roi mask file path")
MAX_PATH = 4096  # longer is no file path: a broken or hostile cell
FOLDER = re.compile(r"^(Mass|Calc)-(Training|Test)_(P_\d+)_(LEFT|RIGHT)_(CC|MLO)(?:_(\d+))?$")
PATHOLOGIES = ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK")
#: The whole-number columns and their (lowest, highest) values; a CSV without the column is not checked.
#: BI-RADS assessment 0-6, DDSM subtlety 1-5 and BI-RADS density 1-4; 0 is let through for the last two: an
#: unusual grade is no sign of a damaged row, and nothing downstream reads these columns.
GRADES = {"abnormality id": (1, None), "assessment": (0, 6), "subtlety": (0, 5), "breast density": (0, 4)}


@dataclass(frozen=True)
class DicomInfo:
    path: str
    series: str
    rows: int
    columns: int
    bits: int
    instance: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.columns


@dataclass(frozen=True)
class Row:
    csv: str
    line: int  # the CSV line where the row starts
    patient: str
    side: str
    view: str
    abnormality_id: str
    kind: str
    image: str
    crop: str
    mask: str
    defect: str = ""  # an unknown pathology or a bad grade: the row's image is skipped

    @property
    def where(self) -> str:
        return f"{self.csv}: line {self.line}"


def find_csvs(raw: str) -> list[str]:
    found = []
    for root, _, files in os.walk(raw):
        found += [os.path.join(root, f) for f in files
                  if f.lower().endswith(".csv") and "case_description" in f.lower()]
    return sorted(found)


def _records(path: str):
    """(first line, fields) per CSV record, or (first line, reason) for a record that cannot be read.

    Line numbers are those of the file (quoted cells may span lines), so a problem names the line a
    user opens. A field over the csv module's limit (128 kB) is reported, not dropped."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        line = 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield line, f"unreadable record ({e})"
            else:
                if fields and any(cell.strip() for cell in fields) or len(fields) > 1:
                    yield line, [cell.strip() for cell in fields]
            line = reader.line_num + 1


def _column(name: str) -> str:
    return " ".join(str(name).strip().lower().replace("_", " ").split())


def _defects(rec: dict) -> list[str]:
    """What is wrong with a row's pathology and whole-number columns (``[]`` when nothing; columns the CSV
    lacks are not checked). NaN, inf, negatives, fractions and text are wrong wherever a grade is expected."""
    bad = []
    if "pathology" in rec and "_".join(rec["pathology"].upper().split()) not in PATHOLOGIES:
        bad.append(f"pathology {rec['pathology'][:40]!r} is not {', '.join(PATHOLOGIES[:-1])} or {PATHOLOGIES[-1]}")
    for column, (low, high) in GRADES.items():
        if column not in rec:
            continue
        try:
            value = float(rec[column])
        except ValueError:
            value = float("nan")
        if not (np.isfinite(value) and value == int(value) and low <= value and (high is None or value <= high)):
            expected = f"from {low} to {high}" if high is not None else f"of at least {low}"
            bad.append(f"{column} {rec[column][:40]!r} is not a whole number {expected}")
    return bad


def read_csv(path: str) -> tuple[list[Row], list[Problem]]:
    """Read one case-description CSV; every malformed record becomes a problem naming its line."""
    problems, rows = [], []
    reason = irregular_file(path)  # never open a FIFO: it would block for ever
    if reason:
        return [], [Problem(path, f"{reason}; skipped")]
    try:
        records = list(_records(path))
    except (UnicodeDecodeError, OSError) as e:
        return [], [Problem(path, f"unreadable CSV ({' '.join(str(e).split())})")]
    if not records or isinstance(records[0][1], str):
        return [], [Problem(path, "unreadable CSV (no header line)")]
    columns = [_column(c) for c in records[0][1]]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        return [], [Problem(path, f"not a CBIS-DDSM case description: missing columns {missing}")]
    for line, fields in records[1:]:
        if isinstance(fields, str):
            problems.append(Problem(path, f"line {line}: {fields}"))
            continue
        if len(fields) != len(columns):
            problems.append(Problem(path, f"line {line}: malformed row with {len(fields)} fields, expected "
                                          f"{len(columns)}: {','.join(fields)[:120]}"))
            continue
        rec = dict(zip(columns, fields))
        kind = ABNORMALITY_KIND.get(rec["abnormality type"].lower())
        checks = [
            (re.fullmatch(r"P_\d+", rec["patient id"]), f"patient id {rec['patient id'][:40]!r}"),
            (rec["left or right breast"].upper() in ("LEFT", "RIGHT"),
             f"side {rec['left or right breast'][:40]!r}"),
            (rec["image view"].upper() in ("CC", "MLO"), f"view {rec['image view'][:40]!r}"),
            (kind is not None, f"abnormality type {rec['abnormality type'][:40]!r}"),
            (rec["image file path"] and rec["roi mask file path"], "empty image or mask path"),
            (all(len(rec[k]) <= MAX_PATH for k in PATHS), f"a file path longer than {MAX_PATH} characters"),
        ]
        bad = [what for ok, what in checks if not ok]
        if bad:
            problems.append(Problem(path, f"line {line}: malformed row ({'; '.join(bad)})"))
            continue
        rows.append(Row(path, line, rec["patient id"], rec["left or right breast"].upper(),
                        rec["image view"].upper(), rec["abnormality id"], kind,
                        *(rec[k].replace("\\", "/") for k in PATHS), defect="; ".join(_defects(rec))))
    return rows, problems


def series_uid(csv_path: str) -> str | None:
    """The SeriesInstanceUID in a CSV path ``<folder>/<StudyUID>/<SeriesUID>/<file>``."""
    uids = [part for part in csv_path.split("/") if UID.match(part)]
    return uids[1] if len(uids) >= 2 else (uids[0] if uids else None)


def index_dicoms(raw: str, progress: bool = True) -> tuple[dict[str, list[DicomInfo]], list[Problem]]:
    """SeriesInstanceUID → its files (headers only); unreadable files become problems."""
    paths = []
    for root, dirs, files in os.walk(raw):
        dirs.sort()
        paths += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(".dcm")]
    index: dict[str, list[DicomInfo]] = {}
    problems = []
    for path in tqdm(paths, desc="index DICOM headers", unit="file", disable=not progress, leave=False):
        try:
            ds = read_dicom(path, header_only=True, tags=list(INDEX_TAGS))
            info = DicomInfo(path, str(ds.SeriesInstanceUID), int(ds.Rows), int(ds.Columns),
                             int(ds.get("BitsAllocated", 16)), int(ds.get("InstanceNumber", 0) or 0))
        except MammoError as e:
            problems.append(Problem(path, e.reason))
            continue
        except (AttributeError, TypeError, ValueError) as e:
            problems.append(Problem(path, f"DICOM header lacks series UID or image size ({e})"))
            continue
        except Exception as e:  # noqa: BLE001 - pydicom raises many types for a corrupt header; one file's problem
            problems.append(Problem(path, f"corrupt DICOM header ({type(e).__name__}: {e})"))
            continue
        index.setdefault(info.series, []).append(info)
    for infos in index.values():
        infos.sort(key=lambda i: (i.instance, i.path))
    return index, problems


def _is_binary(path: str) -> bool:
    from mammo_seg.io.dicom import stored_pixels
    try:
        values = stored_pixels(read_dicom(path), path)
    except Exception:  # noqa: BLE001 - any unreadable candidate is not the mask; prep reports the chosen one
        return False
    return np.unique(values).size <= 2


def _choose_mask(row: Row, image: DicomInfo, index, unreadable: dict | None = None,
                 used: set | None = None) -> tuple[DicomInfo | None, str | None, bool]:
    """The row's mask file, or a reason why there is none; the flag says the CSV had crop/mask swapped.
    An unreadable file in the mask's series is named in the reason (and its series added to ``used``)."""
    named_mask, named_crop = series_uid(row.mask), series_uid(row.crop)
    candidates = []
    for uid in dict.fromkeys(u for u in (named_mask, named_crop) if u):
        candidates += index.get(uid, [])
    fitting = [c for c in candidates if c.shape == image.shape]
    unreadable_uid = next((u for u in (named_mask, named_crop) if u in (unreadable or {})), None)
    if not fitting and unreadable_uid and used is not None:  # the mask is the file that cannot be read
        used.add(unreadable_uid)
        bad = unreadable[unreadable_uid]
        return None, f"ROI mask {bad.file} cannot be read ({bad.reason})", False
    if not candidates:
        return None, f"ROI mask not found (no readable DICOM with series {named_mask})", False
    if not fitting:
        sizes = ", ".join(sorted({f"{c.rows}x{c.columns}" for c in candidates}))
        if len(candidates) == 1:  # the crop alone: the mask file is missing, not of another size
            return None, (f"ROI mask not found (series {candidates[0].series} holds only a {sizes} image, the "
                          f"cropped lesion; no {image.rows}x{image.columns} mask)"), False
        return None, (f"mask size {sizes} does not match image {image.rows}x{image.columns}; image skipped "
                      f"(its lesion would be unlabelled in every tile)"), False
    if len(fitting) > 1:
        binary = [c for c in fitting if c.bits == 8 and _is_binary(c.path)] or \
                 [c for c in fitting if _is_binary(c.path)]
        fitting = binary or fitting
    chosen = fitting[0]
    path = chosen.path.replace(os.sep, "/")  # swaps are only visible where the files keep the CSV's names
    swapped = path.endswith("/" + row.crop) and not path.endswith("/" + row.mask)
    return chosen, None, swapped


def collect_cases(raw: str, progress: bool = True) -> tuple[list[Case], list[Problem], dict]:
    """Turn a CBIS-DDSM directory (CSVs + DICOM tree) into cases, problems and a collection report."""
    csvs = find_csvs(raw)
    if not csvs:
        return [], [Problem(raw, "no CBIS-DDSM case-description CSV (*case_description*.csv) found")], {}
    rows, problems = [], []
    for path in csvs:
        r, p = read_csv(path)
        rows += r
        problems += p
    index, index_problems = index_dicoms(raw, progress)
    unreadable = {uid: p for p in reversed(index_problems)
                  if (uid := series_uid(os.path.relpath(p.file, raw).replace(os.sep, "/")))}
    used: set[str] = set()  # series of unreadable files that a case's line names: no line of their own
    case_problems = []
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.patient, row.side, row.view), []).append(row)
    cases, swapped, skipped = [], 0, 0
    for (patient, side, view), group in sorted(groups.items()):
        scan_id = f"{patient}_{side}_{view}"
        case, reasons, n_swapped = _group_to_case(scan_id, patient, group, index, unreadable, used)
        swapped += n_swapped
        if case is None:
            skipped += 1
            case_problems += reasons
        else:
            cases.append(case)
    cases = with_contralateral(cases)
    problems += [p for p in index_problems if not any(unreadable.get(uid) is p for uid in used)] + case_problems
    report = {"csv_files": [os.path.relpath(c, raw) for c in csvs], "rows": len(rows),
              "dicom_files": sum(len(v) for v in index.values()), "images": len(groups),
              "cases": len(cases), "skipped_images": skipped, "swapped_crop_mask": swapped}
    return cases, problems, report


def with_contralateral(cases: list[Case]) -> list[Case]:
    """``cases``, each with the scan of the same patient's other breast in the same view where the data holds one
    (CBIS-DDSM keeps only the views with an abnormality, so most have none)."""
    keys = {c.scan_id: cbis_pair_keys(c.patient_id, *c.scan_id.rsplit("_", 2)[1:]) for c in cases}
    paths = {keys[c.scan_id][0]: c.scan_path for c in cases}
    return [replace(c, contralateral_path=paths.get(keys[c.scan_id][1])) for c in cases]


def _group_to_case(scan_id, patient, group: list[Row], index, unreadable: dict | None = None,
                   used: set | None = None):
    """All rows of one breast view → a Case, or None and the problems why not.

    ``unreadable`` maps the series UID in an unreadable file's folder path to its problem: a case whose file
    that is names the file and its reason in its own line, and adds the series to ``used``.
    """
    unreadable, used = unreadable or {}, used if used is not None else set()
    defective = [row for row in group if row.defect]
    if defective:  # dropping the row alone would leave its lesion unlabelled on the image
        return None, [Problem(row.csv, f"line {row.line}: {row.defect}; image skipped (its lesion cannot be "
                                       f"trusted, nor left unlabelled)", scan_id) for row in defective], 0
    copies: dict[str, DicomInfo] = {}
    for row in group:
        uid = series_uid(row.image)
        files = index.get(uid, []) if uid else []
        if not files and uid in unreadable:
            used.add(uid)
            bad = unreadable[uid]
            return None, [Problem(bad.file, f"{bad.reason} (the full mammogram of {row.csv} line {row.line})",
                                  scan_id)], 0
        if not files:
            return None, [Problem(row.csv, f"line {row.line}: full mammogram {row.image} not found "
                                           f"(no readable DICOM with series {uid})", scan_id)], 0
        copies.setdefault(row.image, files[0])
    image = copies[sorted(copies)[0]]
    for path, info in copies.items():
        if info.shape != image.shape:
            return None, [Problem(info.path, f"copies of {scan_id} differ in size ({info.rows}x{info.columns} vs "
                                             f"{image.rows}x{image.columns}); image skipped", scan_id)], 0
    abnormalities, problems, swapped = [], [], 0
    seen = set()
    for row in group:
        key = (row.kind, row.abnormality_id, series_uid(row.mask), os.path.basename(row.mask))
        if key in seen:
            continue
        seen.add(key)
        mask, reason, was_swapped = _choose_mask(row, image, index, unreadable, used)
        if mask is None:
            problems.append(Problem(row.csv, f"line {row.line}: {reason}", scan_id))
            continue
        swapped += was_swapped
        abnormalities.append(Abnormality(row.kind, mask_path=mask.path))
    if problems:
        return None, problems, swapped
    split = "test" if any("-Test_" in r.image or r.image.startswith("Test") for r in group) else "train"
    case = Case(scan_id=scan_id, patient_id=patient, source=SOURCE, scan_path=image.path,
                abnormalities=tuple(abnormalities), official_split=split)
    return case, [], swapped
