"""Tiling: crops, padding, mask resizing without erosion/dilation, background rejection, records."""

import numpy as np
import pytest
from skimage.draw import disk

from mammo_seg.data import features
from mammo_seg.data.cases import bounding_box, circle_mask
from mammo_seg.data.resolution import (SPACING_HEADER, SPACING_NOMINAL, SPACING_OVERRIDE, Resolution, ScanGrid,
                                       axis_weights, resample_image, resample_labels, resize_image, resize_labels,
                                       resize_mask)
from mammo_seg.data.tiling import TilingConfig, TrainingScan, extract, full_scan_record, tile_scan
from mammo_seg.errors import MammoError


def test_resolution_ties_scale_to_spacing():
    r = Resolution()
    assert round(320 / r.factor(0.05)) == 598 and round(640 / r.factor(0.05)) == 1196
    assert r.factor(0.2) == pytest.approx(4 * r.scale)  # a 200 µm scan is upsampled 4x more
    assert r.spacing_mm == pytest.approx(0.05 * 598 / 320)
    assert Resolution.from_dict(r.to_dict()) == r
    mias = Resolution(nominal_spacing_mm=0.2)
    assert Resolution.from_dict(mias.to_dict()) == mias and mias.to_dict()["nominal_spacing_mm"] == 0.2


def test_spacing_decision_order_and_limits():
    r = Resolution(scale=0.5, nominal_spacing_mm=0.2)  # one training pixel covers 0.1 mm
    assert r.decide_spacing((0.05, 0.07)) == (pytest.approx(0.06), SPACING_HEADER)
    assert r.decide_spacing(None) == (0.2, SPACING_NOMINAL)
    assert r.decide_spacing((0.05, 0.05), override_mm=0.1) == (0.1, SPACING_OVERRIDE)
    grid = r.grid((1024, 800), None)
    assert grid.factor == pytest.approx(2.0) and grid.shape == (2048, 1600) and grid.spacing_source == SPACING_NOMINAL
    for bad in [(0.0, 0.0), (-0.1, -0.1), (float("inf"), float("inf")), (50.0, 50.0), (1e-5, 1e-5)]:
        with pytest.raises(MammoError, match="outside the plausible range"):
            r.decide_spacing(bad)
    assert r.decide_spacing((50.0, 50.0), override_mm=0.05) == (0.05, SPACING_OVERRIDE)  # the override wins
    with pytest.raises(MammoError, match="no pixel spacing"):
        Resolution().decide_spacing(None)  # nothing recorded: refused, never guessed
    with pytest.raises(MammoError, match="--spacing"):
        r.decide_spacing(None, override_mm=0.0)


def test_scan_grid_round_trip_keeps_a_lesion():
    grid = Resolution(scale=0.5, nominal_spacing_mm=0.2).grid((300, 200), None)  # 60 x 40 mm; factor 2
    mask = np.zeros((300, 200), bool)
    mask[100:106, 40:45] = True
    up = grid.mask_to_training(mask)
    assert up.shape == (600, 400) and up.sum() == 4 * mask.sum()
    np.testing.assert_array_equal(grid.mask_to_native(up), mask)
    image = np.linspace(0, 1, 60000, dtype=np.float32).reshape(300, 200)
    assert grid.image_to_native(grid.image_to_training(image)).shape == (300, 200)
    assert grid.to_dict() == {"spacing_mm": 0.2, "spacing_source": SPACING_NOMINAL, "resampling_factor": 2.0,
                              "model_input_shape": [600, 400]}


def test_extract_pads_outside_the_scan():
    a = np.arange(1, 10, dtype=np.uint16).reshape(3, 3)
    np.testing.assert_array_equal(extract(a, -1, 1, 3), [[0, 0, 0], [2, 3, 0], [5, 6, 0]])
    np.testing.assert_array_equal(extract(a, 1, -2, 2), [[0, 0], [0, 0]])
    np.testing.assert_array_equal(extract(a, 0, 0, 3), a)


def test_mask_resize_is_coverage_threshold_exact_small_case():
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True  # exactly the top-left output pixel's footprint
    np.testing.assert_array_equal(resize_mask(m, (2, 2)), [[True, False], [False, False]])
    m = np.zeros((4, 4), bool)
    m[0, 0] = True  # covers a quarter of an output pixel: below half, so dropped
    assert not resize_mask(m, (2, 2)).any()


