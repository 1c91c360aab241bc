"""Which file of ``mammo predict``'s input is a scan's contralateral scan (its *pair*: the same woman's other breast
in the same view), the second input channel of a model trained with ``data.contralateral``. Which scan is whose pair
is decided in :mod:`mammo_seg.data.contralateral`; this module finds them among files:

* mini-MIAS names (``mdb001`` ↔ ``mdb002``), in the same folder;
* CBIS-DDSM, whose DICOMs give each breast view its own ``PatientID`` and study (``Mass-Test_P_00016_LEFT_CC``): the
  same patient number and view, the other side, in any folder (copies of one view under ``Mass-`` and ``Calc-`` are
  one film: the first in path order is taken);
* other DICOM: the same ``PatientID``, ``StudyInstanceUID`` and ``ViewPosition``, the other ``ImageLaterality`` (else
  ``Laterality``); two candidates for one side give none.

A scan with none gets a zero channel, as in training for a scan whose pair the data lacked.
"""

from __future__ import annotations

import os
import re

from mammo_seg.data.contralateral import OTHER_SIDE, cbis_pair_keys, other_mias_ref
from mammo_seg.inference.header_messages import header_warnings
from mammo_seg.io import is_dicom, read_dicom

CBIS_ID = re.compile(r"^(?:Mass|Calc)-(?:Training|Test)_(P_\d+)_(LEFT|RIGHT)_(CC|MLO)$", re.IGNORECASE)
PAIR_TAGS = ("PatientID", "StudyInstanceUID", "ViewPosition", "ImageLaterality", "Laterality")


def contralateral_files(files: list[str]) -> dict[str, str | None]:
    """{scan file: its contralateral scan among ``files``, or None} for every file of ``files``."""
    keys = {path: key for path in files if (key := _pair_key(path)) is not None}
    by_key: dict[tuple, list[str]] = {}
    for path, (own, _) in keys.items():
        by_key.setdefault(own, []).append(path)
    pairs = {}
    for path in files:
        candidates = sorted(by_key.get(keys[path][1], [])) if path in keys else []
        one_film = bool(candidates) and keys[path][1][0] == "cbis"  # copies of one CBIS-DDSM view
        pairs[path] = candidates[0] if len(candidates) == 1 or one_film else None
    return pairs


def _pair_key(path: str) -> tuple[tuple, tuple] | None:
    """(this scan's key, its pair's key), or None when the file says nothing of its side."""
    stem = os.path.splitext(os.path.basename(path))[0]
    other = other_mias_ref(stem)
    if other is not None:
        folder = os.path.dirname(path)
        return ("mias", folder, stem.lower()), ("mias", folder, other)
    if not is_dicom(path):
        return None
    try:
        with header_warnings():
            ds = read_dicom(path, header_only=True, tags=PAIR_TAGS)
    except Exception:  # noqa: BLE001 - an unreadable header pairs with nothing; the scan's own read reports it
        return None
    patient = str(ds.get("PatientID", "") or "").strip()
    cbis = CBIS_ID.match(patient)
    if cbis:
        return cbis_pair_keys(*cbis.groups())
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    side = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").strip().upper()
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    if not (patient and study and view and side in OTHER_SIDE):
        return None
    return ("dicom", patient, study, view, side), ("dicom", patient, study, view, OTHER_SIDE[side])
