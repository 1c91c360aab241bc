"""Progress in a log file: a line per tenth of the work, never a carriage-return redraw."""

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
