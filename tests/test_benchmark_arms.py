"""The arms of the real-data studies (``benchmarks/out_of_fold.py``): an arm's folder records the recipe and
overrides it ran with, and is reused only for the same ones."""

import hashlib
import importlib.util
import json
import os
import pathlib
import sys

import numpy as np
import pytest

BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "benchmarks")
#: stands for quality_mias.py: notes that it ran, and writes the result file
FAKE_QUALITY = """
import os, sys
args = sys.argv[1:]
work, out = args[args.index("--work") + 1], args[args.index("--out") + 1]
os.makedirs(work, exist_ok=True)
with open(os.path.join(work, "runs.txt"), "a") as f:
    f.write(" ".join(args[args.index("--out") + 2:]) + "\\n")
with open(out + ".json", "w") as f:
    f.write("{}")
"""


@pytest.fixture
def arms(tmp_path, monkeypatch):
    """benchmarks/out_of_fold.py, its quality_mias.py replaced by a script that only writes the result file."""
    spec = importlib.util.spec_from_file_location("out_of_fold", os.path.join(BENCHMARKS, "out_of_fold.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fake = tmp_path / "bench"
    fake.mkdir()
    (fake / "quality_mias.py").write_text(FAKE_QUALITY)
    monkeypatch.setattr(module, "HERE", str(fake))
    return module


def test_an_arm_is_reused_only_with_the_recipe_and_overrides_it_ran_with(arms, tmp_path, capsys):
    recipe, work = tmp_path / "recipe.yaml", str(tmp_path / "work")
    recipe.write_text("train: {lr: 0.001}\n")
    os.makedirs(work)
    folder = os.path.join(work, "wide")

    def run(overrides):
        return arms.run_arm("wide", "width 0.5", str(recipe), overrides, "mias.tar.xz", work, "levers")

    def runs():
        return open(os.path.join(folder, "runs.txt")).read().splitlines()
    run(["model.width=0.5"])
    assert runs() == ["--set model.width=0.5"]
    digest = hashlib.sha256(b"train: {lr: 0.001}\n").hexdigest()
    assert json.load(open(os.path.join(folder, "arm.json"))) == {"recipe_sha256": digest,
                                                                  "overrides": ["model.width=0.5"]}
    assert run(["model.width=0.5"]) == 0.0 and runs() == ["--set model.width=0.5"]  # reused, not run again
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as refused:
        run(["model.width=0.25"])
    assert str(refused.value) == (f"levers: {folder} was run with another recipe or overrides (overrides "
                                  f"['model.width=0.5'], now ['model.width=0.25']); remove it or use another --work")
    recipe.write_text("train: {lr: 0.002}\n")
    changed = hashlib.sha256(b"train: {lr: 0.002}\n").hexdigest()
    with pytest.raises(SystemExit) as refused:
        run(["model.width=0.5"])
    assert str(refused.value) == (f"levers: {folder} was run with another recipe or overrides (recipe SHA-256 "
                                  f"{digest[:12]}, now {changed[:12]}); remove it or use another --work")
    assert runs() == ["--set model.width=0.5"]  # nothing ran


def test_an_unfinished_arm_is_not_continued_with_other_settings(arms, tmp_path):
    recipe, work = tmp_path / "recipe.yaml", str(tmp_path / "work")
    recipe.write_text("seed: 0\n")
    folder = os.path.join(work, "base")
    os.makedirs(folder)
    with open(os.path.join(folder, "arm.json"), "w") as f:
        json.dump(arms.arm_record(str(recipe), []), f)  # it started, and stopped before its result.json
    with pytest.raises(SystemExit, match=r"base was run with another recipe or overrides \(overrides \[\], now "
                                         r"\['seed=1'\]\)"):
        arms.run_arm("base", "base", str(recipe), ["seed=1"], "mias.tar.xz", work, "loss study")
    arms.run_arm("base", "base", str(recipe), [], "mias.tar.xz", work, "loss study")  # the same: it continues
    assert os.path.isfile(os.path.join(folder, "result.json"))
    with open(os.path.join(folder, "arm.json"), "w") as f:
        f.write("{")
    with pytest.raises(SystemExit, match=r"loss study: .*arm.json: unreadable \(JSONDecodeError"):
        arms.run_arm("base", "base", str(recipe), [], "mias.tar.xz", work, "loss study")


def test_an_arm_folder_from_before_arms_were_recorded_is_reused_with_a_warning(arms, tmp_path, capsys):
    recipe, work = tmp_path / "recipe.yaml", str(tmp_path / "work")
    recipe.write_text("seed: 0\n")
    folder = os.path.join(work, "base")
    os.makedirs(folder)
    pathlib.Path(folder, "result.json").write_text("{}")
    assert arms.run_arm("base", "base", str(recipe), ["seed=1"], "mias.tar.xz", work, "levers") == 0.0
    assert not os.path.exists(os.path.join(folder, "runs.txt"))  # not run again
    assert capsys.readouterr().err == (f"levers: warning: {folder} has no arm.json (its recipe and overrides are not "
                                       f"known); its result.json is reused as it is\n")
    assert not os.path.exists(os.path.join(folder, "arm.json"))  # nothing is claimed for it


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx2 avx512f avx512_bf16 amx_bf16", "(Test CPU 9000; AVX-512, native bfloat16)"),
    ("fpu sse avx2 avx512f", "(Test CPU 9000; AVX-512)"),
    ("fpu sse avx avx2 fma", "(Test CPU 9000; no AVX-512)"),
])
def test_a_timing_names_the_cpu_and_what_sets_its_speed(tmp_path, flags, expected):
    spec = importlib.util.spec_from_file_location("common", os.path.join(BENCHMARKS, "common.py"))
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n")
    assert common.machine_description(str(cpuinfo)) == f"{len(os.sched_getaffinity(0))}-core CPU {expected}"
    assert common.machine_description(str(tmp_path / "absent")) == f"{len(os.sched_getaffinity(0))}-core CPU"


