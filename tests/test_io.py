"""The one scan reader: DICOM LUTs and photometry, plain images, masks, and bad files."""

import numpy as np
import pydicom
import pytest
from PIL import Image

from conftest import write_dicom
from mammo_seg.errors import MammoError
from mammo_seg.io import binary_mask, read_mask, read_scan
from mammo_seg.io.image import write_pgm

STORED = np.array([[0, 100], [200, 300]], dtype=np.uint16)


def test_normalise_scales_in_float32_steps_and_leaves_its_input_alone():
    from mammo_seg.io.scan import normalise

    values = np.array([[10, 20, 1010], [510, 10, 1009]], np.uint16)
    out, stats = normalise(values, "x")
    expected = np.array([[0, 10, 1000], [500, 0, 999]], np.float32) * np.float32(1 / 1000)  # (v - min) in steps
    assert out.dtype == np.float32 and np.array_equal(out, np.minimum(expected, 1))
    assert out[0, 2] == 1.0 and out[1, 1] == 0.0 and 0.998 < out[1, 2] < 1.0
    assert stats == {"raw_min": 10.0, "raw_max": 1010.0, "raw_mean": 2569 / 6}
    assert np.array_equal(normalise(values, "x", invert=True)[0], np.float32(1) - out)
    floats = values.astype(np.float32)  # scaled in place on a copy: the caller's array is not touched
    assert np.array_equal(normalise(floats, "x")[0], out) and np.array_equal(floats, values)


def test_dicom_modality_lut_then_min_max(tmp_path):
    path = str(tmp_path / "a.dcm")
    write_dicom(path, STORED, rescale=(2.0, -100.0), laterality="L", view="MLO", spacing_mm=0.07)
    scan = read_scan(path)
    # stored 0..300 → modality values -100, 100, 300, 500 → [0, 1/3, 2/3, 1]
    np.testing.assert_allclose(scan.pixels, [[0, 1 / 3], [2 / 3, 1]], atol=1e-6)
    assert scan.pixels.dtype == np.float32
    m = scan.meta
    assert (m.raw_min, m.raw_max, m.raw_mean) == (-100.0, 500.0, 200.0)
    assert (m.laterality, m.view, m.modality, m.spacing_mm) == ("L", "MLO", "MG", (0.07, 0.07))
    assert not any("uid" in name.lower() for name in vars(m))  # no DICOM UID is carried with the scan


def test_monochrome1_is_inverted_so_that_bright_is_dense(tmp_path):
    path = str(tmp_path / "m1.dcm")
    write_dicom(path, STORED, photometric="MONOCHROME1")
    np.testing.assert_allclose(read_scan(path).pixels, [[1, 2 / 3], [1 / 3, 0]], atol=1e-6)


def test_pixel_padding_value_becomes_darkest_tissue(tmp_path):
    path = str(tmp_path / "pad.dcm")
    ds = write_dicom(path, np.array([[65535, 1000], [2000, 3000]], dtype=np.uint16))
    ds.PixelPaddingValue = 65535
    ds.save_as(path, enforce_file_format=True)
    np.testing.assert_allclose(read_scan(path).pixels, [[0, 0], [0.5, 1]], atol=1e-6)


def test_16_bit_values_keep_their_precision(tmp_path):
    path = str(tmp_path / "fine.dcm")
    values = np.array([[0, 1], [2, 65535]], dtype=np.uint16)
    write_dicom(path, values)
    np.testing.assert_allclose(read_scan(path).pixels.ravel(), values.ravel() / 65535, rtol=0, atol=1e-7)


@pytest.mark.parametrize("syntax", ["JPEG2000Lossless", "RLELossless"])
def test_compressed_dicom_decodes_to_the_same_scan(tmp_path, rng, syntax):
    pixels = rng.integers(0, 4096, (64, 48), dtype=np.uint16)
    plain, packed = str(tmp_path / "plain.dcm"), str(tmp_path / "packed.dcm")
    ds = write_dicom(plain, pixels)
    ds.compress(getattr(pydicom.uid, syntax))
    ds.save_as(packed, enforce_file_format=True)
    assert pydicom.dcmread(packed).file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax)
    np.testing.assert_array_equal(read_scan(packed).pixels, read_scan(plain).pixels)


