"""``mammo <verb>``: a thin argparse layer over the library; every verb is an importable function.

Each verb is a command (``cmd_<verb>``) and, beside it, the builder of its parser (``add_<verb>``): its
flags, their defaults and choices, and examples. Flags are checked by argparse before any work starts
(exit 2 and one line); TensorFlow is imported only by the verbs that need it, with its start-up lines
kept off the console unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.util
import json
import logging
import os
import sys

from mammo_seg import __version__
from mammo_seg.data import MAX_TILE
from mammo_seg.errors import MammoError
from mammo_seg.export import FORMATS as EXPORT_FORMATS


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``mammo prep mias: error: argument --seed: ... (see --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _verb(verbs, name: str, help: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """A verb's (or a dataset's) parser: its help ends with ``examples``; every verb takes ``--verbose``."""
    parser = verbs.add_parser(name, help=help, description=description,
                              epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true",
                        help="also show the start-up lines of TensorFlow, absl and CUDA (hidden by default)")
    return parser


# ------------------------------------------------------------------------------------ console noise
@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 pointed at /dev/null for the block: C++ libraries write there directly."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Imports TensorFlow, when a verb first needs it, with its C++ start-up lines (CUDA stubs, absl's
    "log messages before InitializeLog") silenced: they are written before any log level applies."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            with _stderr_silenced():
                run(module)

        spec.loader.exec_module = exec_module
        return spec


def quiet_console(verbose: bool) -> None:
    """Keep the console to the project's own lines (unless ``verbose``): TensorFlow's C++ logs below
    FATAL, its Python and absl loggers below ERROR, and its import-time lines. Effective only before
    TensorFlow is imported."""
    if verbose or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in ("absl", "tensorflow", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if not any(isinstance(finder, _QuietTensorFlow) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())


# ---------------------------------------------------------------------------------------- flag types
def _number(kind, low=None, high=None, high_open=False, what=None, low_open=False):
    """An argparse type: ``kind`` (int or float) within [low, high] (``low_open``/``high_open``: bound excluded)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what or kind.__name__}, got {text!r}") from None
        too_high = high is not None and (value >= high if high_open else value > high)
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or too_high or value != value:
            left = "(" if low_open else "["
            bounds = f">= {low}" if high is None and not low_open else (
                f"> {low}" if high is None else f"in {left}{low}, {high}{')' if high_open else ']'}")
            raise argparse.ArgumentTypeError(f"expected {what or kind.__name__} {bounds}, got {text!r}")
        return value
    return parse


_count = _number(int, 1, what="an integer")
_seed = _number(int, 0, what="an integer")
_fraction = _number(float, 0, 1, high_open=True, what="a fraction")


def _word_list(text: str) -> list[str]:
    """Comma-separated words ('' for none)."""
    return [v.strip() for v in text.split(",") if v.strip()]


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


def _spacing(text: str) -> float:
    """A pixel spacing in mm, within the plausible range for mammograms (50 is µm typed for mm)."""
    from mammo_seg.data.resolution import PLAUSIBLE_SPACING_MM

    lo, hi = PLAUSIBLE_SPACING_MM
    value = _positive_float(text)
    if not lo <= value <= hi:
        hint = f"; {text} µm is {value / 1000:g} mm" if lo <= value / 1000 <= hi else ""
        raise argparse.ArgumentTypeError(f"expected a pixel spacing in mm from {lo:g} to {hi:g}, got {text!r}{hint}")
    return value


def _formats(text: str) -> tuple[str, ...]:
    """``all`` or a comma-separated subset of predict's outputs (no ``--format``: ``DEFAULT_FORMATS``)."""
    from mammo_seg.inference.prediction_output import SCAN_FILES

    if text.strip() == "all":
        return tuple(SCAN_FILES)
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in SCAN_FILES]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"unknown format {(unknown or [text])[0]!r}; choose all, or some of "
                                         f"{','.join(SCAN_FILES)}")
    return formats


def _add_set(parser, what: str, example: str) -> None:
    """``--set KEY=VALUE [KEY=VALUE ...]``, repeatable: every value of every ``--set`` in one list."""
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help=f"override {what}, e.g. --set {example} (several after one --set, or repeated; a "
                             f"list item by its index, e.g. stages[-1].train.epochs=12; default: none)")


def _quiet_flag(parser, what: str = "no progress bar") -> None:
    parser.add_argument("--quiet", action="store_true", help=what)


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


