"""Negative samplers behind one interface (:class:`NegativeSampler`), found by name.

Adding a sampler is one new class (in its own module) and one line in :data:`SAMPLERS`; what the
experiments need to know of it (its label, aliases, defining options, place in the paper's tables)
are class attributes of the sampler, from which :data:`ALIASES` and :data:`PAPER_SAMPLERS` derive.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import ValidationError

from reinforcens.errors import ConfigError
from reinforcens.samplers.adversarial import KBGANSampler, RNSESSampler, RNSFastSampler, RNSSampler
from reinforcens.samplers.ahns import AHNSSampler
from reinforcens.samplers.base import (
    Negatives,
    NegativeSampler,
    SamplerConfig,
    SamplerContext,
)
from reinforcens.samplers.dns_mn import DNSMNSampler
from reinforcens.samplers.irgan import IRGANSampler
from reinforcens.samplers.mixgcf import MixGCFSampler
from reinforcens.samplers.recns import RecNSSampler
from reinforcens.samplers.softmax import SoftmaxSampler
from reinforcens.samplers.srns import SRNSSampler
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
    "rns-fast": RNSFastSampler,
    "dns-mn": DNSMNSampler,
    "softmax": SoftmaxSampler,
    "srns": SRNSSampler,
    "ahns": AHNSSampler,
    "recns": RecNSSampler,
    "mixgcf": MixGCFSampler,
}
#: alias -> registry name, from each sampler's :attr:`~NegativeSampler.aliases`
ALIASES: dict[str, str] = {alias: name for name, cls in SAMPLERS.items() for alias in cls.aliases}
#: the samplers of the paper's Table 2, in its order (each sampler's :attr:`~NegativeSampler.paper_order`)
PAPER_SAMPLERS: tuple[str, ...] = tuple(
    sorted(
        (name for name, cls in SAMPLERS.items() if cls.paper_order is not None),
        key=lambda name: SAMPLERS[name].paper_order or 0,
    )
)


def method_label(sampler_name: str, model: str = "gmf") -> str:
    """The display label of a sampler (name or alias) training the recommender ``model`` (a kind of
    :data:`reinforcens.models.MODELS`), e.g. ``BPR-GMF`` for ``uniform``."""
    label = SAMPLERS[canonical_name(sampler_name)].label
    if "{model}" not in label:
        return label
    from reinforcens.models import MODELS

    try:
        model_label = MODELS[model].label
    except KeyError:
        raise ConfigError(f"unknown model {model!r}; known: {', '.join(MODELS)}") from None
    return label.format(model=model_label)


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
    "ALIASES",
    "PAPER_SAMPLERS",
    "SAMPLERS",
    "Negatives",
    "NegativeSampler",
    "SamplerConfig",
    "SamplerContext",
    "canonical_name",
    "make_sampler",
    "method_label",
    "sampler_config",
]
