from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import random_frame

from reinforcens.data.log import ExposureLog
from reinforcens.data.prepared import prepare
from reinforcens.data.preprocess import preprocess
from reinforcens.data.split import CLICKED, EMPTY, EXPOSED, PADDED, split_sessions
from reinforcens.errors import DataError


def sessions_of(ev):
    """{user: {rank: (clicked set, exposed set)}} by brute force."""
    out: dict = {}
    for u, i, r, c in zip(ev.user, ev.item, ev.rank, ev.clicked, strict=True):
        s = out.setdefault(int(u), {}).setdefault(int(r), (set(), set()))
        s[0 if c else 1].add(int(i))
    return out


@pytest.mark.parametrize("list_length", [12, 6, None])
def test_lists_follow_the_protocol(list_length):
    log = ExposureLog.from_frame(random_frame(3, n_users=50, n_items=40, slate=8))
    ev = preprocess(log, min_sessions=2)
    split, ev = split_sessions(ev, list_length=list_length, seed=5)
    sess = sessions_of(ev)
    train = {u: set(split.train_clicks.row(u).tolist()) for u in range(ev.n_users)}
    assert split.valid.users.size == ev.n_users  # every kept user has 3 click sessions
    for lists, offset in ((split.test, 1), (split.valid, 2)):
        for row, u in enumerate(lists.users):
            click_ranks = sorted(r for r, (c, _) in sess[int(u)].items() if c)
            clicks, exposed = sess[int(u)][click_ranks[-offset]]
            # clicked before this split: in training, and for test also in validation
            before = train[int(u)] | (sess[int(u)][click_ranks[-2]][0] if offset == 1 else set())
            # every click of the session is kept beside the list, whatever the list had room for
            assert set(lists.clicks.row(int(u)).tolist()) == clicks
            exposed = exposed - before
            items, kind = lists.items[row], lists.kind[row]
            real = items[kind != EMPTY]
            assert len(set(real.tolist())) == real.size  # no duplicates
            got_c = set(items[kind == CLICKED].tolist())
            got_e = set(items[kind == EXPOSED].tolist())
            got_p = set(items[kind == PADDED].tolist())
            assert got_c <= clicks and got_e <= exposed
            assert not got_p & (clicks | exposed | before)
            assert not got_c & before
            total = len(clicks) + len(exposed)
            if list_length is None:
                assert got_c == clicks and got_e == exposed and not got_p
            elif total <= list_length:
                assert got_c == clicks and got_e == exposed
                assert real.size == list_length
            else:
                assert real.size == list_length and not got_p
                if exposed:
                    assert len(got_e) >= 1
                    share = round(list_length * len(exposed) / total)
                    assert len(got_e) == min(len(exposed), max(1, share, list_length - len(clicks)))


def test_train_exposures_exclude_training_clicks_and_split_sessions():
    log = ExposureLog.from_frame(random_frame(4, n_users=30, n_items=25, slate=10))
    ev = preprocess(log, min_sessions=2)
    split, ev = split_sessions(ev, list_length=20, seed=0)
    keys_c = set(split.train_clicks.keys().tolist())
    keys_e = set(split.train_exposures.keys().tolist())
    assert keys_c and keys_e and not keys_c & keys_e
    # training pairs come from sessions before validation only
    sess = sessions_of(ev)
    for u in range(ev.n_users):
        click_ranks = sorted(r for r, (c, _) in sess[u].items() if c)
        before = [r for r in sess[u] if r < click_ranks[-2]]
        expected = set().union(*(sess[u][r][0] for r in before)) if before else set()
        assert set(split.train_clicks.row(u).tolist()) == expected


def test_lists_are_reproducible_under_the_seed():
    log = ExposureLog.from_frame(random_frame(5))
    a = prepare(log, min_sessions=2, list_length=15, seed=1)
    b = prepare(log, min_sessions=2, list_length=15, seed=1)
    c = prepare(log, min_sessions=2, list_length=15, seed=2)
    assert np.array_equal(a.test.items, b.test.items)
    assert not np.array_equal(a.test.items, c.test.items)


def test_users_with_fewer_than_three_click_sessions_are_dropped():
    rows = []
    for s in range(4):
        rows += [("a", f"i{s}", s, s, 1), ("a", "x", s, s, 0), ("b", "x", s, s, 0)]
    rows += [("b", "i0", 0, 0, 1), ("b", "i1", 1, 1, 1)]  # b: only two sessions with a click
    log = ExposureLog.from_frame(pd.DataFrame(rows, columns=["user", "item", "session", "timestamp",
                                                             "clicked"]))
    data = prepare(log, min_sessions=1, list_length=4, seed=0)
    assert data.n_users == 1 and list(data.user_ids) == ["a"]
    assert data.meta["report"]["users_with_fewer_than_3_click_sessions_dropped"] == 1


def test_nothing_left_says_why():
    log = ExposureLog.from_frame(random_frame(6, max_sessions=2))
    with pytest.raises(DataError, match="3 sessions with a click"):
        prepare(log, min_sessions=1, list_length=10)
    with pytest.raises(DataError, match="smaller --min-sessions"):
        prepare(log, min_sessions=50, list_length=10)
