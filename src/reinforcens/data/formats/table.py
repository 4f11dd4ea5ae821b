"""The generic table reader: CSV, TSV or Parquet with one row per (user, item, session) exposure."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reinforcens.data.formats import register_reader
from reinforcens.errors import DataError


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
    rename = {user_col: "user", item_col: "item", session_col: "session", clicked_col: "clicked"}
    if timestamp_col:
        rename[timestamp_col] = "timestamp"
    if path.is_dir():
        raise DataError("expected a file, got a directory", path)
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            table = pq.read_table(path)
            # one column at a time, each arrow buffer freed once converted: no second full copy
            frame = table.to_pandas(split_blocks=True, self_destruct=True)
            del table
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise DataError(f"not a readable Parquet file ({exc})", path) from None
        frame = frame.rename(columns=rename)
        frame["line"] = np.arange(1, len(frame) + 1, dtype=np.int64 if len(frame) >= 2**31 else np.int32)
    else:
        if sep is None:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
        if path.stat().st_size == 0:
            raise DataError("the file is empty", path)
        try:
            frame = pd.read_csv(
                path, sep=sep, dtype=str, keep_default_na=False, na_values=[""], engine="c"
            )
        except pd.errors.ParserError as exc:
            raise DataError(f"malformed table ({_short(exc)})", path) from None
        except (UnicodeDecodeError, csv.Error, pd.errors.EmptyDataError) as exc:
            raise DataError(f"unreadable table ({_short(exc)})", path) from None
        frame = frame.rename(columns=rename)
        frame["line"] = frame.index.to_numpy() + 2
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


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
