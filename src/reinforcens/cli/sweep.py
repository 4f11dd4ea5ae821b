"""``reinforcens sweep``: test quality against one numeric option (the paper's Figure 2)."""

from __future__ import annotations

import argparse

from reinforcens.cli.compare import add_run_arguments
from reinforcens.cli.train import add_training_arguments, training_values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="Figure 2: test NDCG/AUC against one numeric option",
        description="Train one sampler for each value of a numeric training value or sampler option "
        "(e.g. --sampler rns-es --param beta --values 0,0.1,...,0.9) on each seed, and write sweep.png, "
        "sweep.csv, sweep.json and sweep.md.",
    )
    add_run_arguments(p, "1")
    p.add_argument("--sampler", required=True, help="the sampler")
    p.add_argument("--param", required=True, help="a numeric training value or sampler option")
    p.add_argument("--values", required=True, help="comma-separated values; a,b,...,z is a progression")
    add_training_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reinforcens.experiments.sweep import format_sweep, sweep

    base = training_values(args, args.sampler)
    res = sweep(
        args.data,
        args.sampler,
        args.param,
        args.values,
        seeds=args.seeds,
        out=args.out,
        base=base,
        jobs=args.jobs,
        progress=not args.quiet,
        engine=args.engine,
        address=args.address,
    )
    print(format_sweep(res, int(base.get("full_k", 20))), end="")
    print(f"wrote {Path(args.out) / 'sweep.png'}, sweep.csv, sweep.json, sweep.md")
    return 0
