"""The prep layout is read through one object: which folder, which shards, which kind."""

import json
import os

import pytest

from mammo_seg.data.prep_output import FULL, Manifest, PrepOutput
from mammo_seg.errors import MammoError


def write_manifest(folder, content):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(content, f)


def test_any_folder_of_a_prep_output_leads_to_its_root_and_its_whole_scans(tmp_path):
    out = str(tmp_path)
    write_manifest(os.path.join(out, "320"), {"kind": "tiles", "tile_size": 320})
    write_manifest(os.path.join(out, FULL), {"kind": "whole_scans", "tile_size": None, "splits": {
        "val": {"shards": ["val-00000-of-00001.tfrecord"], "records": 3, "positive_pixels": 7}}})
    for given in (out, os.path.join(out, "320"), os.path.join(out, FULL)):
        assert PrepOutput.containing(given).root == os.path.normpath(out)
    manifest = PrepOutput(out).whole_scans()
    assert manifest.whole_scans and manifest.tile_size is None and manifest.has_split("val")
    assert manifest.shard_files("val") == [os.path.join(out, FULL, "val-00000-of-00001.tfrecord")]
    assert (manifest.records("val"), manifest.records("test"), manifest.positive_pixels("val")) == (3, 0, 7)
    with pytest.raises(MammoError, match="no whole scans of the 'test' split"):
        PrepOutput(out).whole_scan_files("test")


def test_a_folder_without_whole_scans_or_manifest_says_so(tmp_path):
    write_manifest(os.path.join(tmp_path, FULL), {"kind": "tiles"})
    with pytest.raises(MammoError, match="--full-scans"):
        PrepOutput(str(tmp_path)).whole_scans()
    with pytest.raises(MammoError, match="no manifest.json"):
        Manifest.load(str(tmp_path / "320"))
