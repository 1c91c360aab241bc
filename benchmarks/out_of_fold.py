"""Shared pieces of the real-data comparisons (:mod:`quality_mias`, :mod:`loss_study_mias`, :mod:`flip_tta_mias`):
models' out-of-fold predictions lined up scan by scan, and FROC plots."""

from __future__ import annotations

import json
import os


def figure_text(figure: dict | None, signed: bool = False) -> str:
    """A figure of :mod:`mammo_seg.intervals` as "0.21 (0.12 to 0.30)"; a paired difference ``signed`` ("+0.01 (-0.04
    to +0.08)"), in bold when its interval excludes 0."""
    if figure is None or figure.get("value") is None:
        return "n/a"
    fmt = "+.2f" if signed else ".2f"
    ci = figure.get("ci95")
    text = f"{figure['value']:{fmt}}" + (f" ({ci[0]:{fmt}} to {ci[1]:{fmt}})" if ci else "")
    return f"**{text}**" if figure.get("resolved") else text


def write_results(prefix: str, report: dict, write_markdown, plot=None) -> None:
    """PREFIX.json, PREFIX.md (``write_markdown(report, path)``) and, with ``plot(path)``, PREFIX_froc.png; prints
    the Markdown."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(prefix + ".json", "w") as f:
        json.dump(report, f, indent=2)
    write_markdown(report, prefix + ".md")
    if plot is not None:
        plot(prefix + "_froc.png")
    with open(prefix + ".md") as f:
        print(f.read())


def aligned_arms(cases: dict, min_area_mm2: float | None = None) -> tuple[dict, list]:
    """({name: :class:`mammo_seg.intervals.Arm`}, the woman of each scan) from each model's
    :class:`mammo_seg.evaluate.Cases`, on the scans every model predicted, in one order (by reference scan id).
    Each arm at its own operating point, or every arm's detections at ``min_area_mm2`` when given."""
    from mammo_seg.intervals import Arm

    common = sorted(set.intersection(*(set(c.references) for c in cases.values())))
    arms, women = {}, []
    for name, c in cases.items():
        at = {ref: i for i, ref in enumerate(c.references)}
        order = [at[ref] for ref in common]
        arms[name] = Arm([c.scans[i] for i in order], [c.dice[i] for i in order], c.threshold,
                         c.min_area_mm2 if min_area_mm2 is None else min_area_mm2)
        women = [c.women[i] for i in order]
    return arms, women


def plot_frocs(curves: dict, path: str, title: str, intervals: dict | None = None) -> None:
    """Step FROC curves (``curves``: label → :func:`mammo_seg.detection.froc`'s result) on one plot; ``intervals``:
    the 95 % intervals at each false-positive rate (``bootstrap``'s ``sensitivity_at_fp_per_image``) drawn as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, froc in curves.items():
        points = sorted((p["fp_per_image"], p["sensitivity"]) for p in froc["points"] if p["sensitivity"] is not None)
        ax.step([p[0] for p in points], [p[1] for p in points], where="post", marker=".", label=label)
    if intervals:
        rates = [float(r) for r in intervals]
        lo = [intervals[r]["ci95"][0] if intervals[r]["ci95"] else None for r in intervals]
        hi = [intervals[r]["ci95"][1] if intervals[r]["ci95"] else None for r in intervals]
        ax.vlines(rates, lo, hi, color="grey", alpha=0.6, label="95 % interval over women")
    ax.set_xscale("symlog", linthresh=0.25)
    ax.set_xlim(0, 8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
