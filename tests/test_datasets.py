"""Dataset converters on the real annotation files and on phantoms in the real formats."""

import csv
import os
import shutil
from collections import Counter

import numpy as np
import pytest

from conftest import CBIS_PATIENTS, CBIS_SCALE, CBIS_SEED, DATA
from data_prep import cbis_ddsm, mias
from data_prep.splits import assign_splits
from mammo_seg.data.cases import Abnormality, Case, load_case
from mammo_seg.errors import MammoError
from mammo_seg.io import read_mask


# ------------------------------------------------------------------------------------------------ MIAS
def test_real_mias_info_file_parses_completely():
    rows, problems = mias.parse_info(os.path.join(DATA, "mias_info.txt"))
    assert problems == [] and len(rows) == 330 and len({r.ref for r in rows}) == 322
    assert Counter(r.cls for r in rows) == {"NORM": 207, "CALC": 30, "CIRC": 25, "ARCH": 19, "SPIC": 19,
                                            "MISC": 15, "ASYM": 15}
    per_image = Counter(r.ref for r in rows)
    assert {ref for ref, n in per_image.items() if n > 1} == {"mdb005", "mdb132", "mdb144", "mdb223", "mdb226",
                                                              "mdb239", "mdb249"}
    assert per_image["mdb226"] == 3
    assert {r.severity for r in rows if r.ref == "mdb144"} == {"B", "M"}
    assert {r.ref for r in rows if r.cls != "NORM" and not r.has_coordinates} == {"mdb059", "mdb216", "mdb233",
                                                                                  "mdb245"}
    first = rows[0]
    assert (first.ref, first.background, first.cls, first.severity, first.x, first.y, first.radius) == \
        ("mdb001", "G", "CIRC", "B", 535, 425, 197)


def test_mias_malformed_lines_are_reported_with_line_numbers(tmp_path):
    info = tmp_path / "Info.txt"
    info.write_text("REFNUM BG CLASS SEVERITY X Y RADIUS\nmdb001 G CIRC B 535 425 197\nmdb002 X NORM \n"
                    "mdb003 G CIRC B 1 2\nmdb004 D NORM \nmdb005 F CIRC B a b c\nmdb006 F BLOB B 1 2 3\n")
    rows, problems = mias.parse_info(str(info))
    assert [r.ref for r in rows] == ["mdb001", "mdb004"]
    assert [p.reason.split(":")[0] for p in problems] == ["line 3", "line 4", "line 6", "line 7"]
    assert "background tissue 'X'" in problems[0].reason


def test_mias_phantoms_become_cases(mias_raw):
    cases, problems, report = mias.collect_cases(mias_raw, progress=False)
    rows, _ = mias.parse_info(os.path.join(mias_raw, "Info.txt"))
    no_coords = {r.ref for r in rows if r.cls != "NORM" and not r.has_coordinates}
    assert no_coords and {p.item for p in problems} == no_coords  # reported, and only those
    assert {c.scan_id for c in cases} == {r.ref for r in rows} - no_coords
    for case in cases:
        n = int(case.scan_id[3:])
        assert case.patient_id == f"mias_{(n + 1) // 2:03d}"
    with_lesion = next(c for c in cases if c.abnormalities)
    scan, mask, rois = load_case(with_lesion)
    assert scan.pixels.shape == (1024, 1024) and mask.any() and len(rois) == len(with_lesion.abnormalities)
    row = next(r for r in rows if r.ref == with_lesion.scan_id)
    # Info.txt's y is from the bottom: the case holds the top-left row 1023 - y, where the disc is centred
    assert with_lesion.abnormalities[0].circle == (row.x, 1023 - row.y, row.radius)
    assert mask[1023 - row.y, row.x]


