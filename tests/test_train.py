"""``mammo train``: a tiny run end to end, resume after kill -9, and tf.distribute equivalence."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mammo_seg.cli import main

HERE = os.path.dirname(__file__)
TINY = os.path.join(HERE, "..", "experiments", "tiny.yaml")


@pytest.fixture(scope="module")
def data_dir(cbis_raw, tmp_path_factory):
    from data_prep.prepare import prepare
    from mammo_seg.data.resolution import Resolution

    out = str(tmp_path_factory.mktemp("train_data"))
    prepare("cbis-ddsm", cbis_raw, out, tiles=(64,), resolution=Resolution(scale=0.125), full_scans=True,
            progress=False)
    return out


def history(run):
    with open(os.path.join(run, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_run_writes_the_run_directory(data_dir, tmp_path):
    run = str(tmp_path / "run")
    args = ["train", "-c", TINY, "--out", run, "--quiet", "--set", f"data.dir={data_dir}", "--set", "data.tile=64"]
    assert main(args) == 0
    for name in ("config.yaml", "data.json", "train.log", "history.csv", "best.keras", "last.keras",
                 "progress.png", "tensorboard"):
        assert os.path.exists(os.path.join(run, name)), name
    rows = history(run)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert {"loss", "regularization", "lesion_iou", "precision", "recall", "val_loss", "val_lesion_iou"} <= set(rows[0])
    for row in rows:  # the IoU loss alone, without the weight decay that used to push it above 1
        assert 0 <= float(row["loss"]) <= 1 and 0 <= float(row["val_loss"]) <= 1 and float(row["regularization"]) > 0
    log = open(os.path.join(run, "train.log")).read()
    assert "epoch 2/2" in log and "saved best.keras" in log
    import keras

    model = keras.models.load_model(os.path.join(run, "best.keras"), safe_mode=True)
    # the model is the one record of its training grid, the data's nominal spacing included
    assert model.resolution["scale"] == 0.125 and model.resolution["nominal_spacing_mm"] == 0.05
    assert "resolution" not in json.load(open(os.path.join(run, "data.json")))
    assert model(np.zeros((1, 40, 40, 1), "float32")).shape == (1, 40, 40, 1)
    assert main(args) == 2  # the run exists: refused without --resume


def test_validation_every_other_epoch_changes_no_training_and_logs_nan_between(data_dir, tmp_path, monkeypatch):
    from mammo_seg.training import callbacks
    from mammo_seg.training.callbacks import read_history

    drawn, draw = [], callbacks.plot_history  # the progress plot: the epochs it is drawn after (rows of history)
    monkeypatch.setattr(callbacks, "plot_history", lambda rows, *args: drawn.append(len(rows)) or draw(rows, *args))
    common = ["-c", TINY, "--quiet", "--set", f"data.dir={data_dir}", "--set", "data.tile=64",
              "--set", "train.epochs=5", "--set", "train.steps_per_epoch=2", "--set", "train.checkpoint=last"]
    every, sparse = str(tmp_path / "every"), str(tmp_path / "sparse")
    assert main(["train", "--out", every, *common]) == 0
    assert drawn == [1, 2, 3, 4, 5]
    drawn.clear()
    assert main(["train", "--out", sparse, *common, "--set", "train.validation_freq=2"]) == 0
    assert drawn == [1, 2, 4, 5]  # the first (no plot yet), the validated epochs 2 and 4, the last
    a, b = history(every), history(sparse)
    assert [r["epoch"] for r in b] == ["0", "1", "2", "3", "4"] and list(a[0]) == list(b[0])  # the same columns
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # validation draws nothing from training
    assert b[0]["val_lesion_iou"] == b[2]["val_lesion_iou"] == "nan"
    assert b[1]["val_lesion_iou"] == a[1]["val_lesion_iou"]
    assert b[4]["val_loss"] == a[4]["val_loss"]  # the last epoch is always validated
    assert "val_loss" not in read_history(os.path.join(sparse, "history.csv"))[0]
    log = open(os.path.join(sparse, "train.log")).read().splitlines()
    assert "val_" not in next(line for line in log if "epoch 1/5" in line)
    import keras

    for x, y in zip(*(keras.models.load_model(os.path.join(r, "last.keras")).get_weights() for r in (every, sparse))):
        np.testing.assert_array_equal(x, y)


def test_bad_config_value_and_missing_data_are_one_line_errors(data_dir, tmp_path, capsys):
    assert main(["train", "-c", TINY, "--out", str(tmp_path / "r"), "--set", "train.batch_size=big"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.batch_size" in err
    assert main(["train", "-c", TINY, "--out", str(tmp_path / "r2"), "--set", f"data.dir={tmp_path}/nothing"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nothing" in err and "manifest.json" in err
    ranges = {"data.background_quantile=1": "data.background_quantile: must be in [0, 1)",
              "data.background_quantile=0.5": "data.background_quantile: needs data.crop (crops are cut from whole "
                                              "scans)",
              "data.lesion_offset=1.5": "data.lesion_offset: must be in [0, 1]"}
    ranges["train.ema=1"] = "train.ema: must be in [0, 1) (0: off)"
    ranges["train.weight_decay=-0.1"] = "train.weight_decay: must be a finite number, at least 0"
    for setting, line in ranges.items():
        assert main(["train", "-c", TINY, "--out", str(tmp_path / "r3"), "--set", f"data.dir={data_dir}",
                     "--set", "data.tile=64", "--set", setting]) == 2, setting
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.endswith(line) and not os.path.exists(tmp_path / "r3"), (setting, err)


def _keras_without_config(tmp_path) -> str:
    import zipfile

    from mammo_seg.models.fcn import MammoFCN

    whole = str(tmp_path / "whole.keras")
    MammoFCN(width=0.125).save(whole)
    path = str(tmp_path / "noconfig.keras")
    with zipfile.ZipFile(whole) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            if name != "config.json":
                target.writestr(name, source.read(name))
    return path


def test_bad_model_settings_are_one_line_each_and_leave_no_run_behind(data_dir, tmp_path, capsys):
    import keras

    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 cut short")
    scan = keras.Input((None, None, 1))
    with_lambda = str(tmp_path / "lambda.keras")
    keras.Model(scan, keras.layers.Lambda(lambda t: t * 2)(scan)).save(with_lambda)
    without_config = _keras_without_config(tmp_path)
    cases = {
        f"train.init_from={corrupt}": f"{corrupt}: corrupt or truncated .keras model (not a zip archive)",
        f"train.init_from={with_lambda}": f"{with_lambda}: holds a Lambda layer (Python code inside the model): "
                                          f"refused, models are loaded in Keras safe mode only",
        f"train.init_from={without_config}": f"{without_config}: not a .keras model: the archive holds no "
                                             f"config.json (the model's architecture)",
        "train.freeze=[conv0, decoder]": "train.freeze: prefix 'decoder' matches no layer of the model (its layer "
                                         "names begin: scan, pad, normalize, conv0, pool0, conv1, pool1, conv2, "
                                         "pool2, conv3, pool3, conv4, conv5, fc, resize, up, upsample, logits, crop)",
        "train.strategy=tpu": "train.strategy: tpu: no TPU found on this machine (",
    }
    run = tmp_path / "run"
    for setting, line in cases.items():
        assert main(["train", "-c", TINY, "--out", str(run), "--quiet", "--set", f"data.dir={data_dir}",
                     "--set", "data.tile=64", setting]) == 2, setting
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"mammo train: error: {line}"), (setting, err)
        assert not (run / "config.yaml").exists()  # the corrected command runs without --resume


def test_a_truncated_shard_is_one_line_naming_it_in_train_and_inspect(data_dir, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    shard = data / "64" / "train-00000-of-00001.tfrecord"
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size - 100)  # the last record is cut short
    assert main(["train", "-c", TINY, "--out", str(tmp_path / "run"), "--quiet", "--set", f"data.dir={data}",
                 "--set", "data.tile=64", "train.epochs=1", "train.steps_per_epoch=20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mammo train: error: {shard}: unreadable shard (truncated record "
                                                    f"at "), err
    assert err.endswith(f"); check the data with `mammo inspect {data / '64'}` and prepare it again\n")
    assert main(["inspect", str(data / "64")]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    assert f"invalid: {shard}: corrupt shard (truncated record at " in out.out + out.err
    shutil.copy(os.path.join(data_dir, "64", shard.name), shard)  # the tiles whole again, the whole scans cut
    whole = data / "full" / "train-00000-of-00001.tfrecord"
    with open(whole, "r+b") as f:
        f.truncate(whole.stat().st_size - 100)
    assert main(["train", "-c", TINY, "--out", str(tmp_path / "run2"), "--quiet", "--set", f"data.dir={data}",
                 "--set", "data.tile=64", "train.epochs=1", "train.steps_per_epoch=2"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"mammo train: error: {whole}: unreadable shard (truncated record at ")
    assert err.endswith("); the model card counts the lesions of 'train' from it")


def test_with_ema_the_stage_ends_on_the_moving_average_of_its_weights(data_dir, tmp_path):
    """Adam's average after two steps is a₂ = m·w₁ + (1 − m)·w₂ (a₁ = w₁): three trainings of the same data stream,
    one step and two without the average (w₁, w₂) and two with it, m = 0.75. The moving statistics of the batch
    norms are not averaged: they are the two-step run's."""
    import keras

    common = ["-c", TINY, "--quiet", "--set", f"data.dir={data_dir}", "--set", "data.tile=64", "--set",
              "train.epochs=1", "--set", "train.checkpoint=last", "--set", "train.validation_steps=1"]
    weights = {}
    for name, steps, ema in (("one", 1, 0), ("two", 2, 0), ("ema", 2, 0.75)):
        run = str(tmp_path / name)
        assert main(["train", "--out", run, *common, "--set", f"train.steps_per_epoch={steps}",
                     "--set", f"train.ema={ema}"]) == 0
        model = keras.models.load_model(os.path.join(run, "last.keras"), safe_mode=True)
        weights[name] = ([np.asarray(v) for v in model.trainable_variables],
                         [np.asarray(v) for v in model.non_trainable_variables])
    for w1, w2, average in zip(weights["one"][0], weights["two"][0], weights["ema"][0]):
        np.testing.assert_allclose(average, 0.75 * w1 + 0.25 * w2, rtol=1e-6, atol=1e-7)
    assert any(not np.array_equal(w1, w2) for w1, w2 in zip(weights["one"][0], weights["two"][0]))
    for w2, kept in zip(weights["two"][1], weights["ema"][1]):
        np.testing.assert_array_equal(kept, w2)


