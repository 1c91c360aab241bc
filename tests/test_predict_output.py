"""What predict writes (PredictionOutput) and its guard rails: flags and output folders refused before any
work, with exit status 2 and one line; the settings record and ``--continue``."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from mammo_seg.cli import main
from mammo_seg.errors import MammoError
from mammo_seg.inference.prediction_output import PredictionOutput
from mammo_seg.inference.predict import PredictOptions, predict, run_settings
from mammo_seg.io import file_sha256

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_model(folder, content: str = "{}") -> str:
    """A zip named model.keras: enough for every check made before the model is loaded."""
    path = os.path.join(folder, "model.keras")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", content)
    return path


def scan_folder(folder) -> str:
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(40, 200, (256, 192)).astype(np.uint8)  # 51 x 38 mm at the tests' --spacing 0.2
    pixels[20:30, 10:25] = 250
    Image.fromarray(pixels).save(os.path.join(folder, "s.png"))
    return str(folder)


def run_cli(argv, capsys) -> tuple[int, str]:
    """(exit status, stderr) of ``mammo ARGV``, whether argparse or the verb refused it."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_bad_predict_flags_are_one_line_and_exit_2(tmp_path, capsys):
    base = ["predict", "-m", "m", "-i", "i", "-o", "o"]
    cases = {
        ("--spacing", "50"): "argument --spacing: expected a pixel spacing in mm from 0.02 to 1, got '50'; "
                             "50 µm is 0.05 mm",
        ("--spacing", "5"): "argument --spacing: expected a pixel spacing in mm from 0.02 to 1, got '5'",
        ("--threshold", "1"): "argument --threshold: expected a probability in (0, 1), got '1'",
        ("--threshold", "0"): "argument --threshold: expected a probability in (0, 1), got '0'",
        ("--min-area", "-1"): "argument --min-area: expected an area in mm² >= 0, got '-1'",
        ("--format", "mask,jpeg"): "argument --format: unknown format 'jpeg'; choose all, or some of "
                                   "mask,prob,overlay,seg,sr,json",
        ("--overlap", "1"): "argument --overlap: expected a fraction in [0, 1), got '1'",
        ("--batch-size", "0"): "argument --batch-size: expected an integer >= 1, got '0'",
    }
    for flag, reason in cases.items():
        code, err = run_cli(base + list(flag), capsys)
        assert (code, err) == (2, f"mammo predict: error: {reason} (see mammo predict --help)\n"), flag


def test_a_folder_holding_another_run_is_refused_before_the_model_loads(tmp_path, capsys):
    model, scans, out = fake_model(str(tmp_path)), scan_folder(tmp_path / "in"), tmp_path / "out"
    os.makedirs(out)
    (out / "predictions.jsonl").write_text("")
    code, err = run_cli(["predict", "-m", model, "-i", scans, "-o", str(out)], capsys)
    assert (code, err) == (2, f"mammo predict: error: {out}: holds the outputs of another predict run "
                              f"(predictions.jsonl); choose a new --output, delete it, or --continue that run "
                              f"with its settings\n")
    assert os.listdir(out) == ["predictions.jsonl"]


def test_continue_with_other_settings_is_refused_naming_the_setting(tmp_path, capsys):
    model, scans, out = fake_model(str(tmp_path)), scan_folder(tmp_path / "in"), str(tmp_path / "out")
    recorded = run_settings(PredictOptions(threshold=0.3, min_area_mm2=0.0, flip=False), file_sha256(model))
    os.makedirs(out)
    PredictionOutput(out).write_settings(recorded)
    code, err = run_cli(["predict", "-m", model, "-i", scans, "-o", out, "--continue"], capsys)
    assert (code, err) == (2, f"mammo predict: error: {out}: --continue with other settings than the run it "
                              f"continues: --threshold is 0.5 here, 0.3 in settings.json; give the same flags, "
                              f"or choose a new --output\n")
    code, err = run_cli(["predict", "-m", model, "-i", scans, "-o", out, "--continue", "--threshold", "0.3",
                         "--format", "mask"], capsys)
    assert (code, err) == (2, f"mammo predict: error: {out}: --continue with other settings than the run it "
                              f"continues: --format is mask here, mask,overlay,seg,sr,json in settings.json; give "
                              f"the same flags, or choose a new --output\n")
    other = os.path.join(str(tmp_path), "other")
    os.makedirs(other)
    code, err = run_cli(["predict", "-m", fake_model(other, "[]"), "-i", scans, "-o", out, "--continue",
                         "--threshold", "0.3"], capsys)
    assert code == 2 and "--model is " in err and err.count("\n") == 1


REFUSALS = """
import sys
from mammo_seg.cli import main
for argv in ([{base}, "--spacing", "50"], [{base}, "--threshold", "2"], [{base}]):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    print(code)
print("tensorflow" in sys.modules, "keras" in sys.modules)
"""


def test_refusals_come_before_tensorflow_is_imported(tmp_path):
    model, scans, out = fake_model(str(tmp_path)), scan_folder(tmp_path / "in"), tmp_path / "out"
    os.makedirs(out)
    (out / "summary.json").write_text("{}")
    base = ", ".join(repr(a) for a in ["predict", "-m", model, "-i", scans, "-o", str(out)])
    run = subprocess.run([sys.executable, "-c", REFUSALS.format(base=base)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT}, cwd=ROOT)
    assert run.stdout.split() == ["2", "2", "2", "False", "False"], run.stderr
    assert len(run.stderr.splitlines()) == 3


