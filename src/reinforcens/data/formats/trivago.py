"""Trivago RecSys Challenge 2019 ``train.csv``.

A CSV with a header; the columns used are ``user_id, session_id, timestamp, action_type, reference,
impressions``. Only ``clickout item`` rows are read: ``impressions`` is the ``|``-joined list of
hotels shown and ``reference`` the hotel clicked.

Mapping: each impressed hotel is a shown row, the referenced hotel a clicked row (also when it is not
in the list), at the row's ``timestamp`` (Unix seconds). Sessions are the dataset's ``session_id``
(default; several clickouts of one session share it) or single clickouts (``session="clickout"``).
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

CLICKOUT = "clickout item"
COLUMNS = ("user_id", "session_id", "timestamp", "action_type", "reference", "impressions")


@register_reader("trivago")
def read_trivago(path: Path, session: str = "session_id") -> pd.DataFrame:
    """Read the clickouts of the Trivago RecSys Challenge 2019 data.

    Parameters
    ----------
    path
        ``train.csv`` or the dataset folder holding it.
    session
        ``"session_id"`` (default) or ``"clickout"`` (each clickout its own session).

    Returns
    -------
    pandas.DataFrame
        Columns ``user, item, session, timestamp, clicked, line``.

    Raises
    ------
    DataError
        For missing columns, no clickout rows, a clickout without a reference (``test.csv`` hides
        them), or a non-integer timestamp; naming the line.
    """
    if session not in ("session_id", "clickout"):
        raise DataError(f"session must be 'session_id' or 'clickout', not {session!r}", path)
    file = c.find_one(path, ["train.csv", "train.csv.gz"], "Trivago train.csv")
    cols, lines = c.read_delimited(
        file,
        list(COLUMNS),
        layout="Trivago CSV",
        keep=lambda b: pc.equal(b["action_type"], CLICKOUT),
    )
    c.require_rows(lines, file, "'clickout item' rows")
    reference = cols["reference"]
    c.fail_if(
        pc.equal(reference, ""),
        lines,
        file,
        "clickout without a reference (test.csv hides them; read train.csv)",
    )
    ts = c.to_int(cols["timestamp"], "timestamp", file, lines)
    shown, parent = c.explode(c.split_list(cols["impressions"], "|"))
    n_rows = len(lines)
    rows = np.concatenate([parent, np.arange(n_rows, dtype=np.int64)])
    items = pa.concat_arrays([shown, reference])
    clicked = np.concatenate([np.zeros(len(parent), bool), np.ones(n_rows, bool)])
    row_lines = lines[rows]
    user = c.ids(c.take(cols["user_id"], rows), "user", file, row_lines)
    item = c.ids(items, "item", file, row_lines)
    ucode = np.asarray(user.codes, dtype=np.int64)
    if session == "session_id":
        sid = cols["session_id"]
        c.fail_if(pc.equal(sid, ""), lines, file, "empty session_id")
        key = np.asarray(pc.dictionary_encode(sid).indices.to_numpy(False), dtype=np.int64)[rows]
    else:
        key = rows
    timestamp = ts[rows]
    sessions = c.number_sessions(ucode, key, timestamp)
    out = c.frame(user, item, sessions, timestamp, clicked, row_lines)
    return c.drop_exposures_of_clicks(out)
