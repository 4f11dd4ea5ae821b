"""``reinforcens tune``: an Optuna search per method on validation AUC, the same number of trials each."""

from __future__ import annotations

import argparse

from reinforcens.cli._common import add_engine_arguments, positive_int, seed
from reinforcens.cli.compare import add_tune_arguments
from reinforcens.cli.train import add_training_arguments, training_values


def register(sub: argparse._SubParsersAction) -> None:
    from reinforcens.experiments.compare import PAPER_METHODS

    p = sub.add_parser(
        "tune",
        help="search hyper-parameters on validation AUC, the same number of trials per method",
        description="Search each method's space with one Optuna study per method, --trials trials each "
        "(all of a smaller space): by default the paper's grid (L2 1e-6..1e-2, learning rate 1e-4..1e-1, "
        "N_s 10..150 for learned samplers, alpha and beta for RNS, beta for RNS-ES), each trial a training "
        "run, and keep the one with the best validation AUC (test data is never looked at). A setting is "
        "never trained twice. The studies are kept in OUT/optuna.journal: rerun the same command to "
        "continue an interrupted tune; a changed setting starts new studies. Writes tuned.json (for "
        "`compare --tuned`), trials.csv and tuned.md.",
    )
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("--out", required=True, help="tune directory (the studies and trial runs are kept in it)")
    p.add_argument(
        "--methods",
        default=",".join(m for m in PAPER_METHODS if m != "itempop"),
        help="comma-separated methods to tune",
    )
    add_tune_arguments(p)
    p.add_argument("--seed", type=seed, default=0, help="seed of the samplers and of every trial")
    p.add_argument(
        "--jobs", type=positive_int, default=None, help="trials run at once (default: the CPU count)"
    )
    add_engine_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_training_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reinforcens.experiments.tune import format_tuned, parse_grid_overrides, parse_ranges, tune

    base = training_values(args, None)
    if base.get("sampler_options"):
        from reinforcens.errors import ConfigError

        raise ConfigError("tune searches the sampler options itself; give values with --grid or --range")
    grid = parse_grid_overrides(args.grid)
    tuned = tune(
        args.data,
        args.methods,
        args.out,
        trials=args.trials,
        seed=args.seed,
        base=base,
        grid=grid,
        jobs=args.jobs,
        progress=not args.quiet,
        engine=args.engine,
        address=args.address,
        ranges=parse_ranges(args.range, grid),
        sampler=args.sampler,
        prune=args.prune,
    )
    print(format_tuned(tuned), end="")
    print(f"wrote {Path(args.out) / 'tuned.json'}, trials.csv, tuned.md")
    return 0