def test_mias_circle_from_the_bottom_left_lands_on_the_top_left_pixels(tmp_path):
    """A 10-wide, 8-high PGM and the row ``x=2, y=1, radius=1`` (y from the bottom-left corner):
    centre row 8 - 1 - 1 = 6, column 2; the disc of radius 1 is that pixel and its four neighbours."""
    from mammo_seg.io.image import write_pgm

    write_pgm(tmp_path / "mdb001.pgm", np.arange(80, dtype=np.uint8).reshape(8, 10))
    (tmp_path / "Info.txt").write_text("mdb001 G CIRC B 2 1 1\n")
    cases, problems, _ = mias.collect_cases(str(tmp_path), progress=False)
    assert problems == [] and cases[0].abnormalities[0].circle == (2, 6, 1)
    _, mask, rois = load_case(cases[0])
    assert sorted(zip(*np.nonzero(mask))) == [(5, 2), (6, 1), (6, 2), (6, 3), (7, 2)]
    assert rois == [(5, 1, 8, 4)]


def test_mias_circles_outside_the_image_are_refused(mias_raw, tmp_path):
    raw = str(tmp_path / "mias")
    shutil.copytree(mias_raw, raw)
    info = os.path.join(raw, "Info.txt")
    rows, _ = mias.parse_info(info)
    lesions = [r for r in rows if r.has_coordinates][:3]
    lines = open(info).read().splitlines()
    for row, (x, y, radius) in zip(lesions, [(10, 10, 999999999), (1024, 10, 5), (10, 5000, 5)]):
        lines[row.line_number - 1] = f"{row.ref} {row.background} {row.cls} {row.severity} {x} {y} {radius}"
    open(info, "w").write("\n".join(lines) + "\n")
    cases, problems, _ = mias.collect_cases(raw, progress=False)
    refused = [p for p in problems if "image skipped" in p.reason and "coordinates" not in p.reason]
    assert [(p.item, p.reason) for p in refused] == [
        (lesions[0].ref, f"line {lesions[0].line_number}: radius 999999999 exceeds half the 1024x1024 image; "
                         f"image skipped"),
        (lesions[1].ref, f"line {lesions[1].line_number}: centre x=1024, y=10 is outside the 1024x1024 image; "
                         f"image skipped"),
        (lesions[2].ref, f"line {lesions[2].line_number}: centre x=10, y=5000 is outside the 1024x1024 image; "
                         f"image skipped")]
    assert not {r.ref for r in lesions} & {c.scan_id for c in cases}
    with pytest.raises(MammoError, match="circle x=10, y=10, radius=999999999 does not fit the 1024x1024 image"):
        load_case(Case("m", "p", "mias", cases[0].scan_path, (Abnormality("mass", circle=(10, 10, 999999999)),)))


# ------------------------------------------------------------------------------------------- CBIS-DDSM
def test_real_cbis_rows_parse_with_both_header_spellings():
    mass, p1 = cbis_ddsm.read_csv(os.path.join(DATA, "cbis_ddsm_mass_train_sample.csv"))
    calc, p2 = cbis_ddsm.read_csv(os.path.join(DATA, "cbis_ddsm_calc_train_sample.csv"))
    assert (len(mass), len(calc), p1, p2) == (8, 5, [], [])
    assert {r.kind for r in mass} == {"mass"} and {r.kind for r in calc} == {"calcification"}
    assert all(not r.mask.endswith("\n") and not r.crop.endswith("\n") for r in mass + calc)
    first = mass[0]
    assert (first.patient, first.side, first.view, first.abnormality_id) == ("P_00001", "LEFT", "CC", "1")
    assert cbis_ddsm.series_uid(first.image) == \
        "1.3.6.1.4.1.9590.100.1.2.342386194811267636608694132590482924515"
    # in these real rows the calc file names the mask 000000.dcm and the mass file 000001.dcm
    assert calc[0].mask.endswith("000000.dcm") and mass[0].mask.endswith("000001.dcm")


