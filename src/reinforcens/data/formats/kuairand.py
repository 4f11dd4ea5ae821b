"""KuaiRand (Pure, 1K or 27K) interaction logs.

Each ``log_*.csv`` has a header and one row per video shown to a user, e.g.::

    user_id,video_id,date,hourmin,time_ms,is_click,is_like,...,is_rand,tab

Mapping: every row is a shown video, clicked when ``is_click`` is 1; ``timestamp`` is
``time_ms // 1000`` (or, without ``time_ms``, the ``date`` ``YYYYMMDD`` and ``hourmin`` ``HHMM``
columns read as Beijing time). Sessions are a user's rows of one ``date`` (by default) or runs of rows
with gaps of at most ``session_gap`` seconds. The random-exposure logs (``log_random_*``, videos
shown at random) are read with the standard ones unless ``include_random=False``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from reinforcens.data.formats import _common as c
from reinforcens.data.formats import register_reader
from reinforcens.errors import DataError

BEIJING = 8.0


@register_reader("kuairand")
def read_kuairand(
    path: Path,
    session_gap: float | None = None,
    include_random: bool = True,
    utc_offset_hours: float = BEIJING,
) -> pd.DataFrame:
    """Read KuaiRand interaction logs.

    Parameters
    ----------
    path
        One ``log_*.csv`` file, or the dataset folder (all ``log_*.csv`` files below it).
    session_gap
        ``None`` (default): one session per user and ``date``. A number: a new session starts when
        the user is idle for more than this many seconds.
    include_random
        Whether to read the ``log_random_*`` files (random exposures) found in a folder.
    utc_offset_hours
        Time zone of ``date``/``hourmin`` (Beijing, +8), used only when ``time_ms`` is absent.

    Returns
    -------
    pandas.DataFrame
        Columns ``user, item, session, timestamp, clicked, line`` (timestamps in Unix seconds).
    """
    files = c.find_files(path, ["log_*.csv", "log_*.csv.gz"], "KuaiRand log (log_*.csv)")
    if path.is_dir() and not include_random:
        files = [f for f in files if "random" not in f.name]
        if not files:
            raise DataError("only random-exposure logs found (include_random=False)", path)
    users, items, times, days, clicks, lines_all = [], [], [], [], [], []
    for file in files:
        header = c.read_header(file, ",")
        has_ms = "time_ms" in header
        if not has_ms and "date" not in header:
            raise DataError("missing column(s) time_ms (or date and hourmin)", file, 1)
        optional = ["time_ms", "date", "hourmin"]
        cols, lines = c.read_delimited(
            file, ["user_id", "video_id", "is_click"], optional=optional, layout="KuaiRand log"
        )
        c.require_rows(lines, file)
        clicked = c.to_flag(cols["is_click"], "is_click", file, lines)
        date = None
        if "date" in cols:
            date = c.to_int(cols["date"], "date", file, lines)
        if has_ms:
            ms = c.to_int(cols["time_ms"], "time_ms", file, lines)
            ts = np.floor_divide(ms, 1000)
        else:
            hourmin = (
                c.to_int(cols["hourmin"], "hourmin", file, lines)
                if "hourmin" in cols
                else np.zeros(len(lines), dtype=np.int64)
            )
            ts = _date_hourmin(date, hourmin, utc_offset_hours, file, lines)
        if date is not None:
            day = _date_days(date, file, lines)
        else:
            day = c.day_keys(ts, utc_offset_hours)
        c.check_ids(cols["user_id"], "user", file, lines)
        c.check_ids(cols["video_id"], "video", file, lines)
        users.append(cols["user_id"])
        items.append(cols["video_id"])
        times.append(ts)
        days.append(day)
        clicks.append(clicked)
        lines_all.append(lines)
    source = files[0] if len(files) == 1 else path
    line = np.concatenate(lines_all)
    user = c.ids(c.concat_ids(users, "user", source), "user", source, line)
    item = c.ids(c.concat_ids(items, "video", source), "video", source, line)
    ts = np.concatenate(times)
    ucode = np.asarray(user.codes, dtype=np.int64)
    if session_gap is None:
        key = np.concatenate(days)
    else:
        key = c.time_keys(ucode, ts, session_gap, utc_offset_hours, source)
    session = c.number_sessions(ucode, key, ts)
    return c.frame(user, item, session, ts, np.concatenate(clicks), line)


def _date_days(date: np.ndarray, file: Path, lines: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of ``YYYYMMDD`` integers."""
    text = pa.array(date.astype(str), pa.large_string())
    seconds = c.parse_datetimes(text, "%Y%m%d", "date", file, lines)
    return np.floor_divide(seconds, c.DAY)


def _date_hourmin(
    date: np.ndarray | None,
    hourmin: np.ndarray,
    utc_offset_hours: float,
    file: Path,
    lines: np.ndarray,
) -> np.ndarray:
    if date is None:  # pragma: no cover - guarded by the caller
        raise DataError("missing column date", file)
    hours, minutes = np.divmod(hourmin, 100)
    c.fail_if((hours < 0) | (hours > 24) | (minutes < 0) | (minutes > 59), lines, file, "bad hourmin")
    local = _date_days(date, file, lines) * c.DAY + hours * 3600 + minutes * 60
    return local - np.int64(round(utc_offset_hours * 3600))
