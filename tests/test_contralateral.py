"""The other breast as a second input channel: placement, pairing, prep, the pipeline, predict."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from mammo_seg.cli import main
from mammo_seg.errors import MammoError

RECIPE = """
name: contra_tiny
seed: 0
prep: {tiles: [], scale: 0.0625, full_scans: true, val_fraction: 0, test_fraction: 0, contralateral: true}
data:
  dir: DATA
  tile: full
  crop: 48
  lesion_share: 0.5
  contralateral: true
  augment: {flips: true, rot90: false, intensity: 0.1, rotate: 15, scale: [0.8, 1.25], brightness: 0.05,
            noise: 0.01, blur: 0.5}
model: {width: 0.125, bn_momentum: 0.9}
loss: {name: iou}
train: {epochs: 1, steps_per_epoch: 2, batch_size: 4, lr: 0.003, checkpoint: last}
cv: {folds: 2}
operating_point: {enabled: true, objective: sensitivity, min_areas_mm2: [0, 20]}
"""


# ------------------------------------------------------------------------------------------------ placement
def test_the_chest_wall_is_on_the_side_with_more_signal():
    from mammo_seg.data.contralateral import chest_wall_on_left

    image = np.zeros((4, 6), np.float32)
    image[:, :2] = 1.0  # 8 on the left half, 0 on the right
    assert chest_wall_on_left(image)
    assert not chest_wall_on_left(image[:, ::-1])
    assert chest_wall_on_left(np.zeros((3, 5), np.uint16))  # a tie: left


def test_fit_keeps_the_top_rows_and_the_chest_wall_columns():
    from mammo_seg.data.contralateral import fit

    image = np.arange(12, dtype=np.float32).reshape(3, 4)  # [[0 1 2 3] [4 5 6 7] [8 9 10 11]]
    np.testing.assert_array_equal(fit(image, (2, 3), left=True), [[0, 1, 2], [4, 5, 6]])
    np.testing.assert_array_equal(fit(image, (2, 3), left=False), [[1, 2, 3], [5, 6, 7]])
    np.testing.assert_array_equal(fit(image, (4, 5), left=True),
                                  [[0, 1, 2, 3, 0], [4, 5, 6, 7, 0], [8, 9, 10, 11, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(fit(image, (3, 6), left=False),
                                  [[0, 0, 0, 1, 2, 3], [0, 0, 4, 5, 6, 7], [0, 0, 8, 9, 10, 11]])


def test_the_other_breast_is_mirrored_and_aligned_at_the_chest_wall():
    from mammo_seg.data.contralateral import contralateral_channel
    from mammo_seg.data.resolution import Resolution

    other = np.array([[0.0, 0.0, 0.2, 0.8, 0.9],
                      [0.0, 0.1, 0.3, 0.7, 0.9],
                      [0.0, 0.0, 0.0, 0.6, 0.8]], np.float32)  # chest wall on the right
    grid = Resolution(scale=1.0, reference_spacing_mm=0.1).grid((3, 5), 0.1, context=("x", "y"), whole=False)
    assert grid.shape == (3, 5)  # the same spacing: resampling changes nothing, so the values are exact
    left = np.zeros((4, 6), np.float32)
    left[:, :3] = 0.5  # a scan with its chest wall on the left: the mirrored pair from its left edge
    np.testing.assert_array_equal(contralateral_channel(left, other, grid),
                                  np.array([[0.9, 0.8, 0.2, 0.0, 0.0, 0.0],
                                            [0.9, 0.7, 0.3, 0.1, 0.0, 0.0],
                                            [0.8, 0.6, 0.0, 0.0, 0.0, 0.0],
                                            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32))
    right = left[:, ::-1]  # chest wall on the right: the mirrored pair from its right edge
    np.testing.assert_array_equal(contralateral_channel(right, other, grid)[:, 1:], np.vstack([other[:, ::-1],
                                                                                             np.zeros((1, 5))]))
    np.testing.assert_array_equal(contralateral_channel(right, other, grid)[:, 0], 0.0)
    grid2 = Resolution(scale=1.0, reference_spacing_mm=0.1).grid((3, 5), 0.2, context=("x", "y"), whole=False)
    assert grid2.shape == (6, 10)  # at twice the spacing the pair is resampled to the scan's millimetres
    assert contralateral_channel(left, other, grid2).shape == (4, 6)


# ------------------------------------------------------------------------------------------------ pairing
def test_mias_images_pair_within_a_woman():
    from data_prep.mias import contralateral_ref

    assert [contralateral_ref(r) for r in ("mdb001", "mdb002", "mdb009", "mdb322")] == \
        ["mdb002", "mdb001", "mdb010", "mdb321"]


def test_predict_pairs_mias_names_and_dicom_headers(tmp_path):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from mammo_seg.inference.pairs import contralateral_files

    def dicom(name, **tags):
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = pydicom.Dataset()
        ds.file_meta = meta
        for key, value in tags.items():
            setattr(ds, key, value)
        path = str(tmp_path / name)
        ds.save_as(path, enforce_file_format=True)
        return path

    for name in ("mdb001.pgm", "mdb002.pgm", "mdb003.pgm", "notes.png"):
        (tmp_path / name).write_bytes(b"")
    study = generate_uid()
    left = dicom("a.dcm", PatientID="W1", StudyInstanceUID=study, ViewPosition="MLO", ImageLaterality="L")
    right = dicom("b.dcm", PatientID="W1", StudyInstanceUID=study, ViewPosition="MLO", ImageLaterality="R")
    cc = dicom("c.dcm", PatientID="W1", StudyInstanceUID=study, ViewPosition="CC", Laterality="R")
    cbis_l = dicom("d.dcm", PatientID="Mass-Test_P_00016_LEFT_CC", StudyInstanceUID=generate_uid(),
                   ViewPosition="CC")
    cbis_r = dicom("e.dcm", PatientID="Mass-Test_P_00016_RIGHT_CC", StudyInstanceUID=generate_uid())
    cbis_mlo = dicom("f.dcm", PatientID="Mass-Test_P_00016_RIGHT_MLO", StudyInstanceUID=generate_uid())
    mias = [str(tmp_path / n) for n in ("mdb001.pgm", "mdb002.pgm", "mdb003.pgm", "notes.png")]
    pairs = contralateral_files(mias + [left, right, cc, cbis_l, cbis_r, cbis_mlo])
    assert pairs == {mias[0]: mias[1], mias[1]: mias[0], mias[2]: None, mias[3]: None,
                     left: right, right: left, cc: None, cbis_l: cbis_r, cbis_r: cbis_l, cbis_mlo: None}
    # two candidates for one side: none is guessed
    twin = dicom("g.dcm", PatientID="W1", StudyInstanceUID=study, ViewPosition="MLO", ImageLaterality="R")
    assert contralateral_files([left, right, twin])[left] is None


# ------------------------------------------------------------------------------------------------ settings
def test_the_settings_are_checked_before_any_work(tmp_path, mias_raw, capsys):
    assert main(["prep", "mias", "--raw", mias_raw, "--out", str(tmp_path / "p"), "--tiles", "96",
                 "--contralateral"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "mammo prep: error: --contralateral: the other breast is stored with whole scans only: add --full-scans (a "
        "recipe's prep: full_scans: true)"]
    assert not (tmp_path / "p").exists()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.replace("DATA", str(tmp_path / "d")).replace("tile: full", "tile: '320'"))
    assert main(["train", "-c", str(recipe), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def contra_data(mias_raw, tmp_path_factory):
    """The phantom MIAS set with mdb004 removed (mdb003 then has no other breast), prepped with its pairs."""
    work = tmp_path_factory.mktemp("contra")
    raw = work / "raw"
    shutil.copytree(mias_raw, raw)
    os.remove(raw / "mdb004.pgm")
    recipe = work / "recipe.yaml"
    data = str(work / "data")
    recipe.write_text(RECIPE.replace("DATA", data))
    assert main(["prep", "mias", "--raw", str(raw), "--out", data, "--config", str(recipe), "--quiet"]) == 0
    return str(recipe), str(raw), data


def test_prep_stores_the_mirrored_other_breast_beside_each_whole_scan(contra_data):
    from mammo_seg.data import features
    from mammo_seg.data.contralateral import contralateral_channel
    from mammo_seg.data.prep_output import Manifest, PrepOutput
    from mammo_seg.data.resolution import PREP, Resolution
    from mammo_seg.io import read_scan

    _, raw, data = contra_data
    assert Manifest.load(os.path.join(data, "full")).contralateral
    records = {r["scan_id"].decode(): r for f in PrepOutput(data).whole_scan_files("train")
               for r in features.iterate_records(f)}
    resolution = Resolution.from_dict(Manifest.load(os.path.join(data, "full")).resolution)
    for ref, other in (("mdb001", "mdb002"), ("mdb002", "mdb001")):
        rec = records[ref]
        scan = read_scan(os.path.join(raw, other + ".pgm"))
        grid = resolution.grid(scan.pixels.shape, scan.meta.spacing_mm, context=PREP)
        expected = features.image_to_uint16(contralateral_channel(rec["image"][..., 0], scan.pixels, grid))
        np.testing.assert_array_equal(rec["contralateral"][..., 0], expected)
        assert rec["contralateral"].any()
    assert not records["mdb003"]["contralateral"].any()  # its pair was removed: a zero channel


def test_the_pipeline_gives_two_channels_moved_alike(contra_data):
    from mammo_seg.data.augment_config import AugmentConfig
    from mammo_seg.data.pipeline import augment, gaussian_blur, make_dataset

    _, _, data = contra_data
    full = os.path.join(data, "full")
    batch = next(iter(make_dataset(full, "train", 4, training=True, crop=48, lesion_share=0.5, contralateral=True,
                                   augmentation=AugmentConfig(flips=True, rotate=15, scale=(0.8, 1.25)))))
    assert batch[0].shape == (4, 48, 48, 2) and batch[1].shape == (4, 48, 48, 1)
    image, mask = next(iter(make_dataset(full, "train", 1, training=False, contralateral=True)))
    assert image.shape[-1] == 2 and mask.shape[-1] == 1
    # geometry: the same flips for every channel and the mask
    planes = tf.constant(np.random.default_rng(0).random((8, 6, 2)), tf.float32)
    labels = tf.constant(np.random.default_rng(1).integers(0, 2, (8, 6, 1)), tf.float32)
    for k in range(4):
        seed = tf.constant([k, 3], tf.int64)
        both, lab = augment(planes, labels, seed, AugmentConfig(flips=True, intensity=0.0))
        one, lab1 = augment(planes[..., :1], labels, seed, AugmentConfig(flips=True, intensity=0.0))
        two, _ = augment(planes[..., 1:], labels, seed, AugmentConfig(flips=True, intensity=0.0))
        np.testing.assert_array_equal(both.numpy(), np.concatenate([one.numpy(), two.numpy()], -1))
        np.testing.assert_array_equal(lab.numpy(), lab1.numpy())
    # blur: each channel alone, as the one-channel blur
    blurred = gaussian_blur(planes, tf.constant(0.7)).numpy()
    for c in (0, 1):
        np.testing.assert_array_equal(blurred[..., c:c + 1], gaussian_blur(planes[..., c:c + 1], tf.constant(0.7)))


@pytest.fixture(scope="module")
def contra_run(contra_data, tmp_path_factory):
    recipe, raw, data = contra_data
    run = str(tmp_path_factory.mktemp("contra_run") / "run")
    assert main(["train", "-c", recipe, "--out", run, "--quiet"]) == 0
    return raw, run


@pytest.mark.slow
def test_predict_uses_the_pair_it_finds_and_says_so(contra_run, tmp_path):
    from mammo_seg.inference.predict import PredictOptions, predict
    from mammo_seg.inference.segment import Segmenter

    raw, run = contra_run
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("mdb001.pgm", "mdb002.pgm", "mdb003.pgm"):
        shutil.copy(os.path.join(raw, name), folder / name)
    options = PredictOptions(threshold=0.5, min_area_mm2=0.0, formats=("mask", "prob", "json"))
    out = tmp_path / "out"
    summary = predict(run, str(folder), str(out), options, progress=False)
    assert summary["counts"]["ok"] == 3
    used = {s["id"]: s["contralateral"] for s in summary["scans"]}
    assert used == {"mdb001": "mdb002.pgm", "mdb002": "mdb001.pgm", "mdb003": None}
    assert json.load(open(out / "mdb001.json"))["contralateral"] == "mdb002.pgm"
    # the Python entry point finds the same pair and gives the same map
    segmenter = Segmenter(run, options)
    result = segmenter(str(folder / "mdb001.pgm"))
    assert segmenter.contralateral == str(folder / "mdb002.pgm")
    np.testing.assert_array_equal(result.probability, np.load(out / "mdb001_prob.npz")["probability"])
    again = segmenter(str(folder / "mdb001.pgm"), contralateral=None)  # None: the folder's pair again
    assert segmenter.contralateral == str(folder / "mdb002.pgm")
    np.testing.assert_array_equal(again.probability, result.probability)
    # the second channel reaches the network: another breast beside the scan changes the map
    other = segmenter(str(folder / "mdb001.pgm"), contralateral=str(folder / "mdb003.pgm"))
    assert segmenter.contralateral == str(folder / "mdb003.pgm")
    assert not np.array_equal(other.probability, result.probability)


def test_training_on_the_other_breast_needs_a_prep_output_that_stored_it(contra_data, tmp_path, capsys):
    recipe, _, data = contra_data
    plain = tmp_path / "plain"
    shutil.copytree(data, plain)
    manifest = plain / "full" / "manifest.json"
    content = json.loads(manifest.read_text())
    del content["config"]["contralateral"]  # as a prep without prep.contralateral writes it
    manifest.write_text(json.dumps(content))
    assert main(["train", "-c", recipe, "--set", f"data.dir={plain}", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "data.contralateral: these whole scans carry no other breast (prep them with prep.contralateral: true)" \
        in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_export_of_a_two_channel_run_serves_the_scan_and_the_other_breast(contra_run, tmp_path):
    from mammo_seg.export import export_model
    from mammo_seg.inference.model import load_model
    from mammo_seg.inference.sliding_window import Predictor

    _, run = contra_run
    info = export_model(run, str(tmp_path / "exported"))
    assert info["channels"] == 2 and info["members"] == 2
    pair = np.random.default_rng(2).random((40, 56, 2)).astype(np.float32)
    served = tf.saved_model.load(str(tmp_path / "exported")).signatures["serving_default"](scan=tf.constant(pair))
    expected = Predictor(load_model(run).models)(pair[None])[0, :, :, 0]
    np.testing.assert_allclose(list(served.values())[0].numpy(), expected, atol=1e-6)


def test_a_continued_run_pairs_with_the_scans_it_finished_before(tmp_path):
    from mammo_seg.inference.predict import _Job, _pair_jobs

    paths = {n: str(tmp_path / f"mdb00{n}.pgm") for n in (1, 2, 3, 4)}
    jobs = [_Job(paths[1], "mdb001", "mdb001.pgm", record={"status": "ok"}, journal=False),  # finished before
            _Job(paths[2], "mdb002", "mdb002.pgm"), _Job(paths[3], "mdb003", "mdb003.pgm"),
            _Job(paths[4], "mdb004", "mdb004.pgm", record={"status": "error"})]  # not a regular file
    _pair_jobs(jobs, str(tmp_path), skipped={}, special={paths[4]: "FIFO"})
    assert [(j.channels, j.pair_source) for j in jobs] == [(2, "mdb002.pgm"), (2, "mdb001.pgm"), (2, None), (2, None)]
