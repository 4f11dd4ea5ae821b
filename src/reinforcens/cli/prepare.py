"""``reinforcens prepare``: read a log, preprocess, split, build the evaluation lists, save."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from reinforcens.cli._common import parse_list_length, parse_options, seed
from reinforcens.data.formats import _READERS, available_formats, read_log
from reinforcens.data.prepared import PreparedDataset, _check_options, prepare_events, save_prepared
from reinforcens.data.preprocess import preprocess
from reinforcens.data.protocols import PROTOCOLS
from reinforcens.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="preprocess and split an exposure log into a prepared dataset",
        description="Drop repeated clicks, keep unclicked exposures, filter users/items with few "
        "sessions, split by session (latest = test, one before = validation) and build the "
        "fixed-length evaluation lists. Writes a prepared dataset directory.",
    )
    p.add_argument("--input", required=True, help="the log file or dataset folder")
    p.add_argument("--format", default="table", help=f"input format: {', '.join(available_formats())}")
    p.add_argument("--out", required=True, help="prepared dataset directory to write")
    p.add_argument("--min-sessions", type=int, default=4, help="session filter (default 4)")
    p.add_argument(
        "--list-length",
        default="40",
        help="evaluation list length L (default 40); 'none' keeps sessions as they are",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the list sampling (default 0)")
    p.add_argument(
        "--split",
        default="session",
        choices=list(PROTOCOLS),
        help="how validation and test are held out: "
        + "; ".join(f"{n}: {pr.summary}" for n, pr in PROTOCOLS.items()).replace("%", "%%")
        + " (default session)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing prepared dataset")
    g = p.add_argument_group("table format columns")
    g.add_argument("--user-col", default=None)
    g.add_argument("--item-col", default=None)
    g.add_argument("--session-col", default=None)
    g.add_argument("--timestamp-col", default=None)
    g.add_argument("--clicked-col", default=None)
    g.add_argument("--sep", default=None, help="delimiter of text tables")
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a reader option (repeatable), e.g. --option session_gap=1800",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = parse_options(args.option)
    for key in ("user_col", "item_col", "session_col", "timestamp_col", "clicked_col", "sep"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    fmt = args.format
    if fmt not in available_formats():
        raise ConfigError(f"unknown --format {fmt!r}; known: {', '.join(available_formats())}")
    accepted = inspect.signature(_READERS[fmt]).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            known = ", ".join(k for k in accepted if k != "path")
            raise ConfigError(
                f"format {fmt!r} has no option {', '.join(unknown)} (its options: {known or 'none'})"
            )
    list_length = parse_list_length(args.list_length)
    source = Path(args.input)
    data = _read_and_prepare(source, fmt, options, args.min_sessions, list_length, args.seed, args.split)
    extra = {}
    truth = (source if source.is_dir() else source.parent) / "ground_truth.npz"
    if truth.is_file():
        extra["ground_truth.npz"] = truth
    out = save_prepared(data, args.out, force=args.force, extra_files=extra)
    rep = data.meta["report"]
    print(
        f"dropped {rep['repeated_clicks_dropped']:,} repeated clicks; session filter "
        f"({args.min_sessions}) kept {rep['users_kept']:,}/{rep['users_in']:,} users and "
        f"{rep['items_kept']:,}/{rep['items_in']:,} items in {rep['filter_rounds']} round(s); "
        f"the {args.split} split dropped {rep[PROTOCOLS[args.split].dropped_key]:,} users with "
        f"{PROTOCOLS[args.split].lacking}"
    )
    s = data.stats()
    print(
        f"wrote {out}: {s['users']:,} users, {s['items']:,} items, train {s['train']:,}, "
        f"valid {s['valid']:,}, test {s['test']:,} clicks, {s['exposures']:,} exposures "
        f"({s['train_exposure_pairs']:,} training pairs)"
        + (" (+ ground truth)" if extra else "")
    )
    return 0


def _read_and_prepare(
    source: Path,
    fmt: str,
    options: dict,
    min_sessions: int,
    list_length: int | None,
    seed: int,
    split: str = "session",
) -> PreparedDataset:
    """Read, preprocess, then free the log before the split (halves the peak memory of a large log)."""
    _check_options(min_sessions, list_length)
    log = read_log(source, fmt, **options)
    print(f"read {len(log):,} rows: {log.n_users:,} users, {log.n_items:,} items from {source}")
    about = (log.source, log.n_users, log.n_items)
    events = preprocess(log, min_sessions=min_sessions, keep_time=PROTOCOLS[split].needs_time)
    del log
    return prepare_events(events, *about, min_sessions, list_length, seed, split)
