"""``reinforcens datasets``: list the known public datasets and download them."""

from __future__ import annotations

import argparse
import json
import sys

from reinforcens.data import download as dl


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "datasets",
        help="list and download public impression datasets",
        description=(
            "List the public impression datasets reinforcens can read, and download them from "
            "their official addresses (checksum, resume, unpack)."
        ),
    )
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
    sub = parser.add_subparsers(dest="datasets_command", metavar="ACTION")

    p_list = sub.add_parser(
        "list",
        help="show each known dataset with its address, license, size and reader format",
        description="Show each known dataset with its address, license, size and reader format.",
    )
    p_list.add_argument("--json", action="store_true", help="print the list as JSON")
    p_list.set_defaults(func=_list)

    p_get = sub.add_parser(
        "download",
        help="download, verify and unpack a dataset",
        description=(
            "Download a dataset from its official address with a progress bar, verify its "
            "checksum, resume a broken transfer, unpack it into DIR/NAME and mark the copy as "
            "verified. A verified copy is not downloaded again unless --force is given."
        ),
    )
    p_get.add_argument("name", metavar="NAME", help="a name from `reinforcens datasets list`")
    p_get.add_argument(
        "--dir",
        default=None,
        help=f"parent folder (default: ${dl.ENV_DATA_DIR} or ./data)",
    )
    p_get.add_argument("--force", action="store_true", help="download again over a verified copy")
    p_get.add_argument(
        "--base-url",
        default=None,
        help=f"fetch the files from this base address instead (default: ${dl.ENV_BASE_URL})",
    )
    p_get.add_argument("--keep-archives", action="store_true", help="keep the archives after unpacking")
    p_get.add_argument("--retries", type=int, default=3, help="attempts per file (default 3)")
    p_get.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p_get.set_defaults(func=_download)


def _list(args: argparse.Namespace) -> int:
    rows = [
        {
            "name": d.name,
            "format": d.format,
            "size": d.size,
            "license": d.license,
            "url": d.url,
            "download": "automatic" if d.files else "manual",
            "title": d.title,
        }
        for d in dl.DATASETS.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = ("name", "format", "size", "download", "license")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in columns))
        print(f"    {r['title']}")
        print(f"    {r['url']}")
    print(
        "\nDownload with `reinforcens datasets download NAME`; read with "
        "`reinforcens prepare --input DIR/NAME --format FORMAT`."
    )
    return 0


def _download(args: argparse.Namespace) -> int:
    info = dl.get_dataset(args.name)
    target = dl.download(
        info,
        args.dir,
        force=args.force,
        base_url=args.base_url,
        keep_archives=args.keep_archives,
        retries=args.retries,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    where = target / info.input_hint if info.input_hint else target
    print(f"{info.name}: verified copy in {target}")
    print(f"next: reinforcens prepare --input {where} --format {info.format} --out prepared/{info.name}")
    return 0
