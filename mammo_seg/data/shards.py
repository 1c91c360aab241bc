"""Prep's shard and resume state machine: cases → sharded TFRecords, ``manifest.json`` per output folder,
``scans.json`` and ``problems.csv`` (the layout is :mod:`mammo_seg.data.prep_output`'s).

Determinism and resumability:

* scans are assigned to shards up front (a seeded permutation per split, ``scans_per_shard`` each),
  and a shard holds its scans' records in that order; each scan's records depend only on the scan and
  the settings (:mod:`mammo_seg.data.scan_worker`), so the output is byte-identical for any ``--workers``;
* a shard is written to a temporary file in ``OUT/.prep/tmp/`` and renamed, then a small completion
  record (its statistics, :class:`~mammo_seg.data.prep_stats.OutputStats`) is written to ``OUT/.prep/``;
  a rerun empties ``OUT/.prep/tmp/`` (the only place prep ever deletes anything), skips completed shards
  and redoes the rest, so after ``kill -9`` at any moment the same command finishes the job with output
  identical to an uninterrupted run; the manifests are made from the completion records only.

Workers are separate processes (``spawn``, :func:`~mammo_seg.data.ordered_pool.in_order`) that read scans,
resample and tile them and encode the tiles; only the parent imports TensorFlow, to write the records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import zlib
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
from tqdm import tqdm

from mammo_seg import __version__, atomic
from mammo_seg.data import features
from mammo_seg.data.cases import Case, Problem
from mammo_seg.data.ordered_pool import in_order
from mammo_seg.data.phase_times import PhaseTimes
from mammo_seg.data.prep_config import PrepConfig
from mammo_seg.progress import progress as progress_bar
from mammo_seg.data.prep_output import SHARD_PATTERN, PrepOutput, manifest_content, write_problems
from mammo_seg.data.prep_stats import (Intensity, OutputStats, RawStats, intensity_summary, merge_by_source,
                                       split_summaries)
from mammo_seg.data.scan_worker import CaseResult, process_case, worker_died
from mammo_seg.errors import MammoError


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


def _write_tfrecord(path: str, serialized: list[bytes], tmp_dir: str) -> None:
    """One shard, whole or not at all (its temporary is removed when writing fails); a full disk is one line."""
    import tensorflow as tf

    try:
        with atomic.replacing(path, tmp_dir) as tmp, tf.io.TFRecordWriter(tmp) as w:
            for s in serialized:
                w.write(s)
    except (OSError, tf.errors.OpError) as e:
        raise _write_error(path, e) from None


def _write_error(path: str, error: Exception) -> MammoError:
    """The one line of an output that could not be written: a full disk (``ENOSPC``, which TensorFlow's writer
    reports as ``ResourceExhaustedError``) says so and that a rerun keeps the shards already completed."""
    import errno

    text = getattr(error, "message", None) or getattr(error, "strerror", None) or str(error)
    full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "no space left" in text.lower() \
        or type(error).__name__ == "ResourceExhaustedError"
    if full:
        return MammoError(path, "no space left on device; free some and run the same command again (the shards "
                                "completed so far are kept)")
    return MammoError(path, f"cannot be written ({' '.join(text.split())[:200]})")


def _fingerprint(config: PrepConfig, cases: list[Case], scan_split: dict[str, str]) -> dict:
    h = hashlib.sha256()
    for c in sorted(cases, key=lambda c: c.scan_id):
        h.update(repr((c.scan_id, c.patient_id, c.scan_path, c.abnormalities, scan_split[c.scan_id])).encode())
    return {"config": config.to_dict(), "cases_sha256": h.hexdigest(), "version": __version__}


def _prepare_state(out: PrepOutput, fingerprint: dict) -> str:
    """``OUT/.prep``, checked against this run's settings and inputs, with its temporaries emptied."""
    state = out.state_dir
    os.makedirs(state, exist_ok=True)
    path = os.path.join(state, "fingerprint.json")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                previous = json.load(f)
        except (OSError, ValueError) as e:
            raise MammoError(path, f"unreadable prep state ({type(e).__name__}); choose a new --out or delete "
                                   f"{out.root}") from None
        if previous != fingerprint:
            keys = [k for k in fingerprint["config"] if previous.get("config", {}).get(k) != fingerprint["config"][k]]
            what = f"settings {keys}" if keys else "input data"
            raise MammoError(out.root, f"holds an unfinished or finished prep with other {what}; "
                                       f"choose a new --out or delete it")
    else:
        atomic.write_json(path, fingerprint, out.tmp_dir)
    shutil.rmtree(out.tmp_dir, ignore_errors=True)  # an interrupted run's temporaries, and only those
    os.makedirs(out.tmp_dir, exist_ok=True)
    return state