def add_synth(verbs) -> None:
    synth = _verb(verbs, "synth", "write phantom scans in the real CBIS-DDSM or MIAS format",
                  "Write phantom mammograms in the exact on-disk format of a dataset.",
                  ["mammo synth cbis-ddsm --out raw/cbis --patients 12", "mammo synth mias --out raw/mias"])
    datasets = synth.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    s = _verb(datasets, "cbis-ddsm", "DICOM tree + case-description CSVs",
              "CBIS-DDSM phantoms: 4 images per patient, CSVs with the real quirks.",
              ["mammo synth cbis-ddsm --out raw/cbis --patients 12",
               "mammo synth cbis-ddsm --out raw/nbia --layout nbia --scale 0.5"])
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--patients", type=_count, default=12, help="number of patients (default 12)")
    s.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    s.add_argument("--scale", type=_positive_float, default=0.25,
                   help="image size relative to real CBIS-DDSM scans (about 3000x5000 at 1.0; default 0.25)")
    s.add_argument("--layout", choices=("cbis", "nbia"), default="cbis",
                   help="folders as the CSV paths (cbis, the default) or as the later NBIA readable download (nbia)")
    _quiet_flag(s)
    s.set_defaults(func=cmd_synth)
    s = _verb(datasets, "mias", "mdbNNN.pgm + Info.txt", "MIAS phantoms: 1024x1024 PGMs.",
              ["mammo synth mias --out raw/mias", "mammo synth mias --out raw/mias --images 60 --seed 1"])
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--images", type=_count, default=24, help="number of images (default 24)")
    s.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    _quiet_flag(s)
    s.set_defaults(func=cmd_synth)


# ----------------------------------------------------------------------------------------------- prep
def prep_settings(args):
    """The prep settings: each flag given on the command line, else the recipe's prep: section, else the default."""
    import dataclasses

    from mammo_seg.config import PrepSection, load_prep_config

    section = load_prep_config(args.config) if args.config else PrepSection()
    if getattr(args, "train_spacing", None) is not None:
        args.scale = TRAINING_REFERENCE_MM / args.train_spacing
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(PrepSection)
             if getattr(args, f.name, None) is not None}
    return dataclasses.replace(section, **given)


def cmd_prep(args) -> int:
    from data_prep.prepare import prepare
    from mammo_seg.data.prep_output import PrepOutput

    summary = prepare(args.dataset, args.raw, args.out, prep_settings(args), workers=args.workers,
                      progress=not args.quiet)
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


TRAINING_REFERENCE_MM = 0.05  # --scale's native spacing (mammo_seg.data.resolution.REFERENCE_SPACING_MM)
PREP_EXAMPLES = {"cbis-ddsm": ["mammo prep cbis-ddsm --raw /data/CBIS-DDSM --out tfrecords/cbis --workers 8",
                               "mammo prep cbis-ddsm --raw raw/cbis --out tfrecords/cbis --tiles 320 --full-scans"],
                 "mias": ["mammo prep mias --raw /data/all-mias --out tfrecords/mias "
                          "--config experiments/mias_real/recipe.yaml",
                          "mammo prep mias --raw /data/all-mias --out tfrecords/mias04 --full-scans --tiles '' "
                          "--train-spacing 0.4"]}