def test_settings_round_trip_and_check_start(tmp_path):
    output = PredictionOutput(str(tmp_path))
    settings = run_settings(PredictOptions(threshold=0.25, min_area_mm2=2.0, flip=True, spacing_mm=0.1), "ab" * 32)
    assert output.read_settings() is None
    output.check_start(settings, resume=False)  # an empty folder
    output.write_settings(settings)
    assert output.read_settings() == settings
    assert settings["options"]["formats"] == ["mask", "overlay", "seg", "sr", "json"]  # prob only on request
    output.check_start(settings, resume=True)
    faster = json.loads(json.dumps(settings))
    faster["options"]["batch_size"] = 16  # never changes an output
    output.check_start(faster, resume=True)
    with pytest.raises(MammoError, match=r"--spacing is 0.2 here, 0.1 in settings.json"):
        output.check_start({**settings, "options": {**settings["options"], "spacing_mm": 0.2}}, resume=True)
    with pytest.raises(MammoError, match=r"holds the outputs of another predict run \(settings.json\)"):
        output.check_start(settings, resume=False)
    open(output.settings_file, "w").write("{torn")
    with pytest.raises(MammoError, match="unreadable predict settings"):
        output.check_start(settings, resume=True)


def test_predict_records_its_settings_and_continues_only_with_them(model_file, tmp_path, capsys):
    scans, out = scan_folder(tmp_path / "in"), str(tmp_path / "out")
    args = ["predict", "-m", model_file, "-i", scans, "-o", out, "--spacing", "0.2", "--quiet"]
    assert run_cli(args + ["--threshold", "0.3", "--format", "mask,prob,json"], capsys)[0] == 0
    settings = PredictionOutput(out).read_settings()
    assert settings == {"model_sha256": file_sha256(model_file), "options": {
        "threshold": 0.3, "min_area_mm2": 0.0, "flip": False, "tile": None, "overlap": 0.25, "batch_size": 4,
        "formats": ["mask", "prob", "json"], "force": False, "breast_mask": True, "all_images": False,
        "spacing_mm": 0.2}}
    summary = PredictionOutput(out).read_summary()
    assert summary["options"] == settings["options"] and summary["counts"]["ok"] == 1
    before = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out) if name != "timings.json"}
    code, err = run_cli(args + ["--format", "mask,prob,json", "--continue"], capsys)
    assert code == 2 and "--threshold is 0.5 here, 0.3 in settings.json" in err
    code, err = run_cli(args + ["--threshold", "0.3"], capsys)
    assert code == 2 and "holds the outputs of another predict run (settings.json)" in err
    assert run_cli(args + ["--threshold", "0.3", "--format", "mask,prob,json", "--continue", "--batch-size", "2"],
                   capsys)[0] == 0
    after = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out) if name != "timings.json"}
    assert sorted(after) == sorted(before) == ["predictions.jsonl", "s.json", "s_mask.png", "s_prob.npz",
                                               "settings.json", "summary.json"]
    assert sorted(name for name in after if after[name] != before[name]) == ["settings.json", "summary.json"]
    assert PredictionOutput(out).read_settings()["options"]["batch_size"] == 2  # the one setting that may change
    record = json.load(open(os.path.join(out, "s.json")))
    np.testing.assert_array_equal(PredictionOutput(out).probability(record) >= 0.3,
                                  np.asarray(Image.open(os.path.join(out, "s_mask.png"))) > 0)


def test_prediction_output_reads_what_predict_wrote(model_file, tmp_path):
    scans, out = scan_folder(tmp_path / "in"), str(tmp_path / "out")
    summary = predict(model_file, scans, out, PredictOptions(spacing_mm=0.2, formats=("mask", "prob", "json")),
                      progress=False)
    output = PredictionOutput(out)
    assert output.read_summary() == {k: v for k, v in summary.items() if k != "timings"}
    journal = [json.loads(line) for line in open(output.journal)]
    record = json.load(open(output.scan_file("s", "json")))
    assert journal == [record] and record["outputs"] == {"mask": "s_mask.png", "prob": "s_prob.npz",
                                                         "json": "s.json"}
    assert output.output(record, "mask") == os.path.join(out, "s_mask.png") and output.output(record, "seg") is None
    with np.load(output.scan_file("s", "prob")) as npz:
        assert sorted(npz.files) == ["probability", "resampling_factor", "threshold"]
        assert float(npz["threshold"]) == 0.5
    assert output.completed() == {"s": record}
    assert sorted(json.load(open(output.timings_file))["scans"]) == ["s"]


def test_the_probability_map_is_written_on_request_and_for_the_report(model_file, tmp_path, capsys):
    scans = scan_folder(tmp_path / "in")
    written = {}
    for name, flags in (("default", []), ("report", ["--report"]), ("all", ["--format", "all"]),
                        ("listed", ["--format", "mask,prob"])):
        out = tmp_path / name
        assert run_cli(["predict", "-m", model_file, "-i", scans, "-o", str(out), "--spacing", "0.2", "--quiet"]
                       + flags, capsys)[0] == 0
        written[name] = sorted(n for n in os.listdir(out) if n.startswith("s") and n not in PredictionOutput.RUN_FILES)
    assert written == {"default": ["s.json", "s_mask.png", "s_overlay.png"],  # a PNG scan: no SEG, no SR
                       "report": ["s.json", "s_mask.png", "s_overlay.png", "s_prob.npz"],
                       "all": ["s.json", "s_mask.png", "s_overlay.png", "s_prob.npz"],
                       "listed": ["s_mask.png", "s_prob.npz"]}
    assert os.path.isfile(tmp_path / "report" / "report.html")
