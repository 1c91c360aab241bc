"""What prep prints for a partial download: one line for the images a full Info.txt lists that are missing, and a
warning for a split with no lesion."""

import csv
import os
import shutil

from mammo_seg.cli import main


def test_a_partial_mias_download_is_one_line_and_a_lesion_free_split_a_warning(mias_raw, tmp_path, capsys):
    from data_prep.mias import collect_cases, parse_info

    cases, _, _ = collect_cases(mias_raw, progress=False)
    normal = [c for c in cases if not c.abnormalities][:3]
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(os.path.join(mias_raw, "Info.txt"), raw / "Info.txt")
    for case in normal:
        shutil.copy(case.scan_path, raw / os.path.basename(case.scan_path))
    out = tmp_path / "out"
    assert main(["prep", "mias", "--raw", str(raw), "--out", str(out), "--tiles", "64", "--quiet",
                 "--val-fraction", "0", "--test-fraction", "0"]) == 0
    err = capsys.readouterr().err
    with open(out / "problems.csv", newline="") as f:
        missing = [row for row in csv.DictReader(f) if row["reason"].endswith(".pgm not found")]
    rows, _ = parse_info(os.path.join(mias_raw, "Info.txt"))
    expected = len({row.ref for row in rows}) - len(normal)
    assert len(missing) == expected > 1  # every missing image is a row of problems.csv ...
    lines = [line for line in err.splitlines() if "not found" in line]
    assert lines == [f"problem: {raw / 'Info.txt'}: {expected} images listed in Info.txt not found (each listed in "
                     f"{out / 'problems.csv'})"]  # ... and one line on the console
    assert "warning: the 'train' split has 3 scans and none with a lesion" in err
    # and training asked for lesion crops on it says so, rather than wait for a lesion that never comes
    import pytest

    from mammo_seg.data.pipeline import make_dataset
    from mammo_seg.errors import MammoError

    with pytest.raises(MammoError, match="has no lesion pixel"):
        make_dataset(str(out / "64"), "train", 2, training=True, crop=32, lesion_share=0.5)


def test_train_spacing_is_the_training_grid_in_mm_for_every_source(capsys):
    import pytest

    from mammo_seg.cli import build_parser, prep_settings

    args = build_parser().parse_args(["prep", "mias", "--raw", "r", "--out", "o", "--train-spacing", "0.8"])
    assert prep_settings(args).scale == pytest.approx(0.0625)  # 0.05 mm / 0.8 mm: a mini-MIAS scan at 1/4 × 1/4
    args = build_parser().parse_args(["prep", "cbis-ddsm", "--raw", "r", "--out", "o", "--train-spacing", "0.1"])
    assert prep_settings(args).scale == pytest.approx(0.5)
    for bad in (["--train-spacing", "800"], ["--train-spacing", "0.8", "--scale", "0.1"]):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(["prep", "mias", "--raw", "r", "--out", "o", *bad])
        assert exit_.value.code == 2
    assert "800 µm is 0.8 mm" in capsys.readouterr().err
