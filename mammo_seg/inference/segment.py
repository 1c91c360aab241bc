"""One scan into a segmentation: the scan resampled to the model's training grid, the network's probabilities (one
model or an ensemble's mean), back on the scan's grid, breast region, threshold and minimum area (the operating
point, unless the options say otherwise). :class:`Segmenter` is the Python entry point; ``mammo predict``
(:mod:`mammo_seg.inference.predict`) runs the same steps over a folder."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mammo_seg.data.resolution import ScanGrid
from mammo_seg.detection import detection_mask, min_area_px
from mammo_seg.errors import MammoError
from mammo_seg.inference import prediction_output as po
from mammo_seg.inference.postprocess import breast_region
from mammo_seg.inference.scan_files import read_checked

FORMATS = tuple(po.SCAN_FILES)


@dataclass
class PredictOptions:
    threshold: float | None = None  # None: the model's recorded operating point, else 0.5
    min_area_mm2: float | None = None  # smallest lesion reported; None: the operating point's, else 0 (any)
    flip: bool | None = None  # left-right flip test-time augmentation; None: the operating point's, else off
    tile: int | None = None  # None: one pass when it fits, else exact strips (sliding_window)
    overlap: float = 0.25
    batch_size: int = 4
    formats: tuple = FORMATS
    force: bool = False  # run on DICOMs that are not mammograms
    breast_mask: bool = True  # drop findings outside the breast (film labels, markers)
    all_images: bool = False  # also crops and ROI masks (by default only full mammograms)
    spacing_mm: float | None = None  # override every scan's spacing (else PixelSpacing, else the model's nominal)

def _readable_model(path: str) -> str:
    """The model (a ``.keras`` file or an ensemble's ``ensemble.json``), its files checked to be ``.keras``
    archives, so that a corrupt one says so before any scan is read."""
    from mammo_seg.run_dir import check_keras_archive, model_files

    name, files = model_files(path)
    for file in files:
        check_keras_archive(file)
    return name

@dataclass
class Segmentation:
    """One scan's result on its original grid: what ``mammo predict`` writes."""

    probability: np.ndarray  # float32, values of float16 (as the NPZ stores them)
    mask: np.ndarray  # bool: probability ≥ threshold, lesions under the minimum area dropped
    grid: ScanGrid  # the scan's spacing and its training grid
    pixel_area_mm2: float  # the area of one pixel of the scan's grid (ScanGrid.pixel_area_mm2): lesion areas

def training_input(loaded, scan, options: PredictOptions) -> tuple[ScanGrid, np.ndarray]:
    """The scan's grid and the scan resampled to the model's training grid: the network's input."""
    grid = loaded.resolution.grid(scan.pixels.shape, scan.meta.spacing_mm, options.spacing_mm,
                                  whole=not options.all_images)
    return grid, grid.image_to_training(scan.pixels)

def network_probabilities(predictor, small: np.ndarray, options: PredictOptions) -> np.ndarray:
    """The network's probabilities on the training grid (one pass or windows, see sliding_window)."""
    from mammo_seg.inference.sliding_window import predict_probabilities

    return predict_probabilities(predictor, small, tile=options.tile, overlap=options.overlap,
                                 batch_size=options.batch_size, flip=bool(options.flip))

def on_scan_grid(grid: ScanGrid, scan, small: np.ndarray, prob: np.ndarray, options: PredictOptions) -> Segmentation:
    """Probabilities on the training grid → the scan's grid, float16 values, lesions (threshold, minimum area).

    ``options`` must hold the threshold and minimum area (see :func:`resolve_options`).
    """
    if options.breast_mask:
        prob[~breast_region(small)] = 0.0
    # stored as float16: threshold the stored values, so that the NPZ reproduces the mask exactly
    prob = np.clip(grid.image_to_native(prob), 0.0, 1.0).astype(np.float16).astype(np.float32)
    pixel_area = grid.pixel_area_mm2(scan.meta.spacing_mm)
    mask = detection_mask(prob, options.threshold, min_area_px(options.min_area_mm2, pixel_area))
    return Segmentation(prob, mask, grid, pixel_area)

def segment(loaded, predictor, scan, options: PredictOptions) -> Segmentation:
    """The network on one scan read by the reader: training grid → probabilities → back → lesions.

    ``options`` must hold the threshold and minimum area (see :func:`resolve_options`).
    """
    grid, small = training_input(loaded, scan, options)
    prob = network_probabilities(predictor, small, options)
    return on_scan_grid(grid, scan, small, prob, options)

def resolve_options(options: PredictOptions, model_file: str) -> tuple[PredictOptions, str]:
    """``options`` with the threshold, minimum area and flip augmentation the user left open taken from the
    model's operating point (:mod:`mammo_seg.inference.operating_point`), and where they came from."""
    from mammo_seg.inference.operating_point import load_operating_point

    if options.threshold is not None and not 0 < options.threshold < 1:
        raise MammoError("--threshold", "must be between 0 and 1")
    if options.min_area_mm2 is not None and not options.min_area_mm2 >= 0:
        raise MammoError("--min-area", "must be at least 0")
    point, source = load_operating_point(model_file)
    return replace(options, threshold=point.threshold if options.threshold is None else options.threshold,
                   min_area_mm2=point.min_area_mm2 if options.min_area_mm2 is None else options.min_area_mm2,
                   flip=point.flip if options.flip is None else options.flip), source

class Segmenter:
    """The Python entry point: a trained model with its training grid and operating point; scan in, arrays out.

    ``Segmenter("runs/mias_real")("mdb001.pgm")`` gives the probabilities and mask that
    ``mammo predict -m runs/mias_real`` writes for that scan.
    """

    def __init__(self, model_path: str, options: PredictOptions = PredictOptions()):
        from mammo_seg.inference.model import load_model
        from mammo_seg.inference.sliding_window import Predictor

        self.loaded = load_model(_readable_model(model_path))
        self.options, self.operating_point = resolve_options(options, self.loaded.path)
        self.predictor = Predictor(self.loaded.models)

    def __call__(self, path: str) -> Segmentation:
        scan, _ = read_checked(path, self.options.force)
        return segment(self.loaded, self.predictor, scan, self.options)