@pytest.mark.parametrize("shape", [(37, 23), (150, 150), (301, 120)])
def test_mask_resize_skips_only_lesion_free_masks_and_equals_the_resampled_result(shape):
    m = np.zeros((120, 90), bool)
    plain = resize_image(m.astype(np.float32), shape) >= 0.5  # the resampling the shortcut skips
    assert resize_mask(m, shape).shape == shape and not plain.any()
    np.testing.assert_array_equal(resize_mask(m, shape), plain)
    m[60:64, 40:47] = True
    np.testing.assert_array_equal(resize_mask(m, shape), resize_image(m.astype(np.float32), shape) >= 0.5)


@pytest.mark.parametrize("factor", [0.535, 0.25, 2.0])
def test_mask_resize_keeps_lesion_area(factor):
    n = 480
    mask = np.zeros((n, n), bool)
    rr, cc = disk((240, 240), 90, shape=mask.shape)
    mask[rr, cc] = True
    size = round(n * factor)
    out = resize_mask(mask, (size, size))
    expected = mask.sum() * (size / n) ** 2
    assert abs(out.sum() - expected) / expected < 0.03
    # the original's bilinear + integer cast erodes: keep only fully covered pixels
    from skimage.transform import resize
    eroded = (resize(mask.astype(float), (size, size), order=1, anti_aliasing=factor < 1) >= 0.999).sum()
    if factor < 1:
        assert eroded < out.sum() * 0.97


def test_circle_mask_uses_the_top_left_origin():
    m = circle_mask((8, 8), x=2, y=6, radius=1)
    assert sorted(zip(*np.nonzero(m))) == [(5, 2), (6, 1), (6, 2), (6, 3), (7, 2)]
    assert bounding_box(m) == (5, 1, 8, 4)