def add_prep(verbs) -> None:
    from mammo_seg.config import PrepSection

    d = PrepSection()  # the defaults of the settings below (a recipe's prep: section overrides them)
    prep = _verb(verbs, "prep", "scans → tiles in sharded TFRecords",
                 "Turn a raw dataset into lesion-labelled tiles in sharded TFRecords.",
                 PREP_EXAMPLES["cbis-ddsm"][:1] + PREP_EXAMPLES["mias"][:1])
    datasets = prep.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name in ("cbis-ddsm", "mias"):
        p = _verb(datasets, name, f"prepare {name}", f"Prepare {name} into OUT/<tile>/ shards.", PREP_EXAMPLES[name])
        p.add_argument("--raw", required=True, help="the dataset directory")
        p.add_argument("--out", required=True, help="output directory (OUT/<tile>/, splits.json, problems.csv)")
        p.add_argument("-c", "--config", help="a recipe whose prep: section gives the settings below "
                                               "(flags given here override it; default: none)")
        p.add_argument("--tiles", type=_int_list, default=None,
                       help=f"tile sizes (default {','.join(str(t) for t in d.tiles)})")
        p.add_argument("--full-scans", action="store_true", default=None,
                       help=f"also write whole scans (OUT/full/; default {'on' if d.full_scans else 'off'})")
        grid = p.add_mutually_exclusive_group()
        grid.add_argument("--train-spacing", type=_spacing, default=None, metavar="MM",
                          help=f"the training grid: mm of tissue per training pixel, the same for every source "
                               f"(default {TRAINING_REFERENCE_MM / d.scale:.3g}: the original's; the mini-MIAS recipe "
                               f"uses 0.8); same as --scale {TRAINING_REFERENCE_MM:g}/MM")
        grid.add_argument("--scale", type=_positive_float, default=None,
                          help=f"the training grid as training px per native px of a {TRAINING_REFERENCE_MM:g}-mm "
                               f"scan (default {d.scale:.4g}, the original's 320/598): a CBIS-DDSM film (0.05 mm) is "
                               f"resized by it, a mini-MIAS scan (0.2 mm) by 4 × it")
        p.add_argument("--workers", type=_count, default=1,
                       help="parallel processes (output is identical for any; default 1)")
        p.add_argument("--seed", type=_seed, default=None, help=f"split and crop positions (default {d.seed})")
        p.add_argument("--roi-crops", type=_seed, default=None,
                       help=f"crops around each abnormality (default {d.roi_crops})")
        p.add_argument("--random-crops", type=_seed, default=None,
                       help=f"crops anywhere in each scan (default {d.random_crops})")
        p.add_argument("--val-fraction", type=_fraction, default=None,
                       help=f"patients held out for validation (default {d.val_fraction:g})")
        p.add_argument("--test-fraction", type=_fraction, default=None,
                       help=f"patients held out for test when the dataset has no official split "
                            f"(default {d.test_fraction:g})")
        p.add_argument("--scans-per-shard", type=_count, default=None,
                       help=f"scans per TFRecord shard (default {d.scans_per_shard})")
        p.add_argument("--ignore-kinds", type=_word_list, default=None, metavar="KINDS",
                       help="abnormality kinds stored as an ignore region, neither lesion nor background, that "
                            "training and the operating point skip, e.g. calcification (MIAS CALC) at a grid too "
                            "coarse to show them; comma-separated, from mass, calcification, "
                            "architectural_distortion, asymmetry (default none)")
        p.add_argument("--contralateral", action="store_true", default=None,
                       help="store beside each whole scan the same woman's other breast in the same view, mirrored "
                            "(MIAS pairs; CBIS-DDSM's other side where present): the second input channel of a "
                            "model trained with data.contralateral; needs --full-scans (default "
                            f"{'on' if d.contralateral else 'off'})")
        p.add_argument("--strict", action="store_true", help="exit non-zero when any problem was reported")
        _quiet_flag(p)
        p.set_defaults(func=cmd_prep)


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


def add_inspect(verbs) -> None:
    ins = _verb(verbs, "inspect", "validate a prep output and draw a contact sheet",
                "Validate OUT/<tile> shards against manifest.json; write a contact sheet.",
                ["mammo inspect tfrecords/cbis/320", "mammo inspect tfrecords/cbis/full --samples 8 --sheet full.png"])
    ins.add_argument("dir", help="a prep output folder, e.g. OUT/320")
    ins.add_argument("--sheet", help="contact sheet path (default DIR/contact_sheet.png)")
    ins.add_argument("--samples", type=_count, default=24, help="records drawn on the contact sheet (default 24)")
    ins.add_argument("--seed", type=_seed, default=0, help="which records are drawn (default 0)")
    ins.set_defaults(func=cmd_inspect)


# ---------------------------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from mammo_seg.config import load_config
    from mammo_seg.training.run import train_stage

    config = load_config(args.config, args.set)
    out = args.out or os.path.join("runs", config.name)
    if config.cv.folds:
        from mammo_seg.training.cross_val import run_cross_validation

        results = run_cross_validation(config, out, progress=not args.quiet)
        for result in results:
            print(f"trained {result.run_dir}: {result.epochs_done} epochs")
        print(f"{config.cv.folds}-fold ensemble of {out}: {os.path.join(out, 'ensemble.json')}")
        _print_operating_point(os.path.join(out, "operating_point.json"))
        _write_card(config, out)
        return 0
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
            _print_point(point)
    _write_card(config, out)
    return 0


def _write_card(config, out: str) -> None:
    from mammo_seg.model_card import write_for_run
    from mammo_seg.training.strategy import is_chief

    if is_chief():
        print(f"model card {write_for_run(config, out)}")


