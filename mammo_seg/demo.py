"""``mammo demo``: the whole chain on CBIS-DDSM phantoms, sized for a CPU."""

from __future__ import annotations

import os

from data_prep.prepare import prepare
from mammo_seg.data.inspect import validate
from mammo_seg.data.resolution import Resolution
from mammo_seg.synthetic.cbis_ddsm import write_cbis_ddsm

# Phantoms at a quarter of CBIS-DDSM's size (0.2 mm pixels) and a coarse training resolution
# (0.4 mm per training pixel): lesions of 1-2 cm span 25-50 px, so small tiles hold them whole.
DEMO_SCALE = 0.125
DEMO_TILES = (96, 192)


def run_demo(out: str, workers: int = 2, patients: int = 12, seed: int = 0) -> dict:
    raw, data = os.path.join(out, "raw"), os.path.join(out, "data")
    print(f"[1/3] synth: {patients} CBIS-DDSM phantom patients → {raw}")
    write_cbis_ddsm(raw, patients, seed=seed)
    print(f"[2/3] prep: tiles {DEMO_TILES} and whole scans → {data}")
    summary = prepare("cbis-ddsm", raw, data, tiles=DEMO_TILES, workers=workers, seed=seed,
                      resolution=Resolution(scale=DEMO_SCALE), full_scans=True)
    print(f"      {summary.records}; {len(summary.problems)} problems in {os.path.join(data, 'problems.csv')}")
    print("[3/3] inspect")
    sheets = {}
    for name in summary.records:
        report = validate(os.path.join(data, name), sheet=os.path.join(data, name, "contact_sheet.png"))
        if not report.ok:
            raise RuntimeError(f"demo output failed validation: {report.errors[:3]}")
        sheets[name] = report.contact_sheet
        print(f"      {name}: {report.records} records valid; contact sheet {report.contact_sheet}")
    return {"raw": raw, "data": data, "sheets": sheets}
