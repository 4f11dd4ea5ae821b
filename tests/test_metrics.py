"""Tests of the ranking metrics against independent oracles (scikit-learn and brute-force loops)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score, roc_auc_score

from reinforcens.errors import ConfigError, DataError
from reinforcens.metrics import (
    expected_auc,
    full_ranking_metrics,
    full_ranking_per_user,
    list_auc,
    list_metrics,
    list_ndcg,
    mean_valid,
)

# ------------------------------------------------------------------------------------------------
# Strategies
# ------------------------------------------------------------------------------------------------


@st.composite
def padded_lists(draw, max_users: int = 6, max_len: int = 12, min_len: int = 1):
    """Random (scores, labels, mask); scores are either continuous or from a small integer set."""
    n_users = draw(st.integers(1, max_users))
    length = draw(st.integers(min_len, max_len))
    seed = draw(st.integers(0, 2**32 - 1))
    ties = draw(st.booleans())
    click_rate = draw(st.sampled_from([0.1, 0.3, 0.5, 0.9]))
    mask_rate = draw(st.sampled_from([0.0, 0.2, 0.5]))
    rng = np.random.default_rng(seed)
    if ties:
        scores = rng.integers(0, draw(st.integers(1, 4)), size=(n_users, length)).astype(float)
    else:
        scores = rng.normal(size=(n_users, length))
    labels = rng.random((n_users, length)) < click_rate
    mask = rng.random((n_users, length)) >= mask_rate
    return scores, labels, mask


def _valid_user(labels: np.ndarray, mask: np.ndarray, u: int) -> bool:
    y = labels[u][mask[u]]
    return bool(y.any() and not y.all())


# ------------------------------------------------------------------------------------------------
# Brute-force oracles
# ------------------------------------------------------------------------------------------------


def brute_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos = scores[labels]
    neg = scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    total = 0.0
    for a in pos:
        for b in neg:
            total += 1.0 if a > b else 0.5 if a == b else 0.0
    return total / (len(pos) * len(neg))


def brute_ndcg_over_tie_orders(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean NDCG over every ordering of the items within each group of equal scores."""
    n_pos = int(labels.sum())
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, n_pos + 1))
    groups = [
        [i for i in range(len(scores)) if scores[i] == value]
        for value in sorted(set(scores.tolist()), reverse=True)
    ]
    values = []
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        ranking = [i for perm in perms for i in perm]
        dcg = sum(1.0 / math.log2(r + 2) for r, i in enumerate(ranking) if labels[i])
        values.append(dcg / ideal)
    return float(np.mean(values))


def brute_expected_auc(scores: np.ndarray, probs: np.ndarray) -> float:
    num = den = 0.0
    for i in range(len(scores)):
        for j in range(len(scores)):
            if i == j:
                continue
            w = probs[i] * (1.0 - probs[j])
            den += w
            num += w * (1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0)
    return num / den if den > 0 else math.nan


def brute_full_ranking(
    scores: np.ndarray, truth: set[int], excluded: set[int], k: int
) -> tuple[float, float]:
    """Recall@k and NDCG@k with ties broken against the truth items (pessimistic)."""
    if not truth:
        return math.nan, math.nan
    items = [i for i in range(len(scores)) if i not in excluded]
    ranking = sorted(items, key=lambda i: (-scores[i], i in truth))[:k]
    hits = [r for r, i in enumerate(ranking) if i in truth]
    n_ideal = min(k, len(truth))
    recall = len(hits) / n_ideal
    dcg = sum(1.0 / math.log2(r + 2) for r in hits)
    ideal = sum(1.0 / math.log2(r + 2) for r in range(n_ideal))
    return recall, dcg / ideal


# ------------------------------------------------------------------------------------------------
# List AUC and NDCG
# ------------------------------------------------------------------------------------------------


@settings(deadline=None)  # brute-force oracles are slow on small machines
@given(padded_lists())
def test_list_auc_matches_sklearn_and_pair_loop(data):
    scores, labels, mask = data
    auc = list_auc(scores, labels, mask)
    assert auc.shape == (scores.shape[0],)
    for u in range(scores.shape[0]):
        s, y = scores[u][mask[u]], labels[u][mask[u]]
        if _valid_user(labels, mask, u):
            assert auc[u] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            assert auc[u] == pytest.approx(brute_auc(s, y), abs=1e-12)
        else:
            assert np.isnan(auc[u])


