"""``reinforcens analyze``: generated vs exposed negatives of runs (the paper's Figure 3)."""

from __future__ import annotations

import argparse

from reinforcens.cli._common import seed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="Figure 3: t-SNE of generated vs exposed negatives, overlap and MMD over epochs",
        description="For each run: a t-SNE of the features p_u * q_i of up to --points generated "
        "negatives (the best epoch's record in negatives.npz) and as many exposed instances of the same "
        "users, and the overlap and MMD between generated and exposed negatives per recorded epoch. "
        "Features come from each run's final model, for every epoch. Also the Spearman correlation of "
        "each item's mean score with its training clicks. Writes tsne_<name>.png, "
        "overlap_mmd.png and analysis.json.",
    )
    p.add_argument("--run", action="append", required=True, help="a finished run directory (repeat)")
    p.add_argument("--label", action="append", help="a name per --run, in order")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--data", help="prepared dataset (default: the one each run recorded)")
    p.add_argument("--points", type=int, default=1000, help="points per set in each t-SNE (default 1000)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the exposed samples and the t-SNE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reinforcens.cli._common import fmt
    from reinforcens.experiments.analysis import analyze

    res = analyze(args.run, args.out, names=args.label, data=args.data, n=args.points, seed=args.seed)
    for r in res["runs"]:
        pts = r["tsne_points"]
        n_gen = pts["generated"] + pts["overlap"]
        print(
            f"{r['name']} ({r['sampler']}): epoch {r['tsne_epoch']} t-SNE of {n_gen} "
            f"generated ({pts['overlap']} exposed) and {pts['exposed']} exposed; "
            f"overlap {fmt(r['overlap'][-1] if r['overlap'] else float('nan'))}, "
            f"MMD² {r['mmd'][-1]:.3g} at the last epoch (features of the final model); mean item "
            f"score vs training clicks: Spearman {fmt(r['popularity_spearman'])}"
        )
    print("wrote " + ", ".join(res["files"]) + f", {args.out}/analysis.json")
    return 0
