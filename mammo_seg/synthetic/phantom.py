"""Mammogram phantoms: breast, tissue texture and lesions, as float images in [0, 1] (bright = dense).

The model, kept simple but plausible to look at and to learn from:

* breast: a half-ellipse from the chest wall with a wavy outline, thickness falling off towards the
  skin, and a bright skin line; MLO views add the pectoral muscle as a bright wedge in the upper
  chest-wall corner and let the breast reach up into the axilla;
* fibroglandular tissue: power-law ("1/f^β", β = 3) noise, the classic model of mammographic
  texture (Burgess et al., Med Phys 2001), thresholded softly into dense and fatty tissue, denser
  behind the nipple and for higher BI-RADS density;
* masses: round, oval, lobulated, irregular or spiculated outlines with a soft edge and subtle
  contrast (a few % of the range); spiculated ones add thin radiating spicules;
* calcifications: clusters of 5–25 small bright specks; their annotation is the cluster outline;
* noise: quantum and film-grain noise; CBIS-style scans get a film label in a corner.

Sizes are physical (mm) and converted with the pixel spacing, so a phantom at a quarter of the real
resolution shows the same anatomy with coarser pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit
from skimage.morphology import convex_hull_image, disk

MASS_SHAPES = ("round", "oval", "lobulated", "irregular", "spiculated")


@dataclass
class Lesion:
    kind: str  # "mass", "calcification", "architectural_distortion", "asymmetry"
    shape: str  # a MASS_SHAPES entry, "cluster", "distortion" or "asymmetry"
    mask: np.ndarray  # bool, full image
    center: tuple[float, float]  # (row, col)
    radius_px: float  # radius of a circle around the centre that encloses the lesion


@dataclass
class Phantom:
    image: np.ndarray  # float32 in [0, 1], bright = dense
    breast: np.ndarray  # bool
    lesions: list
    chest_wall_left: bool


def power_law_noise(shape, beta: float, rng: np.random.Generator, low_cut: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise with power spectrum ∝ 1/f^β (f ≥ ``low_cut`` cycles/px)."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.maximum(np.sqrt(fx * fx + fy * fy), low_cut)
    spectrum = f ** (-beta / 2.0)
    spectrum[0, 0] = 0.0
    coeffs = spectrum * (rng.standard_normal(spectrum.shape) + 1j * rng.standard_normal(spectrum.shape))
    field = np.fft.irfft2(coeffs, s=shape)
    field -= field.mean()
    return (field / (field.std() + 1e-12)).astype(np.float32)


def _wavy_radius(theta: np.ndarray, rng: np.random.Generator, amplitude: float, harmonics) -> np.ndarray:
    r = np.ones_like(theta)
    for k in harmonics:
        r += amplitude * rng.uniform(0.3, 1.0) / k ** 0.8 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return r


def breast_geometry(shape, view: str, chest_wall_left: bool, rng: np.random.Generator):
    """Bool breast mask, pectoral mask and normalised depth (0 at the skin, 1 deep inside)."""
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    depth_axis = cols if chest_wall_left else (w - 1 - cols)
    semi_c = w * rng.uniform(0.62, 0.82)
    if view == "CC":
        center_r = h * rng.uniform(0.45, 0.55)
        semi_r = np.float32(h * rng.uniform(0.36, 0.44))
    else:  # MLO: the upper half reaches the top edge along the chest wall (the axilla)
        center_r = h * rng.uniform(0.58, 0.66)
        semi_r = np.where(rows < center_r, center_r * rng.uniform(1.05, 1.2), h * rng.uniform(0.28, 0.34))
    theta = np.arctan2((rows - center_r) / semi_r, depth_axis / semi_c)
    radius = _wavy_radius(theta, rng, 0.03, range(2, 7))
    rho = np.sqrt(((rows - center_r) / semi_r) ** 2 + (depth_axis / semi_c) ** 2)
    breast = rho < radius
    pectoral = np.zeros(shape, dtype=bool)
    if view == "MLO":  # the pectoral muscle: a wedge in the upper chest-wall corner
        pec_h, pec_w = center_r * rng.uniform(0.55, 0.85), semi_c * rng.uniform(0.3, 0.45)
        pectoral = (depth_axis / pec_w + rows / pec_h < 1.0) & breast
    dist = ndimage.distance_transform_edt(breast).astype(np.float32)
    depth = np.clip(dist / (0.08 * min(h, w) + 1e-6), 0, 1)
    return breast, pectoral, depth, rows, depth_axis


def make_breast(shape, view: str, chest_wall_left: bool, spacing_mm: float, density: int,
                rng: np.random.Generator) -> Phantom:
    """A lesion-free breast phantom; ``density`` is BI-RADS 1 (fatty) to 4 (extremely dense)."""
    h, w = shape
    breast, pectoral, depth, rows, depth_axis = breast_geometry(shape, view, chest_wall_left, rng)
    thickness = np.sqrt(depth * (2 - depth))  # compressed breast: flat inside, rounded at the edge
    texture = power_law_noise(shape, 3.0, rng, low_cut=spacing_mm / 40.0)
    fine = power_law_noise(shape, 2.0, rng, low_cut=spacing_mm / 4.0)
    # dense tissue sits behind the nipple, away from skin and chest wall
    nipple_r = float(np.mean(np.nonzero(breast)[0])) if breast.any() else h / 2
    prior = np.exp(-(((rows - nipple_r) / (0.35 * h)) ** 2)) * np.exp(
        -(((depth_axis - 0.35 * w) / (0.35 * w)) ** 2))
    bias = {1: -1.6, 2: -0.8, 3: 0.0, 4: 0.8}[int(density)]
    glandular = expit(1.3 * (texture + 0.35 * fine + 1.8 * prior + bias - 0.6))
    image = 0.008 + 0.004 * fine  # film background: dark, a little uneven
    tissue = thickness * (0.30 + 0.32 * glandular + 0.02 * fine)
    image = np.where(breast, tissue + 0.03, image)
    # skin line: a thin brighter band just inside the outline
    skin_px = max(1.0, 1.2 / spacing_mm)
    skin = breast & (ndimage.distance_transform_edt(breast) <= skin_px)
    image = np.where(skin, np.maximum(image, 0.42 + 0.03 * fine), image)
    if pectoral.any():
        image = np.where(pectoral, 0.58 + 0.02 * texture + 0.1 * thickness, image)
    return Phantom(image.astype(np.float32), breast, [], chest_wall_left)


def _local_window(center, reach, shape):
    r, c = center
    r0, r1 = int(max(0, np.floor(r - reach))), int(min(shape[0], np.ceil(r + reach) + 1))
    c0, c1 = int(max(0, np.floor(c - reach))), int(min(shape[1], np.ceil(c + reach) + 1))
    return r0, r1, c0, c1


def _pick_center(phantom: Phantom, margin_px: float, rng: np.random.Generator):
    """A point inside the breast at least ``margin_px`` from its outline (falls back to the deepest)."""
    dist = ndimage.distance_transform_edt(phantom.breast)
    candidates = np.argwhere(dist > margin_px)
    if len(candidates) == 0:
        candidates = np.argwhere(dist >= dist.max())
    r, c = candidates[rng.integers(len(candidates))]
    return float(r), float(c)


def add_mass(phantom: Phantom, shape_kind: str, diameter_mm: float, contrast: float,
             spacing_mm: float, rng: np.random.Generator, kind: str = "mass") -> Lesion:
    """Add a mass of ``shape_kind`` (see MASS_SHAPES); returns its annotation."""
    h, w = phantom.image.shape
    r0 = max(2.0, diameter_mm / 2 / spacing_mm)
    center = _pick_center(phantom, 1.2 * r0, rng)
    reach = r0 * (2.8 if shape_kind == "spiculated" else 1.6)
    a, b, c, d = _local_window(center, reach, (h, w))
    rows, cols = np.mgrid[a:b, c:d].astype(np.float32)
    dy, dx = rows - center[0], cols - center[1]
    theta = np.arctan2(dy, dx)
    if shape_kind == "oval":
        ratio, angle = rng.uniform(0.55, 0.8), rng.uniform(0, np.pi)
        ca, sa = np.cos(angle), np.sin(angle)
        u, v = dx * ca + dy * sa, -dx * sa + dy * ca
        rel = np.sqrt((u / r0) ** 2 + (v / (r0 * ratio)) ** 2)
    else:
        harmonics, amplitude = {
            "round": (range(2, 4), 0.04),
            "lobulated": (range(3, 6), 0.35),
            "irregular": (range(2, 13), 0.45),
            "spiculated": (range(2, 9), 0.3),
        }[shape_kind]
        core = r0 * (0.75 if shape_kind == "spiculated" else 1.0)
        rel = np.sqrt(dx * dx + dy * dy) / (core * _wavy_radius(theta, rng, amplitude, harmonics))
    edge = max(0.8, 0.6 / spacing_mm)  # soft edge about 0.6 mm wide
    profile = expit((1.0 - rel) * r0 / edge)
    bump = contrast * profile * (0.8 + 0.2 * np.clip(1 - rel, 0, 1))
    mask_local = rel <= 1.0
    if shape_kind == "spiculated":
        spicules = np.zeros_like(bump)
        width = max(0.7, 0.35 / spacing_mm)
        for _ in range(rng.integers(8, 18)):
            ang = rng.uniform(0, 2 * np.pi)
            length = r0 * rng.uniform(1.2, 2.6)
            along = dx * np.cos(ang) + dy * np.sin(ang)
            across = np.abs(-dx * np.sin(ang) + dy * np.cos(ang))
            on = (along > 0) & (along < length)
            fade = np.clip(1 - along / length, 0, 1)
            spicules = np.maximum(spicules, on * fade * np.exp(-(across / width) ** 2))
        bump = np.maximum(bump, 0.7 * contrast * spicules)
    phantom.image[a:b, c:d] += bump * phantom.breast[a:b, c:d]
    mask = np.zeros((h, w), dtype=bool)
    mask[a:b, c:d] = mask_local & phantom.breast[a:b, c:d]
    radius = float(np.sqrt(dx[mask_local] ** 2 + dy[mask_local] ** 2).max()) if mask_local.any() else r0
    lesion = Lesion(kind, shape_kind, mask, center, radius)
    phantom.lesions.append(lesion)
    return lesion


def add_calcification_cluster(phantom: Phantom, cluster_mm: float, spacing_mm: float,
                              rng: np.random.Generator) -> Lesion:
    """Add a cluster of bright specks; the annotation is the cluster's outline."""
    h, w = phantom.image.shape
    radius = max(3.0, cluster_mm / 2 / spacing_mm)
    center = _pick_center(phantom, 1.3 * radius, rng)
    n = int(rng.integers(5, 26))
    offsets = rng.normal(0, radius / 2, size=(n, 2))
    offsets = offsets * np.minimum(1.0, radius / (np.linalg.norm(offsets, axis=1, keepdims=True) + 1e-6))
    specks = np.zeros((h, w), dtype=bool)
    for dr, dc in offsets:
        sr = max(0.6, rng.uniform(0.12, 0.45) / spacing_mm)
        r, c = center[0] + dr, center[1] + dc
        a, b, c0, d = _local_window((r, c), sr + 1, (h, w))
        if a >= b or c0 >= d:
            continue
        rows, cols = np.mgrid[a:b, c0:d]
        dot = (rows - r) ** 2 + (cols - c) ** 2 <= sr * sr
        specks[a:b, c0:d] |= dot
        phantom.image[a:b, c0:d] += dot * rng.uniform(0.18, 0.35)
    specks &= phantom.breast
    if not specks.any():
        specks[int(center[0]), int(center[1])] = True
    a, b, c0, d = _local_window(center, radius * 1.6, (h, w))
    hull = convex_hull_image(specks[a:b, c0:d])
    hull = ndimage.binary_dilation(hull, disk(max(1, int(round(0.8 / spacing_mm)))))
    mask = np.zeros((h, w), dtype=bool)
    mask[a:b, c0:d] = hull
    mask &= phantom.breast
    rr, cc = np.nonzero(mask)
    reach = float(np.sqrt((rr - center[0]) ** 2 + (cc - center[1]) ** 2).max()) if rr.size else radius
    lesion = Lesion("calcification", "cluster", mask, center, reach)
    phantom.lesions.append(lesion)
    return lesion


