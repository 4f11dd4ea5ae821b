"""Progress messages of the benchmark, on stderr (the results go to stdout and the JSON file)."""

from __future__ import annotations

import sys


def note(message: str, quiet: bool = False) -> None:
    """Print ``message`` on stderr unless ``quiet``.

    Parameters
    ----------
    message
        One line of progress.
    quiet
        Print nothing.
    """
    if not quiet:
        print(message, file=sys.stderr, flush=True)
