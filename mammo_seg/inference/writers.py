"""Prediction outputs: mask PNG, probability NPZ, overlay PNG, DICOM SEG, per-scan JSON.

Only the DICOM SEG carries patient and study attributes (copied from its source image, as DICOM
requires of a derived object); every other output names the scan by its file id alone.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
from PIL import Image
from skimage.measure import label, regionprops
from skimage.segmentation import find_boundaries

from mammo_seg import __version__

OVERLAY_MAX_SIDE = 2048


def _replace(tmp: str, path: str) -> str:
    os.replace(tmp, path)
    return path


def write_mask_png(path: str, mask: np.ndarray) -> str:
    tmp = path + ".tmp"
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
    return _replace(tmp, path)


def write_probabilities(path: str, prob: np.ndarray, threshold: float, factor: float) -> str:
    """``prob`` as float16 (plenty for probabilities), with the threshold and resampling factor used."""
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, probability=prob.astype(np.float16), threshold=np.float32(threshold),
                        resampling_factor=np.float32(factor))
    return _replace(tmp, path)


def write_overlay(path: str, pixels: np.ndarray, mask: np.ndarray) -> tuple[str, int]:
    """The scan in grey with lesion outlines in red, shrunk by an integer factor to ≤ 2048 px a side."""
    step = max(1, -(-max(pixels.shape) // OVERLAY_MAX_SIDE))
    grey = pixels[::step, ::step]
    small = mask[::step, ::step] if step == 1 else _block_any(mask, step)[:grey.shape[0], :grey.shape[1]]
    lo, hi = np.percentile(grey, [0.5, 99.5]) if grey.size else (0.0, 1.0)
    grey = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    edge = find_boundaries(small, mode="outer")
    edge |= np.roll(edge, 1, 0) | np.roll(edge, 1, 1)  # 2 px wide, visible at any zoom
    rgb[edge] = (255, 40, 40)
    tmp = path + ".tmp"
    Image.fromarray(rgb).save(tmp, format="PNG")
    return _replace(tmp, path), step


def _block_any(mask: np.ndarray, step: int) -> np.ndarray:
    h, w = -(-mask.shape[0] // step) * step, -(-mask.shape[1] // step) * step
    padded = np.zeros((h, w), bool)
    padded[:mask.shape[0], :mask.shape[1]] = mask
    return padded.reshape(h // step, step, w // step, step).any(axis=(1, 3))


def write_seg(path: str, source_dataset, mask: np.ndarray, model_name: str = "MammoFCN") -> str:
    """A DICOM Segmentation (highdicom, BINARY, one segment "lesion") referencing ``source_dataset``.

    It reads back with ``highdicom.seg.segread`` to the exact mask. Where the source has
    PixelSpacing, an explicit PixelMeasuresSequence (with a nominal slice thickness) is given, which
    ``segread`` needs.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(name="mammo-seg", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
    spacing = source_dataset.get("PixelSpacing")
    measures = (hd.PixelMeasuresSequence(pixel_spacing=[float(v) for v in spacing], slice_thickness=1.0)
                if spacing else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # single-component PatientName of dataset ids
        seg = hd.seg.Segmentation(
            source_images=[source_dataset], pixel_array=mask.astype(bool),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
            series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="mammo-seg", manufacturer_model_name=model_name, software_versions=__version__,
            device_serial_number="0", pixel_measures=measures, omit_empty_frames=False)
    tmp = path + ".tmp"
    seg.save_as(tmp)
    return _replace(tmp, path)


def lesion_report(mask: np.ndarray, prob: np.ndarray, spacing_mm, image_area_fraction: float) -> dict:
    """Lesion count, areas (px; mm² when the pixel spacing is known), boxes, probabilities, image-level call."""
    components = label(mask, connectivity=2)
    pixel_mm2 = float(spacing_mm[0] * spacing_mm[1]) if spacing_mm else None
    lesions = []
    for region in regionprops(components, intensity_image=prob):
        r0, c0, r1, c1 = (int(v) for v in region.bbox)
        lesions.append({"area_px": int(region.area),
                        "area_mm2": None if pixel_mm2 is None else round(region.area * pixel_mm2, 3),
                        "bbox": [r0, c0, r1, c1], "max_probability": round(float(region.intensity_max), 4),
                        "mean_probability": round(float(region.intensity_mean), 4)})
    lesions.sort(key=lambda lesion: -lesion["area_px"])
    area = int(mask.sum())
    return {"lesion_count": len(lesions), "lesion_area_px": area,
            "lesion_area_mm2": None if pixel_mm2 is None else round(area * pixel_mm2, 3),
            "image_positive": bool(area > mask.size * image_area_fraction),
            "image_rule": f"positive when the lesion area exceeds {image_area_fraction:.6g} of the image",
            "max_probability": round(float(prob.max()), 4) if prob.size else 0.0, "lesions": lesions}


def write_json(path: str, content: dict) -> str:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(content, f, indent=2)
    return _replace(tmp, path)
