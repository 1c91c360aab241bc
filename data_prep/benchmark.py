"""The phantom benchmark of a ``mammo study`` (its ``benchmark:`` section): CBIS-DDSM phantoms, prepared into tiles.

It lives with the converters, above the library: ``mammo_seg.study`` takes this builder from its caller (the CLI)
and never imports ``data_prep``.
"""

from __future__ import annotations

import os

from data_prep.prepare import prepare
from mammo_seg.data.resolution import Resolution
from mammo_seg.data.tiling import TilingConfig
from mammo_seg.study import BenchmarkSection
from mammo_seg.synthetic.cbis_ddsm import write_cbis_ddsm


def build_phantom_benchmark(bench: BenchmarkSection, raw: str, data: str) -> None:
    """Phantoms into ``raw`` (unless there), then ``mammo prep`` of them into ``data``."""
    if not os.path.isdir(raw):
        write_cbis_ddsm(raw, bench.patients, seed=bench.seed, scale=bench.synth_scale)
    prepare("cbis-ddsm", raw, data, tiles=tuple(bench.tiles), workers=bench.workers, seed=bench.seed,
            resolution=Resolution(scale=bench.scale),
            tiling=TilingConfig(roi_crops=bench.roi_crops, random_crops=bench.random_crops))
