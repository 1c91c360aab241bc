"""The bad-input catalogue, continued: a scan's scale (PixelSpacing and field of view), a study poisoned by
a forged header, and a SEG whose source carries values its VR forbids. Each batch runs through ``mammo
predict`` (``cli.main``): every bad item gets exactly one line naming its file and the reason, and every
good item beside it is produced.
"""

import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import write_dicom
from mammo_seg.cli import main
from mammo_seg.data.resolution import Resolution
from mammo_seg.errors import MammoError
from test_bad_inputs import one_line_each
from test_predict_robust import dciodvfy_errors, phantom

RANGE = "is outside the plausible range 0.02-1 mm (--spacing MM overrides it)"


def in_study(path: str, pixels: np.ndarray, study_uid: str, **kwargs):
    """A phantom DICOM of the given study (``write_dicom`` gives each file a study of its own)."""
    from mammo_seg.synthetic.dicom import image_dataset, make_uid, save

    ds = image_dataset(pixels, patient_id="TEST", study_uid=study_uid, series_uid=make_uid(path, "series"),
                       sop_uid=make_uid(path, "sop"), **kwargs)
    save(ds, path)
    return ds


def with_spacing_bytes(path: str, value: bytes) -> None:
    """Replace the file's PixelSpacing ``0.2\\0.2`` by ``value`` (7 bytes): any bytes, as a damaged file holds."""
    assert len(value) == 7
    data = open(path, "rb").read()
    assert data.count(b"0.2\\0.2") == 1
    open(path, "wb").write(data.replace(b"0.2\\0.2", value))


def test_field_of_view_decides_whether_a_spacing_can_be_right():
    mias = Resolution(nominal_spacing_mm=0.2)
    with pytest.raises(MammoError) as info:
        mias.grid((4432, 2864), None)  # a CBIS-DDSM film, no PixelSpacing, a model trained on MIAS
    assert str(info.value) == (
        "at 0.2 mm (the model's nominal spacing (the file has none)) the 4432 x 2864 px scan would be 886 x 573 mm, "
        "larger than any mammography detector or film (at most 400 mm a side): give its pixel spacing with "
        "--spacing MM")
    grid = mias.grid((4432, 2864), None, override_mm=0.05)  # the CBIS-DDSM training grid: 93.4 µm a pixel
    assert grid.shape == (round(4432 * 0.05 / mias.spacing_mm), round(2864 * 0.05 / mias.spacing_mm))
    assert mias.grid((1024, 1024), None).spacing_mm == 0.2  # a MIAS scan: 205 mm
    assert mias.grid((4000, 3000), (0.1, 0.1)).shape == mias.grid((4000, 3000), None, 0.1).shape  # 400 mm: kept
    with pytest.raises(MammoError, match=r"^at 0.1 mm \(its PixelSpacing\) the 7000 x 7000 px scan would be 700 x"):
        mias.grid((7000, 7000), (0.1, 0.1))
    with pytest.raises(MammoError, match=r"^at 0.9 mm \(--spacing\) the 581 x 100 px scan would be 523 x 90 mm"):
        mias.grid((581, 100), None, override_mm=0.9)
    with pytest.raises(MammoError, match=r"^PixelSpacing -0.05 mm is outside"):
        mias.grid((100, 100), (-0.05, 0.15))  # their mean, 0.05, is plausible: each value is checked
    assert mias.grid((250, 40), None).native_shape == (250, 40)  # 50 mm on the long side: the smallest kept
    too_small = {((249, 200), None, None): "at 0.2 mm (the model's nominal spacing (the file has none)) the 249 x 200 "
                                           "px scan would be 49.8 x 40 mm",
                 ((3, 3), (0.2, 0.2), None): "at 0.2 mm (its PixelSpacing) the 3 x 3 px scan would be 0.6 x 0.6 mm",
                 ((96, 72), None, 0.05): "at 0.05 mm (--spacing) the 96 x 72 px scan would be 4.8 x 3.6 mm"}
    for (shape, header, override), start in too_small.items():
        with pytest.raises(MammoError) as info:
            mias.grid(shape, header, override)
        assert str(info.value) == (f"{start}, far outside any mammography detector (at least 50 mm on the long "
                                   f"side): give its pixel spacing with --spacing MM")


