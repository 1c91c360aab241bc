"""predict's post-processing done only where it is needed: the probabilities back on the scan's grid where the
lesions need them (the same mask, lesions and SEG as the whole map gives; the oracle below is predict's
post-processing before it was computed tile by tile), the overlay's outline within the lesions' box."""

import json
import os

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy import ndimage

from mammo_seg.data.resolution import Resolution, resize_image, resize_image_window
from mammo_seg.detection import detection_mask, min_area_px
from mammo_seg.inference.predict import FORMATS, PredictOptions, Segmenter, predict
from mammo_seg.inference.prediction_output import DEFAULT_FORMATS, PredictionOutput
from mammo_seg.inference.scan_probability import TILE, lesion_mask, scan_probability
from mammo_seg.inference.writers import OVERLAY_MAX_SIDE, _block_any, lesion_report, outline, write_overlay
from skimage.segmentation import find_boundaries


def smooth_map(shape, sigma, seed):
    """A probability map in [0, 1] with blobs, as a network's looks."""
    p = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape).astype(np.float32), sigma)
    return ((p - p.min()) / (p.max() - p.min())).astype(np.float32)


def oracle(grid, prob, threshold, min_area):
    """The whole map on the scan's grid, its mask and lesion report, as predict computed them before."""
    whole = np.clip(grid.image_to_native(prob), 0.0, 1.0).astype(np.float16).astype(np.float32)
    mask = detection_mask(whole, threshold, min_area)
    return whole, mask, lesion_report(mask, whole, 0.01, 1.0)


@pytest.mark.parametrize("image_shape, shape", [((37, 23), (150, 97)), ((40, 30), (40, 30)), ((90, 70), (41, 33)),
                                                 ((30, 60), (75, 45)), ((1, 5), (4, 17))])
def test_a_window_of_the_resampled_image_has_the_values_of_the_whole(image_shape, shape):
    image = np.random.default_rng(0).random(image_shape).astype(np.float32) * 3 - 1
    whole = resize_image(image, shape)
    rng = np.random.default_rng(1)
    windows = [(slice(0, shape[0]), slice(0, shape[1])), (slice(0, 1), slice(shape[1] - 1, shape[1])),
               (slice(shape[0] - 3, shape[0]), slice(0, 2))]
    for _ in range(20):
        r0, c0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        windows.append((slice(r0, rng.integers(r0 + 1, shape[0] + 1)), slice(c0, rng.integers(c0 + 1, shape[1] + 1))))
    for rows, cols in windows:
        window = resize_image_window(image, shape, rows, cols)
        assert window.dtype == np.float32 and np.array_equal(window, whole[rows, cols]), (rows, cols)


@pytest.mark.parametrize("native, sigma, quantile, min_area", [
    ((1600, 1100), 4, 0.999, 1), ((1600, 1100), 4, 0.99, 30), ((1200, 700), 2, 0.9, 5), ((900, 1400), 6, 0.5, 1),
    ((1000, 800), 3, 1.0, 1), ((300, 200), 2, 0.95, 3)])
def test_the_mask_its_values_and_the_maximum_are_those_of_the_whole_map(native, sigma, quantile, min_area):
    grid = Resolution(scale=0.25, nominal_spacing_mm=0.05).grid(native, None, whole=False)  # 300 x 200: a crop
    prob = smooth_map(grid.shape, sigma, seed=native[0] + sigma)
    threshold = float(np.quantile(prob, quantile)) if quantile < 1 else 0.999  # 1.0: over every value
    whole, mask, report = oracle(grid, prob, threshold, min_area)
    found = lesion_mask(grid, prob, threshold, min_area)
    assert np.array_equal(found.mask, mask) and found.maximum == float(whole.max())
    assert np.array_equal(found.values[mask], whole[mask])
    assert lesion_report(found.mask, found.values, 0.01, 1.0, found.maximum) == report
    assert np.array_equal(lesion_mask(grid, prob, threshold, min_area, whole).mask, mask)
    if quantile == 0.999:  # a few small spots: most tiles were never computed
        skipped = (found.values == 0) & (whole > 0)
        assert mask.any() and skipped.mean() > 0.5 and native[0] > 2 * TILE