def test_weight_decay_shrinks_every_kernel_by_lr_times_lambda_and_nothing_else(data_dir, tmp_path):
    """AdamW's decoupled step: w ← w·(1 − lr·λ) − Adam's step, Adam's step from the gradient at w. Three one-step
    trainings of the same batch with λ = 0, 0.5 and 1 (lr 0.003, constant): each kernel's differences
    w(0) − w(0.5) = w(0.5) − w(1) = lr·0.5·w_initial, so w(0) − w(0.5) is 0.0015 times the kernel it started from;
    biases and batch-norm scales and offsets are not decayed."""
    import keras

    from mammo_seg.models.fcn import MammoFCN

    common = ["-c", TINY, "--quiet", "--set", f"data.dir={data_dir}", "--set", "data.tile=64", "--set",
              "train.epochs=1", "--set", "train.steps_per_epoch=1", "--set", "train.checkpoint=last",
              "--set", "train.validation_steps=1"]
    weights = {}
    for decay in (0, 0.5, 1):
        run = str(tmp_path / f"wd{decay}")
        assert main(["train", "--out", run, *common, "--set", f"train.weight_decay={decay}"]) == 0
        model = keras.models.load_model(os.path.join(run, "last.keras"), safe_mode=True)
        weights[decay] = {v.path: np.asarray(v) for v in model.trainable_variables}
    keras.utils.set_random_seed(0)
    initial = {v.path: np.asarray(v) for v in MammoFCN(width=0.125, bn_momentum=0.9).trainable_variables}
    kernels = [path for path in weights[0] if path.endswith("kernel")]
    assert len(kernels) > 10 and len(kernels) < len(weights[0])
    for path, w0 in weights[0].items():
        first, second = w0 - weights[0.5][path], weights[0.5][path] - weights[1][path]
        if path in kernels:
            np.testing.assert_allclose(first, second, atol=1e-7)
            np.testing.assert_allclose(first, 0.003 * 0.5 * initial[path], atol=1e-7)
            assert np.abs(first).max() > 1e-5, path
        else:
            np.testing.assert_array_equal(first, 0, err_msg=path)


