"""Recommenders behind one interface (:class:`Recommender`), keyed by the run's ``model`` entry."""

from __future__ import annotations

import torch

from reinforcens.models.base import ModelSpec, Recommender, Tables, TorchScorer
from reinforcens.models.gmf import GMF, MF
from reinforcens.models.lightgcn import LightGCN

#: every recommender, by its ``kind`` (the ``model`` config value)
MODELS: dict[str, type[Recommender]] = {cls.kind: cls for cls in (GMF, MF, LightGCN)}


def make_model(spec: ModelSpec, generator: torch.Generator | None = None) -> Recommender:
    """A new recommender of ``spec.kind``, initialised from ``generator``."""
    return MODELS[spec.kind].from_spec(spec, generator)


__all__ = [
    "GMF",
    "MF",
    "MODELS",
    "LightGCN",
    "ModelSpec",
    "Recommender",
    "Tables",
    "TorchScorer",
    "make_model",
]
