"""The settings of one prep run (:class:`PrepConfig`): what the scan worker, the shard writer and the
manifest share. The CLI's defaults live in :class:`mammo_seg.config.PrepSection`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mammo_seg.data.prep_output import FULL
from mammo_seg.data.resolution import Resolution
from mammo_seg.data.tiling import TilingConfig


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
