"""The model card of a trained run (Mitchell et al. 2019, "Model Cards for Model Reporting"):
``model_card.json`` and its readable twin ``model_card.md``, beside the model file a run stands for
(a cross-validated run: beside ``ensemble.json``), written by ``mammo train`` and carried by ``mammo export``.

It says what the model is for and not for, what it was trained on (dataset, women, scans and lesions by
kind, spacing and training grid), its operating point, the figures it was chosen on (out of fold with 95 %
intervals over women for a cross-validated run, validation for one model), its known limits, and where it
came from (package, git commit, TensorFlow and Keras versions, precision, seed, the config's SHA-256).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

from mammo_seg import __version__, atomic

CARD_JSON, CARD_MD = "model_card.json", "model_card.md"
CARD_FILES = (CARD_JSON, CARD_MD)
INTENDED_USE = ("Research on lesion segmentation in mammograms: finding and outlining masses, architectural "
                "distortions and asymmetries on whole scans, and comparing methods on public datasets.")
NOT_FOR = ("Diagnosis, screening or any clinical decision: it is not a medical device. Scans of another source "
           "than its training data without checking its figures there first.")
#: Calcification specks are about 0.1-1 mm: a training pixel coarser than this does not show them.
CALCIFICATION_PIXEL_MM = 0.2


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def training_data(data_dir: str, split: str) -> dict:
    """Dataset, women, scans and lesion kinds of ``split`` (from the whole-scan records when there are some)."""
    import tensorflow as tf

    from mammo_seg.data.prep_output import Manifest, PrepOutput
    from mammo_seg.errors import MammoError

    prep = PrepOutput.containing(data_dir)
    manifest = Manifest.load(data_dir)
    scans = {k: v for k, v in prep.scans().items() if v.get("split") == split}
    kinds: dict[str, int] = {}
    try:
        files = prep.whole_scan_files(split)
    except MammoError:  # a prep output without whole scans: no kinds to count
        files = []
    spec = {"abnormality": tf.io.VarLenFeature(tf.string)}
    try:
        for serialized in tf.data.TFRecordDataset(files) if files else []:
            for kind in tf.io.parse_single_example(serialized, spec)["abnormality"].values.numpy():
                kinds[kind.decode()] = kinds.get(kind.decode(), 0) + 1
    except tf.errors.DataLossError as e:
        from mammo_seg.data.inspect import read_error_reason, unreadable_shard

        where, reason = unreadable_shard(files) or (data_dir, read_error_reason(e))
        raise MammoError(where, f"unreadable shard ({reason}); the model card counts the lesions of {split!r} "
                                f"from it") from None
    resolution = manifest.resolution
    ignored = {"ignored_kinds": sorted(manifest.ignore_kinds)} if manifest.ignore_kinds else {}
    return {"dataset": manifest.dataset, "prep_output": os.path.abspath(prep.root), "split": split,
            "women": len({v["patient_id"] for v in scans.values()}), "scans": len(scans),
            "abnormalities_by_kind": dict(sorted(kinds.items())), **ignored,
            "training_pixel_mm": resolution.get("spacing_mm"),
            "nominal_spacing_mm": resolution.get("nominal_spacing_mm")}


def _calcification_note(data: dict) -> str:
    """What the card says of calcification clusters: nothing on a fine training grid; on a coarse one, that they
    were not learnt (prep stored them as ignore regions) or learnt though their specks are not seen."""
    if (data["training_pixel_mm"] or 0) <= CALCIFICATION_PIXEL_MM:
        return ""
    if "calcification" in data.get("ignored_kinds", []):
        return (" Calcification clusters: not learnt (ignore regions in training and in the choice of the operating "
                "point), their specks being smaller than a training pixel.")
    return " Calcification clusters: trained and scored with the other lesions, but their specks are smaller than a " \
           "training pixel."


def build_card(config, model_file: str, data: dict, precision: str) -> dict:
    """The card's content (see the module)."""
    import keras
    import tensorflow as tf

    from mammo_seg.inference.operating_point import path_for

    here = os.path.dirname(os.path.abspath(model_file))
    point = json.load(open(path_for(model_file))) if os.path.isfile(path_for(model_file)) else None
    oof = os.path.join(here, "oof.json")
    figures = None
    if point:
        figures = {"chosen_on": point.get("chosen_on"), "at_operating_point": point.get("validation")}
        if os.path.isfile(oof):
            figures["intervals"] = json.load(open(oof)).get("intervals")
    config_text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    members = len(json.load(open(model_file))["members"]) if model_file.endswith(".json") else 1
    return {
        "model": os.path.basename(model_file), "members": members,
        "intended_use": INTENDED_USE,
        "not_for": NOT_FOR + _calcification_note(data),
        "training_data": data,
        "cross_validation": {"folds": config.cv.folds, "nested": config.cv.nested} if config.cv.folds else None,
        "operating_point": None if point is None else {k: point[k] for k in ("threshold", "min_area_mm2", "flip")},
        "figures": figures,
        "known_limits": [
            f"Trained on {data['dataset']} ({data['women']} women): other digitisers, films and detectors differ "
            f"in contrast and noise; expect fewer lesions found on them.",
            f"Training pixel {data['training_pixel_mm']} mm: lesions and calcification specks much smaller than "
            f"that are not seen.",
            "Figures rest on few lesions; their 95 % intervals over women are wide.",
            *_ensemble_point_limit(members, point),
            *(["Its second input channel is the woman's other breast in the same view: predict finds it in its "
               "input, and a scan without it is segmented beside a zero channel, which training saw only for scans "
               "whose pair the data lacked."] if config.data.contralateral else [])],
        "provenance": {"package": f"mammo-seg {__version__}", "git_commit": _git_commit(),
                       "tensorflow": tf.__version__, "keras": keras.__version__, "precision": precision,
                       "seed": config.seed, "config_sha256": hashlib.sha256(config_text.encode()).hexdigest()},
    }


