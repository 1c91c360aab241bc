"""DICOM Structured Report of predict's lesions: a TID 1500 Measurement Report beside the SEG.

A PACS or viewer that reads SR shows the measurements without our JSON. The report is a
Comprehensive 3D SR made with highdicom; each lesion of the scan's JSON (in the JSON's order, so
that "lesion 2" names the same lesion in both) is one Planar ROI group (TID 1410) that

* references the SEG's segment 1 ("lesion", the union of all lesions) on the source image,
* is tracked as ``lesion N`` with a UID derived from the SEG,
* holds its area (mm², or pixels when the spacing is unknown), its maximum probability and its
  centroid (row and column on the source image, in pixels).

DICOM has no standard concept for an image coordinate as a number, so the centroid uses two codes
of this project's private coding scheme :data:`SCHEME` (declared in the report, as DICOM asks).
Like the SEG, the report copies the source's patient and study attributes (through
:func:`mammo_seg.inference.writers.seg_source`, so that both reference the same source UIDs), and
its UIDs and dates derive from the SEG: the same SEG gives the same bytes.
"""

from __future__ import annotations

import warnings

from mammo_seg import __version__, atomic

#: Private coding scheme of the centroid's concepts ("99" prefix: a local scheme, PS3.16 8.2).
SCHEME = "99MAMMOSEG"
SEGMENT_NUMBER = 1  # the SEG's one segment, "lesion"
#: What a scan's JSON says (as ``dicom_outputs``) when its file is not DICOM.
NOT_DICOM = ("no SEG or SR written: the scan is not a DICOM file, so there is no source image (with its "
             "patient, study and UIDs) for them to reference")


def _concepts():
    """(name, unit) codes of the measurements; imported late: highdicom is slow to import."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    pixels = hd.sr.CodedConcept("{pixels}", "UCUM", "pixels")
    return {
        "area_mm2": (codes.SCT.Area, codes.UCUM.SquareMillimeter),
        "area_px": (codes.SCT.Area, pixels),
        "max_probability": (codes.DCM.Probability, hd.sr.CodedConcept("1", "UCUM", "no units")),
        "centroid_row": (hd.sr.CodedConcept("centroid-row", SCHEME, "Centroid row"), pixels),
        "centroid_column": (hd.sr.CodedConcept("centroid-col", SCHEME, "Centroid column"), pixels),
        "lesion_count": (hd.sr.CodedConcept("lesion-count", SCHEME, "Number of lesions"),
                         hd.sr.CodedConcept("{lesions}", "UCUM", "lesions")),
    }


def _measurement(key: str, value: float, algorithm, concepts: dict, **kwargs):
    """A TID 300 measurement of the concept ``key`` of ``concepts`` (:func:`_concepts`, built once a report)."""
    import highdicom as hd

    name, unit = concepts[key]
    return hd.sr.Measurement(name=name, value=value, unit=unit, algorithm_id=algorithm, **kwargs)


def _lesion_group(number: int, lesion: dict, seg, source, algorithm, uid_seed: list, concepts: dict):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    known = lesion.get("area_mm2") is not None
    area = _measurement("area_mm2" if known else "area_px", float(lesion["area_mm2" if known else "area_px"]),
                        algorithm, concepts)
    row, column = lesion["centroid"]
    measurements = [area,
                    _measurement("max_probability", float(lesion["max_probability"]), algorithm, concepts,
                                 derivation=codes.SCT.Maximum),
                    _measurement("centroid_row", float(row), algorithm, concepts),
                    _measurement("centroid_column", float(column), algorithm, concepts)]
    source_image = hd.sr.SourceImageForSegmentation(str(source.SOPClassUID), str(source.SOPInstanceUID))
    segment = hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID), frame_number=1,
        segment_number=SEGMENT_NUMBER, source_image=source_image)
    # The SEG's one frame is its one segment; DICOM allows a segment number or a frame number, not both
    # (PS3.3 C.10-3), which highdicom writes.
    del segment[0].ReferencedSOPSequence[0].ReferencedFrameNumber
    tracking = hd.sr.TrackingIdentifier(uid=generate_uid(entropy_srcs=uid_seed + [f"lesion {number}"]),
                                        identifier=f"lesion {number}")
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_segment=segment, finding_type=codes.SCT.Lesion,
        finding_category=codes.SCT.MorphologicallyAbnormalStructure, algorithm_id=algorithm,
        measurements=measurements)


def _scan_group(report: dict, source, algorithm, uid_seed: list, concepts: dict):
    """The whole scan's group (TID 1501): its number of lesions and its maximum probability."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    measurements = [_measurement("lesion_count", int(report["lesion_count"]), algorithm, concepts),
                    _measurement("max_probability", float(report["max_probability"]), algorithm, concepts,
                                 derivation=codes.SCT.Maximum)]
    tracking = hd.sr.TrackingIdentifier(uid=generate_uid(entropy_srcs=uid_seed + ["scan"]), identifier="scan")
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, algorithm_id=algorithm, measurements=measurements,
        source_images=[hd.sr.SourceImageForMeasurementGroup(str(source.SOPClassUID),
                                                            str(source.SOPInstanceUID))])


def write_sr(path: str, seg_path: str, source_dataset, report: dict, source_hash: str = ""):
    """Write the Measurement Report of a scan's lesion report (its JSON's ``lesion_count``,
    ``max_probability`` and ``lesions``) to ``path``; returns ``path``.

    ``seg_path`` is the SEG predict wrote from ``source_dataset`` (with the same ``source_hash``);
    the report references its segment and the source image, and lists both as evidence. The first
    group is the whole scan (``scan``: number of lesions, maximum probability), so that a scan without
    lesions has a report too; then one group per lesion.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from mammo_seg.inference.writers import _content_date_time, _pin_clock_and_uids, seg_source

    source, _ = seg_source(source_dataset, source_hash)
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    seed = [str(seg.SOPInstanceUID), "sr"]
    algorithm = hd.sr.AlgorithmIdentification(name="mammo-seg", version=__version__)
    concepts = _concepts()
    groups = [_scan_group(report, source, algorithm, seed, concepts)]
    groups += [_lesion_group(number, lesion, seg, source, algorithm, seed, concepts)
               for number, lesion in enumerate(report["lesions"], 1)]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=seed + ["device"]), name="mammo-seg", manufacturer_name="mammo-seg",
            model_name=str(seg.get("ManufacturerModelName", "MammoFCN"))))
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.Mammography,
        imaging_measurements=groups, title=codes.DCM.ImagingMeasurementReport)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # single-component PatientName of dataset ids
        sr = hd.sr.Comprehensive3DSR(
            evidence=[source, seg], content=content[0],
            series_instance_uid=generate_uid(entropy_srcs=seed + ["series"]), series_number=901,
            sop_instance_uid=generate_uid(entropy_srcs=seed + ["instance"]), instance_number=1,
            manufacturer="mammo-seg", is_complete=True, series_description="mammo-seg lesion measurements")
    _pin_clock_and_uids(sr, _content_date_time(source), "")
    scheme = pydicom.Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "mammo-seg local codes"
    scheme.CodingSchemeResponsibleOrganization = "mammo-seg"
    sr.CodingSchemeIdentificationSequence = [scheme]
    with atomic.replacing(path) as tmp:
        sr.save_as(tmp)
    return path

