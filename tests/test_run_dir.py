"""Which model a path stands for: a .keras file, a run directory, or a curriculum root."""

import os

import pytest

from mammo_seg.config import stage_configs
from mammo_seg.errors import MammoError
from mammo_seg.run_dir import RunDir, model_file, stage_folder


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
    return str(path)


def test_a_run_directory_stands_for_its_best_model_else_its_last(tmp_path):
    run = RunDir(str(tmp_path))
    last = touch(run.last_model)
    assert model_file(str(tmp_path)) == last
    best = touch(run.best_model)
    assert model_file(str(tmp_path)) == best
    assert model_file(best) == best


def test_a_curriculum_root_stands_for_its_last_stage_with_a_model(tmp_path):
    root = RunDir(str(tmp_path))
    touch(root.stage(stage_folder(2, "tiles")).best_model)
    wanted = touch(root.stage(stage_folder(10, "full")).last_model)  # stage 10 comes after stage 2
    os.makedirs(root.stage(stage_folder(11, "unstarted")).path)
    assert [os.path.basename(s.path) for s in root.stages()] == ["stage2_tiles", "stage10_full", "stage11_unstarted"]
    assert model_file(str(tmp_path)) == wanted


def test_no_model_says_so(tmp_path):
    with pytest.raises(MammoError, match="no best.keras or last.keras"):
        model_file(str(tmp_path))
    with pytest.raises(MammoError, match="no such model"):
        model_file(str(tmp_path / "missing"))
    with pytest.raises(MammoError, match="not a .keras"):
        model_file(touch(tmp_path / "config.yaml"))


def test_stage_configs_name_their_folders_as_the_run_directory_reads_them():
    from mammo_seg.config import ExperimentConfig, from_dict

    config = from_dict(ExperimentConfig, {"data": {"dir": "prep"}, "stages": [{"name": "a"}, {"name": "b"}]})
    assert [folder for folder, _ in stage_configs(config)] == [stage_folder(1, "a"), stage_folder(2, "b")]
    assert [RunDir("r").stage(folder).path for folder, _ in stage_configs(config)] == ["r/stage1_a", "r/stage2_b"]


def test_the_precision_a_model_was_trained_in_is_what_its_runs_recorded(tmp_path):
    import json

    def record(run, policy):
        os.makedirs(run.path, exist_ok=True)
        with open(run.data_info, "w") as f:
            json.dump({"precision": policy, "precision_reason": "auto: test"}, f)
        touch(run.best_model)

    root = RunDir(str(tmp_path / "curriculum"))
    assert root.trained_precision() is None  # no run yet
    record(root.stage(stage_folder(1, "tiles")), "mixed_bfloat16")
    record(root.stage(stage_folder(2, "full")), "float32")
    assert root.trained_precision() == "float32"  # the last stage's: the model's
    assert root.stage(stage_folder(1, "tiles")).recorded_precision() == ("mixed_bfloat16", "auto: test")
    cv = RunDir(str(tmp_path / "cv"))
    for k, policy in ((1, "mixed_bfloat16"), (2, "mixed_bfloat16")):
        record(cv.fold(k), policy)
    cv.write_ensemble(cv.folds(2))
    assert cv.trained_precision() == "mixed_bfloat16"
    record(cv.fold(2), "float32")
    assert cv.trained_precision() == "fold1: mixed_bfloat16, fold2: float32"
    with open(cv.fold(2).data_info, "w") as f:
        json.dump({"data_dir": "d"}, f)  # a run from before the precision was recorded
    assert cv.trained_precision() is None
    with open(cv.fold(2).data_info, "w") as f:
        f.write("{")
    with pytest.raises(MammoError, match="data.json: unreadable"):
        cv.trained_precision()
