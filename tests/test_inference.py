"""Full-scan prediction, its outputs, export and evaluation."""

import json
import os

import keras
import numpy as np
import pydicom
import pytest
import tensorflow as tf
from PIL import Image

from conftest import write_dicom
from test_predict_robust import dciodvfy_errors
from test_sr import sr_lesions
from data_prep.ground_truth import ground_truth
from mammo_seg.data.resolution import Resolution
from mammo_seg.errors import MammoError
from mammo_seg.evaluate import case_metrics, evaluate
from mammo_seg.inference.postprocess import breast_region
from mammo_seg.inference.predict import FORMATS, PredictOptions, file_id, predict
from mammo_seg.inference.sr import NOT_DICOM
from mammo_seg.inference.sliding_window import (Predictor, activation_bytes, gaussian_weights, predict_probabilities,
                                                window_starts)
from mammo_seg.inference.writers import lesion_report
from mammo_seg.models.fcn import MammoFCN

RESOLUTION = Resolution(scale=0.25, nominal_spacing_mm=0.05).to_dict()  # 0.2 mm per training pixel; CBIS-DDSM data


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    keras.utils.set_random_seed(3)
    model = MammoFCN(width=0.125, resolution=RESOLUTION)
    path = str(tmp_path_factory.mktemp("model") / "model.keras")
    model.save(path)
    return path


def test_window_layout_and_weights():
    assert window_starts(100, 100, 0.25) == [0] and window_starts(60, 100, 0.25) == [0]
    starts = window_starts(250, 100, 0.25)
    assert starts[0] == 0 and starts[-1] == 150 and all(b - a <= 75 for a, b in zip(starts, starts[1:]))
    w = gaussian_weights(64)
    assert w.shape == (64, 64) and w.max() == 1.0 and w.min() >= 1e-3 and np.allclose(w, w.T)


def test_windows_equal_one_pass_for_a_pointwise_model():
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Conv2D(1, 1, kernel_initializer=keras.initializers.Constant(4.0),
                                  bias_initializer=keras.initializers.Constant(-2.0))(inputs)
    predictor = Predictor(keras.Model(inputs, outputs))
    image = np.random.default_rng(0).random((150, 110), dtype=np.float32)
    one = predict_probabilities(predictor, image)
    windows = predict_probabilities(predictor, image, tile=48, overlap=0.25, batch_size=3)
    np.testing.assert_allclose(windows, one, atol=1e-6)
    np.testing.assert_allclose(one, 1 / (1 + np.exp(-(4 * image - 2))), atol=1e-6)
    calls = []

    class Counting(Predictor):
        def __call__(self, batch):
            calls.append(batch.shape)
            return super().__call__(batch)

    counting = Counting(predictor.model)
    np.testing.assert_array_equal(predict_probabilities(counting, image), one)
    assert calls == [(1, 150, 110, 1)]  # the memory of one pass is there
    calls.clear()
    two_windows = activation_bytes(predictor.model, 2 * 48 * 48)
    limited = predict_probabilities(counting, image, tile=48, batch_size=4, memory_bytes=two_windows)
    assert calls == [(2, 48, 48, 1)] * 6  # 4 x 3 windows, two at a time: the memory of two
    np.testing.assert_array_equal(limited, windows)
    calls.clear()
    stripped = predict_probabilities(counting, image, memory_bytes=activation_bytes(predictor.model, image.size) - 1)
    assert calls == [] and np.abs(stripped - one).max() <= 1e-6  # one pass would not fit: exact strips, no window


