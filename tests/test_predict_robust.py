"""predict survives bad input: one line per failed scan, the batch goes on; outputs are reproducible."""

import errno
import json
import os
import zipfile

import numpy as np
import pytest

from conftest import write_dicom
from mammo_seg.cli import main
from mammo_seg.errors import MammoError
from mammo_seg.inference import predict as predict_module
from mammo_seg.inference import writers
from mammo_seg.inference.predict import PredictOptions, predict


#: A threshold at which the test model finds lesions on the phantoms.
THRESHOLD_WITH_LESIONS = 0.5


def phantom(seed: int, shape=(288, 216)) -> np.ndarray:
    """A small grey scan with a bright blob: more than two grey levels, so not taken for a mask. At the tests'
    0.2 mm its field is 57.6 x 43.2 mm, just above the smallest field a mammogram may have."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(500, 1500, shape).astype(np.uint16)
    pixels[30:50, 20:40] += 2000
    return pixels


def scan_folder(folder, names=("a.dcm", "b.dcm", "c.dcm")):
    os.makedirs(folder, exist_ok=True)
    for seed, name in enumerate(names):
        write_dicom(os.path.join(folder, name), phantom(seed), spacing_mm=0.2, laterality="L", view="CC")
    return str(folder)


def test_any_error_in_one_scan_is_that_scans_one_line(model_file, tmp_path, monkeypatch, capsys):
    folder = scan_folder(tmp_path / "in", ("a.dcm", "bad\nname.dcm", "c.dcm"))
    real = predict_module.read_checked

    def read_checked(path, force):
        if "bad" in path:
            raise RuntimeError("boom\nsecond line")
        return real(path, force)

    monkeypatch.setattr(predict_module, "read_checked", read_checked)
    summary = predict(model_file, folder, str(tmp_path / "out"), PredictOptions(formats=("mask", "json")),
                      progress=False)
    assert summary["counts"]["scans"] == 3 and summary["counts"]["ok"] == 2 and summary["counts"]["failed"] == 1
    bad = [s for s in summary["scans"] if s["status"] == "error"]
    assert bad == [{"id": "bad-name", "source": "bad\nname.dcm", "status": "error",
                    "reason": "RuntimeError: boom second line"}]
    err = capsys.readouterr().err.splitlines()
    problems = [line for line in err if line.startswith("problem:")]
    assert problems == [f"problem: {folder}/bad\\nname.dcm: RuntimeError: boom second line"]


def pydicom_style(error: OSError, path: str):
    """What pydicom raises when the disk fills inside ``save_as``: an ``OSError`` of its own, without ``errno``,
    whose message holds the tag and the whole traceback, raised from the real one."""
    try:
        raise error
    except OSError as e:
        raise OSError(f"With tag (7FE0,0010) got exception: {e}\nTraceback (most recent call last):\n  File "
                      f"\"pydicom/tag.py\", line 29, in tag_in_exception\n    yield") from e


def test_a_full_disk_stops_the_run_with_one_line(model_file, tmp_path, monkeypatch):
    folder = scan_folder(tmp_path / "in")
    calls = []

    def full(path, mask):
        calls.append(path)
        raise OSError(errno.ENOSPC, "No space left on device", path + ".tmp")

    monkeypatch.setattr(writers, "write_mask_png", full)
    with pytest.raises(MammoError, match=r"cannot write a_mask.png \(No space left on device\); stopped"):
        predict(model_file, folder, str(tmp_path / "out"), PredictOptions(formats=("mask",)), progress=False)
    assert len(calls) == 1  # the second scan was not tried

    def full_inside_a_library(path, *args, **kwargs):  # as pydicom or highdicom raise theirs from the OSError
        try:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        except OSError as e:
            raise RuntimeError("Traceback (most recent call last): File pydicom/filewriter.py, line 1") from e

    monkeypatch.setattr(writers, "write_mask_png", full_inside_a_library)
    out = tmp_path / "out2"
    with pytest.raises(MammoError) as caught:
        predict(model_file, folder, str(out), PredictOptions(formats=("mask",)), progress=False)
    assert str(caught.value) == (f"{out}: cannot write a_mask.png (No space left on device); stopped: the scans "
                                 f"finished so far are kept, free some space and run again with --continue")


def test_a_disk_filling_in_a_scans_seg_keeps_no_part_of_it_and_continue_finishes(model_file, tmp_path, monkeypatch,
                                                                                 capsys):
    folder = scan_folder(tmp_path / "in")
    out = tmp_path / "out"
    real_seg = writers.write_seg

    def disk_fills_at_b(path, *args, **kwargs):
        if os.path.basename(path) == "b_seg.dcm":
            pydicom_style(OSError(errno.ENOSPC, "No space left on device"), path)
        return real_seg(path, *args, **kwargs)

    monkeypatch.setattr(writers, "write_seg", disk_fills_at_b)
    options = PredictOptions(formats=("mask", "seg", "json"))
    with pytest.raises(MammoError) as caught:
        predict(model_file, folder, str(out), options, progress=False)
    assert str(caught.value) == (f"{out}: cannot write b_seg.dcm (No space left on device); stopped: the scans "
                                 f"finished so far are kept, free some space and run again with --continue")
    assert sorted(name for name in os.listdir(out) if name[0] in "abc") == ["a.json", "a_mask.png", "a_seg.dcm"]
    monkeypatch.setattr(writers, "write_seg", real_seg)  # space freed
    summary = predict(model_file, folder, str(out), options, progress=False, resume=True)
    assert [(s["id"], s["status"]) for s in summary["scans"]] == [("a", "ok"), ("b", "ok"), ("c", "ok")]
    assert json.load(open(out / "summary.json"))["counts"]["ok"] == 3
    assert "Traceback" not in capsys.readouterr().err


def test_an_output_a_scan_cannot_write_is_its_short_line_and_leaves_none_of_its_outputs(model_file, tmp_path,
                                                                                        monkeypatch, capsys):
    folder = scan_folder(tmp_path / "in")
    out = tmp_path / "out"
    real_seg = writers.write_seg

    def io_error_at_b(path, *args, **kwargs):
        if os.path.basename(path) == "b_seg.dcm":
            pydicom_style(OSError(errno.EIO, os.strerror(errno.EIO)), path)
        return real_seg(path, *args, **kwargs)

    monkeypatch.setattr(writers, "write_seg", io_error_at_b)
    summary = predict(model_file, folder, str(out), PredictOptions(formats=("mask", "seg", "json")), progress=False)
    assert [(s["id"], s["status"], s.get("reason")) for s in summary["scans"]] == [
        ("a", "ok", None), ("b", "error", "could not write b_seg.dcm: Input/output error"), ("c", "ok", None)]
    assert sorted(name for name in os.listdir(out) if name[0] in "abc") == [
        "a.json", "a_mask.png", "a_seg.dcm", "c.json", "c_mask.png", "c_seg.dcm"]  # b's mask was written first
    assert json.load(open(out / "summary.json"))["counts"] == {"scans": 3, "ok": 2, "failed": 1, "skipped": 0,
                                                               "positive": summary["counts"]["positive"]}
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "b.dcm" in line or "Traceback" in line] == [
        f"problem: {folder}/b.dcm: could not write b_seg.dcm: Input/output error"]


def test_a_summary_that_cannot_be_written_is_one_line_and_a_failed_exit(model_file, tmp_path, monkeypatch, capsys):
    folder = scan_folder(tmp_path / "in", ("a.dcm",))
    out = tmp_path / "out"
    real_json = writers.write_json

    def full_at_the_summary(path, content):
        if os.path.basename(path) == "summary.json":
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_json(path, content)

    monkeypatch.setattr(writers, "write_json", full_at_the_summary)
    assert main(["predict", "-m", model_file, "-i", folder, "-o", str(out), "--format", "mask,json", "--quiet"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"mammo predict: error: {out}: could not write summary.json (No space left on device); every scan's outputs "
        f"and predictions.jsonl are kept: run again with --continue to write it")
    assert os.path.isfile(out / "a_mask.png") and not os.path.exists(out / "summary.json")
    monkeypatch.setattr(writers, "write_json", real_json)
    assert main(["predict", "-m", model_file, "-i", folder, "-o", str(out), "--format", "mask,json", "--quiet",
                 "--continue"]) == 0
    assert json.load(open(out / "summary.json"))["counts"]["ok"] == 1


def test_an_output_folder_that_cannot_be_made_stops_before_any_scan(model_file, tmp_path):
    folder = scan_folder(tmp_path / "in", ("a.dcm",))
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(MammoError, match="output folder is not writable"):
        predict(model_file, folder, str(tmp_path / "taken"), progress=False)


def test_reasons_name_the_real_cause(model_file, tmp_path, capsys):
    folder = scan_folder(tmp_path / "in", ("a.dcm",))
    whole = open(os.path.join(folder, "a.dcm"), "rb").read()
    (tmp_path / "in" / "cut.dcm").write_bytes(whole[:400])  # ends inside the header
    summary = predict(model_file, folder, str(tmp_path / "out"), PredictOptions(formats=("json",)), progress=False)
    reason = {s["id"]: s.get("reason") for s in summary["scans"]}["cut"]
    assert reason == "truncated DICOM: the file ends before its pixel data"
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip" * 10)
    with pytest.raises(MammoError) as caught:
        predict(str(broken), folder, str(tmp_path / "out2"), progress=False)
    assert caught.value.reason == "corrupt or truncated .keras model (not a zip archive)"
    capsys.readouterr()
    without_config = tmp_path / "noconfig.keras"
    with zipfile.ZipFile(model_file) as source, zipfile.ZipFile(without_config, "w") as target:
        for name in source.namelist():
            if name != "config.json":
                target.writestr(name, source.read(name))
    for verb in (["predict", "-i", folder, "-o", str(tmp_path / "out3")], ["export", "-o", str(tmp_path / "exp")]):
        assert main([verb[0], "-m", str(without_config), *verb[1:]]) == 2
        err = capsys.readouterr().err
        assert err == (f"mammo {verb[0]}: error: {without_config}: not a .keras model: the archive holds no "
                       f"config.json (the model's architecture)\n")
        assert main([verb[0], "-m", str(broken), *verb[1:]]) == 2  # Keras itself would say "File not found"
        assert capsys.readouterr().err == f"mammo {verb[0]}: error: {broken}: corrupt or truncated .keras model " \
                                          f"(not a zip archive)\n"
    assert not os.path.exists(tmp_path / "exp")


def dciodvfy_errors(path) -> list:
    """The lines of dciodvfy's report that start with "Error" (dicom3tools; CI installs it)."""
    import shutil
    import subprocess

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def deidentified(path):
    """A legal de-identified mammogram: no patient/study type-2 attributes, no UIDs but its own SOP
    instance in the file meta, a two-valued PatientName, an unknown character set, a bad birth date."""
    import warnings

    import pydicom

    write_dicom(path, phantom(5), spacing_mm=0.2, laterality="R", view="MLO")
    ds = pydicom.dcmread(path)
    for keyword in ("PatientID", "PatientSex", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID",
                    "SOPInstanceUID", "PatientOrientation"):
        del ds[keyword]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.PatientName = ["ANON^ONE", "ANON^TWO"]
        ds.SpecificCharacterSet = "ISO_IR 999"
        ds.PatientBirthDate = "19xx0101"
        ds.save_as(path)