def _print_operating_point(path: str) -> None:
    if os.path.isfile(path):
        with open(path) as f:
            _print_point(json.load(f))


def _print_point(point: dict) -> None:
    v = point["validation"]
    where = "out of fold" if point["chosen_on"].get("out_of_fold") else "validation"
    print(f"operating point of {point['model']}: threshold {point['threshold']:g}, flip {point['flip']}, minimum lesion "
          f"{point['min_area_mm2']:g} mm² ({where}: mean lesion Dice {v['mean_dice']:.3f}, lesion sensitivity "
          f"{v.get('sensitivity', float('nan')):.2f} at {v.get('fp_per_image', float('nan')):.2f} FP/image, "
          f"lesion-free scans flagged {v['normal_with_detection_rate']:.2f})")


def add_train(verbs) -> None:
    tr = _verb(verbs, "train", "train the FCN on prepared tiles",
               "Train as a YAML config says (see experiments/); writes a run directory.",
               ["mammo train -c experiments/tiny.yaml --set data.dir=demo_out/data train.epochs=2",
                "mammo train -c experiments/iou_fcn/curriculum.yaml --out runs/iou_fcn"])
    tr.add_argument("-c", "--config", required=True, help="experiment YAML")
    _add_set(tr, "a config key", "train.epochs=5 train.lr=0.001")
    tr.add_argument("--out", help="run directory (default runs/<name>)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last completed epoch")
    _quiet_flag(tr, "no progress bars")
    tr.set_defaults(func=cmd_train)


# ---------------------------------------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    from mammo_seg.inference.predict import PredictOptions, predict
    from mammo_seg.inference.prediction_output import DEFAULT_FORMATS, PredictionOutput

    if args.format is None:  # the default outputs, and the probabilities the report draws from
        args.format = DEFAULT_FORMATS + (("prob",) if args.report else ())
    if args.report and "prob" not in args.format:
        raise MammoError("--report", "needs the prob format: the report draws the detections from the "
                                     "probabilities")
    options = PredictOptions(threshold=args.threshold, min_area_mm2=args.min_area, tile=args.tile, overlap=args.overlap,
                             batch_size=args.batch_size, formats=args.format, force=args.force,
                             breast_mask=not args.no_breast_mask, all_images=args.all_images,
                             spacing_mm=args.spacing, flip=args.flip)
    summary = predict(args.model, args.input, args.output, options, progress=not args.quiet, resume=args.resume,
                      writers=args.writers)
    counts = summary["counts"]
    if args.report:
        from mammo_seg.report import write_prediction_report

        print(f"report {write_prediction_report(os.path.join(args.output, 'report.html'), args.output)}")
    overlays = "overlays *_overlay.png, " if counts["ok"] and "overlay" in args.format else ""
    print(f"predicted {counts['ok']} of {counts['scans']} scans ({counts['positive']} called positive) into "
          f"{args.output}; {overlays}summary {PredictionOutput(args.output).summary_file}")
    return 0 if counts["ok"] else 1