def test_a_map_under_the_threshold_everywhere_gives_no_lesion_and_its_maximum():
    grid = Resolution(scale=0.25, nominal_spacing_mm=0.05).grid((1300, 900), None)
    prob = smooth_map(grid.shape, 3, seed=7) * np.float32(0.4)
    found = lesion_mask(grid, prob, 0.5, 1)
    assert not found.mask.any() and found.maximum == float(scan_probability(grid, prob).max()) > 0.3


def phantom_dicom(path, seed):
    """A small phantom mammogram (16-bit DICOM, 0.05 mm) with a spiculated mass, written as prep's synth writes."""
    from mammo_seg.synthetic import phantom as ph
    from mammo_seg.synthetic.dicom import image_dataset, make_uid, save

    rng = np.random.default_rng(seed)
    breast = ph.make_breast((1400, 900), "MLO", True, 0.05, 3, rng)
    ph.add_mass(breast, "spiculated", 8, 0.1, 0.05, rng)
    ph.add_noise_and_label(breast, 0.05, rng, label=True)
    save(image_dataset(np.round(breast.image * 32000).astype(np.uint16), patient_id="P", laterality="L", view="MLO",
                       study_uid=make_uid(path, "st"), series_uid=make_uid(path, "se"), sop_uid=make_uid(path, "so"),
                       spacing_mm=0.05), path)
    return path


def assert_same_outputs_as_the_whole_map(model, folder, tmp_path, threshold, min_area, spacing=None):
    """predict's default outputs (no probability map) against those with it and against the oracle."""
    options = dict(threshold=threshold, min_area_mm2=min_area, spacing_mm=spacing)
    fast = str(tmp_path / "default")
    full = str(tmp_path / "all")
    predict(model, folder, fast, PredictOptions(**options), progress=False)
    predict(model, folder, full, PredictOptions(**options, formats=FORMATS), progress=False)
    fast, full = PredictionOutput(fast), PredictionOutput(full)
    lesions = 0
    for record in full.read_summary()["scans"]:
        assert record["status"] == "ok" and sorted(record["outputs"]) == sorted(FORMATS)
        mine = json.load(open(fast.scan_file(record["id"], "json")))
        assert sorted(mine["outputs"]) == sorted(DEFAULT_FORMATS)  # prob only on request
        prob = full.probability(record)
        area = record["spacing_mm"] ** 2
        mask = detection_mask(prob, threshold, min_area_px(min_area, area))
        report = json.loads(json.dumps(lesion_report(mask, prob, area, min_area)))
        assert {k: mine[k] for k in report} == report
        assert np.array_equal(np.asarray(Image.open(fast.scan_file(record["id"], "mask"))) > 0, mask)
        for kind in ("mask", "seg", "sr", "overlay"):
            with open(fast.scan_file(record["id"], kind), "rb") as a, open(full.scan_file(record["id"], kind), "rb") as b:
                assert a.read() == b.read(), kind
        seg = hd.seg.segread(fast.scan_file(record["id"], "seg"))
        source = pydicom.dcmread(os.path.join(folder, record["source"]))
        back = seg.get_pixels_by_source_instance(source_sop_instance_uids=[source.SOPInstanceUID], segment_numbers=[1])
        assert np.array_equal(back[0, :, :, 0].astype(bool), mask)
        assert seg.get_segment_description(1).segment_label == "lesion"
        lesions += report["lesion_count"]
    return lesions