def benchmark(monkeypatch, name: str):
    """The benchmark script ``benchmarks/NAME.py`` as a module (its sibling modules importable)."""
    monkeypatch.syspath_prepend(BENCHMARKS)
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_lever_arm_is_a_valid_recipe(monkeypatch):
    """A misspelt key in an arm would fail only when the arm starts, after the arms before it ran for an hour."""
    import dataclasses

    from mammo_seg.config import PrepSection, load_config

    levers = benchmark(monkeypatch, "levers_mias")
    prep_keys = {field.name for field in dataclasses.fields(PrepSection)}
    for name, (_, overrides, prep) in levers.ARMS.items():
        load_config(levers.RECIPE, overrides)  # raises on an unknown key or a value out of range
        assert set(prep) <= prep_keys, name
    from mammo_seg.config import stage_configs

    recipe = stage_configs(load_config(levers.RECIPE))
    longer = stage_configs(load_config(levers.RECIPE, levers.ARMS["whole_scans_12_epochs"][1]))
    assert [c.train.epochs for _, c in longer] == [recipe[0][1].train.epochs, 12]
    assert longer[0][1] == recipe[0][1] and longer[-1][1].train.validation_freq == 12
    dense = stage_configs(load_config(levers.RECIPE, levers.ARMS["dense_crops"][1]))
    assert [c.data.background_quantile for _, c in dense] == [0.5, 0.0]  # the whole scans stay centred


@pytest.fixture
def ensemble(monkeypatch):
    return benchmark(monkeypatch, "ensemble_mias")


def test_averaged_arms_are_the_mean_of_their_maps_scored_at_a_point(ensemble):
    import numpy as np

    from mammo_seg.detection import ScanLesions
    from mammo_seg.intervals import Arm

    lesion = np.zeros((4, 4), bool)
    lesion[:3, :2] = True  # 6 pixels
    a, b = np.zeros((4, 4), np.float16), np.zeros((4, 4), np.float16)
    a[:2, :2], b[:2, :2], b[3, 3] = 0.875, 0.5, 0.5

    def arm(*maps):
        scans = [ScanLesions(maps[0], [lesion], ["CIRC"], 1.0), ScanLesions(maps[1], [], [], 1.0),
                 ScanLesions(maps[2], [lesion], ["SPIC"], 1.0)]
        return Arm(scans, [None] * 3, 0.5, 1.0)

    normal = np.full((4, 4), 0.25, np.float16)
    mean = ensemble.mean_scans([arm(a, normal, a), arm(b, 0 * normal, None)])
    assert mean[0].probability[0, 0] == pytest.approx(0.6875) and mean[0].probability[3, 3] == 0.25
    assert mean[1].probability[0, 0] == 0.125 and mean[2].probability is None  # a failed prediction stays failed
    assert mean[0].lesions == [lesion] and mean[0].kinds == ["CIRC"]
    # at 0.6: the 2x2 block against the 6-pixel lesion, 2*4/(4+6); no Dice without a lesion or a prediction
    assert ensemble.lesion_dice(mean, 0.6, 1.0) == [pytest.approx(0.8), None, None]
    assert ensemble.lesion_dice(mean, 0.6, 5.0) == [0.0, None, None]  # the block is smaller than 5 mm²


