"""One table of hand-computed overlap cases through every place that scores overlap: the region losses at
smoothing 0, the Keras metrics, evaluate's case metrics and the per-scan lesion report; and the measurement
rules each of them shares (the image-level call, what a lesion is, a pixel's area)."""

import math

import numpy as np
import pytest

from mammo_seg.data.resolution import SPACING_HEADER, SPACING_NOMINAL, ScanGrid
from mammo_seg.detection import find_detections, image_positive, lesion_components
from mammo_seg.evaluate import _pixel_area_mm2, case_metrics
from mammo_seg.inference.writers import lesion_report
from mammo_seg.losses import DiceLoss, SoftIoULoss, TverskyLoss
from mammo_seg.metrics import ImageRecall, LesionDice, LesionIoU, PixelPrecision, PixelRecall
from mammo_seg.overlap import confusion_sums, ratio, scores

# (prediction, reference, TP, FP, FN): 4 x 4 masks
CASES = {
    "half overlap": ("1100/1100/0000/0000", "0110/0110/0000/0000", 2, 2, 2),
    "identical": ("0000/0110/0110/0000", "0000/0110/0110/0000", 4, 0, 0),
    "disjoint": ("1000/0000/0000/0000", "0000/0000/0000/0001", 0, 1, 1),
    "inside": ("1111/1111/0000/0000", "0000/0110/0000/0000", 2, 6, 0),
    "missed": ("0000/0000/0000/0000", "0000/0000/0011/0011", 0, 0, 4),
}


def grid(text):
    return np.array([[c == "1" for c in row] for row in text.split("/")])


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_overlap_score_agrees_on_hand_computed_cases(name):
    pred_text, ref_text, tp, fp, fn = CASES[name]
    pred, ref = grid(pred_text), grid(ref_text)
    iou = tp / (tp + fp + fn)
    dice = 2 * tp / (2 * tp + fp + fn)
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn)
    m = case_metrics(pred, ref)
    assert (m["TP"], m["FP"], m["FN"], m["TN"]) == (tp, fp, fn, 16 - tp - fp - fn)
    assert m["IoU"] == pytest.approx(iou) and m["Dice"] == pytest.approx(dice) and m["recall"] == pytest.approx(recall)
    assert m["precision"] == pytest.approx(precision, nan_ok=True)
    logits = np.where(pred, 30.0, -30.0).astype("float32")[None, :, :, None]
    y = ref.astype("float32")[None, :, :, None]
    loss = float(SoftIoULoss(smooth=0.0)(y, logits))
    assert loss == pytest.approx(1 - iou, abs=1e-6)
    assert [float(v) for v in confusion_sums(pred.astype("float32"), y[0, ..., 0])] == [tp, fp, fn]
    assert float(DiceLoss(smooth=0.0)(y, logits)) == pytest.approx(1 - dice, abs=1e-6)
    tversky = (tp / (tp + 0.3 * fp + 0.7 * fn)) if tp + fp + fn else 0.0
    tversky_loss = float(TverskyLoss(alpha=0.3, beta=0.7, smooth=0.0)(y, logits))
    assert tversky_loss == pytest.approx(1 - tversky, abs=1e-6)
    for metric, expected in ((LesionIoU(), iou), (LesionDice(), dice), (PixelRecall(), recall),
                             (PixelPrecision(), 0.0 if math.isnan(precision) else precision)):
        metric.update_state(y, logits)
        assert float(metric.result()) == pytest.approx(expected, abs=1e-6), metric.name
    report = lesion_report(pred, pred.astype("float32"), 1.0)
    assert report["lesion_area_px"] == tp + fp and report["image_positive"] == (tp + fp > 0)
    # the image-level call: the whole-scan rule (share 0) in the report, the tile rule (1/750) in the others
    assert report["image_positive"] == image_positive(tp + fp, 16) == case_metrics(pred, ref, 0.0)[
        "image_predicted_positive"]
    assert m["image_predicted_positive"] == image_positive(tp + fp, 16, 1 / 750) == (tp + fp > 0)
    recall = ImageRecall()
    recall.update_state(y, logits)
    assert float(recall.result()) == (1.0 if tp + fp > 0 else 0.0)  # every case's reference has a lesion


def test_an_empty_denominator_is_nan_in_evaluation_and_0_in_the_graph():
    assert all(math.isnan(v) for v in scores(0, 0, 0).values())
    assert scores(0, 0, 4)["precision"] != scores(0, 0, 4)["precision"] and scores(0, 0, 4)["recall"] == 0.0
    assert float(ratio(np.float32(0.0), np.float32(0.0))) == 0.0
    assert float(ratio(np.float32(3.0), np.float32(4.0))) == 0.75


def test_image_call_threshold_is_strict():
    assert not image_positive(0, 16) and image_positive(1, 16)
    assert not image_positive(2, 1500, 1 / 750) and image_positive(3, 1500, 1 / 750)  # exceeds, not reaches


def test_a_lesion_is_an_8_connected_component_everywhere():
    mask = grid("1000/0100/0000/0011")  # two pixels touching at a corner: one lesion; and a second one
    labels, n = lesion_components(mask)
    assert n == 2 and labels[0, 0] == labels[1, 1] == 1 and labels[3, 2] == labels[3, 3] == 2
    assert lesion_report(mask, mask.astype("float32"), 1.0)["lesion_count"] == 2
    assert [d.area_px for d in find_detections(mask.astype("float32"), 0.5, 1)] == [2, 2]


def test_a_pixels_area_is_the_grids():
    header = ScanGrid((10, 10), 0.15, SPACING_HEADER, 1.0)
    assert header.pixel_area_mm2((0.1, 0.2)) == pytest.approx(0.02)  # the file's row x column spacing
    assert header.pixel_area_mm2() == pytest.approx(0.0225)  # without it: the decided spacing squared
    nominal = ScanGrid((10, 10), 0.2, SPACING_NOMINAL, 1.0)
    assert nominal.pixel_area_mm2((0.1, 0.2)) == pytest.approx(0.04)  # the file's spacing was not used
    assert _pixel_area_mm2({"spacing_mm": 0.2, "spacing_source": SPACING_NOMINAL}) == pytest.approx(0.04)
    assert _pixel_area_mm2({"spacing_mm": [0.1, 0.2]}) == pytest.approx(0.02)
    two_pixels = grid("1100/0000/0000/0000")
    report = lesion_report(two_pixels, np.ones((4, 4), "float32"), header.pixel_area_mm2((0.1, 0.2)))
    assert report["lesion_area_mm2"] == 0.04 and report["lesions"][0]["area_mm2"] == 0.04
