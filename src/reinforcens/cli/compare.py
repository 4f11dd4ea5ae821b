"""``reinforcens compare``: every method on the same data and seeds (the paper's Table 2)."""

from __future__ import annotations

import argparse

from reinforcens.cli._common import add_engine_arguments, positive_int, print_json, seed
from reinforcens.cli.train import add_training_arguments, training_values


def add_run_arguments(p: argparse.ArgumentParser, seeds_default: str) -> None:
    """Arguments shared by the multi-run commands (compare, ablation, sweep), ``--engine`` and
    ``--address`` included."""
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("--out", required=True, help="experiment directory (runs are cached in it)")
    p.add_argument(
        "--seeds",
        default=seeds_default,
        help=f"a count N (seeds 0..N-1) or a comma-separated list of seeds (default {seeds_default})",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        help="parallel runs, one process each (default: the CPU count); with --engine ray, the CPUs of "
        "the local Ray it starts (ignored with --address)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_engine_arguments(p)


def add_tune_arguments(p: argparse.ArgumentParser) -> None:
    """The search's arguments, shared by ``tune`` and ``compare --tune``."""
    p.add_argument("--trials", type=positive_int, default=20, help="trials per method (default 20)")
    p.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2,...",
        help="replace the values of one grid key (lr, l2, n_candidates, alpha, beta), repeatable",
    )
    p.add_argument(
        "--range",
        action="append",
        metavar="KEY=LO:HI[:log]",
        help="search one key in a range instead of its grid (e.g. lr=1e-4:1e-1:log; n_candidates in whole "
        "numbers), repeatable; not with --sampler grid",
    )
    p.add_argument(
        "--sampler",
        choices=("tpe", "grid", "random"),
        default="tpe",
        help="Optuna sampler: tpe (default: model-based, the best use of a budget far below the grid's "
        "size), grid (the grid in a random order without repetition), random. A budget that covers the "
        "whole grid tries all of it",
    )
    p.add_argument(
        "--prune",
        action="store_true",
        help="stop runs whose validation AUC falls below the median of the method's completed trials at "
        "the same epoch (from the 5th epoch, once 5 trials completed); pruned trials count in --trials",
    )


def register(sub: argparse._SubParsersAction) -> None:
    from reinforcens.experiments.compare import PAPER_METHODS

    p = sub.add_parser(
        "compare",
        help="train every method on the same seeds: Table 2 with paired t-tests",
        description="Train every method on the same prepared data and seeds, reusing finished runs and "
        "resuming unfinished ones in --out, and write table.md, results.csv and summary.json: mean ± "
        "std of test AUC/NDCG, full-ranking Recall@20/NDCG@20, and the paired t-test p-value of each "
        "method against the reference. Learned samplers start from the uniform (BPR-GMF) run of their "
        "seed. Training flags apply to every method; sampler options to the samplers that have them.",
    )
    add_run_arguments(p, "10")
    p.add_argument(
        "--methods",
        default=",".join(PAPER_METHODS),
        help="comma-separated methods: itempop and sampler names or aliases "
        f"(default {','.join(PAPER_METHODS)})",
    )
    p.add_argument(
        "--reference", default="rns", help="method the others are tested against ('none': no tests)"
    )
    p.add_argument(
        "--tuned",
        help="a tuned.json from `reinforcens tune`: each method's best setting (its best trial is "
        "reused as its run of the tune's seed where it is that run)",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="run `reinforcens tune` first (into OUT/tune, --trials per method) and use its result",
    )
    add_tune_arguments(p)
    p.add_argument("--seed", type=seed, default=0, help="seed of the tuning trials (with --tune)")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    add_training_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reinforcens.errors import ConfigError
    from reinforcens.experiments.compare import compare, parse_methods
    from reinforcens.experiments.tune import load_tuned, parse_grid_overrides, parse_ranges, tune
    from reinforcens.lock import DirectoryLock

    base = training_values(args, None)
    reference = None if args.reference.strip().lower() == "none" else args.reference
    tuned = None
    if args.tune and args.tuned:
        raise ConfigError("give --tune or --tuned, not both")
    if args.tuned:
        tuned = load_tuned(args.tuned)
    elif args.tune:
        names = parse_methods(args.methods)
        grid = parse_grid_overrides(args.grid)
        ranges = parse_ranges(args.range, grid)
    # one compare at a time in --out, its --tune trials (in OUT/tune) included; compare() re-enters
    with DirectoryLock(args.out, "experiment"):
        if args.tune:
            tuned = tune(
                args.data,
                names,
                Path(args.out) / "tune",
                trials=args.trials,
                seed=args.seed,
                base=base,
                grid=grid,
                jobs=args.jobs,
                progress=not args.quiet,
                engine=args.engine,
                address=args.address,
                ranges=ranges,
                sampler=args.sampler,
                prune=args.prune,
            )
        res = compare(
            args.data,
            args.methods,
            args.seeds,
            args.out,
            reference=reference,
            base=base,
            tuned=tuned,
            jobs=args.jobs,
            progress=not args.quiet,
            engine=args.engine,
            address=args.address,
        )
    if args.json:
        from reinforcens.experiments.report import jsonable

        print_json(jsonable(res.summary))
    else:
        print(res.table, end="")
        print(f"wrote {Path(args.out) / 'table.md'}, results.csv, summary.json")
    return 0
