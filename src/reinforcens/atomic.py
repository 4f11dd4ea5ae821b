"""Atomic file writes: the one way reinforcens writes a file that another step may read.

A file is written to a temporary sibling with a unique name (``.NAME.PID.RANDOM.tmp``), flushed to disk
and renamed onto its target, so a reader sees the old file or the new one, never half of one, and two
processes writing the same target never share a temporary file. On any error the temporary file is
removed and the target is left as it was.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

#: how the temporary siblings of a target are named (``is_temporary`` recognises them)
TMP_SUFFIX = ".tmp"


def temporary_sibling(target: Path) -> Path:
    """A fresh, unique temporary path beside ``target``."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def is_temporary(name: str, target_name: str | None = None) -> bool:
    """Whether ``name`` is a temporary sibling left by an interrupted write (of ``target_name``)."""
    prefix = f".{target_name}." if target_name else "."
    return name.startswith(prefix) and name.endswith(TMP_SUFFIX)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target``, on error it is removed.

    For writers that need a path (``pyarrow.parquet.write_table``); the file is synced before the
    rename.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(target: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file for writing (``"w"`` text, ``"wb"`` binary); it replaces ``target`` when the
    block ends without an error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only ('w' or 'wb'), got {mode!r}")
    with atomic_path(target) as tmp:
        encoding = "utf-8" if mode == "w" else None
        with open(tmp, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | Path, obj: Any, sort_keys: bool = True) -> None:
    """Write ``obj`` as indented JSON (see :func:`jsonable`: NaN and infinities become ``null``, so the
    file is valid JSON)."""
    text = json.dumps(jsonable(obj), indent=2, sort_keys=sort_keys, allow_nan=False)
    atomic_write_text(path, text + "\n")


def json_line(obj: Any) -> str:
    """One line of JSON Lines (as :func:`atomic_write_json`: no ``NaN`` in the file)."""
    return json.dumps(jsonable(obj), allow_nan=False) + "\n"


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays turned into Python values, paths into strings and
    NaN/inf into ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # the writer wrote nothing: let the rename report it
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
