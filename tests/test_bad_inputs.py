"""A catalogue of bad inputs beside good ones, each batch driven through the real verb (``cli.main``).

For every bad item: no traceback, exactly one line naming its file (or key/flag) and the reason;
for every good item: produced; the batch's manifest / evaluation written.
"""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from mammo_seg.cli import main

SCALE = 0.2


def one_line_each(err: str, names) -> dict:
    """The stderr line naming each of ``names`` (exactly one each); no traceback anywhere."""
    assert "Traceback" not in err
    lines = err.splitlines()
    found = {}
    for name in names:
        hits = [line for line in lines if name in line]
        assert len(hits) == 1, (name, hits)
        found[name] = hits[0]
    return found


# -------------------------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def cbis_cases(cbis_raw):
    from data_prep.cbis_ddsm import collect_cases
    from mammo_seg.data.cases import load_case

    cases, _, _ = collect_cases(cbis_raw, progress=False)
    return [(case, load_case(case)[1]) for case in cases[:3]]


def _record(folder, name, case, mask=None, **changes):
    from mammo_seg.io import file_sha256

    if mask is not None:
        Image.fromarray(mask).save(os.path.join(folder, f"{name}_mask.png"))
    record = {"id": name, "status": "ok", "sha256": file_sha256(case.scan_path),
              "file_size": os.path.getsize(case.scan_path), "outputs": {"mask": f"{name}_mask.png"}}
    record.update(changes)
    return {k: v for k, v in record.items() if v is not None}


