from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import random_frame
from hypothesis import given, settings
from hypothesis import strategies as st

from reinforcens.data.log import ExposureLog
from reinforcens.data.preprocess import preprocess, session_ranks


def frame(rows):
    return pd.DataFrame(rows, columns=["user", "item", "session", "timestamp", "clicked"])


def test_repeated_clicks_keep_earliest_and_clicked_exposures_drop():
    log = ExposureLog.from_frame(
        frame(
            [
                ("u", "a", 2, 20, 1),  # repeated click of a, later session: dropped
                ("u", "a", 1, 10, 1),  # earliest click of a: kept
                ("u", "a", 1, 10, 0),  # a shown and clicked in session 1: not an exposure
                ("u", "b", 1, 10, 0),  # exposure: kept
                ("u", "b", 1, 11, 0),  # same exposure twice in a session: once
                ("u", "b", 2, 20, 0),  # b shown again in session 2: kept
            ]
        )
    )
    ev = preprocess(log, min_sessions=1)
    assert ev.report["repeated_clicks_dropped"] == 1
    assert ev.report["clicked_exposures_dropped"] == 1
    assert ev.report["duplicate_exposures_dropped"] == 1
    got = sorted(
        zip(ev.item_ids[ev.item].tolist(), ev.rank.tolist(), ev.clicked.tolist(), strict=True)
    )
    assert got == [("a", 0, True), ("b", 0, False), ("b", 1, False)]


def test_session_ranks_order_by_time_then_id():
    user = np.array([0, 0, 0, 1, 1])
    session = np.array([7, 3, 7, 1, 2])
    ts = np.array([5, 9, 4, 1, 0])
    assert session_ranks(user, session, ts).tolist() == [0, 1, 0, 1, 0]


def oracle_filter(df: pd.DataFrame, k: int) -> set[tuple[str, str, int]]:
    """Iterative session filter by brute force with pandas."""
    while True:
        us = df.groupby("user")["session"].nunique()
        df = df.assign(sk=df["user"].astype(str) + "/" + df["session"].astype(str))
        its = df.groupby("item")["sk"].nunique()
        bad = df["user"].map(us).lt(k) | df["item"].map(its).lt(k)
        if not bad.any():
            return set(zip(df["user"], df["item"], df["session"], strict=True))
        df = df[~bad]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 5))
def test_session_filter_matches_brute_force(seed, k):
    raw = random_frame(seed, n_users=15, n_items=20, max_sessions=6, slate=4, click_rate=0.0)
    log = ExposureLog.from_frame(raw)
    ev = preprocess(log, min_sessions=k)
    # no clicks, timestamps distinct per session: ranks map back to the original session order
    expected = oracle_filter(raw.drop_duplicates(["user", "item", "session"]), k)
    got_users = set(ev.user_ids[ev.user].tolist())
    assert got_users == {u for u, _, _ in expected}
    assert len(ev.user) == len(expected)
    # every kept user and item has >= k sessions
    if len(ev.user):
        per_user = pd.Series(ev.rank).groupby(ev.user).nunique()
        assert per_user.min() >= k
