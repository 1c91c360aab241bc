"""``mammo synth cbis-ddsm``: phantom scans in the exact on-disk format of CBIS-DDSM.

Layout as the TCIA download (``--layout cbis``, the paths the CSVs name)::

    OUT/CBIS-DDSM/Mass-Training_P_00001_LEFT_CC/<StudyUID>/<SeriesUID>/000000.dcm        full mammogram
    OUT/CBIS-DDSM/Mass-Training_P_00001_LEFT_CC_1/<StudyUID>/<SeriesUID>/00000{0,1}.dcm  crop and ROI mask
    OUT/{mass,calc}_case_description_{train,test}_set.csv

or the later NBIA "readable" folders (``--layout nbia``), which no longer match the CSV paths::

    OUT/CBIS-DDSM/Mass-Training_P_00001_LEFT_CC/07-20-2016-DDSM-NA-12345/1.000000-full mammogram images-67890/1-1.dcm

Real quirks reproduced: mass CSVs say ``breast_density``, calc CSVs ``breast density``; the crop and
mask share a series and which instance is the mask differs (mass: 000001, calc: 000000); in some
rows the crop and mask columns are swapped; the path cell ending in ``000001.dcm`` carries a
trailing newline inside its quotes; some masks are stored at a size (and aspect) that does not
match their image; a breast with a mass and a calcification appears as two copies of the same
image (``Mass-…`` and ``Calc-…``, different UIDs); a few images are MONOCHROME1. Every patient has
both views of both breasts, each with one or two abnormalities (CBIS-DDSM holds no normal images).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from mammo_seg.data.cases import bounding_box
from mammo_seg.synthetic import phantom as ph
from mammo_seg.synthetic.dicom import image_dataset, make_uid, save

CSV_COLUMNS = {
    "mass": ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
             "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
             "image file path", "cropped image file path", "ROI mask file path"],
    "calc": ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
             "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
             "image file path", "cropped image file path", "ROI mask file path"],
}
MASS_SHAPE_WORDS = {"round": ["ROUND"], "oval": ["OVAL"], "lobulated": ["LOBULATED"],
                    "irregular": ["IRREGULAR", "IRREGULAR-ARCHITECTURAL_DISTORTION"],
                    "spiculated": ["IRREGULAR", "ARCHITECTURAL_DISTORTION"]}
MASS_MARGIN_WORDS = {"round": ["CIRCUMSCRIBED", "OBSCURED"], "oval": ["CIRCUMSCRIBED", "OBSCURED"],
                     "lobulated": ["MICROLOBULATED", "CIRCUMSCRIBED"], "irregular": ["ILL_DEFINED"],
                     "spiculated": ["SPICULATED", "ILL_DEFINED-SPICULATED"]}
CALC_TYPES = ["AMORPHOUS", "PLEOMORPHIC", "PUNCTATE", "FINE_LINEAR_BRANCHING", "LUCENT_CENTER",
              "ROUND_AND_REGULAR", "COARSE", "NA"]
CALC_DISTRIBUTIONS = ["CLUSTERED", "LINEAR", "SEGMENTAL", "REGIONAL"]
PATHOLOGIES = ["MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"]
REAL_HEIGHT, REAL_WIDTH = (4400, 6000), (2600, 3600)  # native CBIS-DDSM sizes (about 5300 x 3100 on average)
REAL_SPACING_MM = 0.05

# Deterministic cadence of the quirks, so that even a few patients show each of them: the n-th
# item has the quirk when n % EVERY == EVERY // 2 (the first one comes half a period in).
SWAP_EVERY, MISMATCH_EVERY, MONOCHROME1_EVERY, TWO_ABNORMALITIES_EVERY = 7, 23, 11, 7


def _quirk(count: int, every: int) -> bool:
    return count % every == every // 2


@dataclass
class AbnormalitySpec:
    kind: str  # "mass" or "calc"
    shape: str
    size_mm: float
    contrast: float
    pathology: str
    assessment: int
    subtlety: int
    words: tuple[str, str]


def _spec(kind: str, rng: np.random.Generator) -> AbnormalitySpec:
    pathology = PATHOLOGIES[rng.choice(3, p=[0.4, 0.45, 0.15])]
    assessment = int(rng.choice([4, 5]) if pathology == "MALIGNANT" else rng.choice([2, 3, 4]))
    subtlety = int(rng.integers(1, 6))
    if kind == "mass":
        shape = ph.MASS_SHAPES[rng.integers(len(ph.MASS_SHAPES))]
        size = float(np.clip(rng.lognormal(np.log(18), 0.35), 7, 45))
        words = (str(rng.choice(MASS_SHAPE_WORDS[shape])), str(rng.choice(MASS_MARGIN_WORDS[shape])))
        contrast = float(rng.uniform(0.07, 0.13))
    else:
        shape, size, contrast = "cluster", float(rng.uniform(5, 16)), 0.0
        words = (str(rng.choice(CALC_TYPES)), str(rng.choice(CALC_DISTRIBUTIONS)))
    return AbnormalitySpec(kind, shape, size, contrast, pathology, assessment, subtlety, words)


class _Writer:
    def __init__(self, out: str, seed: int, scale: float, layout: str):
        self.out, self.seed, self.scale, self.layout = out, seed, scale, layout
        self.root = os.path.join(out, "CBIS-DDSM")
        self.rows = {(k, s): [] for k in ("mass", "calc") for s in ("Training", "Test")}
        self.counters = {"breasts": 0, "images": 0, "abnormalities": 0, "rows": 0}
        self.rng_names = np.random.default_rng([seed, 99])

    def _nbia_digits(self) -> str:
        return f"{int(self.rng_names.integers(10000, 100000))}"

    def _files(self, folder: str, series_kind: str, n: int):
        """(relative CSV paths, absolute file paths) for ``n`` instances of one series."""
        study, series = make_uid(self.seed, folder, "study"), make_uid(self.seed, folder, series_kind)
        csv_paths = [f"{folder}/{study}/{series}/{i:06d}.dcm" for i in range(n)]
        if self.layout == "cbis":
            disk = [os.path.join(self.root, p) for p in csv_paths]
        else:
            desc = "full mammogram images" if series_kind == "full" else "ROI mask images"
            sub = f"{folder}/07-20-2016-DDSM-NA-{self._nbia_digits()}/1.000000-{desc}-{self._nbia_digits()}"
            disk = [os.path.join(self.root, sub, f"1-{i + 1}.dcm") for i in range(n)]
        return study, series, csv_paths, disk

    def write_image(self, folder, stored, photometric, laterality, view, spacing):
        study, series, csv_paths, disk = self._files(folder, "full", 1)
        ds = image_dataset(stored, patient_id=folder, study_uid=study, series_uid=series,
                           sop_uid=make_uid(self.seed, folder, "sop0"), laterality=laterality[0], view=view,
                           spacing_mm=spacing, photometric=photometric, series_description="full mammogram images")
        save(ds, disk[0])
        return csv_paths[0]

    def write_roi(self, folder, crop, mask, mask_index, laterality, view, spacing):
        study, series, csv_paths, disk = self._files(folder, "roi", 2)
        for i in range(2):
            pixels = mask if i == mask_index else crop
            ds = image_dataset(pixels, patient_id=folder, study_uid=study, series_uid=series,
                               sop_uid=make_uid(self.seed, folder, f"sop{i}"), instance_number=i + 1,
                               laterality=laterality[0], view=view,
                               spacing_mm=spacing, series_description="ROI mask images")
            save(ds, disk[i])
        return csv_paths[1 - mask_index], csv_paths[mask_index]  # (crop, mask)

    def write_csvs(self):
        for (kind, split), rows in self.rows.items():
            name = f"{kind}_case_description_{'train' if split == 'Training' else 'test'}_set.csv"
            with open(os.path.join(self.out, name), "w", newline="") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(CSV_COLUMNS[kind])
                w.writerows(rows)


def _stored(image: np.ndarray, rng: np.random.Generator, monochrome1: bool) -> np.ndarray:
    """Phantom [0, 1] → 16-bit stored values; CBIS-DDSM scans use about half of the 16-bit range."""
    full = 65535 * rng.uniform(0.42, 0.55)
    values = np.round(image * full).astype(np.uint16)
    return (np.uint16(round(full)) - values) if monochrome1 else values


def _mismatched(mask: np.ndarray) -> np.ndarray:
    """The mask at a different size and aspect ratio, as in fjeg/ddsm_tools#5."""
    h, w = mask.shape
    rows = np.minimum((np.arange(round(h * 1.07)) / 1.07).astype(int), h - 1)
    cols = np.minimum((np.arange(round(w * 0.96)) / 0.96).astype(int), w - 1)
    return mask[rows][:, cols]


