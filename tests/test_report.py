"""report.html: its content checked exactly on a hand-made evaluation, and rendered in headless Chromium."""

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from data_prep.ground_truth import ground_truth
from mammo_seg.evaluate import evaluate
from mammo_seg.report import COLOURS


@pytest.fixture(scope="module")
def evaluated(mias_raw, tmp_path_factory):
    """An evaluation of three MIAS phantom scans: every lesion found on one, all missed on another,
    one false positive (10 x 10 px at 0.2 mm: 4 mm², p 0.8) on a lesion-free scan; and a failed one."""
    from conftest import write_phantom_predictions
    from mammo_seg.data.cases import lesion_masks

    tmp = tmp_path_factory.mktemp("report")
    folder = tmp / "pred"
    _, (found, missed, normal, _) = write_phantom_predictions(mias_raw, str(folder))
    result = evaluate(str(folder), ground_truth(mias_raw), str(tmp / "eval" / "evaluation.json"))
    n_found = len(lesion_masks(found, (1024, 1024)))
    n_missed = len(lesion_masks(missed, (1024, 1024)))
    return tmp / "eval" / "report.html", result, {"found": found.scan_id, "missed": missed.scan_id,
                                                  "normal": normal.scan_id}, (n_found, n_missed)


class Page(HTMLParser):
    """The report's images (by alt), table rows (cell texts) and crop figures (class, caption) by scan."""

    def __init__(self):
        super().__init__()
        self.images, self.rows, self.crops, self.scan, self.tags = {}, [], {}, None, []
        self._row = self._cell = self._figure = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "img":
            self.images[attrs["alt"]] = attrs["src"]
        elif tag == "div" and attrs.get("class") == "scan":
            self.scan = attrs["id"][len("scan-"):]
            self.crops[self.scan] = []
        elif tag == "tr" and attrs.get("id", "").startswith("row-"):
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ""
        elif tag == "figure":
            self._figure = [attrs["class"], ""]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._figure is not None:
            self._figure[1] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "figure":
            self.crops[self.scan].append(tuple(self._figure))
            self._figure = None


