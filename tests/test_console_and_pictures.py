"""What a person reads: progress in a log file (a line per tenth, no redraws) and the labels on an overlay."""

import io
import sys

from mammo_seg.progress import progress


def test_a_log_file_gets_a_line_per_tenth_and_one_at_the_end(monkeypatch):
    err = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", err)
    bar = progress(25, "predict", "scan")
    for _ in range(25):
        bar.update(1)
    bar.close()
    lines = err.getvalue().splitlines()
    assert lines == [f"predict: {n}/25 scans" for n in (2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25)]
    assert "\r" not in err.getvalue()
    err.truncate(0)
    err.seek(0)
    resumed = progress(100, "prep mias", "scan", initial=35)  # a resumed run counts on from where it was
    for _ in range(10):
        resumed.update(1)
    assert err.getvalue().splitlines() == ["prep mias: 40/100 scans"]
    err.truncate(0)
    err.seek(0)
    silent = progress(10, "x", "scan", enabled=False)
    silent.update(10)
    silent.close()
    assert err.getvalue() == ""


def test_the_overlay_labels_each_lesion_with_its_number_and_probability(tmp_path):
    import numpy as np
    from PIL import Image

    from mammo_seg.inference.writers import lesion_report, write_overlay

    pixels = np.full((300, 400), 0.2, np.float32)
    mask = np.zeros((300, 400), bool)
    mask[100:140, 200:250] = True
    report = lesion_report(mask, np.where(mask, 0.87, 0.1).astype(np.float32), 0.01)
    write_overlay(str(tmp_path / "plain.png"), pixels, mask)
    write_overlay(str(tmp_path / "labelled.png"), pixels, mask, report["lesions"])
    plain, labelled = (np.asarray(Image.open(tmp_path / name)) for name in ("plain.png", "labelled.png"))
    changed = np.argwhere((plain != labelled).any(axis=2))
    assert changed.size and changed[:, 0].min() >= 85 and changed[:, 1].min() >= 250  # right of the box's top
    yellow = (labelled[..., 0] > 200) & (labelled[..., 1] > 200) & (labelled[..., 2] < 100)
    assert yellow.sum() > 20 and not ((plain[..., 0] > 200) & (plain[..., 2] < 100) & (plain[..., 1] > 200)).any()