def test_the_rule_chooses_on_the_predicted_scans_with_their_ignore_regions(ensemble):
    import numpy as np

    from mammo_seg.config import load_config
    from mammo_seg.detection import ScanLesions

    def blob(value):
        prob = np.zeros((20, 20), np.float32)
        prob[4:12, 4:12] = value  # 64 pixels: 16 mm² at 0.25 mm²
        return prob

    lesion = np.zeros((20, 20), bool)
    lesion[4:12, 4:12] = True
    scans = [ScanLesions(blob(0.92), [lesion], ["CIRC"], 0.25),
             ScanLesions(blob(0.55), [], [], 0.25),  # a lesion-free scan, flagged at thresholds up to 0.55
             ScanLesions(blob(0.95), [], [], 0.25, ignore=lesion),  # its blob lies in an ignore region
             ScanLesions(None, [lesion], ["SPIC"], 1.0)]  # a failed prediction (its pixel area unknown)
    section = load_config(os.path.join(BENCHMARKS, "..", "experiments", "mias_real", "recipe.yaml")).operating_point
    point = ensemble.own_point(scans, section)
    # the highest threshold that finds the lesion and flags no lesion-free scan; 10 mm², the only area under 16
    assert (point["threshold"], point["min_area_mm2"]) == (0.9, 10.0)
    assert point["validation"]["normal_with_detection_rate"] == 0.0


def test_arms_of_other_folds_are_not_averaged(ensemble, tmp_path, capsys):
    for name, fold_of in (("one", {"w1": 1, "w2": 2}), ("two", {"w1": 2, "w2": 1})):
        (tmp_path / name / "run").mkdir(parents=True)
        (tmp_path / name / "run" / "cv.json").write_text(json.dumps({"folds": 2, "fold_of": fold_of}))
    with pytest.raises(SystemExit):
        ensemble.main(["--arm", f"one={tmp_path / 'one'}", "--arm", f"two={tmp_path / 'two'}",
                       "--out", str(tmp_path / "out")])
    assert "--arm two: its folds of women differ from one's" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


@pytest.fixture
def postprocess(monkeypatch):
    return benchmark(monkeypatch, "postprocess_mias")


def test_the_extent_rule_makes_a_detection_its_whole_half_probability_component(postprocess):
    from mammo_seg.detection import find_detections

    prob = np.zeros((5, 6), np.float32)
    prob[1, 1:4] = [0.6, 0.9, 0.95]  # one component over 0.5, peak 0.95 at (1, 3)
    prob[2, 2] = 0.7
    prob[3, 5] = 0.4  # under the level: unchanged
    out = postprocess.extent(prob, 0.5)
    assert out[1, 3] == np.float32(0.95) and out[3, 5] == np.float32(0.4)
    assert all(out[i] == np.nextafter(np.float32(0.95), np.float32(0)) for i in [(1, 1), (1, 2), (2, 2)])
    peak = float(np.float32(0.95))
    assert [(d.peak, d.score, d.area_px) for d in find_detections(out, 0.85, 1)] == [((1, 3), peak, 4)]
    assert [(d.peak, d.area_px) for d in find_detections(prob, 0.85, 1)] == [((1, 3), 2)]  # without the rule
    np.testing.assert_array_equal(out >= 0.3, prob >= 0.3)  # below the level the rule changes nothing


