"""The Zhihu (CCIR-2018) log format used by the RNS authors.

Headerless CSV, one event per line::

    user,item,<unused>,event_click,session            a click
    user,item1|item2|...,<unused>,list_show,session   a shown list (an exposure)

Each click line becomes one clicked row; each item of a shown list one unclicked row (exposures of
items the user clicked are removed later by preprocessing, not here). The integer ``session`` both
keys the session and orders time (the format has no other clock), so ``timestamp = session``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from reinforcens.data.formats import _common as c
from reinforcens.data.formats import register_reader

EVENTS = ("event_click", "list_show")
LAYOUT = "user,item,<unused>,event_click|list_show,session"


@register_reader("zhihu")
def read_zhihu(path: Path) -> pd.DataFrame:
    """Read a Zhihu CCIR-2018 log in the authors' format.

    Parameters
    ----------
    path
        The log file, or a folder holding exactly one ``*.csv`` / ``*.txt`` log.

    Returns
    -------
    pandas.DataFrame
        Columns ``user, item, session, timestamp, clicked, line``; ``timestamp`` equals ``session``.
        A click line holding ``a|b`` yields one clicked row per item.

    Raises
    ------
    DataError
        Naming the line, for a wrong number of fields, an unknown event type, a non-integer session,
        an empty user or an empty item (list).
    """
    file = c.find_one(path, ["*.csv", "*.txt", "*.csv.gz"], "Zhihu log file")
    cols, lines = c.read_delimited(
        file,
        ["user", "items", "unused", "event", "session"],
        header=False,
        quoted=False,
        layout=LAYOUT,
    )
    c.require_rows(lines, file)
    event = cols["event"]
    known = pc.is_in(event, pa.array(EVENTS, pa.large_string()))
    c.fail_if(
        pc.invert(known),
        lines,
        file,
        lambda i: f"unknown event type {event[i].as_py()!r} (expected event_click or list_show)",
    )
    session = c.to_int(cols["session"], "session", file, lines)
    clicked_line = np.asarray(pc.equal(event, "event_click").to_numpy(False), dtype=bool)

    items, parent = c.explode(c.split_list(cols["items"], "|"), empty_ok=False)
    items = pc.utf8_trim_whitespace(items)
    c.fail_if(
        pc.equal(items, ""),
        lines[parent],
        file,
        "empty item (an empty item list or a stray '|')",
    )
    row_lines = lines[parent]
    user = c.ids(c.take(cols["user"], parent), "user", file, row_lines)
    item = c.ids(items, "item", file, row_lines)
    return c.frame(
        user=user,
        item=item,
        session=session[parent],
        timestamp=session[parent],
        clicked=clicked_line[parent],
        line=row_lines,
    )
