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
from mammo_seg.inference.header_messages import header_warnings
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

@dataclass
class OtherBreast:
    """The second input channel of a model trained with ``data.contralateral``, and where it came from."""

    channel: np.ndarray  # float32, the scan's training shape: the placed pair, or zeros
    path: str | None  # the pair's file; None: none was found, or it could not be used (``note`` says why)
    note: str | None = None


def other_breast(loaded, small: np.ndarray, path: str | None, options: PredictOptions) -> OtherBreast:
    """The scan at ``path`` (the same woman's other breast in the same view) placed beside ``small``
    (:mod:`mammo_seg.data.contralateral`); zeros when ``path`` is None, as in training for a scan without one, and
    when the file cannot be used (a note says why): the scan itself is still segmented."""
    from mammo_seg.data.contralateral import contralateral_channel

    if path is not None:
        try:
            with header_warnings():
                other, _ = read_checked(path, options.force)
                grid = loaded.resolution.grid(other.pixels.shape, other.meta.spacing_mm, options.spacing_mm,
                                              whole=not options.all_images)
            return OtherBreast(contralateral_channel(small, other.pixels, grid), path)
        except Exception as e:  # noqa: BLE001 - the pair's failure never costs the scan its segmentation
            reason = e.reason if isinstance(e, MammoError) else f"{type(e).__name__}: {e}"
            return OtherBreast(np.zeros_like(small), None, f"contralateral scan {os.path.basename(path)} not used "
                                                           f"({reason}): a zero channel instead")
    return OtherBreast(np.zeros_like(small), None)


def network_probabilities(predictor, small: np.ndarray, options: PredictOptions,
                          other: np.ndarray | None = None) -> np.ndarray:
    """The network's probabilities on the training grid (one pass or windows, see sliding_window); ``other``:
    the second input channel of a two-channel model (:func:`other_breast`)."""
    from mammo_seg.data.contralateral import with_other_breast
    from mammo_seg.inference.sliding_window import predict_probabilities

    image = small if other is None else with_other_breast(small, other)
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
            contralateral: str | None = None) -> tuple[Segmentation, OtherBreast | None]:
    """The network on one scan read by the reader: training grid → probabilities → back → lesions (and the whole
    probability map on the scan's grid, unless ``probability`` is False); and the other breast it used (None for a
    one-channel model).

    ``options`` must hold the threshold and minimum area (see :func:`resolve_options`). ``contralateral``: the
    other breast's scan file, for a two-channel model (None: a zero channel).
    """
    grid, small = training_input(loaded, scan, options)
    other = other_breast(loaded, small, contralateral, options) if loaded.channels == 2 else None
    prob = network_probabilities(predictor, small, options, None if other is None else other.channel)
    return on_scan_grid(grid, scan, small, prob, options, probability), other

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

#: ``Segmenter``'s default ``contralateral``: the pair that predict would find in the scan's folder.
IN_FOLDER = object()


class Segmenter:
    """The Python entry point: a trained model with its training grid and operating point; scan in, arrays out.

    ``Segmenter("runs/mias_real")("mdb001.pgm")`` gives the probabilities and mask that
    ``mammo predict -m runs/mias_real`` writes for that scan. A model trained with the other breast as a second
    channel takes it from the scan's folder as predict finds it (:mod:`mammo_seg.inference.pairs`), or from
    ``contralateral`` (a file; None: a zero channel); :attr:`contralateral` says which file it used (None: a zero
    channel) and :attr:`note` why a file was not used.
    """

    def __init__(self, model_path: str, options: PredictOptions = PredictOptions()):
        from mammo_seg.inference.model import load_model
        from mammo_seg.inference.sliding_window import Predictor

        self.loaded = load_model(_readable_model(model_path))
        self.options, self.operating_point = resolve_options(options, self.loaded.path)
        self.predictor = Predictor(self.loaded.models)
        self.contralateral: str | None = None
        self.note: str | None = None
        self._pairs: dict[str, dict] = {}  # folder → its files' pairs, found once

    def __call__(self, path: str, contralateral=IN_FOLDER) -> Segmentation:
        if self.loaded.channels == 1 and contralateral is not IN_FOLDER:
            raise ValueError("contralateral: this model takes the scan alone (one input channel)")
        scan, _ = read_checked(path, self.options.force)
        if self.loaded.channels == 2 and contralateral is IN_FOLDER:
            folder = os.path.dirname(os.path.abspath(path))
            if folder not in self._pairs:
                self._pairs[folder] = pairs_in_folder(folder)
            contralateral = self._pairs[folder].get(os.path.abspath(path))
        result, other = segment(self.loaded, self.predictor, scan, self.options,
                                contralateral=None if contralateral is IN_FOLDER else contralateral)
        self.contralateral, self.note = (other.path, other.note) if other else (None, None)
        return result


def pairs_in_folder(folder: str) -> dict[str, str | None]:
    """{scan file: its pair or None} for the scan files directly in ``folder``, as ``mammo predict`` takes them
    (:func:`~mammo_seg.inference.scan_files.is_scan_file`; :mod:`mammo_seg.inference.pairs`)."""
    from mammo_seg.inference.pairs import contralateral_files
    from mammo_seg.inference.scan_files import is_scan_file

    folder = os.path.abspath(folder)
    return contralateral_files(sorted(p for n in os.listdir(folder) if is_scan_file(p := os.path.join(folder, n))))
