"""Full-ranking metrics count every click of a held-out session; a test list never holds a validation
click as a negative. Oracles: the raw log and brute-force rankings in plain Python.

Before prepared-dataset format 2, Recall/NDCG@k counted only the clicks that a list of length L had
room for, validation clicks cut from the validation list were not masked at test time, and test-list
padding could draw an item the user clicked in validation.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from reinforcens.data.log import ExposureLog
from reinforcens.data.prepared import is_current_prepared_dir, load_prepared, prepare, save_prepared
from reinforcens.data.split import CLICKED, EXPOSED, PADDED
from reinforcens.errors import DataError
from reinforcens.evaluation import evaluate_full_ranking

N_USERS, N_ITEMS, SHOWN, CLICKS, LENGTH = 24, 40, 8, 6, 4


def sessions_log(seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Each user: three sessions (train, validation, test) of 8 distinct items, 6 of them clicked, no
    item shown to the user twice, so preprocessing keeps every row; and the sessions by raw ids."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for u in range(N_USERS):
        items = rng.choice(N_ITEMS, size=3 * SHOWN, replace=False)
        truth[f"u{u}"] = []
        for s in range(3):
            shown = items[s * SHOWN : (s + 1) * SHOWN]
            clicked = {f"i{i}" for i in shown[:CLICKS]}
            truth[f"u{u}"].append((clicked, {f"i{i}" for i in shown} - clicked))
            rows += [(f"u{u}", f"i{i}", s, 100 * s, int(f"i{i}" in clicked)) for i in shown]
    return pd.DataFrame(rows, columns=["user", "item", "session", "timestamp", "clicked"]), truth


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    frame, truth = sessions_log()
    path = tmp_path_factory.mktemp("heldout") / "prep"
    save_prepared(prepare(ExposureLog.from_frame(frame), min_sessions=1, list_length=LENGTH, seed=0), path)
    return load_prepared(path), truth


class FixedScores:
    """A scorer with a fixed random score per (user, item)."""

    def __init__(self, n_users: int, n_items: int, seed: int = 1):
        self.s = np.random.default_rng(seed).random((n_users, n_items))

    def score(self, users, items):
        return self.s[users[:, None], items]

    def score_all(self, users):
        return self.s[users]


def brute_force(scores: np.ndarray, truth: set[int], exclude: set[int], k: int) -> tuple[float, float]:
    ranked = [i for i in np.argsort(-scores, kind="stable").tolist() if i not in exclude][:k]
    hits = [r for r, i in enumerate(ranked, 1) if i in truth]
    n = min(k, len(truth))
    ideal = sum(1 / math.log2(r + 1) for r in range(1, n + 1))
    return len(hits) / n, sum(1 / math.log2(r + 1) for r in hits) / ideal


def test_lists_are_truncated_here(data):
    prepared, _ = data
    # the premise: every held-out session has more clicks than its list keeps
    assert ((prepared.test.kind == CLICKED).sum(1) < CLICKS).all()


@pytest.mark.parametrize("split", ["valid", "test"])
def test_full_ranking_counts_every_held_out_click(data, split):
    prepared, truth = data
    item = {raw: i for i, raw in enumerate(prepared.item_ids.tolist())}
    scorer = FixedScores(prepared.n_users, prepared.n_items)
    k = 10
    recalls, ndcgs = [], []
    for u, raw_u in enumerate(prepared.user_ids.tolist()):
        train, valid, test = (({item[x] for x in c}) for c, _ in truth[raw_u])
        held, exclude = (valid, train) if split == "valid" else (test, train | valid)
        r, n = brute_force(scorer.s[u], held, exclude, k)
        recalls.append(r)
        ndcgs.append(n)
    got = evaluate_full_ranking(scorer, prepared, split, k=k)
    assert got[f"recall@{k}"] == pytest.approx(np.mean(recalls))
    assert got[f"ndcg@{k}"] == pytest.approx(np.mean(ndcgs))


def test_test_lists_never_hold_a_validation_click(tmp_path):
    # few items per user left: test padding must draw from a small pool that holds validation clicks
    rng = np.random.default_rng(3)
    rows = []
    for u in range(30):
        items = rng.permutation(12)
        for s, chunk in enumerate((items[:4], items[4:8], items[8:10])):
            rows += [(f"u{u}", f"i{i}", s, s, int(j < 2)) for j, i in enumerate(chunk)]
    # the validation session's clicked items are shown (unclicked) again in the test session
    for u in range(30):
        first = [r for r in rows if r[0] == f"u{u}" and r[2] == 1 and r[4] == 1][0]
        rows.append((f"u{u}", first[1], 2, 2, 0))
    frame = pd.DataFrame(rows, columns=["user", "item", "session", "timestamp", "clicked"])
    prepared = prepare(ExposureLog.from_frame(frame), min_sessions=1, list_length=10, seed=0)
    valid = prepared.valid.clicks
    for row, u in enumerate(prepared.test.users.tolist()):
        clicked_in_valid = set(valid.row(u).tolist())
        kind, items = prepared.test.kind[row], prepared.test.items[row]
        assert clicked_in_valid, "the premise: every user clicked in validation"
        assert not clicked_in_valid & set(items[(kind == PADDED) | (kind == EXPOSED)].tolist())


def test_a_dataset_of_the_earlier_format_is_refused_with_a_message(data, tmp_path):
    prepared, _ = data
    old = tmp_path / "old"
    shutil.copytree(prepared.path, old)
    meta = json.loads((old / "meta.json").read_text())
    meta["format_version"] = 1
    (old / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format version 1, this version reads 2; prepare it again"):
        load_prepared(old)
    # what demo and bench use to prepare their cached datasets again
    assert not is_current_prepared_dir(old) and is_current_prepared_dir(prepared.path)


def test_auc_by_negative_kind_counts_only_that_kind(tiny_prepared):
    from reinforcens.evaluation import auc_by_negative_kind

    lists = tiny_prepared.test
    scores = np.random.default_rng(0).random(lists.items.shape)
    res = auc_by_negative_kind(scores, lists)
    for name, kind in (("auc_exposed", EXPOSED), ("auc_padded", PADDED)):
        per_user = []  # brute force over the (click, negative of this kind) pairs of each list
        for row in range(lists.items.shape[0]):
            slots = range(lists.items.shape[1])
            pos = [scores[row, c] for c in slots if lists.kind[row, c] == CLICKED]
            neg = [scores[row, c] for c in slots if lists.kind[row, c] == kind]
            if pos and neg:
                wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
                per_user.append(wins / (len(pos) * len(neg)))
        assert res[name] == pytest.approx(np.mean(per_user)), name