def add_predict(verbs) -> None:
    pr = _verb(verbs, "predict", "full-scan inference on DICOM (or PGM/PNG/TIFF) files",
               "Predict lesion masks for a scan file or every scan below a directory. The output folder must be "
               "new or empty, or hold an interrupted run of the same settings (--continue).",
               ["mammo predict -m runs/iou_fcn -i /data/CBIS-DDSM/Mass-Test_P_00016_LEFT_CC -o predictions",
                "mammo predict -m runs/mias_real -i /data/all-mias -o pred_mias --spacing 0.2 --continue"])
    pr.add_argument("-m", "--model", required=True,
                    help="a .keras file, a run directory, a curriculum run or a cross-validated run (its ensemble)")
    pr.add_argument("-i", "--input", required=True, help="a scan file or a directory of scans")
    pr.add_argument("-o", "--output", required=True,
                    help="output directory: new or empty (or an interrupted run's, with --continue)")
    pr.add_argument("--threshold", type=_number(float, 0, 1, low_open=True, high_open=True, what="a probability"),
                    default=None, help="probability threshold, in (0, 1) (default: the model's operating point, "
                                       "else 0.5)")
    pr.add_argument("--min-area", type=_number(float, 0, what="an area in mm²"), default=None, metavar="MM2",
                    help="smallest lesion reported, in mm² (default: the model's operating point, else 0)")
    pr.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                    help="average with the left-right mirrored scan's probabilities (test-time augmentation; "
                         "default: the model's operating point, else off)")
    pr.add_argument("--tile", type=_number(int, 16, MAX_TILE, what="an integer"), default=None,
                    help=f"Gaussian-blended windows of this size at the training resolution, 16 to {MAX_TILE} px "
                         f"(default: one pass when the scan fits, else exact strips)")
    pr.add_argument("--overlap", type=_fraction, default=0.25, help="window overlap, in [0, 1) (default 0.25)")
    pr.add_argument("--batch-size", type=_count, default=4, help="windows per batch (default 4)")
    pr.add_argument("--format", type=_formats, default=None,
                    help="outputs: some of mask,prob,overlay,seg,sr,json (comma-separated; sr, the DICOM Structured "
                         "Report, needs seg), or all; default mask,overlay,seg,sr,json: the probability map prob "
                         "(about 30 MB a CBIS-DDSM scan) only on request, as evaluate's FROC needs it (--report "
                         "adds it)"),
    pr.add_argument("--spacing", type=_spacing, default=None, metavar="MM",
                    help="pixel spacing of every input scan in mm (0.02 to 1), overriding PixelSpacing (default: "
                         "PixelSpacing, else the nominal spacing of the model's training data)")
    pr.add_argument("--force", action="store_true", help="also run on DICOMs that are not mammograms")
    pr.add_argument("--no-breast-mask", action="store_true",
                    help="keep findings outside the breast (by default film labels and markers are dropped)")
    pr.add_argument("--all-images", action="store_true",
                    help="also crops and ROI masks, which may be smaller than the 50 mm field of any mammogram "
                         "(by default only full mammograms are predicted)")
    pr.add_argument("--writers", type=_number(int, 0, what="an integer"), default=None, metavar="N",
                    help="processes that post-process and write the scans' outputs while the network runs on the "
                         "next ones; 0: a thread of the predict process (default: with a GPU the cores beyond two, at "
                         "most 4, else 0; the same outputs whatever N)")
    pr.add_argument("--continue", dest="resume", action="store_true",
                    help="skip the scans a previous (interrupted) run into --output finished; its settings "
                         "(settings.json) must be the same")
    pr.add_argument("--report", action="store_true",
                    help="also write report.html: every scan with its numbered detections (needs prob)")
    _quiet_flag(pr)
    pr.set_defaults(func=cmd_predict)


# ---------------------------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from mammo_seg.export import export_model

    info = export_model(args.model, args.output, args.format)
    what = "signatures serve, serve_batch" if args.format == "savedmodel" else "model.onnx"
    print(f"exported {info['model']} to {args.output} ({what}; resolution.json)")
    return 0


def add_export(verbs) -> None:
    ex = _verb(verbs, "export", "TensorFlow SavedModel or ONNX for serving",
               "Export a trained model as a SavedModel or ONNX (scan in, lesion probabilities out).",
               ["mammo export -m runs/iou_fcn -o export/iou_fcn",
                "mammo export -m runs/iou_fcn/best.keras -o export/onnx --format onnx"])
    ex.add_argument("-m", "--model", required=True, help="a .keras file, a run directory or a curriculum run")
    ex.add_argument("-o", "--output", required=True, help="export directory (new or empty)")
    ex.add_argument("--format", choices=EXPORT_FORMATS, default="savedmodel",
                    help="savedmodel (the default) or onnx (OUT/model.onnx; needs the onnx extra)")
    ex.set_defaults(func=cmd_export)


# ---------------------------------------------------------------------------------------------- evaluate
def cmd_evaluate(args) -> int:
    from mammo_seg.errors import printable
    from data_prep.ground_truth import ground_truth
    from mammo_seg.evaluate import evaluate

    result = evaluate(args.predictions, ground_truth(args.ground_truth), args.output, min_area_mm2=args.min_area,
                      groups=dict(args.group))
    for problem in result["problems"]:
        print(printable(f"problem: {problem['file']}: {problem['reason']}"), file=sys.stderr)
    if without := result["counts"]["without_probabilities"]:
        print(f"warning: {without} of {len(result['metric_per_case'])} evaluated scans have no probability map: "
              f"the lesion-level figures (FROC) {'leave them out' if 'detection' in result else 'are not computed'}; "
              f"predict with --format all (or a list with prob) writes it", file=sys.stderr)
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
        intervals = result["intervals"]
        for name, group in intervals["groups"].items():
            figure = group["sensitivity_at_fp_per_image"]["1"]
            if figure["value"] is not None and figure["ci95"]:
                print(f"{name}: {group['lesions']} lesions, sensitivity at 1 false positive per image "
                      f"{figure['value']:.2f} (95% interval over {intervals['women']} women "
                      f"{figure['ci95'][0]:.2f}-{figure['ci95'][1]:.2f})")
    if result["metric_per_case"]:
        from mammo_seg.report import report_path

        print(f"report {report_path(args.output)}")
    if result["unmatched_predictions"]:
        print(f"warning: {len(result['unmatched_predictions'])} predictions match no reference scan", file=sys.stderr)
    return 0 if result["metric_per_case"] else 1


