"""predict's mask, lesion report and SEG on a fixed phantom and a fixed probability map, pinned: a change that
makes predict faster must leave them as they are (the network is replaced by the map, so that only the work
around it is tested: read, resample, breast region, the probabilities back on the scan's grid, the writers)."""

import hashlib
import json
import os

import numpy as np
from PIL import Image

from conftest import write_dicom
from mammo_seg.data.resolution import Resolution
from mammo_seg.inference import predict as p
from mammo_seg.inference.prediction_output import PredictionOutput

#: sha256 of the mask PNG's pixels (uint8 0/255, row-major) of the phantom below.
MASK_SHA256 = "8ebd68ce508028c6c62b5f1372472d2937b0890c1a48316e193599e013b875ba"
#: The lesion report: the two blobs; the film label's spot (outside the breast) and the 3-px cone (under the
#: minimum area) are dropped.
LESIONS = [{"area_mm2": 20.775, "area_px": 8310, "bbox": [305, 211, 408, 314], "centroid": [355.6, 261.8],
            "max_probability": 0.9497, "mean_probability": 0.7248},
           {"area_mm2": 2.01, "area_px": 804, "bbox": [817, 601, 849, 633], "centroid": [832.3, 616.6],
            "max_probability": 0.7988, "mean_probability": 0.649}]


def phantom() -> np.ndarray:
    """1200 × 900 px at 0.05 mm: grey noise, a dark film border on the left, a bright film label in a dark top
    right corner (not breast: its finding is dropped), two dense blobs."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(800, 1600, (1200, 900)).astype(np.uint16)
    pixels[:, :120] = 0
    pixels[:140, 760:] = 0
    pixels[60:100, 800:860] = 4000
    pixels[300:420, 200:330] += 1500
    pixels[800:860, 600:640] += 1200
    return pixels


def probabilities(shape) -> np.ndarray:
    """Cones of exact float32 values (integer arithmetic, one division): the same map on any machine."""
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    prob = np.zeros(shape, np.float32)
    for row, col, radius, peak in ((190, 140, 40, 0.95), (445, 330, 14, 0.8), (43, 443, 12, 0.9), (300, 300, 3, 0.7)):
        d2 = (rows - row) ** 2 + (cols - col) ** 2
        cone = np.float32(peak) * (np.float32(radius * radius) - d2).astype(np.float32) / np.float32(radius * radius)
        prob = np.maximum(prob, np.clip(cone, 0, 1))
    return prob


def test_mask_lesions_and_seg_of_a_fixed_phantom_and_map_are_pinned(tmp_path):
    import pydicom

    path = str(tmp_path / "scan.dcm")
    write_dicom(path, phantom(), spacing_mm=0.05, laterality="L", view="CC")

    class Loaded:
        resolution = Resolution()

    options = p.PredictOptions(threshold=0.5, min_area_mm2=1.0, flip=False, formats=("mask", "seg", "json"))
    job = p._Job(path, "scan", "scan.dcm")
    p._read(job, Loaded, options)
    assert job.error is None and job.small.shape == (642, 482)
    job.prob = probabilities(job.small.shape)
    os.makedirs(tmp_path / "out")
    record = p._finish(job, PredictionOutput(str(tmp_path / "out")), options, "model")
    assert record["status"] == "ok", record
    mask = np.asarray(Image.open(tmp_path / "out" / "scan_mask.png"))
    lesions = json.load(open(tmp_path / "out" / "scan.json"))["lesions"]
    seg = pydicom.dcmread(tmp_path / "out" / "scan_seg.dcm")
    assert hashlib.sha256(mask.tobytes()).hexdigest() == MASK_SHA256
    assert lesions == LESIONS
    np.testing.assert_array_equal(seg.pixel_array.reshape(mask.shape), mask == 255)