def test_the_contralateral_rule_subtracts_the_mirrored_other_breast_nearby(postprocess):
    prob = np.zeros((3, 7), np.float32)
    prob[1, 1] = prob[1, 5] = 0.9
    other = np.zeros((3, 7), np.float32)
    other[1, 5] = 0.8  # mirrored: column 1, under prob's first peak
    out = postprocess.contralateral(prob, other, pixel_mm=1.0, weight=0.5, radius_mm=1.0)
    expected = np.zeros((3, 7), np.float32)
    expected[1, 1], expected[1, 5] = 0.9 - 0.4, 0.9  # the 3×3 window around (1, 1) holds the 0.8; (1, 5)'s none
    np.testing.assert_allclose(out, expected, atol=1e-7)
    np.testing.assert_array_equal(postprocess.contralateral(prob, None, 1.0), prob)  # no other breast


def test_a_study_of_a_finished_run_refuses_a_folder_without_one(monkeypatch, tmp_path, capsys):
    quality = benchmark(monkeypatch, "quality_mias")
    with pytest.raises(SystemExit):
        quality.finished_work_arguments("a study", "study", ["--work", str(tmp_path)])
    assert f"--work {tmp_path}: no finished quality_mias run (run/operating_point.json)" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "operating_point.json").write_text("{}")
    args = quality.finished_work_arguments("a study", "study", ["--work", str(tmp_path)])
    assert args.work == str(tmp_path) and args.out == os.path.join(quality.RESULTS, "study")


def test_a_study_of_finished_runs_refuses_a_folder_without_one_and_a_name_twice(monkeypatch, tmp_path, capsys):
    quality = benchmark(monkeypatch, "quality_mias")
    done = tmp_path / "done"
    (done / "run").mkdir(parents=True)
    (done / "run" / "operating_point.json").write_text("{}")
    for argv, error in ((["--run", f"a={done}", "--run", f"b={tmp_path}"], f"--run b={tmp_path}: no finished"),
                        (["--run", f"a={done}", "--run", f"a={done}"], "--run: NAME=FOLDER, each NAME once"),
                        (["--run", str(done)], "--run: NAME=FOLDER, each NAME once")):
        with pytest.raises(SystemExit):
            quality.finished_runs_arguments("a study", "study", argv)
        assert error in capsys.readouterr().err, argv
    folders, out = quality.finished_runs_arguments("a study", "study", ["--run", f"a={done}", "--out", "x/y"])
    assert folders == {"a": str(done)} and out == "x/y"


def test_a_crop_is_cut_around_its_centre_from_the_zero_padded_scan_and_scored_at_half(monkeypatch):
    import keras

    crops = benchmark(monkeypatch, "crop_position_mias")
    inputs = keras.Input((None, None, 1))
    threshold_at_half = keras.layers.Conv2D(1, 1, kernel_initializer=keras.initializers.Constant(20.0),
                                            bias_initializer=keras.initializers.Constant(-10.0))
    model = keras.Model(inputs, threshold_at_half(inputs))  # logit 20·(x - 0.5): probability ≥ 0.5 where x ≥ 0.5
    image = np.zeros((20, 20), np.float32)
    image[2:6, 2:6] = 1.0
    mask = np.zeros((20, 20), bool)
    mask[2:6, 3:7] = True  # the reference shifted by one column: Dice 2·12 / (16 + 16)
    assert crops.crop_dice(model, image, mask, (4, 4), 8) == pytest.approx(24 / 32)
    # rows and columns -2 … 3, the first two zero padding: 2×2 predicted, 2×1 of the reference, all of it inside
    assert crops.crop_dice(model, image, mask, (1, 1), 6) == pytest.approx(2 * 2 / (4 + 2))
    assert crops.crop_dice(model, image, mask, (15, 15), 6) == 1.0  # nothing in it, nothing predicted