def test_seg_of_a_deidentified_source_fills_a_copy_and_passes_dciodvfy(model_file, tmp_path):
    import highdicom as hd
    import pydicom

    os.makedirs(tmp_path / "in")
    source = str(tmp_path / "in" / "anon.dcm")
    deidentified(source)
    before = open(source, "rb").read()
    summary = predict(model_file, str(tmp_path / "in"), str(tmp_path / "out"), PredictOptions(), progress=False)
    assert summary["counts"]["ok"] == 1
    assert open(source, "rb").read() == before  # the user's file is never changed
    record = json.load(open(tmp_path / "out" / "anon.json"))
    assert record["seg_filled"] == ["SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate",
                                    "PatientSex", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                                    "ReferringPhysicianName", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
                                    "SeriesInstanceUID"]
    seg_path = tmp_path / "out" / "anon_seg.dcm"
    seg = hd.seg.segread(str(seg_path))
    meta_uid = pydicom.dcmread(source).file_meta.MediaStorageSOPInstanceUID
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == meta_uid
    assert (seg.PatientID, str(seg.PatientName), seg.PatientOrientation) == ("", "", "")
    assert dciodvfy_errors(seg_path) == []
    sr = pydicom.dcmread(tmp_path / "out" / "anon_sr.dcm")  # the SR references the same filled-in source
    assert sr.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == seg.StudyInstanceUID
    assert meta_uid in {item.ReferencedSOPInstanceUID
                        for series in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
                        for item in series.ReferencedSOPSequence}
    assert dciodvfy_errors(tmp_path / "out" / "anon_sr.dcm") == []


