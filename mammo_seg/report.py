"""``report.html``: one self-contained page a person reads after ``mammo evaluate``.

The page holds, with every picture inline (base64 PNG, nothing fetched):

* the FROC curve (lesion sensitivity against false positives per image) and the operating point;
* a table with one row per case (Dice, IoU, precision, recall, lesions found, missed and false
  positives), sorted worst first and sortable by any column (a few lines of inline JavaScript);
* a contact sheet: every scan small, with the detections at predict's operating point outlined and
  numbered (probability, area in mm²) and the reference lesions outlined, in distinct colours:
  detections that hit a lesion (:data:`COLOURS` ``tp``), false positives (``fp``), reference lesions
  found (``found``) and missed (``missed``); below each scan, a crop of every detection and missed lesion.

Detections and hits follow :mod:`mammo_seg.detection` (connected components of probability ≥ the
threshold with at least the minimum area; a hit when the maximum-probability pixel lies inside a
reference lesion). The pictures carry the scan's pixels and the dataset ids only: nothing from the
DICOM header (no patient or study attribute) is drawn or written.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mammo_seg import atomic
from mammo_seg.detection import Detection, find_detections, min_area_px

COLOURS = {"tp": (40, 220, 40), "fp": (255, 40, 40), "found": (0, 190, 255), "missed": (255, 170, 0),
           "detection": (255, 60, 220)}  # the last: a detection where no reference is known (predict's page)
DETECTIONS = ("tp", "fp", "detection")  # the kinds of finding that are detections (numbered)
THUMBNAIL_SIDE = 420  # px, the longer side of a scan on the contact sheet
CROP_SIDE = 128  # px, a lesion crop as shown
CROP_MARGIN = 0.5  # of the lesion's extent, on each side
MIN_VISIBLE = 8  # px: a finding smaller than this on the contact sheet gets a ring of this radius


def report_path(evaluation_path: str) -> str:
    """Where ``mammo evaluate`` writes the page: ``report.html`` beside its JSON output."""
    return os.path.join(os.path.dirname(os.path.abspath(evaluation_path)), "report.html")


@dataclass
class Finding:
    """A detection or a reference lesion as the report shows it."""

    kind: str  # "tp", "fp" (detections), "found", "missed" (reference lesions)
    mask: np.ndarray  # bool, on the scan's reference grid
    label: str  # e.g. "1: p 0.93, 12.5 mm²" or "missed mass"


def _png_data(array: np.ndarray) -> str:
    """A ``data:`` URI of ``array`` (grey or RGB uint8) as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _grey(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as uint8 RGB, contrast from the 0.5 and 99.5 percentiles (as predict's overlays)."""
    lo, hi = np.percentile(pixels, [0.5, 99.5]) if pixels.size else (0.0, 1.0)
    grey = (np.clip((pixels - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _outline(mask: np.ndarray, outside: bool = False) -> np.ndarray:
    """A 2 px outline of ``mask``: its own border pixels, or (``outside``) the pixels around it, so that
    a reference lesion's outline stays visible around a detection that covers it exactly."""
    from skimage.morphology import dilation, erosion, footprint_rectangle

    square = footprint_rectangle((5, 5))
    return (dilation(mask, square) & ~mask) if outside else (mask & ~erosion(mask, square))


def _shrink(mask: np.ndarray, step: int, shape: tuple) -> np.ndarray:
    """``mask`` reduced by ``step`` to ``shape`` (a block is True when any of its pixels is); only the
    box around its pixels is reduced (a lesion is small, a scan is not)."""
    from skimage.measure import block_reduce

    small = np.zeros(shape, bool)
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size:
        r0, c0 = rows[0] // step * step, columns[0] // step * step
        block = block_reduce(mask[r0:rows[-1] + 1, c0:columns[-1] + 1], (step, step), np.max).astype(bool)
        top, left = r0 // step, c0 // step
        block = block[:shape[0] - top, :shape[1] - left]
        small[top:top + block.shape[0], left:left + block.shape[1]] = block
    return small


def _font(size: int):
    return ImageFont.load_default(size=size)


def findings(probability: np.ndarray | None, lesions: list, kinds: list, threshold: float, min_area: int,
             pixel_area_mm2: float, scored: bool = True) -> list[Finding]:
    """The numbered detections (best first, as :func:`mammo_seg.detection.find_detections`) and the
    reference lesions, each with its kind and label (``scored``: ``probability`` is one, not a mask)."""
    from skimage.measure import label

    detections: list[Detection] = []
    components = None
    if probability is not None:
        detections = find_detections(probability, threshold, min_area)
        components = label(probability >= threshold, connectivity=2)
    found = [False] * len(lesions)
    result = []
    for number, detection in enumerate(detections, 1):
        hits = [i for i, lesion in enumerate(lesions) if lesion[detection.peak]]
        for i in hits:
            found[i] = True
        area = (f"{detection.area_px * pixel_area_mm2:.1f} mm²" if math.isfinite(pixel_area_mm2)
                else f"{detection.area_px} px")
        text = f"{number}: p {detection.score:.2f}, {area}" if scored else f"{number}: {area}"
        result.append(Finding("tp" if hits else "fp", components == components[detection.peak], text))
    for lesion, kind, hit in zip(lesions, kinds, found):
        result.append(Finding("found" if hit else "missed", lesion, f"{'found' if hit else 'missed'} {kind}"))
    return result


def contact_image(pixels: np.ndarray, shown: list[Finding]) -> np.ndarray:
    """The scan (at most :data:`THUMBNAIL_SIDE` a side) with every finding outlined in its colour (a
    small one ringed as well) and every detection's number written beside it."""
    step = max(1, math.ceil(max(pixels.shape) / THUMBNAIL_SIDE))
    rgb = _grey(pixels[::step, ::step])
    h, w = rgb.shape[:2]
    small = [_shrink(finding.mask, step, (h, w)) for finding in shown]
    for n in sorted(range(len(shown)), key=lambda n: shown[n].kind in DETECTIONS):  # detections over lesions
        rgb[_outline(small[n], outside=shown[n].kind in ("found", "missed"))] = COLOURS[shown[n].kind]
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    font = _font(13)
    for finding, reduced in zip(shown, small):
        rows, columns = np.nonzero(reduced)
        if rows.size == 0:
            continue
        if max(rows.max() - rows.min(), columns.max() - columns.min()) < MIN_VISIBLE:  # ringed to be seen
            r, c = (rows.min() + rows.max()) / 2, (columns.min() + columns.max()) / 2
            draw.ellipse((c - MIN_VISIBLE, r - MIN_VISIBLE, c + MIN_VISIBLE, r + MIN_VISIBLE),
                         outline=COLOURS[finding.kind], width=2)
        if finding.kind not in DETECTIONS:
            continue
        x, y = min(int(columns.max()) + MIN_VISIBLE // 2 + 3, w - 8), max(int(rows.min()) - MIN_VISIBLE, 0)
        number = finding.label.split(":")[0]
        draw.text((x, y), number, fill=COLOURS[finding.kind], font=font, stroke_width=2,
                  stroke_fill=(0, 0, 0))
    return np.asarray(image)


def crop_image(pixels: np.ndarray, finding: Finding) -> np.ndarray:
    """A square crop around ``finding`` (its extent plus :data:`CROP_MARGIN` each side), outlined,
    scaled to :data:`CROP_SIDE`."""
    rows, columns = np.nonzero(finding.mask)
    centre_r, centre_c = (rows.min() + rows.max()) / 2, (columns.min() + columns.max()) / 2
    half = max(rows.max() - rows.min(), columns.max() - columns.min(), 8) * (0.5 + CROP_MARGIN)
    r0, c0 = max(0, int(centre_r - half)), max(0, int(centre_c - half))
    r1, c1 = min(pixels.shape[0], int(centre_r + half) + 1), min(pixels.shape[1], int(centre_c + half) + 1)
    scale = CROP_SIDE / max(r1 - r0, c1 - c0)
    size = (max(1, round((c1 - c0) * scale)), max(1, round((r1 - r0) * scale)))
    grey = Image.fromarray(_grey(pixels[r0:r1, c0:c1]))
    rgb = np.asarray(grey.resize(size, Image.Resampling.BILINEAR)).copy()
    mask = np.asarray(Image.fromarray(finding.mask[r0:r1, c0:c1]).resize(size, Image.Resampling.NEAREST))
    rgb[_outline(mask, outside=finding.kind == "missed")] = COLOURS[finding.kind]  # at the size shown
    return rgb


def froc_plot(froc: dict, operating_point: dict | None) -> np.ndarray:
    """The FROC curve as an RGB array."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    points = [p for p in froc["points"] if p["sensitivity"] is not None and p["fp_per_image"] is not None]
    figure = Figure(figsize=(5.5, 3.6), dpi=100)
    axes = figure.add_subplot()
    axes.plot([p["fp_per_image"] for p in points], [p["sensitivity"] for p in points], "o-", markersize=3,
              label="FROC (thresholds 0.01 to 0.95)")
    if operating_point and operating_point.get("sensitivity") is not None:
        axes.plot([operating_point["fp_per_image"]], [operating_point["sensitivity"]], "s", color="crimson",
                  label=f"operating point (threshold {operating_point['threshold']:g})")
    axes.set_xlabel("false positives per image")
    axes.set_ylabel("lesion sensitivity")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return np.asarray(Image.open(buffer).convert("RGB"))


SORT_SCRIPT = """
for (const table of document.querySelectorAll("table.sortable")) {
  table.querySelectorAll("th").forEach((th, column) => th.addEventListener("click", () => {
    const body = table.tBodies[0], rows = Array.from(body.rows);
    const up = th.dataset.order !== "asc"; th.dataset.order = up ? "asc" : "desc";
    const key = r => { const v = r.cells[column].dataset.value;
                       return v === undefined ? r.cells[column].textContent : +v; };
    rows.sort((a, b) => { const x = key(a), y = key(b); return (x > y) - (x < y) || 0; });
    if (!up) rows.reverse();
    rows.forEach(r => body.appendChild(r));
  }));
}
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { cursor: pointer; background: #eee; } td:first-child, td:nth-child(2) { text-align: left; }
.sheet { display: flex; flex-wrap: wrap; gap: 1em; }
.scan { border: 1px solid #ccc; padding: 0.5em; max-width: 440px; }
.scan h3 { font-size: 0.95em; margin: 0 0 0.3em 0; word-break: break-all; }
.crops figure { display: inline-block; margin: 0.2em; font-size: 0.75em; text-align: center; }
.key span { display: inline-block; width: 1em; height: 0.8em; margin: 0 0.3em 0 1em; }
"""


def _cell(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return '<td data-value="-1">n/a</td>'
    if isinstance(value, float):
        return f'<td data-value="{value:.6g}">{value:.{digits}f}</td>'
    if isinstance(value, int):
        return f'<td data-value="{value}">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


CASE_COLUMNS = ("prediction", "reference", "errors", "missed", "false pos.", "found", "lesions", "Dice",
                "IoU", "precision", "recall")
LEGEND = (("tp", "detection on a lesion"), ("fp", "false positive"), ("found", "reference lesion, found"),
          ("missed", "reference lesion, missed"))


def page(title: str, intro: list[str], froc_png: str | None, columns: tuple, rows: list[list],
         cases: list[dict], legend: tuple, problems: list[dict], order: str = "Worst first") -> str:
    """The HTML page: ``intro`` paragraphs (HTML), the FROC image, a sortable table of ``rows`` (the
    case id first, then values for ``columns``), the contact sheet of ``cases`` (:func:`case_view`
    dicts) with its colour ``legend`` and the ``problems``."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"] + [f"<p>{paragraph}</p>" for paragraph in intro]
    if froc_png:
        parts += ["<h2>FROC</h2>", f'<img class="froc" alt="FROC curve" src="{froc_png}">']
    parts += ["<h2>Cases</h2>", f"<p>{html.escape(order)}; click a column to sort by it.</p>",
              '<table class="sortable" id="cases"><thead><tr>',
              "".join(f"<th>{html.escape(name)}</th>" for name in columns), "</tr></thead><tbody>"]
    for row in rows:
        parts.append(f'<tr id="row-{html.escape(str(row[0]))}">' + "".join(_cell(v) for v in row) + "</tr>")
    key = "".join(f'<span style="background: rgb{COLOURS[kind]}"></span>{html.escape(name)}'
                  for kind, name in legend)
    parts += ["</tbody></table>", "<h2>Scans</h2>", f'<p class="key">{key}</p>', '<div class="sheet">']
    for case in cases:
        name = html.escape(case["id"])
        parts.append(f'<div class="scan" id="scan-{name}"><h3>{name}</h3>'
                     f'<img alt="{name}" src="{case["image"]}"><div class="crops">')
        for crop in case["crops"]:
            label = html.escape(crop["label"])
            parts.append(f'<figure class="{crop["kind"]}"><img alt="{label}" src="{crop["image"]}">'
                         f"<figcaption>{label}</figcaption></figure>")
        parts.append("</div></div>")
    parts.append("</div>")
    if problems:
        parts += ["<h2>Problems</h2>", "<ul>"]
        parts += [f"<li>{html.escape(p['file'])}: {html.escape(p['reason'])}</li>" for p in problems]
        parts.append("</ul>")
    parts += [f"<script>{SORT_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts)


def render(result: dict, cases: list[dict], froc_png: str | None) -> str:
    """The evaluation's page from evaluate's ``result`` and the cases (:func:`case_view` dicts, in
    table order)."""
    counts, mean = result["counts"], result["mean"]["1"]
    intro = [f"{counts['evaluated']} cases evaluated, {counts['failed_predictions']} failed predictions, "
             f"{counts['problems']} problems, {counts['unmatched']} predictions without a reference.",
             f"Mean Dice {_fmt(mean['Dice'])}, IoU {_fmt(mean['IoU'])}, precision {_fmt(mean['precision'])}, "
             f"recall {_fmt(mean['recall'])}."]
    if froc_png:
        froc = result["detection"]["froc"]
        at = ", ".join(f"{_fmt(v, 2)} at {k}" for k, v in froc["sensitivity_at_fp_per_image"].items())
        intro.append(html.escape(f"Lesion sensitivity by false positives per image: {at}. "
                                 f"{froc['criterion']}."))
    rows = [[c["id"], c["reference"], c["errors"], c["missed"], c["fp"], c["found"], c["lesions"]]
            + [c["metrics"].get(k) for k in ("Dice", "IoU", "precision", "recall")] for c in cases]
    return page("mammo-seg evaluation", intro, froc_png, CASE_COLUMNS, rows, cases, LEGEND,
                result["problems"])


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def case_view(case: dict, pixels: np.ndarray, scan, threshold: float, min_area_mm2: float,
              scored: bool = True) -> dict:
    """One case's row and contact-sheet entry: counts, the outlined scan, a crop of every finding."""
    known = math.isfinite(scan.pixel_area_mm2)
    min_area = min_area_px(min_area_mm2, scan.pixel_area_mm2) if known else 1
    shown = findings(scan.probability, scan.lesions, scan.kinds, threshold, min_area, scan.pixel_area_mm2,
                     scored)
    kinds = [f.kind for f in shown]
    crops = [{"kind": f.kind, "label": f.label, "image": _png_data(crop_image(pixels, f))}
             for f in shown if f.kind in ("tp", "fp", "missed")]
    return {"id": case["prediction"], "reference": case["reference"], "metrics": case["metrics"]["1"],
            "missed": kinds.count("missed"), "fp": kinds.count("fp"), "found": kinds.count("found"),
            "lesions": len(scan.lesions), "errors": kinds.count("missed") + kinds.count("fp"),
            "image": _png_data(contact_image(pixels, shown)), "crops": crops}


def _scan_pixels(record: dict, input_root, shape: tuple) -> np.ndarray:
    """The scan's pixels on the reference grid; its probability-free grey stand-in when the scan
    file cannot be read (moved since predict ran)."""
    from mammo_seg.data.resolution import resize_image
    from mammo_seg.io import read_scan

    source = record.get("source")
    try:
        pixels = read_scan(os.path.join(input_root, source)).pixels.astype(np.float32)
    except Exception:  # noqa: BLE001 - the page is still useful without the scan's pixels
        return np.zeros(shape, np.float32)
    return pixels if pixels.shape == tuple(shape) else resize_image(pixels, tuple(shape))


def write_report(path: str, result: dict, sources: list, truth, threshold: float, min_area_mm2: float) -> str:
    """Write ``report.html`` for evaluate's ``result`` (``sources``: each prediction folder with its predict
    ``summary``, the ground ``truth``, predict's ``threshold`` and the minimum detection area); returns ``path``."""
    from mammo_seg.data.resolution import resize_mask
    from mammo_seg.detection import ScanLesions
    from mammo_seg.errors import MammoError
    from mammo_seg.evaluate import _pixel_area_mm2, _scan_lesions
    from mammo_seg.io import read_mask

    records = {r.get("id"): (r, pred_dir, summary) for pred_dir, summary in sources
               for r in summary["scans"] if isinstance(r, dict)}
    views = []
    for case in result["metric_per_case"]:
        record, pred_dir, summary = records[case["prediction"]]
        reference = truth.find(record["sha256"], record["file_size"])
        scan = _scan_lesions(record, pred_dir, reference)
        scored = scan is not None
        if scan is None:  # no probability map (--format without prob): the mask's lesions, unscored
            mask = read_mask(os.path.join(pred_dir, record["outputs"]["mask"]))
            try:
                area = _pixel_area_mm2(record) * mask.size / reference.mask.size
            except MammoError:
                area = float("nan")
            if mask.shape != reference.mask.shape:
                mask = resize_mask(mask, reference.mask.shape)
            scan = ScanLesions(mask.astype(np.float32), reference.lesions, reference.types, area)
        pixels = _scan_pixels(record, summary.get("input") or "", reference.mask.shape)
        views.append(case_view(case, pixels, scan, threshold, min_area_mm2, scored))
    views.sort(key=lambda v: (-v["errors"], _sortable(v["metrics"].get("Dice"))))
    detection = result.get("detection")
    froc_png = _png_data(froc_plot(detection["froc"], detection["at_operating_point"])) if detection else None
    with atomic.replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(render(result, views, froc_png))
    return path


def _sortable(value) -> float:
    return 2.0 if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


PREDICTION_COLUMNS = ("scan", "lesions", "max. probability", "lesion area (mm²)")


def write_prediction_report(path: str, pred_dir: str) -> str:
    """Write ``report.html`` for a ``mammo predict`` output (no reference: every detection in one
    colour), from its ``summary.json``, probability maps and the scans under its input; returns ``path``.

    Scans without a probability map (``--format`` without ``prob``) are listed in the table only.
    """
    import json

    from mammo_seg.errors import MammoError
    from mammo_seg.evaluate import _pixel_area_mm2

    with open(os.path.join(pred_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    options = summary.get("options") or {}
    rows, views = [], []
    for record in summary["scans"]:
        if record.get("status") != "ok":
            continue
        rows.append([record["id"], record.get("lesion_count"), record.get("max_probability"),
                     record.get("lesion_area_mm2")])
        name = record.get("outputs", {}).get("prob")
        if not name:
            continue
        with np.load(os.path.join(pred_dir, name)) as npz:
            probability = npz["probability"].astype(np.float32)
        try:
            area = _pixel_area_mm2(record)
        except MammoError:
            area = float("nan")
        threshold = record.get("threshold", options.get("threshold"))
        min_area = min_area_px(options.get("min_area_mm2") or 0.0, area) if math.isfinite(area) else 1
        shown = findings(probability, [], [], threshold, min_area, area)
        for finding in shown:
            finding.kind = "detection"
        pixels = _scan_pixels(record, summary.get("input") or "", probability.shape)
        views.append({"id": record["id"], "image": _png_data(contact_image(pixels, shown)),
                      "crops": [{"kind": f.kind, "label": f.label, "image": _png_data(crop_image(pixels, f))}
                                for f in shown]})
    rows.sort(key=lambda row: -(row[2] or 0.0))
    order = {row[0]: n for n, row in enumerate(rows)}
    views.sort(key=lambda view: order[view["id"]])
    counts = summary.get("counts", {})
    ok, scans = counts.get("ok", len(rows)), counts.get("scans", len(rows))
    intro = [html.escape(f"{ok} of {scans} scans predicted, {counts.get('positive', 0)} called positive. "
                         "Each scan's detections are numbered by their maximum probability.")]
    with atomic.replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(page("mammo-seg predictions", intro, None, PREDICTION_COLUMNS, rows, views,
                     (("detection", "detection"),), [], "Highest probability first"))
    return path
