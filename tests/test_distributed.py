"""tf.distribute: MirroredStrategy, MultiWorkerMirroredStrategy and loss scaling give one device's
training step (tests/distributed_check.py runs each mode in its own process: a strategy must be made
before TensorFlow runs anything)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(__file__)
TINY = os.path.join(HERE, "..", "experiments", "tiny.yaml")


def _check(mode, out, env=None, timeout=600):
    result = subprocess.run([sys.executable, os.path.join(HERE, "distributed_check.py"), mode, out],
                            capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.load(open(out))


def _update_error(a, b):
    """Relative difference of two runs' parameter updates: ||Δa − Δb|| / ||Δb|| over all variables."""
    da = np.concatenate([np.asarray(d) for d in a["deltas"]])
    db = np.concatenate([np.asarray(d) for d in b["deltas"]])
    return float(np.linalg.norm(da - db) / np.linalg.norm(db))


def _loss_error(a, b):
    return float(np.max(np.abs(np.subtract(a["losses"], b["losses"])) / np.abs(b["losses"])))


def _noise_floor(runs):
    """One device against itself on the same batches in reverse order: float32 rounding (and, for a
    sort-based loss, the order of tied errors) alone moves this deep, 4-channel BatchNorm network's
    updates by about 1 %, and its second-step loss by up to 0.2 %. Returns (update floor, loss floor)."""
    update = _update_error(runs["reversed"], runs["single"])
    assert 0 < update < 0.05
    return update, max(2e-6, _loss_error(runs["reversed"], runs["single"]))


def _same(a, b, floor):
    """Equal losses and metrics, and updates as close as rounding alone makes one device to itself."""
    update_floor, loss_floor = floor
    assert _loss_error(a, b) <= 3 * loss_floor, (a["losses"], b["losses"])
    # thresholded predictions: a pixel at the threshold may flip with rounding-level weight changes
    assert a["iou"] == pytest.approx(b["iou"], abs=1e-3)
    assert _update_error(a, b) <= 3 * update_floor


@pytest.mark.slow
def test_mirrored_strategy_equals_one_device_on_the_global_batch(tmp_path):
    result = _check("mirrored", str(tmp_path / "m.json"))
    assert result["replicas"] == 2
    for name in ("iou", "lovasz"):  # pooled sums, and per-pixel statistics concatenated over replicas
        runs = result[name]
        single, floor = runs["single"], _noise_floor(runs)
        _same(runs["mirrored"], single, floor)
        # the naive per-replica loss (Keras fit): summed over replicas, gradients far off
        assert runs["naive"]["losses"][0] > 1.5 * single["losses"][0]
        assert _update_error(runs["naive"], single) > 30 * floor[0]
    # deep supervision: each head's loss of the global batch, weighted. Rounding moves two steps' updates by 0.01 to
    # 0.3 % here, and one run's floor (the reversed batch) is too noisy to be a bound; a replica that scored its
    # heads on its own half batch would move them by tens of percent, as the naive runs above are moved
    deep = result["iou_deep"]
    assert _loss_error(deep["mirrored"], deep["single"]) <= 3 * _noise_floor(deep)[1]
    assert deep["mirrored"]["iou"] == pytest.approx(deep["single"]["iou"], abs=1e-3)
    assert _update_error(deep["mirrored"], deep["single"]) < 0.01


def test_float16_overflow_on_one_replica_skips_the_step_on_every_replica(tmp_path):
    result = _check("overflow", str(tmp_path / "o.json"), env=dict(os.environ, MAMMO_CPU_DEVICES="2"))
    assert result["replicas"] == 2
    before, overflow, clean = result["before"], result["overflow"], result["clean"]
    assert before == {"kernel": [1.0], "bias": [0.0], "scale": 2.0 ** 15}
    # replica 1 overflowed: no replica applies the step, and the loss scale is halved
    assert overflow == {"kernel": [1.0], "bias": [0.0], "scale": 2.0 ** 14}
    # the next, clean step applies on both, at the lowered scale
    assert np.isfinite(clean["kernel"] + clean["bias"]).all() and clean["kernel"] != [1.0]
    assert clean["scale"] == 2.0 ** 14


def test_logical_cpus_come_from_the_environment_not_the_config(tmp_path, monkeypatch):
    from mammo_seg.config import load_config
    from mammo_seg.errors import MammoError
    from mammo_seg.training.strategy import cpu_devices_from_env

    monkeypatch.delenv("MAMMO_CPU_DEVICES", raising=False)
    assert cpu_devices_from_env() == 1
    monkeypatch.setenv("MAMMO_CPU_DEVICES", "3")
    assert cpu_devices_from_env() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv("MAMMO_CPU_DEVICES", bad)
        with pytest.raises(MammoError, match=f"MAMMO_CPU_DEVICES: must be a positive integer, got '{bad}'"):
            cpu_devices_from_env()
    with pytest.raises(MammoError, match="train.cpu_devices: moved out of the config: the MAMMO_CPU_DEVICES"):
        load_config(TINY, ["train.cpu_devices=2"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_strategy_equals_one_device(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "distributed_check.py"), "worker",
                                       str(tmp_path / f"w{index}.json")], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    try:
        for p in procs:  # a missing worker would make the other wait forever: bounded
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
    finally:
        for p in procs:
            p.kill()
    reference = _check("single", str(tmp_path / "s.json"))
    workers = [json.load(open(tmp_path / f"w{i}.json")) for i in range(2)]
    assert all(w["replicas"] == 2 for w in workers)
    for name in ("iou", "lovasz"):
        floor = _noise_floor(reference[name])
        for w in workers:
            _same(w[name]["mwms"], reference[name]["single"], floor)
