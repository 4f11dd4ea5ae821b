"""Readers, one file per dataset format, behind one registry.

A reader turns a file or folder into a raw :class:`pandas.DataFrame` with the columns
``user, item, session, timestamp, clicked`` (and optionally ``line``, the source line of each row, so
errors can name it). :func:`read_log` then validates it and maps ids through
:meth:`reinforcens.data.log.ExposureLog.from_frame`.

Adding a format is one new module here that decorates its reader with :func:`register_reader`, plus its
name in :data:`_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from reinforcens.data.log import ExposureLog
from reinforcens.errors import DataError

Reader = Callable[..., pd.DataFrame]

_READERS: dict[str, Reader] = {}
_MODULES = (
    "table",
    "zhihu",
    "mind",
    "kuairand",
    "zhihurec",
    "ebnerd",
    "trivago",
    "contentwise",
    "recbole",
    "movielens",
    "ratings",
)


def register_reader(name: str) -> Callable[[Reader], Reader]:
    """Register ``reader(path, **options) -> DataFrame`` under ``name``."""

    def decorate(fn: Reader) -> Reader:
        _READERS[name] = fn
        return fn

    return decorate


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")


def available_formats() -> list[str]:
    """The names of all registered formats."""
    _load_all()
    return sorted(_READERS)


def read_log(path: str | Path, format: str = "table", **options: Any) -> ExposureLog:
    """Read an exposure log in a registered format and validate it.

    Parameters
    ----------
    path
        The file or folder the dataset ships as.
    format
        A name from :func:`available_formats`.
    **options
        Passed to the reader (e.g. column names for ``table``).

    Raises
    ------
    DataError
        If the path does not exist, the format is unknown, or the content is malformed.
    """
    _load_all()
    path = Path(path)
    if format not in _READERS:
        raise DataError(f"unknown format {format!r}; known: {', '.join(sorted(_READERS))}")
    if not path.exists():
        raise DataError("no such file or directory", path)
    frame = _READERS[format](path, **options)
    log = ExposureLog.from_frame(frame, source=path)
    del frame
    _release_arrow_memory()
    return log


def _release_arrow_memory() -> None:
    """Hand memory that pyarrow's allocator keeps cached after reading (often GBs) back to the system."""
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except (ImportError, AttributeError):  # pragma: no cover - older pyarrow
        pass
