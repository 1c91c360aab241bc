"""Ground truth for ``mammo evaluate``: a raw dataset folder (through its converter) or a prep output.

The dataset converters live here, above the library, so ``mammo_seg.evaluate`` takes the truth object
this module builds and never imports ``data_prep``.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np

from data_prep import cbis_ddsm, mias
from data_prep.prepare import CONVERTERS
from mammo_seg.data.cases import lesion_masks
from mammo_seg.data.prep_output import FULL, PrepOutput
from mammo_seg.errors import MammoError
from mammo_seg.evaluate import PrepTruth, Reference, Truth
from mammo_seg.io import file_sha256, read_scan


class RawTruth(Truth):
    """Lesion masks of a raw CBIS-DDSM or MIAS folder, built by its converter, on each scan's own grid."""

    def __init__(self, raw: str, dataset: str):
        self.source = raw
        self.cases, self.problems, _ = CONVERTERS[dataset](raw, progress=False)
        self.by_size = defaultdict(list)
        for case in self.cases:
            self.by_size[os.path.getsize(case.scan_path)].append(case)
        self.digests = {}

    def find(self, digest, size):
        for case in self.by_size.get(size, []):
            if case.scan_path not in self.digests:
                self.digests[case.scan_path] = file_sha256(case.scan_path)
            if self.digests[case.scan_path] == digest:
                shape = read_scan(case.scan_path).pixels.shape
                lesions = lesion_masks(case, shape)
                merged = np.logical_or.reduce(lesions) if lesions else np.zeros(shape, bool)
                return Reference(merged, case.scan_id, lesions, [a.type for a in case.abnormalities],
                                 case.patient_id)
        return None


def ground_truth(path: str) -> Truth:
    """The ground truth in ``path``: a prep output with whole scans, a raw CBIS-DDSM folder or a raw MIAS folder."""
    if not os.path.isdir(path):
        raise MammoError(path, "ground truth directory not found")
    if os.path.isfile(PrepOutput(path).scans_file) or os.path.basename(os.path.normpath(path)) == FULL:
        try:
            return PrepTruth(path)
        except MammoError:
            raise
        except Exception as e:  # noqa: BLE001 - a damaged prep output: one line, not a traceback
            raise MammoError(path, f"unreadable prep output ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                                   f"check it with mammo inspect") from None
    if cbis_ddsm.find_csvs(path):
        return RawTruth(path, "cbis-ddsm")
    if mias.find_info(path):
        return RawTruth(path, "mias")
    raise MammoError(path, "not a prep output (scans.json), a CBIS-DDSM directory (case CSVs) or MIAS (Info.txt)")
