"""The bad-input catalogue, continued at the reader: files whose header and data disagree are refused with
the real reason (not "truncated", "no pixel data" or "constant"), and the good file beside each still reads."""

import numpy as np
import pydicom
import pytest

from conftest import write_dicom
from mammo_seg.errors import MammoError
from mammo_seg.io import read_scan

PIXELS = np.random.default_rng(8).integers(0, 4096, (64, 48), dtype=np.uint16)


def refused(path) -> str:
    with pytest.raises(MammoError) as info:
        read_scan(path)
    return str(info.value)


def test_jpeg_2000_data_under_an_uncompressed_transfer_syntax_is_named(tmp_path):
    good, bad = str(tmp_path / "good.dcm"), str(tmp_path / "j2k.dcm")
    write_dicom(good, PIXELS)
    ds = write_dicom(bad, PIXELS)
    ds.compress(pydicom.uid.JPEG2000Lossless)
    codestream = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1).__next__()
    ds = pydicom.dcmread(good)
    ds.PixelData = codestream  # the compressed bytes, while the file meta still says Explicit VR Little Endian
    ds.save_as(bad)
    assert refused(bad) == (f"{bad}: pixel data is a JPEG 2000 stream but the transfer syntax says uncompressed "
                            "(Explicit VR Little Endian): the file's transfer syntax is wrong")
    assert read_scan(good).meta.raw_max == PIXELS.max()  # the same file, its pixels left uncompressed: read


def test_float_pixel_data_is_named(tmp_path):
    path = str(tmp_path / "float.dcm")
    ds = write_dicom(path, PIXELS)
    del ds.PixelData
    ds.BitsAllocated = 32
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation"):
        del ds[keyword]
    ds.FloatPixelData = PIXELS.astype(np.float32).tobytes()
    ds.save_as(path)
    assert refused(path) == (f"{path}: DICOM holds FloatPixelData (a parametric map's float values), not the stored "
                             "integer pixels of a mammogram")


def test_pgm_whose_pixels_exceed_its_maxval_is_named(tmp_path):
    eight_bit = np.random.default_rng(2).integers(0, 256, (20, 30)).astype(np.uint8)
    bad, good = tmp_path / "maxval1.pgm", tmp_path / "maxval100.pgm"
    bad.write_bytes(b"P5\n30 20\n1\n" + eight_bit.tobytes())
    good.write_bytes(b"P5\n# a comment\n30 20\n100\n" + (eight_bit % 101).tobytes())
    assert refused(str(bad)) == (f"{bad}: PGM header says maxval 1 but its pixels hold values up to "
                                 f"{eight_bit.max()}: header and pixel data disagree")
    scan = read_scan(str(good))  # values within maxval 100: read (Pillow scales them by 255/100)
    assert scan.pixels.shape == (20, 30) and np.argmax(scan.pixels) == np.argmax(eight_bit % 101)


def test_link_loops_fifos_and_missing_files_each_say_which(tmp_path):
    import os

    loop, fifo, missing = str(tmp_path / "loop.dcm"), str(tmp_path / "fifo.dcm"), str(tmp_path / "gone.dcm")
    dangling, folder = str(tmp_path / "dangling.dcm"), str(tmp_path / "folder.dcm")
    os.symlink("loop.dcm", loop)
    os.symlink("gone.dcm", dangling)
    os.mkfifo(fifo)  # opening it would block for ever
    os.mkdir(folder)
    assert refused(loop) == f"{loop}: link loop"
    assert refused(fifo) == f"{fifo}: not a regular file (FIFO)"
    assert refused(folder) == f"{folder}: not a regular file (directory)"
    assert refused(dangling) == f"{dangling}: dangling link (to gone.dcm)"
    assert refused(missing) == f"{missing}: file not found"


