"""The precision a model trains and predicts in: ``train.mixed_precision: auto`` resolved from the machine, and a
bfloat16 model run in float32 where the machine has no native bfloat16."""

import logging
import os
import platform
import subprocess
import sys
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from mammo_seg.config import load_config
from mammo_seg.errors import MammoError
from mammo_seg.models.fcn import MammoFCN
from mammo_seg.training import precision
from mammo_seg.training.precision import cpu_flags, for_this_machine, resolve

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
ZEN3 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Write a /proc/cpuinfo; the machine is taken to have no GPU, and TensorFlow's oneDNN kernels to be on."""
    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [] if kind == "GPU" else real(kind))
    monkeypatch.setattr(precision, "onednn_enabled", lambda: True)

    def write(text):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        return str(path)
    return write


def test_auto_is_bfloat16_only_on_a_cpu_that_computes_it_natively(cpuinfo):
    assert cpu_flags(cpuinfo(ZEN4)) >= {"avx512_bf16", "avx2"}
    assert resolve("auto", cpuinfo(ZEN4)) == ("mixed_bfloat16", "auto: CPU with AVX512_BF16")
    assert resolve("auto", cpuinfo(ZEN4.replace("avx512_bf16", "amx_bf16"))) == \
        ("mixed_bfloat16", "auto: CPU with AMX_BF16")
    assert resolve("auto", cpuinfo(ZEN3)) == ("float32", "auto: CPU without AVX512_BF16 or AMX-BF16")
    assert resolve("auto", "/nonexistent/cpuinfo")[0] == "float32"  # macOS, Windows: no /proc/cpuinfo
    # an explicit setting is taken as it is, whatever the machine
    assert resolve("bfloat16", cpuinfo(ZEN4)) == ("mixed_bfloat16", "train.mixed_precision: bfloat16")
    assert resolve("bfloat16", cpuinfo(ZEN3))[0] == "mixed_bfloat16"
    assert resolve(False, cpuinfo(ZEN4))[0] == "float32" and resolve(True, cpuinfo(ZEN4))[0] == "mixed_float16"


def test_an_explicit_bfloat16_where_it_is_not_native_is_taken_with_a_warning(cpuinfo, caplog):
    with caplog.at_level(logging.WARNING, logger=precision.__name__):
        assert resolve("bfloat16", cpuinfo(ZEN4)) == ("mixed_bfloat16", "train.mixed_precision: bfloat16")
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger=precision.__name__):
        policy, why = resolve("bfloat16", cpuinfo(ZEN3))
    assert (policy, why) == ("mixed_bfloat16", "train.mixed_precision: bfloat16 (not native here: CPU without "
                                               "AVX512_BF16 or AMX-BF16; slower than float32)")
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "several times slower than in float32" in caplog.records[0].getMessage()


def test_bfloat16_instructions_are_not_native_without_tensorflows_onednn_kernels(cpuinfo, monkeypatch):
    """Without oneDNN, TensorFlow computes bfloat16 convolution gradients with generic kernels, whatever the CPU."""
    monkeypatch.setattr(precision, "onednn_enabled", lambda: False)
    assert resolve("auto", cpuinfo(ZEN4)) == (
        "float32", "auto: CPU with AVX512_BF16, but TensorFlow's oneDNN kernels are off (TF_ENABLE_ONEDNN_OPTS=0)")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        trained = MammoFCN(width=0.125)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert {layer.compute_dtype for layer in for_this_machine(trained, cpuinfo(ZEN4)).layers} == {"float32"}


def tpu_strategy(cores=2):
    """What :func:`precision.computes_on_tpu` sees of a TPUStrategy: its replicas' devices (no TPU here)."""
    devices = tuple(f"/job:worker/replica:0/task:0/device:TPU:{i}" for i in range(cores))
    return SimpleNamespace(extended=SimpleNamespace(worker_devices=devices))


def test_auto_is_bfloat16_under_a_tpu_strategy_whatever_the_host_cpu(cpuinfo, caplog):
    """TPUs compute bfloat16 natively: the host's CPU, which does not train, has no say."""
    assert resolve("auto", cpuinfo(ZEN3), strategy=tpu_strategy()) == ("mixed_bfloat16", "auto: TPU")
    with caplog.at_level(logging.WARNING, logger=precision.__name__):
        assert resolve("bfloat16", cpuinfo(ZEN3), strategy=tpu_strategy()) == \
            ("mixed_bfloat16", "train.mixed_precision: bfloat16")
    assert not caplog.records  # native there: no warning
    assert resolve(False, cpuinfo(ZEN4), strategy=tpu_strategy())[0] == "float32"  # explicit settings as they are
    # strategies that compute on this host: its CPU decides, as without a strategy
    cpus = tf.distribute.MirroredStrategy(["/cpu:0"])
    for strategy in (None, tf.distribute.get_strategy(), cpus):
        assert resolve("auto", cpuinfo(ZEN3), strategy=strategy) == \
            ("float32", "auto: CPU without AVX512_BF16 or AMX-BF16")
    assert precision.computes_on_tpu(tpu_strategy()) and not precision.computes_on_tpu(cpus)


