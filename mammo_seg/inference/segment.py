"""One scan into a segmentation: the scan resampled to the model's training grid, the network's probabilities (one
model or an ensemble's mean), back on the scan's grid, breast region, threshold and minimum area (the operating
point, unless the options say otherwise). :class:`Segmenter` is the Python entry point; ``mammo predict``
(:mod:`mammo_seg.inference.predict`) runs the same steps over a folder."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from mammo_seg.data.resolution import ScanGrid
from mammo_seg.detection import min_area_px
from mammo_seg.errors import MammoError
from mammo_seg.inference import prediction_output as po
from mammo_seg.inference.postprocess import breast_region
from mammo_seg.inference.scan_files import read_checked
from mammo_seg.inference.scan_probability import lesion_mask, scan_probability

FORMATS = tuple(po.SCAN_FILES)


@dataclass
class PredictOptions:
    threshold: float | None = None  # None: the model's recorded operating point, else 0.5
    min_area_mm2: float | None = None  # smallest lesion reported; None: the operating point's, else 0 (any)
    flip: bool | None = None  # left-right flip test-time augmentation; None: the operating point's, else off
    tile: int | None = None  # None: one pass when it fits, else exact strips (sliding_window)
    overlap: float = 0.25
    batch_size: int = 4
    formats: tuple = po.DEFAULT_FORMATS  # FORMATS: every output, the probability map too
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

    probability: np.ndarray | None  # float32, values of float16 (as the NPZ stores them); None when not asked for
    mask: np.ndarray  # bool: probability ≥ threshold, lesions under the minimum area dropped
    grid: ScanGrid  # the scan's spacing and its training grid
    pixel_area_mm2: float  # the area of one pixel of the scan's grid (ScanGrid.pixel_area_mm2): lesion areas
    lesion_probability: np.ndarray  # the probabilities on every pixel of the mask (elsewhere possibly 0)
    max_probability: float  # the largest probability on the scan's grid

def training_input(loaded, scan, options: PredictOptions) -> tuple[ScanGrid, np.ndarray]:
    """The scan's grid and the scan resampled to the model's training grid: the network's input."""
    grid = loaded.resolution.grid(scan.pixels.shape, scan.meta.spacing_mm, options.spacing_mm,
                                  whole=not options.all_images)
    return grid, grid.image_to_training(scan.pixels)

def input_channels(loaded) -> int:
    """The model's input channels: 1, the scan; 2, the scan and the other breast (``data.contralateral``)."""
    return int(getattr(loaded.model, "channels", 1) or 1)


def other_breast(loaded, small: np.ndarray, path: str | None, options: PredictOptions) -> np.ndarray:
    """The second input channel of a model trained with ``data.contralateral``: the scan at ``path`` (the same
    woman's other breast in the same view) placed beside ``small`` (:mod:`mammo_seg.data.contralateral`);
    zeros when ``path`` is None, as in training for a scan without one. A contralateral scan that cannot be
    read or resampled raises :class:`MammoError` naming it."""
    from mammo_seg.data.contralateral import contralateral_channel

    if path is None:
        return np.zeros_like(small)
    try:
        other, _ = read_checked(path, options.force)
        grid = loaded.resolution.grid(other.pixels.shape, other.meta.spacing_mm, options.spacing_mm,
                                      whole=not options.all_images)
    except MammoError as e:
        raise MammoError(e.where or path, f"contralateral scan: {e.reason}") from None
    return contralateral_channel(small, other.pixels, grid)


def network_probabilities(predictor, small: np.ndarray, options: PredictOptions,
                          other: np.ndarray | None = None) -> np.ndarray:
    """The network's probabilities on the training grid (one pass or windows, see sliding_window); ``other``:
    the second input channel of a two-channel model (:func:`other_breast`)."""
    from mammo_seg.inference.sliding_window import predict_probabilities

    image = small if other is None else np.stack([small, other], axis=-1)
    return predict_probabilities(predictor, image, tile=options.tile, overlap=options.overlap,
                                 batch_size=options.batch_size, flip=bool(options.flip))

def on_scan_grid(grid: ScanGrid, scan, small: np.ndarray, prob: np.ndarray, options: PredictOptions,
                 probability: bool = True) -> Segmentation:
    """Probabilities on the training grid → the scan's grid, float16 values, lesions (threshold, minimum area).

    ``options`` must hold the threshold and minimum area (see :func:`resolve_options`). Without ``probability``
    the map on the scan's grid is computed only where the lesions and the maximum need it
    (:mod:`~mammo_seg.inference.scan_probability`): the mask and the lesions are the same.
    """
    if options.breast_mask:
        prob[~breast_region(small)] = 0.0
    # stored as float16: threshold the stored values, so that the NPZ reproduces the mask exactly
    whole = scan_probability(grid, prob) if probability else None
    pixel_area = grid.pixel_area_mm2(scan.meta.spacing_mm)
    lesions = lesion_mask(grid, prob, options.threshold, min_area_px(options.min_area_mm2, pixel_area), whole)
    return Segmentation(whole, lesions.mask, grid, pixel_area, lesions.values, lesions.maximum)

def segment(loaded, predictor, scan, options: PredictOptions, probability: bool = True,
            contralateral: str | None = None) -> Segmentation:
    """The network on one scan read by the reader: training grid → probabilities → back → lesions (and the whole
    probability map on the scan's grid, unless ``probability`` is False).

    ``options`` must hold the threshold and minimum area (see :func:`resolve_options`). ``contralateral``: the
    other breast's scan file, for a two-channel model (None: a zero channel).
    """
    grid, small = training_input(loaded, scan, options)
    other = other_breast(loaded, small, contralateral, options) if input_channels(loaded) == 2 else None
    prob = network_probabilities(predictor, small, options, other)
    return on_scan_grid(grid, scan, small, prob, options, probability)

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
    ``mammo predict -m runs/mias_real`` writes for that scan. A model trained with the other breast as a second
    channel takes it from ``contralateral`` (a file), else from the scan's folder as predict finds it
    (:mod:`mammo_seg.inference.pairs`), else a zero channel; :attr:`contralateral` says which it used.
    """

    def __init__(self, model_path: str, options: PredictOptions = PredictOptions()):
        from mammo_seg.inference.model import load_model
        from mammo_seg.inference.sliding_window import Predictor

        self.loaded = load_model(_readable_model(model_path))
        self.options, self.operating_point = resolve_options(options, self.loaded.path)
        self.predictor = Predictor(self.loaded.models)

    def __call__(self, path: str, contralateral: str | None = None) -> Segmentation:
        scan, _ = read_checked(path, self.options.force)
        if input_channels(self.loaded) == 2 and contralateral is None:
            contralateral = pair_in_folder(path)
        self.contralateral = contralateral
        return segment(self.loaded, self.predictor, scan, self.options, contralateral=contralateral)


def pair_in_folder(path: str) -> str | None:
    """The contralateral scan of ``path`` among the scan files of its own folder
    (:mod:`mammo_seg.inference.pairs`)."""
    from mammo_seg.inference.pairs import contralateral_files
    from mammo_seg.inference.scan_files import SCAN_SUFFIXES

    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    files = sorted({path} | {os.path.join(folder, n) for n in os.listdir(folder)
                             if n.lower().endswith(SCAN_SUFFIXES) and os.path.isfile(os.path.join(folder, n))})
    return contralateral_files(files).get(path)