def test_bad_spacings_and_a_forged_header_leave_the_good_scans_of_their_study(model_file, tmp_path, capsys):
    folder = tmp_path / "in"
    study = "1.2.826.0.1.3680043.10.1234.1"  # the good scans, the forged, the broken file and the crop
    good = [f"good{k}.dcm" for k in range(3)]
    spacings = {"zero.dcm": (b"0.0\\0.0", f"PixelSpacing 0 mm {RANGE}"),
                "negative.dcm": (b"-.2\\-.2", f"PixelSpacing -0.2 mm {RANGE}"),
                "mixed.dcm": (b"-.1\\0.3", f"PixelSpacing -0.1 mm {RANGE}"),
                "nan.dcm": (b"nan\\nan", f"PixelSpacing nan mm {RANGE}"),
                "one.dcm": (b"0.20000", "PixelSpacing has 1 value, not two (row\\column spacing in mm)"),
                "text.dcm": (b"abc\\def", "PixelSpacing is not two numbers (row\\column spacing in mm)")}
    for k, (name, (value, _)) in enumerate(spacings.items()):
        path = str(folder / name)
        write_dicom(path, phantom(10 + k), spacing_mm=0.2)
        with_spacing_bytes(path, value)
    # 0.9 mm is a plausible spacing, but not for 500 px: a 450-mm breast
    write_dicom(str(folder / "wide.dcm"), phantom(20, (500, 400)), spacing_mm=0.9)
    write_dicom(str(folder / "tiny.dcm"), np.array([[0, 900, 40], [300, 2000, 7], [50, 60, 70]], np.uint16),
                spacing_mm=0.2)  # a 3 x 3 "mammogram"
    forged = in_study(str(folder / "forged.dcm"), phantom(21), study)
    forged.Rows = forged.Columns = 65535  # claims 4.3 Gpx: refused from its header
    forged.save_as(str(folder / "forged.dcm"))
    broken = in_study(str(folder / "broken.dcm"), phantom(22), study)
    broken.Rows, broken.Columns = 3000, 2000  # within the limit, but its pixel data holds 288 x 216 values
    broken.save_as(str(folder / "broken.dcm"))
    for k, name in enumerate(good):  # the good scans belong to the study of the forged and the broken file
        in_study(str(folder / name), phantom(k), study, laterality="L", view="CC", spacing_mm=0.2)
    crop = "crop.dcm"  # a real crop of the study: 20 x 15 px beside the good 288 x 216 px scans
    in_study(str(folder / crop), phantom(23, (20, 15)), study, spacing_mm=0.2)
    out = tmp_path / "out"
    assert main(["predict", "-m", model_file, "-i", str(folder), "-o", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    lines = one_line_each(err, [*spacings, "wide.dcm", "tiny.dcm", "forged.dcm", "broken.dcm", crop])
    for name, (_, reason) in spacings.items():
        assert lines[name] == f"problem: {folder / name}: {reason}"
    assert lines["wide.dcm"] == (
        f"problem: {folder / 'wide.dcm'}: at 0.9 mm (its PixelSpacing) the 500 x 400 px scan would be 450 x 360 mm, "
        "larger than any mammography detector or film (at most 400 mm a side): give its pixel spacing with "
        "--spacing MM")
    assert lines["tiny.dcm"] == (
        f"problem: {folder / 'tiny.dcm'}: at 0.2 mm (its PixelSpacing) the 3 x 3 px scan would be 0.6 x 0.6 mm, far "
        "outside any mammography detector (at least 50 mm on the long side): give its pixel spacing with --spacing MM")
    assert lines["forged.dcm"].endswith("image of 65535 x 65535 = 4294836225 pixels exceeds the limit of "
                                        "60000000 pixels")
    assert lines[crop] == (f"skipped: {folder / crop}: 300 pixels, under 0.25 of the largest image of its study: "
                           "a crop, not a full mammogram; --all-images includes it")
    summary = json.load(open(out / "summary.json"))
    status = {s["id"]: s["status"] for s in summary["scans"]}
    assert {k for k, v in status.items() if v == "ok"} == {"good0", "good1", "good2"}
    assert status["crop"] == "skipped" and len(status) == 14
    refused = [os.path.splitext(n)[0] for n in [*spacings, "wide.dcm", "tiny.dcm", "forged.dcm", "broken.dcm"]]
    assert not [f for f in os.listdir(out) if f.startswith(tuple(refused))]  # no output of a refused scan left
    for name in ("good0", "good1", "good2"):
        assert dciodvfy_errors(out / f"{name}_seg.dcm") == []


def test_seg_copies_only_what_is_valid_and_says_what_it_dropped(model_file, tmp_path):
    import highdicom as hd
    import pydicom

    folder = tmp_path / "in"
    path = str(folder / "scan.dcm")
    write_dicom(path, phantom(4), spacing_mm=0.2, laterality="R", view="CC")
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of each value its VR forbids
        ds.PatientOrientation = "CC"  # CBIS-DDSM's: one value, and C is no direction
        ds.PatientSex = "X"  # enumerated M, F, O
        ds.PatientAge = "45"  # type 3, AS: nnnY
        ds.PatientWeight = "62.00000000000001"  # type 3, DS: at most 16 characters
        ds.StudyDescription = "a" * 70  # type 3, LO: at most 64 characters
        ds.PatientSize = "1.62"  # type 3 and valid: copied
        ds.save_as(path)
    out = tmp_path / "out"
    assert main(["predict", "-m", model_file, "-i", str(folder), "-o", str(out), "--quiet"]) == 0
    record = json.load(open(out / "scan.json"))
    # the type-2 attributes first, then the others in the order of their modules (General Study, Patient Study)
    assert record["seg_filled"] == ["PatientSex", "StudyDescription", "PatientAge", "PatientWeight",
                                    "PatientOrientation"]
    seg = pydicom.dcmread(out / "scan_seg.dcm")
    assert (seg.PatientSex, seg.PatientOrientation, str(seg.PatientSize)) == ("", "", "1.62")
    assert not {"PatientAge", "PatientWeight", "StudyDescription"} & set(seg.dir())
    assert dciodvfy_errors(out / "scan_seg.dcm") == []
    mask = np.array(Image.open(out / "scan_mask.png")) > 0
    back = hd.seg.segread(str(out / "scan_seg.dcm")).get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID], segment_numbers=[1])
    np.testing.assert_array_equal(back[0, :, :, 0].astype(bool), mask)
    assert pydicom.dcmread(path).PatientOrientation == "CC"  # the source is never changed


def test_info_txt_with_a_byte_order_mark_and_windows_line_ends_loses_no_line(mias_raw, tmp_path):
    from data_prep.mias import parse_info

    info = os.path.join(mias_raw, "Info.txt")
    text = open(info, encoding="ascii").read()
    rows, problems = parse_info(info)
    assert rows[0].ref == "mdb001" and not problems
    windows = tmp_path / "Info.txt"
    windows.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("ascii"))
    assert parse_info(str(windows)) == (rows, [])