@pytest.mark.slow
def test_kill_9_then_resume_continues_without_losing_or_repeating_an_epoch(data_dir, tmp_path):
    common = ["-c", TINY, "--quiet", "--set", f"data.dir={data_dir}", "--set", "data.tile=64",
              "--set", "train.epochs=5", "--set", "train.steps_per_epoch=6"]
    clean = str(tmp_path / "clean")
    assert main(["train", "--out", clean, *common]) == 0
    run = str(tmp_path / "killed")
    command = [sys.executable, "-m", "mammo_seg.cli", "train", "--out", run, *common]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    backup = os.path.join(run, "backup")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(os.path.join(backup, "epoch-00002")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = len(history(run))
    assert 2 <= done < 5
    assert main(["train", "--out", run, "--resume", *common]) == 0
    resumed, reference = history(run), history(clean)
    assert [r["epoch"] for r in resumed] == ["0", "1", "2", "3", "4"]
    for a, b in zip(resumed, reference):  # same weights, optimizer state and data order as without the kill
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-6)
        assert float(a["val_lesion_iou"]) == pytest.approx(float(b["val_lesion_iou"]), abs=1e-6)
    assert "4 of 5 epochs" not in open(os.path.join(run, "train.log")).read()


def test_a_resumed_run_keeps_the_precision_it_started_in_and_the_card_reads_it(data_dir, tmp_path, monkeypatch,
                                                                              caplog):
    """An ``auto`` run started where bfloat16 is not native and resumed where it is goes on in float32 (its weights
    and optimizer state were built in it), says so in one line, and its data.json still says what ran. The model
    card reads that record, not this machine."""
    import logging

    from mammo_seg.config import load_config
    from mammo_seg.model_card import write_for_run
    from mammo_seg.run_dir import RunDir, load_keras
    from mammo_seg.training import precision
    from mammo_seg.training.run import train_stage

    def config(epochs):
        return load_config(TINY, [f"data.dir={data_dir}", "data.tile=64", f"train.epochs={epochs}",
                                  "train.steps_per_epoch=2", "train.validation_steps=1", "train.mixed_precision=auto"])

    def machine(native, hardware):
        monkeypatch.setattr(precision, "native_bfloat16", lambda *args, **kwargs: (native, hardware))

    run = RunDir(str(tmp_path / "run"))
    started = ("float32", "auto: CPU without AVX512_BF16 or AMX-BF16")
    machine(False, "CPU without AVX512_BF16 or AMX-BF16")
    train_stage(config(1), run.path, progress=False)
    assert run.recorded_precision() == started
    machine(True, "CPU with AVX512_BF16")
    with caplog.at_level(logging.WARNING, logger=precision.__name__):
        assert train_stage(config(2), run.path, resume=True, progress=False).epochs_done == 2
    assert [r["epoch"] for r in history(run.path)] == ["0", "1"]
    assert [r.getMessage() for r in caplog.records if r.name == precision.__name__] == [
        "resuming in float32, the precision this run started in (auto: CPU without AVX512_BF16 or AMX-BF16); here "
        "train.mixed_precision: auto would choose mixed_bfloat16 (auto: CPU with AVX512_BF16)"]
    assert run.recorded_precision() == started
    assert {layer.compute_dtype for layer in load_keras(run.last_model).layers} == {"float32"}
    assert "epochs 2-2; float32 (auto: CPU without AVX512_BF16 or AMX-BF16)" in open(run.log).read()

    def card_precision():
        write_for_run(config(2), run.path)
        return json.load(open(os.path.join(run.path, "model_card.json")))["provenance"]["precision"]
    assert card_precision() == "float32"  # where auto would now choose bfloat16
    info = json.load(open(run.data_info))

    def record(**fields):
        with open(run.data_info, "w") as f:
            json.dump({**info, **fields}, f)
    record(precision="mixed_bfloat16", precision_reason="auto: CPU with AVX512_BF16")
    machine(False, "CPU without AVX512_BF16 or AMX-BF16")
    assert card_precision() == "mixed_bfloat16"  # where auto would now choose float32
    # a record that is no precision: one line naming the file when the run is resumed
    record(precision="float8")
    from mammo_seg.errors import MammoError

    with pytest.raises(MammoError, match="data.json.*recorded precision 'float8' is none of float32, mixed_bfloat16"):
        train_stage(config(3), run.path, resume=True, progress=False)