def test_lesion_report_exact_areas_and_image_call():
    mask = np.zeros((100, 80), bool)
    mask[10:20, 10:15] = True  # 50 px
    mask[50:52, 60:63] = True  # 6 px
    prob = np.where(mask, 0.9, 0.1).astype(np.float32)
    prob[11, 11] = 0.99
    report = lesion_report(mask, prob, 0.1 * 0.2, min_area_mm2=0.1)
    assert report["lesion_count"] == 2 and report["lesion_area_px"] == 56
    assert report["lesion_area_mm2"] == pytest.approx(56 * 0.02)
    first = report["lesions"][0]
    assert first["bbox"] == [10, 10, 20, 15] and first["area_mm2"] == pytest.approx(1.0)
    assert first["centroid"] == [14.5, 12.0] and report["lesions"][1]["centroid"] == [50.5, 61.0]
    assert first["max_probability"] == 0.99 and report["image_positive"]  # a whole scan: any lesion calls it
    assert report["image_rule"].startswith("positive when it has a lesion of at least 0.1 mm²")
    assert lesion_report(mask, prob, None)["lesion_area_mm2"] is None
    assert not lesion_report(np.zeros_like(mask), prob, None)["image_positive"]


def test_breast_region_drops_labels_and_background():
    scan = np.zeros((200, 150), np.float32)
    scan[40:180, :100] = 0.5  # breast against the chest wall
    scan[60:70, 20:30] = 0.02  # a dark spot inside (fat) stays breast
    scan[5:20, 120:145] = 0.95  # film label
    region = breast_region(scan)
    assert region[100, 50] and region[65, 25] and not region[10, 130] and not region[190, 140]


def test_fill_holes_is_scipys_binary_fill_holes():
    from scipy import ndimage

    from mammo_seg.inference.postprocess import fill_holes

    rng = np.random.default_rng(5)
    for _ in range(40):
        region = rng.random(tuple(rng.integers(1, 40, 2))) < rng.random()
        np.testing.assert_array_equal(fill_holes(region), ndimage.binary_fill_holes(region))
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6], ring[2:5, 2:5] = True, False
    np.testing.assert_array_equal(fill_holes(ring), np.pad(np.ones((5, 5), bool), 1))


def test_a_scan_of_zeros_and_ones_alone_has_two_grey_levels_wherever_its_grey_would_be():
    from mammo_seg.inference.scan_files import two_grey_levels

    mask = np.zeros((40, 50), np.float32)
    mask[5:20, 7:30] = 1.0
    assert two_grey_levels(mask) and two_grey_levels(np.zeros((1, 1), np.float32))
    for row, col in ((16, 32), (1, 1), (39, 49)):  # on the sample of every 16th pixel and row; beside it; the corner
        grey = mask.copy()
        grey[row, col] = 0.25
        assert not two_grey_levels(grey), (row, col)


def test_mask_and_probability_files_decode_to_the_arrays_written(tmp_path):
    from mammo_seg.inference.prediction_output import PredictionOutput

    rng = np.random.default_rng(6)
    prob = rng.random((37, 23)).astype(np.float16).astype(np.float32)
    output = PredictionOutput(str(tmp_path))
    record = output.write_scan(("mask", "prob"), scan_id="p", record={"id": "p"}, pixels=prob, probability=prob,
                               mask=prob >= 0.5, threshold=0.5, factor=0.25)
    assert record["outputs"] == {"mask": "p_mask.png", "prob": "p_prob.npz"}
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "p_mask.png")), (prob >= 0.5) * 255)
    with np.load(tmp_path / "p_prob.npz") as stored:
        assert stored["probability"].dtype == np.float16 and float(stored["resampling_factor"]) == 0.25
        np.testing.assert_array_equal(stored["probability"].astype(np.float32), prob)
    np.testing.assert_array_equal(output.probability(record), prob)


def test_file_ids_drop_uids():
    root = "/data"
    path = "/data/Mass-Test_P_00001_LEFT_CC/1.3.6.1.4.1.9590.100.1.2.111/1.3.6.1.4.1.9590.100.1.2.222/000000.dcm"
    assert file_id(path, root) == "Mass-Test_P_00001_LEFT_CC_000000"
    assert file_id("/data/a b/c.dcm", root) == "a-b_c"


