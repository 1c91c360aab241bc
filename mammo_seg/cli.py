"""``mammo <verb>``: a thin argparse layer over the library; every verb is an importable function."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any TensorFlow import: hide C++ info logs

from mammo_seg import __version__  # noqa: E402
from mammo_seg.data import MAX_TILE  # noqa: E402
from mammo_seg.errors import MammoError  # noqa: E402
from mammo_seg.export import FORMATS as EXPORT_FORMATS  # noqa: E402




class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``mammo prep mias: error: argument --seed: ... (see --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _number(kind, low=None, high=None, high_open=False, what=None):
    """An argparse type: ``kind`` (int or float) within [low, high] (or [low, high) with high_open)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what or kind.__name__}, got {text!r}") from None
        too_high = high is not None and (value >= high if high_open else value > high)
        if (low is not None and value < low) or too_high or value != value:
            bounds = f">= {low}" if high is None else f"in [{low}, {high}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"expected {what or kind.__name__} {bounds}, got {text!r}")
        return value
    return parse


_count = _number(int, 1, what="an integer")
_seed = _number(int, 0, what="an integer")
_fraction = _number(float, 0, 1, high_open=True, what="a fraction")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(not 16 <= v <= MAX_TILE for v in values):
        raise argparse.ArgumentTypeError(f"tile sizes must be from 16 to {MAX_TILE} px, got {text!r}")
    return values


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------- synth
def cmd_synth(args) -> int:
    if args.dataset == "cbis-ddsm":
        from mammo_seg.synthetic.cbis_ddsm import write_cbis_ddsm

        counts = write_cbis_ddsm(args.out, args.patients, seed=args.seed, scale=args.scale, layout=args.layout,
                                 progress=not args.quiet)
    else:
        from mammo_seg.synthetic.mias import write_mias

        counts = write_mias(args.out, args.images, seed=args.seed, progress=not args.quiet)
    print(f"wrote {args.dataset} phantoms to {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


# ----------------------------------------------------------------------------------------------- prep
def prep_settings(args):
    """The prep settings: each flag given on the command line, else the recipe's prep: section, else the default."""
    import dataclasses

    from mammo_seg.config import PrepSection, load_prep_config

    section = load_prep_config(args.config) if args.config else PrepSection()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(PrepSection)
             if getattr(args, f.name, None) is not None}
    return dataclasses.replace(section, **given)


def cmd_prep(args) -> int:
    from data_prep.prepare import prepare
    from mammo_seg.data.prep_output import PrepOutput
    from mammo_seg.data.resolution import Resolution
    from mammo_seg.data.tiling import TilingConfig

    s = prep_settings(args)
    summary = prepare(args.dataset, args.raw, args.out, tiles=s.tiles, workers=args.workers, seed=s.seed,
                      resolution=Resolution(scale=s.scale),
                      tiling=TilingConfig(roi_crops=s.roi_crops, random_crops=s.random_crops),
                      val_fraction=s.val_fraction, test_fraction=s.test_fraction,
                      scans_per_shard=s.scans_per_shard, full_scans=s.full_scans, progress=not args.quiet)
    records = ", ".join(f"{name}: {n} records" for name, n in summary.records.items())
    print(f"prepared {summary.scans} scans into {args.out} ({records}); "
          f"{len(summary.problems)} problems listed in {PrepOutput(args.out).problems_file}")
    if not summary.usable:
        print("mammo prep: error: no usable records were produced", file=sys.stderr)
        return 1
    if args.strict and summary.problems:
        print(f"mammo prep: error: --strict and {len(summary.problems)} problems", file=sys.stderr)
        return 1
    return 0


# -------------------------------------------------------------------------------------------- inspect
def cmd_inspect(args) -> int:
    from mammo_seg.data.inspect import validate

    sheet = args.sheet or os.path.join(args.dir, "contact_sheet.png")
    report = validate(args.dir, sheet=sheet, samples=args.samples, seed=args.seed)
    for error in report.errors:
        print(f"invalid: {error}", file=sys.stderr)
    status = "valid" if report.ok else f"INVALID ({len(report.errors)} errors)"
    print(f"{args.dir}: {report.records} records, {report.positive_pixels} lesion pixels: {status}; "
          f"contact sheet: {report.contact_sheet}")
    return 0 if report.ok else 1


