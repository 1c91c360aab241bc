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
