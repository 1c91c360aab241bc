import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data")


def pytest_collection_modifyitems(config, items):
    """Test files with slow tests run first (the README runs the tests in two processes, a file to a
    process, in collection order): the long files start at once instead of one ending the run alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: alphabetical within each group


# Small phantom sets shared by the tests of one session (generated once, read-only afterwards).
CBIS_PATIENTS, CBIS_SCALE, CBIS_SEED = 5, 0.12, 7
MIAS_IMAGES, MIAS_SEED = 18, 3


@pytest.fixture(scope="session")
def cbis_raw(tmp_path_factory):
    from mammo_seg.synthetic.cbis_ddsm import write_cbis_ddsm

    out = str(tmp_path_factory.mktemp("cbis_raw"))
    write_cbis_ddsm(out, CBIS_PATIENTS, seed=CBIS_SEED, scale=CBIS_SCALE, progress=False)
    return out


@pytest.fixture(scope="session")
def mias_raw(tmp_path_factory):
    from mammo_seg.synthetic.mias import write_mias

    out = str(tmp_path_factory.mktemp("mias_raw"))
    write_mias(out, MIAS_IMAGES, seed=MIAS_SEED, progress=False)
    return out


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """A tiny untrained model whose training data had a nominal spacing of 0.05 mm (as CBIS-DDSM)."""
    import keras

    from mammo_seg.data.resolution import Resolution
    from mammo_seg.models.fcn import MammoFCN

    keras.utils.set_random_seed(3)
    model = MammoFCN(width=0.125, resolution=Resolution(scale=0.25, nominal_spacing_mm=0.05).to_dict())
    path = str(tmp_path_factory.mktemp("model") / "model.keras")
    model.save(path)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def write_dicom(path, pixels, **kwargs):
    """A single-frame DICOM with the writer the phantoms use (UIDs derived from the path)."""
    from mammo_seg.synthetic.dicom import image_dataset, make_uid, save

    ds = image_dataset(np.asarray(pixels), patient_id="TEST", study_uid=make_uid(path, "study"),
                       series_uid=make_uid(path, "series"), sop_uid=make_uid(path, "sop"), **kwargs)
    save(ds, path)
    return ds


def write_phantom_predictions(mias_raw, folder):
    """A hand-made predict output of four MIAS phantom scans: every lesion found (p 0.9) on one, all missed on
    another, one false positive (10 x 10 px at 0.2 mm: 4 mm², p 0.8) on a lesion-free scan, and a failed one
    (threshold 0.5, minimum area 2 mm²). Returns the records and the (found, missed, normal, failed) cases."""
    import json

    from PIL import Image

    from data_prep.mias import collect_cases
    from mammo_seg.data.cases import lesion_masks
    from mammo_seg.io import file_sha256

    cases, _, _ = collect_cases(mias_raw, progress=False)
    found, missed, failed = [c for c in cases if c.abnormalities][:3]
    normal = next(c for c in cases if not c.abnormalities)
    os.makedirs(folder, exist_ok=True)
    records = []
    for case in (found, missed, normal):
        prob = np.zeros((1024, 1024), np.float16)
        if case is found:
            for lesion in lesion_masks(case, prob.shape):
                prob[lesion] = 0.9
        if case is normal:
            prob[100:110, 200:210] = 0.8
        np.savez_compressed(os.path.join(folder, f"{case.scan_id}_prob.npz"), probability=prob)
        Image.fromarray((prob >= 0.5).astype(np.uint8) * 255).save(os.path.join(folder, f"{case.scan_id}_mask.png"))
        records.append({"id": case.scan_id, "status": "ok", "sha256": file_sha256(case.scan_path),
                        "file_size": os.path.getsize(case.scan_path), "spacing_mm": 0.2,
                        "source": os.path.basename(case.scan_path),
                        "outputs": {"mask": f"{case.scan_id}_mask.png", "prob": f"{case.scan_id}_prob.npz"}})
    records.append({"id": failed.scan_id, "status": "error", "reason": "boom",
                    "source": os.path.relpath(failed.scan_path, mias_raw)})
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({"input": mias_raw, "options": {"threshold": 0.5, "min_area_mm2": 2.0}, "scans": records}, f)
    return records, (found, missed, normal, failed)