@settings(deadline=None)  # brute-force oracles are slow on small machines
@given(padded_lists())
def test_list_ndcg_matches_sklearn(data):
    scores, labels, mask = data
    ndcg = list_ndcg(scores, labels, mask)
    for u in range(scores.shape[0]):
        s, y = scores[u][mask[u]], labels[u][mask[u]]
        if _valid_user(labels, mask, u):
            expected = ndcg_score(y[None, :].astype(float), s[None, :])
            assert ndcg[u] == pytest.approx(expected, abs=1e-12)
        else:
            assert np.isnan(ndcg[u])


@settings(deadline=None)  # brute-force oracles are slow on small machines
@given(padded_lists(max_len=7))
def test_list_ndcg_is_the_mean_over_tie_orders(data):
    scores, labels, mask = data
    ndcg = list_ndcg(scores, labels, mask)
    for u in range(scores.shape[0]):
        if _valid_user(labels, mask, u):
            expected = brute_ndcg_over_tie_orders(scores[u][mask[u]], labels[u][mask[u]])
            assert ndcg[u] == pytest.approx(expected, abs=1e-12)


@settings(deadline=None)  # brute-force oracles are slow on small machines
@given(padded_lists(), st.integers(0, 2**32 - 1))
def test_masked_slots_never_change_the_result(data, seed):
    scores, labels, mask = data
    rng = np.random.default_rng(seed)
    other_scores = np.where(mask, scores, rng.normal(scale=100.0, size=scores.shape))
    other_scores[~mask & (rng.random(scores.shape) < 0.3)] = np.nan  # even NaN padding is ignored
    other_labels = np.where(mask, labels, rng.random(scores.shape) < 0.5)
    for fn in (list_auc, list_ndcg):
        np.testing.assert_allclose(
            fn(other_scores, other_labels, mask), fn(scores, labels, mask), rtol=0, atol=1e-12
        )


@settings(deadline=None)  # brute-force oracles are slow on small machines
@given(padded_lists())
def test_ragged_lists_equal_their_compacted_rows(data):
    """Each row of a padded batch gives the same value as that row's valid items on their own."""
    scores, labels, mask = data
    auc, ndcg = list_auc(scores, labels, mask), list_ndcg(scores, labels, mask)
    for u in range(scores.shape[0]):
        s, y = scores[u][mask[u]][None, :], labels[u][mask[u]][None, :]
        if s.shape[1] == 0:
            assert np.isnan(auc[u]) and np.isnan(ndcg[u])
            continue
        np.testing.assert_allclose(list_auc(s, y), auc[u : u + 1], atol=1e-12)
        np.testing.assert_allclose(list_ndcg(s, y), ndcg[u : u + 1], atol=1e-12)


@settings(deadline=None)  # brute-force oracles are slow on small machines
@given(padded_lists())
def test_list_metrics_average_over_users_with_a_click_and_a_non_click(data):
    scores, labels, mask = data
    result = list_metrics(scores, labels, mask)
    valid = [u for u in range(scores.shape[0]) if _valid_user(labels, mask, u)]
    assert result["users"] == len(valid)
    if valid:
        aucs = [brute_auc(scores[u][mask[u]], labels[u][mask[u]]) for u in valid]
        assert result["auc"] == pytest.approx(np.mean(aucs), abs=1e-12)
        assert result["ndcg"] == pytest.approx(np.mean(list_ndcg(scores, labels, mask)[valid]))
    else:
        assert np.isnan(result["auc"]) and np.isnan(result["ndcg"])


def test_users_without_click_or_non_click_are_nan_and_excluded():
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [5.0, 4.0, 0.0]])
    labels = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 1], [1, 0, 1]], dtype=bool)
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]], dtype=bool)
    auc = list_auc(scores, labels, mask)
    ndcg = list_ndcg(scores, labels, mask)
    assert auc[0] == 1.0 and ndcg[0] == 1.0
    assert np.isnan(auc[1:3]).all() and np.isnan(ndcg[1:3]).all()
    assert auc[3] == 1.0  # the unclicked masked item at score 0 is not a negative
    result = list_metrics(scores, labels, mask)
    assert result == {"auc": 1.0, "ndcg": 1.0, "users": 2}


