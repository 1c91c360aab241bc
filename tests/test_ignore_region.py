"""The ignore region (mask value 2, prep's ``ignore_kinds``): neither lesion nor background.

An ignore region changes no loss or metric value it covers (the value equals the one on the batch with those
pixels cut out, whatever the prediction there); it is no reference lesion, and a detection peaking in it is
neither a true nor a false positive; prep writes it only when asked, and lesion crops never centre on it."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mammo_seg import losses as L
from mammo_seg import metrics as M
from mammo_seg.data.features import IGNORE, LESION
from mammo_seg.errors import MammoError

BIG = 30.0


def _ignore_batch(seed=0):
    """Two 4×4 images whose last column is the ignore region; lesions and logits elsewhere."""
    rng = np.random.default_rng(seed)
    y = np.zeros((2, 4, 4, 1), "float32")
    y[0, 1:3, 0:2] = 1  # a 2×2 lesion
    y[1, 0, 2] = 1  # a one-pixel lesion beside the ignore column
    y[:, :, 3] = IGNORE
    x = rng.normal(0, 3, y.shape).astype("float32")
    return y, x


def _every_loss():
    """Every loss class of the registry with default parameters (per_image both ways where it has it, and per image
    over lesion images only where it has that), and a mixture of two of them."""
    import inspect

    cases = []
    for cls in sorted(set(L.LOSSES.values()), key=lambda c: c.__name__):
        if cls is L.MixedLoss:
            continue
        has_per_image = "per_image" in inspect.signature(cls.__init__).parameters
        variants = [{}]
        if has_per_image:
            variants = [{"per_image": False}, {"per_image": True}]
        if "lesion_images_only" in inspect.signature(cls.__init__).parameters:
            variants.append({"per_image": True, "lesion_images_only": True})
        for kwargs in variants:
            cases.append(pytest.param(lambda c=cls, k=kwargs: c(**k), id=f"{cls.__name__}-{kwargs}"))
    cases.append(pytest.param(lambda: L.MixedLoss([L.SoftIoULoss(), L.LovaszHinge(per_image=False)], [0.5, 0.5]),
                              id="MixedLoss-iou+lovasz"))
    return cases


def _value(loss, y, x):
    return float(loss(tf.constant(y), tf.constant(x)))


@pytest.mark.parametrize("make", _every_loss())
def test_an_ignore_region_changes_no_loss_value_it_covers(make):
    loss = make()
    y, x = _ignore_batch()
    value = _value(loss, y, x)
    # the same batch with the ignore column cut out
    assert value == pytest.approx(_value(loss, y[:, :, :3].copy(), x[:, :, :3].copy()), rel=1e-5, abs=1e-6)
    # any prediction inside the ignore region: the same value, and no gradient reaches it
    for other in (np.full((2, 4), BIG), np.full((2, 4), -BIG), np.random.default_rng(1).normal(0, 9, (2, 4))):
        changed = x.copy()
        changed[:, :, 3, 0] = other
        assert _value(loss, y, changed) == pytest.approx(value, rel=1e-6, abs=1e-7)
    logits = tf.Variable(x)
    with tf.GradientTape() as tape:
        v = loss(tf.constant(y), logits)
    gradient = tape.gradient(v, logits).numpy()
    assert np.isfinite(gradient).all() and not gradient[:, :, 3].any()


@pytest.mark.parametrize("make", _every_loss())
def test_the_distributed_statistics_contract_holds_with_an_ignore_region(make):
    # two replicas of one image each: sums add, gathered statistics concatenate (padded alike)
    loss = make()
    y, x = _ignore_batch()
    parts = [loss.statistics(tf.constant(y[i:i + 1]), tf.constant(x[i:i + 1])) for i in range(2)]
    stats = [tf.concat([a, b], axis=0) if i in loss.gathered else a + b for i, (a, b) in enumerate(zip(*parts))]
    assert float(loss.from_statistics(stats)) == pytest.approx(_value(loss, y, x), rel=1e-5, abs=1e-6)


def test_hand_computed_one_image_of_two_by_two():
    # y = [[1, ignore], [0, 0]]; logits 0 (p = ½) everywhere but the ignore pixel
    y = np.array([[[1.0], [IGNORE]], [[0.0], [0.0]]], "float32")[None]
    for ignored in (BIG, -BIG):
        x = np.zeros_like(y)
        x[0, 0, 1] = ignored
        # plain cross-entropy: ln 2 on each of the 3 counted pixels, divided by 3 (not 4)
        assert _value(L.WeightedBCE(pos_weight=1.0), y, x) == pytest.approx(np.log(2), rel=1e-6)
        # soft IoU: TP = ½, FP = ½ + ½, FN = ½ → 1 − ½ / 2
        assert _value(L.SoftIoULoss(smooth=0), y, x) == pytest.approx(0.75, rel=1e-6)
        # Lovász hinge: errors 1 (lesion) and 1, 1 (background); the ignored pixel last with error 1 − 10⁹ and
        # gradient weight 0 or relu 0: Σ g·relu(e) = J(1) − J(0) + … = 1 over the three counted pixels
        assert _value(L.LovaszHinge(per_image=True), y, x) == pytest.approx(
            _value(L.LovaszHinge(per_image=True), np.array([[[[1.0], [0.0], [0.0]]]], "float32"),
                   np.zeros((1, 1, 3, 1), "float32")), rel=1e-6)


def test_the_lovasz_hinge_sorts_ignored_pixels_last_where_they_add_nothing():
    from mammo_seg.losses.lovasz import FAR, lovasz_gradient

    # errors of 3 counted pixels, then an ignored one (logit FAR, label 0): it sorts last, its relu is 0, and the
    # Lovász gradient of the pixels before it is that of the 3 alone
    labels = np.array([1.0, 0.0, 1.0, 0.0], "float32")
    logits = np.array([0.5, 2.0, -1.0, FAR], "float32")
    errors = 1.0 - logits * (2 * labels - 1)
    order = np.argsort(-errors)
    assert order[-1] == 3 and max(errors[3], 0) == 0
    g = lovasz_gradient(tf.constant(labels[order])).numpy()
    g3 = lovasz_gradient(tf.constant(labels[:3][np.argsort(-errors[:3])])).numpy()
    np.testing.assert_allclose(g[:3], g3, rtol=1e-6)


@pytest.mark.parametrize("cls", M.ALL)
def test_an_ignore_region_changes_no_training_metric_value_it_covers(cls):
    y, x = _ignore_batch(seed=2)
    whole, cut = cls(image_area_fraction=0.1), cls(image_area_fraction=0.1)
    whole.update_state(tf.constant(y), tf.constant(x))
    cut.update_state(tf.constant(y[:, :, :3].copy()), tf.constant(x[:, :, :3].copy()))
    assert float(whole.result()) == pytest.approx(float(cut.result()), rel=1e-6)
    changed = cls(image_area_fraction=0.1)
    flooded = x.copy()
    flooded[:, :, 3] = BIG  # every ignore pixel predicted lesion
    changed.update_state(tf.constant(y), tf.constant(flooded))
    assert float(changed.result()) == pytest.approx(float(whole.result()), rel=1e-6)


def test_metric_counts_by_hand():
    # one 2×2 image: lesion (0,0), ignore (0,1), predicted lesion at (0,0), (0,1), (1,0)
    y = np.array([[[1.0], [IGNORE]], [[0.0], [0.0]]], "float32")[None]
    x = np.array([[[BIG], [BIG]], [[BIG], [-BIG]]], "float32")[None]
    dice, accuracy = M.LesionDice(), M.PixelAccuracy()
    for m in (dice, accuracy):
        m.update_state(tf.constant(y), tf.constant(x))
    assert float(dice.result()) == pytest.approx(2 / 3)  # TP 1, FP 1 (not 2), FN 0
    assert float(accuracy.result()) == pytest.approx(2 / 3)  # 2 right of the 3 counted pixels


# ------------------------------------------------------------------------------- detection, operating point
def _map_with_lesion_and_ignore():
    """A 20×20 probability map with three blobs: on the lesion, on the ignore region, and elsewhere."""
    prob = np.zeros((20, 20), np.float32)
    mask = np.zeros((20, 20), np.uint8)
    mask[2:6, 2:6] = LESION
    mask[10:14, 10:14] = IGNORE
    prob[2:6, 2:6] = 0.9
    prob[10:14, 10:14] = 0.8
    return prob, mask


def test_a_detection_peaking_in_the_ignore_region_is_neither_true_nor_false_positive():
    from mammo_seg.detection import ScanLesions, find_detections, match, reference_lesions, score_scans

    prob, mask = _map_with_lesion_and_ignore()
    lesions, ignore = reference_lesions(mask)
    assert len(lesions) == 1 and ignore.sum() == 16  # the ignore region is no reference lesion
    detections = find_detections(prob, 0.5, 1)
    assert [d.peak for d in detections] == [(2, 2), (10, 10)]
    assert match(detections, lesions, ignore) == ([True], 0)
    assert match(detections, lesions) == ([True], 1)  # without the ignore region: a false positive
    prob[17, 17] = 0.7  # a blob outside both: a false positive
    assert match(find_detections(prob, 0.5, 1), lesions, ignore) == ([True], 1)
    # a lesion-free scan whose only detection is in its ignore region is not flagged
    normal = np.where(mask == IGNORE, IGNORE, 0).astype(np.uint8)
    parts, ignore = reference_lesions(normal)
    score = score_scans([ScanLesions(np.where(normal == IGNORE, 0.8, 0.0), parts, [], 1.0, ignore)], 0.5, 0.0)
    assert (score["normal_scans"], score["normal_scans_with_detection"], score["false_positives"]) == (1, 0, 0)


def test_the_operating_point_skips_the_ignore_region():
    from mammo_seg.inference.operating_point import choose

    prob, mask = _map_with_lesion_and_ignore()
    normal_prob = np.zeros_like(prob)
    normal_prob[10:14, 10:14] = 0.8
    normal_mask = np.where(normal_prob > 0, IGNORE, 0).astype(np.uint8)
    record = choose({False: [(prob, mask), (normal_prob, normal_mask)]}, 1.0, thresholds=(0.5,),
                    min_areas_mm2=(0.0,))
    v = record["validation"]
    # Dice 1: the ignore region is in neither mask; no false positive; the lesion-free scan not flagged
    assert (v["mean_dice"], v["sensitivity"], v["fp_per_image"], v["normal_with_detection_rate"]) == (1.0, 1.0, 0, 0)
    assert record["chosen_on"] == {"scans": 2, "scans_with_lesion": 1}
    # the same scans with the ignore region read as background: a false positive each, Dice 2·16 / (2·16 + 16)
    plain = choose({False: [(prob, mask == LESION), (normal_prob, normal_mask == LESION)]}, 1.0, thresholds=(0.5,),
                   min_areas_mm2=(0.0,))["validation"]
    assert (plain["mean_dice"], plain["fp_per_image"], plain["normal_with_detection_rate"]) == (
        pytest.approx(2 / 3), 1.0, 1.0)


# ------------------------------------------------------------------------------------------------- prep
def _tiny_mias(root, rows):
    """256×256 textured PGMs (51 mm at MIAS's 0.2 mm: a plausible field of view) and an Info.txt of ``rows``."""
    os.makedirs(root, exist_ok=True)
    pixels = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 100 + 100).astype(np.uint8)
    for ref in sorted({r.split()[0] for r in rows}):
        Image.fromarray(pixels).save(os.path.join(root, f"{ref}.pgm"))
    with open(os.path.join(root, "Info.txt"), "w") as f:
        f.write("\n".join(rows) + "\n")
    return str(root)