def write_dataset(cases: list[Case], scan_split: dict[str, str], config: PrepConfig, out: str,
                  workers: int = 1, problems: list[Problem] = (), extra_manifest: dict | None = None,
                  progress: bool = True, raw_root: str | None = None) -> dict:
    """Tile every case into ``out/<tile>/`` shards; returns the per-output manifests, the problems and the
    seconds per phase (``phase_seconds``: the workers' summed over scans, the parent's own, and its waiting
    for the workers).

    ``out/scans.json`` lists every scan written: patient, split, source, its file (relative to
    ``raw_root``) and the file's SHA-256, by which ``mammo evaluate`` finds it again.
    """
    os.makedirs(out, exist_ok=True)
    output = PrepOutput(out)
    state = _prepare_state(output, _fingerprint(config, cases, scan_split))
    for name in config.outputs:
        os.makedirs(output.folder(name), exist_ok=True)
    by_id = {c.scan_id: c for c in cases}
    shards = plan_shards(scan_split, config.scans_per_shard, config.seed)
    done = {s.name for s in shards if os.path.exists(_summary_file(state, s))}
    pending = [s for s in shards if s.name not in done]
    n_done = sum(len(s.scan_ids) for s in shards if s.name in done)
    bar = progress_bar(len(cases), f"prep {config.dataset}", "scan", enabled=progress, initial=n_done)
    work = [by_id[sid] for s in pending for sid in s.scan_ids]
    results = in_order(partial(process_case, config=config), work, workers, worker_died)
    times = PhaseTimes()
    try:
        for shard in pending:
            batch = []
            for _ in shard.scan_ids:
                with times.phase("waiting_for_workers"):
                    r = next(results)
                if r.problem is not None:
                    tqdm.write(f"problem: {r.problem.line()}", file=sys.stderr)
                times.merge(r.times)
                batch.append(r)
                bar.update(1)
            _finish_shard(output, state, shard, batch, by_id, config, times)
    finally:
        bar.close()
        results.close()
    with times.phase("writing"):
        written = _finalise(output, state, shards, by_id, config, list(problems), extra_manifest or {}, raw_root)
    return {**written, "phase_seconds": times.rounded()}


def _summary_file(state: str, shard: Shard) -> str:
    """The completion record of ``shard``: written once its records are in place."""
    return os.path.join(state, shard.name + ".json")


def _finish_shard(out: PrepOutput, state: str, shard: Shard, results: list[CaseResult], by_id, config: PrepConfig,
                  times: PhaseTimes):
    """Write the shard's records of every output folder, then its completion record."""
    ok = [r for r in results if r.problem is None]
    summary = {"scans": list(shard.scan_ids), "outputs": {},
               "problems": [asdict(r.problem) for r in results if r.problem is not None],
               "raw": {r.scan_id: r.raw for r in ok}, "sha256": {r.scan_id: r.sha256 for r in ok}}
    for name in config.outputs:
        serialized, stats = [], OutputStats()
        for r in ok:
            case = by_id[r.scan_id]
            stats.merge(r.stats[name])
            with times.phase("serializing"):
                for rec in r.records[name]:
                    serialized.append(features.serialize({
                        **rec, "scan_id": case.scan_id, "patient_id": case.patient_id, "split": shard.split,
                        "source": case.source, "abnormality": case.kinds}))
        with times.phase("writing"):
            _write_tfrecord(os.path.join(out.folder(name), shard.name), serialized, out.tmp_dir)
        summary["outputs"][name] = stats.to_dict()
    with times.phase("writing"):
        atomic.write_json(_summary_file(state, shard), summary, out.tmp_dir)


def _finalise(out: PrepOutput, state, shards, by_id, config: PrepConfig, problems, extra, raw_root) -> dict:
    """``problems.csv``, ``scans.json`` and every manifest, from the shards' completion records."""
    summaries = {}
    for s in shards:
        with open(_summary_file(state, s)) as f:
            summaries[s.name] = json.load(f)
    problems = list(problems)
    for s in shards:
        problems += [Problem(**p) for p in summaries[s.name]["problems"]]
    write_problems(out.problems_file, problems, out.tmp_dir)
    raw = {src: RawStats() for src in sorted({c.source for c in by_id.values()})}
    for s in shards:
        for scan_id, r in summaries[s.name]["raw"].items():
            raw[by_id[scan_id].source].add(r)
    scans = {}
    for s in shards:
        for scan_id, digest in summaries[s.name]["sha256"].items():
            case = by_id[scan_id]
            scans[scan_id] = {"patient_id": case.patient_id, "split": s.split, "source": case.source,
                              "file": os.path.relpath(case.scan_path, raw_root) if raw_root else case.scan_path,
                              "sha256": digest}
    atomic.write_json(out.scans_file, scans, out.tmp_dir)
    manifests = {}
    for name in config.outputs:
        stats = [(s, OutputStats.from_dict(summaries[s.name]["outputs"][name])) for s in shards]
        by_source: dict[str, Intensity] = {}
        for _, st in stats:
            merge_by_source(by_source, st.by_source)
        manifest = manifest_content(
            name, config=config.to_dict(), resolution=config.resolution.to_dict(), seed=config.seed,
            splits=split_summaries([(s.split, s.name, st) for s, st in stats]),
            records_per_shard={s.name: st.records for s, st in stats},
            intensity=intensity_summary(raw, by_source), problems=len(problems), extra=extra)
        atomic.write_json(out.manifest_file(name), manifest, out.tmp_dir)
        manifests[name] = manifest
    return {"manifests": manifests, "problems": problems, "scans": len(scans)}