def test_axis_weights_hand_computed():
    # enlarging 2 -> 4: output centres at input coordinates -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1)
    np.testing.assert_array_equal(axis_weights(2, 4).toarray(), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    # shrinking 4 -> 2: Gaussian of sigma (2 - 1) / 2 = 0.5, radius int(4 * 0.5 + 0.5) = 2, edge repeated, then the
    # mean of input pixels 0 and 1 (output centre at coordinate 0.5)
    k = np.exp(-2.0 * np.arange(-2, 3) ** 2)
    k /= k.sum()
    g = np.zeros((4, 4))
    for i in range(4):
        for o, wk in zip(range(-2, 3), k):
            g[i, min(max(i + o, 0), 3)] += wk
    np.testing.assert_allclose(axis_weights(4, 2).toarray(), [(g[0] + g[1]) / 2, (g[2] + g[3]) / 2], atol=1e-7)
    np.testing.assert_allclose(axis_weights(4, 2).toarray().sum(axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("shape,out", [((50, 30), (27, 16)), ((37, 23), (80, 50)), ((40, 40), (30, 50)),
                                       ((400, 300), (214, 161))])
def test_resampling_once_equals_scikit_image_resize(shape, out, rng):
    image = rng.random(shape, dtype=np.float32)
    np.testing.assert_allclose(resample_image(image, out), resize_image(image, out), atol=5e-7)
    labels = np.zeros(shape, np.uint8)
    rr, cc = disk((shape[0] // 2, shape[1] // 2), min(shape) // 4, shape=shape)
    labels[rr, cc] = 1
    labels[:5, :7] = 2
    labels[3:6, 4:9] = 1
    np.testing.assert_array_equal(resample_labels(labels, out), resize_labels(labels, out))


def test_resample_labels_hand_computed():
    labels = np.zeros((4, 4), np.uint8)
    labels[:2, :2] = 1  # exactly the top-left output pixel's footprint
    labels[2:, 2:] = 2  # exactly the bottom-right one's: ignored
    labels[3, 0] = 1  # a quarter of the bottom-left one: below half
    np.testing.assert_array_equal(resample_labels(labels, (2, 2)), [[1, 0], [0, 2]])
    labels[2:, 2:] = 1  # lesion over the ignore region: the lesion wins
    labels[1:3, 1:3] = 2
    assert resample_labels(labels, (2, 2))[1, 1] == 1 and resample_labels(labels, (2, 2))[0, 0] == 1
    assert not resample_labels(np.zeros((9, 7), np.uint8), (4, 3)).any()


def test_a_tile_is_cut_from_the_scan_resampled_once_hand_computed():
    pixels = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)  # enlarged 2x: columns 0, 0.25, 0.75, 1
    labels = np.array([[0, 1], [0, 0]], np.uint8)
    scan = TrainingScan.resample(pixels, labels, ScanGrid((2, 2), 0.05, SPACING_HEADER, 2.0))
    np.testing.assert_array_equal(scan.image[0], [0, 16384, 49151, 65535])  # round(0.25 * 65535) = 16384
    np.testing.assert_array_equal(scan.labels, [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    t = scan.tile(1, 2, 4, "random")  # reaches past the scan: padded with 0
    np.testing.assert_array_equal(t.image[:3], [[49151, 65535, 0, 0]] * 3)
    assert not t.image[3:].any()
    np.testing.assert_array_equal(t.mask[:, :2], [[1, 1], [0, 0], [0, 0], [0, 0]])
    assert t.origin == (0, 1) and t.crop_size == 2 and t.scale == 2.0  # round(1 / 2) = 0 (half to even)
    assert scan.tile(3, 0, 1, "roi").origin == (2, 0)


def _scan_with_lesion(factor=0.5):
    pixels = np.zeros((400, 400), np.float32)
    pixels[:, :300] = 0.5  # "breast" on the left three quarters, black background on the right
    mask = np.zeros((400, 400), bool)
    mask[180:220, 100:140] = True
    return TrainingScan.resample(pixels, mask, ScanGrid((400, 400), 0.1, SPACING_HEADER, factor)), mask, \
        [bounding_box(mask)]


def test_roi_tiles_contain_the_lesion_and_background_is_rejected():
    scan, mask, rois = _scan_with_lesion()
    assert scan.image.shape == (200, 200)
    config = TilingConfig(roi_crops=2, random_crops=6)
    tiles, counts = tile_scan(scan, rois, tile=32, rng=np.random.default_rng(0), config=config)
    assert counts.roi == 2 and counts.roi + counts.random + counts.rejected_background == 8
    for t in tiles:
        assert t.image.shape == (32, 32) and t.image.dtype == np.uint16 and t.mask.dtype == np.uint8
        assert t.crop_size == 64 and t.scale == 0.5
        dark = np.count_nonzero(t.image <= round(10 / 255 * 65535))
        assert dark <= (0.9 if t.kind == "roi" else 0.8) * t.image.size
        top, left = t.origin
        assert top % 2 == 0 and left % 2 == 0  # on a 0.5 grid every training pixel starts on a native one
        # the tile is the training grid under it: the image and the native mask resampled once, cut
        np.testing.assert_array_equal(t.image, extract(scan.image, top // 2, left // 2, 32))
        np.testing.assert_array_equal(t.mask, extract(resize_mask(mask, (200, 200)).astype(np.uint8),
                                                      top // 2, left // 2, 32))
    roi = [t for t in tiles if t.kind == "roi"]
    # an ROI tile covers the whole 40 x 40 lesion (20 x 20 training pixels, its area kept)
    assert all(t.mask.sum() == 400 for t in roi)
    assert all(0 <= t.origin[0] <= 400 - 64 and 0 <= t.origin[1] <= 400 - 64 for t in roi)


def test_a_tile_covers_its_size_in_training_pixels_at_any_spacing():
    """At CBIS-DDSM's 50 µm a 320-px tile spans 598 native pixels (the original's crop); at MIAS's 200 µm, 150."""
    for spacing, crop, shape in ((0.05, 598, (4000, 3000)), (0.2, 150, (1000, 800))):
        grid = Resolution().grid(shape, (spacing, spacing))
        scan = TrainingScan(np.zeros(grid.shape, np.uint16), np.zeros(grid.shape, np.uint8), grid)
        t = scan.tile(10, 20, 320, "random")
        assert t.crop_size == crop and t.scale == pytest.approx(spacing / Resolution().spacing_mm)
        assert t.crop_size * spacing == pytest.approx(320 * Resolution().spacing_mm, rel=0.005)


def test_all_background_scan_yields_no_tiles():
    pixels = np.zeros((300, 300), np.float32)
    pixels[0, 0] = 1.0
    scan = TrainingScan.resample(pixels, np.zeros((300, 300), bool), ScanGrid((300, 300), 0.1, SPACING_HEADER, 0.5))
    tiles, counts = tile_scan(scan, [], 32, np.random.default_rng(0), TilingConfig(roi_crops=2, random_crops=5))
    assert tiles == [] and counts.rejected_background == 5


def test_tiling_is_deterministic_for_a_seed():
    scan, mask, rois = _scan_with_lesion()
    config = TilingConfig(roi_crops=2, random_crops=4)
    a, _ = tile_scan(scan, rois, 32, np.random.default_rng(5), config)
    b, _ = tile_scan(scan, rois, 32, np.random.default_rng(5), config)
    assert [t.origin for t in a] == [t.origin for t in b]
    assert [t.image.tobytes() + t.mask.tobytes() for t in a] == [t.image.tobytes() + t.mask.tobytes() for t in b]


def test_full_scan_record_is_the_scan_resampled_once():
    scan, mask, _ = _scan_with_lesion(factor=0.25)
    rec = full_scan_record(scan)
    assert rec.image.shape == (100, 100) and rec.kind == "full" and rec.crop_size == 400 and rec.scale == 0.25
    assert rec.mask.sum() == pytest.approx(mask.sum() / 16, rel=0.05)
    np.testing.assert_array_equal(rec.image, features.image_to_uint16(resize_image(
        np.where(np.arange(400) < 300, 0.5, 0.0).astype(np.float32)[None].repeat(400, 0), (100, 100))))


def test_record_round_trip_is_exact(rng):
    import tensorflow as tf

    image = rng.integers(0, 65536, (37, 41), dtype=np.uint16)
    mask = (rng.random((37, 41)) > 0.5).astype(np.uint8)
    record = {"image": features.encode_image(image), "shape": [37, 41], "mask": features.encode_png(mask),
              "scan_id": "P_1_LEFT_CC",
              "patient_id": "P_1", "split": "val", "source": "cbis-ddsm", "abnormality": ["calcification", "mass"],
              "origin": [-5, 12], "crop_size": 598, "scale": 0.5}
    ex = features.parse(tf.constant(features.serialize(record)))
    np.testing.assert_array_equal(ex["image"].numpy()[..., 0], image)
    np.testing.assert_array_equal(ex["mask"].numpy()[..., 0], mask)
    assert ex["image"].dtype == tf.uint16 and ex["mask"].dtype == tf.uint8
    assert ex["abnormality"].numpy().tolist() == [b"calcification", b"mass"]
    assert ex["origin"].numpy().tolist() == [-5, 12] and int(ex["crop_size"]) == 598
    assert float(ex["scale"]) == 0.5 and ex["split"].numpy() == b"val"
    # the same record always serialises to the same bytes
    assert features.serialize(record) == features.serialize(dict(record))


def test_a_raw_image_is_its_little_endian_bytes_and_a_png_record_still_reads():
    import tensorflow as tf

    image = np.array([[1, 256], [65535, 2]], np.uint16)
    assert features.encode_image(image) == bytes([1, 0, 0, 1, 255, 255, 2, 0])
    with pytest.raises(ValueError, match="uint16"):
        features.encode_image(image.astype(np.uint8))
    mask = np.array([[0, 1], [2, 0]], np.uint8)
    base = {"mask": features.encode_png(mask), "scan_id": "mdb001", "patient_id": "mias_001", "split": "train",
            "source": "mias", "abnormality": [], "origin": [0, 0], "crop_size": 2, "scale": 1.0}
    for record in ({**base, "image": features.encode_image(image), "shape": [2, 2]},
                   {**base, "image": features.encode_png(image)}):  # written before images were stored raw
        ex = features.parse(tf.constant(features.serialize(record)))
        np.testing.assert_array_equal(ex["image"].numpy()[..., 0], image)
        np.testing.assert_array_equal(ex["mask"].numpy()[..., 0], mask)
    truncated = {**base, "image": features.encode_image(image)[:-2], "shape": [2, 2]}
    with pytest.raises(tf.errors.InvalidArgumentError):
        features.parse(tf.constant(features.serialize(truncated)))


def test_raw_images_decode_inside_tf_data(tmp_path, rng):
    import tensorflow as tf

    images = [rng.integers(0, 65536, shape, dtype=np.uint16) for shape in ((3, 5), (4, 2))]
    path = str(tmp_path / "a.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for image in images:
            w.write(features.serialize({"image": features.encode_image(image), "shape": list(image.shape),
                                        "mask": features.encode_png(np.zeros(image.shape, np.uint8)),
                                        "scan_id": "s", "patient_id": "p", "split": "train", "source": "mias",
                                        "abnormality": [], "origin": [0, 0], "crop_size": 1, "scale": 1.0}))
    decoded = [ex["image"].numpy()[..., 0] for ex in tf.data.TFRecordDataset(path).map(features.parse)]
    for got, want in zip(decoded, images, strict=True):
        np.testing.assert_array_equal(got, want)
