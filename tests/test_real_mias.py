"""Real mini-MIAS scans and the real Info.txt (../shared/data/mias_real_dev.tar.xz, unpacked at test time).

The scans are under the MIAS licence (research use; Suckling et al. 1994): they are read from the shared
archive into a temporary folder and never written into the repository.
"""

import os
import tarfile

import keras
import pytest

from data_prep import mias
from data_prep.prepare import prepare
from mammo_seg.data.features import iterate_records
from mammo_seg.data.prep_output import Manifest
from mammo_seg.data.resolution import Resolution
from mammo_seg.inference.predict import PredictOptions, predict
from mammo_seg.models.fcn import MammoFCN

ARCHIVE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mias_real_dev.tar.xz")
SCANS = ("mdb001", "mdb002", "mdb003", "mdb004")  # one woman with a mass in each breast, one normal woman

pytestmark = pytest.mark.skipif(not os.path.isfile(ARCHIVE), reason="the shared MIAS dev archive is not beside the repo")


@pytest.fixture(scope="module")
def real_mias(tmp_path_factory):
    """The real Info.txt and four real scans, with an Info.txt of the prose header and those four scans' rows."""
    out = tmp_path_factory.mktemp("mias_real")
    wanted = {f"mias_real_dev/{name}.pgm" for name in SCANS} | {"mias_real_dev/Info.txt"}
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(out, members=[m for m in tar.getmembers() if m.name in wanted], filter="data")
    full_info = out / "Info_full.txt"
    os.replace(out / "mias_real_dev" / "Info.txt", full_info)
    lines = full_info.read_text(encoding="ascii", errors="replace").splitlines()
    kept = [line for line in lines if not line.startswith("mdb") or line.split()[0] in SCANS]
    (out / "mias_real_dev" / "Info.txt").write_text("\n".join(kept) + "\n")
    return str(out / "mias_real_dev"), str(full_info)


def test_the_real_info_txt_with_its_prose_header_parses_without_problems(real_mias):
    _, info = real_mias
    rows, problems = mias.parse_info(info)
    table_lines = sum(1 for line in open(info, encoding="ascii", errors="replace") if line.startswith("mdb"))
    assert problems == [] and len(rows) == table_lines == 220  # 216 scans, some with several abnormalities
    assert (rows[0].ref, rows[0].cls, rows[0].x, rows[0].y, rows[0].radius) == ("mdb001", "CIRC", 535, 425, 197)


def test_a_real_scan_goes_through_prep_and_predict_at_the_nominal_200_um(real_mias, tmp_path):
    raw, _ = real_mias
    out = str(tmp_path / "prep")
    summary = prepare("mias", raw, out, tiles=(), full_scans=True, resolution=Resolution(scale=0.125), progress=False)
    assert summary.scans == 4 and summary.problems == []
    manifest = Manifest.load(os.path.join(out, "full")).content
    assert manifest["resolution"]["nominal_spacing_mm"] == 0.2 and manifest["resolution"]["spacing_mm"] == 0.4
    shapes = {rec["scan_id"].decode(): rec["image"].shape[:2] for split in manifest["splits"].values()
              for name in split["shards"] for rec in iterate_records(os.path.join(out, "full", name))}
    assert shapes == {name: (512, 512) for name in SCANS}  # 1024² at 200 µm → 0.4 mm training pixels
    keras.utils.set_random_seed(0)
    model = str(tmp_path / "model.keras")
    MammoFCN(width=0.125, resolution=manifest["resolution"]).save(model)
    result = predict(model, os.path.join(raw, "mdb001.pgm"), str(tmp_path / "pred"),
                     PredictOptions(formats=("mask", "json")), progress=False)
    (record,) = result["scans"]
    assert record["status"] == "ok" and record["shape"] == [1024, 1024]
    assert record["model_input_shape"] == [512, 512] and record["spacing_source"] == "training data nominal"
    assert record["lesion_area_mm2"] == pytest.approx(record["lesion_area_px"] * 0.04)
