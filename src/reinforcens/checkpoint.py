"""Checkpoints written atomically and loaded with ``torch.load(weights_only=True)`` (no pickled code).

``torch.load`` does not check the CRC-32 that ``torch.save`` records for each record of its zip
archive: a checkpoint with garbled tensor bytes loads, silently, with other weights. :func:`load_checkpoint`
therefore checks every record's CRC first (a read of the file at memory speed), so a damaged checkpoint
is refused by name and never resumed from or evaluated.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from reinforcens.atomic import atomic_open
from reinforcens.data.integrity import one_line
from reinforcens.errors import DataError


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` atomically (never a half-written checkpoint)."""
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", require: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no pickled code).

    Parameters
    ----------
    require
        Keys the checkpoint must have (a checkpoint of something else is refused, naming the key).

    Raises
    ------
    DataError
        Naming the file, if it is missing, corrupt, not a dict or lacks a required key.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such checkpoint", path)
    check_archive(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise DataError(f"cannot load checkpoint ({one_line(exc)})", path) from None
    if not isinstance(state, dict):
        raise DataError(f"not a reinforcens checkpoint (a {type(state).__name__})", path)
    missing = [k for k in require if k not in state]
    if missing:
        raise DataError(f"not a reinforcens checkpoint of this kind (no key {missing[0]!r})", path)
    return state


def check_archive(path: Path) -> None:
    """Raise :class:`DataError` naming ``path`` if a record of its zip archive fails its CRC check.

    A file that is not a zip archive (truncated: no central directory; the legacy format) is left to
    ``torch.load``, which refuses what it cannot read.
    """
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as exc:  # a garbled header or directory
        raise DataError(f"cannot load checkpoint ({one_line(exc)})", path) from None
    if bad is not None:
        raise DataError(f"corrupt: record {bad!r} fails its CRC check", path)