def test_known_values_with_ties():
    scores = np.array([[2.0, 1.0, 1.0, 0.0]])
    labels = np.array([[0, 1, 0, 1]], dtype=bool)
    # (clicked, unclicked) pairs: (1, 2) -> 0, (1, 1) -> 0.5, (0, 2) -> 0, (0, 1) -> 0
    assert list_auc(scores, labels)[0] == pytest.approx(0.5 / 4)
    # The clicked 1.0 shares ranks 2-3 with an unclicked item; the clicked 0.0 is at rank 4.
    dcg = 0.5 * (1 / math.log2(3) + 1 / math.log2(4)) + 1 / math.log2(5)
    assert list_ndcg(scores, labels)[0] == pytest.approx(dcg / (1 + 1 / math.log2(3)))


def test_all_tied_list_gives_half_auc():
    scores = np.zeros((3, 5))
    labels = np.array([[1, 0, 0, 0, 0], [1, 1, 0, 1, 0], [0, 0, 0, 0, 1]], dtype=bool)
    np.testing.assert_allclose(list_auc(scores, labels), 0.5)


def test_integer_labels_and_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 8))
    labels = (rng.random((5, 8)) < 0.4).astype(np.int64)
    expected = list_auc(scores, labels.astype(bool))
    got = list_auc(torch.tensor(scores, requires_grad=True), torch.tensor(labels))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(list_ndcg(scores, labels), list_ndcg(scores, labels == 1))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise_naming_the_row(bad):
    scores = np.zeros((5, 4))
    labels = np.zeros((5, 4), dtype=bool)
    labels[:, 0] = True
    scores[3, 2] = bad
    scores[4, 1] = bad
    for fn in (list_metrics, list_auc, list_ndcg):
        with pytest.raises(DataError, match=r"2 NaN or infinite.*user row 3"):
            fn(scores, labels)
    mask = np.ones((5, 4), dtype=bool)
    mask[3, 2] = mask[4, 1] = False
    assert list_metrics(scores, labels, mask)["users"] == 5


def test_shape_mismatch_raises():
    with pytest.raises(DataError, match="labels have shape"):
        list_metrics(np.zeros((3, 4)), np.zeros((3, 5), dtype=bool))
    with pytest.raises(DataError, match="mask has shape"):
        list_metrics(np.zeros((3, 4)), np.zeros((3, 4), dtype=bool), np.ones((2, 4), dtype=bool))
    with pytest.raises(DataError, match="2-D"):
        list_metrics(np.zeros(4), np.zeros(4, dtype=bool))
    with pytest.raises(DataError, match="0/1"):
        list_metrics(np.zeros((1, 2)), np.array([[0.5, 1.0]]))


def test_mean_valid():
    assert mean_valid(np.array([1.0, np.nan, 3.0])) == 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(mean_valid(np.array([np.nan, np.nan])))
        assert math.isnan(mean_valid(np.array([])))


# ------------------------------------------------------------------------------------------------
# Full ranking
# ------------------------------------------------------------------------------------------------


@st.composite
def full_ranking_inputs(draw):
    n_users = draw(st.integers(1, 5))
    n_items = draw(st.integers(1, 15))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        scores = rng.integers(0, draw(st.integers(1, 4)), size=(n_users, n_items)).astype(float)
    else:
        scores = rng.normal(size=(n_users, n_items))
    truth = rng.random((n_users, n_items)) < draw(st.sampled_from([0.0, 0.1, 0.3, 0.7]))
    exclude = rng.random((n_users, n_items)) < draw(st.sampled_from([0.0, 0.3, 0.8]))
    if draw(st.booleans()):  # training clicks are normally disjoint from held-out clicks
        exclude &= ~truth
    k = draw(st.integers(1, n_items + 3))
    return scores, truth, exclude, k