@pytest.fixture(scope="module")
def scans(tmp_path_factory, cbis_raw):
    """A folder with two real-format phantom mammograms, a CT slice, a broken file and a mask."""
    from data_prep.cbis_ddsm import collect_cases

    folder = tmp_path_factory.mktemp("scans")
    cases, _, _ = collect_cases(cbis_raw, progress=False)
    for case in cases[:2]:
        os.symlink(case.scan_path, folder / f"{case.scan_id}.dcm")
    ct = np.random.default_rng(0).integers(0, 2000, (64, 64), dtype=np.uint16)
    write_dicom(str(folder / "ct.dcm"), ct, modality="CT", sop_class="1.2.840.10008.5.1.4.1.1.2",
                spacing_mm=0.8)  # a CT slice's pixels: 51 mm
    (folder / "broken.dcm").write_bytes(b"DICM" * 10)
    os.symlink(cases[0].abnormalities[0].mask_path, folder / "roi_mask.dcm")
    return str(folder), cases[:2]


def test_predict_a_folder_of_dicoms(model_file, scans, tmp_path):
    folder, cases = scans
    out = str(tmp_path / "pred")
    summary = predict(model_file, folder, out, PredictOptions(formats=FORMATS), progress=False)
    by_id = {s["id"]: s for s in summary["scans"]}
    assert summary["counts"] == {"scans": 5, "ok": 2, "failed": 2, "skipped": 1,
                                 "positive": summary["counts"]["positive"]}
    assert "not a mammogram (Modality CT)" in by_id["ct"]["reason"]
    assert "DICOM" in by_id["broken"]["reason"]
    assert by_id["roi_mask"]["status"] == "skipped"
    assert by_id["roi_mask"]["reason"] == ("SeriesDescription says 'roi mask': not a full mammogram; "
                                           "--all-images includes it")
    import highdicom as hd

    for case in cases:
        record = by_id[case.scan_id]
        source = pydicom.dcmread(case.scan_path)
        mask = np.asarray(Image.open(os.path.join(out, f"{case.scan_id}_mask.png"))) > 0
        assert mask.shape == source.pixel_array.shape == tuple(record["shape"])
        prob = np.load(os.path.join(out, f"{case.scan_id}_prob.npz"))["probability"]
        np.testing.assert_array_equal(mask, prob.astype(np.float32) >= 0.5)
        spacing = float(source.PixelSpacing[0])
        assert record["resampling_factor"] == pytest.approx(spacing / 0.2)
        assert record["lesion_area_mm2"] == pytest.approx(mask.sum() * spacing ** 2, rel=1e-6)
        seg_path = os.path.join(out, f"{case.scan_id}_seg.dcm")
        seg = hd.seg.segread(seg_path)
        back = seg.get_pixels_by_source_instance(source_sop_instance_uids=[source.SOPInstanceUID],
                                                 segment_numbers=[1])
        np.testing.assert_array_equal(back[0, :, :, 0].astype(bool), mask)
        assert (seg.PatientID, seg.StudyInstanceUID) == (source.PatientID, source.StudyInstanceUID)
        assert os.path.isfile(os.path.join(out, f"{case.scan_id}_overlay.png"))
        sr_path = os.path.join(out, f"{case.scan_id}_sr.dcm")
        assert dciodvfy_errors(sr_path) == []
        lesions = sr_lesions(sr_path)
        with open(os.path.join(out, f"{case.scan_id}.json")) as f:
            written = json.load(f)["lesions"]
        assert written  # the tiny model finds one lesion on each phantom: the comparison is not empty
        assert [lesion["values"][("42798000", "SCT")] for lesion in lesions] == [
            (lesion["area_mm2"], "mm2") for lesion in written]
        assert {(lesion["seg"], lesion["source"]) for lesion in lesions} <= {(seg.SOPInstanceUID,
                                                                              source.SOPInstanceUID)}
        assert pydicom.dcmread(sr_path).CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == \
            source.StudyInstanceUID
        # nothing but the SEG and the SR names the patient or the study
        for name in os.listdir(out):
            if not name.endswith(("_seg.dcm", "_sr.dcm")):
                data = open(os.path.join(out, name), "rb").read()
                assert source.PatientID.encode() not in data and source.StudyInstanceUID.encode() not in data
    forced = predict(model_file, os.path.join(folder, "ct.dcm"), str(tmp_path / "forced"),
                     PredictOptions(force=True, formats=("mask", "json")), progress=False)
    assert forced["counts"]["ok"] == 1


