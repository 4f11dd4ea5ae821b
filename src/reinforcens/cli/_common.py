"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reinforcens.errors import ConfigError


def parse_list_length(text: str) -> int | None:
    """``--list-length``: an integer >= 2, or ``none``/``all`` (keep sessions as they are)."""
    if text.strip().lower() in ("none", "all"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"--list-length must be an integer or 'none', got {text!r}") from None
    if value < 2:
        raise ConfigError(
            f"--list-length must be at least 2 (or 'none' to keep sessions as they are), got {value}"
        )
    return value


def seed(text: str) -> int:
    """An argparse type: a seed, a whole number from 0 to 2**63 - 1."""
    return _int_in(text, 0, 2**63 - 1, "a seed")


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    return _int_in(text, 1, None, "a whole number >= 1")


def _int_in(text: str, lo: int, hi: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < lo or (hi is not None and value > hi):
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
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


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """``--engine`` and ``--address``: where the runs of a multi-run command execute."""
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this machine, --jobs worker processes (default); ray: one Ray task per run "
        "(pip install 'reinforcens[ray]')",
    )
    p.add_argument(
        "--address",
        default=None,
        help="with --engine ray: the cluster's address ('auto', or host:port); default: a local Ray",
    )
