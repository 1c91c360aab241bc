"""Patient-level train/val/test splits (``splits.json``).

Every image of a patient lands in one split. Where the dataset has an official split (CBIS-DDSM),
it is kept: a patient with any official test image goes to test with all their images (reported as
``moved_to_test``), and validation is carved from the training patients. Without one (MIAS), the
patients are split at random. Deterministic for a seed: patients are sorted, then permuted.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from mammo_seg.data.cases import Case

SPLITS = ("train", "val", "test")


def _take(n_patients: int, fraction: float) -> int:
    """How many of ``n_patients`` a fraction asks for: at least one when the fraction is > 0 and
    at least two patients are there to split."""
    if fraction <= 0 or n_patients < 2:
        return 0
    return min(n_patients - 1, max(1, round(fraction * n_patients)))


def assign_splits(cases: list[Case], val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[dict[str, str], dict]:
    """Returns ``{scan_id: split}`` and the ``splits.json`` content (the fractions and the seed of
    :class:`mammo_seg.config.PrepSection`, which checks them for the user)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("val and test fractions must be in [0, 1) and sum to less than 1")
    by_patient: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        by_patient[case.patient_id].append(case)
    patients = sorted(by_patient)
    rng = np.random.default_rng(seed)
    official = any(c.official_split for c in cases)
    patient_split, moved = {}, []
    if official:
        pool = []
        for p in patients:
            splits = {c.official_split or "train" for c in by_patient[p]}
            if "test" in splits:
                patient_split[p] = "test"
                if len(splits) > 1:
                    moved.append(p)
            else:
                pool.append(p)
        pool = [pool[i] for i in rng.permutation(len(pool))]
        n_val = _take(len(pool), val_fraction)
        patient_split.update({p: "val" for p in pool[:n_val]})
        patient_split.update({p: "train" for p in pool[n_val:]})
    else:
        order = [patients[i] for i in rng.permutation(len(patients))]
        n_test = _take(len(order), test_fraction)
        n_val = _take(len(order) - n_test, val_fraction)
        for i, p in enumerate(order):
            patient_split[p] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    scan_split = {c.scan_id: patient_split[c.patient_id] for c in cases}
    content = {
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": None if official else test_fraction,
        "official_split": official,
        "moved_to_test": sorted(moved),
        "splits": {s: {"patients": sorted(p for p in patients if patient_split[p] == s),
                       "scans": sorted(c.scan_id for c in cases if scan_split[c.scan_id] == s)}
                   for s in SPLITS},
    }
    return scan_split, content