def test_cbis_case_whose_mask_file_was_deleted_says_so(cbis_raw, tmp_path):
    import os
    import shutil

    from data_prep.cbis_ddsm import collect_cases

    raw = str(tmp_path / "cbis")
    shutil.copytree(cbis_raw, raw)
    cases, problems, _ = collect_cases(raw, progress=False)
    victim = next(c for c in cases if len(c.abnormalities) == 1)
    os.remove(victim.abnormalities[0].mask_path)  # the crop stays beside it, in the same series
    after, new_problems, _ = collect_cases(raw, progress=False)
    assert {c.scan_id for c in after} == {c.scan_id for c in cases} - {victim.scan_id}
    [problem] = [p for p in new_problems if p.item == victim.scan_id]
    assert "ROI mask not found (series " in problem.reason
    rows, columns = read_scan(victim.scan_path).pixels.shape
    assert problem.reason.endswith(f", the cropped lesion; no {rows}x{columns} mask)")


def test_cbis_unreadable_image_or_mask_is_one_line_naming_the_file(cbis_raw, tmp_path):
    import shutil

    from data_prep.cbis_ddsm import collect_cases

    raw = str(tmp_path / "cbis")
    shutil.copytree(cbis_raw, raw)
    cases, problems, _ = collect_cases(raw, progress=False)
    image_victim, mask_victim = [c for c in cases if len(c.abnormalities) == 1][:2]
    for path in (image_victim.scan_path, mask_victim.abnormalities[0].mask_path):
        open(path, "wb").write(b"\0" * 128 + b"DICM" + b"\xff" * 40)  # a header without the file's UIDs
    after, new_problems, _ = collect_cases(raw, progress=False)
    assert {c.scan_id for c in after} == {c.scan_id for c in cases} - {image_victim.scan_id, mask_victim.scan_id}
    added = [p for p in new_problems if p not in problems]
    assert len(added) == 2  # one each: not the file's own line beside its case's
    image_line, mask_line = sorted(added, key=lambda p: p.item != image_victim.scan_id)
    assert image_line.file == image_victim.scan_path and image_line.item == image_victim.scan_id
    assert image_line.reason.startswith("DICOM header lacks series UID or image size")
    assert "(the full mammogram of " in image_line.reason
    assert mask_line.item == mask_victim.scan_id
    assert f"ROI mask {mask_victim.abnormalities[0].mask_path} cannot be read (DICOM header lacks" in mask_line.reason


def test_which_headers_are_mammograms_for_prep_and_predict(tmp_path):
    from PIL import Image

    from mammo_seg.io import not_a_mammogram

    ct = "is not a mammogram (Modality CT)"
    headers = {  # file: (write_dicom's header, BodyPartExamined, what the one rule says)
        "mg_sc.dcm": ({}, "BREAST", None),  # CBIS-DDSM's: Modality MG under the Secondary Capture SOP class
        "ot_breast.dcm": ({"modality": "OT"}, "BREAST", None),
        "ot_view.dcm": ({"modality": "OT", "view": "MLO"}, None, None),
        "dx_view.dcm": ({"modality": "DX", "view": "CC"}, None, None),
        "ot_bare.dcm": ({"modality": "OT"}, None, "is not a mammogram (Modality OT)"),
        "ct.dcm": ({"modality": "CT", "sop_class": "1.2.840.10008.5.1.4.1.1.2"}, None, ct),
        "ct_breast.dcm": ({"modality": "CT"}, "BREAST", ct),  # a breast CT is still no mammogram
    }
    for name, (kwargs, body_part, expected) in headers.items():
        path = str(tmp_path / name)
        write_dicom(path, PIXELS, **kwargs)
        ds = pydicom.dcmread(path)
        ds.BodyPartExamined = body_part or ""
        ds.save_as(path)
        assert not_a_mammogram(read_scan(path).meta) == expected, name
    png = tmp_path / "scan.png"
    Image.fromarray((PIXELS // 16).astype(np.uint8)).save(png)
    assert not_a_mammogram(read_scan(str(png)).meta) is None  # no Modality at all: a PGM, PNG or TIFF
