"""``mammo demo``: the whole chain on CBIS-DDSM phantoms, sized for a CPU.

synth → prep (tiles and whole scans) → inspect → curriculum (96-px tiles → 192-px tiles → whole-scan
crops) → predict on the held-out test patients' DICOMs → evaluate against the raw annotations.
"""

from __future__ import annotations

import os
import shutil

from data_prep.prepare import prepare
from mammo_seg.data.inspect import validate
from mammo_seg.data.prep_output import PrepOutput
from mammo_seg.data.resolution import Resolution
from mammo_seg.synthetic.cbis_ddsm import write_cbis_ddsm

# Phantoms at a quarter of CBIS-DDSM's size (0.2 mm pixels) and a coarse training resolution
# (0.4 mm per training pixel): lesions of 1-2 cm span 25-50 px, so small tiles hold them whole.
DEMO_SCALE = 0.125
DEMO_TILES = (96, 192)
CURRICULUM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "iou_fcn",
                          "curriculum_cpu.yaml")


def run_demo(out: str, workers: int = 2, patients: int = 12, seed: int = 0, config: str = CURRICULUM) -> dict:
    from mammo_seg.config import load_config
    from data_prep.ground_truth import ground_truth
    from mammo_seg.evaluate import evaluate
    from mammo_seg.inference.predict import FORMATS, PredictOptions, predict
    from mammo_seg.training.curriculum import run_curriculum

    raw, data, runs = os.path.join(out, "raw"), os.path.join(out, "data"), os.path.join(out, "runs", "iou_fcn_cpu")
    tests, predictions = os.path.join(out, "test_scans"), os.path.join(out, "predictions")
    print(f"[1/6] synth: {patients} CBIS-DDSM phantom patients → {raw}")
    if not os.path.isdir(raw):
        write_cbis_ddsm(raw, patients, seed=seed)
    print(f"[2/6] prep: tiles {DEMO_TILES} and whole scans → {data}")
    summary = prepare("cbis-ddsm", raw, data, tiles=DEMO_TILES, workers=workers, seed=seed,
                      resolution=Resolution(scale=DEMO_SCALE), full_scans=True)
    print(f"      {summary.records}; {len(summary.problems)} problems in {PrepOutput(data).problems_file}")
    print("[3/6] inspect")
    for name in summary.records:
        report = validate(os.path.join(data, name), sheet=os.path.join(data, name, "contact_sheet.png"))
        if not report.ok:
            raise RuntimeError(f"demo output failed validation: {report.errors[:3]}")
        print(f"      {name}: {report.records} records valid; contact sheet {report.contact_sheet}")
    print(f"[4/6] train: curriculum {os.path.relpath(config)} → {runs}")
    results = run_curriculum(load_config(config, [f"data.dir={data}"]), runs)
    for r in results:
        print(f"      {os.path.basename(r.run_dir)}: best validation lesion IoU {r.best:.3f}")
    n = PrepOutput(data).link_split("test", raw, tests)
    print(f"[5/6] predict: {n} held-out test scans ({tests}) → {predictions}")
    shutil.rmtree(predictions, ignore_errors=True)  # the demo's own predictions of an earlier run: predict refuses to mix
    result = predict(runs, tests, predictions, PredictOptions(formats=FORMATS))  # evaluate's FROC reads prob
    print(f"[6/6] evaluate against the raw annotations → {os.path.join(out, 'evaluation.json')}")
    scores = evaluate(predictions, ground_truth(raw), os.path.join(out, "evaluation.json"))
    mean, image = scores["mean"]["1"], scores["image_level"]
    print(f"      {len(scores['metric_per_case'])} test scans: mean lesion IoU {mean['IoU']:.3f}, Dice "
          f"{mean['Dice']:.3f}, precision {mean['precision']:.3f}, recall {mean['recall']:.3f}; "
          f"image-level recall {image['recall']:.2f}")
    print(f"done. Overlays: {predictions}/*_overlay.png; DICOM SEG: {predictions}/*_seg.dcm; "
          f"summary: {os.path.join(predictions, 'summary.json')}; evaluation: {os.path.join(out, 'evaluation.json')}; "
          f"training curves: {runs}/stage*/progress.png")
    return {"raw": raw, "data": data, "runs": runs, "predictions": predictions, "summary": result,
            "evaluation": scores}