CURRICULUM = """
name: two_stages
data: {dir: %s}
model: {width: 0.125, bn_momentum: 0.9}
train: {batch_size: 4, lr: 0.002, schedule: constant, validation_steps: 3}
stages:
  - name: tiles
    data: {tile: "64"}
    train: {epochs: 2, steps_per_epoch: 3}
  - name: whole
    data: {tile: full, crop: 96}
    train: {epochs: 1, steps_per_epoch: 3, batch_size: 2, freeze: [conv0, pool0]}
"""


def test_curriculum_chains_stages_and_resumes_at_the_first_unfinished(data_dir, tmp_path):
    import keras

    config = tmp_path / "curriculum.yaml"
    config.write_text(CURRICULUM % data_dir)
    root = str(tmp_path / "runs")
    assert main(["train", "-c", str(config), "--out", root, "--quiet"]) == 0
    first, second = os.path.join(root, "stage1_tiles"), os.path.join(root, "stage2_whole")
    for run in (first, second):
        assert os.path.isfile(os.path.join(run, "done.json")) and os.path.isfile(os.path.join(run, "best.keras"))
    log = open(os.path.join(second, "train.log")).read()
    assert f"initialised 53 layers from {first}" in log
    # frozen layers keep the first stage's weights exactly
    a = keras.models.load_model(os.path.join(first, "best.keras"), compile=False)
    b = keras.models.load_model(os.path.join(second, "last.keras"), compile=False)
    np.testing.assert_array_equal(a.get_layer("conv0_1").get_weights()[0], b.get_layer("conv0_1").get_weights()[0])
    assert not np.array_equal(a.get_layer("logits").get_weights()[0], b.get_layer("logits").get_weights()[0])
    # rerun after losing the second stage: the first is not trained again
    stamp = os.path.getmtime(os.path.join(first, "history.csv"))
    import shutil

    shutil.rmtree(second)
    assert main(["train", "-c", str(config), "--out", root, "--quiet"]) == 0
    assert os.path.getmtime(os.path.join(first, "history.csv")) == stamp
    assert os.path.isfile(os.path.join(second, "done.json"))
    from mammo_seg.run_dir import model_file

    assert model_file(root) == os.path.join(second, "best.keras")


