"""``reinforcens ablation``: BPR-GMF, RNS-AS, RNS-ES and RNS (the paper's Table 3)."""

from __future__ import annotations

import argparse

from reinforcens.cli.compare import add_run_arguments
from reinforcens.cli.train import add_training_arguments, training_values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablation",
        help="Table 3: BPR-GMF, RNS-AS, RNS-ES and RNS with their alpha/beta",
        description="Train BPR-GMF, RNS-AS (adversarial reward only, = KBGAN), RNS-ES (exposure rewards "
        "only) and RNS on the same seeds and write ablation.md, ablation.csv and ablation.json. "
        "--alpha/--beta set RNS's weights and --es-beta RNS-ES's beta; in the directory of a compare "
        "the BPR-GMF, KBGAN and RNS runs are reused.",
    )
    add_run_arguments(p, "10")
    p.add_argument("--es-beta", type=float, default=None, help="RNS-ES's beta (default 0.9)")
    p.add_argument("--tuned", help="a tuned.json from `reinforcens tune`")
    add_training_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reinforcens.experiments.ablation import ablation
    from reinforcens.experiments.tune import load_tuned

    base = training_values(args, None)
    opts = dict(base.get("sampler_options") or {})
    alpha, beta = opts.pop("alpha", None), opts.pop("beta", None)
    base["sampler_options"] = opts
    res = ablation(
        args.data,
        args.seeds,
        args.out,
        base=base,
        rns_alpha=alpha,
        rns_beta=beta,
        es_beta=args.es_beta,
        tuned=load_tuned(args.tuned) if args.tuned else None,
        jobs=args.jobs,
        progress=not args.quiet,
        engine=args.engine,
        address=args.address,
    )
    print(res.table, end="")
    print(f"wrote {Path(args.out) / 'ablation.md'}, ablation.csv, ablation.json")
    return 0
