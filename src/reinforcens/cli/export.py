"""``reinforcens export``: a finished run's embeddings with raw ids, and its model config."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a finished run's embeddings and ids",
        description="Write user_factors.npy, item_factors.npy and h.npy (float32; score = h . (p_u * q_i)), "
        "user_ids.parquet and item_ids.parquet (column raw_id, in row order) and model.json (sizes, "
        "the run, its config) of a finished run's selected model.",
    )
    p.add_argument("--run", required=True, help="a finished run directory")
    p.add_argument("--data", help="prepared dataset (default: the one the run recorded)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reinforcens.recommend import TrainedRecommender

    files = TrainedRecommender.load(args.run, args.data).export(args.out)
    print("wrote " + ", ".join(f.name for f in files) + f" to {args.out}")
    return 0
