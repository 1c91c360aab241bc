"""Network memory and time of a CBIS-size scan in one pass vs exact strips (width 1.0) → JSON.

The training-grid input of a 5000 × 3000 scan at 50 µm (2676 × 1605) goes through
``predict_probabilities`` in a fresh process per mode, so that ``ru_maxrss`` is that mode's peak:
``one_pass`` (an unlimited memory budget) and ``strips`` (the default budget,
``NETWORK_MEMORY_BYTES``). Each process calls twice (the first traces) and times the second; the
parent checks that both modes give the same probabilities. Random weights: only memory and time
are measured, and the equality.

    python benchmarks/predict_strips.py --out benchmarks/results/predict_strips_cpu.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from common import peak_rss_gb, print_result, run_child  # noqa: E402

SHAPE = (2676, 1605)  # 5000 x 3000 at 0.05 mm on the default training grid


def child(mode: str, width: float, out: str) -> None:
    import keras
    import numpy as np

    from mammo_seg.inference.sliding_window import NETWORK_MEMORY_BYTES, Predictor, predict_probabilities
    from mammo_seg.models.fcn import MammoFCN

    keras.utils.set_random_seed(0)
    predictor = Predictor(MammoFCN(width=width))
    baseline = peak_rss_gb()
    image = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    budget = float("inf") if mode == "one_pass" else NETWORK_MEMORY_BYTES
    predict_probabilities(predictor, image, memory_bytes=budget)
    start = time.perf_counter()
    prob = predict_probabilities(predictor, image, memory_bytes=budget)
    seconds = time.perf_counter() - start
    np.save(out, prob)
    result = {"memory_bytes": None if mode == "one_pass" else budget, "network_seconds": round(seconds, 3),
              "peak_rss_gb": round(peak_rss_gb(), 3),
              "rss_before_predict_gb": round(baseline, 3)}
    if mode == "strips":
        result["stages"] = [{"jump_in": s.jump_in, "jump_out": str(s.jump_out), "reach_px": str(s.reach),
                             "halo_rows": s.halo} for s, _ in predictor.stages()]
    print_result(result)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON file (default: print only)")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.width, args.child[1])
        return
    import numpy as np

    report = {"input_shape": list(SHAPE), "width": args.width, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("one_pass", "strips"):
            report["modes"][mode] = run_child(__file__, ["--width", args.width, "--child", mode,
                                                         os.path.join(tmp, mode + ".npy")], mode, timeout=900)
            print(mode, report["modes"][mode], flush=True)
        one, strips = (np.load(os.path.join(tmp, m + ".npy")) for m in ("one_pass", "strips"))
    report["one_pass_probability_range"] = [float(one.min()), float(one.max())]
    report["strips_max_abs_diff"] = float(np.abs(one - strips).max())
    report["masks_equal_at_0.5"] = bool(((one >= 0.5) == (strips >= 0.5)).all())
    modes = report["modes"]
    report["strips_over_one_pass_seconds"] = round(modes["strips"]["network_seconds"]
                                                   / modes["one_pass"]["network_seconds"], 3)
    report["load_average_1min"] = os.getloadavg()[0]
    from common import write_report

    write_report(report, args.out)


if __name__ == "__main__":
    main()
