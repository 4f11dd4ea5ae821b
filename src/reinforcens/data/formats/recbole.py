"""RecBole atomic interaction files (``.inter``).

Tab-separated, with a header of ``name:type`` fields, e.g.::

    user_id:token   item_id:token   rating:float    timestamp:float

Mapping: every line is a (user, item) row at ``timestamp`` (floored to an integer). It is clicked when

- a ``label`` field exists: when the label is 1 (labels must be 0 or 1);
- otherwise, when ``threshold`` is given: when ``rating >= threshold`` (rows below are shown but
  not clicked);
- otherwise every row is a click (plain implicit feedback, no exposures).

Sessions come from a ``session_field`` if named (e.g. ``session_id`` in session datasets), else a
user's rows of one UTC day (default) or runs with gaps of at most ``session_gap`` seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from reinforcens.data.formats import _common as c
from reinforcens.data.formats import register_reader
from reinforcens.errors import DataError


@register_reader("recbole")
def read_recbole(
    path: Path,
    user_field: str = "user_id",
    item_field: str = "item_id",
    time_field: str = "timestamp",
    label_field: str = "label",
    rating_field: str = "rating",
    threshold: float | None = None,
    session_field: str | None = None,
    session_gap: float | None = None,
    utc_offset_hours: float = 0.0,
) -> pd.DataFrame:
    """Read a RecBole ``.inter`` file.

    Parameters
    ----------
    path
        The ``.inter`` file, or the dataset folder holding exactly one.
    user_field, item_field, time_field, label_field, rating_field
        Field names (without the ``:type`` suffix).
    threshold
        Click threshold on the rating, used when there is no label field.
    session_field
        A field whose value keys sessions (then time only orders them; without a time field the
        line order does).
    session_gap
        Without ``session_field``: ``None`` (default) for one session per user and day, or the
        idle time in seconds that starts a new session.
    utc_offset_hours
        Time zone of the day boundaries.

    Returns
    -------
    pandas.DataFrame
        Columns ``user, item, session, timestamp, clicked, line``.
    """
    file = c.find_one(path, ["*.inter"], "RecBole .inter file")
    raw = c.read_header(file, "\t", quoted=False)
    names = [h.split(":", 1)[0].strip() for h in raw]
    by_name = dict(zip(names, raw, strict=True))
    missing = [f for f in (user_field, item_field) if f not in by_name]
    if missing:
        raise DataError(
            f"missing field(s) {', '.join(missing)} (found: {', '.join(raw[:12])}); "
            f"name them with user_field/item_field",
            file,
            1,
        )
    has_label = label_field in by_name
    if not has_label and threshold is not None and rating_field not in by_name:
        raise DataError(f"a threshold needs a rating field; no {rating_field!r} in the header", file, 1)
    if session_field is not None and session_field not in by_name:
        raise DataError(f"no session field {session_field!r} in the header", file, 1)
    if session_field is None and time_field not in by_name:
        raise DataError(
            f"no time field {time_field!r}: sessions need time (or name a session_field)", file, 1
        )
    wanted = [user_field, item_field]
    for f in (time_field, session_field):
        if f is not None and f in by_name and f not in wanted:
            wanted.append(f)
    if has_label:
        wanted.append(label_field)
    elif threshold is not None:
        wanted.append(rating_field)
    cols, lines = c.read_delimited(
        file, [by_name[f] for f in wanted], sep="\t", quoted=False, layout="RecBole .inter"
    )
    c.require_rows(lines, file)
    col = {f: cols[by_name[f]] for f in wanted}
    if time_field in col:
        ts = c.to_seconds(c.to_float(col[time_field], time_field, file, lines), time_field, file, lines)
    else:
        ts = lines.copy()
    if has_label:
        clicked = c.to_flag(col[label_field], label_field, file, lines)
    elif threshold is not None:
        rating = c.to_float(col[rating_field], rating_field, file, lines)
        clicked = rating >= threshold
    else:
        clicked = np.ones(len(lines), dtype=bool)
    user = c.ids(col[user_field], "user", file, lines)
    item = c.ids(col[item_field], "item", file, lines)
    ucode = np.asarray(user.codes, dtype=np.int64)
    if session_field is not None:
        sid = col[session_field]
        c.fail_if(pc.equal(sid, ""), lines, file, f"empty {session_field}")
        key = np.asarray(pc.dictionary_encode(sid).indices.to_numpy(False), dtype=np.int64)
    else:
        key = c.time_keys(ucode, ts, session_gap, utc_offset_hours, file)
    sessions = c.number_sessions(ucode, key, ts)
    return c.frame(user, item, sessions, ts, clicked, lines)
