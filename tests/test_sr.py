"""The DICOM Structured Report beside the SEG: valid DICOM, the JSON's exact lesions, the right references."""

import numpy as np
import pydicom
import pytest
from conftest import write_dicom
from test_predict_robust import dciodvfy_errors

from mammo_seg.inference.sr import SCHEME, write_sr
from mammo_seg.inference.writers import lesion_report, write_seg


def by_concept(group) -> dict:
    """{(code value, scheme): (value, unit)} of a measurement group's measurements."""
    return {(m.name.value, m.name.scheme_designator): (m.value, m.unit.value)
            for m in group.get_measurements()}


def sr_lesions(path) -> list:
    """Each Planar ROI group of the report: its tracking id, measurements by concept, and references."""
    import highdicom as hd

    report = hd.sr.srread(path)
    groups = report.content.get_planar_roi_measurement_groups()
    lesions = []
    for group in groups:
        values = by_concept(group)
        frame = group.referenced_segmentation_frame
        lesions.append({"id": group.tracking_identifier, "values": values,
                        "seg": frame.referenced_sop_instance_uid, "segment": frame.referenced_segment_numbers,
                        "source": frame.source_image_for_segmentation.referenced_sop_instance_uid})
    return lesions


def scan_values(path) -> dict:
    """The whole scan's group: {concept: (value, unit)}."""
    import highdicom as hd

    group, = hd.sr.srread(path).content.get_image_measurement_groups()
    assert group.tracking_identifier == "scan"
    return by_concept(group)


@pytest.fixture
def scan(tmp_path):
    """A phantom mammogram (0.1 mm pixels) with two lesions of known area and probability."""
    pixels = np.full((120, 90), 300, np.uint16)
    path = str(tmp_path / "scan.dcm")
    write_dicom(path, pixels, spacing_mm=0.1, laterality="L", view="CC")
    mask = np.zeros(pixels.shape, bool)
    mask[10:30, 20:30] = True  # 200 px = 2 mm²
    mask[80:83, 60:64] = True  # 12 px = 0.12 mm²
    prob = np.where(mask, 0.7, 0.05).astype(np.float32)
    prob[15, 25] = 0.93
    return pydicom.dcmread(path), mask, prob


def test_sr_is_valid_and_reads_back_to_the_json_lesions(scan, tmp_path):
    source, mask, prob = scan
    report = lesion_report(mask, prob, 0.1 * 0.1)
    seg_path, _ = write_seg(str(tmp_path / "scan_seg.dcm"), source, mask, model_hash="m")
    sr_path = write_sr(str(tmp_path / "scan_sr.dcm"), seg_path, source, report)
    assert dciodvfy_errors(sr_path) == []
    sr = pydicom.dcmread(sr_path)
    seg = pydicom.dcmread(seg_path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert (sr.PatientID, sr.StudyInstanceUID) == (source.PatientID, source.StudyInstanceUID)
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    evidence = {item.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == {seg.SOPInstanceUID, source.SOPInstanceUID}
    lesions = sr_lesions(sr_path)
    assert [lesion["id"] for lesion in lesions] == ["lesion 1", "lesion 2"]
    assert scan_values(sr_path) == {("lesion-count", SCHEME): (2, "{lesions}"),
                                    ("122157", "DCM"): (0.93, "1")}
    assert [lesion["values"][("42798000", "SCT")] for lesion in lesions] == [(2.0, "mm2"), (0.12, "mm2")]
    assert [lesion["values"][("122157", "DCM")][0] for lesion in lesions] == [0.93, 0.7]
    assert lesions[0]["values"][("centroid-row", SCHEME)] == (19.5, "{pixels}")
    assert lesions[0]["values"][("centroid-col", SCHEME)] == (24.5, "{pixels}")
    assert lesions[1]["values"][("centroid-row", SCHEME)][0] == 81.0
    for lesion in lesions:
        assert (lesion["seg"], lesion["segment"], lesion["source"]) == (seg.SOPInstanceUID, [1],
                                                                         source.SOPInstanceUID)
    # the same SEG gives the same bytes
    again = write_sr(str(tmp_path / "again_sr.dcm"), seg_path, source, report)
    assert open(again, "rb").read() == open(sr_path, "rb").read()


def test_sr_of_a_scan_without_lesions_and_without_spacing(scan, tmp_path):
    source, mask, prob = scan
    del source.PixelSpacing
    empty = lesion_report(np.zeros_like(mask), prob, None)
    seg_path, _ = write_seg(str(tmp_path / "scan_seg.dcm"), source, np.zeros_like(mask))
    assert dciodvfy_errors(write_sr(str(tmp_path / "empty_sr.dcm"), seg_path, source, empty)) == []
    assert sr_lesions(str(tmp_path / "empty_sr.dcm")) == []
    assert scan_values(str(tmp_path / "empty_sr.dcm"))[("lesion-count", SCHEME)] == (0, "{lesions}")
    report = lesion_report(mask, prob, None)
    path = write_sr(str(tmp_path / "px_sr.dcm"), seg_path, source, report)
    assert dciodvfy_errors(path) == []
    assert [lesion["values"][("42798000", "SCT")] for lesion in sr_lesions(path)] == [(200.0, "{pixels}"),
                                                                                       (12.0, "{pixels}")]
