"""``reinforcens evaluate``: the paper's list AUC/NDCG (and full-ranking metrics) of a scorer."""

from __future__ import annotations

import argparse

from reinforcens.cli._common import fmt, print_json
from reinforcens.data.prepared import load_prepared
from reinforcens.errors import ConfigError
from reinforcens.evaluation import ItemPop, evaluate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model on a prepared dataset")
    p.add_argument("--data", help="prepared dataset directory (default: the run's data)")
    p.add_argument("--run", default=None, help="a run directory written by `reinforcens train`")
    p.add_argument("--model", default=None, help="a non-trained model: itempop")
    p.add_argument("--k", type=int, default=20, help="cut-off of full-ranking metrics")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.model is None) == (args.run is None):
        raise ConfigError("give exactly one of --model itempop or --run RUN")
    if args.run is not None:
        results = _evaluate_run(args)
    else:
        if args.model != "itempop":
            raise ConfigError(f"unknown --model {args.model!r}; known: itempop")
        if not args.data:
            raise ConfigError("--data is required with --model")
        data = load_prepared(args.data)
        results = evaluate(ItemPop.fit(data), data, full_k=args.k)
    print_results(results, args.json)
    return 0


def _evaluate_run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from pathlib import Path

    from reinforcens.models import TorchScorer
    from reinforcens.rundir import data_for
    from reinforcens.train import load_run

    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise ConfigError(f"--run {run_dir}: no such run directory")
    data = data_for(run_dir, args.data)
    _, model, _ = load_run(run_dir, data=data)
    return evaluate(TorchScorer(model), data, full_k=args.k)


def print_results(results: dict[str, dict[str, float]], as_json: bool) -> None:
    if as_json:
        print_json(results)
        return
    for split, res in results.items():
        parts = [f"{k} {fmt(v) if isinstance(v, float) else v}" for k, v in res.items()]
        print(f"{split:5s}  " + "  ".join(parts))
