"""``reinforcens bench``: epoch times against implicit's BPR, evaluation time, and peak memory.

The command parses its arguments, runs :func:`reinforcens.bench.run_timing` (the default) or
:func:`reinforcens.bench.run_memory` (``--memory``), and prints the result's header line and table
(:mod:`reinforcens.bench.report`); ``--out`` writes the result as JSON. It reports times, ratios and
memory only; the project's acceptance targets are in ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reinforcens.bench.cache import PREPARE_SETTINGS, default_cache, ensure_prepared, preset_paths
from reinforcens.bench.timing import METHODS
from reinforcens.cli._common import seed

# the cache's helpers stay importable from here (benchmarks/ scripts use them)
__all__ = ["default_cache", "ensure_prepared", "preset_paths", "register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command to the ``reinforcens`` parser."""
    p = sub.add_parser(
        "bench",
        help="time training epochs against implicit's BPR, or measure peak memory",
        description="Generate a simulator preset once (cached), prepare it and time one epoch of "
        "implicit's BPR, our BPR-GMF, DNS and RNS (N_s = 30 and 100), and the evaluation of all "
        "users' lists: median of --repeats runs after a warm-up, with the ratios measured in the "
        "same run. With --memory: peak RSS of prepare and of a training epoch, in child processes.",
    )
    p.add_argument(
        "--preset",
        default=None,
        choices=sorted(PREPARE_SETTINGS),
        help="simulator preset (default: zhihu; beibei with --memory)",
    )
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method (default 3)")
    p.add_argument(
        "--warmup-batches",
        type=int,
        default=30,
        help="batches each method runs before it is timed (default 30)",
    )
    p.add_argument(
        "--threads", type=int, default=2, help="threads of torch and the compiled kernels (default 2)"
    )
    p.add_argument(
        "--implicit-threads", type=int, default=None, help="implicit's threads (default: --threads)"
    )
    p.add_argument("--device", default="cpu", help="torch device of our methods (default cpu)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "numba", "torch"],
        help="training kernels of our methods, and of the training child with --memory "
        "(default auto: numba on the CPU)",
    )
    p.add_argument(
        "--model",
        default="gmf",
        choices=["gmf", "mf", "lightgcn"],
        help="the recommender of our methods (default gmf)",
    )
    p.add_argument(
        "--optimizer",
        default="adam",
        choices=["adam", "sgd"],
        help="the recommender's update rule in timing (default adam; sgd: plain SGD, as implicit's BPR)",
    )
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {', '.join(METHODS)}",
    )
    p.add_argument(
        "--cache",
        default=None,
        help="folder of generated and prepared presets (default ~/.cache/reinforcens/bench)",
    )
    p.add_argument("--seed", type=seed, default=0, help="simulation and training seed (default 0)")
    p.add_argument(
        "--memory",
        action="store_true",
        help="measure peak RSS of prepare and of a training epoch instead of timing",
    )
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the arguments ask for, print its table, and write ``--out``."""
    from reinforcens.bench import format_header, format_table, run_memory, run_timing, write_json

    cache = Path(args.cache) if args.cache else default_cache()
    if args.memory:
        preset = args.preset or "beibei"
        result = run_memory(
            preset,
            cache,
            threads=args.threads,
            device=args.device,
            seed=args.seed,
            quiet=args.quiet,
            recommender=args.model,
            backend=args.backend,
        )
    else:
        preset = args.preset or "zhihu"
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        result = run_timing(
            preset,
            cache,
            repeats=args.repeats,
            threads=args.threads,
            device=args.device,
            methods=methods,
            warmup_batches=args.warmup_batches,
            seed=args.seed,
            quiet=args.quiet,
            implicit_threads=args.implicit_threads,
            backend=args.backend,
            recommender=args.model,
            optimizer=args.optimizer,
        )
    print(format_header(result, preset))
    print(format_table(result))
    if args.out:
        write_json(Path(args.out), result)
    return 0