@pytest.mark.parametrize("dtype, shape", [(np.uint16, (37, 53)), (np.uint8, (40, 31))])
def test_rle_decodes_through_the_fast_plugin_to_pydicoms_own_values(tmp_path, rng, dtype, shape):
    """pylibjpeg-rle (a dependency) decodes RLE first, as pydicom prefers it: the values pydicom's own decoder
    gives, on odd widths (segments padded to even lengths) and both sample sizes."""
    from pydicom.pixels import pixel_array
    from pydicom.pixels.decoders import RLELosslessDecoder

    assert {"pylibjpeg", "pydicom"} <= set(RLELosslessDecoder.available_plugins)
    pixels = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    pixels[:5] = 7  # runs as well as literals
    path = str(tmp_path / "rle.dcm")
    ds = write_dicom(str(tmp_path / "plain.dcm"), pixels)
    ds.compress(pydicom.uid.RLELossless, encoding_plugin="pydicom")
    ds.save_as(path, enforce_file_format=True)
    fast, own = (pixel_array(path, decoding_plugin=name) for name in ("pylibjpeg", "pydicom"))
    assert fast.dtype == own.dtype == dtype
    np.testing.assert_array_equal(fast, pixels)
    np.testing.assert_array_equal(own, pixels)
    np.testing.assert_array_equal(read_scan(path).pixels, read_scan(str(tmp_path / "plain.dcm")).pixels)


def test_the_dataset_read_with_a_scan_holds_no_decoded_copy_of_its_pixels(tmp_path, rng):
    """Predict copies the dataset for its SEG and sends it to writer processes: only the file's bytes travel."""
    import pickle

    from mammo_seg.io import read_scan_with_dataset

    pixels = rng.integers(0, 4096, (300, 200), dtype=np.uint16)
    write_dicom(str(tmp_path / "a.dcm"), pixels)
    scan, dataset = read_scan_with_dataset(str(tmp_path / "a.dcm"))
    assert len(dataset.PixelData) == pixels.nbytes
    assert pixels.nbytes < len(pickle.dumps(dataset)) < pixels.nbytes + 20_000
    np.testing.assert_array_equal(dataset.pixel_array, pixels)  # still decodable on demand