def test_predict_windows_and_bad_arguments(model_file, scans, tmp_path):
    folder, cases = scans
    path = os.path.join(folder, f"{cases[0].scan_id}.dcm")
    one = predict(model_file, path, str(tmp_path / "one"), PredictOptions(formats=("prob",)), progress=False)
    win = predict(model_file, path, str(tmp_path / "win"), PredictOptions(formats=("prob",), tile=64), progress=False)
    assert one["counts"]["ok"] == win["counts"]["ok"] == 1
    a = np.load(tmp_path / "one" / f"{cases[0].scan_id}_prob.npz")["probability"].astype(np.float32)
    b = np.load(tmp_path / "win" / f"{cases[0].scan_id}_prob.npz")["probability"].astype(np.float32)
    assert np.abs(a - b).mean() < 0.05  # windows see less context at their borders, nothing more
    with pytest.raises(MammoError, match="--format"):
        predict(model_file, path, str(tmp_path / "x"), PredictOptions(formats=("jpeg",)), progress=False)
    with pytest.raises(MammoError, match="no scan files"):
        predict(model_file, str(tmp_path / "one"), str(tmp_path / "y"), progress=False)
    with pytest.raises(MammoError, match="no such model"):
        predict(str(tmp_path / "nothing"), path, str(tmp_path / "z"), progress=False)


def test_export_gives_the_keras_probabilities(model_file, tmp_path):
    from mammo_seg.export import export_model
    from mammo_seg.inference.model import load_model

    out = str(tmp_path / "saved")
    info = export_model(model_file, out)
    assert info["resolution"]["scale"] == 0.25
    served = tf.saved_model.load(out)
    scan = np.random.default_rng(2).random((77, 51), dtype=np.float32)
    expected = tf.sigmoid(load_model(model_file).model(scan[None, :, :, None])).numpy()[0, :, :, 0]
    np.testing.assert_allclose(served.signatures["serving_default"](scan=tf.constant(scan))["output_0"].numpy(),
                               expected, atol=1e-6)
    np.testing.assert_allclose(served.serve_batch(tf.constant(scan[None, :, :, None])).numpy()[0, :, :, 0],
                               expected, atol=1e-6)


def test_case_metrics_exact():
    ref = np.zeros((10, 10), bool)
    ref[:2, :5] = True  # 10 px
    pred = np.zeros((10, 10), bool)
    pred[1:3, :5] = True  # 10 px, 5 overlapping
    m = case_metrics(pred, ref)
    assert (m["TP"], m["FP"], m["FN"], m["TN"]) == (5, 5, 5, 85)
    assert m["IoU"] == pytest.approx(1 / 3) and m["Dice"] == pytest.approx(0.5)
    empty = case_metrics(np.zeros_like(ref), np.zeros_like(ref))
    assert np.isnan(empty["IoU"]) and np.isnan(empty["Dice"]) and not empty["image_reference_positive"]


def _fake_predictions(folder, cases, masks):
    """A predict output whose masks are given: what evaluate reads."""
    from mammo_seg.io import file_sha256

    os.makedirs(folder, exist_ok=True)
    scans = []
    for case, mask in zip(cases, masks):
        Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(folder, f"{case.scan_id}_mask.png"))
        scans.append({"id": case.scan_id, "status": "ok", "sha256": file_sha256(case.scan_path),
                      "file_size": os.path.getsize(case.scan_path), "outputs": {"mask": f"{case.scan_id}_mask.png"}})
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({"scans": scans}, f)


