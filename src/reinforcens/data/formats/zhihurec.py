"""ZhihuRec ``inter_impression.csv``.

Headerless CSV, one row per answer shown to a user::

    user_id,answer_id,impression_timestamp,click_timestamp

``click_timestamp`` is 0 when the answer was not clicked. Mapping: every row is a shown answer at its
impression time (Unix seconds), clicked when the click time is not 0. Sessions are a user's rows of
one calendar day in Beijing time (by default) or runs of rows with gaps of at most ``session_gap``
seconds. A header line, if present, is skipped.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.compute as pc

from reinforcens.data.formats import _common as c
from reinforcens.data.formats import register_reader

BEIJING = 8.0
LAYOUT = "user_id,answer_id,impression_time,click_time"


@register_reader("zhihurec")
def read_zhihurec(
    path: Path, session_gap: float | None = None, utc_offset_hours: float = BEIJING
) -> pd.DataFrame:
    """Read ZhihuRec impressions.

    Parameters
    ----------
    path
        ``inter_impression.csv`` (also gzipped), or the dataset folder holding it.
    session_gap
        ``None`` (default): one session per user and day. A number: a new session starts when the
        user is idle for more than this many seconds.
    utc_offset_hours
        Time zone of the day boundaries (Beijing, +8).

    Returns
    -------
    pandas.DataFrame
        Columns ``user, item, session, timestamp, clicked, line``.
    """
    file = c.find_one(
        path, ["inter_impression.csv", "inter_impression.csv.gz"], "ZhihuRec inter_impression.csv"
    )
    cols, lines = c.read_delimited(
        file,
        ["user", "answer", "impression", "click"],
        header=False,
        quoted=False,
        layout=LAYOUT,
    )
    c.require_rows(lines, file)
    # a header line naming the columns is tolerated
    if lines[0] == 1 and not pc.match_substring_regex(cols["impression"][0], r"^[0-9+-]").as_py():
        cols = {k: v[1:] for k, v in cols.items()}
        lines = lines[1:]
        c.require_rows(lines, file)
    shown = c.to_int(cols["impression"], "impression time", file, lines)
    click = c.to_int(cols["click"], "click time", file, lines)
    return c.timed_frame(
        cols["user"], cols["answer"], shown, click != 0, lines, file, session_gap, utc_offset_hours, "answer"
    )