def test_cbis_malformed_rows_are_reported(tmp_path):
    with open(os.path.join(DATA, "cbis_ddsm_mass_train_sample.csv"), newline="") as f:
        header, good, *_ = [[cell.strip() for cell in row] for row in csv.reader(f)]
    bad_side = [cell if cell != "LEFT" else "MIDDLE" for cell in good]
    path = tmp_path / "mass_case_description_train_set.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, good, bad_side])
        f.write(",".join(good + ["extra", "fields"]) + "\n")
    rows, problems = cbis_ddsm.read_csv(str(path))
    assert len(rows) == 1 and len(problems) == 2
    reasons = " | ".join(p.reason for p in problems)
    assert "malformed row with 16 fields, expected 14" in reasons and "side 'MIDDLE'" in reasons


def test_cbis_phantoms_become_cases_with_quirks_resolved(cbis_raw):
    cases, problems, report = cbis_ddsm.collect_cases(cbis_raw, progress=False)
    assert report["images"] == 4 * CBIS_PATIENTS
    assert report["cases"] + report["skipped_images"] == report["images"] and report["skipped_images"] >= 1
    assert report["swapped_crop_mask"] >= 1
    mismatch = [p for p in problems if "does not match image" in p.reason]
    assert len(mismatch) == report["skipped_images"] and all(p.item for p in mismatch)
    assert {c.official_split for c in cases} == {"train", "test"}
    for case in cases:
        shape = load_case(case)[0].pixels.shape
        for abn in case.abnormalities:
            assert read_mask(abn.mask_path).shape == shape  # the mask, never the crop
    # a view with a mass and a calcification is one case with both kinds (Mass- and Calc- copies merged)
    assert any(case.kinds == ["calcification", "mass"] for case in cases)


def test_cbis_nbia_layout_gives_the_same_cases(cbis_raw, tmp_path):
    from mammo_seg.synthetic.cbis_ddsm import write_cbis_ddsm

    nbia = str(tmp_path / "nbia")
    write_cbis_ddsm(nbia, CBIS_PATIENTS, seed=CBIS_SEED, scale=CBIS_SCALE, layout="nbia", progress=False)
    assert any("full mammogram images" in d for d, _, _ in os.walk(nbia))
    a, _, _ = cbis_ddsm.collect_cases(cbis_raw, progress=False)
    b, _, _ = cbis_ddsm.collect_cases(nbia, progress=False)
    assert [c.scan_id for c in a] == [c.scan_id for c in b]
    for ca, cb in zip(a, b):
        assert ca.kinds == cb.kinds
        np.testing.assert_array_equal(load_case(ca)[1], load_case(cb)[1])


def test_cbis_missing_and_corrupt_files_are_reported(cbis_raw, tmp_path):
    raw = str(tmp_path / "raw")
    shutil.copytree(cbis_raw, raw)
    cases, _, _ = cbis_ddsm.collect_cases(raw, progress=False)
    gone, broken = cases[0], cases[1]
    os.remove(gone.scan_path)
    with open(broken.scan_path, "r+b") as f:
        f.truncate(100)  # header cut short: not even the series UID is readable
    after, problems, _ = cbis_ddsm.collect_cases(raw, progress=False)
    ids = {c.scan_id for c in after}
    assert gone.scan_id not in ids and broken.scan_id not in ids and len(after) == len(cases) - 2
    lines = [p.line() for p in problems]
    assert any(broken.scan_path in line and "DICOM" in line for line in lines)
    assert any(gone.scan_id in line and "not found" in line for line in lines)


def test_cbis_short_long_and_unreadable_rows_are_one_problem_each(tmp_path):
    with open(os.path.join(DATA, "cbis_ddsm_mass_train_sample.csv"), newline="") as f:
        header, good, *_ = [[cell.strip() for cell in row] for row in csv.reader(f)]
    path = tmp_path / "mass_case_description_train_set.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerows([header, good[:5], good[:-1] + ["x" * 200_000], good, [], good[:-1] + ["y" * 5000]])
    rows, problems = cbis_ddsm.read_csv(str(path))
    assert [r.line for r in rows] == [4]
    assert [p.reason for p in problems] == [
        "line 2: malformed row with 5 fields, expected 14: P_00001,3,LEFT,CC,1",
        "line 3: unreadable record (field larger than field limit (131072))",
        "line 6: malformed row (a file path longer than 4096 characters)"]
    no_columns = tmp_path / "calc_case_description_test_set.csv"
    no_columns.write_text("patient_id,image view\nP_00001,CC\n")
    assert cbis_ddsm.read_csv(str(no_columns))[1][0].reason.startswith(
        "not a CBIS-DDSM case description: missing columns ['left or right breast', 'abnormality id'")