def test_an_arm_built_on_another_is_refused_before_anything_runs_unless_its_base_arm_runs_first(monkeypatch,
                                                                                                tmp_path, capsys):
    levers = benchmark(monkeypatch, "levers_mias")
    archive = tmp_path / "mias.tar.xz"
    archive.write_bytes(b"")
    ran = []
    monkeypatch.setattr(levers, "run_arm", lambda *args: ran.append(args))
    for arms in ("whole_scans,recipe", "seed_2,whole_scans_seed_1", "whole_scans_lr_0.001_seed_2,seed_2"):
        with pytest.raises(SystemExit):
            levers.main(["--arms", arms, "--baseline", arms.split(",")[1], "--archive", str(archive),
                         "--work", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert "arms listed before the arm whose models they start from: whole_scans (needs recipe before it)" in err
    assert "whole_scans_seed_1 (needs seed_1 before it)" in err
    assert "whole_scans_lr_0.001_seed_2 (needs seed_2 before it)" in err  # it shares seed_2's crop stage
    assert ran == []
    class Compared(Exception):
        pass

    def compare(*args):
        raise Compared
    monkeypatch.setattr(levers, "unpack", compare)
    with pytest.raises(Compared):
        levers.main(["--arms", "recipe,whole_scans", "--archive", str(archive), "--work", str(tmp_path / "work")])
    assert [call[0] for call in ran] == ["recipe", "whole_scans"]
    assert ran[0][3] == [] and ran[1][3] == [*levers.WHOLE_SCANS[1],
                                             f"train.init_from={tmp_path / 'work' / 'recipe' / 'run'}"]


def test_an_arm_shares_only_a_first_stage_its_base_trained_with_the_same_config(monkeypatch, tmp_path):
    """``SAME_CROPS``: the arm's run starts from hard links to the base arm's finished crop stages and ``cv.json``;
    an arm whose crop stage differs (another seed), or a base with an unfinished fold, is refused."""
    levers = benchmark(monkeypatch, "levers_mias")
    for arm, base in levers.SAME_CROPS.items():
        assert levers.first_stage(levers.RECIPE, levers.ARMS[arm][1]) == \
            levers.first_stage(levers.RECIPE, levers.ARMS[base][1]), arm
    work = tmp_path / "work"
    base_run = work / "seed_1" / "run"
    base_run.mkdir(parents=True)
    (base_run / "cv.json").write_text('{"seed": 0}')
    for k in range(1, 6):
        stage = base_run / f"fold{k}" / "stage1_crops"
        stage.mkdir(parents=True)
        (stage / "last.keras").write_text(f"fold {k}")
        if k < 5:
            (stage / "done.json").write_text("{}")
    arm = "whole_scans_lr_0.001_seed_1"

    def share(name, base):
        levers.share_crops(str(work), name, base, levers.RECIPE, levers.ARMS[name][1], levers.ARMS[base][1])

    with pytest.raises(SystemExit, match=r"shares seed_1's stage1_crops, which folds \[5\] of .* lack"):
        share(arm, "seed_1")
    (base_run / "fold5" / "stage1_crops" / "done.json").write_text("{}")
    with pytest.raises(SystemExit, match="whole_scans_lr_0.001 does not train seed_1's first stage"):
        share("whole_scans_lr_0.001", "seed_1")
    share(arm, "seed_1")
    run = work / arm / "run"
    assert (run / "cv.json").read_text() == '{"seed": 0}'
    for k in range(1, 6):
        copy, original = (r / f"fold{k}" / "stage1_crops" / "last.keras" for r in (run, base_run))
        assert copy.read_text() == f"fold {k}" and copy.stat().st_ino == original.stat().st_ino
    assert sorted(p.name for p in (run / "fold1").iterdir()) == ["stage1_crops"]


def test_lesion_peaks_are_the_highest_probability_inside_each_lesion_counted_by_group(monkeypatch):
    from mammo_seg.detection import ScanLesions

    peaks = benchmark(monkeypatch, "lesion_peaks_mias")
    prob = np.zeros((4, 4), np.float32)
    prob[0, 0], prob[0, 1], prob[3, 3] = 0.3, 0.7, 0.04
    mass, calc = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    mass[0, :2] = True  # holds 0.3 and 0.7: its peak is 0.7
    calc[2:, 2:] = True  # holds 0 and 0.04
    # pixels of π mm²: the 2-pixel mass is a circle 2·√2 mm across, the 4-pixel cluster one 4 mm across
    scans = [ScanLesions(prob, [mass, calc], ["CIRC", "CALC"], np.pi),
             ScanLesions(None, [mass], ["SPIC"], np.pi),  # a failed prediction finds nothing: peak 0
             ScanLesions(prob, [], [], np.pi)]
    found = peaks.lesion_peaks(scans)
    assert found == [("CIRC", pytest.approx(2 * np.sqrt(2)), float(np.float32(0.7))),
                     ("CALC", pytest.approx(4.0), float(np.float32(0.04))),
                     ("SPIC", pytest.approx(2 * np.sqrt(2)), 0.0)]
    table = peaks.peak_table(found, {"masses": ["CIRC", "SPIC"], "calcifications": ["CALC"], "none": ["ARCH"]},
                             {"under 3 mm": (0.0, 3.0), "3 mm or more": (3.0, np.inf), "over 5 mm": (5.0, np.inf)})
    assert table["all"] == {"lesions": 3, "under_0.05": 2, "under_0.5": 2, "median_peak": float(np.float32(0.04))}
    assert table["masses"]["lesions"] == 2 and table["masses"]["under_0.05"] == 1 and table["masses"]["under_0.5"] == 1
    assert table["calcifications"]["under_0.05"] == 1
    assert table["none"] == {"lesions": 0, "under_0.05": 0, "under_0.5": 0, "median_peak": None}
    assert table["under 3 mm"] == {"lesions": 2, "under_0.05": 1, "under_0.5": 1,
                                   "median_peak": pytest.approx(float(np.float32(0.7)) / 2)}
    assert table["3 mm or more"] == {"lesions": 1, "under_0.05": 1, "under_0.5": 1,
                                     "median_peak": float(np.float32(0.04))}
    assert table["over 5 mm"]["lesions"] == 0
    assert list(peaks.peak_table(found, {})) == ["all", *peaks.SIZES]  # the sizes by default


def test_a_lever_over_seeds_pairs_each_seed_twin_with_the_recipe_of_its_seed(monkeypatch):
    seeds = benchmark(monkeypatch, "levers_seeds_mias")
    assert seeds.seed_arms("deep_supervision", 3) == [(0, "deep_supervision", "recipe"),
                                                      (1, "deep_supervision_seed_1", "seed_1"),
                                                      (2, "deep_supervision_seed_2", "seed_2")]
    for _, arm, base in seeds.seed_arms("ignore_calc", 3):  # every twin is an arm levers_mias can run
        assert arm in seeds.ARMS and base in seeds.ARMS
    # a twin trains the arm's setting with the seed of its recipe arm, on the same folds
    assert seeds.ARMS["lr_0.004_seed_2"][1] == [*seeds.ARMS["seed_2"][1], *seeds.ARMS["lr_0.004"][1]]


def test_a_lever_over_seeds_refuses_an_unfinished_arm_or_one_of_another_setting(monkeypatch, tmp_path, capsys):
    seeds = benchmark(monkeypatch, "levers_seeds_mias")
    folder = tmp_path / "lr_0.004_seed_1"
    folder.mkdir()
    with pytest.raises(SystemExit, match="arm lr_0.004_seed_1 has not finished"):
        seeds.check_folder(str(folder), "lr_0.004_seed_1")
    (folder / "result.json").write_text("{}")
    seeds.check_folder(str(folder), "lr_0.004_seed_1")  # no arm.json: an arm from before arms were recorded
    (folder / "arm.json").write_text(json.dumps({"recipe_sha256": "x", "overrides": ["seed=1", "cv.seed=0",
                                                                                      "train.lr=0.004"]}))
    seeds.check_folder(str(folder), "lr_0.004_seed_1")  # the recipe's SHA-256 is not compared
    with pytest.raises(SystemExit, match=r"run with overrides \['seed=1'"):
        seeds.check_folder(str(folder), "deep_supervision_seed_1")
    (folder / "arm.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"levers_seeds: .*arm.json: unreadable \(JSONDecodeError"):
        seeds.check_folder(str(folder), "lr_0.004_seed_1")
    with pytest.raises(SystemExit):
        seeds.main(["--work", f"{tmp_path},{tmp_path}", "--levers", "lr_0.004,no_such_lever"])
    assert "unknown: no_such_lever" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        seeds.main(["--work", str(tmp_path), "--levers", "lr_0.004"])
    assert "--work: one folder a seed, 2 to 3 of them" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="arm recipe has not finished"):  # before its ground truth is read
        seeds.main(["--work", f"{tmp_path},{tmp_path}", "--levers", "lr_0.004"])


def test_a_lever_over_seeds_table_gives_the_mean_and_each_seed(monkeypatch, tmp_path):
    from mammo_seg.detection import ScanLesions
    from mammo_seg.intervals import Arm, mean_paired_difference

    seeds = benchmark(monkeypatch, "levers_seeds_mias")
    lesion = np.zeros((20, 20), bool)
    lesion[2:6, 2:6] = True
    found = np.zeros((20, 20), np.float32)
    found[3:5, 3:5] = 0.9

    def arm(prob):
        return Arm([ScanLesions(prob, [lesion], ["CIRC"], 1.0)], [0.5], 0.5, 0.0)

    finds, misses = arm(found), arm(np.zeros((20, 20), np.float32))
    groups = {"all": {"CIRC"}, **{g: set(k) for g, k in seeds.GROUPS.items()}}
    lever = mean_paired_difference([(misses, finds), (finds, finds)], ["A"], groups=groups, resamples=20)
    report = {"seeds": 2, "min_area_mm2": 160.0, "machine": "a CPU", "work": ["/w0", "/w1"],
              "levers": {"lr_0.004": {"setting": "lr 0.004", **lever}}}
    seeds.write_markdown(report, str(tmp_path / "t.md"))
    text = (tmp_path / "t.md").read_text()
    assert text.startswith("# Each lever over 2 trainings") and "1 scans of 1 women, 1 lesions" in text
    row = next(line for line in text.splitlines() if line.startswith("| lr_0.004 |"))
    # one seed loses the lesion, the other is the recipe's twin: a mean of −0.5 at 1 FP/image, seeds −1 and 0
    assert "| **-0.50 (-0.50 to -0.50)** (-1.00, +0.00) |" in row and row.count("n/a") == 1  # no distortion


def test_false_positives_are_measured_against_their_own_breast(monkeypatch):
    """A 6×6 scan whose breast is its first 4 columns, pixel (r, c) = (4r + c)/32 there (exact in float32). A
    3×3 lesion at the corner (mean 5/32: 5 of the 24 breast pixels darker), a 2-pixel detection peaking in it (mean
    1/64: 1 darker), a 2-pixel one outside it (mean 18.5/32: 19 darker), a 1-pixel one under the minimum area."""
    fp = benchmark(monkeypatch, "false_positives_mias")
    rows, cols = np.mgrid[:6, :6]
    breast = cols < 4
    pixels = np.where(breast, (4 * rows + cols) / 32, 0).astype(np.float32)
    lesion = (rows < 3) & (cols < 3)
    prob = np.zeros((6, 6), np.float32)
    prob[0, 0], prob[0, 1] = 0.6, 0.9  # peak (0, 1) in the lesion: 3 pixels from column 4, the breast's edge
    prob[4, 2], prob[4, 3] = 0.7, 0.8  # peak (4, 3): 1 pixel from the edge
    prob[2, 3] = 0.95  # 1 pixel: under the minimum area, though it touches nothing
    from mammo_seg.detection import find_detections

    detections, circles = fp.scan_regions(pixels, breast, prob, 0.5, find_detections(prob, 0.5, 2), [lesion], 0.5)
    assert detections == [fp.Region(True, 1 / 24, 0.5, 1.5), fp.Region(False, 19 / 24, 0.5, 0.5)]
    assert circles == [fp.Region(True, 5 / 24, 2.25, 1.5)]  # its centre (1, 1): 3 pixels from the edge
    table = fp.region_table(detections, circles)
    assert table["false positives"]["brighter_than"] == {"n": 1, "quartiles": [19 / 24] * 3}
    assert table["true detections"]["depth_mm"] == {"n": 1, "quartiles": [1.5] * 3}
    assert table["lesion circles"]["area_mm2"]["n"] == 1
    normals = fp.normal_table([(True, 0.5, "F"), (False, 0.25, "D"), (False, 0.75, "D")])
    assert normals["flagged"] == {"n": 1, "quartiles": [0.5] * 3}
    assert normals["clean"] == {"n": 2, "quartiles": [0.375, 0.5, 0.625]}
    assert normals["by_tissue"] == {"fatty": {"scans": 1, "flagged": 1}, "glandular": {"scans": 0, "flagged": 0},
                                    "dense": {"scans": 2, "flagged": 0}}