def write_cbis_ddsm(out: str, patients: int, seed: int = 0, scale: float = 0.25, layout: str = "cbis",
                    progress: bool = True) -> dict:
    """Write ``patients`` phantom patients (4 images each) in CBIS-DDSM's format; returns counts."""
    if patients < 1:
        raise ValueError("patients must be at least 1")
    if layout not in ("cbis", "nbia"):
        raise ValueError(f"layout must be 'cbis' or 'nbia', got {layout!r}")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = _Writer(out, seed, scale, layout)
    numbers = np.sort(rng.choice(np.arange(1, 2000), size=patients, replace=False))
    n_test = 0 if patients == 1 else max(1, round(0.2 * patients))
    test = set(rng.permutation(patients)[:n_test].tolist())
    spacing = REAL_SPACING_MM / scale
    for p, number in enumerate(tqdm(numbers, desc="synth cbis-ddsm", unit="patient", disable=not progress)):
        pid = f"P_{number:05d}"
        split = "Test" if p in test else "Training"
        for side in ("LEFT", "RIGHT"):
            density = int(rng.integers(1, 5))
            kinds = ["mass" if rng.random() < 0.55 else "calc"]
            writer.counters["breasts"] += 1
            if _quirk(writer.counters["breasts"], TWO_ABNORMALITIES_EVERY):  # a mass and a calcification
                kinds.append("calc" if kinds[0] == "mass" else "mass")
            elif writer.counters["breasts"] % TWO_ABNORMALITIES_EVERY == 0:  # two of one kind
                kinds.append(kinds[0])
            specs = [_spec(k, rng) for k in kinds]
            for view in ("CC", "MLO"):
                _write_view(writer, rng, pid, split, side, view, density, specs, spacing, scale)
    writer.write_csvs()
    return {"patients": patients, **writer.counters, "layout": layout, "scale": scale, "spacing_mm": spacing}


