"""The columnar exposure log every reader produces and every later step consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reinforcens.errors import DataError

COLUMNS = ("user", "item", "session", "timestamp", "clicked")


@dataclass(frozen=True)
class ExposureLog:
    """An impression log: one row per (user, item) shown in a session, with a click flag.

    Ids are contiguous integers; the raw ids are kept in :attr:`user_ids` / :attr:`item_ids`
    (``user_ids[k]`` is the raw id of internal user ``k``).

    Attributes
    ----------
    user, item : numpy.ndarray of int64
        Internal user and item ids, ``0 <= user < n_users``.
    session : numpy.ndarray of int64
        Session id; sessions are keyed by ``(user, session)``.
    timestamp : numpy.ndarray of int64
        Event time (any monotone unit, e.g. seconds). Orders sessions within a user.
    clicked : numpy.ndarray of bool
        Whether the item was clicked.
    user_ids, item_ids : numpy.ndarray
        Raw ids in internal-id order.
    source : str
        Where the log came from (a path or a description), used in messages.
    """

    user: np.ndarray
    item: np.ndarray
    session: np.ndarray
    timestamp: np.ndarray
    clicked: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    source: str = field(default="<memory>")

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    def to_frame(self, raw_ids: bool = False) -> pd.DataFrame:
        """Return the log as a DataFrame with the columns ``user, item, session, timestamp, clicked``."""
        user = self.user_ids[self.user] if raw_ids else self.user
        item = self.item_ids[self.item] if raw_ids else self.item
        return pd.DataFrame(
            {
                "user": user,
                "item": item,
                "session": self.session,
                "timestamp": self.timestamp,
                "clicked": self.clicked,
            }
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, source: str | Path = "<memory>") -> ExposureLog:
        """Validate a raw frame and map its ids to contiguous integers.

        Parameters
        ----------
        frame
            Columns ``user, item, session, timestamp, clicked``; optionally ``line``, the source line
            of each row, used to name the line at fault in errors. ``timestamp`` may be missing, in
            which case the session id orders sessions.
        source
            The file the frame was read from, named in errors.

        Raises
        ------
        DataError
            On an empty frame, a missing column, a missing, blank (whitespace-only) or NUL-holding id
            (user, item or text session), a non-integer session or timestamp, or a ``clicked`` value
            other than 0/1 (also ``true/false``). Integer sessions and timestamps are read exactly,
            never through float64.
        """
        source = str(source)
        if len(frame) == 0:
            raise DataError("the log has no rows", source)
        if "timestamp" not in frame.columns and "session" in frame.columns:
            frame = frame.assign(timestamp=0)
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise DataError(
                f"missing column(s) {', '.join(missing)} (found: {', '.join(map(str, frame.columns))})",
                source,
            )
        lines = (
            frame["line"].to_numpy()
            if "line" in frame.columns
            else np.arange(len(frame)) + 2  # header is line 1
        )

        def fail(mask: np.ndarray, what: str) -> None:
            bad = np.flatnonzero(mask)
            if bad.size:
                raise DataError(f"{what} ({bad.size} row(s) like this)", source, int(lines[bad[0]]))

        for col in ("user", "item"):
            values = frame[col]
            fail(values.isna().to_numpy(), f"missing {col} id")
            _check_text_ids(values, col, fail)
        _check_text_ids(frame["session"], "session", fail)

        session = _as_int(frame["session"], "session", fail)
        timestamp = _as_int(frame["timestamp"], "timestamp", fail)
        clicked = _as_bool(frame["clicked"], fail)

        user_codes, user_ids = pd.factorize(frame["user"], sort=True)
        item_codes, item_ids = pd.factorize(frame["item"], sort=True)
        return cls(
            user=np.asarray(user_codes, dtype=np.int64),
            item=np.asarray(item_codes, dtype=np.int64),
            session=session,
            timestamp=timestamp,
            clicked=clicked,
            user_ids=np.asarray(user_ids),
            item_ids=np.asarray(item_ids),
            source=source,
        )


def _check_text_ids(values: pd.Series, name: str, fail) -> None:
    """Refuse blank (empty or whitespace-only) ids and ids holding a NUL byte.

    Parameters
    ----------
    values
        An id column of any dtype. Object columns, every pandas string dtype (Python, pyarrow or
        ``ArrowDtype`` storage) and categoricals of strings are checked; numbers cannot be blank.
    name
        The column, named in the error.
    fail
        ``fail(mask, what)`` raises at the first row where ``mask`` is true.
    """
    codes = None
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        values = pd.Series(values.cat.categories)
    if not pd.api.types.is_string_dtype(values.dtype):  # true for object and all string dtypes
        return
    text = values.astype(str)
    blank = (text.eq("") | text.str.isspace()).to_numpy(dtype=bool, na_value=False)
    nul = text.str.contains("\x00", regex=False).to_numpy(dtype=bool, na_value=False)
    if codes is not None:  # per category -> per row; code -1 (a missing value) is neither
        blank, nul = np.append(blank, False)[codes], np.append(nul, False)[codes]
    fail(blank, f"empty {name} id (blank or whitespace only)")
    fail(nul, f"{name} id contains a NUL byte")


def _as_int(values: pd.Series, name: str, fail) -> np.ndarray:
    if pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
        # a copy: a view would keep the frame's whole 2-D block of integer columns alive
        unsigned = pd.api.types.is_unsigned_integer_dtype(values.dtype)
        exact = values.to_numpy(dtype=np.uint64 if unsigned else np.int64, copy=True)
        _fail_out_of_range(exact, unsigned, name, fail)  # uint64 from 2**63 on would wrap to negative
        return exact.astype(np.int64, copy=False)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        fail(values.isna().to_numpy(), f"missing {name}")
        return values.astype("int64").to_numpy() // 1_000_000_000
    numeric = pd.to_numeric(values, errors="coerce")
    fail(numeric.isna().to_numpy(), f"{name} is not an integer")
    if pd.api.types.is_integer_dtype(numeric.dtype):
        # parsed as integers: kept exact, never through float64, which merges values above 2**53
        unsigned = pd.api.types.is_unsigned_integer_dtype(numeric.dtype)
        exact = numeric.to_numpy(dtype=np.uint64 if unsigned else np.int64)
        _fail_out_of_range(exact, unsigned, name, fail)
        return exact.astype(np.int64)
    as_float = numeric.to_numpy(dtype=np.float64)
    fail(as_float != np.round(as_float), f"{name} is not an integer")
    fail(np.abs(as_float) >= 2.0**62, f"{name} is out of range")
    if not pd.api.types.is_numeric_dtype(values.dtype):
        # text that is not all plain integers went through float64: from 2**53 on, distinct
        # integers round to the same float, so they cannot be told apart
        fail(
            np.abs(as_float) >= 2.0**53,
            f"{name} is too large to read exactly (2**53 or more) in a column with decimals; "
            f"write every {name} as a plain integer",
        )
    return as_float.astype(np.int64)


def _fail_out_of_range(exact: np.ndarray, unsigned: bool, name: str, fail) -> None:
    """Refuse integers outside (-2**62, 2**62), the range every later step computes in."""
    limit = np.uint64(2**62) if unsigned else 2**62
    fail((exact >= limit) if unsigned else (exact >= limit) | (exact <= -limit), f"{name} is out of range")


_TRUE = {"1", "true", "t", "yes", "1.0"}
_FALSE = {"0", "false", "f", "no", "0.0"}


def _as_bool(values: pd.Series, fail) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(values.dtype):
        arr = values.to_numpy(dtype=np.float64)
        fail(~np.isin(arr, (0.0, 1.0)), "clicked must be 0 or 1")
        return arr == 1.0
    text = values.astype(str).str.strip().str.lower()
    ok = text.isin(_TRUE | _FALSE).to_numpy()
    fail(~ok, "clicked must be 0 or 1")
    return text.isin(_TRUE).to_numpy()
