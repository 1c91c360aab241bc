"""README command 1: the whole chain on phantoms (synth → prep → curriculum → predict → evaluate)."""

import json
import os

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    from mammo_seg.demo import run_demo

    out = str(tmp_path / "demo")
    result = run_demo(out, workers=2)
    evaluation = json.load(open(os.path.join(out, "evaluation.json")))
    cases = evaluation["metric_per_case"]
    assert cases and len(cases) == result["summary"]["counts"]["ok"] == result["summary"]["counts"]["scans"]
    assert evaluation["unmatched_predictions"] == []
    assert evaluation["pooled"]["1"]["IoU"] > 0.05  # it learned something in two CPU minutes
    for case in cases:
        for suffix in ("_overlay.png", "_seg.dcm", "_mask.png", ".json"):
            assert os.path.isfile(os.path.join(result["predictions"], case["prediction"] + suffix))
