"""``reinforcens recommend``: the top-k items of users from a finished run, in raw ids."""

from __future__ import annotations

import argparse
from pathlib import Path

from reinforcens.cli._common import positive_int
from reinforcens.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recommend",
        help="top-k recommendations of a finished run",
        description="Rank every item for each user with a finished run's selected model and write the "
        "top --k as Parquet (columns user, item: raw ids of the log; score; rank, 1 = best). The user's "
        "training clicks are excluded unless --include-seen; ties go to the lower internal item id.",
    )
    p.add_argument("--run", required=True, help="a finished run directory")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="a text file with one raw user id per line")
    who.add_argument("--all", action="store_true", help="every user of the run's data")
    p.add_argument("--k", type=positive_int, default=20, help="items per user (default 20)")
    p.add_argument("--include-seen", action="store_true", help="also rank the user's training clicks")
    p.add_argument("--data", help="prepared dataset (default: the one the run recorded)")
    p.add_argument("--out", required=True, help="Parquet file to write")
    p.set_defaults(func=run)


def read_ids(path: str | Path) -> list[str]:
    """Raw ids, one per line (blank lines skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ids ({exc})") from None
    ids = [line.strip() for line in lines if line.strip()]
    if not ids:
        raise ConfigError(f"{path}: holds no id")
    return ids


def run(args: argparse.Namespace) -> int:
    from reinforcens.atomic import atomic_open
    from reinforcens.recommend import TrainedRecommender

    rec = TrainedRecommender.load(args.run, args.data)
    users = None if args.all else read_ids(args.users)
    recs = rec.recommend(users, k=args.k, exclude_seen=not args.include_seen)
    with atomic_open(Path(args.out), "wb") as f:
        recs.to_parquet(f, index=False)
    print(f"wrote {args.out}: {len(recs):,} recommendations for {recs['user'].nunique():,} users")
    return 0
