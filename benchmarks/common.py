"""Shared pieces of the benchmarks: the matmul reference rate and JSON reports."""

from __future__ import annotations

import json
import os
import time


def best_seconds(fn, repeats: int) -> float:
    """Fastest of ``repeats`` calls of ``fn`` (which must block until its result is ready)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_flops(backend: str, dtype: str = "float32", n: int = 4096, repeats: int = 5) -> float:
    """Best FLOP/s of an n×n matrix product in this process: the reference rate of the machine."""
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        a = jnp.ones((n, n), dtype)
        f = jax.jit(lambda x, y: x @ y)

        def run():
            f(a, a).block_until_ready()
    else:
        import tensorflow as tf

        a = tf.random.normal((n, n), dtype=dtype)
        f = tf.function(lambda x, y: tf.matmul(x, y))

        def run():
            f(a, a).numpy()
    run()
    return 2 * n ** 3 / best_seconds(run, repeats)


def machine_description(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The machine a timing was taken on, e.g. ``2-core CPU (Intel(R) Xeon(R) Processor; AVX-512, native bfloat16)``:
    the logical CPUs this process may use, the CPU's model name and whether it has AVX-512 and native bfloat16
    (AVX512_BF16 or AMX-BF16), which set TensorFlow's float32 and bfloat16 speed (read from Linux's
    ``/proc/cpuinfo``; the count alone elsewhere)."""
    from mammo_seg.training.precision import CPU_BFLOAT16_FLAGS, cpu_flags

    model = ""
    try:
        with open(cpuinfo) as f:
            model = next((line.partition(":")[2].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    flags = cpu_flags(cpuinfo)
    features = [name for name, present in (("AVX-512", "avx512f" in flags),
                                           ("native bfloat16", bool(flags & CPU_BFLOAT16_FLAGS))) if present]
    if flags and not features:
        features = ["no AVX-512"]
    detail = "; ".join(part for part in (model, ", ".join(features)) if part)
    return f"{_usable_cpus()}-core CPU" + (f" ({detail})" if detail else "")


def _usable_cpus() -> int:
    """The logical CPUs this process may run on (its affinity, which a container's cpuset limits), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def write_report(report: dict, out: str | None) -> None:
    """Print the report as JSON, and write it to ``out`` when given."""
    text = json.dumps(report, indent=2)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(text + "\n")
    print(text)


# A benchmark that reports peak memory runs each mode in a fresh process (ru_maxrss is a process's
# peak): the child prints one line "RESULT <json>", the parent reads it back.
_RESULT = "RESULT "


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GiB (Linux reports ``ru_maxrss`` in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def print_result(result: dict) -> None:
    """The child's side: hand ``result`` to the parent."""
    print(_RESULT + json.dumps(result), flush=True)


def run_child(script: str, args: list, what: str, timeout: float = 1800) -> dict:
    """Run ``python SCRIPT ARGS`` in a fresh process (this repository and ``benchmarks/`` importable first)
    and return the dict it printed with :func:`print_result`; its stderr's tail if it printed none."""
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    caller = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []  # e.g. packages not installed yet
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(here), here, *caller]))
    run = subprocess.run([sys.executable, os.path.abspath(script), *map(str, args)], capture_output=True, text=True,
                         env=env, timeout=timeout)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith(_RESULT)), None)
    if line is None:
        raise RuntimeError(f"{what} failed:\n{run.stderr[-3000:]}")
    return json.loads(line[len(_RESULT):])
