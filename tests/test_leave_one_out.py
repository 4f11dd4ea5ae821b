"""The leave-one-out split on a log checked by hand, and padding that never draws a later click."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import random_frame

from reinforcens.cli import main
from reinforcens.data.log import ExposureLog
from reinforcens.data.prepared import load_prepared, prepare
from reinforcens.data.split import CLICKED, EXPOSED, PADDED

# user a: day 0 clicks i1 (t 10), i2 (t 20) and sees i9; day 1 clicks i3, sees i8;
# day 2 clicks i4 (t 200) and i5 (t 250), sees i7 and i3 (clicked before: neither click nor negative).
# user b: three clicks on three days; user c: two clicks only (dropped).
ROWS = [
    ("a", "i1", 0, 10, 1), ("a", "i2", 0, 20, 1), ("a", "i9", 0, 15, 0),
    ("a", "i3", 1, 100, 1), ("a", "i8", 1, 101, 0),
    ("a", "i4", 2, 200, 1), ("a", "i5", 2, 250, 1), ("a", "i7", 2, 210, 0), ("a", "i3", 2, 220, 0),
    ("b", "i1", 3, 10, 1), ("b", "i6", 4, 100, 1), ("b", "i7", 5, 200, 1), ("b", "i8", 5, 201, 0),
    ("c", "i1", 6, 10, 1), ("c", "i2", 7, 100, 1),
]  # fmt: skip


def hand_log() -> ExposureLog:
    frame = pd.DataFrame(ROWS, columns=["user", "item", "session", "timestamp", "clicked"])
    return ExposureLog.from_frame(frame)


def as_raw(data, lists):
    """{user: (clicked, exposed, padded)} of a split's lists, by raw ids."""
    out = {}
    for row, u in enumerate(lists.users.tolist()):
        items, kind = lists.items[row], lists.kind[row]
        raw = [set(data.item_ids[items[kind == k]].tolist()) for k in (CLICKED, EXPOSED, PADDED)]
        out[data.user_ids[u]] = tuple(raw)
    return out


def test_leave_one_out_on_a_log_checked_by_hand():
    data = prepare(hand_log(), min_sessions=1, list_length=4, seed=0, split="leave-one-out")
    assert sorted(data.user_ids.tolist()) == ["a", "b"]  # c has two clicks only
    assert data.meta["report"]["users_with_fewer_than_3_clicks_dropped"] == 1
    train = {data.user_ids[u]: set(data.item_ids[data.train_clicks.row(u)].tolist())
             for u in range(data.n_users)}  # fmt: skip
    assert train == {"a": {"i1", "i2", "i3"}, "b": {"i1"}}
    exposures = {data.user_ids[u]: set(data.item_ids[data.train_exposures.row(u)].tolist())
                 for u in range(data.n_users)}  # fmt: skip
    # day 2 of a and day 5 of b hold the held-out clicks: their exposures are list negatives only
    assert exposures == {"a": {"i9", "i8"}, "b": set()}
    test, valid = as_raw(data, data.test), as_raw(data, data.valid)
    assert test["a"][:2] == ({"i5"}, {"i7"}) and valid["a"][:2] == ({"i4"}, {"i7"})
    assert test["b"][:2] == ({"i7"}, {"i8"}) and valid["b"][:2] == ({"i6"}, set())
    for u, before in (("a", {"i1", "i2", "i3", "i4"}), ("b", {"i1", "i6"})):
        clicked, exposed, padded = test[u]
        assert len(clicked | exposed | padded) == 4 and not padded & (before | clicked | exposed)
    # a's validation padding never draws i5, which a clicks in test
    assert "i5" not in valid["a"][2] and "i7" not in valid["b"][2]
    assert data.stats()["valid"] == data.stats()["test"] == 2


def test_leave_one_out_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "log.csv"
    pd.DataFrame(ROWS, columns=["user", "item", "session", "timestamp", "clicked"]).to_csv(path, index=False)
    argv = ["prepare", "--input", str(path), "--out", str(tmp_path / "p"), "--min-sessions", "1",
            "--list-length", "4", "--split", "leave-one-out"]  # fmt: skip
    assert main(argv) == 0
    assert "the leave-one-out split dropped 1 users with fewer than 3 clicks" in capsys.readouterr().out
    assert load_prepared(tmp_path / "p").meta["options"]["split"] == "leave-one-out"
    assert main(["stats", str(tmp_path / "p")]) == 0
    assert "leave-one-out split: kept 2 of the 3 users" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse names the choices
        main([*argv[:-1], "random"])
    assert "invalid choice: 'random'" in capsys.readouterr().err


@pytest.mark.parametrize("split", ["session", "leave-one-out"])
def test_validation_padding_never_draws_a_test_click(split):
    frame = random_frame(4, n_users=40, n_items=14, max_sessions=6, slate=5, click_rate=0.4)
    log = ExposureLog.from_frame(frame)
    data = prepare(log, min_sessions=1, list_length=12, seed=0, split=split)
    test = data.test.clicks
    for row, u in enumerate(data.valid.users.tolist()):
        padded = set(data.valid.items[row][data.valid.kind[row] == PADDED].tolist())
        assert not padded & set(test.row(u).tolist())
    assert np.isin(data.valid.kind, [CLICKED, EXPOSED, PADDED, -1]).all()