def test_phantom_and_its_seg_and_sr_pass_dciodvfy(model_file, tmp_path):
    folder = scan_folder(tmp_path / "in", ("a.dcm",))
    predict(model_file, folder, str(tmp_path / "out"), PredictOptions(formats=("seg", "sr")), progress=False)
    assert sorted(os.listdir(tmp_path / "out")) == ["a_seg.dcm", "a_sr.dcm", "predictions.jsonl", "settings.json",
                                                   "summary.json", "timings.json"]
    assert dciodvfy_errors(os.path.join(folder, "a.dcm")) == []
    assert dciodvfy_errors(tmp_path / "out" / "a_seg.dcm") == []
    assert dciodvfy_errors(tmp_path / "out" / "a_sr.dcm") == []
    with pytest.raises(MammoError) as caught:  # the SR references the SEG: no SR alone
        predict(model_file, folder, str(tmp_path / "alone"), PredictOptions(formats=("sr",)), progress=False)
    assert (caught.value.where, caught.value.reason) == (
        "--format", "sr needs seg: the structured report references the SEG's segment")
    assert not os.path.exists(tmp_path / "alone")


def output_bytes(folder) -> dict:
    """{name: bytes} of every predict output but timings.json (the one file that may differ)."""
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if name != "timings.json"}