def test_predict_without_the_probability_map_writes_the_same_mask_lesions_and_seg(model_file, tmp_path):
    folder = tmp_path / "in"
    os.makedirs(folder)
    paths = [phantom_dicom(str(folder / f"{name}.dcm"), seed) for seed, name in enumerate("ab")]
    prob = Segmenter(model_file, PredictOptions(threshold=0.5, min_area_mm2=0.0))(paths[0]).probability
    threshold = float(np.quantile(prob, 0.998))  # a few spots on an untrained model's map
    assert assert_same_outputs_as_the_whole_map(model_file, str(folder), tmp_path, threshold, 0.05) >= 2
    assert PredictOptions().formats == DEFAULT_FORMATS == ("mask", "overlay", "seg", "sr", "json")


def test_the_overlay_outline_found_in_the_lesions_box_is_the_whole_images():
    def whole_image(mask, step, shape):  # the overlay's outline as it was found before, on the whole shrunk mask
        small = mask if step == 1 else _block_any(mask, step)[:shape[0], :shape[1]]
        edge = find_boundaries(small, mode="outer")
        return edge | np.roll(edge, 1, 0) | np.roll(edge, 1, 1)

    rng = np.random.default_rng(0)
    for h, w, step in [(100, 70, 1), (101, 77, 3), (50, 50, 2), (7, 9, 4), (900, 600, 5)]:
        shape = (-(-h // step), -(-w // step))
        for k in range(25):
            mask = np.zeros((h, w), bool)
            for _ in range(rng.integers(1, 4) if k > 2 else 0):
                r, c = rng.integers(0, h), rng.integers(0, w)
                mask[r:r + rng.integers(1, 40), c:c + rng.integers(1, 40)] = True
            if k == 1:
                mask[-1, :] = True  # the outline wraps round at the far edges
            if k == 2:
                mask[:, 0] = mask[0, -1] = True
            assert np.array_equal(outline(mask, step, shape), whole_image(mask, step, shape)), (h, w, step, k)


def test_block_any_marks_each_block_with_a_lesion_pixel():
    mask = np.zeros((5, 7), bool)
    mask[0, 0] = mask[2, 5] = mask[4, 6] = True  # blocks (0, 0), (0, 1) at step 3; the last row and column cut short
    assert np.array_equal(_block_any(mask, 3), [[True, True, False], [False, False, True]])
    assert np.array_equal(_block_any(mask, 1), mask)
    rng = np.random.default_rng(0)
    for h, w, step in [(101, 77, 3), (50, 50, 2), (7, 9, 4), (903, 601, 5), (3, 2, 5)]:
        mask = rng.random((h, w)) > 0.995
        padded = np.zeros((-(-h // step) * step, -(-w // step) * step), bool)  # the 4-D view's reduction
        padded[:h, :w] = mask
        blocks = padded.reshape(padded.shape[0] // step, step, padded.shape[1] // step, step).any(axis=(1, 3))
        assert np.array_equal(_block_any(mask, step), blocks), (h, w, step)


def test_the_overlay_is_a_preview_of_at_most_1024_px_a_side(tmp_path):
    """A 2100 x 900 scan is shrunk by 3 (1024 px a side at most) to 700 x 300: every third pixel of every third
    row, in grey, stretched between its 0.5 and 99.5 percentiles, with the lesion's outline in red."""
    assert OVERLAY_MAX_SIDE == 1024
    pixels = np.tile((np.arange(900, dtype=np.float32) % 201) / 200, (2100, 1))  # columns 0 to 1 in steps of 0.005
    mask = np.zeros(pixels.shape, bool)
    mask[300:360, 450:600] = True  # blocks rows 100 to 119, columns 150 to 199
    path, step = write_overlay(str(tmp_path / "o.png"), pixels, mask)
    overlay = np.asarray(Image.open(path))
    assert step == 3 and overlay.shape == (700, 300, 3)
    red = (overlay == (255, 40, 40)).all(axis=2)
    assert red[99, 150:201].all() and red[120, 150:201].all() and red[100:121, 149].all() and red[100:121, 200].all()
    # the 4-connected outer ring (2 x 50 + 2 x 20); a copy a row down adds rows 100 and 121 and (120, 149), (120, 200);
    # a copy a column right adds (99, 200), column 150's rows 101 to 119 and column 201's rows 100 to 119
    assert red.sum() == 140 + (2 * 50 + 2) + (1 + 19 + 20)
    grey = overlay[~red]
    assert (grey[:, 0] == grey[:, 1]).all() and (grey[:, 1] == grey[:, 2]).all()
    row = overlay[0, :, 0]  # columns 0, 3, ..., 897: values (3k mod 201) / 200; percentiles 0.005 and 0.995 of them
    lo, hi = np.percentile(pixels[::3, ::3], [0.5, 99.5])
    expected = (np.clip((pixels[0, ::3] - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(row, expected) and row.min() == 0 and row.max() == 255


def assert_same_files_as_with_skimage_resampling(model, folder, tmp_path, threshold, min_area, monkeypatch,
                                                  spacing=None) -> int:
    """predict with its network input resampled as prep resamples (``resample_image``, now) and as it was before
    (scikit-image's ``resize``): the mask, the lesion reports, the SEG, the SR, the overlay and the summary the same
    bytes, the probability map (on request) the same to a float16 step. The two inputs differ (by float32
    rounding), so the comparison is not of one computation with itself. Returns the
    number of lesions found, for the caller to check that there was something to compare."""
    from mammo_seg.data.resolution import ScanGrid, resample_image

    grid = Resolution().grid((1400, 1000), 0.05)
    image = np.random.default_rng(0).random((1400, 1000)).astype(np.float32)
    np.testing.assert_array_equal(grid.image_to_training(image), resample_image(image, grid.shape))  # what runs now
    options = PredictOptions(threshold=threshold, min_area_mm2=min_area, spacing_mm=spacing, formats=FORMATS)
    now = str(tmp_path / "resample_image")
    predict(model, folder, now, options, progress=False)
    inputs = []

    def former(grid, image):
        inputs.append((resample_image(image, grid.shape), resize_image(image, grid.shape)))
        return inputs[-1][1]

    with monkeypatch.context() as patch:
        patch.setattr(ScanGrid, "image_to_training", former)
        before = str(tmp_path / "resize")
        predict(model, folder, before, options, progress=False)
    assert inputs and all(np.abs(a - b).max() < 1e-6 for a, b in inputs)
    assert any((a != b).any() for a, b in inputs)
    def files(top):
        return sorted(os.path.relpath(os.path.join(root, name), top) for root, _, names in os.walk(top)
                      for name in names if name != PredictionOutput.TIMINGS)

    assert files(now) == files(before)
    for name in files(now):
        mine, other = os.path.join(now, name), os.path.join(before, name)
        if name.endswith(".npz"):  # the probability map (on request): float16 values, each within a step
            a, b = (np.load(path)["probability"].astype(np.float32) for path in (mine, other))
            assert np.abs(a - b).max() <= 2 ** -11 and np.mean(a != b) < 0.01, name
            continue
        with open(mine, "rb") as a, open(other, "rb") as b:
            assert a.read() == b.read(), name
    output = PredictionOutput(now)
    return sum(json.load(open(output.scan_file(record["id"], "json")))["lesion_count"]
               for record in output.read_summary()["scans"])


def test_predict_resampling_its_input_as_prep_does_writes_the_same_bytes_as_before(model_file, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    os.makedirs(folder)
    paths = [phantom_dicom(str(folder / f"{name}.dcm"), seed) for seed, name in enumerate("ab")]
    prob = Segmenter(model_file, PredictOptions(threshold=0.5, min_area_mm2=0.0))(paths[0]).probability
    threshold = float(np.quantile(prob, 0.998))
    assert assert_same_files_as_with_skimage_resampling(model_file, str(folder), tmp_path, threshold, 0.05,
                                                        monkeypatch) >= 2