def _ensemble_point_limit(members: int, point: dict | None) -> list[str]:
    """What the card says of an ensemble's operating point chosen out of fold: on single models (too high for
    their mean), or on nested means (near the ensemble's, not equal)."""
    from mammo_seg.inference.operating_point import chosen_on, models_per_scan

    if members < 2 or not chosen_on(point).get("out_of_fold"):
        return []
    per_scan = models_per_scan(point)
    if per_scan > 1:
        return [f"The operating point was chosen by nested cross-validation, on every scan's prediction by the "
                f"mean of {per_scan} models that never saw its woman, each trained on fewer women than the "
                f"{members} models averaged here: expect figures near those chosen on, not equal."]
    return [f"The operating point was chosen on the {members} fold models' out-of-fold predictions, one model a "
            f"scan, and is applied to their mean, whose peaks are lower where the models disagree: at the same "
            f"threshold expect fewer detections than the figures say (fewer lesions found, fewer false "
            f"positives); `mammo predict --threshold` sets another."]


def markdown(card: dict) -> str:
    data, point, figures = card["training_data"], card["operating_point"], card["figures"]
    lines = [f"# Model card: {card['model']}", "",
             f"**Intended use.** {card['intended_use']}", "", f"**Not for.** {card['not_for']}", "",
             "## Training data", "",
             f"{data['dataset']}: {data['women']} women, {data['scans']} scans of the {data['split']!r} split; "
             f"abnormalities by kind: {', '.join(f'{k} {n}' for k, n in data['abnormalities_by_kind'].items()) or 'n/a'}. "
             f"Training pixel {data['training_pixel_mm']} mm; scans without PixelSpacing are taken at "
             f"{data['nominal_spacing_mm']} mm.", ""]
    if card["cross_validation"]:
        lines += [f"{card['cross_validation']['folds']}-fold cross-validation by woman: the model is the mean of "
                  f"the {card['members']} fold models' probabilities.", ""]
    lines += ["## Operating point", ""]
    if point:
        lines += [f"Threshold {point['threshold']:g}, minimum lesion {point['min_area_mm2']:g} mm², flip "
                  f"test-time augmentation {'on' if point['flip'] else 'off'}.", ""]
    else:
        lines += ["None recorded: predict uses threshold 0.5 and no minimum area unless told.", ""]
    if figures:
        where = "out of fold" if (figures.get("chosen_on") or {}).get("out_of_fold") else "on the validation women"
        at = figures.get("at_operating_point") or {}
        lines += ["## Figures", "",
                  f"At the operating point, {where} (on the training grid, where it was chosen): lesion sensitivity "
                  f"{at.get('sensitivity', float('nan')):.2f} at {at.get('fp_per_image', float('nan')):.2f} false "
                  f"positives per image, mean lesion Dice {at.get('mean_dice', float('nan')):.2f}, lesion-free scans "
                  f"flagged {at.get('normal_with_detection_rate', float('nan')):.2f}."]
        intervals = figures.get("intervals")
        if intervals:
            group = intervals["groups"]["all"]
            s1 = group["sensitivity_at_fp_per_image"]["1"]
            if s1["ci95"]:
                lines += [f"Sensitivity at 1 false positive per image {s1['value']:.2f} (95 % interval "
                          f"{s1['ci95'][0]:.2f}-{s1['ci95'][1]:.2f}, {intervals['method']}, {group['lesions']} "
                          f"lesions of {intervals['women']} women)."]
        lines.append("")
    lines += ["## Known limits", ""] + [f"* {limit}" for limit in card["known_limits"]] + ["", "## Provenance", ""]
    lines += [f"* {k}: {v}" for k, v in card["provenance"].items()]
    return "\n".join(lines) + "\n"


def write_model_card(config, model_file: str, data_dir: str, precision: str) -> str:
    """Write ``model_card.json`` and ``model_card.md`` beside ``model_file``; returns the Markdown's path."""
    card = build_card(config, model_file, training_data(data_dir, config.data.train_split), precision)
    here = os.path.dirname(os.path.abspath(model_file))
    atomic.write_json(os.path.join(here, CARD_JSON), card)
    return atomic.write_text(os.path.join(here, CARD_MD), markdown(card))


def write_for_run(config, run: str) -> str:
    """The card of the model a finished ``mammo train`` run stands for (its ensemble, its last stage or itself),
    with the precision its run recorded as it trained."""
    from mammo_seg.config import stage_configs
    from mammo_seg.run_dir import RunDir, model_files

    last = stage_configs(config)[-1][1]
    name, _ = model_files(run)
    return write_model_card(last, name, last.data.path(), RunDir(run).trained_precision() or "not recorded")
