"""Session-based preprocessing of the RNS paper (section 3.1).

1. Drop repeated clicks of a (user, item) after the earliest one.
2. Keep only unclicked items in the exposure data (an item shown and clicked in a session is a click,
   not an exposure; repeated exposures of an item within a session count once).
3. Filter users and items with fewer than ``min_sessions`` sessions, iteratively until stable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reinforcens.data.log import ExposureLog


@dataclass(frozen=True)
class Events:
    """Preprocessed events: each row a (user, item) in one session of the user.

    ``rank`` is the 0-based chronological index of the row's session among the user's kept sessions
    (ordered by the session's earliest timestamp, then by session id). ``time`` is each row's timestamp,
    kept only when a split needs it (``preprocess(keep_time=True)``: the leave-one-out split orders a
    user's clicks by it).
    """

    user: np.ndarray
    item: np.ndarray
    rank: np.ndarray
    clicked: np.ndarray
    n_users: int
    n_items: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    report: dict[str, int] = field(default_factory=dict)
    time: np.ndarray | None = None


def session_ranks(user: np.ndarray, session: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """Chronological rank of each row's session within its user (dense, 0-based)."""
    if user.size == 0:
        return np.zeros(0, dtype=np.int64)
    # earliest timestamp of each (user, session)
    order = np.lexsort((timestamp, session, user))
    u, s, t = user[order], session[order], timestamp[order]
    new = np.ones(u.size, dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (s[1:] != s[:-1])
    group = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    g_user, g_sess, g_time = u[first], s[first], t[first]
    g_order = np.lexsort((g_sess, g_time, g_user))
    g_rank = np.empty(first.size, dtype=np.int64)
    gu = g_user[g_order]
    start = np.ones(gu.size, dtype=bool)
    start[1:] = gu[1:] != gu[:-1]
    idx = np.arange(gu.size)
    g_rank[g_order] = idx - np.maximum.accumulate(np.where(start, idx, 0))
    ranks = np.empty(user.size, dtype=np.int64)
    ranks[order] = g_rank[group]
    return ranks


def preprocess(log: ExposureLog, min_sessions: int = 4, keep_time: bool = False) -> Events:
    """Apply the paper's three preprocessing steps to an exposure log.

    Parameters
    ----------
    log
        The raw exposure log.
    min_sessions
        Users and items seen in fewer distinct sessions are removed (repeatedly, until every kept
        user and item has at least this many). 4 for Beibei-like and 6 for Zhihu-like data.
    keep_time
        Keep each row's timestamp in :attr:`Events.time` (8 bytes a row more).

    Returns
    -------
    Events
        Kept rows with contiguous ids re-mapped after filtering; ``report`` counts what each step
        removed.
    """
    report: dict[str, int] = {"rows_in": len(log)}
    rank = session_ranks(log.user, log.session, log.timestamp)
    user, item, clicked = log.user, log.item, log.clicked
    n_items = max(log.n_items, 1)

    # 1. repeated clicks: keep the earliest click of each (user, item)
    c = np.flatnonzero(clicked)
    key = user[c] * n_items + item[c]
    order = np.lexsort((log.timestamp[c], rank[c], key))
    first = np.ones(order.size, dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    keep_click = c[order[first]]
    report["repeated_clicks_dropped"] = int(c.size - keep_click.size)

    # 2. exposures: drop items clicked in the same session, and duplicates within a session
    clicked_session_keys = np.unique((user[c] * n_items + item[c]) * (rank.max() + 1) + rank[c])
    e = np.flatnonzero(~clicked)
    e_key = (user[e] * n_items + item[e]) * (rank.max(initial=0) + 1) + rank[e]
    # membership by binary search in the (small, sorted) clicked keys: no sort of the exposures
    pos = np.searchsorted(clicked_session_keys, e_key)
    np.minimum(pos, max(clicked_session_keys.size - 1, 0), out=pos)
    shown_clicked = (
        clicked_session_keys[pos] == e_key if clicked_session_keys.size else np.zeros(e_key.size, bool)
    )
    del pos
    e, e_key = e[~shown_clicked], e_key[~shown_clicked]
    _, uniq = np.unique(e_key, return_index=True)
    keep_exp = e[np.sort(uniq)]
    report["clicked_exposures_dropped"] = int(shown_clicked.sum())
    report["duplicate_exposures_dropped"] = int(e.size - keep_exp.size)

    rows = np.concatenate([keep_click, keep_exp])
    k = np.zeros(rows.size, dtype=bool)
    k[: keep_click.size] = True
    del c, key, order, first, e, e_key, uniq, shown_clicked, clicked_session_keys, keep_click, keep_exp
    u, i, r = user[rows], item[rows], rank[rows]
    t = log.timestamp[rows] if keep_time else None
    del rows, rank
    # 3. iterative session filter. After steps 1-2 every row is a distinct (user, item, session), so an
    # item's number of sessions is its number of rows, and a user's is the number of the user's
    # sessions with a row left: each round is a few bincounts, with no sort. Session ranks are dense
    # per user, so session (u, r) has the id offset[u] + r.
    n_sess = np.zeros(log.n_users, dtype=np.int64)
    np.maximum.at(n_sess, u, r + 1)
    offset = np.concatenate(([0], np.cumsum(n_sess)))
    sid = offset[u] + r
    sess_user = np.repeat(np.arange(log.n_users, dtype=np.int64), n_sess)
    del r, n_sess
    rounds = 0
    while True:
        rounds += 1
        alive = np.bincount(sid, minlength=sess_user.size) > 0
        user_sessions = np.bincount(sess_user[alive], minlength=log.n_users)
        item_sessions = np.bincount(i, minlength=log.n_items)
        bad = (user_sessions[u] < min_sessions) | (item_sessions[i] < min_sessions)
        if not bad.any():
            break
        keep = ~bad
        u, i, k, sid = u[keep], i[keep], k[keep], sid[keep]
        if t is not None:
            t = t[keep]
        del keep
    del bad
    report["filter_rounds"] = rounds
    report["users_in"] = log.n_users
    report["items_in"] = log.n_items
    # contiguous ids of the kept users and items (in id order), without sorting the rows
    kept_users = np.flatnonzero(np.bincount(u, minlength=log.n_users))
    kept_items = np.flatnonzero(np.bincount(i, minlength=log.n_items))
    u_new = _remap(u, kept_users, log.n_users)
    i_new = _remap(i, kept_items, log.n_items)
    # re-rank the kept sessions densely per user: a kept session's new rank is the number of the
    # user's kept sessions before it
    alive = np.bincount(sid, minlength=sess_user.size) > 0
    before = np.cumsum(alive) - alive
    r_new = (before - before[offset[sess_user]])[sid]
    del sid, sess_user, alive, before
    report["users_kept"] = int(kept_users.size)
    report["items_kept"] = int(kept_items.size)
    report["rows_kept"] = int(u.size)
    return Events(
        user=u_new,
        item=i_new,
        rank=r_new,
        clicked=k,
        n_users=int(kept_users.size),
        n_items=int(kept_items.size),
        user_ids=log.user_ids[kept_users],
        item_ids=log.item_ids[kept_items],
        report=report,
        time=t,
    )


def _remap(ids: np.ndarray, kept: np.ndarray, n: int) -> np.ndarray:
    """``ids`` (all in ``kept``, sorted) as positions in ``kept``: contiguous int64 ids."""
    table = np.full(n, -1, dtype=np.int64)
    table[kept] = np.arange(kept.size, dtype=np.int64)
    return table[ids]