def test_evaluate_survives_bad_records_and_masks(cbis_raw, cbis_cases, tmp_path, capsys, monkeypatch):
    pred = tmp_path / "pred"
    pred.mkdir()
    (case0, ref0), (case1, ref1), (case2, ref2) = cbis_cases
    assert ref0.shape[0] != ref0.shape[1]
    as_png = [(r * 255).astype(np.uint8) for r in (ref0, ref1, ref2)]
    bigger = np.zeros((ref0.shape[0] + 3, ref0.shape[1]), np.uint8)
    scans = [
        _record(pred, "good0", case0, as_png[0]),
        _record(pred, "good1", case1, as_png[1]),
        _record(pred, "good2", case2, np.zeros_like(as_png[2])),  # no lesion predicted: precision NaN
        _record(pred, "missing", case0),  # no mask file written
        _record(pred, "rgb", case0, np.stack([as_png[0]] * 3, axis=-1)),
        _record(pred, "transposed", case0, as_png[0].T.copy()),
        _record(pred, "bigger", case0, bigger),
        _record(pred, "nosha", case1, as_png[1], sha256=None),
        _record(pred, "nomask", case1, outputs={}),
        "garbage",
        {"id": "failed", "status": "error", "reason": "predict's own problem"},
    ]
    (pred / "summary.json").write_text(json.dumps({"scans": scans}))
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "-p", str(pred), "-g", cbis_raw]) == 0  # default -o: ./evaluation.json
    err = capsys.readouterr().err
    lines = one_line_each(err, ["missing_mask.png", "rgb_mask.png", "transposed_mask.png", "bigger_mask.png",
                                "nosha", "nomask", "scans[9]"])
    h, w = ref0.shape
    assert lines["missing_mask.png"] == f"problem: {pred}/missing_mask.png: missing: mask PNG not found"
    assert lines["rgb_mask.png"] == f"problem: {pred}/rgb_mask.png: colour image (mode RGB) is not a mammogram"
    assert lines["transposed_mask.png"] == (f"problem: {pred}/transposed_mask.png: transposed: mask {w}x{h} does "
                                            f"not fit the reference {case0.scan_id} ({h}x{w}); not resized")
    assert lines["bigger_mask.png"].endswith(f"mask {h + 3}x{w} does not fit the reference {case0.scan_id} "
                                             f"({h}x{w}); not resized")
    assert lines["nosha"] == "problem: nosha: record without a valid sha256"
    assert lines["nomask"] == "problem: nomask: record without a valid outputs.mask (predict with --format " \
                              "including mask)"
    assert lines["scans[9]"] == "problem: scans[9]: record is not a mapping: 'garbage'"
    assert [line for line in err.splitlines() if "probability map" in line] == [
        "warning: 3 of 3 evaluated scans have no probability map: the lesion-level figures (FROC) are not computed; "
        "predict with --format all (or a list with prob) writes it"]
    text = (tmp_path / "evaluation.json").read_text()
    result = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert [c["prediction"] for c in result["metric_per_case"]] == ["good0", "good1", "good2"]
    assert result["counts"] == {"predictions": 11, "evaluated": 3, "problems": 7, "unmatched": 0, "failed_predictions": 1,
                                "scans": 4, "without_probabilities": 3}  # no probability maps: no lesion-level scores
    assert result["metric_per_case"][2]["metrics"]["1"]["precision"] is None
    assert result["mean"]["1"]["precision"] == 1.0 and result["mean"]["1"]["IoU"] == pytest.approx(2 / 3)
    summary = (pred / "summary.json").read_text()
    assert main(["evaluate", "-p", str(pred), "-g", cbis_raw, "-o", os.path.join(pred, ".", "summary.json")]) == 2
    assert capsys.readouterr().err == (f"mammo evaluate: error: {pred}/./summary.json: is predict's summary.json; "
                                       f"choose another evaluation output\n")
    assert (pred / "summary.json").read_text() == summary
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    assert main(["evaluate", "-p", str(pred), "-g", cbis_raw, "-o", str(in_the_way / "e.json")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"mammo evaluate: error: {in_the_way}: File exists"
    (pred / "summary.json").write_text('{"scans": [')
    assert main(["evaluate", "-p", str(pred), "-g", cbis_raw, "-o", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mammo evaluate: error: {pred}/summary.json: not a mammo predict summary (JSONDecodeError")
    assert err.count("\n") == 1


def test_uid_named_folders_round_trip_from_prep_and_predict_to_evaluate(cbis_raw, cbis_cases, model_file, tmp_path,
                                                                         capsys):
    """CBIS-DDSM's layout, ``<case>/<study UID>/<series UID>/<file>.dcm``: predict's ``source`` and prep's ``file``
    are the paths below the folder each was given, UID folders and all, and evaluate matches the two."""
    from data_prep.prepare import prepare
    from mammo_seg.data.resolution import Resolution

    out = str(tmp_path / "prep")
    prepare("cbis-ddsm", cbis_raw, out, tiles=(), full_scans=True, resolution=Resolution(scale=SCALE),
            progress=False)
    files = json.load(open(os.path.join(out, "scans.json")))
    given = tmp_path / "given"
    below = {}
    for case, _ in cbis_cases[:2]:
        path = os.path.relpath(case.scan_path, cbis_raw)
        assert files[case.scan_id]["file"] == path  # below --raw, as given
        case_folder, study, series, name = path.split(os.sep)[-4:]
        assert study.startswith("1.3.6.1.4.1.9590.") and series.startswith("1.3.6.1.4.1.9590.")
        target = given / case_folder / study / series / name
        target.parent.mkdir(parents=True)
        shutil.copy(case.scan_path, target)
        below[f"{case_folder}_{name[:-4]}"] = os.path.join(case_folder, study, series, name)  # the id: no UIDs
    pred = tmp_path / "pred"
    assert main(["predict", "-m", model_file, "-i", str(given), "-o", str(pred), "--format", "mask,json",
                 "--quiet"]) == 0
    summary = json.load(open(pred / "summary.json"))
    assert summary["input"] == str(given)
    assert {r["id"]: r["source"] for r in summary["scans"]} == below
    assert main(["evaluate", "-p", str(pred), "-g", out, "-o", str(tmp_path / "e.json")]) == 0
    result = json.load(open(tmp_path / "e.json"))
    assert {(c["prediction"], c["reference"]) for c in result["metric_per_case"]} == {
        (scan_id, case.scan_id) for (case, _), scan_id in zip(cbis_cases, below)}
    assert result["unmatched_predictions"] == [] and result["problems"] == []


def test_evaluate_resizes_only_prep_ground_truth_of_the_same_aspect(cbis_raw, cbis_cases, tmp_path, capsys):
    from data_prep.prepare import prepare
    from mammo_seg.data.resolution import Resolution

    out = str(tmp_path / "prep")
    prepare("cbis-ddsm", cbis_raw, out, tiles=(), full_scans=True, resolution=Resolution(scale=SCALE),
            progress=False)
    pred = tmp_path / "pred"
    pred.mkdir()
    (case0, ref0), (case1, ref1), _ = cbis_cases
    scans = [_record(pred, "good", case0, (ref0 * 255).astype(np.uint8)),
             _record(pred, "transposed", case1, (ref1.T * 255).astype(np.uint8))]
    (pred / "summary.json").write_text(json.dumps({"scans": scans}))
    assert main(["evaluate", "-p", str(pred), "-g", out, "-o", str(tmp_path / "e.json")]) == 0
    line = one_line_each(capsys.readouterr().err, ["transposed"])["transposed"]
    assert line.startswith(f"problem: {pred}/transposed_mask.png: transposed: mask {ref1.shape[1]}x{ref1.shape[0]} "
                           f"does not fit the reference {case1.scan_id}")
    result = json.load(open(tmp_path / "e.json"))
    assert [c["prediction"] for c in result["metric_per_case"]] == ["good"]
    assert result["metric_per_case"][0]["metrics"]["1"]["IoU"] > 0.9  # resized to the training grid
    split = json.load(open(os.path.join(out, "scans.json")))[case0.scan_id]["split"]
    shard = os.path.join(out, "full", f"{split}-00000-of-00001.tfrecord")
    with open(shard, "r+b") as f:
        f.truncate(20)  # inside the first record
    assert main(["evaluate", "-p", str(pred), "-g", out, "-o", str(tmp_path / "e1.json")]) == 1  # none evaluated
    lines = one_line_each(capsys.readouterr().err, [shard, case0.scan_id])
    assert lines[shard].startswith(f"problem: {shard}: unreadable shard (truncated record at 0")
    assert lines[case0.scan_id] == f"problem: {out}: the ground truth of {case0.scan_id} is lost in an unreadable shard"
    open(os.path.join(out, "scans.json"), "w").write("{")
    assert main(["evaluate", "-p", str(pred), "-g", out, "-o", str(tmp_path / "e2.json")]) == 2
    assert capsys.readouterr().err.startswith(f"mammo evaluate: error: {out}: unreadable prep output "
                                              f"(JSONDecodeError: ")


# --------------------------------------------------------------------------------------- configs, CLI
GOOD_CONFIG = """name: tiny
seed: 0
data: {dir: DATA, tile: "96"}
train:
  epochs: 2
  steps_per_epoch: 8
  lr_decay_epochs: 15
  checkpoint_metric: val_lesion_iou
"""
BAD_CONFIGS = {  # file name: (content, what its one line must say after "<file>: ")
    "duplicate.yaml": (GOOD_CONFIG + "train: {epochs: 5}\n", "not valid YAML (duplicate key 'train' in"),
    "latin1.yaml": (GOOD_CONFIG.replace("tiny", "t\xefny").encode("latin-1"),
                    "not UTF-8 text (byte 0xef at offset 7)"),
    "escape.yaml": (GOOD_CONFIG.replace("name: tiny", "name: ../../.."),
                    "name: must be a relative folder name that stays inside runs/, got '../../..'"),
    "absolute.yaml": (GOOD_CONFIG.replace("name: tiny", "name: /etc"),
                      "name: must be a relative folder name that stays inside runs/, got '/etc'"),
    "seed.yaml": (GOOD_CONFIG.replace("seed: 0", "seed: -1"),
                  "seed: must be from 0 to 4294967295 (2**32 - 1), got -1"),
    "big_seed.yaml": (GOOD_CONFIG.replace("seed: 0", "seed: 4294967296"),
                      "seed: must be from 0 to 4294967295 (2**32 - 1), got 4294967296"),
    "cv_seed.yaml": (GOOD_CONFIG + "cv: {folds: 2, seed: -5}\n",
                     "cv.seed: must be from 0 to 4294967295, or null for the config's seed"),
    "cv_nested.yaml": (GOOD_CONFIG + "cv: {folds: 2, nested: true}\n",
                       "cv.nested: needs cv.folds of at least 3 (a model without two folds trains on a third fold)"),
    "lr_inf.yaml": (GOOD_CONFIG.replace("epochs: 2", "epochs: 2\n  lr: .inf"),
                    "train.lr: must be a positive finite number, got inf"),
    "lr_nan.yaml": (GOOD_CONFIG.replace("epochs: 2", "epochs: 2\n  lr: .nan"),
                    "train.lr: must be a positive finite number, got nan"),
    "lr_zero.yaml": (GOOD_CONFIG.replace("epochs: 2", "epochs: 2\n  lr: 0"),
                     "train.lr: must be a positive finite number, got 0.0"),
    "freeze_type.yaml": (GOOD_CONFIG.replace("epochs: 2", "epochs: 2\n  freeze: [conv0, 7]"),
                         "train.freeze: must be a list of layer-name prefixes (non-empty strings), got "
                         "['conv0', 7]"),
    "decay.yaml": (GOOD_CONFIG.replace("lr_decay_epochs: 15", "lr_decay_epochs: 0"),
                   "train.lr_decay_epochs: must be at least 1"),
    "steps.yaml": (GOOD_CONFIG.replace("steps_per_epoch: 8", "steps_per_epoch: -3"),
                   "train.steps_per_epoch: must be at least 1, or null for one pass over the training records"),
    "valfreq.yaml": (GOOD_CONFIG.replace("epochs: 2", "epochs: 2\n  validation_freq: 0"),
                     "train.validation_freq: must be at least 1"),
    "metric.yaml": (GOOD_CONFIG.replace("val_lesion_iou", "val_lesion_iuo"),
                    "train.checkpoint_metric: must be one of val_lesion_iou, val_lesion_dice,"),
    "alias_bomb.yaml": (GOOD_CONFIG.replace("train:", "x0: &a0 [ab, ab, ab, ab, ab, ab, ab, ab, ab]\n"
                                            + "".join(f"x{k}: &a{k} [*a{k - 1}, *a{k - 1}, *a{k - 1}, *a{k - 1}, "
                                                      f"*a{k - 1}, *a{k - 1}, *a{k - 1}, *a{k - 1}, *a{k - 1}]\n"
                                                      for k in range(1, 9)) + "train:"),
                        "line 5: YAML aliases (*a0) are not accepted; write the value out"),
    "stage.yaml": (GOOD_CONFIG + "stages:\n  - {name: ../../../../x}\n",
                   "stages[0]: name: must be a relative folder name that stays inside runs/, got "
                   "'tiny/../../../../x'"),
}


def test_bad_configs_are_one_line_each(tmp_path, capsys):
    for name, (content, reason) in BAD_CONFIGS.items():
        path = tmp_path / name
        data = content if isinstance(content, bytes) else content.replace("DATA", str(tmp_path)).encode()
        path.write_bytes(data)
        assert main(["train", "-c", str(path), "--out", str(tmp_path / "run")]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"mammo train: error: {path}: {reason}"), (name, err)
    assert not (tmp_path / "run").exists()


BAD_FLAGS = [  # (verb and flags, the flag and reason its one line must name)
    (["prep", "mias", "--val-fraction", "2"], "argument --val-fraction: expected a fraction in [0, 1), got '2'"),
    (["prep", "mias", "--tiles", "100000"], "argument --tiles: tile sizes must be from 16 to 4096 px, got '100000'"),
    (["prep", "mias", "--tiles", "48,-5"], "argument --tiles: tile sizes must be from 16 to 4096 px, got '48,-5'"),
    (["prep", "mias", "--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
    (["prep", "mias", "--workers", "0"], "argument --workers: expected an integer >= 1, got '0'"),
    (["prep", "mias", "--scans-per-shard", "x"], "argument --scans-per-shard: expected an integer, got 'x'"),
    (["predict", "--tile", "-1"], "argument --tile: expected an integer in [16, 4096], got '-1'"),
    (["predict", "--tile", "100000"], "argument --tile: expected an integer in [16, 4096], got '100000'"),
    (["predict", "--overlap", "1.5"], "argument --overlap: expected a fraction in [0, 1), got '1.5'"),
    (["predict", "--overlap", "nan"], "argument --overlap: expected a fraction in [0, 1), got 'nan'"),
    (["predict", "--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'"),
    (["predict", "--threshold", "2"], "argument --threshold: expected a probability in (0, 1), got '2'"),
    (["predict", "--writers", "-1"], "argument --writers: expected an integer >= 0, got '-1'"),
    (["predict", "--writers", "two"], "argument --writers: expected an integer, got 'two'"),
    (["synth", "mias", "--images", "-4"], "argument --images: expected an integer >= 1, got '-4'"),
]


def test_bad_cli_numbers_are_one_line_each(tmp_path, capsys):
    required = {"prep": ["--raw", str(tmp_path), "--out", str(tmp_path / "o")],
                "predict": ["-m", "m.keras", "-i", str(tmp_path), "-o", str(tmp_path / "o")],
                "synth": ["--out", str(tmp_path / "o")]}
    for argv, reason in BAD_FLAGS:
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, *required[argv[0]]])
        err = capsys.readouterr().err
        prog = " ".join(["mammo", *argv[:2]]) if argv[0] != "predict" else "mammo predict"
        assert exit_info.value.code == 2 and err == f"{prog}: error: {reason} (see {prog} --help)\n", err
    assert not (tmp_path / "o").exists()


def test_prepare_refuses_bad_numbers_as_a_library(mias_raw, tmp_path):
    from data_prep.prepare import prepare
    from mammo_seg.errors import MammoError

    for kwargs, message in [({"val_fraction": 2}, "--val-fraction: must be in [0, 1), got 2"),
                            ({"val_fraction": 0.5, "test_fraction": 0.5}, "--val-fraction: and --test-fraction "
                                                                           "must sum to less than 1"),
                            ({"tiles": (100000,)}, "--tiles: tile sizes must be from 16 to 4096 px, got [100000]"),
                            ({"seed": -1}, "--seed: must be at least 0, got -1")]:
        with pytest.raises(MammoError) as info:
            prepare("mias", mias_raw, str(tmp_path / "o"), progress=False, **kwargs)
        assert str(info.value).startswith(message)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------ prep
def _prep(raw, out):
    return main(["prep", raw.split("/")[-1], "--raw", raw, "--out", out, "--tiles", "48", "--scale", str(SCALE),
                 "--full-scans", "--quiet"])


def _produced(out) -> set:
    for name in ("48", "full"):
        assert os.path.isfile(os.path.join(out, name, "manifest.json"))
    return set(json.load(open(os.path.join(out, "scans.json"))))


def _relabel(path, **attributes):
    """Rewrite ``path`` with the header ``attributes`` set (None: removed)."""
    import pydicom

    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


def test_prep_cbis_survives_bad_dicoms_and_csv_rows(cbis_raw, tmp_path, capsys):
    from data_prep.cbis_ddsm import collect_cases

    raw = str(tmp_path / "cbis-ddsm")
    shutil.copytree(cbis_raw, raw)
    cases, _, _ = collect_cases(raw, progress=False)
    data = open(cases[0].scan_path, "rb").read()
    at = data.index(b"\x28\x00\x10\x00US")  # (0028,0010) Rows
    stray = os.path.join(raw, "stray")
    os.makedirs(stray)
    dicoms = {"unknown_vr.dcm": data[:at + 4] + b"ZZ" + data[at + 6:],
              "odd_length.dcm": data[:at + 6] + b"\x03\x00" + data[at + 8:at + 10] + b"\x00" + data[at + 10:],
              "cut_header.dcm": data[:300], "empty.dcm": b"", "text.dcm": b"hello\n" * 50,
              os.fsdecode(b"latin1_\xe9.dcm"): b"not a dicom", "new\nline.dcm": b"not a dicom"}
    for name, content in dicoms.items():
        open(os.path.join(stray, name), "wb").write(content)
    victim = cases[1]
    with open(victim.scan_path, "r+b") as f:  # header intact, pixel data cut short
        f.truncate(os.path.getsize(victim.scan_path) * 2 // 3)
    ct, other_breast, other_unknown = cases[2], cases[3], cases[4]
    _relabel(ct.scan_path, Modality="CT")
    _relabel(other_breast.scan_path, Modality="OT")  # BodyPartExamined BREAST: a mammogram exported as "other"
    _relabel(other_unknown.scan_path, Modality="OT", BodyPartExamined=None, ViewPosition=None)
    csv_path = os.path.join(raw, "mass_case_description_extra_set.csv")
    header = ["patient_id", "left or right breast", "image view", "abnormality id", "abnormality type",
              "image file path", "cropped image file path", "ROI mask file path"]
    good = ["P_99999", "LEFT", "CC", "1", "mass", "a/1.2/1.3/000000.dcm", "b/1.2/1.4/000000.dcm", "b/1.2/1.5/x.dcm"]
    with open(csv_path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([
            header, good[:4],  # line 2: short row
            good[:7] + ["x" * 200_000],  # line 3: a field over the csv limit
            [good[0], "MIDDLE", *good[2:]],  # line 4: bad side
            [*good[:4], float("nan"), *good[5:]],  # line 5: nan as abnormality type
            good,  # line 6: well formed, but its files do not exist
        ])
    no_columns = os.path.join(raw, "calc_case_description_broken_set.csv")
    open(no_columns, "w").write("patient_id,image view\nP_00001,CC\n")
    fifo_csv, fifo_dcm = os.path.join(raw, "mass_case_description_fifo_set.csv"), os.path.join(stray, "fifo.dcm")
    os.mkfifo(fifo_csv)
    os.mkfifo(fifo_dcm)
    looped = cases[5]  # a case's full mammogram replaced by a link to itself
    os.remove(looped.scan_path)
    os.symlink(os.path.basename(looped.scan_path), looped.scan_path)
    out = str(tmp_path / "out")
    assert _prep(raw, out) == 0
    err = capsys.readouterr().err
    items = [os.path.join(stray, name) for name in dicoms if "latin1" not in name and "\n" not in name] + [
        os.path.join(stray, "latin1_\\xe9.dcm"), os.path.join(stray, "new\\nline.dcm"), victim.scan_path,
        ct.scan_path, other_unknown.scan_path, no_columns, fifo_csv, fifo_dcm, looped.scan_path] + [
        f"{csv_path}: line {n}:" for n in (2, 3, 4, 5)] + [f"{csv_path} [P_99999_LEFT_CC]: line 6:"]
    lines = one_line_each(err, items)
    assert all(line.startswith("problem: ") for line in lines.values())
    assert "Unknown Value Representation 'ZZ'" in lines[os.path.join(stray, "unknown_vr.dcm")]
    assert "BytesLengthException" in lines[os.path.join(stray, "odd_length.dcm")]
    assert "field larger than field limit" in lines[f"{csv_path}: line 3:"]
    assert "abnormality type 'nan'" in lines[f"{csv_path}: line 5:"]
    assert "pixel data" in lines[victim.scan_path]
    assert lines[ct.scan_path] == f"problem: {ct.scan_path} [{ct.scan_id}]: is not a mammogram (Modality CT)"
    assert lines[other_unknown.scan_path].endswith(": is not a mammogram (Modality OT)")
    assert lines[fifo_csv] == f"problem: {fifo_csv}: not a regular file (FIFO); skipped"
    assert lines[fifo_dcm] == f"problem: {fifo_dcm}: not a regular file (FIFO)"
    assert lines[looped.scan_path].startswith(f"problem: {looped.scan_path} [{looped.scan_id}]: link loop (the full "
                                              f"mammogram of ")
    rows = list(csv.DictReader(open(os.path.join(out, "problems.csv"), encoding="utf-8")))
    assert len(rows) == len([line for line in err.splitlines() if line.startswith("problem: ")])
    assert _produced(out) == {c.scan_id for c in cases} - {victim.scan_id, ct.scan_id, other_unknown.scan_id,
                                                           looped.scan_id}
    open(os.path.join(out, ".prep", "fingerprint.json"), "w").write('{"torn": ')
    assert _prep(raw, out) == 2
    err = capsys.readouterr().err  # the collection's problems again, then the one error
    assert "Traceback" not in err and err.splitlines()[-1] == (
        f"mammo prep: error: {out}/.prep/fingerprint.json: unreadable prep state (JSONDecodeError); "
        f"choose a new --out or delete {out}")


def test_prep_cbis_skips_the_image_of_a_row_with_an_unknown_pathology_or_a_bad_grade(cbis_raw, tmp_path, capsys):
    from data_prep.cbis_ddsm import collect_cases

    raw = str(tmp_path / "cbis-ddsm")
    shutil.copytree(cbis_raw, raw)
    good_cases, before, _ = collect_cases(raw, progress=False)  # the phantoms' own quirks: one mask size
    csv_path = os.path.join(raw, "mass_case_description_train_set.csv")
    with open(csv_path, newline="") as f:
        header, *rows = [[cell.strip() for cell in row] for row in csv.reader(f)]
    column = {name: header.index(name) for name in ("pathology", "subtlety", "assessment", "breast_density",
                                                      "abnormality id")}
    changes = {  # row index: {column: value}; row i is the file's line i + 2 (cells written without newlines)
        0: {"pathology": "  benign_without_callback "},  # real files' case and spacing: a good row
        1: {"pathology": "UNPROVEN"},
        2: {"subtlety": "nan", "assessment": "inf"},
        3: {"breast_density": "-1"},
        4: {"abnormality id": "-1"},
    }
    for index, cells in changes.items():
        for name, value in cells.items():
            rows[index][column[name]] = value
    with open(csv_path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *rows])
    view = {index: "_".join(rows[index][c] for c in (0, 2, 3)) for index in changes}
    out = str(tmp_path / "out")
    assert _prep(raw, out) == 0
    err = capsys.readouterr().err
    skipped = "image skipped (its lesion cannot be trusted, nor left unlabelled)"
    expected = {
        1: "pathology 'UNPROVEN' is not MALIGNANT, BENIGN or BENIGN_WITHOUT_CALLBACK",
        2: "assessment 'inf' is not a whole number from 0 to 6; subtlety 'nan' is not a whole number from 0 to 5",
        3: "breast density '-1' is not a whole number from 0 to 4",
        4: "abnormality id '-1' is not a whole number of at least 1",
    }
    lines = one_line_each(err, [f"line {index + 2}:" for index in expected])
    assert lines == {f"line {index + 2}:": f"problem: {csv_path} [{view[index]}]: line {index + 2}: {reason}; {skipped}"
                     for index, reason in expected.items()}
    assert len([line for line in err.splitlines() if line.startswith("problem: ")]) == len(expected) + len(before)
    problems = list(csv.DictReader(open(os.path.join(out, "problems.csv"), encoding="utf-8")))
    assert [(p["file"], p["item"]) for p in problems if p["file"] == csv_path] == [(csv_path, view[index])
                                                                                  for index in expected]
    bad_views = {view[index] for index in expected}
    assert view[0] not in bad_views and len(bad_views) == 4
    assert _produced(out) == {c.scan_id for c in good_cases} - bad_views


def test_prep_mias_survives_bad_info_lines_and_images(mias_raw, tmp_path, capsys):
    from data_prep.mias import collect_cases, parse_info

    raw = str(tmp_path / "mias")
    shutil.copytree(mias_raw, raw)
    info = os.path.join(raw, "Info.txt")
    cases, _, _ = collect_cases(raw, progress=False)
    rows, _ = parse_info(info)
    lines = open(info, "rb").read().decode("ascii").splitlines()
    lesions = [r for r in rows if r.has_coordinates]
    for row, coords in zip(lesions, ["10 10 999999999", "1500 10 5", "10 10 0", "-4 10 5"]):
        lines[row.line_number - 1] = f"{row.ref} {row.background} {row.cls} {row.severity} {coords}"
    bad_lines = ["mdb901 G CIRC B a b c", "mdb902 X NORM", "mdb903 G BLOB B 1 2 3", "mdb904 G CIRC B 1 2",
                 "mdbXYZ G NORM", "mdb905 G CIRC Q 1 2 3"]
    first_bad = len(lines) + 1
    data = "\n".join(lines + bad_lines).encode() + b"\nmdb906 G \xff NORM\nmdb999 G NORM\n"
    open(info, "wb").write(data)
    os.mkfifo(os.path.join(raw, "mdb950.pgm"))  # unlisted, and never opened
    normal, small, fifo, loop, dangling = [c for c in cases if not c.abnormalities][:5]
    os.remove(fifo.scan_path)
    os.mkfifo(fifo.scan_path)  # listed: its case says what it is, without opening it
    os.remove(loop.scan_path)
    os.symlink(os.path.basename(loop.scan_path), loop.scan_path)
    os.remove(dangling.scan_path)
    os.symlink("gone.pgm", dangling.scan_path)
    with open(normal.scan_path, "r+b") as f:  # a cut PGM
        f.truncate(1000)
    rng = np.random.default_rng(5)  # a thumbnail: 40 x 30 mm at MIAS's 0.2 mm
    Image.fromarray(rng.integers(0, 256, (200, 150), dtype=np.uint8)).save(small.scan_path)
    out = str(tmp_path / "out")
    assert _prep(raw, out) == 0
    err = capsys.readouterr().err
    changed = [f"{info} [{r.ref}]: line {r.line_number}:" for r in lesions[:2]]
    refused = [f"{info}: line {r.line_number}:" for r in lesions[2:4]]
    appended = [f"{info}: line {first_bad + k}:" for k in range(len(bad_lines) + 1)] + [
        f"{info} [mdb999]: line {first_bad + len(bad_lines) + 1}: image mdb999.pgm not found"]
    specials = [fifo.scan_path, loop.scan_path, dangling.scan_path]
    found = one_line_each(err, changed + refused + appended + [normal.scan_path, small.scan_path, "mdb950.pgm",
                                                                *specials])
    assert [found[path] for path in specials] == [
        f"problem: {fifo.scan_path} [{fifo.scan_id}]: not a regular file (FIFO)",
        f"problem: {loop.scan_path} [{loop.scan_id}]: link loop",
        f"problem: {dangling.scan_path} [{dangling.scan_id}]: dangling link (to gone.pgm)"]
    assert found[small.scan_path] == (
        f"problem: {small.scan_path} [{small.scan_id}]: at 0.2 mm (the dataset's nominal spacing (the file has none)) "
        f"the 200 x 150 px scan would be 40 x 30 mm, far outside any mammography detector (at least 50 mm on the long "
        f"side): the scan is left out (prep takes no spacing but the file's or the dataset's)")
    assert "radius 999999999 exceeds half the 1024x1024 image" in found[changed[0]]
    assert "x and y must be ≥ 0 and the radius > 0" in found[refused[0]]
    expected = {c.scan_id for c in cases} - {c.scan_id for c in (normal, small, fifo, loop, dangling)} - {
        r.ref for r in lesions[:4]}
    assert _produced(out) == expected


def _dies_on_3(x):
    if x == 3:
        os._exit(9)  # as a worker killed for memory
    return 10 * x


def test_a_dead_worker_is_its_items_problem_not_a_hang():
    from mammo_seg.data.ordered_pool import in_order

    assert list(in_order(_dies_on_3, list(range(7)), 2, lambda x: -x)) == [0, 10, 20, -3, 40, 50, 60]


def test_a_worker_dying_between_two_submissions_is_still_its_items_problem():
    """The consumer is slow: item 3 kills the pool while nothing is being waited on, so the next
    submission meets a pool that is already broken (a CI failure once, by timing)."""
    import time

    from mammo_seg.data.ordered_pool import in_order

    results = in_order(_dies_on_3, list(range(7)), 2, lambda x: -x)
    first = next(results)
    time.sleep(3)  # items 1-3 run meanwhile; 3 breaks the pool before item 4 is submitted
    assert [first, *results] == [0, 10, 20, -3, 40, 50, 60]
