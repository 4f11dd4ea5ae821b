"""MovieLens ratings (GroupLens) as an exposure log: high ratings are clicks, the others were shown.

Files, by what the dataset folder holds (the first found):

- ``u.data`` (ML-100K): tab-separated ``user item rating timestamp``, no header;
- ``ratings.dat`` (ML-1M, ML-10M): ``user::item::rating::timestamp``, no header;
- ``ratings.csv`` (ML-20M, ML-25M, ml-latest): ``userId,movieId,rating,timestamp`` with a header;
- ``ml-100k.inter`` or any RecBole ``.inter`` file (RecBole ships ML-100K in its wheel:
  ``recbole/dataset_example/ml-100k/``).

Mapping: a rating of at least ``threshold`` (default 4) is a click; a lower one an item the user was
shown (a rated movie was watched: the user chose it and did not like it) but did not click. Sessions are
a user's ratings of one UTC day (default) or runs with gaps of at most ``session_gap`` seconds.
Ratings carry no impression log, so "shown" means "rated", a weaker signal than a real exposure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from reinforcens.data.formats import _common as c
from reinforcens.data.formats import register_reader
from reinforcens.data.formats.recbole import read_recbole
from reinforcens.errors import DataError

#: the layouts, by file name: (separator, whether a header names the fields)
_LAYOUTS = {"u.data": ("\t", False), "ratings.dat": ("::", False), "ratings.csv": (",", True)}
_FIELDS = ("user", "item", "rating", "timestamp")


@register_reader("movielens")
def read_movielens(
    path: Path,
    threshold: float = 4.0,
    session_gap: float | None = None,
    utc_offset_hours: float = 0.0,
) -> pd.DataFrame:
    """Read MovieLens ratings.

    Parameters
    ----------
    path
        ``u.data``, ``ratings.dat``, ``ratings.csv`` or a RecBole ``.inter`` file, or a folder holding
        one of them (also one level down, as the unpacked archives are).
    threshold
        Ratings at or above it are clicks (default 4, on the 1-5 scale).
    session_gap
        ``None`` (default) for one session per user and UTC day, or the idle time in seconds that
        starts a new session.
    utc_offset_hours
        Time zone of the day boundaries.

    Returns
    -------
    pandas.DataFrame
        Columns ``user, item, session, timestamp, clicked, line``.
    """
    file = _locate(Path(path))
    if file.suffix == ".inter":
        return read_recbole(
            file,
            threshold=threshold,
            session_gap=session_gap,
            utc_offset_hours=utc_offset_hours,
        )
    sep, header = _LAYOUTS[file.name]
    if sep == "::":
        return _from_columns(file, *_read_double_colon(file), threshold, session_gap, utc_offset_hours)
    names = ["userId", "movieId", "rating", "timestamp"] if header else list(_FIELDS)
    cols, lines = c.read_delimited(
        file, names, sep=sep, header=header, quoted=header, layout=sep.join(names)
    )
    c.require_rows(lines, file)
    values = dict(zip(_FIELDS, (cols[n] for n in names), strict=True))
    return _from_columns(file, values, lines, threshold, session_gap, utc_offset_hours)


def _locate(path: Path) -> Path:
    if path.is_file():
        if path.name in _LAYOUTS or path.suffix == ".inter":
            return path
        raise DataError(
            f"not a MovieLens ratings file (expected one of {', '.join(_LAYOUTS)} or .inter)", path
        )
    for pattern in (*_LAYOUTS, "*.inter", *(f"*/{n}" for n in _LAYOUTS), "*/*.inter"):
        found = sorted(path.glob(pattern)) if path.is_dir() else []
        if found:
            return found[0]
    raise DataError(f"no MovieLens ratings file ({', '.join(_LAYOUTS)} or .inter) found", path)


def _read_double_colon(file: Path) -> tuple[dict, np.ndarray]:
    """``ratings.dat``: ``::`` is two characters, which the delimited reader does not take."""
    text = c.decode(c.read_bytes(file), file)
    rows, numbers = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) != 4:
            raise DataError(f"expected 4 fields user::item::rating::timestamp, got {len(parts)}", file, n)
        rows.append(parts)
        numbers.append(n)
    c.require_rows(np.asarray(numbers), file)
    values = {f: pa.array([r[k].strip() for r in rows]) for k, f in enumerate(_FIELDS)}
    return values, np.asarray(numbers, dtype=np.int64)


def _from_columns(
    file: Path,
    values: dict,
    lines: np.ndarray,
    threshold: float,
    session_gap: float | None,
    utc_offset_hours: float,
) -> pd.DataFrame:
    ts = c.to_seconds(c.to_float(values["timestamp"], "timestamp", file, lines), "timestamp", file, lines)
    rating = c.to_float(values["rating"], "rating", file, lines)
    return c.timed_frame(
        values["user"], values["item"], ts, rating >= threshold, lines, file, session_gap, utc_offset_hours
    )
