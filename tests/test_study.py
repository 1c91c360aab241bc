"""``mammo study``: several losses and seeds on one phantom benchmark, tables and plots."""

import csv
import os

import pytest

from mammo_seg.cli import main
from mammo_seg.errors import MammoError
from mammo_seg.study import load_study, run_study

STUDY = """
name: tiny_study
seeds: [0, 1]
benchmark: {patients: 3, seed: 5, synth_scale: 0.1, tiles: [64], scale: 0.15, roi_crops: 2, random_crops: 3}
experiment:
  data: {tile: "64"}
  model: {width: 0.125, bn_momentum: 0.9}
  train: {epochs: 2, steps_per_epoch: 2, batch_size: 4, lr: 0.002, schedule: constant, validation_steps: 2}
losses:
  iou: {loss: {name: iou}}
  weighted_ce: {loss: {name: weighted_bce, pos_weight: 10, pos_weight_decay: 0.5}}
"""


@pytest.mark.slow
def test_study_runs_every_loss_and_seed_and_reruns_for_free(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(STUDY)
    out = str(tmp_path / "out")
    assert main(["study", "-c", str(config), "--out", out, "--quiet"]) == 0
    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["loss"] for r in rows] == ["iou", "weighted_ce"] and all(r["seeds"] == "2" for r in rows)
    for r in rows:
        for key in ("lesion_iou", "lesion_dice", "precision", "recall", "image_recall"):
            assert 0.0 <= float(r[f"{key}_mean"]) <= 1.0 and float(r[f"{key}_sd"]) >= 0.0
    table = open(os.path.join(out, "results.md")).read()
    assert "| weighted_ce |" in table and "2 epochs × 2 steps × batch 4" in table
    for name in ("precision_recall.png", "val_iou.png"):
        assert os.path.getsize(os.path.join(out, name)) > 5000
    log = open(os.path.join(out, "runs", "weighted_ce", "seed1", "history.csv")).read()
    assert "pos_weight" in log.splitlines()[0]  # the decay ran: 10, then 5
    stamp = os.path.getmtime(os.path.join(out, "runs", "iou", "seed0", "history.csv"))
    assert main(["study", "-c", str(config), "--out", out, "--quiet"]) == 0  # finished runs are skipped
    assert os.path.getmtime(os.path.join(out, "runs", "iou", "seed0", "history.csv")) == stamp


def test_study_config_is_checked(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(STUDY.replace("pos_weight: 10,", "pos_weigth: 10,"))
    with pytest.raises(MammoError, match="loss.pos_weigth"):
        load_study(str(config))
    config.write_text(STUDY.replace("seeds: [0, 1]", "seeds: [0, 1]\ncolour: red"))
    with pytest.raises(MammoError, match="colour"):
        load_study(str(config))
    config.write_text("seeds: [0, 1\nlosses: {}\n")  # unclosed bracket
    with pytest.raises(MammoError) as info:
        load_study(str(config))
    assert str(info.value).startswith(f"{config}: not valid YAML") and "\n" not in str(info.value)


def test_the_library_study_builds_no_data_itself(tmp_path):
    """Without a prep output, ``run_study`` needs the builder its caller (``mammo study``) passes."""
    config = tmp_path / "study.yaml"
    config.write_text(STUDY)
    with pytest.raises(MammoError, match="no prep output here, and no benchmark builder was given"):
        run_study(load_study(str(config)), str(tmp_path / "out"), progress=False)
    assert not os.path.exists(tmp_path / "out")


def test_checked_in_studies_load():
    root = os.path.join(os.path.dirname(__file__), "..", "experiments", "loss_study")
    names = [n for n in os.listdir(root) if n.endswith(".yaml")]
    assert names
    for name in names:
        study = load_study(os.path.join(root, name))
        assert len(study.losses) >= 10 and len(study.seeds) >= 3