# ---------------------------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from mammo_seg.config import load_config
    from mammo_seg.training.run import train_stage

    config = load_config(args.config, args.set)
    out = args.out or os.path.join("runs", config.name)
    if config.stages:
        from mammo_seg.training.curriculum import run_curriculum

        results = run_curriculum(config, out, progress=not args.quiet)
    else:
        results = [train_stage(config, out, resume=args.resume, progress=not args.quiet)]
    for result in results:
        best = "n/a" if result.best is None else f"{result.best:.4f}"
        print(f"trained {result.run_dir}: {result.epochs_done} epochs; best {config.train.checkpoint_metric} {best}")
    if config.operating_point.enabled:
        from mammo_seg.inference.operating_point import choose_for_run

        point = choose_for_run(out, config)
        if point:
            print(f"operating point of {point['model']}: threshold {point['threshold']:g}, flip {point['flip']}, minimum lesion "
                  f"{point['min_area_mm2']:g} mm² (validation: mean lesion Dice {point['validation']['mean_dice']:.3f}, "
                  f"lesion-free scans flagged {point['validation']['normal_with_detection_rate']:.2f})")
    return 0


# -------------------------------------------------------------------------------- predict, export, evaluate
def cmd_predict(args) -> int:
    from mammo_seg.inference.predict import FORMATS, PredictOptions, predict

    formats = FORMATS if args.format == "all" else tuple(f.strip() for f in args.format.split(","))
    if args.report and "prob" not in formats:
        raise MammoError("--report", "needs the prob format: the report draws the detections from the "
                                     "probabilities")
    options = PredictOptions(threshold=args.threshold, min_area_mm2=args.min_area, tile=args.tile, overlap=args.overlap,
                             batch_size=args.batch_size, formats=formats, force=args.force,
                             breast_mask=not args.no_breast_mask, all_images=args.all_images,
                             spacing_mm=args.spacing, flip=args.flip)
    summary = predict(args.model, args.input, args.output, options, progress=not args.quiet, resume=args.resume)
    counts = summary["counts"]
    if args.report:
        from mammo_seg.report import write_prediction_report

        print(f"report {write_prediction_report(os.path.join(args.output, 'report.html'), args.output)}")
    print(f"predicted {counts['ok']} of {counts['scans']} scans ({counts['positive']} called positive) into "
          f"{args.output}; overlays *_overlay.png, summary {os.path.join(args.output, 'summary.json')}")
    return 0 if counts["ok"] else 1


def cmd_export(args) -> int:
    from mammo_seg.export import export_model

    info = export_model(args.model, args.output, args.format)
    what = "signatures serve, serve_batch" if args.format == "savedmodel" else "model.onnx"
    print(f"exported {info['model']} to {args.output} ({what}; resolution.json)")
    return 0


def cmd_evaluate(args) -> int:
    from mammo_seg.errors import printable
    from data_prep.ground_truth import ground_truth
    from mammo_seg.evaluate import evaluate

    result = evaluate(args.predictions, ground_truth(args.ground_truth), args.output, min_area_mm2=args.min_area)
    for problem in result["problems"]:
        print(printable(f"problem: {problem['file']}: {problem['reason']}"), file=sys.stderr)
    mean, pooled, image = result["mean"]["1"], result["pooled"]["1"], result["image_level"]
    print(f"{len(result['metric_per_case'])} cases: mean lesion IoU {mean['IoU']:.4f}, Dice {mean['Dice']:.4f}, "
          f"precision {mean['precision']:.4f}, recall {mean['recall']:.4f}; pooled IoU {pooled['IoU']:.4f}; "
          f"image accuracy {image['accuracy']:.3f}, recall {image['recall']:.3f}; "
          f"{len(result['problems'])} problems; evaluation {args.output}")
    if "detection" in result:
        froc, point = result["detection"]["froc"], result["detection"]["at_operating_point"]
        at = ", ".join(f"{k}: {'n/a' if v is None else f'{v:.2f}'}" for k, v in froc["sensitivity_at_fp_per_image"].items())
        print(f"lesions found at {at} false positives per image; at the operating point "
              f"{point['found']}/{point['lesions']} lesions, {point['false_positives']} false positives, "
              f"{point['normal_scans_with_detection']}/{point['normal_scans']} lesion-free scans flagged")
    if result["metric_per_case"]:
        from mammo_seg.report import report_path

        print(f"report {report_path(args.output)}")
    if result["unmatched_predictions"]:
        print(f"warning: {len(result['unmatched_predictions'])} predictions match no reference scan", file=sys.stderr)
    return 0 if result["metric_per_case"] else 1


# ---------------------------------------------------------------------------------------------- study
def cmd_study(args) -> int:
    from data_prep.benchmark import build_phantom_benchmark
    from mammo_seg.study import load_study, run_study

    study = load_study(args.config, args.set)
    out = args.out or os.path.join("runs", study.name)
    rows = run_study(study, out, progress=not args.quiet, build_benchmark=build_phantom_benchmark)
    best = max(rows, key=lambda r: r["lesion_iou_mean"])
    print(f"{len(rows)} losses x {len(study.seeds)} seeds: {os.path.join(out, 'results.md')}, results.csv, "
          f"precision_recall.png, val_iou.png; best test lesion IoU: {best['loss']} {best['lesion_iou_mean']:.3f}")
    return 0


