"""Loading a trained model (found by its run directory), with the training resolution it needs.

A run is one model or, cross-validated, the ensemble of its fold models (:mod:`mammo_seg.run_dir`):
either way a :class:`LoadedModel` holds its members, whose probabilities are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

from mammo_seg.data.resolution import Resolution
from mammo_seg.errors import MammoError
from mammo_seg.run_dir import load_keras, model_files


@dataclass
class LoadedModel:
    models: list  # keras.Model returning logits: one, or an ensemble's members
    resolution: Resolution
    path: str  # the .keras file, or the ensemble's ensemble.json: what the operating point is recorded for

    @property
    def model(self):
        """The first member (every member has the same architecture and training grid)."""
        return self.models[0]

    @property
    def channels(self) -> int:
        """Input channels: 1, the scan; 2, the scan and the other breast (``data.contralateral``)."""
        return int(getattr(self.model, "channels", 1) or 1)


def load_model(path: str) -> LoadedModel:
    """Load a model or an ensemble, with the training resolution it records (the one place that stores it), in
    the precision this machine computes fast (:func:`mammo_seg.training.precision.for_this_machine`)."""
    from mammo_seg.models.fcn import MammoFCN
    from mammo_seg.training.precision import for_this_machine

    name, files = model_files(path)
    models, resolutions = [], []
    for file in files:
        model = load_keras(file)
        resolution = getattr(model, "resolution", None) if isinstance(model, MammoFCN) else None
        if not resolution:
            raise MammoError(file, "the model does not record its training resolution (not a MammoFCN saved by "
                                   "mammo train)")
        models.append(for_this_machine(model))
        resolutions.append(Resolution.from_dict(resolution))
    if any(r != resolutions[0] for r in resolutions[1:]):
        raise MammoError(name, "the ensemble's members were trained on different grids")
    return LoadedModel(models, resolutions[0], name)