def test_cbis_corrupt_headers_anywhere_are_one_problem_each(cbis_raw, tmp_path):
    raw = str(tmp_path / "raw")
    shutil.copytree(cbis_raw, raw)
    cases, before, _ = cbis_ddsm.collect_cases(raw, progress=False)
    data = open(cases[0].scan_path, "rb").read()
    rows_at = data.index(b"\x28\x00\x10\x00US")  # (0028,0010) Rows, explicit VR
    os.makedirs(os.path.join(raw, "stray"))
    unknown_vr = os.path.join(raw, "stray", "unknown_vr.dcm")
    open(unknown_vr, "wb").write(data[:rows_at + 4] + b"ZZ" + data[rows_at + 6:])
    odd_length = os.path.join(raw, "stray", "odd_length.dcm")
    open(odd_length, "wb").write(data[:rows_at + 6] + b"\x03\x00" + data[rows_at + 8:rows_at + 10] + b"\x00" +
                                 data[rows_at + 10:])
    after, problems, _ = cbis_ddsm.collect_cases(raw, progress=False)
    assert [c.scan_id for c in after] == [c.scan_id for c in cases]  # unreferenced strays: nothing lost
    new = [p for p in problems if p not in before]
    assert [(p.file, p.reason.split(" (")[0]) for p in new] == [(odd_length, "corrupt DICOM header"),
                                                                  (unknown_vr, "corrupt DICOM header")]
    assert "NotImplementedError: Unknown Value Representation 'ZZ' in tag (0028,0010)" in new[1].reason
    assert "BytesLengthException" in new[0].reason
    samples_at = data.index(b"\x28\x00\x02\x00US")  # (0028,0002) SamplesPerPixel: read only with the pixels
    odd_candidate = str(tmp_path / "odd_candidate.dcm")
    open(odd_candidate, "wb").write(data[:samples_at + 4] + b"ZZ" + data[samples_at + 6:])
    assert not cbis_ddsm._is_binary(odd_candidate)  # a corrupt mask candidate is no candidate, not a crash


# ---------------------------------------------------------------------------------------------- splits
def _case(scan, patient, split=None):
    return Case(scan, patient, "x", f"/{scan}", official_split=split)


def test_official_split_is_kept_and_patients_never_straddle():
    cases = [_case(f"{p}_{v}", p, "test" if p in ("P3", "P4") else "train")
             for p in ("P1", "P2", "P3", "P5", "P6", "P7", "P8", "P9", "P10", "P11") for v in ("CC", "MLO")]
    cases += [_case("P4_CC", "P4", "test"), _case("P4_MLO", "P4", "train")]  # mixed: all to test
    split, content = assign_splits(cases, val_fraction=0.2, test_fraction=0.2, seed=1)
    by_patient = {}
    for c in cases:
        by_patient.setdefault(c.patient_id, set()).add(split[c.scan_id])
    assert all(len(s) == 1 for s in by_patient.values())
    assert by_patient["P3"] == by_patient["P4"] == {"test"} and content["moved_to_test"] == ["P4"]
    assert len(content["splits"]["val"]["patients"]) == 2  # 20 % of the 9 training patients, rounded
    assert assign_splits(cases, val_fraction=0.2, test_fraction=0.2, seed=1)[0] == split
    assert assign_splits(cases, val_fraction=0.2, test_fraction=0.2, seed=2)[0] != split


