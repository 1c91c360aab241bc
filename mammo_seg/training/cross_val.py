"""K-fold cross-validation by woman, the fold ensemble, and the operating point on out-of-fold predictions.

``mammo train`` with ``cv.folds: K`` (nnU-Net's way, Isensee et al. 2021):

1. **Folds by woman**: every woman (patient id) of the training split gets a fold 1..K
   (:func:`assign_folds`: women with a lesion and women without are dealt apart, so that every fold holds
   its share of both), fixed by ``cv.seed`` (default: the config's seed) and recorded in ``cv.json``.
2. **K models**: model k trains, by the config (its stages too), on the women of the other folds, into
   ``fold<k>/``; the women of fold k are only watched (``val_*`` in its history), never used to choose
   anything — with ``train.checkpoint: last`` the model is the last epoch's.
3. **Out of fold**: model k predicts the whole scans of fold k's women on the training grid, as ``mammo
   predict`` would (one pass, breast region). Every scan is thus predicted by the one model that never saw
   its woman.
4. **Operating point** (threshold, minimum area, flip) chosen on the pooled out-of-fold predictions by the
   recipe's ``operating_point`` rule (:mod:`mammo_seg.inference.operating_point`), written for the
   ensemble; ``oof.json`` records the figures it was chosen on.
5. **The model a user gets** is the ensemble (``ensemble.json``): ``mammo predict -m RUN`` averages its
   members' probabilities. A figure computed from step 3 at that operating point is tuned on those scans
   (the operating point); the thresholds are the only choice made there, as in nnU-Net's
   ``find_best_configuration``.

A mean of models has lower peaks than one model where its members disagree, so a point chosen on one model a
scan is too high for the ensemble. With ``cv.nested: true`` (nested cross-validation) a model is also trained
without each pair of folds i < j (``nested/without<i>-<j>/``, K(K-1)/2 of them), and step 3 predicts fold k's
women with the mean of the K-1 models trained without fold k and one other (``nested/fold<k>/``): every scan
by a mean of models that never saw its woman, each trained on (K-2)/K of the women (the shipped ensemble: K
models, (K-1)/K). The operating point is chosen on those means.

Rerunning the same command continues: finished fold (and nested) models are kept, an unfinished one resumes.
With ``train.init_from`` a cross-validated run of the same folds, fold k starts from that run's fold k, and a
nested model from the same nested model of that run, which must then be nested too (a fine-tune, e.g. with
another loss, that still never shows a model the women it is scored on).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from mammo_seg import atomic
from mammo_seg.config import ExperimentConfig, dump_config, stage_configs
from mammo_seg.errors import MammoError
from mammo_seg.run_dir import RunDir
from mammo_seg.training.run import FoldPatients, StageResult, check_training_data, train_stage

log = logging.getLogger("mammo_seg.train")


def assign_folds(women: dict[str, bool], folds: int, seed: int) -> dict[str, int]:
    """The fold (1..``folds``) of every woman of ``women`` (id → has a lesion): the women with a lesion, then
    those without, each sorted and permuted by ``seed``, dealt round robin (the second group continues where the
    first stopped, so that the folds' sizes differ by at most one)."""
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    rng = np.random.default_rng(seed)
    assignment, dealt = {}, 0
    for group in (sorted(w for w, lesion in women.items() if lesion), sorted(w for w, lesion in women.items()
                                                                             if not lesion)):
        for i in rng.permutation(len(group)):
            assignment[group[i]] = dealt % folds + 1
            dealt += 1
    return dict(sorted(assignment.items()))


def women_of(data_dir: str, split: str) -> dict[str, bool]:
    """Patient id → whether any of her records of ``split`` has an abnormality (the prep output's records) of a
    kind prep did not store as the ignore region (a woman whose only abnormality is ignored has no lesion)."""
    import tensorflow as tf

    from mammo_seg.data.inspect import unreadable_data
    from mammo_seg.data.pipeline import split_files
    from mammo_seg.data.prep_output import Manifest

    ignored = Manifest.load(data_dir).ignore_kinds
    spec = {"patient_id": tf.io.FixedLenFeature([], tf.string), "abnormality": tf.io.VarLenFeature(tf.string)}
    women: dict[str, bool] = {}
    files = split_files(data_dir, split)
    try:
        for serialized in tf.data.TFRecordDataset(files):
            ex = tf.io.parse_single_example(serialized, spec)
            patient = ex["patient_id"].numpy().decode()
            kinds = {k.decode() for k in ex["abnormality"].values.numpy()}
            women[patient] = women.get(patient, False) or bool(kinds - ignored)
    except tf.errors.DataLossError as e:
        raise unreadable_data(data_dir, files, e) from None
    return women


def _fold_table(config: ExperimentConfig, data_dir: str, women: dict[str, bool]) -> dict:
    seed = config.seed if config.cv.seed is None else config.cv.seed
    if len(women) < config.cv.folds:
        raise MammoError(data_dir, f"{len(women)} women in the {config.data.train_split!r} split: too few for "
                                   f"{config.cv.folds} folds")
    folds = assign_folds(women, config.cv.folds, seed)
    return {"folds": config.cv.folds, "seed": seed, "split": config.data.train_split,
            "women": len(women), "women_with_lesion": sum(women.values()),
            "fold_of": folds}


def run_cross_validation(config: ExperimentConfig, root: str, progress: bool = True) -> list[StageResult]:
    """Train the fold models, make their ensemble and choose its operating point out of fold (module doc)."""
    from mammo_seg.training.strategy import is_chief, make_strategy

    stages = stage_configs(config)
    strategy = make_strategy(stages[0][1].train.strategy)
    data_dir = stages[0][1].data.path()
    for _, stage in stages:
        check_training_data(stage, stage.data.path())
    run = RunDir(root)
    women = women_of(data_dir, config.data.train_split)
    table = _fold_table(config, data_dir, women)
    if os.path.isfile(run.folds_file):
        with open(run.folds_file) as f:
            if json.load(f) != table:
                raise MammoError(root, "holds a cross-validation with other folds (another config, seed or data); "
                                       "use another --out")
    elif run.holds_run():
        raise MammoError(root, "run directory already holds a run; use another --out")
    models = _models_to_train(config, run, table, women, data_dir)  # checked before anything is written
    if is_chief():
        os.makedirs(root, exist_ok=True)
        dump_config(config, run.config)
        atomic.write_json(run.folds_file, table)
    results = []
    for model_run, patients, init_from in models:
        results += _train_fold(config, model_run, patients, strategy, progress, init_from)
    if not is_chief():
        return results
    ensemble = run.write_ensemble(run.folds(config.cv.folds))
    for k in range(1, config.cv.folds + 1) if config.cv.nested else ():
        run.nested_fold(k).write_ensemble([run.without_folds(k, j) for j in range(1, config.cv.folds + 1) if j != k])
    if config.operating_point.enabled:
        choose_out_of_fold(config, run, table, ensemble)
    return results


def _models_to_train(config: ExperimentConfig, run: RunDir, table: dict, women: dict[str, bool],
                     data_dir: str) -> list[tuple[RunDir, FoldPatients, str | None]]:
    """(run directory, women, starting weights) of every model: the K fold models, then the nested ones; each
    checked to have lesions to centre lesion crops on and a source of starting weights."""
    models = [(run.fold(k), {k}, k) for k in range(1, config.cv.folds + 1)]
    models += [(run.without_folds(i, j), {i, j}, (i, j)) for i, j in nested_pairs(config.cv)]
    checked = []
    for model_run, held_out, key in models:
        patients = _patients(table, held_out)
        if config.data.lesion_share > 0 and not any(women[w] for w in patients.train):
            raise MammoError(data_dir, f"{os.path.relpath(model_run.path, run.path)}: its training women (those "
                                       f"not in fold{'s' if len(held_out) > 1 else ''} "
                                       f"{' and '.join(map(str, sorted(held_out)))}) have no lesion to centre "
                                       f"lesion crops on")
        checked.append((model_run, patients, fold_init(config.train.init_from, table, key)))
    return checked


def nested_pairs(cv) -> list[tuple[int, int]]:
    """The pairs of folds (i < j) that a nested cross-validation trains a model without; none when not nested."""
    return [(i, j) for i in range(1, cv.folds + 1) for j in range(i + 1, cv.folds + 1)] if cv.nested else []


def _patients(table: dict, held_out: set[int]) -> FoldPatients:
    """The women a model trains on (those not in the folds ``held_out``) and watches (those in them)."""
    return FoldPatients(frozenset(w for w, f in table["fold_of"].items() if f not in held_out),
                        frozenset(w for w, f in table["fold_of"].items() if f in held_out))


def _train_fold(config: ExperimentConfig, fold_run: RunDir, fold: FoldPatients, strategy, progress: bool,
                init_from: str | None):
    from mammo_seg.training.curriculum import run_curriculum
    from mammo_seg.training.strategy import is_chief

    if config.stages:
        return run_curriculum(config, fold_run.path, progress=progress, fold=fold, strategy=strategy,
                              init_from=init_from)
    if fold_run.is_done():
        with open(fold_run.done) as f:
            return [StageResult(**json.load(f))]
    result = train_stage(config, fold_run.path, resume=fold_run.holds_run(), strategy=strategy, progress=progress,
                         fold=fold, init_from=init_from)
    if is_chief():
        atomic.write_json(fold_run.done, {"run_dir": result.run_dir, "epochs_done": result.epochs_done,
                                          "best": result.best, "logs": result.logs})
    return [result]


def fold_init(init_from: str | None, table: dict, k: int | tuple[int, int]) -> str | None:
    """What fold ``k`` (or, for a pair ``(i, j)``, the nested model without folds i and j) starts from: with
    ``train.init_from`` a cross-validated run, that run's model of the same fold or pair (a fine-tune: its folds
    must be this run's, so that no model ever sees the women it is scored on), else ``train.init_from`` itself."""
    if not (init_from and os.path.isdir(init_from) and os.path.isfile(RunDir(init_from).folds_file)):
        return init_from
    with open(RunDir(init_from).folds_file) as f:
        if json.load(f).get("fold_of") != table["fold_of"]:
            raise MammoError(init_from, "train.init_from: a cross-validation with other folds; fold models "
                                        "would start from weights trained on their own women")
    source = RunDir(init_from).without_folds(*k) if isinstance(k, tuple) else RunDir(init_from).fold(k)
    if not os.path.isdir(source.path):
        raise MammoError(init_from, f"train.init_from: the cross-validation has no "
                                    f"{os.path.relpath(source.path, init_from)}"
                                    f"{' (not a nested cross-validation)' if isinstance(k, tuple) else ''}")
    return source.path


def out_of_fold_scans(run: RunDir, data_dir: str, split: str, fold_of: dict, flips=(False,), nested=False):
    """(scan id, woman, fold, {flip: probability}, stored reference mask) of every whole scan of ``split``, each
    predicted by the model of its woman's fold (``nested``: by the mean of the nested models without her fold),
    on the training grid (the mask uint8: 0, 1 lesion, 2 ignore region)."""
    from mammo_seg.data import features
    from mammo_seg.data.prep_output import PrepOutput
    from mammo_seg.inference.model import load_model
    from mammo_seg.inference.operating_point import network_input, scan_probabilities
    from mammo_seg.inference.sliding_window import Predictor

    files = PrepOutput.containing(data_dir).whole_scan_files(split)
    predictors = {}
    for file in files:
        for rec in features.iterate_records(file):
            woman = rec["patient_id"].decode()
            fold = fold_of.get(woman)
            if fold is None:
                continue
            if fold not in predictors:
                loaded = load_model((run.nested_fold(fold) if nested else run.fold(fold)).path)
                predictors[fold] = Predictor(loaded.models), loaded.channels
            predictor, channels = predictors[fold]
            image = network_input(rec, channels)
            probabilities = {flip: scan_probabilities(predictor, image, flip) for flip in flips}
            yield rec["scan_id"].decode(), woman, fold, probabilities, rec["mask"][..., 0]


def choose_out_of_fold(config: ExperimentConfig, run: RunDir, table: dict, ensemble: str) -> dict:
    """The ensemble's operating point, chosen on the pooled out-of-fold predictions; writes it and ``oof.json``."""
    from mammo_seg.data.prep_output import Manifest
    from mammo_seg.data.resolution import Resolution
    from mammo_seg.inference.operating_point import choose_by_section, write_operating_point

    section = config.operating_point
    data_dir = stage_configs(config)[-1][1].data.path()
    flips = sorted({bool(f) for f in section.flips})
    scans = {flip: [] for flip in flips}
    per_fold: dict[int, int] = {}
    women = []
    nested = config.cv.nested
    for _, woman, fold, probabilities, mask in out_of_fold_scans(run, data_dir, table["split"], table["fold_of"],
                                                                 flips, nested):
        per_fold[fold] = per_fold.get(fold, 0) + 1
        women.append(woman)
        for flip in flips:
            scans[flip].append((probabilities[flip], mask))
    if not scans[flips[0]]:
        raise MammoError(data_dir, f"no whole scans of the {table['split']!r} split to choose the operating point "
                                   f"on (prep with full_scans: true)")
    pixel_mm2 = Resolution.from_dict(Manifest.load(data_dir).resolution).pixel_area_mm2
    record = choose_by_section(scans, pixel_mm2, section)
    record = {"model": os.path.basename(ensemble), **record,
              "chosen_on": {"data": os.path.abspath(data_dir), "split": table["split"], "out_of_fold": True,
                            "models_per_scan": table["folds"] - 1 if nested else 1, **record.pop("chosen_on")}}
    write_operating_point(ensemble, record)
    intervals = _intervals(scans[record["flip"]], women, record, pixel_mm2)
    atomic.write_json(run.out_of_fold, {"scans_per_fold": {str(k): n for k, n in sorted(per_fold.items())},
                                        **{k: v for k, v in record.items() if k != "candidates"},
                                        "intervals": intervals, "candidates": record["candidates"]})
    log.info("operating point of the %d-fold ensemble, chosen out of fold on %d scans (%s): threshold %g, "
             "minimum lesion %g mm², flip %s", table["folds"], len(scans[flips[0]]),
             f"each by the mean of {table['folds'] - 1} nested models" if nested else "one model a scan",
             record["threshold"], record["min_area_mm2"], record["flip"])
    return record


def _intervals(scans: list, women: list, point: dict, pixel_mm2: float) -> dict:
    """The out-of-fold figures at the chosen point with 95 % intervals over women (:mod:`mammo_seg.intervals`);
    a lesion is a connected component of the reference mask's lesion pixels on the training grid, its ignore
    region (:mod:`mammo_seg.detection`) no lesion."""
    from mammo_seg.detection import ScanLesions, detection_dice, min_area_px, reference_lesions, reference_regions
    from mammo_seg.intervals import bootstrap

    lesions, dice = [], []
    min_area = min_area_px(point["min_area_mm2"], pixel_mm2)
    for prob, ref in scans:
        parts, ignore = reference_lesions(ref)
        lesions.append(ScanLesions(prob, parts, ["lesion"] * len(parts), pixel_mm2, ignore))
        dice.append(detection_dice(prob, reference_regions(ref)[0], point["threshold"], min_area, ignore)
                    if parts else None)
    return bootstrap(lesions, women, point["threshold"], point["min_area_mm2"], dice)
