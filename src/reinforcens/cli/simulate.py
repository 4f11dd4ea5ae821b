"""``reinforcens simulate``: write a simulated exposure log with its ground truth."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from reinforcens.cli._common import seed
from reinforcens.data.simulate import (
    GROUND_TRUTH_FILE,
    LOG_FILE,
    METADATA_FILE,
    OUTPUT_FILES,
    PRESETS,
    read_metadata,
    resolve_config,
    write_simulation,
)
from reinforcens.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` command."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate an exposure log with a known ground truth",
        description=(
            "Simulate a recommendation platform (users, items, a logging recommender showing "
            "slates, clicks drawn from true preferences) and write its exposure log "
            f"({LOG_FILE}, the generic table format), the true click model ({GROUND_TRUTH_FILE}) "
            f"and the configuration with summary statistics ({METADATA_FILE})."
        ),
    )
    parser.add_argument(
        "--preset",
        default="small",
        metavar="NAME",
        help=f"one of {', '.join(PRESETS)} (default: small)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into DIR even if it holds other files (they are left alone)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the simulation and print a summary; returns the exit code."""
    resolve_config(args.preset)  # an unknown preset fails before anything is touched
    out = Path(args.out)
    _check_out_dir(out, force=args.force)
    started = time.perf_counter()
    write_simulation(out, args.preset, args.seed, progress=True)
    seconds = time.perf_counter() - started
    stats = (read_metadata(out) or {}).get("stats", {})
    print(
        f"simulated preset {args.preset!r} (seed {args.seed}) in {seconds:.1f} s: "
        f"{stats.get('users', 0):,} users, {stats.get('items', 0):,} items, "
        f"{stats.get('sessions', 0):,} sessions, {stats.get('exposures', 0):,} exposures, "
        f"{stats.get('clicks', 0):,} clicks ({stats.get('click_rate', 0.0):.1%})"
    )
    print(f"wrote {out / LOG_FILE}, {out / GROUND_TRUTH_FILE}, {out / METADATA_FILE}")
    return 0


def _check_out_dir(out: Path, force: bool) -> None:
    """Refuse a path that is a file, or a non-empty directory that holds no earlier simulation."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if not out.is_dir() or force or read_metadata(out) is not None:
        return
    foreign = sorted(p.name for p in out.iterdir() if not _is_ours(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ConfigError(
            f"--out {out}: not empty and not a simulation (holds {shown}); "
            "choose another directory or pass --force"
        )


def _is_ours(name: str) -> bool:
    """A file a (possibly interrupted) simulation writes."""
    if name in OUTPUT_FILES:
        return True
    return name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in OUTPUT_FILES)
