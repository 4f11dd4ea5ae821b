"""ContentWise Impressions (CW10M).

The dataset ships three tables, each as a folder of Parquet parts (``CW10M/<table>/*.parquet``) or a
gzipped CSV (``CW10M-CSV/<table>.csv.gz``):

- ``interactions``: ``utc_ts_milliseconds, user_id, item_id, series_id, recommendation_id,
  interaction_type, ...``; ``recommendation_id`` is -1 when the interaction did not come from a
  recommendation row;
- ``impressions-direct-link``: ``recommendation_id, row_position, recommendation_list_length,
  recommended_series_list`` (the series shown in the row the user interacted with);
- ``impressions-non-direct-link``: ``user_id, row_position, recommendation_list_length,
  recommended_series_list`` (rows shown without any interaction; no time).

Mapping (items are *series*, the unit of the impression lists):

- every interaction is a clicked row for its ``series_id`` at ``utc_ts_milliseconds // 1000``
  (``interaction_types`` selects which kinds count; all by default: 0 view, 1 detail, 2 rate,
  3 purchase);
- every series of a direct-link impression is a shown row for the user of the interaction(s) with
  that ``recommendation_id``, at the time of the earliest such interaction; the interacted series is
  the clicked one;
- non-direct impressions carry no time: with ``non_direct=True`` they become one shown-only
  pseudo-session per user, one second before the user's first interaction (so they only ever reach
  training); ignored by default.

Sessions are a user's rows of one UTC day (default) or runs with gaps of at most ``session_gap``
seconds. In the CSV version the lists are written as text (``"[1 2 3]"``), which is parsed too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from reinforcens.data.formats import _common as c
from reinforcens.data.formats import register_reader
from reinforcens.errors import DataError

TABLES = ("interactions", "impressions-direct-link", "impressions-non-direct-link")


@register_reader("contentwise")
def read_contentwise(
    path: Path,
    session_gap: float | None = None,
    non_direct: bool = False,
    interaction_types: Sequence[int] | None = None,
    utc_offset_hours: float = 0.0,
) -> pd.DataFrame:
    """Read ContentWise Impressions.

    Parameters
    ----------
    path
        The dataset folder (the ``CW10M`` Parquet version is preferred over ``CW10M-CSV`` when both
        are below it), or a folder holding the three tables side by side.
    session_gap
        ``None`` (default): one session per user and day. A number: a new session starts when the
        user is idle for more than this many seconds.
    non_direct
        Whether to add the non-direct impressions as an early shown-only pseudo-session.
    interaction_types
        Which ``interaction_type`` values count as clicks (default: all).
    utc_offset_hours
        Time zone of the day boundaries.

    Returns
    -------
    pandas.DataFrame
        Columns ``user, item, session, timestamp, clicked, line`` (``line``: the row in its table).
    """
    if path.is_file():
        raise DataError("ContentWise is several tables: point --input at the dataset folder", path)
    inter_path = _locate(path, "interactions")
    direct_path = _locate(path, "impressions-direct-link", near=inter_path)
    cols, rows = _read(
        inter_path,
        ["utc_ts_milliseconds", "user_id", "series_id", "recommendation_id"],
        optional=["interaction_type"],
    )
    c.require_rows(rows, inter_path)
    c.check_ids(cols["user_id"], "user", inter_path, rows)
    c.check_ids(cols["series_id"], "series", inter_path, rows)
    ms = c.to_int(cols["utc_ts_milliseconds"], "utc_ts_milliseconds", inter_path, rows)
    ts = np.floor_divide(ms, 1000)
    rec = c.to_int(cols["recommendation_id"], "recommendation_id", inter_path, rows)
    if interaction_types is not None and "interaction_type" in cols:
        itype = c.to_int(cols["interaction_type"], "interaction_type", inter_path, rows)
        chosen = np.isin(itype, np.asarray(list(interaction_types), dtype=np.int64))
    else:
        chosen = np.ones(len(rows), dtype=bool)

    # direct-link impressions: one list per recommendation_id
    dcols, drows = _read(direct_path, ["recommendation_id", "recommended_series_list"])
    drec = c.to_int(dcols["recommendation_id"], "recommendation_id", direct_path, drows)
    series, dparent = _explode_series(dcols["recommended_series_list"], direct_path, drows)
    # the earliest interaction of each recommendation gives the user and time of its impression
    linked = pd.DataFrame({"rec": rec, "ts": ts, "row": np.arange(len(rows))})[rec != -1]
    first = linked.sort_values(["ts", "row"]).drop_duplicates("rec").set_index("rec")["row"]
    at = first.reindex(drec[dparent]).to_numpy()
    matched = ~np.isnan(at)
    src_row = np.where(matched, at, 0).astype(np.int64)[matched]
    shown_items = series.filter(pa.array(matched))
    shown_lines = drows[dparent][matched]

    parts_user = [c.take(cols["user_id"], np.flatnonzero(chosen)), c.take(cols["user_id"], src_row)]
    parts_item = [c.take(cols["series_id"], np.flatnonzero(chosen)), shown_items]
    parts_ts = [ts[chosen], ts[src_row]]
    parts_click = [np.ones(int(chosen.sum()), bool), np.zeros(len(src_row), bool)]
    parts_line = [rows[chosen], shown_lines]
    kind = [np.zeros(int(chosen.sum()), np.int8), np.zeros(len(src_row), np.int8)]

    if non_direct:
        nd_path = _locate(path, "impressions-non-direct-link", near=inter_path)
        ncols, nrows = _read(nd_path, ["user_id", "recommended_series_list"])
        c.check_ids(ncols["user_id"], "user", nd_path, nrows)
        nseries, nparent = _explode_series(ncols["recommended_series_list"], nd_path, nrows)
        parts_user.append(c.take(ncols["user_id"], nparent))
        parts_item.append(nseries)
        parts_ts.append(np.zeros(len(nparent), np.int64))
        parts_click.append(np.zeros(len(nparent), bool))
        parts_line.append(nrows[nparent])
        kind.append(np.ones(len(nparent), np.int8))

    line = np.concatenate(parts_line).astype(np.int64)
    user = c.ids(c.concat_ids(parts_user, "user", inter_path), "user", inter_path, line)
    item = c.ids(c.concat_ids(parts_item, "series", inter_path), "series", inter_path, line)
    ucode = np.asarray(user.codes, dtype=np.int64)
    timestamp = np.concatenate(parts_ts).astype(np.int64)
    clicked = np.concatenate(parts_click)
    kinds = np.concatenate(kind)
    keep = np.ones(len(line), dtype=bool)
    if (kinds == 1).any():
        logged = kinds == 0
        first_ts = pd.Series(timestamp[logged]).groupby(ucode[logged]).min()
        start = first_ts.reindex(ucode[kinds == 1]).to_numpy()
        keep[kinds == 1] = ~np.isnan(start)
        timestamp[kinds == 1] = np.nan_to_num(start, nan=0.0).astype(np.int64) - 1
    user, item, ucode = user[keep], item[keep], ucode[keep]
    timestamp, clicked, kinds, line = timestamp[keep], clicked[keep], kinds[keep], line[keep]
    key = c.time_keys(ucode, timestamp, session_gap, utc_offset_hours, path)
    key = np.where(kinds == 1, 0, key)
    sessions = c.number_sessions(ucode, key, timestamp, kind=kinds)
    out = c.frame(user, item, sessions, timestamp, clicked, line)
    return c.drop_exposures_of_clicks(out)


def _locate(path: Path, table: str, near: Path | None = None) -> Path:
    """The Parquet folder/file or CSV of ``table`` below ``path`` (next to ``near`` if possible)."""
    patterns = [table, f"{table}.parquet", f"{table}.csv.gz", f"{table}.csv"]
    if near is not None:
        for p in patterns:
            candidate = near.parent / p
            if candidate.is_file() or (candidate.is_dir() and c.is_parquet(candidate)):
                return candidate
    found = [
        f
        for f in c.find_files(path, patterns, f"ContentWise {table} table")
        if f.is_file() or c.is_parquet(f)
    ]
    if not found:
        raise DataError(f"no ContentWise {table} table found", path)
    parquet = [f for f in found if c.is_parquet(f)]
    chosen = parquet or found
    if len(chosen) > 1:
        names = ", ".join(str(f.relative_to(path)) for f in chosen[:5])
        raise DataError(f"several {table} tables found ({names}); point at one version", path)
    return chosen[0]


def _read(
    path: Path, columns: list[str], optional: Sequence[str] = ()
) -> tuple[dict[str, pa.Array], np.ndarray]:
    if c.is_parquet(path):
        return c.read_parquet(path, columns, optional=optional)
    return c.read_delimited(
        path, columns, optional=optional, newlines_in_values=True, layout="ContentWise CSV"
    )


def _explode_series(lists: pa.Array, path: Path, rows: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    if pa.types.is_string(lists.type) or pa.types.is_large_string(lists.type):
        lists = c.int_lists_from_text(lists)
    elif not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)):
        raise DataError(f"recommended_series_list must be a list, not {lists.type}", path)
    values, parent = c.explode(lists)
    c.fail_if(pc.is_null(values), rows[parent], path, "missing series id in a list")
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        values = pa.array(c.to_int(values, "series id", path, rows[parent]))
    return values, parent
