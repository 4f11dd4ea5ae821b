"""EB-NeRD (Ekstra Bladet News Recommendation Dataset).

The dataset ships as ``articles.parquet`` plus ``train/`` and ``validation/`` folders, each with
``behaviors.parquet`` and ``history.parquet``. Columns used:

- ``behaviors.parquet``: ``user_id``, ``impression_time``, ``article_ids_inview`` (the shown list),
  ``article_ids_clicked``, and ``session_id`` (optional; ``impression_id`` is not needed);
- ``history.parquet``: ``user_id``, ``article_id_fixed`` (clicked articles before the period) and
  ``impression_time_fixed`` (their times, optional).

Mapping: each in-view article is a shown row at ``impression_time``, clicked when it is in
``article_ids_clicked`` (a clicked article missing from the in-view list is added as a clicked row).
Sessions are the dataset's ``session_id`` (default) or single impressions. History clicks dated before
the user's first impression become one earlier clicked pseudo-session per user (``history="session"``),
one session per day at their own times (``history="day"``), or are ignored (``history="none"``).
History clicks dated after the first impression (the validation history overlaps the training period)
are left out; history is de-duplicated per (user, article).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from reinforcens.data.formats import _common as c
from reinforcens.data.formats import register_reader
from reinforcens.errors import DataError

COPENHAGEN_SUMMER = 2.0


@register_reader("ebnerd")
def read_ebnerd(
    path: Path,
    session: str = "session_id",
    history: str = "session",
    utc_offset_hours: float = COPENHAGEN_SUMMER,
) -> pd.DataFrame:
    """Read EB-NeRD behaviors (and history).

    Parameters
    ----------
    path
        A ``behaviors.parquet`` file, or a folder: every ``behaviors.parquet`` below it is read
        (``train`` and ``validation``), each with the ``history.parquet`` beside it.
    session
        ``"session_id"`` (default; falls back to impressions when the column is absent) or
        ``"impression"`` (each impression its own session).
    history
        ``"session"`` (default), ``"day"`` or ``"none"``; see the module description.
    utc_offset_hours
        Time zone of the day boundaries for ``history="day"``.

    Returns
    -------
    pandas.DataFrame
        Columns ``user, item, session, timestamp, clicked, line`` (``line`` is the Parquet row).
    """
    if session not in ("session_id", "impression"):
        raise DataError(f"session must be 'session_id' or 'impression', not {session!r}", path)
    if history not in ("session", "day", "none"):
        raise DataError(f"history must be 'session', 'day' or 'none', not {history!r}", path)
    files = c.find_files(path, ["behaviors.parquet", "behaviours.parquet"], "EB-NeRD behaviors.parquet")
    b_user, b_item, b_ts, b_click, b_key, b_line = [], [], [], [], [], []
    h_user, h_item, h_ts, h_line = [], [], [], []
    offset = 0
    for file in files:
        cols, rows = c.read_parquet(
            file,
            ["user_id", "impression_time", "article_ids_inview", "article_ids_clicked"],
            optional=["session_id"],
        )
        c.require_rows(rows, file)
        for name in ("article_ids_inview", "article_ids_clicked"):
            if not _is_list(cols[name].type):
                raise DataError(f"{name} must be a list column, not {cols[name].type}", file)
        if cols["article_ids_clicked"].null_count == len(rows):
            raise DataError("article_ids_clicked is empty in every row (the test set has no labels)", file)
        ts = c.timestamps_from_arrow(cols["impression_time"], "impression_time", file, rows)
        if session == "session_id" and "session_id" in cols:
            key = c.to_int(cols["session_id"], "session_id", file, rows)
        else:
            key = np.arange(offset, offset + len(rows), dtype=np.int64)
        user = cols["user_id"]
        c.check_ids(user, "user", file, rows)
        for name, flag in (("article_ids_inview", False), ("article_ids_clicked", True)):
            items, parent = c.explode(cols[name])
            c.fail_if(pc.is_null(items), rows[parent], file, f"missing article id in {name}")
            b_user.append(c.take(user, parent))
            b_item.append(items)
            b_ts.append(ts[parent])
            b_click.append(np.full(len(parent), flag))
            b_key.append(key[parent])
            b_line.append(rows[parent])
        offset += len(rows)
        hist_file = file.parent / "history.parquet"
        if history != "none" and hist_file.is_file():
            hcols, hrows = c.read_parquet(
                hist_file, ["user_id", "article_id_fixed"], optional=["impression_time_fixed"]
            )
            if not _is_list(hcols["article_id_fixed"].type):
                raise DataError("article_id_fixed must be a list column", hist_file)
            items, parent = c.explode(hcols["article_id_fixed"])
            c.fail_if(pc.is_null(items), hrows[parent], hist_file, "missing article id")
            if "impression_time_fixed" in hcols and _is_list(hcols["impression_time_fixed"].type):
                times, tparent = c.explode(hcols["impression_time_fixed"])
                if len(tparent) != len(parent) or not np.array_equal(tparent, parent):
                    raise DataError("impression_time_fixed and article_id_fixed differ in length", hist_file)
                hts = c.timestamps_from_arrow(times, "impression_time_fixed", hist_file, hrows[parent])
            else:
                hts = np.full(len(parent), np.iinfo(np.int64).min, dtype=np.int64)
            c.check_ids(hcols["user_id"], "user", hist_file, hrows)
            h_user.append(c.take(hcols["user_id"], parent))
            h_item.append(items)
            h_ts.append(hts)
            h_line.append(hrows[parent])

    source = files[0] if len(files) == 1 else path
    n_b = sum(len(a) for a in b_user)
    line = np.concatenate([*b_line, *h_line]).astype(np.int64)
    user = c.ids(c.concat_ids([*b_user, *h_user], "user", source), "user", source, line)
    item = c.ids(c.concat_ids([*b_item, *h_item], "article", source), "article", source, line)
    ucode = np.asarray(user.codes, dtype=np.int64)
    ts = np.concatenate([*b_ts, *h_ts]).astype(np.int64)
    clicked = np.concatenate([*b_click, np.ones(len(line) - n_b, dtype=bool)])
    key = np.concatenate([*b_key, np.zeros(len(line) - n_b, dtype=np.int64)])
    kind = np.zeros(len(line), dtype=np.int8)
    kind[n_b:] = 1
    keep = np.ones(len(line), dtype=bool)
    if len(line) > n_b:
        first = pd.Series(ts[:n_b]).groupby(ucode[:n_b]).min()
        first_of_user = first.reindex(np.arange(len(user.categories)))
        hist_first = first_of_user.to_numpy()[ucode[n_b:]]
        known = ~np.isnan(hist_first)
        before = known & (ts[n_b:] < np.nan_to_num(hist_first, nan=0.0))
        keep[n_b:] = before
        undated = ts[n_b:] == np.iinfo(np.int64).min
        keep[n_b:] |= known & undated
        start = np.nan_to_num(hist_first, nan=0.0).astype(np.int64)
        if history == "session":
            ts[n_b:] = start - 1
        else:
            ts[n_b:] = np.where(undated, start - 1, ts[n_b:])
            key[n_b:] = c.day_keys(ts[n_b:], utc_offset_hours)
        keep &= ~c.repeated_pairs(ucode, np.asarray(item.codes), keep & (kind == 1))
    user, item, ucode = user[keep], item[keep], ucode[keep]
    ts, clicked, key, kind, line = ts[keep], clicked[keep], key[keep], kind[keep], line[keep]
    sessions = c.number_sessions(ucode, key, ts, kind=kind)
    out = c.frame(user, item, sessions, ts, clicked, line)
    return c.drop_exposures_of_clicks(out)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
