"""Negative samplers behind one interface (:class:`NegativeSampler`), found by name.

Adding a sampler is one new class (in its own module) and one line in :data:`SAMPLERS`.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import ValidationError

from reinforcens.errors import ConfigError
from reinforcens.samplers.adversarial import KBGANSampler, RNSESSampler, RNSSampler
from reinforcens.samplers.base import (
    Negatives,
    NegativeSampler,
    SamplerConfig,
    SamplerContext,
)
from reinforcens.samplers.irgan import IRGANSampler
from reinforcens.samplers.static import (
    DNSSampler,
    EBPRSampler,
    ExposureSampler,
    PopularitySampler,
    UniformSampler,
)
from reinforcens.training_data import TrainingData

SAMPLERS: dict[str, type[NegativeSampler]] = {
    "uniform": UniformSampler,
    "popularity": PopularitySampler,
    "dns": DNSSampler,
    "exposure": ExposureSampler,
    "ebpr": EBPRSampler,
    "kbgan": KBGANSampler,
    "irgan": IRGANSampler,
    "rns": RNSSampler,
    "rns-es": RNSESSampler,
}
ALIASES = {
    "bpr": "uniform",
    "bpr-gmf": "uniform",
    "bpr-dns": "dns",
    "bpr-en": "exposure",
    "rns-as": "kbgan",
}


def canonical_name(name: str) -> str:
    """The registry name of a sampler or one of its aliases (e.g. ``rns-as`` -> ``kbgan``)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in SAMPLERS:
        known = ", ".join(sorted(SAMPLERS) + sorted(ALIASES))
        raise ConfigError(f"unknown sampler {name!r}; known: {known}")
    return key


def sampler_config(name: str, options: dict[str, Any] | None = None) -> SamplerConfig:
    """Validate ``options`` against the sampler's config model.

    Raises
    ------
    ConfigError
        Naming the unknown or invalid key.
    """
    cls = SAMPLERS[canonical_name(name)]
    try:
        return cls.Config(**(options or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "?"
        fields = ", ".join(cls.Config.model_fields) or "none"
        raise ConfigError(
            f"sampler {cls.name!r} option {key!r}: {err['msg']} (its options: {fields})"
        ) from None


def make_sampler(
    name: str,
    data: TrainingData,
    generator: torch.Generator,
    options: dict[str, Any] | SamplerConfig | None = None,
    context: SamplerContext | None = None,
) -> NegativeSampler:
    """Build a sampler by name with validated options."""
    cls = SAMPLERS[canonical_name(name)]
    config = options if isinstance(options, SamplerConfig) else sampler_config(name, options)
    return cls(config, data, generator, context)


__all__ = [
    "SAMPLERS",
    "Negatives",
    "NegativeSampler",
    "SamplerConfig",
    "SamplerContext",
    "canonical_name",
    "make_sampler",
    "sampler_config",
]