def _whole_scans(out):
    from mammo_seg.data.features import iterate_records
    from mammo_seg.data.prep_output import Manifest

    manifest = Manifest.load(os.path.join(out, "full"))
    return {r["scan_id"].decode(): r for f in manifest.shard_files("train") for r in iterate_records(f)}


# MIAS y counts from the bottom: row = 255 − y. CALC circle at row 20, col 20; CIRC (a mass) at row 45, col 45;
# mdb002's CALC and CIRC overlap
SIZE = 256
ROWS = ["mdb001 G CALC B 20 235 5", "mdb001 G CIRC B 45 210 6", "mdb002 G CALC B 30 225 6",
        "mdb002 G CIRC B 34 225 4"]
FLAGS = ["--full-scans", "--tiles", "32", "--scale", "0.25", "--val-fraction", "0", "--test-fraction", "0", "--quiet"]


def test_prep_writes_the_ignore_value_in_the_circles_of_the_ignored_kinds_only(tmp_path):
    from mammo_seg.cli import main
    from mammo_seg.data.cases import circle_mask

    raw = _tiny_mias(tmp_path / "raw", ROWS)
    assert main(["prep", "mias", "--raw", raw, "--out", str(tmp_path / "plain"), *FLAGS]) == 0
    assert main(["prep", "mias", "--raw", raw, "--out", str(tmp_path / "ign"), *FLAGS,
                 "--ignore-kinds", "calcification"]) == 0
    calc, mass = circle_mask((SIZE, SIZE), 20, 20, 5), circle_mask((SIZE, SIZE), 45, 45, 6)
    calc2, mass2 = circle_mask((SIZE, SIZE), 30, 30, 6), circle_mask((SIZE, SIZE), 34, 30, 4)
    plain, ign = _whole_scans(tmp_path / "plain"), _whole_scans(tmp_path / "ign")
    # without the setting: 1 in both circles, as before the setting existed; the manifest does not name it
    np.testing.assert_array_equal(plain["mdb001"]["mask"][..., 0], (calc | mass).astype(np.uint8))
    with open(tmp_path / "plain" / "full" / "manifest.json") as f:
        assert "ignore_kinds" not in json.load(f)["config"]
    # with it: 2 in the CALC circle, 1 in the mass; where they overlap the mass wins
    expected = np.where(mass, LESION, np.where(calc, IGNORE, 0)).astype(np.uint8)
    np.testing.assert_array_equal(ign["mdb001"]["mask"][..., 0], expected)
    expected2 = np.where(mass2, LESION, np.where(calc2, IGNORE, 0)).astype(np.uint8)
    np.testing.assert_array_equal(ign["mdb002"]["mask"][..., 0], expected2)
    assert (calc2 & mass2).any()
    # the record's abnormality list keeps both kinds; the image is unchanged
    assert sorted(ign["mdb001"]["abnormality"]) == [b"calcification", b"mass"]
    np.testing.assert_array_equal(ign["mdb001"]["image"], plain["mdb001"]["image"])
    with open(tmp_path / "ign" / "full" / "manifest.json") as f:
        manifest = json.load(f)
    assert manifest["config"]["ignore_kinds"] == ["calcification"]
    assert manifest["splits"]["train"]["positive_pixels"] == int(mass.sum() + mass2.sum())  # lesion pixels only
    # tiles carry the value too, and only 0, 1 and 2
    from mammo_seg.data.features import iterate_records
    from mammo_seg.data.prep_output import Manifest

    tiles = [r["mask"] for f in Manifest.load(str(tmp_path / "ign" / "32")).shard_files("train")
             for r in iterate_records(f)]
    values = set(np.unique(np.concatenate([t.ravel() for t in tiles])))
    assert values == {0, LESION, IGNORE}
    # the model card says the calcifications were not learnt (only where the setting was used)
    from mammo_seg.model_card import _calcification_note, training_data

    assert training_data(str(tmp_path / "ign" / "full"), "train")["ignored_kinds"] == ["calcification"]
    assert "ignored_kinds" not in training_data(str(tmp_path / "plain" / "full"), "train")
    assert "not learnt" in _calcification_note({"training_pixel_mm": 0.8, "ignored_kinds": ["calcification"]})
    assert "trained and scored" in _calcification_note({"training_pixel_mm": 0.8})
    assert _calcification_note({"training_pixel_mm": 0.1, "ignored_kinds": ["calcification"]}) == ""


