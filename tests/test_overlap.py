"""One table of hand-computed overlap cases through every place that scores overlap: the soft-IoU loss at
smoothing 0, the Keras metrics, evaluate's case metrics and the per-scan lesion report."""

import math

import numpy as np
import pytest

from mammo_seg.evaluate import case_metrics
from mammo_seg.inference.writers import lesion_report
from mammo_seg.losses import SoftIoULoss
from mammo_seg.metrics import LesionDice, LesionIoU, PixelPrecision, PixelRecall

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
    for metric, expected in ((LesionIoU(), iou), (LesionDice(), dice), (PixelRecall(), recall),
                             (PixelPrecision(), 0.0 if math.isnan(precision) else precision)):
        metric.update_state(y, logits)
        assert float(metric.result()) == pytest.approx(expected, abs=1e-6), metric.name
    report = lesion_report(pred, pred.astype("float32"), (1.0, 1.0))
    assert report["lesion_area_px"] == tp + fp and report["image_positive"] == (tp + fp > 0)