def test_two_runs_write_the_same_bytes(model_file, tmp_path):
    folder = scan_folder(tmp_path / "in")
    deidentified(str(tmp_path / "in" / "anon.dcm"))
    first = predict(model_file, folder, str(tmp_path / "one"), progress=False)
    predict(model_file, folder, str(tmp_path / "two"), progress=False)
    one, two = output_bytes(tmp_path / "one"), output_bytes(tmp_path / "two")
    assert sorted(one) == ["a.json", "a_mask.png", "a_overlay.png", "a_seg.dcm", "a_sr.dcm",  # prob on request
                           "anon.json", "anon_mask.png", "anon_overlay.png", "anon_seg.dcm", "anon_sr.dcm",
                           "b.json", "b_mask.png", "b_overlay.png", "b_seg.dcm", "b_sr.dcm",
                           "c.json", "c_mask.png", "c_overlay.png", "c_seg.dcm", "c_sr.dcm",
                           "predictions.jsonl", "settings.json", "summary.json"]
    assert [name for name in one if one[name] != two[name]] == []
    assert sorted(first["timings"]["scans"]) == ["a", "anon", "b", "c"]
    assert b"seconds" not in one["summary.json"] and b"timings" not in one["a.json"]


def test_pipelined_run_writes_the_bytes_of_one_scan_at_a_time(model_file, tmp_path, capsys):
    folder = scan_folder(tmp_path / "in", ("a.dcm", "b.dcm", "d.dcm"))
    deidentified(str(tmp_path / "in" / "anon.dcm"))  # header warnings: notes collected by another thread
    (tmp_path / "in" / "c.dcm").write_bytes(b"DICM" * 10)  # fails in the reading thread
    runs = {}
    for mode in (False, True):
        summary = predict(model_file, folder, str(tmp_path / str(mode)), progress=False, pipelined=mode)
        runs[mode] = summary["scans"], output_bytes(tmp_path / str(mode)), capsys.readouterr().err
    (seq_scans, seq_bytes, seq_err), (pipe_scans, pipe_bytes, pipe_err) = runs[False], runs[True]
    assert [(s["id"], s["status"]) for s in pipe_scans] == [("a", "ok"), ("anon", "ok"), ("b", "ok"),
                                                             ("c", "error"), ("d", "ok")]
    assert pipe_scans[1]["warnings"] and pipe_scans == seq_scans
    assert len(pipe_bytes) == 23 and [name for name in seq_bytes if seq_bytes[name] != pipe_bytes.get(name)] == []
    assert sorted(pipe_bytes) == sorted(seq_bytes)
    assert pipe_err == seq_err and pipe_err.count("problem:") == 1


