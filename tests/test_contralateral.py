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
    # a scan with its chest wall on the right, as the pair's: the pair is not mirrored, and fits from the right
    right = left[:, ::-1]
    np.testing.assert_array_equal(contralateral_channel(right, other, grid),
                                  np.vstack([np.hstack([np.zeros((3, 1), np.float32), other]),
                                             np.zeros((1, 6), np.float32)]))
    grid2 = Resolution(scale=1.0, reference_spacing_mm=0.1).grid((3, 5), 0.2, context=("x", "y"), whole=False)
    assert grid2.shape == (6, 10)  # at twice the spacing the pair is resampled to the scan's millimetres
    assert contralateral_channel(left, other, grid2).shape == (4, 6)


# ------------------------------------------------------------------------------------------------ pairing
def test_mias_images_pair_within_a_woman_and_cbis_views_across_its_copies():
    from data_prep.cbis_ddsm import with_contralateral
    from mammo_seg.data.cases import Case
    from mammo_seg.data.contralateral import cbis_pair_keys, other_mias_ref

    assert [other_mias_ref(r) for r in ("mdb001", "mdb002", "MDB009", "mdb322", "scan7")] == \
        ["mdb002", "mdb001", "mdb010", "mdb321", None]
    assert cbis_pair_keys("P_00016", "left", "cc") == (("cbis", "P_00016", "LEFT", "CC"),
                                                       ("cbis", "P_00016", "RIGHT", "CC"))
    cases = [Case(f"P_0000{p}_{side}_{view}", f"P_0000{p}", "cbis-ddsm", f"/d/{p}{side}{view}.dcm")
             for p, side, view in ((1, "LEFT", "CC"), (1, "RIGHT", "CC"), (1, "RIGHT", "MLO"), (2, "LEFT", "CC"))]
    assert [c.contralateral_path for c in with_contralateral(cases)] == ["/d/1RIGHTCC.dcm", "/d/1LEFTCC.dcm", None,
                                                                          None]


def test_prep_pairs_only_the_mias_images_it_keeps(tmp_path):
    from data_prep.mias import collect_cases

    for n in range(1, 5):
        (tmp_path / f"mdb00{n}.pgm").write_bytes(b"P5 4 4 255\n" + bytes(16))
    (tmp_path / "Info.txt").write_text("mdb001 G NORM \nmdb002 G NORM \nmdb003 G CALC B\nmdb004 G NORM \n")
    cases, problems, _ = collect_cases(str(tmp_path), progress=False)
    pairs = {c.scan_id: c.contralateral_path and os.path.basename(c.contralateral_path) for c in cases}
    assert pairs == {"mdb001": "mdb002.pgm", "mdb002": "mdb001.pgm", "mdb004": None}  # mdb003 skipped: no pair
    assert [p.item for p in problems] == ["mdb003"]


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
    cbis_r = dicom("e.dcm", PatientID="Calc-Test_P_00016_RIGHT_CC", StudyInstanceUID=generate_uid())  # other set
    cbis_mlo = dicom("f.dcm", PatientID="Mass-Test_P_00016_RIGHT_MLO", StudyInstanceUID=generate_uid())
    cbis_copy = dicom("f2.dcm", PatientID="Mass-Test_P_00016_RIGHT_CC", StudyInstanceUID=generate_uid())
    mias = [str(tmp_path / n) for n in ("mdb001.pgm", "mdb002.pgm", "mdb003.pgm", "notes.png")]
    pairs = contralateral_files(mias + [left, right, cc, cbis_l, cbis_r, cbis_mlo])
    assert pairs == {mias[0]: mias[1], mias[1]: mias[0], mias[2]: None, mias[3]: None,
                     left: right, right: left, cc: None, cbis_l: cbis_r, cbis_r: cbis_l, cbis_mlo: None}
    # a CBIS-DDSM view under a Mass- and a Calc- copy is one film: the first in path order
    assert contralateral_files([cbis_l, cbis_r, cbis_copy])[cbis_l] == cbis_r
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
    assert np.count_nonzero(batch[0][..., 1]) > 0.2 * batch[0][..., 1].numpy().size  # the pair reaches training
    from mammo_seg.data import features
    from mammo_seg.data.prep_output import PrepOutput

    stored = [r["contralateral"][..., 0] for f in PrepOutput(data).whole_scan_files("train")
              for r in features.iterate_records(f)]
    images = [x[0].numpy() for x, _ in make_dataset(full, "train", 1, training=False, contralateral=True)]
    assert len(images) == len(stored) and images[0].shape[-1] == 2
    for image, other in zip(images, stored):  # evaluation sees the stored pair, scaled as the scan is
        np.testing.assert_array_equal(image[..., 1], other.astype(np.float32) / features.IMAGE_MAX)
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
    (folder / "mdb006.pgm").write_bytes(b"P5 broken")  # the pair of mdb005: unreadable
    shutil.copy(os.path.join(raw, "mdb005.pgm"), folder / "mdb005.pgm")
    options = PredictOptions(threshold=0.5, min_area_mm2=0.0, formats=("mask", "prob", "json"))
    out = tmp_path / "out"
    summary = predict(run, str(folder), str(out), options, progress=False)
    assert summary["counts"]["ok"] == 4 and summary["counts"]["failed"] == 1  # mdb006 itself
    assert summary["counts"]["without_contralateral"] == 2
    used = {s["id"]: s.get("contralateral") for s in summary["scans"] if s["status"] == "ok"}
    assert used == {"mdb001": "mdb002.pgm", "mdb002": "mdb001.pgm", "mdb003": None, "mdb005": None}
    assert json.load(open(out / "mdb001.json"))["contralateral"] == "mdb002.pgm"
    record = json.load(open(out / "mdb005.json"))
    assert record["contralateral"] is None
    assert any("contralateral scan mdb006.pgm not used" in note for note in record["warnings"]), record
    # a single file: its pair is looked for in its folder
    one = predict(run, str(folder / "mdb002.pgm"), str(tmp_path / "one"), options, progress=False)
    assert [s["contralateral"] for s in one["scans"]] == ["mdb001.pgm"]
    assert open(tmp_path / "one" / "mdb002_mask.png", "rb").read() == open(out / "mdb002_mask.png", "rb").read()
    # the Python entry point finds the same pair and gives the same map
    segmenter = Segmenter(run, options)
    result = segmenter(str(folder / "mdb001.pgm"))
    assert segmenter.contralateral == str(folder / "mdb002.pgm")
    np.testing.assert_array_equal(result.probability, np.load(out / "mdb001_prob.npz")["probability"])
    # the second channel reaches the network: another breast beside the scan changes the map
    other = segmenter(str(folder / "mdb001.pgm"), contralateral=str(folder / "mdb003.pgm"))
    assert segmenter.contralateral == str(folder / "mdb003.pgm")
    assert not np.array_equal(other.probability, result.probability)
    alone = segmenter(str(folder / "mdb003.pgm"))  # no pair in the folder: as predict, a zero channel
    assert segmenter.contralateral is None
    np.testing.assert_array_equal(alone.probability, np.load(out / "mdb003_prob.npz")["probability"])
    zero = segmenter(str(folder / "mdb001.pgm"), contralateral=None)  # a zero channel on purpose
    assert segmenter.contralateral is None and not np.array_equal(zero.probability, result.probability)
    broken = segmenter(str(folder / "mdb005.pgm"))
    assert segmenter.contralateral is None and "not used" in segmenter.note
    np.testing.assert_array_equal(broken.probability, np.load(out / "mdb005_prob.npz")["probability"])


