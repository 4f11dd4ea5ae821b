"""``reinforcens diagnose``: the exposure data as a source of negatives, before training."""

from __future__ import annotations

import argparse

from reinforcens.cli._common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose",
        help="check a prepared dataset's exposure data as a source of negatives",
        description="Share of users with exposures, exposures per click, popularity of exposed-unclicked "
        "items against uniform candidates, and how well 'exposed but not clicked' counts rank held-out "
        "validation clicks; warns when exposed-unclicked items look more likely to be clicked than "
        "random ones (then exposure-based negatives may hurt).",
    )
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reinforcens.experiments.diagnose import diagnose, format_diagnosis
    from reinforcens.experiments.report import jsonable

    d = diagnose(args.data)
    if args.json:
        print_json(jsonable(d))
    else:
        print(format_diagnosis(d, args.data))
    return 0
