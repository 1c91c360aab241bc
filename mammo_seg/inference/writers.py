"""Prediction outputs: mask PNG, probability NPZ, overlay PNG, DICOM SEG, per-scan JSON.

Only the DICOM SEG carries patient and study attributes (copied from its source image, as DICOM
requires of a derived object); every other output names the scan by its file id alone.
"""

from __future__ import annotations

import copy
import datetime
import functools
import io
import re
import warnings
import zipfile

import numpy as np
from PIL import Image
from pydicom.multival import MultiValue
from skimage.measure import regionprops
from skimage.segmentation import find_boundaries

from mammo_seg import __version__, atomic
from mammo_seg.detection import image_positive, lesion_components

#: The overlay's longest side at most (px): a preview, shrunk by an integer factor; the mask PNG and the SEG keep the
#: scan's grid. 1024 rather than 2048 a side: a CBIS-DDSM film's overlay then takes about 0.03 CPU s to write instead of
#: 0.09 (PNG's filtering and compression grow with the pixels), and the outlines and labels read the same.
OVERLAY_MAX_SIDE = 1024
#: zlib level of the PNGs and the NPZ: 1, the fastest. Higher levels give the same pixels and values in
#: smaller files (probabilities: about 5 % smaller at 6) at 2 to 3 times the cost.
COMPRESS_LEVEL = 1


def _save_png(path: str, array: np.ndarray) -> str:
    """``array`` (grey or RGB uint8) as a PNG at :data:`COMPRESS_LEVEL`, replacing ``path`` atomically."""
    with atomic.replacing(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=COMPRESS_LEVEL)
    return path


def write_mask_png(path: str, mask: np.ndarray) -> str:
    """The mask as a grey PNG: 0 background, 255 lesion."""
    return _save_png(path, mask.astype(np.uint8) * np.uint8(255))