def test_a_one_channel_model_starts_a_two_channel_one_as_the_same_function_of_the_scan(tmp_path):
    from mammo_seg.models.fcn import MammoFCN
    from mammo_seg.training.run import transfer_weights

    one = MammoFCN(width=0.125, resolution={"scale": 0.25, "reference_spacing_mm": 0.05})
    one.save(tmp_path / "one.keras")
    two = MammoFCN(width=0.125, channels=2, resolution={"scale": 0.25, "reference_spacing_mm": 0.05})
    assert transfer_weights(two, str(tmp_path / "one.keras")) == len([la for la in one.layers if la.weights])
    kernel = two.get_layer("conv0_1").get_weights()[0]
    np.testing.assert_array_equal(kernel[:, :, :1], one.get_layer("conv0_1").get_weights()[0])
    np.testing.assert_array_equal(kernel[:, :, 1:], 0.0)
    scan = np.random.default_rng(0).random((1, 64, 64, 1)).astype(np.float32)
    other = np.random.default_rng(1).random((1, 64, 64, 1)).astype(np.float32)
    np.testing.assert_allclose(two(np.concatenate([scan, other], -1)).numpy(), one(scan).numpy(), atol=1e-5)
    wider = MammoFCN(width=0.25, channels=2, resolution={"scale": 0.25, "reference_spacing_mm": 0.05})
    with pytest.raises(MammoError, match="other shapes"):
        transfer_weights(wider, str(tmp_path / "one.keras"))


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
    card = json.load(open(os.path.join(run, "model_card.json")))
    assert any("other breast" in limit for limit in card["known_limits"])
    info = export_model(run, str(tmp_path / "exported"))
    assert info["channels"] == 2 and info["members"] == 2
    assert any("other breast" in limit for limit in json.load(open(tmp_path / "exported" / "model_card.json"))[
        "known_limits"])
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


def test_a_one_channel_segmenter_refuses_a_pair(model_file, tmp_path):
    from mammo_seg.inference.segment import PredictOptions, Segmenter

    segmenter = Segmenter(model_file, PredictOptions(threshold=0.5, min_area_mm2=0.0))
    assert segmenter.contralateral is None
    with pytest.raises(ValueError, match="one input channel"):
        segmenter(str(tmp_path / "mdb001.pgm"), contralateral=str(tmp_path / "mdb002.pgm"))


def test_a_two_channel_model_covers_a_scan_in_strips_and_windows_as_in_one_pass():
    from mammo_seg.inference.sliding_window import Predictor, activation_bytes, predict_probabilities
    from mammo_seg.models.fcn import MammoFCN

    model = MammoFCN(width=0.125, channels=2, resolution={"scale": 0.25, "reference_spacing_mm": 0.05})
    pair = np.random.default_rng(3).random((200, 96, 2)).astype(np.float32)
    predictor = Predictor(model)
    whole = predict_probabilities(predictor, pair)
    assert whole.shape == (200, 96)
    assert predictor.stages() is not None  # the strips below are exact strips, not windows
    strips = predict_probabilities(predictor, pair, memory_bytes=activation_bytes(model, 96 * 70))
    np.testing.assert_allclose(strips, whole, atol=2e-6)  # exact strips: the one pass's values
    windows = predict_probabilities(predictor, pair, tile=64, overlap=0.25)
    assert windows.shape == (200, 96) and np.isfinite(windows).all()
    flipped = predict_probabilities(predictor, pair, flip=True)  # both channels mirrored together
    mirrored = predict_probabilities(predictor, np.ascontiguousarray(pair[:, ::-1]))[:, ::-1]
    np.testing.assert_allclose(flipped, (whole + mirrored) / 2, atol=1e-6)