def add_distortion(phantom: Phantom, diameter_mm: float, spacing_mm: float, rng: np.random.Generator,
                   asymmetry: bool) -> Lesion:
    """Architectural distortion (spicules without a mass) or a focal asymmetry (a faint broad density)."""
    if asymmetry:
        return add_mass(phantom, "oval", diameter_mm, rng.uniform(0.03, 0.05), spacing_mm, rng,
                        kind="asymmetry")
    lesion = add_mass(phantom, "spiculated", diameter_mm * 0.5, rng.uniform(0.02, 0.04), spacing_mm, rng,
                      kind="architectural_distortion")
    lesion.shape = "distortion"
    return lesion


def add_noise_and_label(phantom: Phantom, spacing_mm: float, rng: np.random.Generator, label: bool):
    """Quantum noise everywhere; optionally a bright film label in a corner away from the breast."""
    img = phantom.image
    img += rng.normal(0, 0.006, img.shape).astype(np.float32)
    if label:
        h, w = img.shape
        lh, lw = int(h * rng.uniform(0.04, 0.07)), int(w * rng.uniform(0.15, 0.25))
        top = int(h * 0.03) if rng.random() < 0.5 else h - lh - int(h * 0.03)
        left = w - lw - int(w * 0.04) if phantom.chest_wall_left else int(w * 0.04)
        box = np.zeros(img.shape, dtype=bool)
        box[top:top + lh, left:left + lw] = True
        if not (box & ndimage.binary_dilation(phantom.breast, iterations=3)).any():
            stripes = (np.arange(lw) // max(1, lw // 12)) % 2
            img[top:top + lh, left:left + lw] = 0.85 + 0.1 * stripes[None, :]
    np.clip(img, 0.0, 1.0, out=img)
    return phantom
