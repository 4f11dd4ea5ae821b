"""Rating data with a random-exposure test set (Coat, Yahoo! R3 and the like).

Two files: the *train* ratings (items the users chose to rate) and the *test* ratings (items shown to
the users at random, then rated). Each file is either

- *triplets*: one ``user item rating [timestamp]`` per line, separated by whitespace (Yahoo! R3's
  ``ydata-ymusic-rating-study-v1_0-train.txt``/``-test.txt``), or
- a *matrix*: one line per user, one column per item, 0 = not rated (Coat's ``train.ascii`` and
  ``test.ascii``; users and items are then the 0-based row and column numbers).

Mapping: a rating ``>= threshold`` is a click; a rating below it is a shown, unclicked item. The test
file becomes each user's latest session. The train ratings are cut into ``train_sessions``
pseudo-sessions per user: in time order when the train file has timestamps, otherwise in a random
order drawn from ``seed``; a user's ``n`` ratings go ``n / train_sessions`` to a session, so the
library's split ("latest session = test, the one before = validation") evaluates on the random test
ratings and validates on one train pseudo-session. Users without a clicked test rating are dropped
unless ``keep_all_users=True``: the split takes a user's latest session *with a click* for the test
session, so for them it would take a pseudo-session of the biased train ratings instead. Without
timestamps, pseudo-session ``k`` has timestamp ``k`` and the test session ``train_sessions``; with them,
the real times are kept and the test session is dated one second after the latest train rating.
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

_SKIP_NAMES = ("readme", "license", "features", "propensit", "item_", "user_")


@register_reader("ratings")
def read_ratings(
    path: Path,
    test: str | Path | None = None,
    threshold: float = 4.0,
    train_sessions: int = 5,
    seed: int = 0,
    layout: str = "auto",
    keep_all_users: bool = False,
) -> pd.DataFrame:
    """Read a train ratings file and a random-exposure test ratings file.

    Parameters
    ----------
    path
        A folder holding one file whose name contains ``train`` and one whose name contains ``test``
        (e.g. Coat's ``train.ascii``/``test.ascii``), or the train file itself (the test file is then
        the sibling with ``train`` replaced by ``test`` in its name, unless ``test`` is given).
    test
        The test file, if it cannot be found as above (relative to the folder of ``path``).
    threshold
        Ratings ``>= threshold`` are clicks (default 4, on a 1-5 scale).
    train_sessions
        Number of pseudo-sessions each user's train ratings are cut into (default 5).
    seed
        Seed of the random order of train ratings without timestamps.
    layout
        ``"auto"`` (3 or 4 fields per line: triplets; otherwise a matrix), ``"triplets"`` or
        ``"matrix"``.
    keep_all_users
        Keep users without a clicked test rating (see the module description).

    Returns
    -------
    pandas.DataFrame
        Columns ``user, item, session, timestamp, clicked, line``.
    """
    if layout not in ("auto", "triplets", "matrix"):
        raise DataError(f"layout must be 'auto', 'triplets' or 'matrix', not {layout!r}", path)
    if not isinstance(train_sessions, int | np.integer) or train_sessions < 1:
        raise DataError(f"train_sessions must be a positive integer, not {train_sessions!r}", path)
    train_file, test_file = _locate(path, test)
    tr = _parse(train_file, layout)
    te = _parse(test_file, layout)

    n_tr = len(tr["lines"])
    user = c.ids(pa.concat_arrays([tr["user"], te["user"]]), "user", path, np.r_[tr["lines"], te["lines"]])
    item = c.ids(pa.concat_arrays([tr["item"], te["item"]]), "item", path, np.r_[tr["lines"], te["lines"]])
    ucode = np.asarray(user.codes, dtype=np.int64)
    rating = np.r_[tr["rating"], te["rating"]]
    lines = np.r_[tr["lines"], te["lines"]].astype(np.int64)
    is_test = np.r_[np.zeros(n_tr, bool), np.ones(len(te["lines"]), bool)]

    # pseudo-sessions of the train ratings
    tr_user = ucode[:n_tr]
    if tr["time"] is not None:
        order_key = tr["time"]
    else:
        order_key = np.random.default_rng(seed).permutation(n_tr)
    order = np.lexsort((np.arange(n_tr), order_key, tr_user))
    sorted_user = tr_user[order]
    counts = np.bincount(sorted_user, minlength=len(user.categories))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    position = np.arange(n_tr) - starts[sorted_user]
    k = np.empty(n_tr, dtype=np.int64)
    k[order] = position * train_sessions // counts[sorted_user]
    key = np.r_[k, np.full(len(te["lines"]), train_sessions, dtype=np.int64)]
    if tr["time"] is not None:
        latest = int(tr["time"].max()) if n_tr else 0
        if te["time"] is not None and len(te["time"]):
            latest = max(latest, int(te["time"].max()))
        ts = np.r_[tr["time"], np.full(len(te["lines"]), latest + 1, dtype=np.int64)]
    else:
        ts = key.copy()

    keep = np.ones(len(lines), dtype=bool)
    clicked = rating >= threshold
    if not keep_all_users:
        tested = np.zeros(len(user.categories), dtype=bool)
        tested[ucode[is_test & clicked]] = True
        keep = tested[ucode]
        if not keep.any():
            raise DataError(
                f"no user has a test rating >= {threshold} (lower threshold= or set keep_all_users=true)",
                path,
            )
    sessions = c.number_sessions(ucode[keep], key[keep], ts[keep])
    return c.frame(user[keep], item[keep], sessions, ts[keep], clicked[keep], lines[keep])


def _locate(path: Path, test: str | Path | None) -> tuple[Path, Path]:
    if path.is_dir():
        folder = path
        candidates = [
            p
            for p in sorted(folder.iterdir())
            if p.is_file()
            and not p.name.startswith(".")
            and not any(s in p.name.lower() for s in _SKIP_NAMES)
        ]
        trains = [p for p in candidates if "train" in p.name.lower()]
        if len(trains) != 1:
            found = ", ".join(p.name for p in trains) or "none"
            raise DataError(
                f"expected one train ratings file (a name containing 'train'), found: {found}",
                path,
            )
        train = trains[0]
        if test is None:
            tests = [p for p in candidates if "test" in p.name.lower()]
            if len(tests) != 1:
                found = ", ".join(p.name for p in tests) or "none"
                raise DataError(
                    f"expected one test ratings file (a name containing 'test'), found: {found}",
                    path,
                )
            return train, tests[0]
    else:
        folder, train = path.parent, path
        if test is None:
            if "train" not in path.name.lower():
                raise DataError(
                    "give the test ratings file too (test=...), or a folder with both files", path
                )
            i = path.name.lower().rindex("train")
            test = path.name[:i] + "test" + path.name[i + 5 :]
    test_path = Path(test)
    if not test_path.is_absolute() and not test_path.exists():
        test_path = folder / test_path
    if not test_path.is_file():
        raise DataError("the test ratings file does not exist", test_path)
    return train, test_path


def _parse(file: Path, layout: str) -> dict:
    lines_text, numbers = c.read_lines(file)
    c.require_rows(numbers, file)
    fields = pc.split_pattern_regex(pc.utf8_trim_whitespace(lines_text), r"\s+")
    n_fields = np.asarray(pc.list_value_length(fields).to_numpy(False), dtype=np.int64)
    if layout == "auto":
        layout = "triplets" if np.isin(n_fields, (3, 4)).all() else "matrix"
    if layout == "triplets":
        c.fail_if(
            ~np.isin(n_fields, (3, 4)),
            numbers,
            file,
            lambda i: f"expected 'user item rating [timestamp]', found {n_fields[i]} fields",
        )
        has_time = bool((n_fields == 4).any())
        if has_time:
            c.fail_if(
                n_fields != 4,
                numbers,
                file,
                "missing timestamp (other lines have 4 fields: user item rating timestamp)",
            )
        user = pc.list_element(fields, 0)
        item = pc.list_element(fields, 1)
        rating = c.to_float(pc.list_element(fields, 2), "rating", file, numbers)
        time = c.to_int(pc.list_element(fields, 3), "timestamp", file, numbers) if has_time else None
        return {"user": user, "item": item, "rating": rating, "time": time, "lines": numbers}
    width = int(n_fields[0])
    c.fail_if(
        n_fields != width,
        numbers,
        file,
        lambda i: f"matrix rows must all have {width} ratings, this one has {n_fields[i]}",
    )
    values, parent = c.explode(fields)
    rating = c.to_float(values, "rating", file, numbers[parent])
    col = np.arange(len(parent), dtype=np.int64) - parent * width
    rated = rating != 0
    row_of_user = np.searchsorted(numbers, numbers[parent][rated])
    user = pa.array(row_of_user.astype(str), pa.large_string())
    item = pa.array(col[rated].astype(str), pa.large_string())
    return {
        "user": user,
        "item": item,
        "rating": rating[rated],
        "time": None,
        "lines": numbers[parent][rated],
    }
