"""The search spaces of ``reinforcens tune``: the paper's grid (section 3.1), with values replaced
(``--grid``) or keys made ranges (``--range``).

L2 in {1e-6, ..., 1e-2} and learning rate in {1e-4, 5e-4, 1e-3, 5e-2, 1e-1} for every trained method
(:data:`COMMON_GRID`); each sampler's own options as its class's ``tune_grid`` says (N_s in {10, 20, ...,
150} for KBGAN, IRGAN, RNS and RNS-ES; alpha and beta for RNS, beta for RNS-ES: the parameters the
paper's Table 3 lists).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution

from reinforcens.errors import ConfigError

#: the training values searched for every trained method (the paper's section 3.1)
COMMON_GRID: dict[str, list[float]] = {
    "l2": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2],
    "lr": [1e-4, 5e-4, 1e-3, 5e-2, 1e-1],
}


def sampler_grid(name: str) -> dict[str, list[Any]]:
    """The options of sampler ``name`` its paper's grid searches (its class's ``tune_grid``)."""
    from reinforcens.samplers import SAMPLERS

    cls = SAMPLERS.get(name)
    return {k: list(v) for k, v in (cls.tune_grid if cls is not None else {}).items()}


def _integer_options() -> frozenset[str]:
    """The sampler options declared as integers (``int`` fields of the samplers' configs)."""
    from reinforcens.samplers import SAMPLERS

    return frozenset(
        key
        for cls in SAMPLERS.values()
        for key, field in cls.Config.model_fields.items()
        if field.annotation is int
    )


#: keys whose values are whole numbers: every sampler option declared ``int`` (``n_candidates``,
#: ``top_m``, AHNS's ``p``, ...)
INTEGER_KEYS = _integer_options()


@dataclass(frozen=True)
class Range:
    """A continuous (or, for :data:`INTEGER_KEYS`, integer) range of one key, from ``low`` to ``high``
    inclusive, sampled on a log scale with ``log``."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def distribution(self) -> BaseDistribution:
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def describe(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log, "integer": self.integer}

    def text(self) -> str:
        return f"{self.low:g}:{self.high:g}" + (":log" if self.log else "")


#: a method's search space: each key's values (a categorical) or its range
Space = dict[str, "list[Any] | Range"]


def method_grid(sampler: str, overrides: dict[str, list[Any]] | None = None) -> dict[str, list[Any]]:
    """The grid of one sampler: common values, its own options, then ``overrides`` for the keys it
    has (an override of a key the sampler lacks is ignored for it)."""
    grid = {**COMMON_GRID, **sampler_grid(sampler)}
    for key, values in (overrides or {}).items():
        if key in grid:
            grid[key] = list(values)
    return grid


def method_space(
    sampler: str, grid: dict[str, list[Any]] | None = None, ranges: dict[str, Range] | None = None
) -> Space:
    """The search space of one sampler: :func:`method_grid`, with ``ranges`` replacing the keys it has."""
    space: Space = dict(method_grid(sampler, grid))
    for key, r in (ranges or {}).items():
        if key in space:
            space[key] = r
    return space


def grid_size(space: Space) -> int | None:
    """The number of settings of a space; ``None`` if it has a continuous range."""
    size = 1
    for v in space.values():
        if isinstance(v, Range):
            if not v.integer:
                return None
            size *= int(v.high) - int(v.low) + 1
        else:
            size *= len(v)
    return size


def setting_values(setting: dict[str, Any]) -> dict[str, Any]:
    """A setting as training values (training keys, and sampler options under ``sampler_options``)."""
    values: dict[str, Any] = {}
    opts: dict[str, Any] = {}
    for k, v in setting.items():
        (values if k in COMMON_GRID else opts)[k] = v
    if opts:
        values["sampler_options"] = opts
    return values


def known_keys() -> set[str]:
    """Every key a space may have: the common ones and every sampler's grid keys."""
    from reinforcens.samplers import SAMPLERS

    return set(COMMON_GRID).union(*(sampler_grid(n).keys() for n in SAMPLERS))


def _check_keys(flag: str, keys: Sequence[str]) -> None:
    known = known_keys()
    unknown = sorted(set(keys) - known)
    if unknown:
        raise ConfigError(f"{flag}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def parse_grid_overrides(pairs: Sequence[str] | None) -> dict[str, list[float]]:
    """``KEY=v1,v2,...`` strings to a grid override."""
    out: dict[str, list[float]] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--grid expects KEY=V1,V2,..., got {pair!r}")
        key, text = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            vals = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--grid {key}: values must be numbers, got {text!r}") from None
        if not vals:
            raise ConfigError(f"--grid {key}: no values")
        if any(not math.isfinite(v) for v in vals):
            raise ConfigError(f"--grid {key}: values must be finite, got {text!r}")
        out[key] = [int(v) if v.is_integer() and key in INTEGER_KEYS else v for v in vals]
    _check_keys("--grid", list(out))
    return out


def parse_ranges(pairs: Sequence[str] | None, grid: dict[str, Any] | None = None) -> dict[str, Range]:
    """``KEY=LO:HI[:log]`` strings to ranges (whole numbers for :data:`INTEGER_KEYS`).

    Raises
    ------
    ConfigError
        Naming ``--range`` and the key, if a range is malformed, empty, not positive with ``log``, or
        its key is unknown or also given values in ``grid`` (``--grid``).
    """
    out: dict[str, Range] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--range expects KEY=LO:HI[:log], got {pair!r}")
        key, text = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        parts = [p.strip() for p in text.split(":")]
        log = len(parts) == 3 and parts[2].lower() == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise ConfigError(f"--range {key}: expected LO:HI or LO:HI:log, got {text!r}")
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            raise ConfigError(f"--range {key}: bounds must be numbers, got {text!r}") from None
        integer = key in INTEGER_KEYS
        if integer and not (low.is_integer() and high.is_integer()):
            raise ConfigError(f"--range {key}: bounds must be whole numbers, got {text!r}")
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise ConfigError(f"--range {key}: LO must be below HI, got {text!r}")
        if log and low <= 0:
            raise ConfigError(f"--range {key}: a log range needs LO > 0, got {text!r}")
        out[key] = Range(int(low) if integer else low, int(high) if integer else high, log, integer)
    _check_keys("--range", list(out))
    both = sorted(set(out) & set(grid or {}))
    if both:
        raise ConfigError(f"--range {both[0]}: also given values with --grid; give one of them")
    return out
