"""What the training pipeline may do to a training crop: the ``data.augment`` section of a config.

It lives beside :mod:`mammo_seg.data.pipeline`, which applies it, so that the data floor needs nothing from
the config module above it; :mod:`mammo_seg.config` reads it from YAML and checks its values.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AugmentConfig:
    """Joint image/mask augmentation of training data. Geometric changes reach image and mask alike; the
    intensity changes reach the image only. Every setting's 0 (``scale`` [1, 1]) turns it off."""

    flips: bool = True  # left-right and up-down, each with probability 1/2
    rot90: bool = True  # k·90°, k uniform in 0-3
    intensity: float = 0.0  # a: gamma in [1/(1+a), 1+a] (log-uniform) and contrast × [1-a, 1+a]
    rotate: float = 0.0  # crops of whole scans: rotation θ ~ U(-rotate°, +rotate°) about the crop's centre
    scale: list = field(default_factory=lambda: [1.0, 1.0])  # crops of whole scans: magnification ~ log-uniform in [lo, hi] (nnU-Net: 0.7-1.4)
    brightness: float = 0.0  # b: + U(-b, b)
    noise: float = 0.0  # Gaussian noise of σ ~ U(0, noise)
    blur: float = 0.0  # Gaussian blur of σ ~ U(0, blur) pixels

    def problems(self) -> list[tuple[str, str]]:
        """(key, reason) for every value out of range."""
        found = []
        if not 0 <= self.intensity < 1:
            found.append(("intensity", "must be in [0, 1)"))
        if not 0 <= self.rotate <= 180:
            found.append(("rotate", "must be in [0, 180] degrees"))
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.scale)
        if len(self.scale) != 2 or not numbers or not 0 < self.scale[0] <= self.scale[1] <= 4:
            found.append(("scale", "must be [lo, hi] with 0 < lo <= hi <= 4"))
        for key in ("brightness", "noise"):
            if not 0 <= getattr(self, key) <= 0.5:
                found.append((key, "must be in [0, 0.5]"))
        if not 0 <= self.blur <= 3:
            found.append(("blur", "must be in [0, 3] pixels (the kernel's radius is 3)"))
        return found