def test_evaluate_against_raw_and_prep_ground_truth(cbis_raw, tmp_path):
    from data_prep.cbis_ddsm import collect_cases
    from data_prep.prepare import prepare
    from mammo_seg.data.cases import load_case

    cases, _, _ = collect_cases(cbis_raw, progress=False)
    cases = cases[:3]
    truth = [load_case(c)[1] for c in cases]
    half = [t.copy() for t in truth]
    for h in half:  # keep the top half of every lesion's rows: IoU = kept / all
        rows = np.flatnonzero(h.any(axis=1))
        h[rows[len(rows) // 2]:] = False
    _fake_predictions(str(tmp_path / "perfect"), cases, truth)
    _fake_predictions(str(tmp_path / "half"), cases, half)
    perfect = evaluate(str(tmp_path / "perfect"), ground_truth(cbis_raw), str(tmp_path / "s1.json"))
    # whole scans: called positive when any lesion is reported
    assert perfect["mean"]["1"]["IoU"] == 1.0 and perfect["image_level"]["recall"] == 1.0
    assert perfect["lesion_images"] == {"cases": 3, "Dice": 1.0, "IoU": 1.0}
    # the original's tile rule, on request: called positive above 1/750 of the image, so tiny lesions are missed
    called = np.mean([t.sum() > t.size / 750 for t in truth])
    tile_rule = evaluate(str(tmp_path / "perfect"), ground_truth(cbis_raw), image_area_fraction=1 / 750)
    assert tile_rule["image_level"]["recall"] == pytest.approx(called)
    assert len(perfect["metric_per_case"]) == 3 and perfect["unmatched_predictions"] == []
    assert json.load(open(tmp_path / "s1.json"))["labels"] == {"1": "lesion"}
    partial = evaluate(str(tmp_path / "half"), ground_truth(cbis_raw))
    expected = np.mean([h.sum() / t.sum() for h, t in zip(half, truth)])
    assert partial["mean"]["1"]["IoU"] == pytest.approx(expected) and partial["mean"]["1"]["precision"] == 1.0
    out = str(tmp_path / "prep")
    prepare("cbis-ddsm", cbis_raw, out, tiles=(), full_scans=True, resolution=Resolution(scale=0.2),
            progress=False)
    prep_truth = evaluate(str(tmp_path / "perfect"), ground_truth(out))
    assert len(prep_truth["metric_per_case"]) == 3 and prep_truth["mean"]["1"]["IoU"] > 0.9
    with pytest.raises(MammoError, match="not a prep output"):
        ground_truth(str(tmp_path / "perfect"))


@pytest.fixture(scope="module")
def mias_full(mias_raw, tmp_path_factory):
    """A MIAS whole-scan prep at 0.4 mm per training pixel (factor 0.5 for MIAS's 200 µm) and a model trained on it."""
    from data_prep.prepare import prepare
    from mammo_seg.data.features import iterate_records
    from mammo_seg.data.prep_output import Manifest

    out = str(tmp_path_factory.mktemp("mias_full"))
    prepare("mias", mias_raw, out, tiles=(), full_scans=True, resolution=Resolution(scale=0.125), progress=False)
    manifest = Manifest.load(os.path.join(out, "full")).content
    shapes = {}
    for split in manifest["splits"].values():
        for name in split["shards"]:
            for rec in iterate_records(os.path.join(out, "full", name)):
                shapes[rec["scan_id"].decode()] = list(rec["image"].shape[:2])
    keras.utils.set_random_seed(3)
    model = str(tmp_path_factory.mktemp("mias_model") / "model.keras")
    MammoFCN(width=0.125, resolution=manifest["resolution"]).save(model)
    return model, shapes, out


def test_scans_without_spacing_are_predicted_on_the_grid_prep_used(mias_raw, mias_full, tmp_path):
    model, shapes, _ = mias_full
    scan_id = sorted(shapes)[0]
    folder = tmp_path / "in"
    folder.mkdir()
    pgm = os.path.join(mias_raw, f"{scan_id}.pgm")
    os.symlink(pgm, folder / f"{scan_id}.pgm")
    Image.open(pgm).save(folder / f"{scan_id}_copy.png")
    summary = predict(model, str(folder), str(tmp_path / "pred"), PredictOptions(formats=("json", "seg", "sr")),
                      progress=False)
    records = {r["id"]: r for r in summary["scans"]}
    assert not [name for name in os.listdir(tmp_path / "pred") if name.endswith(".dcm")]  # no SEG, no SR
    for name in (scan_id, f"{scan_id}_copy"):
        record = records[name]
        assert record["dicom_outputs"] == NOT_DICOM  # why there is no SEG or SR
        assert record["model_input_shape"] == shapes[scan_id], name  # exactly prep's whole-scan record
        assert record["spacing_source"] == "training data nominal" and record["spacing_mm"] == 0.2
        assert record["resampling_factor"] == pytest.approx(0.5)
    # --spacing overrides every scan's spacing
    override = predict(model, str(folder), str(tmp_path / "pred2"), PredictOptions(formats=("json",), spacing_mm=0.1),
                       progress=False)
    h, w = shapes[scan_id]
    for record in override["scans"]:
        assert "dicom_outputs" not in record  # neither was asked for
        assert record["spacing_source"] == "override" and record["resampling_factor"] == pytest.approx(0.25)
        assert record["model_input_shape"] == [round(h / 2), round(w / 2)]


def test_a_model_without_nominal_spacing_refuses_scans_without_spacing(mias_raw, tmp_path):
    model_file = str(tmp_path / "model.keras")
    MammoFCN(width=0.125, resolution=Resolution(scale=0.25).to_dict()).save(model_file)
    pgm = sorted(n for n in os.listdir(mias_raw) if n.endswith(".pgm"))[0]
    summary = predict(model_file, os.path.join(mias_raw, pgm), str(tmp_path / "p"), PredictOptions(formats=("json",)),
                      progress=False)
    (record,) = summary["scans"]
    assert record["status"] == "error" and "no pixel spacing" in record["reason"] and "--spacing" in record["reason"]
    given = predict(model_file, os.path.join(mias_raw, pgm), str(tmp_path / "q"),
                    PredictOptions(formats=("json",), spacing_mm=0.2), progress=False)
    assert given["scans"][0]["resampling_factor"] == pytest.approx(1.0)  # 0.2 mm scan, 0.2 mm training pixels


def test_evaluate_scores_lesions_one_by_one_from_the_probability_maps(mias_raw, tmp_path):
    """A found lesion scan, a missed one, a false positive on a normal scan and a failed prediction."""
    from conftest import write_phantom_predictions
    from data_prep.mias import CLASS_KIND

    folder = tmp_path / "pred"
    records, (found, missed, normal, failed) = write_phantom_predictions(mias_raw, str(folder))
    result = evaluate(str(folder), ground_truth(mias_raw), str(tmp_path / "evaluation.json"))
    n_found, n_missed, n_failed = (len(c.abnormalities) for c in (found, missed, failed))
    lesions = n_found + n_missed + n_failed
    point = result["detection"]["at_operating_point"]
    assert (point["lesions"], point["found"], point["false_positives"]) == (lesions, n_found, 1)
    assert point["fp_per_image"] == pytest.approx(1 / 4) and point["normal_with_detection_rate"] == 1.0
    assert set(point["sensitivity_by_kind"]) <= set(CLASS_KIND)  # MIAS's own types: CIRC, SPIC, CALC, …
    froc = result["detection"]["froc"]
    assert froc["min_area_mm2"] == 2.0 and froc["images"] == 4
    assert froc["sensitivity_at_fp_per_image"]["0.25"] == pytest.approx(n_found / lesions)
    assert result["counts"]["failed_predictions"] == 1 and result["counts"]["scans"] == 4
    assert result["lesion_images"]["cases"] == 2 and result["lesion_images"]["Dice"] == pytest.approx(0.5)
    assert "NaN" not in open(tmp_path / "evaluation.json").read()
    # intervals over women: MIAS's two breasts of one woman go together
    women = {c.patient_id for c in (found, missed, normal, failed)}
    assert result["intervals"]["women"] == len(women) and result["intervals"]["scans"] == 4
    assert result["intervals"]["groups"]["all"]["lesions"] == lesions
    assert result["intervals"]["groups"]["all"]["sensitivity_at_operating_point"]["value"] == pytest.approx(
        n_found / lesions)
    # the same records in two folders (the folds of a cross-validation) pool into the same evaluation
    import shutil

    halves = [tmp_path / "a", tmp_path / "b"]
    for half, part in zip(halves, (records[:2], records[2:])):
        half.mkdir()
        for record in part:
            for name in record.get("outputs", {}).values():
                shutil.copy(folder / name, half / name)
        with open(half / "summary.json", "w") as f:
            json.dump({"input": mias_raw, "options": {"threshold": 0.5, "min_area_mm2": 2.0}, "scans": part}, f)
    pooled = evaluate([str(h) for h in halves], ground_truth(mias_raw))
    assert pooled["detection"] == result["detection"] and pooled["counts"] == result["counts"]
    assert pooled["intervals"] == result["intervals"]
    with open(halves[1] / "summary.json", "w") as f:
        json.dump({"input": mias_raw, "options": {"threshold": 0.3, "min_area_mm2": 2.0}, "scans": records[2:]}, f)
    with pytest.raises(MammoError, match="other thresholds or minimum areas"):
        evaluate([str(h) for h in halves], ground_truth(mias_raw))


def test_segmenter_gives_what_predict_writes_with_the_recorded_operating_point(mias_raw, mias_full, tmp_path):
    import shutil

    from skimage.measure import label

    from mammo_seg.inference.predict import Segmenter

    model, shapes, _ = mias_full
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(model, run / "best.keras")
    with open(run / "operating_point.json", "w") as f:
        json.dump({"model": "best.keras", "threshold": 0.45, "min_area_mm2": 3.0}, f)
    pgm = os.path.join(mias_raw, f"{sorted(shapes)[0]}.pgm")
    result = Segmenter(str(run))(pgm)
    out = str(tmp_path / "pred")
    summary = predict(str(run), pgm, out, PredictOptions(formats=("mask", "prob", "json")), progress=False)
    (record,) = summary["scans"]
    assert summary["operating_point"] == "operating_point.json" and record["threshold"] == 0.45
    assert summary["options"]["min_area_mm2"] == 3.0
    np.testing.assert_array_equal(result.mask, np.asarray(Image.open(os.path.join(out, f"{record['id']}_mask.png"))) > 0)
    stored = np.load(os.path.join(out, f"{record['id']}_prob.npz"))["probability"].astype(np.float32)
    np.testing.assert_array_equal(result.probability, stored)
    sizes = np.bincount(label(result.mask).ravel())[1:]
    assert sizes.size == record["lesion_count"] and (sizes >= 75).all()  # 3 mm² at 0.2 mm: at least 75 px
    explicit = predict(str(run), pgm, str(tmp_path / "p2"), PredictOptions(threshold=0.6, min_area_mm2=0.0,
                                                                          formats=("json",)), progress=False)
    assert explicit["options"]["threshold"] == 0.6 and explicit["options"]["min_area_mm2"] == 0.0


def test_operating_point_is_chosen_on_validation_scans_and_read_back(mias_full, tmp_path):
    import shutil

    from mammo_seg.data.prep_output import PrepOutput
    from mammo_seg.inference.operating_point import (MIN_AREAS_MM2, THRESHOLDS, choose_operating_point,
                                                     load_operating_point)

    model, _, data = mias_full
    split = next(s for s in ("val", "test") if any(v["split"] == s for v in PrepOutput(data).scans().values()))
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(model, run / "best.keras")
    record = choose_operating_point(str(run / "best.keras"), data, split=split, max_normal_rate=0.25)
    assert record["threshold"] in THRESHOLDS and record["min_area_mm2"] in MIN_AREAS_MM2
    assert record["chosen_on"]["scans"] == sum(v["split"] == split for v in PrepOutput(data).scans().values())
    assert record["validation"]["threshold"] == record["threshold"]
    point, source = load_operating_point(str(run / "best.keras"))
    assert (point.threshold, point.min_area_mm2, source) == (record["threshold"], record["min_area_mm2"],
                                                             "operating_point.json")
    shutil.copy(model, run / "last.keras")  # recorded for best.keras only: another model file keeps the defaults
    assert load_operating_point(str(run / "last.keras")) == (load_operating_point(str(tmp_path / "none.keras"))[0],
                                                             "default")
    (run / "operating_point.json").write_text('{"model": "best.keras", "threshold": 1.5, "min_area_mm2": 0}')
    with pytest.raises(MammoError, match="out of range"):
        load_operating_point(str(run / "best.keras"))
