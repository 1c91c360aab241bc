"""Prep's per-scan work, run in a worker process: read the scan, build its mask, resample both once to the
training grid, cut its tiles (and its whole-scan record, with the other breast where ``prep.contralateral`` asks for
it) from that, encode them
(:mod:`mammo_seg.data.features`) and count what they add to the statistics (:class:`CaseResult`).

Every scan gets its own random stream, seeded by (seed, scan id, tile size), so its tiles do not depend
on which worker processed it or in what order. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from mammo_seg.data import features
from mammo_seg.data.cases import Case, Problem, stored_mask
from mammo_seg.data.contralateral import contralateral_channel
from mammo_seg.data.prep_config import PrepConfig
from mammo_seg.data.phase_times import PhaseTimes
from mammo_seg.data.prep_output import FULL
from mammo_seg.data.prep_stats import OutputStats, scan_output_stats
from mammo_seg.data.resolution import PREP
from mammo_seg.data.tiling import TileCounts, TrainingScan, full_scan_record, tile_scan
from mammo_seg.errors import MammoError
from mammo_seg.io import file_sha256, not_a_mammogram, read_scan


@dataclass
class CaseResult:
    """One scan's records (PNG bytes and placement, per output folder) and statistics, or its problem."""

    scan_id: str
    records: dict[str, list[dict]] = field(default_factory=dict)  # output name -> record dicts
    stats: dict[str, OutputStats] = field(default_factory=dict)  # output name -> this scan's statistics
    raw: dict = field(default_factory=dict)  # raw_min, raw_max, raw_mean of the scan
    sha256: str = ""  # of the scan file: lets evaluation match predictions to this ground truth
    problem: Problem | None = None
    times: PhaseTimes = field(default_factory=PhaseTimes)  # seconds per phase of this scan (never written out)


def _stream(seed: int, scan_id: str, tile: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(scan_id.encode()), tile])


def process_case(case: Case, config: PrepConfig) -> CaseResult:
    """Read, tile and encode one case. Anything raised for this case becomes ``result.problem``: one bad
    case never stops the batch."""
    try:
        return _process_case(case, config)
    except MammoError as e:
        return CaseResult(case.scan_id, problem=Problem(e.where or case.scan_path, e.reason, case.scan_id))
    except Exception as e:  # noqa: BLE001 - a batch job reports any failure of one item and goes on
        return CaseResult(case.scan_id, problem=Problem(case.scan_path, f"unexpected error: {type(e).__name__}: {e}",
                                                        case.scan_id))


def worker_died(case: Case) -> CaseResult:
    """The result of a case whose worker process died twice (see :func:`mammo_seg.data.ordered_pool.in_order`)."""
    return CaseResult(case.scan_id, problem=Problem(case.scan_path, "the worker process reading this scan died "
                                                                   "(out of memory?)", case.scan_id))


def _process_case(case: Case, config: PrepConfig) -> CaseResult:
    result = CaseResult(case.scan_id)
    phase = result.times.phase
    with phase("read"):
        scan = read_scan(case.scan_path)
    reason = not_a_mammogram(scan.meta)
    if reason:
        raise MammoError(case.scan_path, reason)
    with phase("mask"):
        mask, rois = stored_mask(case, scan.pixels.shape, config.ignore_kinds)
    grid = config.resolution.grid(scan.pixels.shape, scan.meta.spacing_mm, context=PREP)
    result.raw = {"raw_min": scan.meta.raw_min, "raw_max": scan.meta.raw_max, "raw_mean": scan.meta.raw_mean}
    with phase("hashing"):
        result.sha256 = file_sha256(case.scan_path)
    with phase("resampling"):
        training = TrainingScan.resample(scan.pixels, mask, grid)
    for tile in config.tiles:
        with phase("tiling"):
            tiles, counts = tile_scan(training, rois, tile, _stream(config.seed, case.scan_id, tile), config.tiling)
        _collect(result, case.source, str(tile), tiles, counts)
    if config.full_scans:
        _collect(result, case.source, FULL, [full_scan_record(training)], TileCounts(full=1))
        if config.contralateral and case.contralateral_path:
            with phase("contralateral"):
                other = _contralateral(case.contralateral_path, training.image, config)
            if other is not None:
                result.records[FULL][0]["contralateral"] = features.encode_image(other)
    return result


def _contralateral(path: str, image: np.ndarray, config: PrepConfig) -> np.ndarray | None:
    """The other breast beside ``image`` (the scan on the training grid) as stored (uint16), or None when its
    scan cannot be used: that scan's own case reports why, and this one is stored with a zero channel."""
    try:
        other = read_scan(path)
        if not_a_mammogram(other.meta):
            return None
        grid = config.resolution.grid(other.pixels.shape, other.meta.spacing_mm, context=PREP)
        return features.image_to_uint16(contralateral_channel(image, other.pixels, grid))
    except Exception:  # noqa: BLE001 - the pair's failure is its own case's problem, never this scan's
        return None


def _collect(result: CaseResult, source: str, name: str, tiles, counts: TileCounts) -> None:
    with result.times.phase("encoding"):
        result.records[name] = [{"image": features.encode_image(t.image), "shape": list(t.image.shape),
                                 "mask": features.encode_png(t.mask),
                                 "origin": [int(t.origin[0]), int(t.origin[1])], "crop_size": int(t.crop_size),
                                 "scale": float(t.scale)} for t in tiles]
    with result.times.phase("statistics"):
        result.stats[name] = scan_output_stats(source, tiles, counts)
