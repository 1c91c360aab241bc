"""The numeric precision a model trains and predicts in: ``train.mixed_precision``, resolved on the machine that runs.

Settings: ``false`` (float32), ``true`` or ``"float16"`` (mixed float16, with loss scaling), ``"bfloat16"`` (mixed
bfloat16: weights, the loss and the network's input layers stay float32) and ``"auto"``: mixed bfloat16 where the
hardware computes bfloat16 natively, float32 elsewhere, where emulated bfloat16 would be slower than float32. Native
means a CPU with the AVX512_BF16 or AMX-BF16 instructions (Intel Cooper Lake and Sapphire Rapids onwards, AMD Zen 4
onwards; about 1.8 × the float32 convolution throughput) that TensorFlow drives through its oneDNN kernels, a GPU
of CUDA compute capability 8.0 or more (Ampere onwards), or a TPU (training under a TPUStrategy: TPUs compute
bfloat16 natively, and the host's CPU does not train). Elsewhere a CPU computes bfloat16 with TensorFlow's generic
Eigen kernels, whose convolution gradients (and transposed convolutions) are 20 to 90 times slower than float32's:
a training step of the MIAS recipe took 6 to 8 times as long as in float32 on such a machine (an AMD EPYC virtual
machine that hides AVX-512; ``benchmarks/results/train_throughput_bf16_cpu.md``). An explicit ``bfloat16`` is still
taken as it is, with a warning.

A resumed run keeps the precision it started in (:func:`resolve_resumed`): its weights, optimizer state and loss
scale were built in it.

A model trained in bfloat16 keeps that policy (a loaded MammoFCN builds its layers under it);
:func:`for_this_machine` runs it in float32 on a machine without native bfloat16 (same weights; the probabilities
differ by bfloat16's rounding only).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SETTINGS = (False, True, "float16", "bfloat16", "auto")
POLICIES = {False: "float32", True: "mixed_float16", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
#: the CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic
CPU_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where there is no such file: macOS, Windows)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def onednn_enabled() -> bool:
    """Whether this TensorFlow runs its CPU kernels through oneDNN (on by default on x86-64 Linux; off with
    ``TF_ENABLE_ONEDNN_OPTS=0``, or in a build without it)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow that no longer has this module: take the x86-64 default
        return True
    return bool(_pywrap_util_port.IsMklEnabled())


def computes_on_tpu(strategy) -> bool:
    """Whether ``strategy`` places its replicas on TPU cores (a TPUStrategy). None, the default strategy (which
    lists no devices) and strategies over CPUs or GPUs do not."""
    import tensorflow as tf

    try:
        devices = strategy.extended.worker_devices
    except (AttributeError, RuntimeError):  # None; the default strategy raises RuntimeError
        return False
    return any(tf.DeviceSpec.from_string(device).device_type == "TPU" for device in devices)


def native_bfloat16(cpuinfo: str = "/proc/cpuinfo", strategy=None) -> tuple[bool, str]:
    """(whether the device that will compute has native bfloat16, why): the TPUs of a TPU ``strategy``, else the
    GPUs when there are any, else the CPU (its bfloat16 instructions, and TensorFlow's oneDNN kernels that use
    them)."""
    import tensorflow as tf

    if computes_on_tpu(strategy):
        return True, "TPU"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability") or (0, 0)
                        for g in gpus]
        lowest = min(capabilities)
        return lowest >= (8, 0), f"GPU compute capability {lowest[0]}.{lowest[1]}"
    found = sorted(CPU_BFLOAT16_FLAGS & cpu_flags(cpuinfo))
    if not found:
        return False, "CPU without AVX512_BF16 or AMX-BF16"
    hardware = "CPU with " + ", ".join(f.upper() for f in found)
    if not onednn_enabled():
        return False, f"{hardware}, but TensorFlow's oneDNN kernels are off (TF_ENABLE_ONEDNN_OPTS=0)"
    return True, hardware


def _choose(setting, cpuinfo: str, strategy) -> tuple[str, str, str | None]:
    """(the policy, why, the hardware where the policy is bfloat16 and bfloat16 is not native) of ``setting``."""
    if setting != "auto":
        policy, why = POLICIES[setting], f"train.mixed_precision: {setting}"
        if policy == "mixed_bfloat16":
            native, hardware = native_bfloat16(cpuinfo, strategy)
            if not native:
                return policy, f"{why} (not native here: {hardware}; slower than float32)", hardware
        return policy, why, None
    native, why = native_bfloat16(cpuinfo, strategy)
    return ("mixed_bfloat16" if native else "float32"), f"auto: {why}", None


def _warn_emulated(hardware: str) -> None:
    log.warning("bfloat16 is not native on this machine (%s): training will be several times slower than in "
                "float32 (train.mixed_precision: auto chooses float32 here)", hardware)


def resolve(setting, cpuinfo: str = "/proc/cpuinfo", strategy=None) -> tuple[str, str]:
    """(the Keras dtype policy, why) of a ``train.mixed_precision`` setting on this machine, training under
    ``strategy`` (under a TPU strategy the TPUs compute, not this host's CPU)."""
    policy, why, emulated = _choose(setting, cpuinfo, strategy)
    if emulated:
        _warn_emulated(emulated)
    return policy, why


def resolve_resumed(setting, recorded: tuple[str, str] | None, cpuinfo: str = "/proc/cpuinfo",
                    strategy=None) -> tuple[str, str]:
    """(the Keras dtype policy, why) of a resumed run: the one it started in, ``recorded`` (policy and why, from the
    run's ``data.json``), whatever ``setting`` would choose here now. The run's weights, optimizer state and loss
    scale were built in it, and so every epoch of the run computes alike; one warning line says so where
    ``setting`` would now choose another policy. A run that recorded none resolves as a new one."""
    if recorded is None:
        return resolve(setting, cpuinfo, strategy)
    policy, why = recorded
    if policy not in POLICIES.values():
        raise ValueError(f"recorded precision {policy!r} is none of {', '.join(sorted(set(POLICIES.values())))}")
    now, now_why, emulated = _choose(setting, cpuinfo, strategy)
    if now != policy:
        log.warning("resuming in %s, the precision this run started in (%s); here train.mixed_precision: %s would "
                    "choose %s (%s)", policy, why, setting, now, now_why)
    elif emulated:
        _warn_emulated(emulated)
    return policy, why


def for_this_machine(model, cpuinfo: str = "/proc/cpuinfo"):
    """``model``, or, when it computes in bfloat16 on a machine without native bfloat16, the same network and
    weights computing in float32."""
    import keras

    if not any(layer.compute_dtype == "bfloat16" for layer in model.layers) or native_bfloat16(cpuinfo)[0]:
        return model
    config = keras.saving.serialize_keras_object(model)
    clone = keras.saving.deserialize_keras_object(_float32_policies(config))
    clone.set_weights(model.get_weights())
    log.info("the model was trained in bfloat16; this machine has no native bfloat16, so it runs in float32")
    return clone


def _float32_policies(node):
    """A serialised model with every mixed bfloat16 dtype policy replaced by float32."""
    if isinstance(node, dict):
        if node.get("class_name") == "DTypePolicy" and node.get("config", {}).get("name") == "mixed_bfloat16":
            return {**node, "config": {**node["config"], "name": "float32"}}
        return {key: _float32_policies(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_float32_policies(value) for value in node]
    return node
