"""Tiling: crops, padding, mask resizing without erosion/dilation, background rejection, records."""

import numpy as np
import pytest
from skimage.draw import disk

from mammo_seg.data import features
from mammo_seg.data.cases import bounding_box, circle_mask
from mammo_seg.data.resolution import (SPACING_HEADER, SPACING_NOMINAL, SPACING_OVERRIDE, Resolution, ScanGrid,
                                       resize_image, resize_mask)
from mammo_seg.data.tiling import TilingConfig, extract, full_scan_record, tile_scan
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


def _scan_with_lesion():
    pixels = np.zeros((400, 400), np.float32)
    pixels[:, :300] = 0.5  # "breast" on the left three quarters, black background on the right
    mask = np.zeros((400, 400), bool)
    mask[180:220, 100:140] = True
    return pixels, mask, [bounding_box(mask)]


def test_roi_tiles_contain_the_lesion_and_background_is_rejected():
    pixels, mask, rois = _scan_with_lesion()
    config = TilingConfig(roi_crops=2, random_crops=6)
    tiles, counts = tile_scan(pixels, mask, rois, tile=32, factor=0.5, rng=np.random.default_rng(0), config=config)
    assert counts.roi == 2 and counts.roi + counts.random + counts.rejected_background == 8
    for t in tiles:
        assert t.image.shape == (32, 32) and t.image.dtype == np.uint16 and t.mask.dtype == np.uint8
        assert t.crop_size == 64 and t.scale == 0.5
        dark = np.count_nonzero(t.image <= round(10 / 255 * 65535))
        assert dark <= (0.9 if t.kind == "roi" else 0.8) * t.image.size
        top, left = t.origin
        # the tile's mask is the native mask under the crop, resized
        np.testing.assert_array_equal(t.mask, resize_mask(extract(mask, top, left, 64), (32, 32)))
    roi = [t for t in tiles if t.kind == "roi"]
    assert all(t.mask.any() for t in roi)
    assert all(0 <= t.origin[0] <= 400 - 64 and 0 <= t.origin[1] <= 400 - 64 for t in roi)


def test_all_background_scan_yields_no_tiles():
    pixels = np.zeros((300, 300), np.float32)
    pixels[0, 0] = 1.0
    tiles, counts = tile_scan(pixels, np.zeros((300, 300), bool), [], 32, 0.5, np.random.default_rng(0),
                              TilingConfig(roi_crops=2, random_crops=5))
    assert tiles == [] and counts.rejected_background == 5


def test_tiling_is_deterministic_for_a_seed():
    pixels, mask, rois = _scan_with_lesion()
    config = TilingConfig(roi_crops=2, random_crops=4)
    a, _ = tile_scan(pixels, mask, rois, 32, 0.5, np.random.default_rng(5), config)
    b, _ = tile_scan(pixels, mask, rois, 32, 0.5, np.random.default_rng(5), config)
    assert [t.origin for t in a] == [t.origin for t in b]


def test_full_scan_record_resamples_whole_scan():
    pixels, mask, _ = _scan_with_lesion()
    rec = full_scan_record(pixels, mask, ScanGrid(pixels.shape, 0.2, SPACING_HEADER, 0.25))
    assert rec.image.shape == (100, 100) and rec.kind == "full" and rec.crop_size == 400
    assert rec.mask.sum() == pytest.approx(mask.sum() / 16, rel=0.05)


def test_record_round_trip_is_exact(rng):
    import tensorflow as tf

    image = rng.integers(0, 65536, (37, 41), dtype=np.uint16)
    mask = (rng.random((37, 41)) > 0.5).astype(np.uint8)
    record = {"image": features.encode_png(image), "mask": features.encode_png(mask), "scan_id": "P_1_LEFT_CC",
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
