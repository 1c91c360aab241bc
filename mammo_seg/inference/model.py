"""Loading a trained model (found by its run directory), with the training resolution it needs."""

from __future__ import annotations

from dataclasses import dataclass

from mammo_seg.data.resolution import Resolution
from mammo_seg.errors import MammoError
from mammo_seg.run_dir import model_file


@dataclass
class LoadedModel:
    model: object  # keras.Model returning logits
    resolution: Resolution
    path: str  # the .keras file


def load_model(path: str) -> LoadedModel:
    """Load a model in Keras safe mode, with the training resolution it records (the one place that stores it)."""
    import keras

    import mammo_seg.losses  # noqa: F401  (registered custom objects)
    from mammo_seg.models.fcn import MammoFCN

    file = model_file(path)
    try:
        model = keras.models.load_model(file, compile=False, safe_mode=True)
    except (ValueError, OSError, TypeError) as e:
        raise MammoError(file, f"cannot load the model ({' '.join(str(e).split())[:200]})") from None
    resolution = getattr(model, "resolution", None) if isinstance(model, MammoFCN) else None
    if not resolution:
        raise MammoError(file, "the model does not record its training resolution (not a MammoFCN saved by mammo train)")
    return LoadedModel(model, Resolution.from_dict(resolution), file)
