"""The one place that knows the tile scale: how many training pixels one native scan pixel becomes.

The original cut 598-px windows from CBIS-DDSM scans and resized them to 320 px, a scale of
320/598 ≈ 0.535. A scale only means something for a given scan resolution, so it is tied here to
the spacing it was defined on (CBIS-DDSM's nominal 50 µm). A scan with a known pixel spacing is
resampled so that one training pixel always covers the same tissue (``spacing_mm`` below, about
93 µm with the defaults): a lesion appears at the same size in training tiles and at prediction
time, whatever the source. A scan without spacing is assumed to be at the reference spacing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

DEFAULT_SCALE = 320 / 598
REFERENCE_SPACING_MM = 0.05


@dataclass(frozen=True)
class Resolution:
    """Training resolution: ``scale`` training px per native px at ``reference_spacing_mm``."""

    scale: float = DEFAULT_SCALE
    reference_spacing_mm: float = REFERENCE_SPACING_MM

    def __post_init__(self):
        if not self.scale > 0 or not self.reference_spacing_mm > 0:
            raise ValueError(f"scale and reference spacing must be positive, got {self}")

    @property
    def spacing_mm(self) -> float:
        """Millimetres covered by one training pixel."""
        return self.reference_spacing_mm / self.scale

    def factor(self, spacing_mm: float | None) -> float:
        """Resize factor (training px per native px) for a scan with ``spacing_mm`` (None: reference)."""
        if spacing_mm is None:
            return self.scale
        return float(spacing_mm) / self.spacing_mm

    def crop_size(self, tile: int, spacing_mm: float | None) -> int:
        """Native pixels a ``tile``-px training tile covers."""
        return max(1, round(tile / self.factor(spacing_mm)))

    def to_dict(self) -> dict:
        return {**asdict(self), "spacing_mm": self.spacing_mm}

    @classmethod
    def from_dict(cls, d: dict) -> "Resolution":
        return cls(scale=float(d["scale"]), reference_spacing_mm=float(d["reference_spacing_mm"]))


def isotropic_spacing(spacing: tuple[float, float] | float | None) -> float | None:
    """One spacing for a (row, col) pair: their mean (mammograms have square pixels)."""
    if spacing is None:
        return None
    if isinstance(spacing, (int, float)):
        return float(spacing)
    return (float(spacing[0]) + float(spacing[1])) / 2.0