def test_bad_stage_key_is_named(data_dir, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text((CURRICULUM % data_dir).replace("steps_per_epoch: 3}", "steps_per_epoch: 3, lr_max: 1}", 1))
    from mammo_seg.config import load_config
    from mammo_seg.errors import MammoError

    with pytest.raises(MammoError, match=r"stages\[0\].*train.lr_max"):
        load_config(str(config))


def test_train_step_returns_the_data_loss_and_the_regularization_apart():
    import keras
    import tensorflow as tf

    from mammo_seg.losses import SoftIoULoss
    from mammo_seg.training.step import Steps

    # a 1x1 convolution, kernel 2 and no bias: logits = 2x; L2(0.5) on the kernel: penalty 0.5 · 2² = 2
    conv = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(2.0),
                               kernel_regularizer=keras.regularizers.L2(0.5))
    model = keras.Sequential([keras.Input((1, 4, 1)), conv])
    optimizer = keras.optimizers.SGD(0.0)
    optimizer.build(model.trainable_variables)
    steps = Steps(model, SoftIoULoss(smooth=0), optimizer, tf.distribute.get_strategy(), [], [])
    x = np.array([15, 15, -15, -15], "float32").reshape(1, 1, 4, 1)  # logits ±30: p = 1, 1, 0, 0
    y = np.array([1, 0, 1, 0], "float32").reshape(1, 1, 4, 1)  # TP 1, FP 1, FN 1: IoU loss 1 − 1/3
    out = steps.train_step(iter(tf.data.Dataset.from_tensors((x, y))))
    assert set(out) == {"loss", "regularization"}
    assert float(out["loss"]) == pytest.approx(2 / 3, abs=1e-6)
    assert float(out["regularization"]) == pytest.approx(2.0, rel=1e-6)
    assert float(steps.eval_step((x, y))) == pytest.approx(2 / 3, abs=1e-6)  # validation: the data loss too


def test_training_runs_without_the_arithmetic_optimizer_and_gives_the_setting_back(data_dir, tmp_path, monkeypatch):
    # grappler's arithmetic optimizer turns a + b + c into AddN, whose CPU kernel adds in an order that depends on
    # which input buffer it can reuse: training must not run under it; the process's own setting survives
    import tensorflow as tf

    from mammo_seg.config import load_config
    from mammo_seg.training import run as run_module
    from mammo_seg.training.step import reproducible_rewrites

    def arithmetic():
        return tf.config.optimizer.get_experimental_options().get("arithmetic_optimization")

    seen = []
    monkeypatch.setattr(run_module, "_train_stage", lambda *args: seen.append(arithmetic()))
    config = load_config(TINY, [f"data.dir={data_dir}"])
    for setting in (False, True):
        tf.config.optimizer.set_experimental_options({"arithmetic_optimization": setting})
        run_module.train_stage(config, str(tmp_path / "run"), progress=False)
        assert arithmetic() is setting
        with pytest.raises(RuntimeError):
            with reproducible_rewrites():
                raise RuntimeError("a failed stage gives the setting back too")
        assert arithmetic() is setting
    assert seen == [False, False]


