"""Training throughput of the width-1.0 FCN → JSON.

Measured in one process, as ratios where the machine's speed cancels out:

* tiles/s at 320 and 640 under the soft-IoU loss (the one training step of ``mammo_seg.training``);
* IoU step time ÷ weighted-BCE step time (target ≤ 1.02), from alternating steps of each;
* achieved FLOP/s (3 × forward FLOPs per tile: forward + backward) ÷ the same process's
  ``matmul`` FLOP/s (target ≥ 0.75 on CPU);
* tf.data tiles/s from a phantom prep output ÷ the tiles/s training consumes (target ≥ 5).

``--backend jax`` runs the same Keras model and losses on Keras's JAX backend (``model.fit``'s
jitted step on one device), for machines with JAX but no TensorFlow; the tf.data ratio is then not
measured. ``--mixed-precision float16|bfloat16`` sets the Keras dtype policy.

``--precisions float32,bfloat16`` instead builds one model per precision in the same process and alternates
their steps (float32 IoU, float32 BCE, bfloat16 IoU, bfloat16 BCE, ...), so that the step-time ratio between
precisions is measured under the same machine load; the FLOP/s and tf.data ratios are then not measured.

    python benchmarks/train_throughput.py --out benchmarks/results/train_throughput_cpu.json
    python benchmarks/train_throughput.py --tiles 128:16 --width 0.5 --precisions float32,bfloat16  # the MIAS recipe
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine_description, matmul_flops, write_report  # noqa: E402

CONFIGS = {"cpu": [(320, 8), (640, 2)], "gpu": [(320, 16), (640, 16)]}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="JSON file (default: print only)")
    p.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow")
    p.add_argument("--mixed-precision", choices=("float16", "bfloat16"), default=None)
    p.add_argument("--precisions", default=None,
                   help="comma-separated float32, float16, bfloat16: alternate steps of each in one process")
    p.add_argument("--profile-ops", type=int, default=0, metavar="N",
                   help="with --precisions (TensorFlow): also trace one IoU step of each precision and record the "
                        "N op types and the N ops that took the most time")
    p.add_argument("--rounds", type=int, default=4, help="rounds of alternating IoU/BCE steps per tile size")
    p.add_argument("--steps", type=int, default=3, help="timed steps per loss per round")
    p.add_argument("--tiles", default=None, help="tile:batch pairs, e.g. 320:8,640:2")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--full-scan", default=None, metavar="HxW",
                   help="also time the network's forward pass on one scan of this size (e.g. 2676x1605: a "
                        "CBIS-DDSM scan at the training resolution)")
    return p.parse_args()


def synthetic_batch(tile: int, batch: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random((batch, tile, tile, 1), dtype=np.float32)
    y = np.zeros_like(x)
    y[:, tile // 3: tile // 2, tile // 3: tile // 2] = 1
    return x, y


def tensorflow_steps(tile: int, batch: int, width: float):
    """Two step functions (IoU, BCE) of the project's training step, on in-memory data."""
    import keras
    import tensorflow as tf

    from mammo_seg.losses import SoftIoULoss, WeightedBCE
    from mammo_seg.models.fcn import MammoFCN
    from mammo_seg.training.step import Steps

    strategy = tf.distribute.get_strategy()
    x, y = synthetic_batch(tile, batch)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    result = {}
    for name, loss in (("iou", SoftIoULoss()), ("bce", WeightedBCE())):
        keras.utils.set_random_seed(0)
        model = MammoFCN(width=width)
        optimizer = keras.optimizers.Adam(1e-4)
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        steps = Steps(model, loss, optimizer, strategy, [], [])
        iterator = iter(ds)
        result[name] = (lambda s=steps, it=iterator: float(s.train_step(it)["loss"]))
    return result, model


def jax_steps(tile: int, batch: int, width: float):
    import keras

    from mammo_seg.losses import SoftIoULoss, WeightedBCE
    from mammo_seg.models.fcn import MammoFCN

    x, y = synthetic_batch(tile, batch)
    result = {}
    for name, loss in (("iou", SoftIoULoss()), ("bce", WeightedBCE())):
        keras.utils.set_random_seed(0)
        model = MammoFCN(width=width, sync_batchnorm=False)  # one device: no replicas to synchronise
        optimizer = keras.optimizers.Adam(1e-4)
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, loss=loss, jit_compile=True)
        result[name] = (lambda m=model: float(m.train_on_batch(x, y)))
    return result, model