def test_writer_processes_write_the_bytes_and_records_of_the_predict_process(model_file, tmp_path, capsys):
    """``writers=2``: post-processing and writing in two processes while the network goes on, with a scan that
    fails in the reading thread and one whose header warnings are raised in a writer (its SEG): every output,
    the journal and the summary are the bytes of ``writers=0``, the console says the same."""
    folder = scan_folder(tmp_path / "in", ("a.dcm", "b.dcm", "d.dcm", "e.dcm"))
    deidentified(str(tmp_path / "in" / "anon.dcm"))
    (tmp_path / "in" / "c.dcm").write_bytes(b"DICM" * 10)
    options = PredictOptions(threshold=THRESHOLD_WITH_LESIONS, formats=predict_module.FORMATS)
    runs = {}
    for n in (0, 2):
        summary = predict(model_file, folder, str(tmp_path / f"w{n}"), options, progress=False, writers=n)
        runs[n] = summary, output_bytes(tmp_path / f"w{n}"), capsys.readouterr().err
    (inline, inline_bytes, inline_err), (pooled, pooled_bytes, pooled_err) = runs[0], runs[2]
    assert [(s["id"], s["status"]) for s in pooled["scans"]] == [("a", "ok"), ("anon", "ok"), ("b", "ok"),
                                                                 ("c", "error"), ("d", "ok"), ("e", "ok")]
    assert pooled["scans"][1]["warnings"] and sum(s.get("lesion_count", 0) for s in pooled["scans"]) > 0
    assert len(pooled_bytes) == 5 * 6 + 3 and sorted(pooled_bytes) == sorted(inline_bytes)
    assert [name for name in inline_bytes if inline_bytes[name] != pooled_bytes[name]] == []
    assert {k: v for k, v in pooled.items() if k != "timings"} == {k: v for k, v in inline.items() if k != "timings"}
    assert pooled_err == inline_err and pooled_err.count("problem:") == 1
    assert {"read", "model", "postprocess", "write"} <= set(pooled["timings"]["scans"]["e"])
    with pytest.raises(MammoError, match="--writers"):
        predict(model_file, folder, str(tmp_path / "never"), options, progress=False, writers=-1)
    assert not os.path.exists(tmp_path / "never")


def test_the_writers_flag_reaches_predict(model_file, tmp_path, capsys):
    """``mammo predict --writers 1`` writes what the library writes with ``writers=0``; the default (no flag)
    writes in the predict process on a machine without a GPU, and the same bytes again."""
    import tensorflow as tf

    from mammo_seg.inference.writer_processes import default_writers

    folder = scan_folder(tmp_path / "in", ("a.dcm",))
    assert main(["predict", "-m", model_file, "-i", folder, "-o", str(tmp_path / "one"), "--writers", "1",
                 "--quiet"]) == 0
    assert main(["predict", "-m", model_file, "-i", folder, "-o", str(tmp_path / "auto"), "--quiet"]) == 0
    predict(model_file, folder, str(tmp_path / "zero"), progress=False, writers=0)
    timings = json.load(open(tmp_path / "one" / "timings.json"))["scans"]["a"]
    assert "decode_again" in timings  # decoded in the writer process
    auto = json.load(open(tmp_path / "auto" / "timings.json"))["scans"]["a"]
    assert ("decode_again" in auto) == (default_writers(bool(tf.config.list_logical_devices("GPU"))) > 0)
    assert output_bytes(tmp_path / "one") == output_bytes(tmp_path / "zero") == output_bytes(tmp_path / "auto")