def write_npz(path: str, arrays: dict) -> str:
    """``arrays`` ({name: array}) as an ``.npz`` as ``np.savez_compressed`` writes it, but with fixed member
    timestamps (numpy stamps the clock): the same arrays give the same bytes."""
    with atomic.replacing(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            archive.writestr(info, member.getbuffer(), compresslevel=COMPRESS_LEVEL)
    return path


def write_overlay(path: str, pixels: np.ndarray, mask: np.ndarray, lesions: list = ()) -> tuple[str, int]:
    """The scan in grey with lesion outlines in red, shrunk by an integer factor to ≤ :data:`OVERLAY_MAX_SIDE` px a
    side; each of ``lesions`` (a lesion report's, numbered from 1 in its order) labelled ``N: p 0.93`` beside its
    box. Returns the path and the factor."""
    from PIL import ImageDraw, ImageFont

    step = max(1, -(-max(pixels.shape) // OVERLAY_MAX_SIDE))
    grey = pixels[::step, ::step]
    lo, hi = np.percentile(grey, [0.5, 99.5]) if grey.size else (0.0, 1.0)
    grey = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    rgb[outline(mask, step, grey.shape)] = (255, 40, 40)
    if lesions:
        image = Image.fromarray(rgb)
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=max(10, min(rgb.shape[:2]) // 40))
        for number, lesion in enumerate(lesions, start=1):
            r0, _, _, c1 = (v // step for v in lesion["bbox"])
            text = f"{number}: p {lesion['max_probability']:.2f}"
            x, y = min(c1 + 2, max(0, rgb.shape[1] - 1)), max(0, r0 - 2)
            draw.text((x, y), text, fill=(255, 230, 40), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
        rgb = np.asarray(image)
    return _save_png(path, rgb), step


def outline(mask: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    """The outline of ``mask`` shrunk by ``step`` to ``shape`` (a block is lesion when any of its pixels is): the
    background pixels touching it, widened by one pixel down and right (2 px, visible at any zoom; it wraps round
    at the far edges). Only the box of the lesions, with a margin, is shrunk and searched."""
    edge = np.zeros(shape, bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size:
        margin = 3  # beyond the outline's reach: the box's own border sees background alone, as the whole would
        box = tuple(slice(max(0, first // step - margin), min(n, last // step + 1 + margin))
                    for first, last, n in ((rows[0], rows[-1], shape[0]), (cols[0], cols[-1], shape[1])))
        part = mask[box[0].start * step:box[0].stop * step, box[1].start * step:box[1].stop * step]
        small = part if step == 1 else _block_any(part, step)[:box[0].stop - box[0].start, :box[1].stop - box[1].start]
        edge[box] = find_boundaries(small, mode="outer")
    return edge | np.roll(edge, 1, 0) | np.roll(edge, 1, 1)


def _block_any(mask: np.ndarray, step: int) -> np.ndarray:
    """``mask`` in blocks of ``step`` × ``step`` (the last ones cut by the far edges): True where any of a block's
    pixels is. One OR of each of the ``step²`` offsets' strided views (a pass over the mask in all, several times
    faster than numpy's reduction over the two short axes of a 4-D view)."""
    small = np.zeros((-(-mask.shape[0] // step), -(-mask.shape[1] // step)), bool)
    for row in range(step):
        for col in range(step):
            part = mask[row::step, col::step]
            small[:part.shape[0], :part.shape[1]] |= part
    return small


#: Type-2 patient and study attributes a derived object copies from its source: present, possibly empty.
SEG_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
             "StudyID", "AccessionNumber", "ReferringPhysicianName")
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: ContentDate/Time of a SEG whose source has no valid date: fixed, so that outputs are reproducible.
DEFAULT_CONTENT = ("19700101", "000000")


def _valid_date(value) -> bool:
    if not _DATE.match(str(value)):
        return False
    try:
        datetime.date(int(str(value)[:4]), int(str(value)[4:6]), int(str(value)[6:8]))
    except ValueError:
        return False
    return True


#: Enumerated values (DICOM PS3.3) of the copied attributes that have them.
ENUMERATED = {"PatientSex": {"M", "F", "O"}, "PatientSexNeutered": {"ALTERED", "UNALTERED"},
              "SmokingStatus": {"YES", "NO", "UNKNOWN"}, "PatientIdentityRemoved": {"YES", "NO"},
              "PregnancyStatus": {"1", "2", "3", "4"}}
_UID = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")
#: Longest value (characters) of the string VRs whose length PS3.5 bounds.
_MAX_LENGTH = {"CS": 16, "SH": 16, "LO": 64, "AE": 16, "DS": 16, "IS": 12, "UI": 64, "ST": 1024, "LT": 10240}


def _valid_vm(count: int, vm: str) -> bool:
    """``count`` values allowed by a dictionary VM such as ``1``, ``2``, ``1-3``, ``1-n`` or ``2-2n``."""
    if vm.isdigit():
        return count == int(vm)
    low, _, high = vm.partition("-")
    if high.endswith("n"):
        step = int(high[:-1] or 1)
        return count >= int(low) and count % step == 0
    return int(low) <= count <= int(high)


def _valid_text(vr: str, text: str) -> bool:
    """One value (as text) valid for its VR (PS3.5 table 6.2-1): characters, form and length."""
    if len(text) > _MAX_LENGTH.get(vr, 1 << 16) or (vr not in ("ST", "LT", "UT") and "\\" in text):
        return False
    if vr == "CS":
        return re.fullmatch(r"[A-Z0-9 _]*", text) is not None
    if vr == "DA":
        return _valid_date(text)
    if vr == "TM":
        return _TIME.match(text.strip()) is not None
    if vr == "AS":
        return re.fullmatch(r"\d{3}[DWMY]", text) is not None
    if vr == "UI":
        return _UID.match(text) is not None
    if vr in ("DS", "IS"):
        try:
            number = float(text) if vr == "DS" else int(text)
        except ValueError:
            return False
        return bool(np.isfinite(number)) and (vr == "DS" or -2**31 <= number < 2**31)
    if vr == "PN":
        return all(len(group) <= 64 and group.count("^") <= 4 for group in text.split("="))
    return True


def _invalid(keyword: str, element) -> bool:
    """True when a copied attribute's value is not valid DICOM for its VR, VM or enumerated values
    (a validator such as ``dciodvfy`` would reject the derived object); an empty value is valid."""
    from pydicom.datadict import dictionary_VM

    value = element.value
    if value is None or value == "" or element.VR == "SQ":
        return False
    values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    if not _valid_vm(len(values), dictionary_VM(keyword)):
        return True
    texts = [str(v) for v in values]
    if keyword == "PatientOrientation":  # row and column directions: letters A, P, R, L, H, F only
        return not all(re.fullmatch(r"[APRLHF]+", t) for t in texts)
    if keyword in ENUMERATED:
        return not all(t in ENUMERATED[keyword] for t in texts)
    return not all(_valid_text(element.VR, t) for t in texts)


@functools.lru_cache(maxsize=16)
def copied_attributes(sop_class_uid: str) -> dict:
    """{keyword: type} of the root attributes of the Patient and Study modules of the source's IOD: what
    highdicom copies into a derived object (the type-2 ones of :data:`SEG_TYPE2` where it does not know the IOD).
    Cached: building highdicom's tables takes about 0.08 s; callers must not change the dict."""
    try:
        from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map

        modules = get_iod_module_map()[get_sop_class_iod_map()[str(sop_class_uid)]]
        attributes = get_module_attribute_map()
        return {str(item["keyword"]): str(item["type"]) for module in modules if module["ie"] in ("Patient", "Study")
                for item in attributes[module["key"]] if not item["path"]}
    except Exception:  # an IOD highdicom's tables lack, or tables moved in another highdicom version
        return dict.fromkeys(SEG_TYPE2, "2")


def valid_spacing(spacing) -> list[float] | None:
    """A PixelSpacing value as two positive finite floats, else None (it is not copied into a SEG)."""
    try:
        values = [float(v) for v in spacing]
    except (TypeError, ValueError):
        return None
    return values if len(values) == 2 and all(np.isfinite(v) and v > 0 for v in values) else None


def _checked_attributes(source) -> dict:
    """{keyword: type} of the attributes the SEG copies from its source: the type-2 ones of :data:`SEG_TYPE2`
    first (in that order), then the other Patient and Study attributes, then PatientOrientation (type 2C in
    General Image, which the SEG writer copies itself). Sequences are copied as they are."""
    from pydicom.datadict import dictionary_VR

    sop_class = source.get("SOPClassUID") or getattr(getattr(source, "file_meta", None), "MediaStorageSOPClassUID", "")
    others = {k: t for k, t in copied_attributes(str(sop_class)).items()
              if k not in SEG_TYPE2 and not k.endswith("UID") and dictionary_VR(k) != "SQ"
              and k in source}
    return {**dict.fromkeys(SEG_TYPE2, "2"), **others, "PatientOrientation": "2C"}


def seg_source(dataset, seed: str = "") -> tuple:
    """(a copy of ``dataset`` highdicom accepts, the keywords filled or generated in it).

    Legal de-identified files lack type-2 attributes or carry malformed ones, and some lack their
    UIDs; real files carry values their VR forbids (CBIS-DDSM: PatientOrientation ``CC``). Whatever the
    source's defects, the SEG must be valid DICOM: an attribute the SEG copies is kept only when its value
    is valid for its VR, VM and enumerated values; else a type-2 (or 2C) one becomes empty and a type-3
    one is left out (:func:`_checked_attributes`). Missing UIDs are derived from ``seed`` (the source
    file's hash: deterministic), an unknown character set becomes UTF-8. The keywords so emptied, left
    out or generated are returned, in that order. ``dataset`` itself is never changed.
    pydicom's warnings about malformed values are swallowed here: they would print patient data.
    """
    from pydicom.charset import python_encoding
    from pydicom.uid import generate_uid

    filled = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = copy.deepcopy(dataset)
        charset = source.get("SpecificCharacterSet")
        charsets = list(charset) if isinstance(charset, MultiValue) else [charset] if charset else []
        if any(str(c).strip() not in python_encoding for c in charsets):
            source.SpecificCharacterSet = "ISO_IR 192"
            filled.append("SpecificCharacterSet")
        for keyword, kind in _checked_attributes(source).items():
            try:
                bad = (keyword in SEG_TYPE2 and keyword not in source) or (
                    keyword in source and _invalid(keyword, source[keyword]))
            except Exception:  # a value pydicom cannot even parse
                bad = True
            if bad:
                if keyword in source:
                    del source[keyword]
                if kind.startswith("2"):  # type 2 and 2C: present, possibly empty; type 3 and 1C: left out
                    setattr(source, keyword, "")
                filled.append(keyword)
        meta = getattr(dataset, "file_meta", None)
        for keyword, fallback in (("SOPClassUID", "MediaStorageSOPClassUID"),
                                  ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
                                  ("StudyInstanceUID", None), ("SeriesInstanceUID", None)):
            if not source.get(keyword):
                value = meta.get(fallback) if meta is not None and fallback else None
                if not value:
                    value = SECONDARY_CAPTURE if keyword == "SOPClassUID" else generate_uid(
                        entropy_srcs=[seed, keyword])
                setattr(source, keyword, value)
                filled.append(keyword)
    return source, filled


def _content_date_time(source) -> tuple[str, str]:
    """The source's own content (else acquisition, series, study) date and time: never the clock."""
    for prefix in ("Content", "Acquisition", "Series", "Study"):
        date, time = str(source.get(prefix + "Date", "") or ""), str(source.get(prefix + "Time", "") or "")
        if _valid_date(date):
            return date, time if _TIME.match(time) else DEFAULT_CONTENT[1]
    return DEFAULT_CONTENT


def _pin_clock_and_uids(seg, date_time: tuple[str, str], dimension_uid: str) -> None:
    """Replace what highdicom takes from the clock or a random UID: the date and time of the source,
    a dimension organisation UID derived like the SEG's own UIDs."""
    date, time = date_time
    seg.ContentDate, seg.ContentTime = date, time
    seg.InstanceCreationDate, seg.InstanceCreationTime = date, time
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time
    for sequence in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in seg.get(sequence, []):
            if "DimensionOrganizationUID" in item:
                item.DimensionOrganizationUID = dimension_uid


def write_seg(path: str, source_dataset, mask: np.ndarray, model_name: str = "MammoFCN",
              model_hash: str = "", source_hash: str = "") -> tuple[str, list]:
    """A DICOM Segmentation (highdicom, BINARY, one segment "lesion") referencing ``source_dataset``.

    Returns the path and the keywords filled in a copy of the source (see :func:`seg_source`). It
    reads back with ``highdicom.seg.segread`` to the exact mask. Where the source has a valid PixelSpacing,
    an explicit PixelMeasuresSequence (with a nominal slice thickness) is given, which ``segread``
    needs. Its UIDs derive from the source SOP instance and ``model_hash``, its content date and time from
    the source: the same model on the same scan writes the same bytes.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    source, filled = seg_source(source_dataset, source_hash)
    algorithm = hd.AlgorithmIdentificationSequence(name="mammo-seg", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
    spacing = valid_spacing(source.get("PixelSpacing") or ())
    measures = hd.PixelMeasuresSequence(pixel_spacing=spacing, slice_thickness=1.0) if spacing else None
    if spacing is None and "PixelSpacing" in source:  # 0, negative, NaN or not two numbers: not copied
        del source.PixelSpacing
        filled.append("PixelSpacing")
    identity = [str(source.SOPInstanceUID), model_hash]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # single-component PatientName of dataset ids
        seg = hd.seg.Segmentation(
            source_images=[source], pixel_array=mask.astype(bool),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
            series_instance_uid=generate_uid(entropy_srcs=identity + ["series"]), series_number=900,
            sop_instance_uid=generate_uid(entropy_srcs=identity + ["instance"]), instance_number=1,
            manufacturer="mammo-seg", manufacturer_model_name=model_name, software_versions=__version__,
            device_serial_number="0", pixel_measures=measures, omit_empty_frames=False)
    _pin_clock_and_uids(seg, _content_date_time(source), generate_uid(entropy_srcs=identity + ["dimensions"]))
    seg.PatientOrientation = source.get("PatientOrientation", "")  # type 2C in General Image
    with atomic.replacing(path) as tmp:
        seg.save_as(tmp)
    return path, filled


def _bounding_crop(mask: np.ndarray) -> tuple[tuple[int, int], tuple[slice, slice]]:
    """((top, left), slices) of the smallest box holding every True pixel of ``mask`` (none: its first pixel)."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0), (slice(0, 1), slice(0, 1))
    return (int(rows[0]), int(columns[0])), (slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1))


def lesion_report(mask: np.ndarray, prob: np.ndarray, pixel_area_mm2: float | None,
                  min_area_mm2: float = 0.0, max_probability: float | None = None) -> dict:
    """Lesion count, areas (px; mm² when a pixel's area, :meth:`ScanGrid.pixel_area_mm2`, is known), boxes,
    probabilities, and the whole-scan image-level call (:mod:`mammo_seg.detection`). ``prob`` is read on the
    mask's pixels alone; the scan's maximum is ``max_probability`` when given, else ``prob``'s."""
    (top, left), crop = _bounding_crop(mask)  # labels in raster order: the same inside the crop
    components, _ = lesion_components(mask[crop])
    lesions = []
    mm2 = (lambda px: None) if pixel_area_mm2 is None else (lambda px: round(px * pixel_area_mm2, 3))
    for region in regionprops(components, intensity_image=prob[crop]):
        r0, c0, r1, c1 = (int(v) for v in region.bbox)
        r0, r1, c0, c1 = r0 + top, r1 + top, c0 + left, c1 + left
        lesions.append({"area_px": int(region.area),
                        "area_mm2": mm2(region.area),
                        "bbox": [r0, c0, r1, c1],
                        "centroid": [round(float(region.centroid[0]) + top, 1),
                                     round(float(region.centroid[1]) + left, 1)],
                        "max_probability": round(float(region.intensity_max), 4),
                        "mean_probability": round(float(region.intensity_mean), 4)})
    lesions.sort(key=lambda lesion: -lesion["area_px"])
    area = int(np.count_nonzero(mask))  # as int(mask.sum()), without a pass of int64 additions
    return {"lesion_count": len(lesions), "lesion_area_px": area,
            "lesion_area_mm2": mm2(area),
            "image_positive": bool(image_positive(area, mask.size)),
            "image_rule": f"positive when it has a lesion of at least {min_area_mm2:g} mm² (smaller ones are dropped)",
            "max_probability": round(float(prob.max() if max_probability is None else max_probability), 4)
            if prob.size else 0.0, "lesions": lesions}


def write_json(path: str, content: dict) -> str:
    """Prediction JSON: indented by 2, keys sorted, no final newline."""
    return atomic.write_json(path, content, final_newline=False)
