"""Cross-validation by woman, the fold ensemble, the lesion-crop sampler and deterministic training."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from mammo_seg.cli import main

RECIPE = """
name: cv_tiny
seed: 0
prep: {tiles: [], scale: 0.0625, full_scans: true, val_fraction: 0, test_fraction: 0}
data:
  dir: DATA
  tile: full
  crop: 48
  lesion_share: 0.5
  augment: {flips: true, rot90: false, intensity: 0.1, rotate: 15, scale: [0.8, 1.25], brightness: 0.05,
            noise: 0.01, blur: 0.5}
model: {width: 0.125, bn_momentum: 0.9}
loss: {name: iou}
train: {epochs: 2, steps_per_epoch: 2, batch_size: 4, lr: 0.003, schedule: cosine, warmup_epochs: 1,
        checkpoint: last}
cv: {folds: 2}
operating_point: {enabled: true, objective: sensitivity, min_areas_mm2: [0, 20]}
"""


# ------------------------------------------------------------------------------------------------ folds
def test_folds_deal_women_with_and_without_lesions_apart_and_are_stable_for_a_seed():
    from mammo_seg.training.cross_val import assign_folds

    women = {"a": True, "b": True, "c": True, "d": False, "e": False, "f": False, "g": False}
    folds = assign_folds(women, 3, seed=0)
    # hand-computed: lesion women sorted [a, b, c] permuted by default_rng(0).permutation(3), dealt to 1, 2, 3;
    # the others [d, e, f, g] by default_rng(0)'s next permutation(4), dealt on from fold 1
    order = np.random.default_rng(0)
    lesion = [["a", "b", "c"][i] for i in order.permutation(3)]
    other = [["d", "e", "f", "g"][i] for i in order.permutation(4)]
    expected = {w: i % 3 + 1 for i, w in enumerate(lesion + other)}
    assert folds == dict(sorted(expected.items()))
    assert assign_folds(women, 3, seed=0) == folds  # stable for a seed
    assert assign_folds(women, 3, seed=1) != folds
    for fold in (1, 2, 3):  # every fold has a lesion woman; sizes differ by at most one
        assert any(women[w] for w, f in folds.items() if f == fold)
    assert sorted(list(folds.values()).count(f) for f in (1, 2, 3)) == [2, 2, 3]
    with pytest.raises(ValueError):
        assign_folds(women, 1, seed=0)


# ------------------------------------------------------------------------------------------------ sampler
def test_the_share_of_lesion_crops_is_exact():
    from mammo_seg.data.pipeline import is_lesion_crop

    for share, n in ((1 / 3, 300), (0.25, 100), (0.5, 10), (1.0, 7), (0.0, 9)):
        flags = is_lesion_crop(tf.range(n, dtype=tf.int64), share).numpy()
        assert flags.sum() == round(share * n), share
        if share == 1 / 3:  # one in every three, evenly spread
            assert all(flags[i:i + 3].sum() == 1 for i in range(0, n, 3))


def test_a_lesion_crop_is_centred_on_the_lesion_and_geometry_reaches_image_and_mask():
    from mammo_seg.data.pipeline import sampled_crop

    image = np.zeros((64, 80, 1), np.float32)
    image[20:44, 10:70] = 0.5
    mask = np.zeros_like(image)
    mask[30:34, 50:54] = 1.0  # a 4×4 lesion centred at (31.5, 51.5)
    image[mask > 0] = 0.9
    for k in range(6):
        seed = tf.constant([k, 11], tf.int64)
        img, msk = sampled_crop(tf.constant(image), tf.constant(mask), 16, tf.constant(True), seed)
        img, msk = img.numpy()[..., 0], msk.numpy()[..., 0]
        assert img.shape == msk.shape == (16, 16) and msk.any()  # the crop's centre is a lesion pixel
        np.testing.assert_array_equal(msk > 0, img == np.float32(0.9))  # no rotation: same pixels moved alike
        rot, rmask = sampled_crop(tf.constant(image), tf.constant(mask), 16, tf.constant(True), seed, 30.0, (0.8, 1.25))
        assert rmask.numpy().any() and set(np.unique(rmask.numpy())) <= {0.0, 1.0}


def test_the_dense_level_is_the_lower_edge_of_the_bin_holding_the_breasts_quantile():
    from mammo_seg.data.pipeline import dense_level

    image = np.zeros((8, 8, 1), np.float32)  # 16 background pixels (0), 36 at 0.3 (bin 76), 12 at 0.8 (bin 204)
    image[2:8, 0:6] = 0.3
    image[2:8, 6:8] = 0.8
    for quantile, level in ((0.5, 76 / 256), (0.74, 76 / 256), (0.75, 204 / 256), (0.9, 204 / 256),
                            (0.0, 76 / 256)):
        assert float(dense_level(tf.constant(image), quantile)) == np.float32(level), quantile
    assert float(dense_level(tf.zeros((4, 4, 1)), 0.5)) == 0.0  # no breast


def test_background_crops_are_centred_on_the_breast_at_or_above_its_quantile():
    from mammo_seg.data.pipeline import sampled_crop

    image = np.zeros((64, 64, 1), np.float32)
    image[:, :48] = 0.3  # fatty breast; the right quarter dense, with an index that tells where a crop is centred
    image[:, 48:] = 0.8 + np.arange(16, dtype=np.float32)[None, :, None] / 100
    mask = np.zeros_like(image)
    centres = {}
    for quantile in (0.0, 0.5, 0.8):
        seen = []
        for k in range(40):
            img, _ = sampled_crop(tf.constant(image), tf.constant(mask), 1, tf.constant(False),
                                  tf.constant([k, 5], tf.int64), background_quantile=quantile)
            seen.append(float(img.numpy()[0, 0, 0]))  # a 1-px crop is its centre pixel
        centres[quantile] = np.array(seen)
    assert (centres[0.0] == np.float32(0.3)).any() and (centres[0.0] >= 0.8).any()  # anywhere in the breast
    assert (centres[0.8] >= 0.8).all()  # three quarters are fatty: the 0.8 quantile is in the dense quarter
    assert (centres[0.5] == np.float32(0.3)).any()  # the median is fatty: fat and dense pixels both qualify


def test_a_lesion_crop_with_an_offset_holds_its_lesion_pixel_off_centre_within_the_crop():
    """A one-pixel lesion (row 30, column 50) in a scan whose pixels tell their own position: every lesion crop
    holds it, centred without an offset, at whole-pixel offsets within ±f·(half − 1) with one. A crop that is no
    lesion crop stays centred on its breast pixel."""
    from mammo_seg.data.pipeline import sampled_crop

    rows, cols = np.mgrid[:64, :80]
    image = (0.2 + (rows * 80 + cols) / (64 * 80) * 0.8).astype(np.float32)[..., None]  # > TISSUE_LEVEL, unique
    mask = np.zeros_like(image)
    mask[30, 50] = 1.0
    positions = []
    for k in range(40):
        seed = tf.constant([k, 3], tf.int64)
        _, msk = sampled_crop(tf.constant(image), tf.constant(mask), 16, tf.constant(True), seed)
        assert msk.numpy()[8, 8, 0] == 1.0  # centred
        img, msk = sampled_crop(tf.constant(image), tf.constant(mask), 16, tf.constant(True), seed,
                                lesion_offset=1.0)
        (y, x), = np.argwhere(msk.numpy()[..., 0] == 1.0)
        assert img.numpy()[y, x, 0] == image[30, 50, 0]  # the same pixel, moved whole
        positions.append((int(y) - 8, int(x) - 8))
    offsets = np.array(positions)
    assert np.abs(offsets).max() <= 7 and len(set(positions)) > 20 and (offsets != 0).any(axis=1).mean() > 0.8
    for k in range(5):
        seed = tf.constant([k, 4], tf.int64)
        plain = sampled_crop(tf.constant(image), tf.constant(mask), 16, tf.constant(False), seed)[0]
        offset = sampled_crop(tf.constant(image), tf.constant(mask), 16, tf.constant(False), seed, lesion_offset=1.0)[0]
        np.testing.assert_array_equal(offset.numpy(), plain.numpy())


# ------------------------------------------------------------------------------------------------ ensemble
def test_the_ensemble_probability_is_the_mean_of_its_members():
    import keras

    from mammo_seg.inference.sliding_window import Predictor, predict_probabilities

    def constant_logit(value, name):  # a hand-made "network" whose logit is value + 0·x everywhere
        inputs = keras.Input((None, None, 1))
        layer = keras.layers.Conv2D(1, 1, name=name, kernel_initializer="zeros",
                                    bias_initializer=keras.initializers.Constant(value))
        return keras.Model(inputs, layer(inputs))

    a, b = constant_logit(0.0, "a"), constant_logit(np.log(3.0), "b")  # probabilities 1/2 and 3/4
    image = np.random.default_rng(0).random((9, 7)).astype(np.float32)
    mean = predict_probabilities(Predictor([a, b]), image)
    np.testing.assert_allclose(mean, 0.625, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(predict_probabilities(Predictor([a]), image),
                                  predict_probabilities(Predictor(a), image))


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def cv_data(mias_raw, tmp_path_factory):
    work = tmp_path_factory.mktemp("cv")
    recipe = work / "recipe.yaml"
    data = str(work / "data")
    recipe.write_text(RECIPE.replace("DATA", data))
    assert main(["prep", "mias", "--raw", mias_raw, "--out", data, "--config", str(recipe), "--quiet"]) == 0
    return str(recipe), data


@pytest.fixture(scope="module")
def cv_run(cv_data, tmp_path_factory):
    recipe, data = cv_data
    run = str(tmp_path_factory.mktemp("cv_run") / "run")
    assert main(["train", "-c", recipe, "--out", run, "--quiet"]) == 0
    return recipe, data, run


@pytest.mark.slow
def test_cross_validation_trains_one_model_per_fold_and_chooses_the_point_out_of_fold(cv_run):
    from mammo_seg.inference.model import load_model
    from mammo_seg.run_dir import RunDir

    recipe, data, run = cv_run
    folds = json.load(open(os.path.join(run, "cv.json")))
    assert folds["folds"] == 2 and set(folds["fold_of"].values()) == {1, 2}
    scans = json.load(open(os.path.join(data, "scans.json")))
    assert set(folds["fold_of"]) == {s["patient_id"] for s in scans.values()}  # every woman, by woman
    for k in (1, 2):  # fold k trained on the other fold's women only
        info = json.load(open(os.path.join(run, f"fold{k}", "data.json")))
        assert info["patients"] == sorted(w for w, f in folds["fold_of"].items() if f != k)
        assert info["precision"] == "float32" and info["precision_reason"] == "train.mixed_precision: False"
        assert os.path.isfile(os.path.join(run, f"fold{k}", "last.keras"))
        assert not os.path.exists(os.path.join(run, f"fold{k}", "best.keras"))  # train.checkpoint: last
    members = RunDir(run).ensemble_members()
    assert [os.path.relpath(m, run) for m in members] == ["fold1/last.keras", "fold2/last.keras"]
    loaded = load_model(run)
    assert len(loaded.models) == 2 and os.path.basename(loaded.path) == "ensemble.json"
    point = json.load(open(os.path.join(run, "operating_point.json")))
    assert point["model"] == "ensemble.json" and point["chosen_on"]["out_of_fold"]
    assert point["chosen_on"]["scans"] == len(scans)  # every scan, each predicted by the model that never saw her
    oof = json.load(open(os.path.join(run, "oof.json")))
    assert sum(oof["scans_per_fold"].values()) == len(scans)
    assert set(oof["intervals"]["groups"]["all"]["sensitivity_at_fp_per_image"]) == {"0.25", "0.5", "1", "2", "4"}
    assert oof["intervals"]["women"] == len(folds["fold_of"])
    card = json.load(open(os.path.join(run, "model_card.json")))
    assert card["members"] == 2 and card["cross_validation"] == {"folds": 2, "nested": False}
    assert card["training_data"]["women"] == len(folds["fold_of"]) and card["training_data"]["scans"] == len(scans)
    assert card["training_data"]["training_pixel_mm"] == pytest.approx(0.8)
    assert card["operating_point"] == {k: point[k] for k in ("threshold", "min_area_mm2", "flip")}
    assert card["figures"]["chosen_on"]["out_of_fold"] and card["figures"]["intervals"] == oof["intervals"]
    assert {"package", "git_commit", "tensorflow", "keras", "precision", "seed", "config_sha256"} <= \
        set(card["provenance"]) and card["provenance"]["precision"] == "float32"
    assert "Not for." in open(os.path.join(run, "model_card.md")).read()
    assert any("chosen on the 2 fold models' out-of-fold predictions" in limit for limit in card["known_limits"])
    # the same command again continues: nothing is retrained, the result is the same
    before = {m: open(m, "rb").read() for m in members}
    assert main(["train", "-c", recipe, "--out", run, "--quiet"]) == 0
    assert {m: open(m, "rb").read() for m in members} == before


@pytest.mark.slow
def test_a_nested_cross_validation_chooses_the_point_on_means_of_models_that_never_saw_the_woman(cv_data, tmp_path,
                                                                                               monkeypatch):
    from mammo_seg.data import features
    from mammo_seg.data.prep_output import PrepOutput
    from mammo_seg.inference.model import load_model
    from mammo_seg.inference.operating_point import network_input, scan_probabilities
    from mammo_seg.inference.sliding_window import Predictor
    from mammo_seg.run_dir import RunDir
    from mammo_seg.training.cross_val import out_of_fold_scans

    import mammo_seg.inference.model as model_module

    recipe, data = cv_data
    run = str(tmp_path / "run")
    loaded_paths, load = [], model_module.load_model
    monkeypatch.setattr(model_module, "load_model", lambda path: loaded_paths.append(path) or load(path))
    assert main(["train", "-c", recipe, "--out", run, "--quiet", "--set", "cv.folds=3", "cv.nested=true"]) == 0
    monkeypatch.undo()
    # the point was chosen on the nested means, not on the fold models
    assert sorted(os.path.relpath(p, run) for p in loaded_paths) == ["nested/fold1", "nested/fold2", "nested/fold3"]
    fold_of = json.load(open(os.path.join(run, "cv.json")))["fold_of"]
    for i, j in ((1, 2), (1, 3), (2, 3)):  # one model without each pair of folds, trained on the third fold only
        info = json.load(open(os.path.join(run, "nested", f"without{i}-{j}", "data.json")))
        assert info["patients"] == sorted(w for w, f in fold_of.items() if f not in (i, j))
    for k, others in ((1, ["without1-2", "without1-3"]), (2, ["without1-2", "without2-3"]),
                      (3, ["without1-3", "without2-3"])):
        members = RunDir(run).nested_fold(k).ensemble_members()
        assert [os.path.relpath(m, run) for m in members] == [f"nested/{o}/last.keras" for o in others]
    assert [os.path.relpath(m, run) for m in RunDir(run).ensemble_members()] == \
        ["fold1/last.keras", "fold2/last.keras", "fold3/last.keras"]  # the shipped ensemble: the fold models
    # a scan of fold 1 is predicted by the mean of the two models that never saw fold 1's women
    scan_id, _, fold, probabilities, _ = next(out_of_fold_scans(RunDir(run), data, "train", fold_of, nested=True))
    record = next(rec for file in PrepOutput.containing(data).whole_scan_files("train")
                  for rec in features.iterate_records(file) if rec["scan_id"].decode() == scan_id)
    singles = [scan_probabilities(Predictor(load_model(RunDir(run).without_folds(fold, j).path).models),
                                  network_input(record, 1), False) for j in (1, 2, 3) if j != fold]
    np.testing.assert_allclose(probabilities[False], (singles[0] + singles[1]) / 2, atol=1e-6)
    point = json.load(open(os.path.join(run, "operating_point.json")))
    scans = json.load(open(os.path.join(data, "scans.json")))
    assert point["chosen_on"]["models_per_scan"] == 2 and point["chosen_on"]["scans"] == len(scans)
    card = json.load(open(os.path.join(run, "model_card.json")))
    assert card["cross_validation"] == {"folds": 3, "nested": True} and card["members"] == 3
    assert any("nested cross-validation" in limit for limit in card["known_limits"])
    assert not any("one model a scan" in limit for limit in card["known_limits"])


@pytest.mark.slow
def test_a_fine_tune_of_the_run_starts_every_fold_from_its_own_fold_model(cv_run, tmp_path):
    import keras

    recipe, _, run = cv_run
    tuned = str(tmp_path / "tuned")
    assert main(["train", "-c", recipe, "--out", tuned, "--quiet", "--set", f"train.init_from={run}",
                 "--set", "loss={name: lovasz_hinge}", "--set", "train.epochs=1", "--set", "train.lr=1e-12",
                 "--set", "train.warmup_epochs=0"]) == 0

    def kernels(path):
        model = keras.saving.load_model(path, compile=False)
        return [w.numpy() for w in model.weights if "kernel" in w.path]

    for k, other in ((1, 2), (2, 1)):  # at a learning rate of 1e-12 the fold's kernels are its source's
        mine = kernels(os.path.join(tuned, f"fold{k}", "last.keras"))
        source, not_source = (kernels(os.path.join(run, f"fold{j}", "last.keras")) for j in (k, other))
        assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(mine, source))
        assert not all(np.allclose(a, b, atol=1e-6) for a, b in zip(mine, not_source))


@pytest.mark.slow
def test_each_fold_model_is_its_curriculums_last_stage_started_from_the_folds_first(cv_data, tmp_path):
    import keras

    from mammo_seg.run_dir import RunDir

    recipe, data = cv_data
    run = str(tmp_path / "run")
    stages = ("stages=[{name: crops}, {name: whole_scans, data: {crop: 64, lesion_share: 0, augment: {rotate: 0, "
              "scale: [1, 1]}}, train: {epochs: 1, steps_per_epoch: 1, batch_size: 2, lr: 1.0e-12, "
              "warmup_epochs: 0}}]")
    assert main(["train", "-c", recipe, "--out", run, "--quiet", "--set", stages]) == 0
    assert [os.path.relpath(m, run) for m in RunDir(run).ensemble_members()] == \
        ["fold1/stage2_whole_scans/last.keras", "fold2/stage2_whole_scans/last.keras"]
    fold_of = json.load(open(os.path.join(run, "cv.json")))["fold_of"]

    def kernels(path):
        model = keras.saving.load_model(path, compile=False)
        return [w.numpy() for w in model.weights if "kernel" in w.path]

    for k, other in ((1, 2), (2, 1)):
        for stage in ("stage1_crops", "stage2_whole_scans"):  # both stages on the other fold's women only
            info = json.load(open(os.path.join(run, f"fold{k}", stage, "data.json")))
            assert info["patients"] == sorted(w for w, f in fold_of.items() if f != k)
        last, first, not_first = (kernels(os.path.join(run, f"fold{j}", s, "last.keras")) for j, s in
                                  ((k, "stage2_whole_scans"), (k, "stage1_crops"), (other, "stage1_crops")))
        assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(last, first))  # lr 1e-12: its own first stage's
        assert not all(np.allclose(a, b, atol=1e-6) for a, b in zip(last, not_first))
    point = json.load(open(os.path.join(run, "operating_point.json")))
    scans = json.load(open(os.path.join(data, "scans.json")))
    assert point["chosen_on"]["out_of_fold"] and point["chosen_on"]["scans"] == len(scans)


@pytest.mark.slow
def test_export_of_the_ensemble_is_the_mean_of_its_members_and_carries_the_operating_point(cv_run, tmp_path):
    import tensorflow as tf

    from mammo_seg.export import export_model
    from mammo_seg.inference.model import load_model
    from mammo_seg.inference.sliding_window import Predictor

    _, _, run = cv_run
    info = export_model(run, str(tmp_path / "exported"))
    assert info["members"] == 2
    assert {"operating_point.json", "model_card.json", "model_card.md"} <= set(info["carried"])
    assert json.load(open(tmp_path / "exported" / "operating_point.json")) == \
        json.load(open(os.path.join(run, "operating_point.json")))
    scan = np.random.default_rng(1).random((40, 56)).astype(np.float32)
    served = tf.saved_model.load(str(tmp_path / "exported")).signatures["serving_default"](scan=tf.constant(scan))
    expected = Predictor(load_model(run).models)(scan[None, :, :, None])[0, :, :, 0]
    np.testing.assert_allclose(list(served.values())[0].numpy(), expected, atol=1e-6)


@pytest.mark.slow
def test_predict_on_a_run_of_k_identical_models_writes_the_files_of_one(cv_run, mias_raw, tmp_path):
    import shutil

    from mammo_seg.inference.predict import PredictOptions, predict
    from mammo_seg.run_dir import RunDir

    _, _, run = cv_run
    single = os.path.join(run, "fold1", "last.keras")
    twins = tmp_path / "twins"
    for k in (1, 2):
        os.makedirs(twins / f"fold{k}")
        shutil.copy(single, twins / f"fold{k}" / "last.keras")
    RunDir(str(twins)).write_ensemble(RunDir(str(twins)).folds(2))
    folder = tmp_path / "in"
    folder.mkdir()
    for name in sorted(os.listdir(mias_raw))[:3]:
        if name.endswith(".pgm"):
            os.symlink(os.path.join(mias_raw, name), folder / name)
    options = PredictOptions(threshold=0.5, min_area_mm2=0.0, formats=("mask", "prob", "json"))
    one = predict(single, str(folder), str(tmp_path / "one"), options, progress=False)
    two = predict(str(twins), str(folder), str(tmp_path / "two"), options, progress=False)
    assert one["counts"] == two["counts"] and one["counts"]["ok"] >= 1
    for name in sorted(os.listdir(tmp_path / "one")):
        if name.endswith((".png", ".npz")):
            assert open(tmp_path / "one" / name, "rb").read() == open(tmp_path / "two" / name, "rb").read(), name


# ------------------------------------------------------------------------------------------------ determinism
# the real recipe's shape: crops, then whole scans (64 px at this grid), under cross-entropy + Dice
TWO_STAGES = ["--set", "loss={name: mixed, losses: [{name: weighted_bce, pos_weight: 1}, {name: dice}], "
                       "coefs: [1, 1]}",
              "--set", "stages=[{name: crops}, {name: whole_scans, data: {crop: 64, lesion_share: 0, augment: "
                       "{rotate: 0, scale: [1, 1]}}, train: {epochs: 1, warmup_epochs: 0, steps_per_epoch: 3, "
                       "batch_size: 2}}]"]


@pytest.mark.slow
def test_training_with_the_sampler_is_deterministic_bit_for_bit(cv_data, tmp_path):
    import keras

    recipe, _ = cv_data
    for name in ("a", "b"):
        assert main(["train", "-c", recipe, "--out", str(tmp_path / name), "--quiet", "--set", "cv.folds=0",
                     "--set", "operating_point.enabled=false", *TWO_STAGES]) == 0
    for stage in ("stage1_crops", "stage2_whole_scans"):
        a, b = (keras.models.load_model(str(tmp_path / name / stage / "last.keras"), compile=False,
                                        safe_mode=True).get_weights() for name in ("a", "b"))
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_a_nested_cross_validation_trains_without_each_pair_of_folds_checked_before_training(tmp_path):
    from mammo_seg.config import load_config
    from mammo_seg.errors import MammoError
    from mammo_seg.run_dir import RunDir
    from mammo_seg.training.cross_val import _models_to_train

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.replace("DATA", str(tmp_path)))
    config = load_config(str(recipe), ["cv.folds=3", "cv.nested=true"])
    run, table = RunDir(str(tmp_path / "run")), {"folds": 3, "fold_of": {"A": 1, "B": 2, "C": 3}}
    models = _models_to_train(config, run, table, {"A": True, "B": True, "C": True}, "DATA")
    assert [(os.path.relpath(m.path, run.path), sorted(p.train), sorted(p.held_out), init) for m, p, init in models] \
        == [("fold1", ["B", "C"], ["A"], None), ("fold2", ["A", "C"], ["B"], None), ("fold3", ["A", "B"], ["C"], None),
            ("nested/without1-2", ["C"], ["A", "B"], None), ("nested/without1-3", ["B"], ["A", "C"], None),
            ("nested/without2-3", ["A"], ["B", "C"], None)]
    with pytest.raises(MammoError, match=r"nested/without1-2: its training women \(those not in folds 1 and 2\) "
                                         r"have no lesion"):  # C, the third fold, has none: found before training
        _models_to_train(config, run, table, {"A": True, "B": True, "C": False}, "DATA")
    assert not os.path.exists(run.path)


def test_a_fine_tune_of_a_cross_validation_starts_each_fold_and_pair_from_the_same(tmp_path):
    from mammo_seg.errors import MammoError
    from mammo_seg.training.cross_val import fold_init

    table = {"folds": 2, "fold_of": {"A": 1, "B": 2}}
    earlier = tmp_path / "earlier"
    for k in (1, 2):
        (earlier / f"fold{k}").mkdir(parents=True)
    (earlier / "cv.json").write_text(json.dumps({**table, "seed": 0}))
    assert fold_init(str(earlier), table, 2) == str(earlier / "fold2")
    assert fold_init(None, table, 1) is None
    assert fold_init(str(tmp_path / "model.keras"), table, 1) == str(tmp_path / "model.keras")  # not a CV: as is
    other = {"folds": 2, "fold_of": {"A": 2, "B": 1}}
    with pytest.raises(MammoError, match="other folds"):  # fold 1 would start from weights trained on woman A
        fold_init(str(earlier), other, 1)
    with pytest.raises(MammoError, match="the cross-validation has no fold3"):
        fold_init(str(earlier), {"folds": 3, "fold_of": table["fold_of"]}, 3)
    (earlier / "nested" / "without1-2").mkdir(parents=True)  # a nested model starts from the same pair's
    assert fold_init(str(earlier), table, (2, 1)) == str(earlier / "nested" / "without1-2")
    with pytest.raises(MammoError, match=r"has no nested/without1-3 \(not a nested cross-validation\)"):
        fold_init(str(earlier), table, (1, 3))


def test_a_truncated_shard_stops_a_cross_validation_with_one_line_naming_it(cv_data, tmp_path, capsys):
    import shutil

    recipe, data = cv_data
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    shard = sorted((copy / "full").glob("train-*.tfrecord"))[0]
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 100)
    assert main(["train", "-c", recipe, "--set", f"data.dir={copy}", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mammo train: error: {shard}: unreadable shard (truncated"), err


@pytest.mark.parametrize("members, chosen_on, said", [
    (5, {"out_of_fold": True, "scans": 10}, "single"),  # a fold ensemble, its point chosen on single fold models
    (5, {"out_of_fold": True, "models_per_scan": 1}, "single"),
    (5, {"out_of_fold": True, "models_per_scan": 4}, "nested"),  # chosen on means of 4 nested models
    (5, None, None),  # no operating point: nothing applied to the mean
    (5, {"split": "val", "scans": 10}, None),  # an ensemble whose point was chosen on its own predictions
    (1, {"split": "val", "scans": 10}, None),  # one model, its point chosen on its own validation scans
    (1, {"out_of_fold": True, "scans": 10}, None),  # one model: nothing is averaged
])
def test_the_card_says_on_what_an_ensembles_point_was_chosen(tmp_path, members, chosen_on, said):
    from mammo_seg.config import load_config
    from mammo_seg.inference.operating_point import path_for
    from mammo_seg.model_card import build_card

    if members > 1:
        model = tmp_path / "ensemble.json"
        model.write_text(json.dumps({"members": [f"fold{k}/last.keras" for k in range(1, members + 1)]}))
    else:
        model = tmp_path / "last.keras"
    if chosen_on:
        with open(path_for(str(model)), "w") as f:
            json.dump({"threshold": 0.85, "min_area_mm2": 160.0, "flip": False, "chosen_on": chosen_on}, f)
    config = load_config(os.path.join(os.path.dirname(__file__), "..", "experiments", "mias_real", "recipe.yaml"))
    data = {"dataset": "mias", "women": 3, "scans": 6, "training_pixel_mm": 0.4}
    limits = build_card(config, str(model), data, "float32")["known_limits"]
    single = [limit for limit in limits if f"chosen on the {members} fold models' out-of-fold predictions" in limit]
    nested = [limit for limit in limits if "nested cross-validation, on every scan's prediction by the mean of 4 "
                                           "models that never saw its woman" in limit]
    assert (len(single), len(nested)) == {"single": (1, 0), "nested": (0, 1), None: (0, 0)}[said]
