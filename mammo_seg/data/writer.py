"""Cases → sharded TFRecords, ``manifest.json`` per tile size, ``problems.csv``.

Determinism and resumability:

* every scan gets its own random stream, seeded by (seed, scan id, tile size), so the tiles do not
  depend on which worker processed the scan or in what order;
* scans are assigned to shards up front (a seeded permutation per split, ``scans_per_shard`` each),
  and a shard holds its scans' tiles in that order: output is byte-identical for any ``--workers``;
* a shard is written to a temporary file in ``OUT/.prep/tmp/`` and renamed, then a small completion
  record is written to ``OUT/.prep/``; a rerun empties ``OUT/.prep/tmp/`` (the only place prep ever
  deletes anything), skips completed shards and redoes the rest, so after ``kill -9`` at any moment
  the same command finishes the job with output identical to an uninterrupted run.

Workers are separate processes (``spawn``) that read scans, tile them and PNG-encode tiles; only
the parent imports TensorFlow, to write the records.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import zlib
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
from tqdm import tqdm

from mammo_seg import __version__, atomic
from mammo_seg.data import features
from mammo_seg.data.cases import Case, Problem, load_case
from mammo_seg.data.prep_output import (FULL, MANIFEST, MANIFEST_VERSION, SHARD_PATTERN, PrepOutput, output_kind,
                                        output_tile_size)
from mammo_seg.data.resolution import Resolution
from mammo_seg.data.tiling import TileCounts, TilingConfig, full_scan_record, tile_scan
from mammo_seg.errors import MammoError, printable
from mammo_seg.io import file_sha256



@dataclass(frozen=True)
class PrepConfig:
    dataset: str
    tiles: tuple[int, ...] = (320, 640)
    resolution: Resolution = Resolution()
    tiling: TilingConfig = TilingConfig()
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    scans_per_shard: int = 64
    full_scans: bool = False

    @property
    def outputs(self) -> list[str]:
        """Output folder names: one per tile size, plus ``full`` for whole scans."""
        return [str(t) for t in self.tiles] + ([FULL] if self.full_scans else [])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tiles"] = list(self.tiles)
        d["resolution"] = self.resolution.to_dict()
        return d


@dataclass
class CaseResult:
    scan_id: str
    records: dict = field(default_factory=dict)  # output name -> list of record dicts (PNG bytes)
    counts: dict = field(default_factory=dict)  # output name -> TileCounts as dict
    positives: dict = field(default_factory=dict)  # output name -> [positive pixels, total pixels, positive tiles]
    tile_stats: dict = field(default_factory=dict)  # output name -> [sum, sum of squares, count, min, max]
    raw: dict = field(default_factory=dict)  # raw_min, raw_max, raw_mean of the scan
    sha256: str = ""  # of the scan file: lets evaluation match predictions to this ground truth
    problem: Problem | None = None


def _stream(seed: int, scan_id: str, tile: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(scan_id.encode()), tile])


def process_case(case: Case, config: PrepConfig) -> CaseResult:
    """Read, tile and encode one case (runs in a worker). Anything raised for this case becomes
    ``result.problem``: one bad case never stops the batch."""
    try:
        return _process_case(case, config)
    except MammoError as e:
        return CaseResult(case.scan_id, problem=Problem(e.where or case.scan_path, e.reason, case.scan_id))
    except Exception as e:  # noqa: BLE001 - a batch job reports any failure of one item and goes on
        return CaseResult(case.scan_id, problem=Problem(case.scan_path, f"unexpected error: {type(e).__name__}: {e}",
                                                        case.scan_id))


def _process_case(case: Case, config: PrepConfig) -> CaseResult:
    result = CaseResult(case.scan_id)
    scan, mask, rois = load_case(case)
    grid = config.resolution.grid(scan.pixels.shape, scan.meta.spacing_mm)
    result.raw = {"raw_min": scan.meta.raw_min, "raw_max": scan.meta.raw_max, "raw_mean": scan.meta.raw_mean}
    result.sha256 = file_sha256(case.scan_path)
    for tile in config.tiles:
        tiles, counts = tile_scan(scan.pixels, mask, rois, tile, grid.factor, _stream(config.seed, case.scan_id, tile),
                                  config.tiling)
        _collect(result, str(tile), tiles, counts)
    if config.full_scans:
        record = full_scan_record(scan.pixels, mask, grid)
        _collect(result, FULL, [record], TileCounts(full=1))
    return result


def _collect(result: CaseResult, name: str, tiles, counts: TileCounts) -> None:
    records, pos, total, pos_tiles = [], 0, 0, 0
    s = s2 = 0.0
    lo, hi = 1.0, 0.0
    for t in tiles:
        records.append({"image": features.encode_png(t.image), "mask": features.encode_png(t.mask),
                        "origin": [int(t.origin[0]), int(t.origin[1])], "crop_size": int(t.crop_size),
                        "scale": float(t.scale)})
        n_pos = int(np.count_nonzero(t.mask))
        pos += n_pos
        pos_tiles += n_pos > 0
        total += t.mask.size
        values = t.image.astype(np.float64) / features.IMAGE_MAX
        s += float(values.sum())
        s2 += float(np.square(values).sum())
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    result.records[name] = records
    result.counts[name] = asdict(counts)
    result.positives[name] = [pos, total, pos_tiles]
    result.tile_stats[name] = [s, s2, total, lo, hi]


@dataclass(frozen=True)
class Shard:
    split: str
    index: int
    total: int
    scan_ids: tuple[str, ...]

    @property
    def name(self) -> str:
        return SHARD_PATTERN.format(split=self.split, index=self.index, total=self.total)


def plan_shards(scan_split: dict[str, str], scans_per_shard: int, seed: int) -> list[Shard]:
    """Assign scans to shards: a seeded permutation per split, ``scans_per_shard`` scans each."""
    shards = []
    for split in ("train", "val", "test"):
        ids = sorted(s for s, sp in scan_split.items() if sp == split)
        if not ids:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
        ids = [ids[i] for i in rng.permutation(len(ids))]
        total = -(-len(ids) // scans_per_shard)
        for i in range(total):
            shards.append(Shard(split, i, total, tuple(ids[i * scans_per_shard:(i + 1) * scans_per_shard])))
    return shards


def prep_tmp_dir(out: str) -> str:
    """The only folder where prep keeps temporaries; emptied at the start of every run."""
    return PrepOutput(out).tmp_dir


def _write_tfrecord(path: str, serialized: list[bytes], tmp_dir: str) -> None:
    import tensorflow as tf

    with atomic.replacing(path, tmp_dir) as tmp, tf.io.TFRecordWriter(tmp) as w:
        for s in serialized:
            w.write(s)


def _fingerprint(config: PrepConfig, cases: list[Case], scan_split: dict[str, str]) -> dict:
    h = hashlib.sha256()
    for c in sorted(cases, key=lambda c: c.scan_id):
        h.update(repr((c.scan_id, c.patient_id, c.scan_path, c.abnormalities, scan_split[c.scan_id])).encode())
    return {"config": config.to_dict(), "cases_sha256": h.hexdigest(), "version": __version__}


def _prepare_state(out: str, fingerprint: dict) -> str:
    state = PrepOutput(out).state_dir
    os.makedirs(state, exist_ok=True)
    path = os.path.join(state, "fingerprint.json")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                previous = json.load(f)
        except (OSError, ValueError) as e:
            raise MammoError(path, f"unreadable prep state ({type(e).__name__}); choose a new --out or delete "
                                   f"{out}") from None
        if previous != fingerprint:
            keys = [k for k in fingerprint["config"] if previous.get("config", {}).get(k) != fingerprint["config"][k]]
            what = f"settings {keys}" if keys else "input data"
            raise MammoError(out, f"holds an unfinished or finished prep with other {what}; "
                                  f"choose a new --out or delete it")
    else:
        atomic.write_json(path, fingerprint, prep_tmp_dir(out))
    shutil.rmtree(prep_tmp_dir(out), ignore_errors=True)  # an interrupted run's temporaries, and only those
    os.makedirs(prep_tmp_dir(out), exist_ok=True)
    return state


def write_dataset(cases: list[Case], scan_split: dict[str, str], config: PrepConfig, out: str,
                  workers: int = 1, problems: list[Problem] = (), extra_manifest: dict | None = None,
                  progress: bool = True, raw_root: str | None = None) -> dict:
    """Tile every case into ``out/<tile>/`` shards; returns the per-output manifests.

    ``out/scans.json`` lists every scan written: patient, split, source, its file (relative to
    ``raw_root``) and the file's SHA-256, by which ``mammo evaluate`` finds it again.
    """
    os.makedirs(out, exist_ok=True)
    state = _prepare_state(out, _fingerprint(config, cases, scan_split))
    for name in config.outputs:
        os.makedirs(PrepOutput(out).folder(name), exist_ok=True)
    by_id = {c.scan_id: c for c in cases}
    shards = plan_shards(scan_split, config.scans_per_shard, config.seed)
    done = {s.name for s in shards if os.path.exists(os.path.join(state, s.name + ".json"))}
    pending = [s for s in shards if s.name not in done]
    n_done = sum(len(s.scan_ids) for s in shards if s.name in done)
    bar = tqdm(total=len(cases), initial=n_done, desc=f"prep {config.dataset}", unit="scan",
               disable=not progress)
    work = [by_id[sid] for s in pending for sid in s.scan_ids]
    task = partial(process_case, config=config)
    results = in_order(task, work, workers, _worker_died)
    try:
        for shard in pending:
            batch = []
            for _ in shard.scan_ids:
                r = next(results)
                if r.problem is not None:
                    tqdm.write(f"problem: {r.problem.line()}", file=sys.stderr)
                batch.append(r)
                bar.update(1)
            _finish_shard(out, state, shard, batch, by_id, config)
    finally:
        bar.close()
        results.close()
    return _finalise(out, state, shards, by_id, config, list(problems), extra_manifest or {}, raw_root)


def _worker_died(case: Case) -> CaseResult:
    return CaseResult(case.scan_id, problem=Problem(case.scan_path, "the worker process reading this scan died "
                                                                   "(out of memory?)", case.scan_id))


def in_order(task, items: list, workers: int, died):
    """``task(item)`` for every item, results in the items' order; ``workers > 1`` runs them in
    ``spawn`` processes, at most ``2 × workers`` ahead. A worker that dies (killed for memory) breaks
    the pool: the earliest unfinished item is retried alone, and if it kills its worker again its
    result is ``died(item)``; the pool is rebuilt for the rest. Never hangs on a dead worker."""
    if workers <= 1 or not items:
        yield from map(task, items)
        return
    from collections import deque
    from concurrent.futures import Future, ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    def new_pool():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(item):
        # A worker may die between two submissions: the pool then refuses new work at once. The
        # item's future carries the breakage, handled below when its turn comes.
        try:
            return pool.submit(task, item)
        except BrokenProcessPool as e:
            refused = Future()
            refused.set_exception(e)
            return refused

    pool, queue, ahead = new_pool(), deque(), iter(items)
    try:
        while True:
            while len(queue) < 2 * workers and (item := next(ahead, _END)) is not _END:
                queue.append((item, submit(item)))
            if not queue:
                return
            item, future = queue.popleft()
            try:
                result = future.result()
            except BrokenProcessPool:
                pool.shutdown(cancel_futures=True)
                pool = new_pool()
                try:
                    result = submit(item).result()
                except BrokenProcessPool:
                    result = died(item)
                    pool.shutdown(cancel_futures=True)
                    pool = new_pool()
                queue = deque((i, submit(i)) for i, _ in queue)
            yield result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


_END = object()


def _add_intensity(table: dict, key: str, stats) -> None:
    """Accumulate tile-pixel statistics [Σx, Σx², n, min, max] under ``key``."""
    s1, s2, n, lo, hi = table.get(key, (0.0, 0.0, 0, 1.0, 0.0))
    table[key] = [s1 + stats[0], s2 + stats[1], n + stats[2], min(lo, stats[3]), max(hi, stats[4])]


def _finish_shard(out: str, state: str, shard: Shard, results: list[CaseResult], by_id, config: PrepConfig):
    summary = {"scans": list(shard.scan_ids), "outputs": {}, "problems": [], "raw": {}, "sha256": {}}
    for r in results:
        if r.problem is not None:
            summary["problems"].append(asdict(r.problem))
        else:
            summary["raw"][r.scan_id] = r.raw
            summary["sha256"][r.scan_id] = r.sha256
    for name in config.outputs:
        serialized = []
        stats = {"records": 0, "scans": 0, "counts": asdict(TileCounts()), "positive_pixels": 0,
                 "pixels": 0, "positive_tiles": 0, "tiles_by_source": {}}
        for r in results:
            if r.problem is not None:
                continue
            case = by_id[r.scan_id]
            stats["scans"] += 1
            for key, value in r.counts[name].items():
                stats["counts"][key] += value
            pos, total, pos_tiles = r.positives[name]
            stats["positive_pixels"] += pos
            stats["pixels"] += total
            stats["positive_tiles"] += pos_tiles
            _add_intensity(stats["tiles_by_source"], case.source, r.tile_stats[name])
            for rec in r.records[name]:
                serialized.append(features.serialize({
                    **rec, "scan_id": case.scan_id, "patient_id": case.patient_id, "split": shard.split,
                    "source": case.source, "abnormality": case.kinds}))
        stats["records"] = len(serialized)
        _write_tfrecord(os.path.join(PrepOutput(out).folder(name), shard.name), serialized, prep_tmp_dir(out))
        summary["outputs"][name] = stats
    atomic.write_json(os.path.join(state, shard.name + ".json"), summary, prep_tmp_dir(out))


def _finalise(out, state, shards, by_id, config: PrepConfig, problems, extra, raw_root) -> dict:
    summaries = {}
    for s in shards:
        with open(os.path.join(state, s.name + ".json")) as f:
            summaries[s.name] = json.load(f)
    problems = list(problems)
    for s in shards:
        problems += [Problem(**p) for p in summaries[s.name]["problems"]]
    _write_problems(PrepOutput(out).problems_file, problems, prep_tmp_dir(out))
    sources = sorted({c.source for c in by_id.values()})
    raw = {src: {"raw_min": None, "raw_max": None, "raw_mean": 0.0, "scans": 0} for src in sources}
    for s in shards:
        for scan_id, r in summaries[s.name]["raw"].items():
            agg = raw[by_id[scan_id].source]
            agg["raw_min"] = r["raw_min"] if agg["raw_min"] is None else min(agg["raw_min"], r["raw_min"])
            agg["raw_max"] = r["raw_max"] if agg["raw_max"] is None else max(agg["raw_max"], r["raw_max"])
            agg["raw_mean"] += r["raw_mean"]
            agg["scans"] += 1
    for agg in raw.values():
        agg["raw_mean"] = agg["raw_mean"] / agg["scans"] if agg["scans"] else None
    scans = {}
    for s in shards:
        for scan_id, digest in summaries[s.name]["sha256"].items():
            case = by_id[scan_id]
            scans[scan_id] = {"patient_id": case.patient_id, "split": s.split, "source": case.source,
                              "file": os.path.relpath(case.scan_path, raw_root) if raw_root else case.scan_path,
                              "sha256": digest}
    atomic.write_json(PrepOutput(out).scans_file, scans, prep_tmp_dir(out))
    manifests = {}
    for name in config.outputs:
        manifest = _manifest(name, shards, summaries, config, raw, extra, len(problems))
        atomic.write_json(os.path.join(PrepOutput(out).folder(name), MANIFEST), manifest, prep_tmp_dir(out))
        manifests[name] = manifest
    return {"manifests": manifests, "problems": problems}


def _manifest(name, shards, summaries, config: PrepConfig, raw, extra, n_problems) -> dict:
    splits, records_per_shard, per_source = {}, {}, {}
    for s in shards:
        st = summaries[s.name]["outputs"][name]
        records_per_shard[s.name] = st["records"]
        sp = splits.setdefault(s.split, {"shards": [], "records": 0, "scans": 0, "positive_tiles": 0,
                                         "positive_pixels": 0, "pixels": 0, **asdict(TileCounts())})
        sp["shards"].append(s.name)
        for key in ("records", "scans", "positive_tiles", "positive_pixels", "pixels"):
            sp[key] += st[key]
        for key, value in st["counts"].items():
            sp[key] += value
        for src, tile_stats in st["tiles_by_source"].items():
            _add_intensity(per_source, src, tile_stats)
    for sp in splits.values():
        sp["positive_pixel_fraction"] = sp["positive_pixels"] / sp["pixels"] if sp["pixels"] else 0.0
    intensity = {}
    for src, agg in raw.items():
        s1, s2, n, lo, hi = per_source.get(src, [0.0, 0.0, 0, None, None])
        mean = s1 / n if n else None
        intensity[src] = {"scans": agg, "records": {
            "mean": mean, "contrast": float(np.sqrt(max(s2 / n - mean * mean, 0.0))) if n else None,
            "min": lo, "max": hi}}
    return {
        "format_version": MANIFEST_VERSION,
        "package_version": __version__,
        "kind": output_kind(name),
        "tile_size": output_tile_size(name),
        "resolution": config.resolution.to_dict(),
        "seed": config.seed,
        "config": config.to_dict(),
        "splits": splits,
        "records_per_shard": records_per_shard,
        "intensity": intensity,
        "problems": n_problems,
        **extra,
    }


def _write_problems(path: str, problems: list[Problem], tmp_dir: str) -> None:
    """UTF-8 CSV; a file name that is not UTF-8 is written with its odd bytes as ``\\xNN``, so no
    name can stop the run after all shards are written."""
    with atomic.replacing(path, tmp_dir) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "item", "reason"])
        for p in problems:
            w.writerow([printable(p.file), printable(p.item), printable(p.reason)])
