"""Temporal splits: RecBole's part sizes, a log checked by hand, and the global cut's time order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import random_frame
from hypothesis import given
from hypothesis import strategies as st

from reinforcens.data.log import ExposureLog
from reinforcens.data.prepared import prepare
from reinforcens.data.preprocess import preprocess
from reinforcens.data.split import CLICKED, EXPOSED
from reinforcens.data.temporal import part_sizes, split_temporal


def recbole_counts(tot: int, ratios: list[float]) -> list[int]:
    """RecBole 1.2's ``Dataset._calcu_split_ids`` counts, transcribed as a plain loop (the oracle)."""
    total = sum(ratios)
    ratios = [r / total for r in ratios]
    cnt = [int(ratios[i] * tot) for i in range(len(ratios))]
    cnt[0] = tot - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * tot < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt


@given(
    n=st.lists(st.integers(0, 60), min_size=1, max_size=20),
    ratios=st.sampled_from([(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.7, 0.0, 0.3), (8, 1, 1), (0.5, 0.45, 0.05)]),
)
def test_part_sizes_are_recboles(n, ratios):
    valid, test = part_sizes(np.array(n), ratios)
    for k, tot in enumerate(n):
        _, v, t = recbole_counts(tot, list(ratios))
        assert (valid[k], test[k]) == (v, t)


# a: 10 rows over time t = 0..9 (clicks at t 0, 2, 4, 6, 8 and 9): 8 train, 1 valid (t 8), 1 test (t 9)
# b: 3 rows: clicks at t 0 and 5, exposure at t 7 -> 1 train, 1 valid (t 5), 1 test (t 7, no click)
# c: 2 rows: 1 train... 1 test? int(0.1 * 2) = 0: the 0.2 share is below one row, so test takes one;
#    then training has one row left and validation stays empty
ROWS = [("a", f"i{k}", k, k, int(k % 2 == 0 or k == 9)) for k in range(10)]
ROWS += [("b", "i0", 20, 0, 1), ("b", "i5", 21, 5, 1), ("b", "i7", 22, 7, 0)]
ROWS += [("c", "i1", 30, 0, 1), ("c", "i2", 31, 3, 1)]


def test_temporal_split_on_a_log_checked_by_hand():
    frame = pd.DataFrame(ROWS, columns=["user", "item", "session", "timestamp", "clicked"])
    data = prepare(ExposureLog.from_frame(frame), min_sessions=1, list_length=None, seed=0, split="temporal")
    users = data.user_ids.tolist()
    assert sorted(users) == ["a", "b", "c"]
    train = {users[u]: set(data.item_ids[data.train_clicks.row(u)].tolist()) for u in range(data.n_users)}
    assert train == {"a": {"i0", "i2", "i4", "i6"}, "b": {"i0"}, "c": {"i1"}}
    expo = {users[u]: set(data.item_ids[data.train_exposures.row(u)].tolist()) for u in range(data.n_users)}
    assert expo == {"a": {"i1", "i3", "i5", "i7"}, "b": set(), "c": set()}

    def lists(part):
        out = {}
        for row, u in enumerate(part.users.tolist()):
            kind, items = part.kind[row], part.items[row]
            out[users[u]] = tuple(set(data.item_ids[items[kind == k]].tolist()) for k in (CLICKED, EXPOSED))
        return out

    # a user gets a list of a part only if they click in it: b's test part holds no click
    assert lists(data.valid) == {"a": ({"i8"}, set()), "b": ({"i5"}, set())}
    assert lists(data.test) == {"a": ({"i9"}, set()), "c": ({"i2"}, set())}


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2)])
def test_global_cut_orders_every_part_in_time(ratios):
    frame = random_frame(5, n_users=30, n_items=25, max_sessions=6, slate=5, click_rate=0.4)
    events = preprocess(ExposureLog.from_frame(frame), min_sessions=1, keep_time=True)
    split, ev = split_temporal(events, None, 0, ratios=ratios, per_user=False)
    # oracle: the time of each kept click, from the kept events
    key = ev.user * ev.n_items + ev.item
    t_of = dict(zip(key[ev.clicked].tolist(), ev.time[ev.clicked].tolist(), strict=True))
    train = [t_of[k] for k in split.train_clicks.keys().tolist()]
    valid = [t_of[k] for k in split.valid.clicks.keys().tolist()]
    test = [t_of[k] for k in split.test.clicks.keys().tolist()]
    assert train and valid and test
    assert max(train) <= min(valid + test) and max(valid) <= min(test)
