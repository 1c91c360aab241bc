"""Files are replaced whole: the new content or the old one, never a mixture or a stray temporary."""

import os

import pytest

from mammo_seg import atomic


def test_json_and_text_formats(tmp_path):
    path = str(tmp_path / "a.json")
    assert atomic.write_json(path, {"b": 1, "a": [1, 2]}) == path
    assert open(path).read() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    atomic.write_json(path, {"b": 1, "a": 2}, indent=None, sort_keys=False, final_newline=False)
    assert open(path).read() == '{"b": 1, "a": 2}'
    atomic.write_text(path, "é\n")
    assert open(path, "rb").read() == "é\n".encode()
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "a.txt")
    atomic.write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic.replacing(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed")
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_temporaries_go_to_the_given_folder(tmp_path):
    path = str(tmp_path / "out" / "a.bin")
    os.makedirs(os.path.dirname(path))
    temporary = atomic.temporary_path(path, str(tmp_path / "tmp"))
    assert os.path.dirname(temporary) == str(tmp_path / "tmp") and temporary.endswith("-a.bin")
    os.remove(temporary)
    atomic.write_bytes(path, b"x", str(tmp_path / "tmp"))
    assert open(path, "rb").read() == b"x" and os.listdir(tmp_path / "tmp") == []