def _verbs_with_set():
    import argparse

    from mammo_seg.cli import build_parser

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(name for name, p in verbs.choices.items() if any("--set" in a.option_strings for a in p._actions))


def test_set_takes_several_values_and_repeats_for_every_verb_that_has_it():
    from mammo_seg.cli import build_parser

    assert _verbs_with_set() == ["study", "train"]
    for verb in _verbs_with_set():
        one_flag = build_parser().parse_args([verb, "-c", "x.yaml", "--set", "a=1", "b.c=[2, 3]", "--out", "o"])
        assert one_flag.set == ["a=1", "b.c=[2, 3]"] and one_flag.out == "o"
        repeated = build_parser().parse_args([verb, "-c", "x.yaml", "--set", "a=1", "--set", "b=2", "c=3"])
        assert repeated.set == ["a=1", "b=2", "c=3"]
        assert build_parser().parse_args([verb, "-c", "x.yaml"]).set == []

    from mammo_seg.config import load_config

    parsed = build_parser().parse_args(["train", "-c", TINY, "--set", "train.epochs=5", "train.lr=0.01",
                                        "--set", "seed=7"])
    config = load_config(parsed.config, parsed.set)
    assert (config.train.epochs, config.train.lr, config.seed) == (5, 0.01, 7)


def test_a_number_in_exponent_notation_is_a_number():
    from mammo_seg.config import load_config
    from mammo_seg.errors import MammoError

    # YAML 1.1 reads 1e-4 (no dot) as a string; a learning rate is written that way
    config = load_config(TINY, ["train.lr=1e-4", "model.l2=5E-5"])
    assert (config.train.lr, config.model.l2) == (1e-4, 5e-5)
    with pytest.raises(MammoError, match="expected a number"):
        load_config(TINY, ["train.lr=1e-4x"])


def test_a_deeply_supervised_run_saves_the_network_without_its_heads_and_resumes_exactly(data_dir, tmp_path, capsys):
    import keras

    from mammo_seg.models.fcn import MammoFCN

    common = ["-c", TINY, "--quiet", "--set", f"data.dir={data_dir}", "--set", "data.tile=64",
              "--set", "train.steps_per_epoch=3", "--set", "train.deep_supervision=true"]
    straight, resumed, plain = (str(tmp_path / name) for name in ("straight", "resumed", "plain"))
    assert main(["train", "--out", straight, *common, "--set", "train.epochs=3"]) == 0
    assert main(["train", "--out", resumed, *common, "--set", "train.epochs=2"]) == 0
    assert main(["train", "--out", resumed, "--resume", *common, "--set", "train.epochs=3"]) == 0
    assert main(["train", "--out", plain, *common[:-2], "--set", "train.epochs=3"]) == 0
    saved = keras.models.load_model(os.path.join(straight, "last.keras"))
    assert isinstance(saved, MammoFCN)
    assert [layer.name for layer in saved.layers] == [layer.name for layer in MammoFCN(width=0.125).layers]
    # the heads and their optimizer state are in the backup: the resumed run ends where the straight one does
    for x, y in zip(saved.get_weights(), keras.models.load_model(os.path.join(resumed, "last.keras")).get_weights()):
        np.testing.assert_array_equal(x, y)
    rows, without = history(straight), history(plain)
    assert [float(r["loss"]) for r in history(resumed)] == [float(r["loss"]) for r in rows]
    assert all(0 <= float(r["loss"]) <= 1 for r in rows)  # the network's own logits' IoU loss
    assert rows[-1]["loss"] != without[-1]["loss"]  # the heads' losses change what the network learns
    # resumed without the heads its backup holds: one line naming the backup, and the run as it was
    capsys.readouterr()
    assert main(["train", "--out", resumed, "--resume", *common[:-2], "--set", "train.epochs=4"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and os.path.join(resumed, "backup") in error[0] and "deep_supervision" in error[0], error
    assert len(history(resumed)) == 3
