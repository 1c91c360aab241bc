"""``mammo prep`` / ``mammo inspect`` end to end on phantoms in the real formats."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from data_prep.prepare import prepare
from mammo_seg.cli import main
from mammo_seg.data.features import iterate_records
from mammo_seg.data.inspect import validate
from mammo_seg.data.resolution import Resolution
from mammo_seg.errors import MammoError

TILES = (48, 96)
SCALE = 0.2  # coarse training pixels: small tiles still show whole lesions
OPTIONS = dict(tiles=TILES, resolution=Resolution(scale=SCALE), full_scans=True, scans_per_shard=3,
               progress=False)


def tree(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


@pytest.fixture(scope="module")
def prepped(cbis_raw, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("prep1"))
    summary = prepare("cbis-ddsm", cbis_raw, out, workers=1, **OPTIONS)
    return out, summary


def test_prep_output_layout_and_manifest(prepped, cbis_raw):
    out, summary = prepped
    assert sorted(os.listdir(out)) == [".prep", "48", "96", "full", "problems.csv", "scans.json", "splits.json"]
    manifest = json.load(open(os.path.join(out, "48", "manifest.json")))
    assert manifest["tile_size"] == 48 and manifest["resolution"]["scale"] == SCALE
    assert manifest["resolution"]["spacing_mm"] == pytest.approx(0.05 / SCALE)
    splits = manifest["splits"]
    assert set(splits) == {"train", "val", "test"}
    for name, split in splits.items():
        for shard in split["shards"]:
            assert shard.startswith(f"{name}-") and shard.endswith(f"-of-{len(split['shards']):05d}.tfrecord")
        assert split["records"] == split["roi"] + split["random"] > 0
        assert 0 < split["positive_pixel_fraction"] < 1
    assert sum(manifest["records_per_shard"].values()) == summary.records["48"]
    intensity = manifest["intensity"]["cbis-ddsm"]
    assert 0 < intensity["records"]["mean"] < 1 and intensity["scans"]["raw_max"] > 1000
    assert manifest["collection"]["swapped_crop_mask"] >= 1 and manifest["package_version"]
    whole = json.load(open(os.path.join(out, "full", "manifest.json")))
    assert whole["kind"] == "whole_scans" and sum(whole["records_per_shard"].values()) == summary.scans
    scans = json.load(open(os.path.join(out, "scans.json")))
    assert len(scans) == summary.scans
    from mammo_seg.io import file_sha256

    for info in scans.values():  # relative to --raw, with the file's digest (how evaluate finds it)
        assert not os.path.isabs(info["file"]) and info["split"] in ("train", "val", "test")
        assert file_sha256(os.path.join(cbis_raw, info["file"])) == info["sha256"]


def test_records_agree_with_splits_and_the_scan(prepped, cbis_raw):
    out, _ = prepped
    splits = json.load(open(os.path.join(out, "splits.json")))
    split_of = {scan: s for s, v in splits["splits"].items() for scan in v["scans"]}
    patients = {s: set(v["patients"]) for s, v in splits["splits"].items()}
    assert not (patients["train"] & patients["test"]) and not (patients["train"] & patients["val"])
    seen = set()
    for name in os.listdir(os.path.join(out, "96")):
        if not name.endswith(".tfrecord"):
            continue
        for rec in iterate_records(os.path.join(out, "96", name)):
            scan = rec["scan_id"].decode()
            seen.add(scan)
            assert rec["split"].decode() == split_of[scan] and name.startswith(split_of[scan])
            assert rec["image"].shape == (96, 96, 1) and set(np.unique(rec["mask"])) <= {0, 1}
            assert rec["source"] == b"cbis-ddsm" and rec["patient_id"].decode() == scan.rsplit("_", 2)[0]
            assert int(rec["crop_size"]) == round(96 / float(rec["scale"]))
    assert seen <= set(split_of)


def test_problems_csv_lists_skipped_images(prepped):
    out, summary = prepped
    rows = list(csv.DictReader(open(os.path.join(out, "problems.csv"))))
    assert len(rows) == len(summary.problems) >= 1
    assert any("does not match image" in r["reason"] and r["file"].endswith(".csv") for r in rows)


def test_inspect_validates_and_draws(prepped, tmp_path):
    out, _ = prepped
    report = validate(os.path.join(out, "48"), sheet=str(tmp_path / "sheet.png"), samples=8)
    assert report.ok and report.records > 0 and os.path.getsize(tmp_path / "sheet.png") > 10_000


def test_inspect_detects_a_damaged_shard(prepped, tmp_path):
    out, _ = prepped
    copy = str(tmp_path / "48")
    shutil.copytree(os.path.join(out, "48"), copy)
    manifest = json.load(open(os.path.join(copy, "manifest.json")))
    shard = manifest["splits"]["train"]["shards"][0]
    path = os.path.join(copy, shard)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    report = validate(copy)
    assert not report.ok and any(shard in e for e in report.errors)
    assert main(["inspect", copy, "--sheet", str(tmp_path / "s.png")]) == 1


def sha256_tree(root):
    import hashlib

    return {name: hashlib.sha256(content).hexdigest() for name, content in tree(root).items()}


def test_output_is_byte_identical_for_any_worker_count_and_run(prepped, cbis_raw, tmp_path):
    """Shards, manifests, ``scans.json`` (and the resume state): the same SHA-256 for 1 and 2 workers, run twice."""
    out, _ = prepped
    first = sha256_tree(out)
    assert {"scans.json", "splits.json", "problems.csv", "48/manifest.json", "96/manifest.json",
            "full/manifest.json"} <= set(first)
    shards = [name for name in first if name.endswith(".tfrecord")]
    assert {name.split(os.sep)[0] for name in shards} == {"48", "96", "full"} and len(shards) >= 6
    for run, workers in (("w2", 2), ("w2_again", 2), ("w1_again", 1)):
        other = str(tmp_path / run)
        prepare("cbis-ddsm", cbis_raw, other, workers=workers, **OPTIONS)
        assert sha256_tree(other) == first, run


def test_prep_times_its_phases_but_writes_no_timing(prepped):
    out, summary = prepped
    assert {"header_index", "read", "mask", "hashing", "resampling", "tiling", "encoding",
            "statistics", "serializing", "writing", "waiting_for_workers"} == set(summary.phase_seconds)
    assert all(seconds >= 0 for seconds in summary.phase_seconds.values())
    assert not any(key in content for content in tree(out).values()
                   for key in (b'"encoding"', b'"resampling"', b"phase"))


def test_rerun_skips_finished_work_and_refuses_other_settings(prepped, cbis_raw, tmp_path):
    out, _ = prepped
    copy = str(tmp_path / "again")
    shutil.copytree(out, copy)
    before = tree(copy)
    states = [os.path.join(copy, ".prep", f) for f in os.listdir(os.path.join(copy, ".prep"))
              if f.endswith(".json")]  # completion records (.prep/tmp/ holds the temporaries)
    mtimes = {s: os.path.getmtime(s) for s in states}
    prepare("cbis-ddsm", cbis_raw, copy, workers=1, **OPTIONS)
    assert tree(copy) == before and all(os.path.getmtime(s) == t for s, t in mtimes.items())
    with pytest.raises(MammoError, match="other settings"):
        prepare("cbis-ddsm", cbis_raw, copy, workers=1, **{**OPTIONS, "tiles": (64,)})


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_uninterrupted_output(prepped, cbis_raw, tmp_path):
    out, _ = prepped
    target = str(tmp_path / "killed")
    command = [sys.executable, "-m", "mammo_seg.cli", "prep", "cbis-ddsm", "--raw", cbis_raw, "--out", target,
               "--tiles", ",".join(map(str, TILES)), "--scale", str(SCALE), "--full-scans",
               "--scans-per-shard", "3", "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = os.path.join(target, ".prep")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # kill once the first shard is done
        if os.path.isdir(state) and any(f.endswith(".tfrecord.json") for f in os.listdir(state)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "prep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not os.path.exists(os.path.join(target, "48", "manifest.json"))
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert tree(target) == tree(out)


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (state, ppid, ...), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> dict[int, bytes]:
    """{child pid: command line} of the processes whose parent is ``pid``."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (_stat(int(name)) or [None, None])[1] == str(pid):
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    found[int(name)] = f.read().replace(b"\0", b" ")
            except OSError:
                pass
    return found


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has ended (it waits only to be reaped)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="lists processes through /proc")
def test_kill_9_of_prep_leaves_no_worker_or_resource_tracker_behind(cbis_raw, tmp_path):
    command = [sys.executable, "-m", "mammo_seg.cli", "prep", "cbis-ddsm", "--raw", cbis_raw, "--out",
               str(tmp_path / "out"), "--tiles", ",".join(map(str, TILES)), "--scale", str(SCALE), "--full-scans",
               "--scans-per-shard", "3", "--workers", "2", "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, helpers = time.time() + 120, {}
    while time.time() < deadline and proc.poll() is None:
        helpers = _children(proc.pid)
        if sum(b"spawn_main" in cmd for cmd in helpers.values()) == 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "prep finished before its workers were seen"
    assert sum(b"spawn_main" in cmd for cmd in helpers.values()) == 2, helpers
    assert any(b"resource_tracker" in cmd for cmd in helpers.values()), helpers
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in helpers):
        time.sleep(0.1)
    assert not {pid: cmd for pid, cmd in helpers.items() if _alive(pid)}


