"""Helpers shared by the command modules."""

from __future__ import annotations

import json
import sys
from typing import Any

from reinforcens.errors import ConfigError


def parse_list_length(text: str) -> int | None:
    if text.strip().lower() in ("none", "0", "all"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"--list-length must be an integer or 'none', got {text!r}") from None
    return value


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` reader options; values are JSON if they parse, else strings."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--option expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def fmt(value: float, digits: int = 4) -> str:
    return "nan" if value != value else f"{value:.{digits}f}"
