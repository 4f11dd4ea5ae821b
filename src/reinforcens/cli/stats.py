"""``reinforcens stats``: the paper's Table-1 row of a prepared dataset."""

from __future__ import annotations

import argparse

from reinforcens.cli._common import print_json
from reinforcens.data.prepared import load_prepared
from reinforcens.data.protocols import PROTOCOLS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="print a prepared dataset's statistics (Table 1)")
    p.add_argument("data", help="prepared dataset directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = load_prepared(args.data)
    s = data.stats()
    if args.json:
        print_json(s | {"report": data.meta["report"], "options": data.meta["options"]})
        return 0
    head = ["User#", "Item#", "Train#", "Val.#", "Test#", "Exposure#", "TrainExposurePairs#"]
    vals = [
        s["users"],
        s["items"],
        s["train"],
        s["valid"],
        s["test"],
        s["exposures"],
        s.get("train_exposure_pairs", 0),
    ]
    cells = [f"{v:,}" for v in vals]
    widths = [max(len(h), len(c)) for h, c in zip(head, cells, strict=True)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    print("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    rep, split = data.meta["report"], data.meta["options"].get("split", "session")
    protocol = PROTOCOLS.get(split)
    if protocol is not None and protocol.dropped_key in rep and "users_kept" in rep:
        before = rep["users_kept"]
        print(
            f"{split} split: kept {s['users']:,} of the {before:,} users left by the session filter "
            f"({rep[protocol.dropped_key]:,} with {protocol.lacking} dropped); the log had "
            f"{rep.get('users_in', before):,}"
        )
    return 0
