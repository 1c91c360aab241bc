"""Lesion-level detection and FROC arithmetic on hand-made probability maps with known answers."""

import numpy as np
import pytest

from mammo_seg.detection import ScanLesions, find_detections, froc, match, min_area_px, score_scans


def box(shape, r0, r1, c0, c1):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def two_scans():
    """Scan 1: lesion L1 (CIRC) hit by A, lesion L2 (SPIC) missed, FP B, 1-px speck C. Scan 2: normal, faint blob."""
    prob = np.zeros((20, 20), np.float32)
    prob[2:5, 2:5] = 0.92  # A: 9 px on L1
    prob[3, 3] = 0.97  # A's peak
    prob[10:12, 10:12] = 0.6  # B: 4 px, no lesion there
    prob[18, 18] = 0.8  # C: 1 px, below the minimum area
    lesions = [box((20, 20), 2, 6, 2, 6), box((20, 20), 14, 17, 2, 5)]
    normal = np.zeros((20, 20), np.float32)
    normal[5:7, 5:7] = 0.32
    return [ScanLesions(prob, lesions, ["CIRC", "SPIC"], 0.04), ScanLesions(normal, [], [], 0.04)]


def test_detections_are_components_above_the_minimum_area_scored_by_their_peak():
    scan = two_scans()[0]
    assert min_area_px(0.1, 0.04) == 3 and min_area_px(0.04, 0.04) == 1 and min_area_px(0.0, 0.04) == 1
    found = find_detections(scan.probability, 0.5, min_area=3)
    assert [(d.peak, d.score, d.area_px) for d in found] == [((3, 3), pytest.approx(0.97), 9),
                                                            ((10, 10), pytest.approx(0.6), 4)]
    assert len(find_detections(scan.probability, 0.5, min_area=1)) == 3  # the speck counts without a minimum
    assert find_detections(scan.probability, 0.95, min_area=3) == []  # only A's peak pixel is left


def whole_map_detections(probability, threshold, min_area):
    """The definition, computed plainly: every component of the whole map, its peak the first pixel (row-major)
    of its maximum, sorted by score with ties in raster order of the components."""
    from mammo_seg.detection import Detection, lesion_components

    components, n = lesion_components(probability >= threshold)
    found = []
    for k in range(1, n + 1):
        pixels = np.flatnonzero(components.ravel() == k)
        if pixels.size >= min_area:
            best = pixels[np.argmax(probability.ravel()[pixels])]
            found.append(Detection(tuple(int(v) for v in np.unravel_index(best, probability.shape)),
                                   float(probability.ravel()[best]), int(pixels.size)))
    return sorted(found, key=lambda d: -d.score)