# ----------------------------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from mammo_seg.demo import run_demo

    run_demo(args.out, workers=args.workers, patients=args.patients)
    return 0


def _add_set(parser, what: str, example: str) -> None:
    """``--set KEY=VALUE [KEY=VALUE ...]``, repeatable: every value of every ``--set`` in one list."""
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help=f"override {what}, e.g. --set {example} (several after one --set, or repeated)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mammo", description="Mammography lesion segmentation pipeline.")
    parser.add_argument("--version", action="version", version=f"mammo-seg {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    synth = verbs.add_parser("synth", help="write phantom scans in the real CBIS-DDSM or MIAS format",
                             description="Write phantom mammograms in the exact on-disk format of a dataset.")
    synth_ds = synth.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    s = synth_ds.add_parser("cbis-ddsm", help="DICOM tree + case-description CSVs",
                            description="CBIS-DDSM phantoms: 4 images per patient, CSVs with the real quirks.")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--patients", type=_count, default=12, help="number of patients (default 12)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--scale", type=_positive_float, default=0.25,
                   help="image size relative to real CBIS-DDSM scans (about 3000x5000 at 1.0; default 0.25)")
    s.add_argument("--layout", choices=("cbis", "nbia"), default="cbis",
                   help="folders as the CSV paths (cbis) or as the later NBIA readable download (nbia)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_synth)
    s = synth_ds.add_parser("mias", help="mdbNNN.pgm + Info.txt", description="MIAS phantoms: 1024x1024 PGMs.")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--images", type=_count, default=24, help="number of images (default 24)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_synth)

    prep = verbs.add_parser("prep", help="scans → tiles in sharded TFRecords",
                            description="Turn a raw dataset into lesion-labelled tiles in sharded TFRecords.")
    prep_ds = prep.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name in ("cbis-ddsm", "mias"):
        p = prep_ds.add_parser(name, help=f"prepare {name}", description=f"Prepare {name} into OUT/<tile>/ shards.")
        p.add_argument("--raw", required=True, help="the dataset directory")
        p.add_argument("--out", required=True, help="output directory (OUT/<tile>/, splits.json, problems.csv)")
        p.add_argument("-c", "--config", help="a recipe whose prep: section gives the settings below "
                                               "(flags given here override it)")
        p.add_argument("--tiles", type=_int_list, default=None, help="tile sizes (default 320,640)")
        p.add_argument("--full-scans", action="store_true", default=None, help="also write whole scans (OUT/full/)")
        p.add_argument("--scale", type=_positive_float, default=None,
                       help="training px per native px at 50 µm (default 320/598 ≈ 0.535)")
        p.add_argument("--workers", type=_count, default=1, help="parallel processes (output is identical for any)")
        p.add_argument("--seed", type=_seed, default=None, help="split and crop positions (default 0)")
        p.add_argument("--roi-crops", type=_seed, default=None, help="crops around each abnormality (default 2)")
        p.add_argument("--random-crops", type=_seed, default=None, help="crops anywhere in each scan (default 4)")
        p.add_argument("--val-fraction", type=_fraction, default=None,
                       help="patients held out for validation (default 0.1)")
        p.add_argument("--test-fraction", type=_fraction, default=None,
                       help="patients held out for test when the dataset has no official split (default 0.2)")
        p.add_argument("--scans-per-shard", type=_count, default=None, help="(default 64)")
        p.add_argument("--strict", action="store_true", help="exit non-zero when any problem was reported")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=cmd_prep)

    ins = verbs.add_parser("inspect", help="validate a prep output and draw a contact sheet",
                           description="Validate OUT/<tile> shards against manifest.json; write a contact sheet.")
    ins.add_argument("dir", help="a prep output folder, e.g. OUT/320")
    ins.add_argument("--sheet", help="contact sheet path (default DIR/contact_sheet.png)")
    ins.add_argument("--samples", type=_count, default=24)
    ins.add_argument("--seed", type=_seed, default=0)
    ins.set_defaults(func=cmd_inspect)

    tr = verbs.add_parser("train", help="train the FCN on prepared tiles",
                          description="Train as a YAML config says (see experiments/); writes a run directory.")
    tr.add_argument("-c", "--config", required=True, help="experiment YAML")
    _add_set(tr, "a config key", "train.epochs=5 train.lr=0.001")
    tr.add_argument("--out", help="run directory (default runs/<name>)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last completed epoch")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=cmd_train)

    pr = verbs.add_parser("predict", help="full-scan inference on DICOM (or PGM/PNG/TIFF) files",
                          description="Predict lesion masks for a scan file or every scan below a directory.")
    pr.add_argument("-m", "--model", required=True, help="a .keras file, a run directory or a curriculum run")
    pr.add_argument("-i", "--input", required=True, help="a scan file or a directory of scans")
    pr.add_argument("-o", "--output", required=True, help="output directory")
    pr.add_argument("--threshold", type=_number(float, 0, 1, what="a probability"), default=None,
                    help="probability threshold (default: the model's operating point, else 0.5)")
    pr.add_argument("--min-area", type=_number(float, 0, what="an area in mm²"), default=None, metavar="MM2",
                    help="smallest lesion reported, in mm² (default: the model's operating point, else 0)")
    pr.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                    help="average with the left-right mirrored scan's probabilities (test-time augmentation; "
                         "default: the model's operating point, else off)")
    pr.add_argument("--tile", type=_number(int, 16, MAX_TILE, what="an integer"), default=None,
                    help="Gaussian-blended windows of this size at the training resolution (default: one pass "
                         "when the scan fits, else exact strips)")
    pr.add_argument("--overlap", type=_fraction, default=0.25, help="window overlap (default 0.25)")
    pr.add_argument("--batch-size", type=_count, default=4, help="windows per batch")
    pr.add_argument("--format", default="all", help="all, or some of mask,prob,overlay,seg,sr,json")
    pr.add_argument("--spacing", type=_positive_float, default=None, metavar="MM",
                    help="pixel spacing of every input scan in mm, overriding PixelSpacing (default: PixelSpacing, "
                         "else the nominal spacing of the model's training data)")
    pr.add_argument("--force", action="store_true", help="also run on DICOMs that are not mammograms")
    pr.add_argument("--no-breast-mask", action="store_true",
                    help="keep findings outside the breast (by default film labels and markers are dropped)")
    pr.add_argument("--all-images", action="store_true",
                    help="also crops and ROI masks (by default only full mammograms are predicted)")
    pr.add_argument("--continue", dest="resume", action="store_true",
                    help="skip the scans a previous (interrupted) run into --output finished")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.add_argument("--report", action="store_true",
                    help="also write OUTPUT/report.html: every scan with its numbered detections (needs prob)")
    pr.set_defaults(func=cmd_predict)

    ex = verbs.add_parser("export", help="TensorFlow SavedModel or ONNX for serving",
                          description="Export a trained model as a SavedModel or ONNX (scan in, lesion "
                                      "probabilities out).")
    ex.add_argument("-m", "--model", required=True, help="a .keras file, a run directory or a curriculum run")
    ex.add_argument("-o", "--output", required=True, help="export directory (new or empty)")
    ex.add_argument("--format", choices=EXPORT_FORMATS, default="savedmodel",
                    help="savedmodel (default) or onnx (OUT/model.onnx; needs the onnx extra)")
    ex.set_defaults(func=cmd_export)

    ev = verbs.add_parser("evaluate", help="score predictions against ground truth",
                          description="Per-case and mean lesion IoU, Dice, precision, recall; image-level calls.")
    ev.add_argument("-p", "--predictions", required=True, help="a mammo predict output directory")
    ev.add_argument("-g", "--ground-truth", required=True,
                    help="a raw CBIS-DDSM/MIAS directory, or a prep output with --full-scans")
    ev.add_argument("-o", "--output", default="evaluation.json",
                    help="evaluation JSON (default evaluation.json; never predict's summary.json)")
    ev.add_argument("--min-area", type=_number(float, 0, what="an area in mm²"), default=None, metavar="MM2",
                    help="smallest detection for the lesion-level scores (default: predict's minimum)")
    ev.set_defaults(func=cmd_evaluate)

    st = verbs.add_parser("study", help="compare losses: each trains the same model, several seeds",
                          description="Train the same model under each loss of a study config (experiments/"
                                      "loss_study/), score on the test split, write tables and plots.")
    st.add_argument("-c", "--config", required=True, help="study YAML")
    _add_set(st, "a study key", "seeds=[0] name=quick")
    st.add_argument("--out", help="output directory (default runs/<name>)")
    st.add_argument("--quiet", action="store_true", help="no progress bars")
    st.set_defaults(func=cmd_study)

    demo = verbs.add_parser("demo", help="run the whole chain on phantoms",
                            description="synth → prep → inspect → curriculum → predict → evaluate on CBIS-DDSM "
                                        "phantoms, sized for a CPU (a few minutes).")
    demo.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    demo.add_argument("--patients", type=_count, default=12)
    demo.add_argument("--workers", type=_count, default=2)
    demo.set_defaults(func=cmd_demo)
    return parser


def _fail(verb: str, message: str) -> int:
    from mammo_seg.errors import printable

    print(f"mammo {verb}: error: {printable(message)}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MammoError as e:
        return _fail(args.verb, str(e))
    except OSError as e:  # the environment (output not writable, disk full): one line, what is done stays done
        return _fail(args.verb, f"{e.filename}: {e.strerror or e}" if e.filename else str(e.strerror or e))
    except KeyboardInterrupt:
        print(f"mammo {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