KILLER = """
import os, signal, sys
from mammo_seg.inference import writers
from mammo_seg.inference.predict import predict
real = writers.write_mask_png
def write_mask_png(path, mask):
    real(path, mask)
    if os.path.basename(path) == "c_mask.png":  # the third scan has begun writing its outputs
        os.kill(os.getpid(), signal.SIGKILL)
    return path
writers.write_mask_png = write_mask_png
predict(sys.argv[1], sys.argv[2], sys.argv[3], progress=False)
"""


def test_killed_run_continues_to_the_uninterrupted_outputs(model_file, tmp_path, monkeypatch):
    import subprocess
    import sys

    folder = scan_folder(tmp_path / "in", ("a.dcm", "b.dcm", "c.dcm", "d.dcm", "e.dcm"))
    out = str(tmp_path / "killed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", KILLER, model_file, folder, out], env=env, capture_output=True)
    assert run.returncode == -9
    journal = [json.loads(line) for line in open(os.path.join(out, "predictions.jsonl"))]
    assert [r["id"] for r in journal] == ["a", "b"] and not os.path.exists(os.path.join(out, "summary.json"))
    stale = os.path.join(out, ".tmp-4194305-c_overlay.png")  # above Linux's largest pid: its writer is gone
    open(stale, "wb").write(b"half an overlay")
    running = os.path.join(out, f".tmp-{os.getpid()}-elsewhere.png")  # a living writer's: left alone
    open(running, "wb").write(b"")
    predicted = []
    real = predict_module.read_checked

    def read_checked(path, force):
        predicted.append(os.path.basename(path))
        return real(path, force)

    monkeypatch.setattr(predict_module, "read_checked", read_checked)
    summary = predict(model_file, folder, out, progress=False, resume=True)
    assert predicted == ["c.dcm", "d.dcm", "e.dcm"] and summary["counts"]["ok"] == 5
    assert not os.path.exists(stale) and os.path.exists(running)
    os.remove(running)
    predict(model_file, folder, str(tmp_path / "whole"), progress=False)
    assert output_bytes(out) == output_bytes(tmp_path / "whole")


def test_malformed_header_values_never_reach_the_console(model_file, tmp_path, capfd):
    import warnings

    import pydicom

    os.makedirs(tmp_path / "in")
    path = str(tmp_path / "in" / "anon.dcm")
    deidentified(path)
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.SOPInstanceUID = "1.2.3.ANON77"  # a malformed value highdicom copies into the SEG, with a warning
        ds.save_as(path)
    capfd.readouterr()
    predict(model_file, str(tmp_path / "in"), str(tmp_path / "out"), progress=False)
    console = "".join(capfd.readouterr())
    assert "19xx0101" not in console and "ANON" not in console and "problem" not in console
    record = json.load(open(tmp_path / "out" / "anon.json"))
    assert record["warnings"] == [
        "Unknown encoding '…' - using default encoding instead",
        "Invalid value for VR UI: '…'. Please see <https://dicom.nema.org/medical/dicom/current/output/html/"
        "part05.html#table_6.2-1> for allowed values for each VR."]
    assert "19xx0101" not in json.dumps(record) and "ANON" not in json.dumps(record)