def time_steps_medians(fns: dict, rounds: int, steps: int) -> dict:
    """Median seconds of each function's single steps, the functions alternated (A, B, A, B, ...) so that
    all see the same machine load, after two untimed steps each (trace/compile and warm-up)."""
    for fn in fns.values():
        fn()
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds * steps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def time_steps(fns: dict, rounds: int, steps: int) -> dict:
    """Alternate single steps of each function (A, B, A, B, ...) so that both see the same machine
    load; report median step times and their ratio (robust to the noise of a shared machine)."""
    median = time_steps_medians(fns, rounds, steps)
    return {"seconds_per_step": median, "iou_over_bce": median["iou"] / median["bce"],
            "steps_timed": rounds * steps}


POLICY = {"float32": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def op_seconds(fn, top: int) -> dict:
    """The op types and the ops (``node:type``) that took the most time in one call of ``fn``, in seconds summed
    over TensorFlow's profiler trace of the host (the CPU's kernels; a GPU's run elsewhere)."""
    import collections
    import glob

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        fn()
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
            space.ParseFromString(f.read())
    by_type, by_op = collections.Counter(), collections.Counter()
    for plane in (p for p in space.planes if p.name == "/host:CPU"):
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name and " " not in name:  # a kernel: "node name:op type"
                    by_type[name.rsplit(":", 1)[1]] += event.duration_ps / 1e12
                    by_op[name] += event.duration_ps / 1e12
    return {"op_types": dict(by_type.most_common(top)), "ops": dict(by_op.most_common(top)),
            "all_ops": sum(by_type.values())}


def compare_precisions(precisions: list[str], tile: int, batch: int, width: float, backend: str,
                       rounds: int, steps: int, profile_top: int = 0) -> dict:
    """Step times of every precision (IoU and BCE steps each), alternated in one process, and each one's
    ratio to the first precision's; with ``profile_top``, the ops that took the most time in one IoU step."""
    import keras

    build = jax_steps if backend == "jax" else tensorflow_steps
    fns = {}
    for precision in precisions:  # a model takes the global policy when it is built
        keras.mixed_precision.set_global_policy(POLICY[precision])
        try:
            steps_of, _ = build(tile, batch, width)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        fns.update({f"{precision}/{loss}": fn for loss, fn in steps_of.items()})
    median = time_steps_medians(fns, rounds, steps)
    first = precisions[0]
    result = {"batch": batch, "steps_timed": rounds * steps, "precisions": {}}
    for precision in precisions:
        iou, bce = median[f"{precision}/iou"], median[f"{precision}/bce"]
        result["precisions"][precision] = {
            "seconds_per_step": {"iou": iou, "bce": bce}, "iou_over_bce": iou / bce, "tiles_per_second": batch / iou,
            f"iou_step_over_{first}": iou / median[f"{first}/iou"]}
        if profile_top and backend == "tensorflow":
            result["precisions"][precision]["profile_iou_step"] = op_seconds(fns[f"{precision}/iou"], profile_top)
    return result


def full_scan_forward(width: float, shape: tuple[int, int], backend: str, repeats: int = 5) -> dict:
    """Seconds for the network's forward pass on one whole scan (compiled, steady state)."""
    import keras
    import numpy as np

    from mammo_seg.models.fcn import MammoFCN
    from mammo_seg.models.flops import forward_flops

    model = MammoFCN(width=width, sync_batchnorm=backend == "tensorflow")
    x = np.random.default_rng(0).random((1, *shape, 1), dtype=np.float32)
    model.predict_on_batch(x)
    model.predict_on_batch(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.asarray(model.predict_on_batch(x))
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    flops = forward_flops(model, *shape)
    return {"shape": list(shape), "seconds": seconds, "flops": flops, "achieved_flops": flops / seconds,
            "policy": keras.mixed_precision.global_policy().name}


def data_pipeline_tiles_per_second(batch: int, batches: int = 60) -> dict:
    """tf.data throughput on a phantom prep output of 320-px tiles."""
    from data_prep.prepare import prepare
    from mammo_seg.data.pipeline import make_dataset
    from mammo_seg.synthetic.cbis_ddsm import write_cbis_ddsm

    with tempfile.TemporaryDirectory() as tmp:
        raw, out = os.path.join(tmp, "raw"), os.path.join(tmp, "prep")
        write_cbis_ddsm(raw, 4, seed=0, scale=0.5, progress=False)
        prepare("cbis-ddsm", raw, out, tiles=(320,), workers=2, progress=False)
        ds = make_dataset(os.path.join(out, "320"), "train", batch, training=True, seed=0)
        iterator = iter(ds)
        for _ in range(5):
            next(iterator)
        t = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        return {"tiles_per_second": batches * batch / (time.perf_counter() - t), "batch": batch}


def device_name(backend: str) -> str:
    if backend == "jax":
        import jax

        d = jax.devices()[0]
        return f"{d.platform}: {getattr(d, 'device_kind', d)}"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return "gpu: " + tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return f"cpu: {machine_description()}"


def precision_report(args, device: str, pairs: list) -> dict:
    """``--precisions``: the step times of each precision, alternated in one process, per tile size."""
    import keras

    precisions = args.precisions.split(",")
    unknown = set(precisions) - set(POLICY)
    if unknown or args.mixed_precision:
        raise SystemExit(f"--precisions takes {', '.join(POLICY)} (and no --mixed-precision), not {args.precisions}")
    report = {"device": device, "backend": args.backend, "keras": keras.__version__, "width": args.width,
              "precisions": precisions, "load_average_before": os.getloadavg(), "tiles": {}}
    for tile, batch in pairs:
        result = compare_precisions(precisions, tile, batch, args.width, args.backend, args.rounds, args.steps,
                                    args.profile_ops)
        report["tiles"][str(tile)] = result
        print(f"{tile}px batch {batch}: " + ", ".join(
            f"{p} {r['seconds_per_step']['iou']:.2f} s/step (IoU/BCE {r['iou_over_bce']:.3f})"
            for p, r in result["precisions"].items()), flush=True)
    report["load_average_after"] = os.getloadavg()
    return report


def main():
    args = parse_args()
    if args.backend == "jax":
        os.environ["KERAS_BACKEND"] = "jax"
    import keras

    from mammo_seg.models.fcn import MammoFCN
    from mammo_seg.models.flops import forward_flops

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy(f"mixed_{args.mixed_precision}")
    device = device_name(args.backend)
    kind = "gpu" if device.startswith("gpu") else "cpu"
    pairs = ([tuple(int(v) for v in p.split(":")) for p in args.tiles.split(",")] if args.tiles
             else CONFIGS[kind])
    if args.precisions:
        write_report(precision_report(args, device, pairs), args.out)
        return
    peak = matmul_flops(args.backend, "float32")
    peak_low = matmul_flops(args.backend, args.mixed_precision) if args.mixed_precision else None
    report = {"device": device, "backend": args.backend, "keras": keras.__version__,
              "mixed_precision": args.mixed_precision, "width": args.width,
              "matmul_flops_float32": peak, "matmul_flops_mixed": peak_low, "tiles": {}}
    flops_model = MammoFCN(width=args.width, sync_batchnorm=args.backend == "tensorflow")
    for tile, batch in pairs:
        fns, _ = (jax_steps if args.backend == "jax" else tensorflow_steps)(tile, batch, args.width)
        timing = time_steps(fns, args.rounds, args.steps)
        step = timing["seconds_per_step"]["iou"]
        train_flops = 3 * forward_flops(flops_model, tile, tile) * batch
        reference = peak_low or peak
        report["tiles"][str(tile)] = {
            "batch": batch, **timing, "tiles_per_second": batch / step,
            "train_flops_per_step": train_flops, "achieved_flops": train_flops / step,
            "achieved_over_matmul": train_flops / step / reference}
        print(f"{tile}px batch {batch}: {batch / step:.2f} tiles/s, IoU/BCE {timing['iou_over_bce']:.3f}, "
              f"FLOP/s {train_flops / step / 1e9:.1f} G = {train_flops / step / reference:.2f} of matmul", flush=True)
    if args.full_scan:
        h, w = (int(v) for v in args.full_scan.lower().split("x"))
        scan = full_scan_forward(args.width, (h, w), args.backend)
        scan["achieved_over_matmul"] = scan["achieved_flops"] / (peak_low or peak)
        report["full_scan_forward"] = scan
        print(f"full scan {h}x{w}: {scan['seconds'] * 1000:.1f} ms forward, "
              f"{scan['achieved_over_matmul']:.2f} of matmul", flush=True)
    if args.out:  # write what there is so far: a long run that is cut off still leaves its results
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    if args.backend == "tensorflow":
        consumed = report["tiles"].get("320", next(iter(report["tiles"].values())))["tiles_per_second"]
        pipeline = data_pipeline_tiles_per_second(batch=8)
        report["data_pipeline"] = {**pipeline, "training_consumes": consumed,
                                   "ratio": pipeline["tiles_per_second"] / consumed}
        print(f"tf.data: {pipeline['tiles_per_second']:.0f} tiles/s = "
              f"{pipeline['tiles_per_second'] / consumed:.0f}x what training consumes")
    report["targets"] = {"iou_over_bce_max": 1.02, "achieved_over_matmul_min_cpu": 0.75, "data_ratio_min": 5}
    write_report(report, args.out)


if __name__ == "__main__":
    main()
