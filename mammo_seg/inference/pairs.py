"""Which file of ``mammo predict``'s input is a scan's contralateral scan: the same woman's other breast in the
same view, the second input channel of a model trained with ``data.contralateral``
(:mod:`mammo_seg.data.contralateral`).

* mini-MIAS names: ``mdb001`` ↔ ``mdb002``, ``mdb003`` ↔ ``mdb004``, … (the dataset's pairs), in the same folder;
* DICOM: the same ``PatientID``, ``StudyInstanceUID`` and ``ViewPosition``, the other ``ImageLaterality`` (else
  ``Laterality``). CBIS-DDSM gives each breast view its own ``PatientID`` and study
  (``Mass-Test_P_00016_LEFT_CC``): there, the same patient number, set and view, the other side.

A scan with no such file, or with more than one candidate, has none: predict says so and uses a zero channel.
"""

from __future__ import annotations

import os
import re

from mammo_seg.inference.header_messages import header_warnings
from mammo_seg.io import is_dicom, read_dicom

MIAS_NAME = re.compile(r"^mdb(\d{3})$", re.IGNORECASE)
CBIS_ID = re.compile(r"^((?:Mass|Calc)-(?:Training|Test)_P_\d+)_(LEFT|RIGHT)_(CC|MLO)$", re.IGNORECASE)
PAIR_TAGS = ("PatientID", "StudyInstanceUID", "ViewPosition", "ImageLaterality", "Laterality")
OTHER_SIDE = {"L": "R", "R": "L", "LEFT": "RIGHT", "RIGHT": "LEFT"}


def contralateral_files(files: list[str]) -> dict[str, str | None]:
    """{scan file: its contralateral scan among ``files``, or None} for every file of ``files``."""
    keys = {}
    for path in files:
        key = _pair_key(path)
        if key is not None:
            keys[path] = key
    by_key: dict[tuple, list[str]] = {}
    for path, (own, _) in keys.items():
        by_key.setdefault(own, []).append(path)
    pairs = {}
    for path in files:
        candidates = by_key.get(keys[path][1], []) if path in keys else []
        pairs[path] = candidates[0] if len(candidates) == 1 else None
    return pairs


def _pair_key(path: str) -> tuple[tuple, tuple] | None:
    """(this scan's key, its contralateral scan's key), or None when the file says nothing of its side."""
    stem = os.path.splitext(os.path.basename(path))[0]
    mias = MIAS_NAME.match(stem)
    if mias:
        n = int(mias.group(1))
        folder = os.path.dirname(path)
        return ("mias", folder, n), ("mias", folder, n + 1 if n % 2 else n - 1)
    if not is_dicom(path):
        return None
    try:
        with header_warnings():
            ds = read_dicom(path, header_only=True, tags=PAIR_TAGS)
    except Exception:  # noqa: BLE001 - an unreadable header pairs with nothing; the scan's own read reports it
        return None
    patient = str(ds.get("PatientID", "") or "").strip()
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    cbis = CBIS_ID.match(patient)
    if cbis:
        base, side, view = cbis.group(1).upper(), cbis.group(2).upper(), cbis.group(3).upper()
        return ("cbis", base, side, view), ("cbis", base, OTHER_SIDE[side], view)
    side = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").strip().upper()
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    if not (patient and study and view and side in OTHER_SIDE):
        return None
    return ("dicom", patient, study, view, side), ("dicom", patient, study, view, OTHER_SIDE[side])