def test_random_patient_split_without_official_one():
    cases = [_case(f"mdb{i:03d}", f"w{(i + 1) // 2}") for i in range(1, 41)]
    split, content = assign_splits(cases, val_fraction=0.1, test_fraction=0.2, seed=0)
    counts = {s: len(v["patients"]) for s, v in content["splits"].items()}
    assert counts == {"train": 14, "val": 2, "test": 4}
    for i in range(1, 41, 2):
        assert split[f"mdb{i:03d}"] == split[f"mdb{i + 1:03d}"]


# ----------------------------------------------------------------------------------------- the phantoms
def test_synthetic_cbis_matches_the_real_format(cbis_raw):
    import pydicom

    for kind in ("mass", "calc"):
        real = open(os.path.join(DATA, f"cbis_ddsm_{kind}_train_sample.csv")).readline()
        ours = open(os.path.join(cbis_raw, f"{kind}_case_description_train_set.csv")).readline()
        assert ours == real
    text = open(os.path.join(cbis_raw, "mass_case_description_train_set.csv")).read()
    assert '/000001.dcm\n"' in text  # the newline inside the quoted path cell
    rows = list(csv.DictReader(open(os.path.join(cbis_raw, "mass_case_description_train_set.csv"))))
    row = rows[0]
    folder, study, series, name = row["image file path"].split("/")
    ds = pydicom.dcmread(os.path.join(cbis_raw, "CBIS-DDSM", folder, study, series, name))
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID) == (study, series)
    assert (ds.Modality, ds.BitsAllocated, ds.PixelRepresentation) == ("MG", 16, 0)
    assert ds.ImageLaterality == row["left or right breast"][0] and ds.ViewPosition == row["image view"]
    assert float(ds.PixelSpacing[0]) == pytest.approx(0.05 / CBIS_SCALE)
    assert ds.pixel_array.max() < 2 ** 16 * 0.6  # CBIS-DDSM uses about half of the 16-bit range
    photometric = {pydicom.dcmread(os.path.join(d, f), stop_before_pixels=True).PhotometricInterpretation
                   for d, _, files in os.walk(cbis_raw) for f in files if f.endswith(".dcm")}
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}
    mask_files = [os.path.join(d, f) for d, _, files in os.walk(cbis_raw) for f in files
                  if f.endswith(".dcm") and pydicom.dcmread(os.path.join(d, f)).BitsAllocated == 8]
    assert mask_files and all(set(np.unique(pydicom.dcmread(m).pixel_array)) <= {0, 255} for m in mask_files)


def test_synthetic_mias_matches_the_real_format(mias_raw):
    lines = open(os.path.join(mias_raw, "Info.txt")).read().split("\n")
    assert all(line.endswith(" NORM ") for line in lines if " NORM" in line)
    assert any("*NOTE 3*" in line for line in lines)
    data = open(os.path.join(mias_raw, "mdb001.pgm"), "rb").read()
    assert data.startswith(b"P5\n1024 1024\n255\n") and len(data) == 17 + 1024 * 1024


def test_synth_is_deterministic(tmp_path):
    from mammo_seg.synthetic.cbis_ddsm import write_cbis_ddsm
    from mammo_seg.synthetic.mias import write_mias

    def tree(root):
        return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
                for d, _, files in os.walk(root) for f in files}

    for name, write in (("c", lambda o, s: write_cbis_ddsm(o, 1, seed=s, scale=0.08, progress=False)),
                        ("m", lambda o, s: write_mias(o, 3, seed=s, progress=False))):
        write(str(tmp_path / f"{name}1"), 5)
        write(str(tmp_path / f"{name}2"), 5)
        write(str(tmp_path / f"{name}3"), 6)
        assert tree(str(tmp_path / f"{name}1")) == tree(str(tmp_path / f"{name}2"))
        assert tree(str(tmp_path / f"{name}1")) != tree(str(tmp_path / f"{name}3"))