def test_an_unknown_kind_is_one_line_naming_the_setting_before_any_work(tmp_path, capsys):
    from data_prep.prepare import prepare
    from mammo_seg.cli import main

    raw = _tiny_mias(tmp_path / "raw", ROWS[:1])
    with pytest.raises(MammoError, match=r"^prep.ignore_kinds: unknown abnormality kind 'CALC'.*calcification"):
        prepare("mias", raw, str(tmp_path / "out"), ignore_kinds=["CALC"], progress=False)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("prep:\n  ignore_kinds: [CALC]\n")
    assert main(["prep", "mias", "--raw", raw, "--out", str(tmp_path / "out"), "-c", str(recipe)]) == 2
    assert "prep.ignore_kinds: unknown abnormality kind 'CALC'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")
    from mammo_seg.config import PrepSection

    with pytest.raises(MammoError, match=r"^prep.ignore_kinds: must be a list"):
        PrepSection(ignore_kinds="calcification").validate()


def test_lesion_crops_never_centre_on_an_ignore_only_scan(tmp_path):
    from data_prep.prepare import prepare
    from mammo_seg.data.pipeline import _centre, make_dataset
    from mammo_seg.training.cross_val import women_of

    raw = _tiny_mias(tmp_path / "raw", ["mdb001 G CALC B 20 235 5", "mdb002 G NORM"])
    out = str(tmp_path / "out")
    prepare("mias", raw, out, tiles=(), full_scans=True, scale=0.25, val_fraction=0, test_fraction=0,
            ignore_kinds=["calcification"], progress=False)
    full = os.path.join(out, "full")
    with pytest.raises(MammoError, match="has no lesion pixel"):
        make_dataset(full, "train", 2, training=True, crop=32, lesion_share=0.5)
    assert women_of(full, "train") == {"mias_001": False}  # her only abnormality is ignored
    # a lesion crop asked of a scan whose only marks are ignored is centred on tissue (the right half), never on
    # them (the dark left half); were they lesion pixels, it would be centred on them
    image = np.full((16, 16, 1), 0.5, np.float32)
    image[:, :8] = 0.0
    mask = np.zeros_like(image)
    mask[:, :8] = IGNORE
    for k in range(8):
        seed = tf.constant([k, 3], tf.int64)
        assert _centre(tf.constant(image), tf.constant(mask), tf.constant(True), seed).numpy()[1] >= 8
        assert _centre(tf.constant(image), tf.constant(np.minimum(mask, LESION)), tf.constant(True),
                       seed).numpy()[1] < 8


def test_crops_flips_and_rotations_keep_the_ignore_value_exact():
    from mammo_seg.data.augment_config import AugmentConfig
    from mammo_seg.data.pipeline import augment, sampled_crop

    image = np.full((40, 40, 1), 0.5, np.float32)
    mask = np.zeros_like(image)
    mask[10:20, 10:20] = LESION
    mask[22:30, 5:35] = IGNORE
    for k in range(4):
        seed = tf.constant([k, 5], tf.int64)
        _, m = sampled_crop(tf.constant(image), tf.constant(mask), 48, tf.constant(True), seed, 30.0, (0.8, 1.25))
        assert set(np.unique(m.numpy())) == {0.0, LESION, IGNORE}  # nearest: no blend; outside the scan: 0
        _, m = augment(tf.constant(image), tf.constant(mask), seed, AugmentConfig(flips=True, rot90=True))
        assert sorted(np.unique(m.numpy(), return_counts=True)[1]) == sorted(
            np.unique(mask, return_counts=True)[1])