def test_special_files_are_never_opened_and_ids_stay_short(model_file, tmp_path, capsys, monkeypatch):
    import socket
    import threading

    from mammo_seg.inference.predict import file_id, find_scans

    folder = scan_folder(tmp_path / "in", ("a.dcm", "b.dcm"))
    os.mkfifo(tmp_path / "in" / "pipe.dcm")  # opening it would block for ever
    os.mkfifo(tmp_path / "in" / "pipe")  # no scan suffix: ignored, as notes are
    os.symlink("loop.dcm", tmp_path / "in" / "loop.dcm")  # a link to itself
    os.symlink("gone.dcm", tmp_path / "in" / "dangling.PGM")
    listening = socket.socket(socket.AF_UNIX)
    monkeypatch.chdir(tmp_path / "in")  # a socket's path may be at most 107 bytes: bound by its relative name
    listening.bind("sock.png")
    (tmp_path / "in" / "notes.txt").write_text("not a scan")
    found = []
    finder = threading.Thread(target=lambda: found.append(find_scans(folder)), daemon=True)
    finder.start()
    finder.join(20)
    special = {os.path.join(folder, "dangling.PGM"): "dangling link (to gone.dcm)",
               os.path.join(folder, "loop.dcm"): "link loop",
               os.path.join(folder, "pipe.dcm"): "not a regular file (FIFO)",
               os.path.join(folder, "sock.png"): "not a regular file (socket)"}
    assert found == [(folder, [os.path.join(folder, "a.dcm"), os.path.join(folder, "b.dcm")], special)]
    with pytest.raises(MammoError, match=r"not a regular file \(FIFO\)"):
        find_scans(str(tmp_path / "in" / "pipe.dcm"))
    with pytest.raises(MammoError, match="link loop"):
        find_scans(str(tmp_path / "in" / "loop.dcm"))
    runs = []
    runner = threading.Thread(target=lambda: runs.append(predict(
        model_file, folder, str(tmp_path / "out"), PredictOptions(formats=("mask", "json")), progress=False)),
        daemon=True)
    runner.start()
    runner.join(120)
    listening.close()
    assert runs, "predict hung on a special file"
    assert [(s["id"], s["status"], s.get("reason")) for s in runs[0]["scans"]] == [
        ("a", "ok", None), ("b", "ok", None), ("dangling", "error", "dangling link (to gone.dcm)"),
        ("loop", "error", "link loop"), ("pipe", "error", "not a regular file (FIFO)"),
        ("sock", "error", "not a regular file (socket)")]
    assert all(os.path.isfile(tmp_path / "out" / f"{name}_mask.png") for name in ("a", "b"))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("problem:")] == [
        f"problem: {path}: {reason}" for path, reason in special.items()]
    long = "/data/" + "x" * 300 + ".dcm"
    assert len(file_id(long, "/data")) == 100
    assert file_id(long, "/data") != file_id("/data/" + "x" * 299 + "y.dcm", "/data")
    nbia = ("/d/Mass-Test_P_00016_LEFT_CC/07-20-2016-DDSM-NA-74994/1.000000-full mammogram images-24515/1-1.dcm")
    assert file_id(nbia, "/d") == "Mass-Test_P_00016_LEFT_CC_1-1"


def test_only_full_mammograms_by_default(model_file, tmp_path):
    import pydicom

    folder = scan_folder(tmp_path / "in", ("full.dcm",))
    study = pydicom.dcmread(os.path.join(folder, "full.dcm")).StudyInstanceUID
    write_dicom(os.path.join(folder, "crop.dcm"), phantom(1, (30, 20)))  # 600 px beside 62208 px
    write_dicom(os.path.join(folder, "roi.dcm"), phantom(2), series_description="cropped images")
    write_dicom(os.path.join(folder, "mask.dcm"), (phantom(3) > 1500).astype(np.uint8) * 255)
    for name in ("crop.dcm",):
        ds = pydicom.dcmread(os.path.join(folder, name))
        ds.StudyInstanceUID = study
        ds.save_as(os.path.join(folder, name))
    summary = predict(model_file, folder, str(tmp_path / "out"), PredictOptions(formats=("json",)), progress=False)
    status = {s["id"]: (s["status"], s.get("reason")) for s in summary["scans"]}
    assert status == {
        "crop": ("skipped", "600 pixels, under 0.25 of the largest image of its study: a crop, not a full mammogram; "
                            "--all-images includes it"),
        "full": ("ok", None),
        "mask": ("skipped", "has only two grey levels: a mask, not a mammogram; --force runs it anyway"),
        "roi": ("skipped", "SeriesDescription says 'cropped': not a full mammogram; --all-images includes it")}
    assert summary["counts"]["skipped"] == 3 and summary["counts"]["failed"] == 0
    every = predict(model_file, folder, str(tmp_path / "all"), PredictOptions(formats=("json",), all_images=True),
                    progress=False)
    assert [s["status"] for s in every["scans"]] == ["ok", "ok", "error", "ok"]
