"""The settings of one prep run (:class:`PrepConfig`): what the scan worker, the shard writer and the
manifest share. It has no defaults: :meth:`mammo_seg.config.PrepSection.prep_config` builds it from the
settings of ``mammo prep``, the one place their defaults are written."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mammo_seg.data.prep_output import FULL
from mammo_seg.data.resolution import Resolution
from mammo_seg.data.tiling import TilingConfig


@dataclass(frozen=True)
class PrepConfig:
    dataset: str
    tiles: tuple[int, ...]
    resolution: Resolution
    tiling: TilingConfig
    seed: int
    val_fraction: float
    test_fraction: float
    scans_per_shard: int
    full_scans: bool
    ignore_kinds: tuple[str, ...] = ()  # abnormality kinds stored as the ignore region (features.IGNORE)
    contralateral: bool = False  # whole scans carry the other breast (mammo_seg.data.contralateral)

    @property
    def outputs(self) -> list[str]:
        """Output folder names: one per tile size, plus ``full`` for whole scans."""
        return [str(t) for t in self.tiles] + ([FULL] if self.full_scans else [])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tiles"] = list(self.tiles)
        d["resolution"] = self.resolution.to_dict()
        if self.ignore_kinds:
            d["ignore_kinds"] = list(self.ignore_kinds)
        else:  # a prep without an ignore region writes the manifest it wrote before the setting existed
            del d["ignore_kinds"]
        if not self.contralateral:  # likewise
            del d["contralateral"]
        return d
