"""The generic table reader: CSV, TSV or Parquet with one row per (user, item, session) exposure."""

from __future__ import annotations

import bz2
import csv
import gzip
import lzma
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reinforcens.data.formats import register_reader
from reinforcens.errors import DataError

_COLUMNS = ("user", "item", "session", "timestamp", "clicked")


@register_reader("table")
def read_table(
    path: Path,
    user_col: str = "user",
    item_col: str = "item",
    session_col: str = "session",
    timestamp_col: str | None = "timestamp",
    clicked_col: str = "clicked",
    sep: str | None = None,
) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet table of exposures.

    Parameters
    ----------
    path
        ``.parquet`` files are read with pyarrow; anything else as delimited text with a header row.
    user_col, item_col, session_col, timestamp_col, clicked_col
        Column names in the file. ``timestamp_col=None`` (or a missing timestamp column) orders
        sessions by their id.
    sep
        Delimiter; by default ``\\t`` for ``.tsv`` files and ``,`` otherwise.

    Returns
    -------
    pandas.DataFrame
        Columns ``user, item, session, timestamp, clicked, line``.
    """
    roles = {"user": user_col, "item": item_col, "session": session_col, "clicked": clicked_col}
    if timestamp_col:
        roles["timestamp"] = timestamp_col
    shared = sorted({c for c in roles.values() if list(roles.values()).count(c) > 1})
    if shared:
        both = " and ".join(r for r, c in roles.items() if c == shared[0])
        raise DataError(f"column {shared[0]!r} is given as the {both} column; each needs its own", path)
    rename = {col: role for role, col in roles.items()}
    if path.is_dir():
        raise DataError("expected a file, got a directory", path)
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            _refuse_duplicates(pq.read_schema(path).names, rename, path, None)
            table = pq.read_table(path)
            # one column at a time, each arrow buffer freed once converted: no second full copy
            frame = table.to_pandas(split_blocks=True, self_destruct=True)
            del table
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise DataError(f"not a readable Parquet file ({_first(exc)})", path) from None
        frame = frame.rename(columns=rename)
        frame["line"] = np.arange(1, len(frame) + 1, dtype=np.int64 if len(frame) >= 2**31 else np.int32)
    else:
        if sep is None:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
        if path.stat().st_size == 0:
            raise DataError("the file is empty", path)
        try:
            # the header as a data row: read_csv renames repeated names (clicked, clicked.1)
            header = pd.read_csv(
                path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False, engine="c"
            )
            names = [str(c) for c in header.iloc[0]] if len(header) else []
            _refuse_duplicates(names, rename, path, 1)
            frame = pd.read_csv(
                path, sep=sep, dtype=str, keep_default_na=False, na_values=[""], engine="c"
            )
        except pd.errors.ParserError as exc:
            raise DataError(f"malformed table ({_short(exc)})", path) from None
        except (UnicodeDecodeError, csv.Error, pd.errors.EmptyDataError) as exc:
            raise DataError(f"unreadable table ({_short(exc)})", path) from None
        frame = frame.rename(columns=rename)
        frame["line"] = _data_lines(path, sep, len(frame))
    missing = [c for c in ("user", "item", "session", "clicked") if c not in frame.columns]
    if missing:
        names = {"user": user_col, "item": item_col, "session": session_col, "clicked": clicked_col}
        cols = ", ".join(repr(names[c]) for c in missing)
        raise DataError(
            f"missing column(s) {cols}; found {', '.join(map(repr, frame.columns[:-1]))} "
            f"(name other columns with --user-col/--item-col/--session-col/--clicked-col)",
            path,
        )
    return frame


def _refuse_duplicates(names: Sequence[str], rename: dict[str, str], path: Path, line: int | None) -> None:
    """Refuse a file in which a column the reader uses would appear more than once.

    Parameters
    ----------
    names
        The column names as the file spells them, repeats kept.
    rename
        File column name -> reader column name (from the ``*_col`` options).
    path, line
        Named in the error (``line`` 1 for a text header, None for Parquet).

    Raises
    ------
    DataError
        Naming each column that repeats, or the file columns that the renaming maps onto one.
    """
    sources: dict[str, list[str]] = {}
    for name in names:
        target = rename.get(name, name)
        if target in _COLUMNS:
            sources.setdefault(target, []).append(name)
    clashes = []
    for target, found in sources.items():
        if len(found) > 1 and len(set(found)) == 1:
            clashes.append(f"{found[0]!r} appears {len(found)} times")
        elif len(found) > 1:
            shown = " and ".join(repr(n) for n in dict.fromkeys(found))
            clashes.append(f"{shown} would both be used as {target!r}")
    if clashes:
        raise DataError(
            f"column(s) present more than once: {'; '.join(clashes)} (rename or drop the extra "
            f"column, or pick others with --user-col/--item-col/--session-col/--timestamp-col/"
            f"--clicked-col)",
            path,
            line,
        )


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__


#: openers of the compressed text files whose lines :func:`_data_lines` can count
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
#: whitespace bytes: a line of nothing else is skipped by ``pandas.read_csv`` (unless one is ``sep``)
_WHITESPACE = b" \t\r\v\f"


def _data_lines(path: Path, sep: str, n_rows: int, chunk: int = 1 << 22) -> np.ndarray:
    """The 1-based line number in the file of each of the ``n_rows`` data rows ``read_csv`` returned.

    ``read_csv`` skips blank (whitespace-only) lines, so row ``r`` is line ``r + 2`` only if no blank line
    comes before it; the file is scanned once (in chunks) for blank lines, and every row is shifted by
    the number of blank lines before it. Archives the scan cannot open (``.zip``, ``.zst``) keep
    ``r + 2``; lines inside quoted fields are not counted.
    """
    rows = np.arange(2, n_rows + 2, dtype=np.int64)
    suffix = path.suffix.lower()
    if suffix in (".zip", ".zst"):
        return rows
    blank_code = np.ones(256, dtype=bool)  # True: a byte that makes a line non-blank
    blank_code[list(_WHITESPACE.replace(sep.encode()[:1], b""))] = False
    blank_code[ord("\n")] = False
    blanks: list[np.ndarray] = []
    line, pending = 1, False  # the current line's number; whether it has a non-blank byte so far
    with _OPENERS.get(suffix, open)(path, "rb") as f:
        while block := f.read(chunk):
            a = np.frombuffer(block, dtype=np.uint8)
            ends = np.flatnonzero(a == 10)
            if not ends.size:
                pending = pending or bool(blank_code[a].any())
                continue
            starts = np.concatenate([[0], ends[:-1] + 1])
            # a blank line starts with whitespace (or is empty): only those lines are looked at
            maybe = np.flatnonzero(~blank_code[a[starts]])
            if maybe.size and maybe[0] == 0 and pending:
                maybe = maybe[1:]
            if maybe.size:
                marks = np.concatenate([[0], np.cumsum(blank_code[a], dtype=np.int32)])
                content = marks[ends[maybe]] - marks[starts[maybe]]
                blanks.append(line + maybe[content == 0])
            line += ends.size
            pending = bool(blank_code[a[ends[-1] + 1 :]].any())
    blank = np.concatenate(blanks) if blanks else np.zeros(0, np.int64)
    if blank.size == 0:
        return rows
    # non-blank line k (1-based; the header is k = 1) is line k + the blank lines before it
    before = blank - np.arange(blank.size)  # non-blank lines before each blank line, plus one
    return rows + np.searchsorted(before, rows, side="right")
