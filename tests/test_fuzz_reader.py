"""A bounded fuzz test of the scan reader: seeded mutations of a small DICOM either read or raise MammoError."""

import warnings

import numpy as np

from conftest import write_dicom
from mammo_seg.errors import MammoError
from mammo_seg.io import read_scan

MUTATIONS = 300


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One of: flip bytes, truncate, duplicate a slice, zero a run, or overwrite a run with random bytes."""
    buf = bytearray(data)
    kind = rng.integers(5)
    if kind == 0:
        for i in rng.integers(0, len(buf), size=rng.integers(1, 9)):
            buf[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        del buf[int(rng.integers(1, len(buf))):]
    elif kind == 2:
        a = int(rng.integers(0, len(buf) - 1))
        b = int(rng.integers(a + 1, min(len(buf), a + 64) + 1))
        buf[a:a] = buf[a:b]
    elif kind == 3:
        a = int(rng.integers(0, len(buf)))
        buf[a:a + int(rng.integers(1, 32))] = bytes(min(len(buf) - a, 32))[:len(buf[a:a + 32])]
    else:
        a = int(rng.integers(0, len(buf)))
        n = int(rng.integers(1, 16))
        buf[a:a + n] = rng.integers(0, 256, size=len(buf[a:a + n]), dtype=np.uint8).tobytes()
    return bytes(buf)


def test_mutated_dicoms_read_or_raise_only_mammo_error(tmp_path):
    source = tmp_path / "seed.dcm"
    pixels = np.random.default_rng(0).integers(0, 4096, (24, 16), dtype=np.uint16)
    write_dicom(str(source), pixels, laterality="L", view="CC", spacing_mm=0.1)
    original = source.read_bytes()
    rng = np.random.default_rng(2026)
    outcomes = {"read": 0, "refused": 0}
    path = tmp_path / "mutant.dcm"
    for i in range(MUTATIONS):
        path.write_bytes(mutate(original, rng))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scan = read_scan(str(path))
        except MammoError as e:
            assert e.reason and "\n" not in e.reason, (i, e.reason)
            outcomes["refused"] += 1
        else:  # whatever was read is a valid scan: finite, in [0, 1], a 2-D image
            assert scan.pixels.ndim == 2 and np.isfinite(scan.pixels).all(), i
            assert scan.pixels.min() >= 0 and scan.pixels.max() <= 1, i
            outcomes["read"] += 1
    assert outcomes["read"] and outcomes["refused"]  # the mutations reach both outcomes
