"""The ``reinforcens`` command line.

Each sub-command lives in its own module of this package, which defines ``register(subparsers)``: it adds
its parser and sets ``func`` (called with the parsed arguments, returning an exit code or ``None``).
Adding a command is one new module plus its name in :data:`COMMANDS`.

User errors (:class:`reinforcens.errors.ReinforcensError`) end in a one-line message on stderr and exit
code 2; ``--verbose`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from reinforcens import __version__
from reinforcens.cli._common import positive_int
from reinforcens.errors import ReinforcensError, Terminated

COMMANDS = (
    "simulate",
    "prepare",
    "stats",
    "train",
    "evaluate",
    "recommend",
    "export",
    "demo",
    "datasets",
    "bench",
    "compare",
    "tune",
    "ablation",
    "sweep",
    "analyze",
    "diagnose",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reinforcens",
        description="Train recommenders with learned negative samplers that use exposure data.",
    )
    parser.add_argument("--version", action="version", version=f"reinforcens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show full tracebacks on errors")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch intra-op threads (default: torch's choice; under torchrun, the CPUs over the ranks "
        "of the machine; 1 is often fastest for GMF-sized work and on a busy machine)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reinforcens`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 1
    if args.threads is not None:
        from reinforcens.backend import available_cpus, set_threads

        cpus = available_cpus()
        if args.threads > cpus:
            print(
                f"reinforcens: warning: --threads {args.threads} is more than the {cpus} CPUs this "
                f"process may use; using {cpus}",
                file=sys.stderr,
            )
        set_threads(min(args.threads, cpus))
    else:
        from reinforcens.parallel import rank_threads

        shared = rank_threads()  # ranks of one machine under torchrun share its CPUs
        if shared is not None:
            from reinforcens.backend import set_threads

            set_threads(shared)
    try:
        code = args.func(args)
    except ReinforcensError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"reinforcens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable --out, an unreadable input, a full disk: name the file
        if args.verbose:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"reinforcens {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except Terminated:  # SIGTERM during an experiment's runs (a KeyboardInterrupt: caught first)
        print(f"reinforcens {args.command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"reinforcens {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
