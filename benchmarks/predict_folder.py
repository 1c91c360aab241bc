"""``mammo predict`` over a folder of CBIS-DDSM-size scans, pipelined and one scan at a time → JSON + table.

A folder of ``--scans`` (≥ 8) different 5000 × 3000 phantom mammograms (50 µm, 16-bit DICOM, as
``benchmarks/predict_full_scan.py`` writes them) goes through ``mammo_seg.inference.predict.predict``
with the width-1.0 model (random weights: only time is measured), in a fresh process per mode:
``sequential`` (``pipelined=False``) and ``pipelined`` (the default). Reported per mode: wall seconds,
scans/s, the network's seconds (the sum of the scans' ``model`` phases), whole ÷ network, mean seconds
per scan of every non-network phase, peak RSS. The headline ratio is the pipelined wall ÷ the
network seconds of the sequential run (the network alone, nothing competing with it for the cores);
target ≤ 1.15. The first scan of each run includes tracing the model, as in any run.

    python benchmarks/predict_folder.py --out benchmarks/results/predict_folder_cpu.json
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

PHASES = ("read", "resample", "postprocess", "write")
TARGET_WHOLE_OVER_NETWORK = 1.15


def child(folder: str, model: str, pipelined: bool, out: str) -> None:
    """Runs in a fresh process: predict the folder, print the timings and the peak RSS."""
    from mammo_seg.inference.predict import predict

    start = time.perf_counter()
    summary = predict(model, folder, out, progress=False, pipelined=pipelined)
    wall = time.perf_counter() - start
    scans = summary["timings"]["scans"]
    result = {"pipelined": pipelined, "scans": len(scans), "ok": summary["counts"]["ok"], "wall_seconds": wall,
              "network_seconds": sum(t["model"] for t in scans.values()),
              "per_scan_seconds": {p: sum(t[p] for t in scans.values()) / len(scans) for p in PHASES},
              "peak_rss_gb": peak_rss_gb()}
    print_result(result)


def run_mode(folder: str, model: str, pipelined: bool, out: str) -> dict:
    result = run_child(__file__, ["--child", folder, model, int(pipelined), out], f"pipelined={pipelined}")
    result["scans_per_second"] = result["scans"] / result["wall_seconds"]
    result["non_network_seconds_per_scan"] = sum(result["per_scan_seconds"].values())
    return result


def table(report: dict) -> str:
    """The report as a short markdown table."""
    rows = ["| mode | wall s | scans/s | network s | whole ÷ network | read | resample | postprocess | write "
            "| non-network s/scan | peak RSS GB |", "|---" * 11 + "|"]
    for name, r in report["modes"].items():
        p = r["per_scan_seconds"]
        rows.append(f"| {name} | {r['wall_seconds']:.1f} | {r['scans_per_second']:.3f} | {r['network_seconds']:.1f} "
                    f"| {r['wall_seconds'] / report['network_seconds']:.2f} | {p['read']:.2f} | {p['resample']:.2f} "
                    f"| {p['postprocess']:.2f} | {p['write']:.2f} | {r['non_network_seconds_per_scan']:.2f} "
                    f"| {r['peak_rss_gb']:.2f} |")
    return "\n".join(rows) + (f"\n\n{report['scans']} scans of {report['scan']['shape'][0]} × {report['scan']['shape'][1]}"
                              f" at {report['scan']['spacing_mm']} mm, width {report['width']}; whole ÷ network: the "
                              f"mode's wall ÷ the sequential run's network seconds ({report['network_seconds']:.1f} s); "
                              f"target ≤ {TARGET_WHOLE_OVER_NETWORK}.\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON file (default: print only); the table goes beside it as .md")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder, model, pipelined, out = args.child
        child(folder, model, pipelined == "1", out)
        return
    from predict_full_scan import HEIGHT, SPACING_MM, WIDTH, make_inputs, write_phantom

    report = {"scan": {"shape": [HEIGHT, WIDTH], "spacing_mm": SPACING_MM}, "scans": args.scans,
              "width": args.width, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        _, model = make_inputs(tmp, args.width)
        folder = os.path.join(tmp, "scans")
        os.makedirs(folder)
        for seed in range(args.scans):
            write_phantom(os.path.join(folder, f"scan{seed:02d}.dcm"), seed)
        for name, pipelined in (("sequential", False), ("pipelined", True)):
            result = run_mode(folder, model, pipelined, os.path.join(tmp, name))
            report["modes"][name] = result
            print(f"{name}: {result['wall_seconds']:.1f} s, network {result['network_seconds']:.1f} s, "
                  f"peak RSS {result['peak_rss_gb']:.2f} GB", flush=True)
    report["network_seconds"] = report["modes"]["sequential"]["network_seconds"]
    report["whole_over_network"] = report["modes"]["pipelined"]["wall_seconds"] / report["network_seconds"]
    report["target_whole_over_network_max"] = TARGET_WHOLE_OVER_NETWORK
    from common import write_report

    write_report(report, args.out)
    if args.out:
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(table(report))


if __name__ == "__main__":
    main()