@settings(deadline=None)  # brute-force oracles are slow on small machines
@given(full_ranking_inputs())
def test_full_ranking_matches_sorted_loop(data):
    scores, truth, exclude, k = data
    recall, ndcg = full_ranking_per_user(scores, sp.csr_matrix(truth), sp.csr_matrix(exclude), k)
    for u in range(scores.shape[0]):
        exp_recall, exp_ndcg = brute_full_ranking(
            scores[u], set(np.flatnonzero(truth[u])), set(np.flatnonzero(exclude[u])), k
        )
        np.testing.assert_allclose([recall[u], ndcg[u]], [exp_recall, exp_ndcg], atol=1e-12)
    result = full_ranking_metrics(scores, sp.csr_matrix(truth), sp.csr_matrix(exclude), k)
    has_truth = truth.any(axis=1)
    assert result["users"] == int(has_truth.sum())
    if has_truth.any():
        assert result[f"recall@{k}"] == pytest.approx(recall[has_truth].mean())
        assert result[f"ndcg@{k}"] == pytest.approx(ndcg[has_truth].mean())
    else:
        assert math.isnan(result[f"recall@{k}"])


def test_full_ranking_chunks_concatenate():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(20, 30))
    truth = sp.csr_matrix(rng.random((20, 30)) < 0.1)
    exclude = sp.csr_matrix(rng.random((20, 30)) < 0.2)
    whole = full_ranking_per_user(scores, truth, exclude, 5)
    parts = [full_ranking_per_user(scores[a:b], truth[a:b], exclude[a:b], 5) for a, b in ((0, 7), (7, 20))]
    for i in range(2):
        np.testing.assert_array_equal(np.concatenate([p[i] for p in parts]), whole[i])


def test_exclusion_removes_training_clicks_from_the_ranking():
    scores = np.array([[9.0, 8.0, 7.0, 1.0]])
    truth = sp.csr_matrix(np.array([[0, 0, 1, 0]]))
    exclude = sp.csr_matrix(np.array([[1, 1, 0, 0]]))
    assert full_ranking_metrics(scores, truth, None, k=1)["recall@1"] == 0.0
    assert full_ranking_metrics(scores, truth, exclude, k=1) == {
        "recall@1": 1.0,
        "ndcg@1": 1.0,
        "users": 1,
    }
    # An excluded item is never a hit, even when it is also held out.
    both = sp.csr_matrix(np.array([[1, 0, 0, 0]]))
    for k in (2, 4, 10):
        assert full_ranking_metrics(scores, both, both, k=k)[f"recall@{k}"] == 0.0
    # The caller's array is not modified.
    assert scores[0, 0] == 9.0


def test_ties_at_the_cutoff_do_not_favour_truth_items():
    scores = np.zeros((1, 10))
    truth = sp.csr_matrix(np.eye(1, 10, 4))
    result = full_ranking_metrics(scores, truth, k=3)
    assert result["recall@3"] == 0.0 and result["ndcg@3"] == 0.0
    # With no room left for non-truth items the tied truth item is ranked last: rank 10.
    result = full_ranking_metrics(scores, truth, k=10)
    assert result["recall@10"] == 1.0
    assert result["ndcg@10"] == pytest.approx(1 / math.log2(11))


def test_recall_uses_min_k_truth_denominator():
    scores = np.arange(10.0)[None, ::-1].copy()  # item 0 ranks first
    truth = sp.csr_matrix(np.array([[1, 1, 1, 1, 1, 0, 0, 0, 0, 0]]))
    result = full_ranking_metrics(scores, truth, k=3)
    assert result["recall@3"] == 1.0 and result["ndcg@3"] == pytest.approx(1.0)


def test_full_ranking_bad_inputs():
    scores = np.zeros((2, 3))
    truth = sp.csr_matrix(np.ones((2, 3)))
    with pytest.raises(ConfigError):
        full_ranking_metrics(scores, truth, k=0)
    with pytest.raises(DataError, match="truth has shape"):
        full_ranking_metrics(scores, sp.csr_matrix(np.ones((2, 4))))
    with pytest.raises(DataError, match="sparse"):
        full_ranking_metrics(scores, np.ones((2, 3)))
    scores[1, 2] = np.nan
    with pytest.raises(DataError, match="user row 1"):
        full_ranking_metrics(scores, truth)