def _write_view(writer: _Writer, rng, pid, split, side, view, density, specs, spacing, scale):
    shape = (round(rng.uniform(*REAL_HEIGHT) * scale), round(rng.uniform(*REAL_WIDTH) * scale))
    phantom = ph.make_breast(shape, view, side == "LEFT", spacing, density, rng)
    lesions = []
    for spec in specs:
        if spec.kind == "mass":
            lesions.append(ph.add_mass(phantom, spec.shape, spec.size_mm, spec.contrast, spacing, rng))
        else:
            lesions.append(ph.add_calcification_cluster(phantom, spec.size_mm, spacing, rng))
    ph.add_noise_and_label(phantom, spacing, rng, label=True)
    writer.counters["images"] += 1
    monochrome1 = _quirk(writer.counters["images"], MONOCHROME1_EVERY)
    stored = _stored(phantom.image, rng, monochrome1)
    photometric = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    for kind in sorted({s.kind for s in specs}):
        prefix = f"{'Mass' if kind == 'mass' else 'Calc'}-{split}_{pid}_{side}_{view}"
        image_path = writer.write_image(prefix, stored, photometric, side, view, spacing)
        abn_id = 0
        for spec, lesion in zip(specs, lesions):
            if spec.kind != kind:
                continue
            abn_id += 1
            writer.counters["abnormalities"] += 1
            r0, c0, r1, c1 = _box(lesion.mask, margin=max(2, round(lesion.radius_px * 0.2)))
            crop = stored[r0:r1, c0:c1]
            mask = lesion.mask.astype(np.uint8) * 255
            if _quirk(writer.counters["abnormalities"], MISMATCH_EVERY):
                mask = _mismatched(mask)
            mask_index = 1 if kind == "mass" else 0
            crop_path, mask_path = writer.write_roi(f"{prefix}_{abn_id}", crop, mask, mask_index, side, view,
                                                    spacing)
            writer.counters["rows"] += 1
            if _quirk(writer.counters["rows"], SWAP_EVERY):
                crop_path, mask_path = mask_path, crop_path
            crop_path, mask_path = (p + "\n" if p.endswith("000001.dcm") else p for p in (crop_path, mask_path))
            row = [pid, str(density), side, view, str(abn_id), "mass" if kind == "mass" else "calcification",
                   spec.words[0], spec.words[1], str(spec.assessment), spec.pathology, str(spec.subtlety),
                   image_path, crop_path, mask_path]
            writer.rows[(kind, split)].append(row)


def _box(mask: np.ndarray, margin: int):
    """The lesion's bounding box grown by ``margin`` px, inside the image: the CBIS-style crop."""
    r0, c0, r1, c1 = bounding_box(mask)
    h, w = mask.shape
    return max(0, r0 - margin), max(0, c0 - margin), min(h, r1 + margin), min(w, c1 + margin)
