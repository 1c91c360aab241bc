"""``mammo synth mias``: phantom scans in the exact on-disk format of (mini-)MIAS.

``OUT/mdbNNN.pgm``: 1024×1024 8-bit binary PGM (P5), MLO views, the breast centred in the matrix
with black padding at the sides; odd numbers are right breasts, even numbers left, and each pair is
one woman. ``OUT/Info.txt`` in the real format (no header line)::

    mdb001 G CIRC B 535 425 197      reference, background tissue, class, severity, x, y, radius
    mdb003 D NORM                    normal images: three fields and a trailing space
    mdb216 D CALC M *NOTE 3*         calcifications "widely distributed": no coordinates
    mdb059 F CIRC B                  class and severity but no coordinates

x, y are in pixels with the origin at the **bottom-left** corner; the radius encloses the lesion.
Some images have several rows (several abnormalities).
"""

from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from mammo_seg.io.image import write_pgm
from mammo_seg.synthetic import phantom as ph

SIZE = 1024
SPACING_MM = 0.2
CLASSES = ["NORM", "CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM"]
# Two images in five are abnormal (the real file: 123 of 330 rows), cycling through the classes; the
# quirks come at a fixed cadence so that even a few images show each of them: several rows for one
# image, "*NOTE 3*" calcifications, and a row with class and severity but no coordinates (mdb059).
ABNORMAL_CYCLE = ["CIRC", "CALC", "SPIC", "MISC", "CALC", "ARCH", "CIRC", "ASYM"]
TWO_LESIONS_EVERY, NOTE3_EVERY, NO_COORDINATES_EVERY = 6, 2, 7
DENSITY = {"F": 1, "G": 2, "D": 3}


def _draw(phantom, cls: str, rng) -> ph.Lesion:
    if cls == "CALC":
        return ph.add_calcification_cluster(phantom, rng.uniform(6, 25), SPACING_MM, rng)
    if cls in ("ARCH", "ASYM"):
        return ph.add_distortion(phantom, rng.uniform(15, 40), SPACING_MM, rng, asymmetry=cls == "ASYM")
    shape = {"CIRC": ["round", "oval"], "SPIC": ["spiculated"], "MISC": ["irregular", "lobulated"]}[cls]
    return ph.add_mass(phantom, str(rng.choice(shape)), float(np.clip(rng.lognormal(np.log(16), 0.4), 5, 60)),
                       rng.uniform(0.07, 0.13), SPACING_MM, rng)


def write_mias(out: str, images: int, seed: int = 0, progress: bool = True) -> dict:
    """Write ``images`` phantom scans ``mdb001.pgm`` … and their ``Info.txt``; returns counts."""
    if not 1 <= images <= 999:
        raise ValueError("images must be between 1 and 999")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines, counts = [], {c: 0 for c in CLASSES}
    counts["no_coordinates"] = 0
    abnormal_images = calc_images = 0
    backgrounds = {}
    for n in tqdm(range(1, images + 1), desc="synth mias", unit="image", disable=not progress):
        ref = f"mdb{n:03d}"
        woman = (n + 1) // 2
        bg = backgrounds.setdefault(woman, str(rng.choice(list(DENSITY))))
        width = int(rng.integers(560, 780))
        phantom = ph.make_breast((SIZE, width), "MLO", chest_wall_left=n % 2 == 0, spacing_mm=SPACING_MM,
                                 density=DENSITY[bg], rng=rng)
        cls, hide = "NORM", None
        if n % 5 in (1, 3):
            abnormal_images += 1
            cls = ABNORMAL_CYCLE[(abnormal_images - 1) % len(ABNORMAL_CYCLE)]
            if cls == "CALC":
                calc_images += 1
                hide = "note3" if calc_images % NOTE3_EVERY == 0 else None
            elif abnormal_images % NO_COORDINATES_EVERY == 0:
                hide = "missing"
        two = cls != "NORM" and hide is None and abnormal_images % TWO_LESIONS_EVERY == 0
        severity = str(rng.choice(["B", "M"]))
        rows = []
        for _ in range(2 if two else 1):
            if cls == "NORM":
                counts["NORM"] += 1
                rows.append(f"{ref} {bg} NORM ")
                continue
            lesion = _draw(phantom, cls, rng)
            counts[cls] += 1
            if hide == "note3":
                rows.append(f"{ref} {bg} CALC {severity} *NOTE 3*")
            elif hide == "missing":
                rows.append(f"{ref} {bg} {cls} {severity}")
            else:
                rows.append((ref, bg, cls, severity, lesion))
        counts["no_coordinates"] += hide is not None
        ph.add_noise_and_label(phantom, SPACING_MM, rng, label=False)
        left = (SIZE - width) // 2
        matrix = np.zeros((SIZE, SIZE), dtype=np.float32)
        matrix[:, left:left + width] = phantom.image
        noise = rng.normal(0, 0.004, matrix.shape)
        matrix[:, :left] += np.abs(noise[:, :left])
        matrix[:, left + width:] += np.abs(noise[:, left + width:])
        write_pgm(os.path.join(out, f"{ref}.pgm"), np.round(np.clip(matrix, 0, 1) * 255).astype(np.uint8))
        for row in rows:
            if isinstance(row, str):
                lines.append(row)
                continue
            ref_, bg_, c, sev, lesion = row
            x = int(round(lesion.center[1])) + left
            y = SIZE - 1 - int(round(lesion.center[0]))
            lines.append(f"{ref_} {bg_} {c} {sev} {x} {y} {int(np.ceil(lesion.radius_px))}")
    with open(os.path.join(out, "Info.txt"), "w", newline="") as f:
        f.write("\n".join(lines) + "\n")
    return {"images": images, "rows": len(lines), **counts}