def test_detections_in_the_window_over_the_threshold_are_those_of_the_whole_map():
    rng = np.random.default_rng(0)
    checked = 0
    for shape in [(1, 1), (1, 9), (9, 1), (30, 40), (64, 17)]:
        for case in range(12):
            dtype = (np.float32, np.float16, np.float64)[case // 4]
            prob = np.round(rng.random(shape), 1).astype(dtype)  # tenths: many equal values and scores
            if dtype == np.float64 and prob.size > 1:
                prob.flat[1] += 1e-12  # a value float32 would round onto its neighbours
            if case % 3 == 0:
                prob[: shape[0] // 2] = 0  # a window that does not start at the corner
            if case % 4 == 1:
                prob[:, : shape[1] // 3] = 0
            for threshold in (0.05, np.float64(0.05), 0.5, np.float64(0.85), 1.0, 1.1):
                for min_area in (1, 3):
                    assert find_detections(prob, threshold, min_area) == whole_map_detections(prob, threshold,
                                                                                             min_area)
                    checked += bool(whole_map_detections(prob, threshold, min_area))
    assert checked > 300
    counts = (rng.integers(1024, 1500, (40, 30)) * 2 + 1).astype(np.uint16)  # odd, over 2048: float16 rounds all
    for threshold in (1000, 2500):
        assert find_detections(counts, threshold, 1) == whole_map_detections(counts, threshold, 1)


def test_centre_in_lesion_matching():
    scan = two_scans()[0]
    found, fp = match(find_detections(scan.probability, 0.5, 3), scan.lesions)
    assert found == [True, False] and fp == 1
    # two detections on one lesion: found once, and the second is not a false positive
    prob = np.zeros((20, 20), np.float32)
    prob[2, 2] = prob[5, 5] = 0.9
    found, fp = match(find_detections(prob, 0.5, 1), scan.lesions)
    assert found == [True, False] and fp == 0


def test_scores_at_one_threshold():
    result = score_scans(two_scans(), 0.5, min_area_mm2=0.1)
    assert (result["lesions"], result["found"], result["sensitivity"]) == (2, 1, 0.5)
    assert (result["false_positives"], result["fp_per_image"]) == (1, 0.5)
    assert result["sensitivity_by_kind"] == {"CIRC": 1.0, "SPIC": 0.0}
    assert (result["normal_scans"], result["normal_scans_with_detection"]) == (1, 0)
    low = score_scans(two_scans(), 0.3, min_area_mm2=0.1)  # the faint blob on the normal scan is now a detection
    assert (low["false_positives"], low["normal_with_detection_rate"]) == (2, 1.0)


def test_froc_points_and_sensitivity_at_false_positive_rates():
    result = froc(two_scans(), min_area_mm2=0.1)
    points = {p["threshold"]: (p["sensitivity"], p["fp_per_image"]) for p in result["points"]}
    assert points[0.01] == points[0.05] == points[0.3] == (0.5, 1.0)  # B and the faint blob
    assert points[0.35] == points[0.6] == (0.5, 0.5)  # B only
    assert points[0.65] == points[0.9] == (0.5, 0.0)
    assert points[0.95] == (0.0, 0.0)
    assert result["sensitivity_at_fp_per_image"] == {"0.25": 0.5, "0.5": 0.5, "1": 0.5, "2": 0.5, "4": 0.5}
    assert result["images"] == 2 and result["mean_sensitivity"] == 0.5
    assert result["fp_per_image_reached"] == 1.0  # "at 2 and 4 FP/image" is the flat extension of the 1.0 point


def test_froc_reports_how_far_the_sweep_reaches():
    # one scan, one lesion never above 0.015, a 0.015 speck elsewhere: only the 0.01 threshold sees them
    prob = np.zeros((10, 10), np.float32)
    prob[1, 1] = 0.012  # inside the lesion
    prob[8, 8] = 0.015  # a false positive
    result = froc([ScanLesions(prob, [box((10, 10), 0, 3, 0, 3)], ["CIRC"], 1.0)], 0.0)
    points = {p["threshold"]: (p["sensitivity"], p["fp_per_image"]) for p in result["points"]}
    assert points[0.01] == (1.0, 1.0) and points[0.02] == points[0.05] == (0.0, 0.0)
    assert result["fp_per_image_reached"] == 1.0
    assert result["sensitivity_at_fp_per_image"] == {"0.25": 0.0, "0.5": 0.0, "1": 1.0, "2": 1.0, "4": 1.0}


def test_failed_predictions_count_as_missed_lesions_and_images():
    scans = two_scans() + [ScanLesions(None, [box((20, 20), 0, 3, 0, 3)], ["CALC"], 0.04)]
    result = score_scans(scans, 0.5, min_area_mm2=0.1)
    assert (result["lesions"], result["found"], result["fp_per_image"]) == (3, 1, pytest.approx(1 / 3))
    assert result["sensitivity_by_kind"]["CALC"] == 0.0
    # no lesion anywhere: sensitivities do not exist (None, never NaN)
    empty = froc([ScanLesions(np.zeros((4, 4), np.float32), [], [], 1.0)], 0.0)
    assert empty["sensitivity_at_fp_per_image"]["1"] is None and empty["mean_sensitivity"] is None


def test_detection_mask_drops_components_below_the_minimum_area():
    prob = two_scans()[0].probability
    from mammo_seg.detection import detection_mask

    np.testing.assert_array_equal(detection_mask(prob, 0.5, 1), prob >= 0.5)
    kept = detection_mask(prob, 0.5, 3)
    assert kept.sum() == 9 + 4 and not kept[18, 18]  # A and B stay, the 1-px speck goes
    assert detection_mask(prob, 0.5, 5).sum() == 9


def test_lesion_dice_of_the_detections_at_a_threshold_and_area():
    from mammo_seg.detection import detection_dice

    scan = two_scans()[0]
    lesion = scan.lesions[0] | scan.lesions[1]  # 16 + 9 pixels
    # A (9 px, all on L1) and B (4 px, on no lesion): 2·9 / (13 + 25); at 5 px B is dropped: 2·9 / (9 + 25)
    assert detection_dice(scan.probability, lesion, 0.5, 3) == pytest.approx(18 / 38)
    assert detection_dice(scan.probability, lesion, 0.5, 5) == pytest.approx(18 / 34)
    ignore = box((20, 20), 10, 12, 10, 12)  # B lies in an ignore region: in neither mask
    assert detection_dice(scan.probability, lesion, 0.5, 3, ignore) == pytest.approx(18 / 34)
    assert detection_dice(scan.probability, lesion, 0.99, 1) == 0.0


def test_a_scan_finds_its_detections_once_per_threshold_and_area(monkeypatch):
    import mammo_seg.detection as detection

    prob = np.zeros((10, 10), np.float32)
    prob[2:5, 2:5] = 0.8
    scan = detection.ScanLesions(prob, [prob > 0.5], ["CIRC"], 1.0)
    calls = []
    real = detection.find_detections
    monkeypatch.setattr(detection, "find_detections", lambda *a: calls.append(a[1:]) or real(*a))
    first = detection.froc([scan], 0.0, thresholds=(0.5, 0.9))
    assert detection.froc([scan], 0.0, thresholds=(0.5, 0.9)) == first  # the FROC again: nothing recomputed
    assert calls == [(0.5, 1), (0.9, 1)]
    assert scan.detections(0.5, 0.0) == real(prob, 0.5, 1) and scan.detections(0.5, 10.0) == []  # 9 px < 10 mm²
    assert detection.ScanLesions(None, [], [], 1.0).detections(0.5, 0.0) == []  # a failed prediction
