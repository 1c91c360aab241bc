"""``train.strategy`` → a ``tf.distribute`` strategy. Create it before any other TensorFlow op:
MultiWorkerMirroredStrategy refuses to start once TensorFlow has run anything ("Collective ops
must be configured at program startup").

Tests of distributed code without GPUs split the CPU into logical devices: ``make_strategy(...,
cpu_devices=2)``, or the ``MAMMO_CPU_DEVICES`` environment variable for a whole ``mammo train`` process.
"""

from __future__ import annotations

import json
import os

from mammo_seg.errors import MammoError

CPU_DEVICES_ENV = "MAMMO_CPU_DEVICES"


def split_cpu(devices: int) -> None:
    """Split the CPU into ``devices`` logical devices (before any TensorFlow op; once devices are initialised in
    this process, what is there is kept)."""
    import tensorflow as tf

    if devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError:  # devices already initialised in this process: keep what is there
        pass


def cpu_devices_from_env() -> int:
    """``MAMMO_CPU_DEVICES`` (default 1): a positive integer, else a one-line error."""
    text = os.environ.get(CPU_DEVICES_ENV, "1")
    try:
        devices = int(text)
    except ValueError:
        devices = 0
    if devices < 1:
        raise MammoError(CPU_DEVICES_ENV, f"must be a positive integer, got {text!r}")
    return devices


def make_strategy(name: str = "auto", cpu_devices: int | None = None):
    """``auto``: MirroredStrategy over all GPUs when there are several, else the default strategy;
    ``default``; ``mirrored`` (all GPUs, or the logical CPUs made by ``cpu_devices``, default
    ``MAMMO_CPU_DEVICES`` or 1); ``multi_worker`` (MultiWorkerMirroredStrategy from ``TF_CONFIG``); ``tpu``."""
    import tensorflow as tf

    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise MammoError("train.strategy", "multi_worker needs the TF_CONFIG environment variable "
                                               "(cluster and this task's index)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy()
    split_cpu(cpu_devices_from_env() if cpu_devices is None else cpu_devices)
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "default" or (name == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()
    if name in ("auto", "mirrored"):
        devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    raise MammoError("train.strategy", f"unknown strategy {name!r}")


def _tpu_strategy():
    """TPUStrategy over the TPU this machine is given (Cloud TPU VM, or ``TPU_NAME``); none is one line."""
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:
        reason = getattr(e, "message", None) or str(e)
        raise MammoError("train.strategy", f"tpu: no TPU found on this machine ({reason.splitlines()[0]}); "
                                           f"use auto, or run where a TPU is attached") from None
    return tf.distribute.TPUStrategy(resolver)


def cluster() -> tuple[int, int]:
    """(this worker's index, number of workers) from ``TF_CONFIG``; (0, 1) without it."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    spec = config.get("cluster", {})
    workers = len(spec.get("worker", [])) + len(spec.get("chief", []))
    task = config.get("task", {})
    if not workers:
        return 0, 1
    index = task.get("index", 0) + (len(spec.get("chief", [])) if task.get("type") == "worker" else 0)
    return index, workers


def is_chief() -> bool:
    """The worker that writes files (checkpoints, logs): index 0 of the cluster, or the only one."""
    return cluster()[0] == 0
