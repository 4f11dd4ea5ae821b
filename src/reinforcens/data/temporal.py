"""Temporal splits: a time-ratio cut of the log, per user or global (RecBole's ``RS`` with ``TO`` order).

Rows (clicks and unclicked exposures alike, as RecBole counts every interaction) are ordered by time
(timestamp, then session rank, then item id). With ratios ``(a, b, c)`` (normalised to sum to 1), of
``n`` rows the last ``int(c * n)`` are test, the ``int(b * n)`` before them validation and the rest
training, except that a part whose share is below one row (but not 0) takes one row from training while
training has more than one, test first (RecBole 1.2's ``_calcu_split_ids``). ``temporal`` cuts each
user's rows so; ``temporal-global`` cuts all rows at once, so that no test row is earlier than a
training row. On MovieLens-100k (ratings >= 4 as clicks, ``--min-sessions 1``) ``temporal`` kept 898 of
943 users and ``temporal-global`` 97: most users rated within a few weeks, before the last 20% of time.

Users without a training click, or without a click in validation and in test, are dropped (and
counted); a user has a validation (test) list only if they click in that part. The lists are those of
the other splits (:func:`reinforcens.data.split.build_lists`): a part's clicks and unclicked exposures,
truncated to ``L`` or padded; every held-out click is kept beside the lists.
"""

from __future__ import annotations

import numpy as np

from reinforcens.data.preprocess import Events
from reinforcens.data.split import Split, keep_users, split_by_masks

#: the report key counting the users a temporal split drops
DROPPED_KEY = "users_without_a_training_and_a_held_out_click_dropped"

#: the default ratios of training, validation and test rows (RecBole's default)
DEFAULT_RATIOS = (0.8, 0.1, 0.1)


def part_sizes(n: np.ndarray, ratios: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Validation and test sizes of parts of ``n`` rows (vectorized RecBole ``_calcu_split_ids``)."""
    total = sum(ratios)
    n = np.asarray(n, dtype=np.int64)
    shares = [r / total * n for r in ratios]
    valid, test = shares[1].astype(np.int64), shares[2].astype(np.int64)
    train = n - valid - test
    for part, share in ((test, shares[2]), (valid, shares[1])):  # RecBole fills the last part first
        fill = (train > 1) & (share > 0) & (share < 1)
        part[fill] += 1
        train[fill] -= 1
    return valid, test


def split_temporal(
    events: Events,
    list_length: int | None,
    seed: int,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    per_user: bool = True,
) -> tuple[Split, Events]:
    """Split by a time-ratio cut, per user (``per_user``) or over the whole log.

    Returns the split and the events of the users it keeps (ids re-mapped).

    Raises
    ------
    ValueError
        If ``events`` carry no timestamps, or a ratio is negative or the training ratio is 0.
    """
    if events.time is None:
        raise ValueError("a temporal split needs timestamps: preprocess(log, keep_time=True)")
    if min(ratios) < 0 or ratios[0] <= 0:
        raise ValueError(f"split ratios must be >= 0 with a positive training share, got {ratios}")
    rng = np.random.default_rng(seed)
    u, i, r, t = events.user, events.item, events.rank, events.time
    if per_user:
        order = np.lexsort((i, r, t, u))
        counts = np.bincount(u, minlength=events.n_users)
        valid_n, test_n = part_sizes(counts, ratios)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos = np.empty(u.size, dtype=np.int64)
        pos[order] = np.arange(u.size) - np.repeat(starts, counts)  # rank of a row within its user
        from_end = counts[u] - pos
        is_test = from_end <= test_n[u]
        is_valid = ~is_test & (from_end <= test_n[u] + valid_n[u])
    else:
        order = np.lexsort((i, r, t))
        valid_n, test_n = (int(x[0]) for x in part_sizes(np.array([u.size]), ratios))
        pos = np.empty(u.size, dtype=np.int64)
        pos[order] = np.arange(u.size)
        is_test = pos >= u.size - test_n
        is_valid = ~is_test & (pos >= u.size - test_n - valid_n)
    is_train = ~is_test & ~is_valid

    c = events.clicked
    has_train, has_valid, has_test = (
        np.bincount(u[part & c], minlength=events.n_users) > 0 for part in (is_train, is_valid, is_test)
    )
    keep = has_train & (has_valid | has_test)
    # a part without a click of the user gives no list (its rows are used by no split)
    is_valid &= has_valid[u]
    is_test &= has_test[u]
    report = dict(events.report)
    report[DROPPED_KEY] = int((~keep).sum())
    rows = keep[u]
    events = keep_users(events, keep, report)
    masks = (is_train[rows], is_valid[rows], is_test[rows])
    split_report = {"rows_of_parts_without_a_click_unused": int((~(is_train | is_valid | is_test)).sum())}
    return split_by_masks(events, *masks, list_length, rng, split_report), events
