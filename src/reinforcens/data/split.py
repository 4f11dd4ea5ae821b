"""Leave-last-session-out split and the fixed-length evaluation lists of the RNS paper.

Each user's latest session with at least one click is the test session, the one before it (again with a
click) the validation session, and every earlier session is training data. Sessions without a click after
the validation session are not used. Users with fewer than three sessions with a click are dropped.

Evaluation lists (one per user and split) hold the session's clicked items and its unclicked exposed
items (minus items the user clicked before: in training, and for test in validation), padded to length
``L`` with items drawn uniformly among items the user never clicked before and never clicked or saw in
that session. If a session holds more than ``L`` items, a proportional share of exposures (at least one) is
kept and the rest of the list is filled with clicks. ``list_length=None`` keeps every session as it is (no
padding, no truncation).

Every click of a held-out session is kept beside its list (:attr:`EvalLists.clicks`), so the
full-ranking metrics count all of them, not only those that a list of length ``L`` had room for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reinforcens.data.interactions import UserItems, contains_keys
from reinforcens.data.preprocess import Events

# kinds of list slots
CLICKED, EXPOSED, PADDED, EMPTY = 1, 0, 2, -1


@dataclass(frozen=True)
class EvalLists:
    """Evaluation lists of one split, padded to a rectangle.

    Attributes
    ----------
    users : numpy.ndarray of int64, shape (n,)
    items : numpy.ndarray of int64, shape (n, L)
        Item ids; ``-1`` in empty slots (only for ragged lists).
    kind : numpy.ndarray of int8, shape (n, L)
        1 clicked, 0 exposed but unclicked, 2 padding item, -1 empty slot.
    clicks : UserItems or None
        Every click of each user's held-out session (a list may have kept only some of them), over all
        users of the dataset; ``None`` for lists made without it, whose clicks are the list's own.
    """

    users: np.ndarray
    items: np.ndarray
    kind: np.ndarray
    clicks: UserItems | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.kind == CLICKED

    @property
    def mask(self) -> np.ndarray:
        return self.kind != EMPTY

    @property
    def n_clicks(self) -> int:
        return int(self.labels.sum())

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass(frozen=True)
class Split:
    train_clicks: UserItems
    train_exposures: UserItems
    valid: EvalLists
    test: EvalLists
    valid_clicks: int
    test_clicks: int
    report: dict[str, int]


def split_sessions(events: Events, list_length: int | None, seed: int) -> tuple[Split, Events]:
    """Split preprocessed events and build the evaluation lists.

    Returns the split and the events restricted to users kept by the split (ids re-mapped so that
    users and items stay contiguous).
    """
    rng = np.random.default_rng(seed)
    events = _drop_short_users(events)
    n_users = events.n_users
    u, r, c = events.user, events.rank, events.clicked

    # chronological ranks of each user's click sessions
    click_rank = np.full(u.size, -1, dtype=np.int64)
    cs = np.unique(u[c] * (r.max(initial=0) + 1) + r[c])
    cs_user, cs_rank = cs // (r.max(initial=0) + 1), cs % (r.max(initial=0) + 1)
    n_cs = np.bincount(cs_user, minlength=n_users)
    test_rank = np.full(n_users, -1, dtype=np.int64)
    valid_rank = np.full(n_users, -1, dtype=np.int64)
    ends = np.cumsum(n_cs)
    has = n_cs >= 1
    test_rank[has] = cs_rank[ends[has] - 1]
    has2 = n_cs >= 2
    valid_rank[has2] = cs_rank[ends[has2] - 2]
    del click_rank

    is_test = r == test_rank[u]
    is_valid = r == valid_rank[u]
    is_train = r < valid_rank[u]
    report = {"rows_after_validation_dropped": int((~(is_test | is_valid | is_train)).sum())}
    return split_by_masks(events, is_train, is_valid, is_test, list_length, rng, report), events


def split_by_masks(
    events: Events,
    is_train: np.ndarray,
    is_valid: np.ndarray,
    is_test: np.ndarray,
    list_length: int | None,
    rng: np.random.Generator,
    report: dict[str, int],
) -> Split:
    """The split whose training, validation and test rows are given (a protocol decides which).

    Training clicks and exposures come from the ``is_train`` rows (exposures of items the user clicked in
    training dropped); the validation lists from the ``is_valid`` rows, then the test lists from the
    ``is_test`` rows (see :func:`build_lists`). ``report`` gets the count of dropped exposures.
    """
    n_users, n_items = events.n_users, events.n_items
    u, i, c = events.user, events.item, events.clicked
    train_clicks = UserItems.from_pairs(u[is_train & c], i[is_train & c], n_users, n_items)
    exp = is_train & ~c
    all_keys = np.unique(u[exp] * n_items + i[exp])
    exp_keys = all_keys[~contains_keys(train_clicks.keys(), all_keys)]
    train_exposures = UserItems.from_keys(exp_keys, n_users, n_items)
    report["exposures_of_clicked_items_dropped"] = int(all_keys.size - exp_keys.size)
    test_keys = u[is_test & c] * n_items + i[is_test & c]
    valid = build_lists(u[is_valid], i[is_valid], c[is_valid], train_clicks, list_length, rng, test_keys)
    assert valid.clicks is not None
    before_test = UserItems.from_keys(np.union1d(train_clicks.keys(), valid.clicks.keys()), n_users, n_items)
    test = build_lists(u[is_test], i[is_test], c[is_test], before_test, list_length, rng)
    return Split(
        train_clicks=train_clicks,
        train_exposures=train_exposures,
        valid=valid,
        test=test,
        valid_clicks=int((is_valid & c).sum()),
        test_clicks=int((is_test & c).sum()),
        report=report,
    )


def _drop_short_users(events: Events) -> Events:
    u, r, c = events.user, events.rank, events.clicked
    cs = np.unique(u[c] * (r.max(initial=0) + 1) + r[c])
    n_cs = np.bincount(cs // (r.max(initial=0) + 1), minlength=events.n_users)
    report = dict(events.report)
    report["users_with_fewer_than_3_click_sessions_dropped"] = int((n_cs < 3).sum())
    return keep_users(events, n_cs >= 3, report)


def keep_users(events: Events, keep_user: np.ndarray, report: dict[str, int]) -> Events:
    """The events of the users where ``keep_user`` is true, ids re-mapped to stay contiguous."""
    u, c = events.user, events.clicked
    if keep_user.all():
        return Events(**{**events.__dict__, "report": report})
    rows = keep_user[u]
    kept_users = np.flatnonzero(keep_user)
    new_u = np.searchsorted(kept_users, u[rows])
    kept_items, new_i = np.unique(events.item[rows], return_inverse=True)
    report["items_dropped_with_those_users"] = int(events.n_items - kept_items.size)
    return Events(
        user=new_u.astype(np.int64),
        item=new_i.astype(np.int64),
        rank=events.rank[rows],
        clicked=c[rows],
        n_users=int(kept_users.size),
        n_items=int(kept_items.size),
        user_ids=events.user_ids[kept_users],
        item_ids=events.item_ids[kept_items],
        report=report,
        time=None if events.time is None else events.time[rows],
    )


def _group_rank(group: np.ndarray) -> np.ndarray:
    """0-based position of each element within its run of equal ``group`` values (sorted input)."""
    idx = np.arange(group.size)
    start = np.ones(group.size, dtype=bool)
    start[1:] = group[1:] != group[:-1]
    return idx - np.maximum.accumulate(np.where(start, idx, 0))


def build_lists(
    user: np.ndarray,
    item: np.ndarray,
    clicked: np.ndarray,
    train_clicks: UserItems,
    list_length: int | None,
    rng: np.random.Generator,
    later_clicks: np.ndarray | None = None,
) -> EvalLists:
    """Build one split's evaluation lists from that split's session rows (vectorized over users).

    ``train_clicks`` are the clicks the user made before this split (for test: training and validation
    clicks): they are neither negatives nor padding. ``later_clicks`` (``user * n_items + item`` keys,
    for validation: the test clicks) are never drawn as padding either: padding stands for items the
    user did not want, and the user clicked those.
    """
    n_items = train_clicks.n_items
    held_out = UserItems.from_pairs(user[clicked], item[clicked], train_clicks.n_users, n_items)
    # exposures of items clicked before are neither clicks nor fair negatives: drop them
    stale = ~clicked & train_clicks.contains(user, item)
    user, item, clicked = user[~stale], item[~stale], clicked[~stale]
    users = np.unique(user)
    n = users.size
    row = np.searchsorted(users, user)
    n_click = np.bincount(row, weights=clicked, minlength=n).astype(np.int64)
    n_exp = np.bincount(row, weights=~clicked, minlength=n).astype(np.int64)

    # random order within (row, kind) then keep quotas
    if list_length is not None:
        total = n_click + n_exp
        over = total > list_length
        exp_quota = n_exp.copy()
        share = np.round(list_length * n_exp / np.maximum(total, 1)).astype(np.int64)
        exp_quota[over] = np.clip(share[over], np.minimum(1, n_exp[over]), n_exp[over])
        click_quota = n_click.copy()
        click_quota[over] = np.minimum(n_click[over], list_length - exp_quota[over])
        # if clicks could not fill their share, give the room back to exposures
        exp_quota[over] = np.minimum(n_exp[over], list_length - click_quota[over])
    else:
        exp_quota, click_quota = n_exp, n_click
    noise = rng.random(user.size)
    kind_key = (~clicked).astype(np.int64)  # clicks first
    order = np.lexsort((noise, kind_key, row))
    pos = _group_rank(row[order] * 2 + kind_key[order])
    quota = np.where(clicked[order], click_quota[row[order]], exp_quota[row[order]])
    keep = order[pos < quota]
    keep = keep[np.lexsort((~clicked[keep], row[keep]))]
    k_row, k_item, k_click = row[keep], item[keep], clicked[keep]
    counts = np.bincount(k_row, minlength=n)

    width = int(counts.max(initial=0)) if list_length is None else list_length
    items = np.full((n, width), -1, dtype=np.int64)
    kind = np.full((n, width), EMPTY, dtype=np.int8)
    col = _group_rank(k_row)
    items[k_row, col] = k_item
    kind[k_row, col] = np.where(k_click, CLICKED, EXPOSED)

    if list_length is not None:
        need = list_length - counts
        pad_items = _draw_padding(users, need, user, item, train_clicks, n_items, rng, later_clicks)
        pad_row = np.repeat(np.arange(n), need)
        pad_col = counts[pad_row] + _group_rank(pad_row)
        ok = pad_items >= 0
        items[pad_row[ok], pad_col[ok]] = pad_items[ok]
        kind[pad_row[ok], pad_col[ok]] = PADDED
    return EvalLists(users=users, items=items, kind=kind, clicks=held_out)


def _draw_padding(
    users: np.ndarray,
    need: np.ndarray,
    sess_user: np.ndarray,
    sess_item: np.ndarray,
    train_clicks: UserItems,
    n_items: int,
    rng: np.random.Generator,
    later_clicks: np.ndarray | None = None,
    max_rounds: int = 64,
) -> np.ndarray:
    """Uniform items without replacement, per user, outside the clicks before, the session and the
    ``later_clicks`` keys.

    Returns one item per needed slot in user order (``-1`` where the user has no allowed item left).
    """
    avoid = [] if later_clicks is None else [np.asarray(later_clicks, dtype=np.int64)]
    forbidden = np.unique(np.concatenate([train_clicks.keys(), sess_user * n_items + sess_item, *avoid]))
    slot_user = np.repeat(users, need)
    result = np.full(slot_user.size, -1, dtype=np.int64)
    taken = np.zeros(0, dtype=np.int64)
    todo = np.arange(slot_user.size)
    for _ in range(max_rounds):
        if todo.size == 0:
            break
        cand = rng.integers(0, n_items, size=todo.size)
        keys = slot_user[todo] * n_items + cand
        ok = ~contains_keys(forbidden, keys) & ~contains_keys(taken, keys)
        # no duplicates among this round's draws
        _, first = np.unique(keys, return_index=True)
        uniq = np.zeros(todo.size, dtype=bool)
        uniq[first] = True
        ok &= uniq
        result[todo[ok]] = cand[ok]
        taken = np.union1d(taken, keys[ok])
        todo = todo[~ok]
    if todo.size:  # users whose allowed set is nearly exhausted: take from the complement
        for u in np.unique(slot_user[todo]):
            slots = todo[slot_user[todo] == u]
            blocked = (
                np.concatenate(
                    [forbidden[(forbidden // n_items) == u], taken[(taken // n_items) == u]]
                )
                % n_items
            )
            allowed = np.setdiff1d(np.arange(n_items), blocked)
            pick = rng.permutation(allowed)[: slots.size]
            result[slots[: pick.size]] = pick
    return result