def decode(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def has_colour(image: np.ndarray, kind: str) -> bool:
    return bool((image == COLOURS[kind]).all(axis=2).any())


def test_report_holds_the_froc_the_cases_and_every_scan_with_its_findings(evaluated):
    path, result, ids, (n_found, n_missed) = evaluated
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    assert all(src.startswith("data:image/png;base64,") for src in page.images.values())  # self-contained
    assert not [a for tag, a in page.tags if tag in ("script", "link", "img") and
                re.match(r"(https?|file):", a.get("src", a.get("href", "")))]
    assert decode(page.images["FROC curve"]).shape[:2] == (360, 550)
    # the table: worst first (errors = missed lesions + false positives), exact values
    header = ["prediction", "reference", "errors", "missed", "false pos.", "found", "lesions", "Dice", "IoU",
              "precision", "recall"]
    assert re.findall(r"<th>([^<]*)</th>", path.read_text()) == header
    rows = {row[0]: row for row in page.rows}
    assert [row[0] for row in page.rows] == [ids["missed"], ids["normal"], ids["found"]]
    assert rows[ids["found"]][2:9] == ["0", "0", "0", str(n_found), str(n_found), "1.000", "1.000"]
    assert rows[ids["missed"]][2:8] == [str(n_missed), str(n_missed), "0", "0", str(n_missed), "0.000"]
    assert rows[ids["normal"]][2:8] == ["1", "0", "1", "0", "0", "0.000"]  # a false positive: Dice 0
    assert rows[ids["normal"]][10] == "n/a"  # no reference lesion: recall undefined
    # the contact sheet: every evaluated scan, its findings in their colours, a labelled crop of each
    assert sorted(page.crops) == sorted(ids.values())
    assert page.crops[ids["normal"]] == [("fp", "1: p 0.80, 4.0 mm²")]
    assert [kind for kind, _ in page.crops[ids["missed"]]] == ["missed"] * n_missed
    assert {kind for kind, _ in page.crops[ids["found"]]} == {"tp"}
    assert all(re.fullmatch(r"\d+: p 0\.90, \d+\.\d mm²", label) for _, label in page.crops[ids["found"]])
    sheet = {name: decode(page.images[ids[name]]) for name in ids}
    assert sheet["normal"].shape == (342, 342, 3)  # 1024 px shrunk by 3, the smallest step to <= 420 px
    assert has_colour(sheet["normal"], "fp") and not has_colour(sheet["normal"], "tp")
    assert has_colour(sheet["missed"], "missed") and not has_colour(sheet["missed"], "fp")
    assert has_colour(sheet["found"], "tp") and has_colour(sheet["found"], "found")
    assert not has_colour(sheet["found"], "missed") and not has_colour(sheet["found"], "fp")
    for crops in page.crops.values():  # each crop 128 px, outlined in its finding's colour
        for kind, label in crops:
            crop = decode(page.images[label])
            assert max(crop.shape[:2]) == 128 and has_colour(crop, kind)


CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.widths = JSON.stringify(images.map(i => i.complete ? i.naturalWidth : 0));
  document.querySelectorAll("#cases th")[3].click();  // sort by missed lesions, ascending
  document.body.dataset.order = JSON.stringify(Array.from(document.querySelectorAll("#cases tbody tr"),
                                                          r => r.cells[0].textContent));
});
</script></body>"""


def test_report_renders_in_headless_chromium_with_every_image(evaluated, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    path, _, ids, _ = evaluated
    page = tmp_path / "checked.html"
    page.write_text(path.read_text(encoding="utf-8").replace("</body>", CHECK), encoding="utf-8")
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=180).stdout
    widths = json.loads(re.search(r'data-widths="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert len(widths) == path.read_text().count("<img") and min(widths) > 0  # every image decoded
    order = json.loads(re.search(r'data-order="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert order == [ids["normal"], ids["found"], ids["missed"]]  # the click sorted the table
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,1600", path.as_uri()],
                   capture_output=True, timeout=180)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (1600, 1200, 3) and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


def test_report_of_dicom_scans_without_probabilities_names_no_patient(cbis_raw, tmp_path):
    """Predictions with masks alone (no probability maps): detections unscored; nothing from the
    DICOM header (patient, study, UIDs) reaches the page, only the dataset ids."""
    import pydicom

    from data_prep.cbis_ddsm import collect_cases
    from mammo_seg.data.cases import load_case
    from mammo_seg.io import file_sha256

    cases = collect_cases(cbis_raw, progress=False)[0][:2]
    folder = tmp_path / "pred"
    folder.mkdir()
    records, headers = [], []
    for case in cases:
        truth = load_case(case)[1]
        Image.fromarray(truth.astype(np.uint8) * 255).save(folder / f"{case.scan_id}_mask.png")
        header = pydicom.dcmread(case.scan_path, stop_before_pixels=True)
        headers.append(header)
        records.append({"id": case.scan_id, "status": "ok", "sha256": file_sha256(case.scan_path),
                        "file_size": os.path.getsize(case.scan_path),
                        "spacing_mm": float(header.PixelSpacing[0]),
                        "source": os.path.relpath(case.scan_path, cbis_raw),
                        "outputs": {"mask": f"{case.scan_id}_mask.png"}})
    with open(folder / "summary.json", "w") as f:
        json.dump({"input": cbis_raw, "scans": records}, f)
    evaluate(str(folder), ground_truth(cbis_raw), str(tmp_path / "evaluation.json"))
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    assert sorted(page.crops) == sorted(case.scan_id for case in cases)
    for case in cases:
        assert page.crops[case.scan_id] and all(kind == "tp" and re.fullmatch(r"\d+: \d+\.\d mm²", label)
                                                for kind, label in page.crops[case.scan_id])
        assert decode(page.images[case.scan_id]).std() > 0  # the scan's pixels, read from its file
    for header in headers:
        for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID",
                        "SOPInstanceUID"):
            assert str(header.get(keyword)) not in text, keyword


def test_prediction_report_shows_every_detection_without_a_reference(evaluated, tmp_path):
    from mammo_seg.report import write_prediction_report

    _, result, ids, _ = evaluated
    path = write_prediction_report(str(tmp_path / "report.html"), result["predictions"])
    page = Page()
    page.feed(open(path, encoding="utf-8").read())
    assert sorted(page.crops) == sorted(ids.values()) and len(page.rows) == 3
    assert page.crops[ids["normal"]] == [("detection", "1: p 0.80, 4.0 mm²")]  # the false positive, unjudged
    assert page.crops[ids["missed"]] == []
    assert page.crops[ids["found"]] and {kind for kind, _ in page.crops[ids["found"]]} == {"detection"}
    for name in ids:
        image = decode(page.images[ids[name]])
        assert has_colour(image, "detection") == (name != "missed")
        assert not any(has_colour(image, kind) for kind in ("tp", "fp", "found", "missed"))


def test_predict_report_needs_probabilities_and_says_so_before_any_work(tmp_path, capsys):
    from mammo_seg.cli import main

    code = main(["predict", "-m", str(tmp_path / "absent.keras"), "-i", str(tmp_path),
                 "-o", str(tmp_path / "out"), "--format", "mask,json", "--report"])
    assert code == 2 and not os.path.exists(tmp_path / "out")
    assert capsys.readouterr().err.strip().splitlines() == [
        "mammo predict: error: --report: needs the prob format: the report draws the detections from the "
        "probabilities"]


def test_mammo_evaluate_says_where_the_report_is(evaluated, mias_raw, tmp_path, capsys):
    from mammo_seg.cli import main

    _, result, _, _ = evaluated
    assert main(["evaluate", "-p", result["predictions"], "-g", mias_raw, "-o", str(tmp_path / "e.json")]) == 0
    assert f"report {tmp_path / 'report.html'}" in capsys.readouterr().out.splitlines()
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_shrinking_a_lesion_box_equals_shrinking_the_whole_mask():
    from skimage.measure import block_reduce

    from mammo_seg.report import _shrink

    for shape, box, step in [((10, 7), (slice(3, 5), slice(6, 7)), 3), ((9, 9), (slice(0, 9), slice(0, 1)), 2),
                             ((5, 8), (slice(4, 5), slice(2, 6)), 1), ((6, 6), (slice(0, 0), slice(0, 0)), 4)]:
        mask = np.zeros(shape, bool)
        mask[box] = True
        whole = block_reduce(mask, (step, step), np.max).astype(bool)
        np.testing.assert_array_equal(_shrink(mask, step, whole.shape), whole)