def _group(text: str) -> tuple[str, tuple[str, ...]]:
    name, _, types = text.partition("=")
    kinds = tuple(t.strip() for t in types.split(",") if t.strip())
    if not name.strip() or not kinds:
        raise argparse.ArgumentTypeError(f"expected NAME=TYPE[,TYPE...], got {text!r}")
    return name.strip(), kinds


def add_evaluate(verbs) -> None:
    ev = _verb(verbs, "evaluate", "score predictions against ground truth",
               "Per-case and mean lesion IoU, Dice, precision, recall; image-level calls; lesion-level FROC.",
               ["mammo evaluate -p predictions -g /data/CBIS-DDSM -o evaluation.json",
                "mammo evaluate -p pred_mias -g tfrecords/mias/full --min-area 5"])
    ev.add_argument("-p", "--predictions", required=True, action="append",
                    help="a mammo predict output directory; repeat it to pool several (e.g. the out-of-fold "
                         "predictions of each fold)")
    ev.add_argument("-g", "--ground-truth", required=True,
                    help="a raw CBIS-DDSM/MIAS directory, or a prep output with --full-scans")
    ev.add_argument("-o", "--output", default="evaluation.json",
                    help="evaluation JSON (default evaluation.json; never predict's summary.json)")
    ev.add_argument("--min-area", type=_number(float, 0, what="an area in mm²"), default=None, metavar="MM2",
                    help="smallest detection for the lesion-level scores (default: predict's minimum)")
    ev.add_argument("--group", type=_group, action="append", default=[], metavar="NAME=TYPE,TYPE",
                    help="also report these lesion types together, with their own intervals (repeatable; default: "
                         "all lesions only), e.g. masses=CIRC,SPIC,MISC")
    ev.set_defaults(func=cmd_evaluate)


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


def add_study(verbs) -> None:
    st = _verb(verbs, "study", "compare losses: each trains the same model, several seeds",
               "Train the same model under each loss of a study config (experiments/loss_study/), score on the "
               "test split, write tables and plots.",
               ["mammo study -c experiments/loss_study/cpu.yaml --out runs/loss_study_cpu",
                "mammo study -c experiments/loss_study/cpu.yaml --set seeds=[0] name=quick"])
    st.add_argument("-c", "--config", required=True, help="study YAML")
    _add_set(st, "a study key", "seeds=[0] name=quick")
    st.add_argument("--out", help="output directory (default runs/<name>)")
    _quiet_flag(st, "no progress bars")
    st.set_defaults(func=cmd_study)


# ----------------------------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from mammo_seg.demo import run_demo

    run_demo(args.out, workers=args.workers, patients=args.patients)
    return 0


def add_demo(verbs) -> None:
    demo = _verb(verbs, "demo", "run the whole chain on phantoms",
                 "synth → prep → inspect → curriculum → predict → evaluate on CBIS-DDSM phantoms, sized for a "
                 "CPU (a few minutes).", ["mammo demo", "mammo demo --out /tmp/demo --patients 6 --workers 1"])
    demo.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    demo.add_argument("--patients", type=_count, default=12, help="phantom patients (default 12)")
    demo.add_argument("--workers", type=_count, default=2, help="prep processes (default 2)")
    demo.set_defaults(func=cmd_demo)


#: The verbs in the order ``mammo --help`` lists them, each by its builder.
VERBS = (add_synth, add_prep, add_inspect, add_train, add_predict, add_export, add_evaluate, add_study, add_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mammo", description="Mammography lesion segmentation pipeline.",
                     epilog="examples:\n  mammo demo\n  mammo predict --help",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mammo-seg {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for add in VERBS:
        add(verbs)
    return parser


def _fail(verb: str, message: str) -> int:
    from mammo_seg.errors import printable

    print(f"mammo {verb}: error: {printable(message)}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    quiet_console(args.verbose)
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