def test_a_resumed_run_keeps_its_recorded_precision_and_says_so_only_where_it_differs(cpuinfo, caplog):
    from mammo_seg.training.precision import resolve_resumed

    started = ("mixed_bfloat16", "auto: CPU with AVX512_BF16")
    with caplog.at_level(logging.WARNING, logger=precision.__name__):
        assert resolve_resumed("auto", started, cpuinfo(ZEN4)) == started  # the same machine: nothing to say
        assert not caplog.records
        assert resolve_resumed("auto", started, cpuinfo(ZEN3)) == started
        assert resolve_resumed("auto", None, cpuinfo(ZEN3)) == resolve("auto", cpuinfo(ZEN3))  # nothing recorded
    assert [r.getMessage() for r in caplog.records] == [
        "resuming in mixed_bfloat16, the precision this run started in (auto: CPU with AVX512_BF16); here "
        "train.mixed_precision: auto would choose float32 (auto: CPU without AVX512_BF16 or AMX-BF16)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=precision.__name__):  # an explicit bfloat16, still not native
        explicit = resolve("bfloat16", cpuinfo(ZEN3))
        caplog.clear()
        assert resolve_resumed("bfloat16", explicit, cpuinfo(ZEN3)) == explicit
    assert ["several times slower" in r.getMessage() for r in caplog.records] == [True]
    assert resolve_resumed(True, ("float32", "train.mixed_precision: false"), cpuinfo(ZEN3))[0] == "float32"
    with pytest.raises(ValueError, match="recorded precision 'float8' is none of float32, mixed_bfloat16, "
                                         "mixed_float16"):
        resolve_resumed("auto", ("float8", ""), cpuinfo(ZEN3))


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.machine() == "x86_64"),
                    reason="oneDNN is TensorFlow's default only on x86-64 Linux")
def test_onednn_enabled_follows_tf_enable_onednn_opts():
    def enabled(value):
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=value, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        code = "from mammo_seg.training.precision import onednn_enabled; print(onednn_enabled())"
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        return run.stdout.split()[-1]
    assert (enabled("0"), enabled("1")) == ("False", "True")


def test_the_config_takes_auto_and_refuses_other_words(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {dir: d}\ntrain: {mixed_precision: auto}\n")
    assert load_config(str(recipe)).train.mixed_precision == "auto"
    recipe.write_text("data: {dir: d}\ntrain: {mixed_precision: fp8}\n")
    with pytest.raises(MammoError, match="must be false, true, float16, bfloat16 or auto"):
        load_config(str(recipe))


def test_a_bfloat16_model_runs_in_float32_with_the_same_weights_where_bfloat16_is_not_native(cpuinfo):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        trained = MammoFCN(width=0.125)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    scan = np.random.default_rng(0).random((1, 64, 64, 1), dtype="float32")
    assert for_this_machine(trained, cpuinfo(ZEN4)) is trained  # native: as trained
    converted = for_this_machine(trained, cpuinfo(ZEN3))
    assert converted is not trained and converted.resolution == trained.resolution
    assert {layer.compute_dtype for layer in converted.layers} == {"float32"}
    assert "bfloat16" in {layer.compute_dtype for layer in trained.layers}
    float32 = MammoFCN(width=0.125)  # the same network built in float32, given the same weights
    float32.set_weights(trained.get_weights())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(converted(scan, training=False)),
                                  keras.ops.convert_to_numpy(float32(scan, training=False)))
    # bfloat16's rounding only: the logits agree to about 1 %
    np.testing.assert_allclose(keras.ops.convert_to_numpy(trained(scan, training=False)),
                               keras.ops.convert_to_numpy(converted(scan, training=False)), rtol=0.05, atol=0.05)


def test_a_saved_bfloat16_model_loads_in_bfloat16_and_runs_in_float32_only_where_it_must(cpuinfo, tmp_path):
    from mammo_seg.data.resolution import Resolution
    from mammo_seg.run_dir import load_keras

    resolution = Resolution(scale=0.125).to_dict()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        MammoFCN(width=0.125, resolution=resolution).save(tmp_path / "m.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    loaded = load_keras(str(tmp_path / "m.keras"))  # under the float32 global policy of a fresh predict
    assert keras.mixed_precision.global_policy().name == "float32"  # loading leaves the process's policy alone
    assert loaded.get_layer("conv0_2").compute_dtype == "bfloat16" and loaded.resolution == resolution
    assert for_this_machine(loaded, cpuinfo(ZEN4)) is loaded
    converted = for_this_machine(loaded, cpuinfo(ZEN3))
    assert {layer.compute_dtype for layer in converted.layers} == {"float32"} and converted.resolution == resolution