def test_a_full_disk_is_one_line_and_the_same_command_then_finishes(prepped, cbis_raw, tmp_path, monkeypatch,
                                                                     capsys):
    import errno

    import tensorflow as tf

    out, _ = prepped
    target = tmp_path / "full_disk"
    args = ["prep", "cbis-ddsm", "--raw", cbis_raw, "--out", str(target), "--tiles", ",".join(map(str, TILES)),
            "--scale", str(SCALE), "--full-scans", "--scans-per-shard", "3", "--quiet"]
    real_writer, opened = tf.io.TFRecordWriter, []

    class FillingDisk(real_writer):
        """The fourth shard file meets a full disk on its second record."""

        def __init__(self, path, *rest, **kwargs):
            super().__init__(path, *rest, **kwargs)
            opened.append(path)
            self.records = 0

        def write(self, record):
            self.records += 1
            if len(opened) == 4 and self.records == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            super().write(record)

    monkeypatch.setattr(tf.io, "TFRecordWriter", FillingDisk)
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()[-1] + "\n"  # the line after the raw data's own problem
    assert "Traceback" not in err
    shard = err.split("mammo prep: error: ")[1].split(": no space left on device")[0]
    assert os.path.dirname(os.path.dirname(shard)) == str(target) and shard.endswith(".tfrecord")
    assert err.endswith(": no space left on device; free some and run the same command again (the shards "
                        "completed so far are kept)\n")
    assert not os.path.exists(shard) and not os.listdir(target / ".prep" / "tmp")  # no partial shard anywhere
    assert not [f for f in os.listdir(target / "48") if f == "manifest.json"]
    monkeypatch.setattr(tf.io, "TFRecordWriter", real_writer)
    assert main(args) == 0
    assert tree(target) == tree(out)