def _one_line_error(call, *needles):
    with pytest.raises(MammoError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    return message


def test_truncated_dicom_names_file_and_reason(tmp_path, rng):
    path = str(tmp_path / "cut.dcm")
    write_dicom(path, rng.integers(0, 4096, (64, 64), dtype=np.uint16))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    _one_line_error(lambda: read_scan(path), path, "pixel data")


def test_garbage_with_dcm_suffix_is_not_dicom(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"this is not a DICOM file at all" * 10)
    _one_line_error(lambda: read_scan(str(path)), str(path), "not a DICOM file")


def test_dicom_without_pixel_data_is_refused(tmp_path):
    path = str(tmp_path / "sr.dcm")
    ds = write_dicom(path, STORED)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    _one_line_error(lambda: read_scan(path), path, "no pixel data")


def test_missing_and_constant_files(tmp_path):
    _one_line_error(lambda: read_scan(str(tmp_path / "nope.dcm")), "nope.dcm", "file not found")
    path = str(tmp_path / "flat.dcm")
    write_dicom(path, np.full((4, 4), 7, dtype=np.uint16))
    _one_line_error(lambda: read_scan(path), path, "constant")


def test_pgm_and_16_bit_png(tmp_path):
    pgm = str(tmp_path / "mdb001.pgm")
    write_pgm(pgm, np.array([[0, 51], [102, 255]], dtype=np.uint8))
    assert open(pgm, "rb").read(2) == b"P5"
    scan = read_scan(pgm)
    np.testing.assert_allclose(scan.pixels, [[0, 0.2], [0.4, 1]], atol=1e-6)
    assert scan.meta.format == "image" and scan.meta.spacing_mm is None
    png = str(tmp_path / "x.png")
    Image.fromarray(np.array([[0, 1000], [3000, 4000]], dtype=np.uint16)).save(png)
    np.testing.assert_allclose(read_scan(png).pixels, [[0, 0.25], [0.75, 1]], atol=1e-6)


def test_masks_are_binary_or_refused(tmp_path):
    path = str(tmp_path / "mask.dcm")
    write_dicom(path, np.array([[0, 255], [255, 0]], dtype=np.uint8))
    np.testing.assert_array_equal(read_mask(path), [[False, True], [True, False]])
    grey = str(tmp_path / "grey.dcm")
    write_dicom(grey, np.array([[0, 128], [255, 0]], dtype=np.uint8))
    _one_line_error(lambda: read_mask(grey), grey, "not binary")


def _binary_mask_by_unique(values, where):
    """``binary_mask`` as it was written first, with ``np.unique``: the reference of the two-pass check."""
    levels = np.unique(values)
    if levels.size > 2:
        raise MammoError(where, f"mask is not binary ({levels.size} distinct values)")
    if levels.size == 2 and levels[0] != 0:
        raise MammoError(where, f"mask is not binary (values {levels[0]} and {levels[1]}, no zero)")
    return values > 0


@pytest.mark.parametrize("values", [
    np.array([[0, 255], [255, 0]], np.uint8), np.array([[0, 1], [1, 1]], np.uint16), np.zeros((3, 2), np.uint8),
    np.full((2, 2), 255, np.uint8), np.array([[0, 128], [255, 0]], np.uint8), np.array([[3, 7], [7, 3]], np.uint8),
    np.array([[-1, 0], [0, -1]], np.int16), np.array([[0.0, np.nan], [1.0, 0.0]]), np.array([[True, False]]),
    np.zeros((0, 4), np.uint8), np.array([[0, 9, 9, 0, 5]], np.int32)])
def test_binary_mask_decides_as_np_unique_does(values):
    def outcome(check):
        try:
            return check(values, "m.png")
        except MammoError as e:
            return str(e)

    expected, got = outcome(_binary_mask_by_unique), outcome(binary_mask)
    if isinstance(expected, str):
        assert got == expected
    else:
        np.testing.assert_array_equal(got, expected)


def test_pixel_padding_is_darkest_after_monochrome1_inversion(tmp_path):
    path = str(tmp_path / "pad1.dcm")
    ds = write_dicom(path, np.array([[65535, 1000], [2000, 3000]], dtype=np.uint16), photometric="MONOCHROME1")
    ds.PixelPaddingValue = 65535
    ds.save_as(path, enforce_file_format=True)
    # stored 1000 is the brightest once inverted; the padding is as dark as stored 3000
    np.testing.assert_allclose(read_scan(path).pixels, [[0, 1], [0.5, 0]], atol=1e-6)


def _patched(path, old: bytes, new: bytes):
    """Rewrite bytes of a written file in place (same length): values pydicom would not write."""
    data = open(path, "rb").read()
    assert data.count(old) == 1 and len(old) == len(new)
    open(path, "wb").write(data.replace(old, new))


def test_header_size_is_checked_before_decoding(tmp_path):
    path = str(tmp_path / "big.dcm")
    write_dicom(path, STORED)
    with pytest.raises(MammoError) as caught:
        read_scan(path, max_pixels=3)
    assert caught.value.reason == "image of 2 x 2 = 4 pixels exceeds the limit of 3 pixels"
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 10000, 8000  # 80 Mpx claimed, 8 bytes stored
    ds.save_as(path)
    with pytest.raises(MammoError, match="^.*: image of 10000 x 8000 = 80000000 pixels exceeds the limit of "
                                         "60000000 pixels$"):
        read_scan(path)


def test_rows_smaller_than_the_pixel_data_is_an_error(tmp_path):
    path = str(tmp_path / "rows.dcm")
    ds = write_dicom(path, np.arange(16, dtype=np.uint16).reshape(4, 4))
    ds.Rows = 2
    ds.save_as(path)
    with pytest.raises(MammoError) as caught:
        read_scan(path)
    assert caught.value.reason == ("pixel data holds 32 bytes, more than the 16 that 2 rows x 4 columns need "
                                   "(Rows or Columns is wrong)")


@pytest.mark.parametrize("old,new,reason", [
    (b"(\x00\x08\x00IS\x02\x001 ", b"(\x00\x08\x00IS\x02\x00x ", "NumberOfFrames is not a number"),
    (b"(\x00S\x10DS\x02\x002 ", b"(\x00S\x10DS\x02\x00? ", "RescaleSlope is not a number")])
def test_non_numeric_header_values_are_refused(tmp_path, old, new, reason):
    path = str(tmp_path / "bad.dcm")
    ds = write_dicom(path, STORED, rescale=(2.0, 0.0))
    ds.NumberOfFrames = 1
    ds.save_as(path, enforce_file_format=True)
    _patched(path, old, new)
    with pytest.raises(MammoError) as caught:
        read_scan(path)
    assert caught.value.reason == reason


def test_deflated_dicom_that_inflates_too_far_is_refused(tmp_path):
    path = str(tmp_path / "deflated.dcm")
    ds = write_dicom(path, np.zeros((1024, 1024), np.uint16) + np.eye(1024, dtype=np.uint16))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    assert read_scan(path).pixels.shape == (1024, 1024)  # within the default limit it reads
    with pytest.raises(MammoError) as caught:
        read_scan(path, max_pixels=1000)  # 2 MiB inflated from a few kB on disk
    assert caught.value.reason == "deflated DICOM inflates beyond 1052576 bytes (decompression bomb)"


def test_image_headers_claiming_too_many_pixels_are_refused(tmp_path):
    import struct
    import zlib

    pgm = tmp_path / "huge.pgm"
    pgm.write_bytes(b"P5\n20000 10000\n255\n" + bytes(100))  # 200 Mpx claimed: Pillow's own bomb limit
    with pytest.raises(MammoError) as caught:
        read_scan(str(pgm))
    assert caught.value.reason == "image header claims too many pixels (decompression bomb)"
    png = str(tmp_path / "big.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(png)
    data = bytearray(open(png, "rb").read())
    ihdr = struct.pack(">II", 10000, 7000) + bytes(data[24:29])  # 70 Mpx claimed: above our limit only
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    open(png, "wb").write(bytes(data))
    with pytest.raises(MammoError) as caught:
        read_scan(png)
    assert caught.value.reason == "image of 7000 x 10000 = 70000000 pixels exceeds the limit of 60000000 pixels"
