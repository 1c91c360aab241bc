"""One line per problem: file names and messages are printed through one escaping rule."""

import os

from mammo_seg.errors import MammoError, printable


def test_printable_escapes_control_characters_and_undecodable_bytes():
    assert printable("scan 1.dcm") == "scan 1.dcm"
    assert printable("a\nb\tc\x01") == "a\\nb\\tc\\x01"
    assert printable(os.fsdecode(b"caf\xe9.dcm")) == "caf\\xe9.dcm"
    assert printable(3) == "3"


def test_mammo_error_is_one_line():
    assert str(MammoError("f.dcm", "bad\nvalue")) == "f.dcm: bad value"