def test_bad_files_are_skipped_and_reported_and_strict_fails(cbis_raw, tmp_path, capsys):
    from data_prep.cbis_ddsm import collect_cases

    raw = str(tmp_path / "raw")
    shutil.copytree(cbis_raw, raw)
    cases, _, _ = collect_cases(raw, progress=False)
    victim = cases[2]
    data = open(victim.scan_path, "rb").read()
    open(victim.scan_path, "wb").write(data[: len(data) * 2 // 3])  # header intact, pixel data cut short
    args = ["prep", "cbis-ddsm", "--raw", raw, "--out", str(tmp_path / "o1"), "--tiles", "48",
            "--scale", str(SCALE), "--quiet"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"prepared {len(cases) - 1} scans into ")  # the scans of scans.json
    assert len(json.load(open(tmp_path / "o1" / "scans.json"))) == len(cases) - 1
    line = next(line for line in err.splitlines() if victim.scan_path in line)
    assert line.startswith("problem: ") and "pixel data" in line
    rows = list(csv.DictReader(open(tmp_path / "o1" / "problems.csv")))
    assert any(r["file"] == victim.scan_path and r["item"] == victim.scan_id for r in rows)
    manifest = json.load(open(tmp_path / "o1" / "48" / "manifest.json"))
    assert sum(s["scans"] for s in manifest["splits"].values()) == len(cases) - 1
    strict = args[:-3] + ["--out", str(tmp_path / "o2"), "--scale", str(SCALE), "--quiet", "--strict"]
    assert main(strict) == 1


def test_nothing_usable_and_missing_input_give_clear_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(os.path.join(os.path.dirname(__file__), "data", "cbis_ddsm_mass_train_sample.csv"),
                empty / "mass_case_description_train_set.csv")
    assert main(["prep", "cbis-ddsm", "--raw", str(empty), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no usable records" in err and "not found" in err
    assert main(["prep", "mias", "--raw", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err.strip() == f"mammo prep: error: {tmp_path / 'nowhere'}: raw data directory not found"


def test_mias_prep_end_to_end(mias_raw, tmp_path):
    out = str(tmp_path / "mias")
    summary = prepare("mias", mias_raw, out, tiles=(64,), resolution=Resolution(scale=0.25), progress=False)
    manifest = json.load(open(os.path.join(out, "64", "manifest.json")))
    assert summary.usable and manifest["collection"]["skipped_without_coordinates"] >= 1
    assert manifest["resolution"]["nominal_spacing_mm"] == 0.2  # PGMs carry no spacing: MIAS's 200 µm, recorded
    assert validate(os.path.join(out, "64")).ok
    negatives = [r for s in ("train", "val", "test") for name in manifest["splits"].get(s, {}).get("shards", [])
                 for r in iterate_records(os.path.join(out, "64", name)) if not r["abnormality"].size]
    assert negatives and all(not r["mask"].any() for r in negatives)  # NORM scans: negative tiles only


def test_every_verb_answers_help():
    for verb in (["synth", "cbis-ddsm"], ["synth", "mias"], ["prep", "cbis-ddsm"], ["prep", "mias"],
                 ["inspect"], ["demo"], []):
        result = subprocess.run([sys.executable, "-m", "mammo_seg.cli", *verb, "--help"], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0 and "usage: mammo" in result.stdout


def test_prep_keeps_user_files_and_survives_a_name_that_is_not_utf8(cbis_raw, tmp_path, capsys):
    raw = str(tmp_path / "raw")
    shutil.copytree(cbis_raw, raw)
    stray = os.path.join(raw, os.fsdecode(b"caf\xe9.dcm"))  # not UTF-8, and not a DICOM
    open(stray, "wb").write(b"not a dicom")
    out = tmp_path / "out"
    user_files = [out / "notes.tmp-1.txt", out / "48" / "mine.tmp-2", out / ".prep" / "x.tmp-3"]
    for f in user_files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("keep me")
    args = ["prep", "cbis-ddsm", "--raw", raw, "--out", str(out), "--tiles", "48", "--scale", str(SCALE), "--quiet"]
    for _ in range(2):  # a first run and a rerun
        assert main(args) == 0
        assert all(f.read_text() == "keep me" for f in user_files)
        assert os.listdir(out / ".prep" / "tmp") == []
        assert os.path.isfile(out / "48" / "manifest.json")
        rows = list(csv.DictReader(open(out / "problems.csv", encoding="utf-8")))
        assert [r["file"] for r in rows if "caf" in r["file"]] == [os.path.join(raw, "caf\\xe9.dcm")]
    err = capsys.readouterr().err
    assert f"problem: {os.path.join(raw, 'caf')}\\xe9.dcm: not a DICOM file" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------- settings
def test_prep_settings_build_the_run_config_with_their_defaults():
    from mammo_seg.config import PrepSection
    from mammo_seg.data.resolution import DEFAULT_SCALE

    config = PrepSection().prep_config("mias", nominal_spacing_mm=0.2)
    assert config.to_dict() == {
        "dataset": "mias", "tiles": [320, 640], "seed": 0, "val_fraction": 0.1, "test_fraction": 0.2,
        "scans_per_shard": 64, "full_scans": False,
        "resolution": {"scale": DEFAULT_SCALE, "reference_spacing_mm": 0.05, "nominal_spacing_mm": 0.2,
                       "spacing_mm": 0.05 / DEFAULT_SCALE},
        "tiling": {"roi_crops": 2, "random_crops": 4, "roi_context": 1.4, "large_roi_context": 1.15,
                   "background_level": 10 / 255, "max_background_roi": 0.9, "max_background_random": 0.8}}
    own = Resolution(scale=0.25, nominal_spacing_mm=0.1)
    finer = PrepSection(seed=3).prep_config("mias", 0.2, resolution=own)
    assert finer.seed == 3 and finer.resolution == own  # its own nominal spacing is kept


@pytest.mark.parametrize("settings, message", [
    ({"tiles": [], "full_scans": False}, "nothing to write: give --tiles and/or --full-scans"),
    ({"tiles": [8]}, "--tiles: tile sizes must be from 16 to 4096 px, got [8]"),
    ({"scale": 0.0}, "--scale: must be a positive number, got 0.0"),
    ({"roi_crops": -1}, "--roi-crops: must be at least 0, got -1"),
    ({"random_crops": -2}, "--random-crops: must be at least 0, got -2"),
    ({"scans_per_shard": 0}, "--scans-per-shard: must be at least 1, got 0"),
    ({"test_fraction": 1.0}, "--test-fraction: must be in [0, 1), got 1.0"),
])
def test_prep_settings_check_themselves_naming_the_flag(settings, message):
    from mammo_seg.config import PrepSection

    with pytest.raises(MammoError) as info:
        PrepSection(**settings).validate()
    assert str(info.value) == message
    assert PrepSection(tiles=[], full_scans=True).validate().full_scans  # whole scans alone are something


def test_prep_help_prints_the_defaults_of_the_settings(capsys):
    from mammo_seg.config import PrepSection

    with pytest.raises(SystemExit):
        main(["prep", "mias", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, flag in [("tiles", "--tiles"), ("scale", "--scale"), ("seed", "--seed"),
                       ("roi_crops", "--roi-crops"), ("random_crops", "--random-crops"), ("val_fraction", "--val-fraction"),
                       ("test_fraction", "--test-fraction"), ("scans_per_shard", "--scans-per-shard")]:
        assert f"(default {PrepSection.default_text(name)}" in text.split(flag, 1)[1], name
    assert PrepSection.default_text("tiles") == "320,640" and PrepSection.default_text("scale") == "0.5351"


def test_a_recipe_and_flags_merge_before_the_settings_are_checked(tmp_path):
    from mammo_seg.cli import build_parser, prep_settings

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("prep:\n  tiles: []\n  seed: 7\n")
    args = build_parser().parse_args(["prep", "mias", "--raw", "r", "--out", "o", "-c", str(recipe),
                                      "--full-scans"])
    settings = prep_settings(args).validate()
    assert (settings.tiles, settings.full_scans, settings.seed, settings.roi_crops) == ([], True, 7, 2)
