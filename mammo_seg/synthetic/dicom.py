"""Writing single-frame grayscale DICOM files like a real mammography export (pydicom).

Deterministic: UIDs are derived from the names they identify, and no dates or times of the run are
written, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import os

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MAMMOGRAPHY_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
UID_ROOT = "1.3.6.1.4.1.9590.100.1.2."  # the root CBIS-DDSM's UIDs use


def make_uid(*parts) -> str:
    """A deterministic UID under :data:`UID_ROOT` for the given name parts."""
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts])


def image_dataset(pixels: np.ndarray, *, patient_id: str, study_uid: str, series_uid: str, sop_uid: str,
                  modality: str = "MG", sop_class: str = SECONDARY_CAPTURE, instance_number: int = 1,
                  laterality: str | None = None, view: str | None = None,
                  spacing_mm: float | None = None, photometric: str = "MONOCHROME2",
                  series_description: str = "", bits_stored: int | None = None,
                  rescale: tuple[float, float] | None = None) -> FileDataset:
    """A DICOM dataset holding ``pixels`` (2D uint8 or uint16) with the usual patient/study/series UIDs.

    ``patient_id`` is also used as PatientName, as CBIS-DDSM does (no real identity exists).
    ``rescale`` = (slope, intercept) adds a modality LUT.
    """
    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image_dataset takes 2D uint8/uint16 pixels, got {pixels.dtype} {pixels.shape}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID_ROOT + "0.1"
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.Modality = modality
    ds.ConversionType = "WSD"
    ds.BodyPartExamined = "BREAST" if modality == "MG" else ""
    ds.SeriesDescription = series_description
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = "F" if modality == "MG" else ""
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.PatientOrientation = ""  # type 2C in General Image: present, unknown for a digitised film
    if laterality:  # ImageLaterality only: a series-level Laterality beside it is an error (dciodvfy)
        ds.ImageLaterality = laterality
    if view:
        ds.ViewPosition = view
    if spacing_mm:
        ds.PixelSpacing = [f"{spacing_mm:.6g}", f"{spacing_mm:.6g}"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if rescale is not None:
        ds.RescaleSlope = f"{rescale[0]:.6g}"
        ds.RescaleIntercept = f"{rescale[1]:.6g}"
        ds.RescaleType = "US"
    ds.PixelData = pixels.tobytes()
    return ds


def save(ds: FileDataset, path: str | os.PathLike) -> None:
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    ds.save_as(os.fspath(path), enforce_file_format=True)