# ------------------------------------------------------------------------------------------------
# Expected AUC under true click probabilities
# ------------------------------------------------------------------------------------------------


@settings(deadline=None)  # brute-force oracles are slow on small machines
@given(padded_lists(), st.integers(0, 2**32 - 1), st.booleans())
def test_expected_auc_matches_double_loop(data, seed, extreme):
    scores, _, mask = data
    rng = np.random.default_rng(seed)
    probs = rng.random(scores.shape)
    if extreme:  # probabilities of exactly 0 and 1 mixed in
        probs[rng.random(scores.shape) < 0.4] = rng.integers(0, 2)
    got = expected_auc(scores, probs, mask)
    for u in range(scores.shape[0]):
        expected = brute_expected_auc(scores[u][mask[u]], probs[u][mask[u]])
        if math.isnan(expected):
            assert np.isnan(got[u])
        else:
            assert got[u] == pytest.approx(expected, abs=1e-9)


@settings(deadline=None)  # brute-force oracles are slow on small machines
@given(padded_lists())
def test_expected_auc_with_0_1_probs_is_the_list_auc(data):
    scores, labels, mask = data
    np.testing.assert_allclose(
        expected_auc(scores, labels.astype(float), mask), list_auc(scores, labels, mask), atol=1e-12
    )


@settings(deadline=None, max_examples=30)
@given(padded_lists(min_len=2), st.integers(0, 2**32 - 1))
def test_expected_auc_of_constant_scores_is_half(data, seed):
    _, _, mask = data
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.05, 0.95, size=mask.shape)
    got = expected_auc(np.full(mask.shape, 3.0), probs, mask)
    enough = mask.sum(axis=1) >= 2
    np.testing.assert_allclose(got[enough], 0.5, atol=1e-12)
    assert np.isnan(got[~enough]).all()


def test_expected_auc_rejects_bad_probs():
    with pytest.raises(DataError, match="outside"):
        expected_auc(np.zeros((2, 2)), np.array([[0.5, 0.5], [0.5, 1.5]]))
    with pytest.raises(DataError, match="probs have shape"):
        expected_auc(np.zeros((2, 2)), np.zeros((2, 3)))


@settings(deadline=None)
@given(padded_lists())
def test_compiled_list_metrics_equal_the_numpy_ones(data):
    """The compiled per-row pass and the vectorized numpy pass give the same AUC and NDCG (ties too)."""
    from reinforcens.metrics import _check_lists, _list_metrics_arrays

    s, y, m = _check_lists(*data)
    auc_c, ndcg_c = _list_metrics_arrays(s, y, m, compiled=True)
    auc_n, ndcg_n = _list_metrics_arrays(s, y, m, compiled=False)
    np.testing.assert_allclose(auc_c, auc_n, atol=1e-12)
    np.testing.assert_allclose(ndcg_c, ndcg_n, atol=1e-12)
    assert np.array_equal(np.isnan(auc_c), np.isnan(auc_n))


def test_chance_auc_se_matches_the_spread_of_random_rankings():
    """The null standard error against the spread of the mean list AUC of random scores (each list's
    AUC by scikit-learn), over lists of mixed sizes with masked slots."""
    from sklearn.metrics import roc_auc_score

    from reinforcens.metrics import chance_auc_se

    rng = np.random.default_rng(3)
    n, length = 60, 12
    mask = rng.random((n, length)) < 0.8
    labels = (rng.random((n, length)) < 0.3) & mask
    labels[0] = False  # a list without a click and one without a non-click do not count
    labels[1] = mask[1]
    means = []
    for _ in range(2000):
        scores = rng.random((n, length))
        aucs = [roc_auc_score(y[m], s[m]) for y, m, s in zip(labels, mask, scores, strict=True)
                if 0 < y[m].sum() < m.sum()]  # fmt: skip
        means.append(np.mean(aucs))
    assert chance_auc_se(labels, mask) == pytest.approx(np.std(means), rel=0.06)
    assert np.isnan(chance_auc_se(np.zeros((2, 3), bool)))
