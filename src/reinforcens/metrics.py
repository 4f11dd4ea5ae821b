"""Ranking metrics: the paper's per-user list metrics, full-ranking metrics and ground-truth AUC.

Three families of metrics live here, all pure, vectorized numpy functions over a batch of users:

* **List metrics** (paper section 3.1): each user has a short list of test items (the clicked
  items of the held-out session plus unclicked exposed items, padded to length ``L``).
  :func:`list_auc` is the *per-user list AUC*: within one user's list, the fraction of
  (clicked, unclicked) pairs in which the clicked item scores higher, ties counting one half. It is
  not a global AUC over all (user, item) pairs and not an AUC@K. :func:`list_ndcg` is NDCG with
  binary gains over the whole list (no cut-off). :func:`list_metrics` averages both over the users
  whose list holds at least one clicked and one unclicked item, which is the number the paper
  reports.
* **Full-ranking metrics**: Recall@K and NDCG@K over all items, with the user's training clicks
  removed from the ranking (:func:`full_ranking_per_user`, :func:`full_ranking_metrics`).
* **Ground-truth metrics** on simulated data: :func:`expected_auc`, the AUC a scorer gets in
  expectation when each item is clicked independently with its true click probability.

Lists are given as padded 2-D arrays of shape ``(n_users, L)`` with a boolean ``mask`` that is True
where a slot holds a real item; a masked slot never changes any result, whatever its score or label.
Any function also accepts torch tensors, which are copied to numpy first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from reinforcens.errors import ConfigError, DataError

__all__ = [
    "chance_auc_se",
    "expected_auc",
    "full_ranking_metrics",
    "full_ranking_per_user",
    "list_auc",
    "list_metrics",
    "list_ndcg",
    "mean_valid",
]


# ------------------------------------------------------------------------------------------------
# Input handling
# ------------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a numpy array, copying torch tensors to the CPU first."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
    return np.asarray(x)


def _as_bool(x: Any, name: str) -> np.ndarray:
    """Convert 0/1 or boolean values to a boolean array, rejecting anything else."""
    arr = _to_numpy(x)
    if arr.dtype == np.bool_:
        return arr
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise DataError(f"{name} must be boolean or 0/1, got other values")
    return arr.astype(bool)


def _check_finite(values: np.ndarray, valid: np.ndarray, name: str) -> None:
    """Raise :class:`DataError` if ``values`` hold NaN or infinity at ``valid`` slots."""
    bad = ~np.isfinite(values) & valid
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        first_row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise DataError(
            f"{name} contain {n_bad} NaN or infinite value(s) at valid slots; "
            f"the first is in user row {first_row}"
        )


def _check_lists(scores: Any, labels: Any, mask: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate padded lists and return ``(scores, labels, mask)`` as float64, bool, bool arrays."""
    s = _to_numpy(scores)
    if s.ndim != 2:
        raise DataError(f"scores must be a 2-D (n_users, L) array, got shape {s.shape}")
    y = _as_bool(labels, "labels")
    if y.shape != s.shape:
        raise DataError(f"labels have shape {y.shape} but scores have shape {s.shape}")
    if mask is None:
        m = np.ones(s.shape, dtype=bool)
    else:
        m = _as_bool(mask, "mask")
        if m.shape != s.shape:
            raise DataError(f"mask has shape {m.shape} but scores have shape {s.shape}")
    s = s.astype(np.float64, copy=False)
    _check_finite(s, m, "scores")
    return s, y & m, m


# ------------------------------------------------------------------------------------------------
# Shared sorting machinery
# ------------------------------------------------------------------------------------------------


def _sorted_tie_groups(
    scores: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sort each row ascending by score, valid slots first, and find the groups of tied scores.

    Returns ``(order, start, end, n_valid)``: ``order`` sorts each row (masked slots last),
    ``start`` and ``end`` give, for every sorted position, the first and last (inclusive, 0-based)
    sorted positions of its tie group, and ``n_valid`` is the number of valid slots per row.
    Masked slots never share a tie group with valid ones.
    """
    n_users, length = scores.shape
    # Valid scores are finite (checked by the callers), so infinity puts masked slots last; each
    # masked slot is made a group of its own.
    keyed = np.where(mask, scores, np.inf)
    order = np.argsort(keyed, axis=1)
    sorted_scores = np.take_along_axis(keyed, order, axis=1)

    new_group = np.ones((n_users, length), dtype=bool)
    np.not_equal(sorted_scores[:, 1:], sorted_scores[:, :-1], out=new_group[:, 1:])
    new_group[:, 1:] |= np.isinf(sorted_scores[:, 1:])
    positions = np.arange(length, dtype=np.intp)
    if new_group.all():  # no ties: every slot is its own group
        start = end = np.broadcast_to(positions, (n_users, length))
        return order, start, end, mask.sum(axis=1)
    start = np.maximum.accumulate(np.where(new_group, positions, 0), axis=1)
    last_in_group = np.ones((n_users, length), dtype=bool)
    last_in_group[:, :-1] = new_group[:, 1:]
    reversed_ends = np.where(last_in_group[:, ::-1], positions[::-1], length - 1)
    end = np.minimum.accumulate(reversed_ends, axis=1)[:, ::-1]
    return order, start, end, mask.sum(axis=1)


def _discount_prefix(length: int) -> np.ndarray:
    """Return ``C`` with ``C[r] = sum_{i=1..r} 1 / log2(i + 1)`` for ``r = 0..length``."""
    return np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(2, length + 2)))))


def _clicked_groups(
    labels: np.ndarray, order: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row, tie-group start and tie-group end (sorted positions) of every clicked valid slot.

    Also returns the number of clicked valid slots per row. ``labels`` must already be False at
    masked slots.
    """
    rows, cols = np.nonzero(np.take_along_axis(labels, order, axis=1))
    n_pos = np.bincount(rows, minlength=labels.shape[0])
    return rows, start[rows, cols], end[rows, cols], n_pos


def _auc_from_groups(
    rows: np.ndarray, first: np.ndarray, last: np.ndarray, n_pos: np.ndarray, n_valid: np.ndarray
) -> np.ndarray:
    """Per-row AUC from the Mann-Whitney rank sum with average ranks for ties."""
    n_neg = n_valid - n_pos
    avg_rank = (first + last) / 2.0 + 1.0
    rank_sum = np.bincount(rows, weights=avg_rank, minlength=n_pos.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def _ndcg_from_groups(
    rows: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    n_pos: np.ndarray,
    n_valid: np.ndarray,
    length: int,
) -> np.ndarray:
    """Per-row NDCG (binary gains, whole list) with discounts averaged within tie groups."""
    cum = _discount_prefix(length)
    n = n_valid[rows]
    # Ascending position j is descending rank n - j (1-based); a group [a, b] covers ranks n-b..n-a.
    avg_discount = (cum[n - first] - cum[n - last - 1]) / (last - first + 1)
    dcg = np.bincount(rows, weights=avg_discount, minlength=n_pos.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        ndcg = dcg / cum[n_pos]
    return np.where((n_pos > 0) & (n_pos < n_valid), ndcg, np.nan)


def _list_metrics_arrays(
    scores: np.ndarray, labels: np.ndarray, mask: np.ndarray, compiled: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user list AUC and NDCG from already validated arrays, sharing one sort.

    ``compiled`` (default: when numba is installed) runs :func:`reinforcens.kernels.list_auc_ndcg`, one
    compiled pass per row in parallel; otherwise vectorized numpy. Both compute the same values.
    """
    if compiled is None:
        from reinforcens.backend import numba_available

        compiled = numba_available()
    if compiled:
        from reinforcens.kernels import list_auc_ndcg

        return list_auc_ndcg(
            np.ascontiguousarray(scores), np.ascontiguousarray(labels), np.ascontiguousarray(mask),
            _discount_prefix(scores.shape[1]),
        )  # fmt: skip
    order, start, end, n_valid = _sorted_tie_groups(scores, mask)
    rows, first, last, n_pos = _clicked_groups(labels, order, start, end)
    return (
        _auc_from_groups(rows, first, last, n_pos, n_valid),
        _ndcg_from_groups(rows, first, last, n_pos, n_valid, scores.shape[1]),
    )


# ------------------------------------------------------------------------------------------------
# List metrics (paper section 3.1)
# ------------------------------------------------------------------------------------------------


def list_auc(scores: Any, labels: Any, mask: Any | None = None) -> np.ndarray:
    """Per-user list AUC over padded test lists.

    For each user, the AUC is the fraction of (clicked, unclicked) pairs of valid items in that
    user's list where the clicked item has the higher score; a tie counts one half. This is the
    per-user list AUC of the paper (averaged over users by :func:`list_metrics`), not a global AUC
    over all (user, item) pairs and not a truncated AUC@K. It is computed from average ranks (the
    Mann-Whitney statistic), vectorized over users.

    Parameters
    ----------
    scores
        Float array of shape ``(n_users, L)``: the model's score of each list slot.
    labels
        Boolean (or 0/1) array of shape ``(n_users, L)``: True where the item was clicked.
    mask
        Boolean array of shape ``(n_users, L)``: True where the slot holds a real item, False for
        padding. Defaults to all True.

    Returns
    -------
    numpy.ndarray
        Float array of shape ``(n_users,)``; NaN for users without at least one clicked and one
        unclicked valid item.

    Raises
    ------
    DataError
        If the shapes disagree or a valid slot has a NaN or infinite score.
    """
    s, y, m = _check_lists(scores, labels, mask)
    order, start, end, n_valid = _sorted_tie_groups(s, m)
    rows, first, last, n_pos = _clicked_groups(y, order, start, end)
    return _auc_from_groups(rows, first, last, n_pos, n_valid)


def list_ndcg(scores: Any, labels: Any, mask: Any | None = None) -> np.ndarray:
    """Per-user NDCG over padded test lists, with binary gains and no cut-off.

    The user's valid items are ranked by descending score (rank 1 is the highest score). DCG is the
    sum over clicked items of ``1 / log2(rank + 1)``, and it is divided by the ideal DCG,
    ``sum_{r=1..c} 1 / log2(r + 1)`` for a user with ``c`` clicked items.

    Ties are resolved by expectation: the result is the expected DCG over all orderings of tied
    items, which is the same as giving every item of a tied group the mean discount of the
    positions the group occupies. This matches :func:`sklearn.metrics.ndcg_score` (which averages
    over ties) and does not depend on the order of items in the input.

    Parameters
    ----------
    scores
        Float array of shape ``(n_users, L)``.
    labels
        Boolean (or 0/1) array of shape ``(n_users, L)``: True where the item was clicked.
    mask
        Boolean array of shape ``(n_users, L)``: True where the slot holds a real item. Defaults to
        all True.

    Returns
    -------
    numpy.ndarray
        Float array of shape ``(n_users,)``; NaN for users without at least one clicked and one
        unclicked valid item (the same users as for :func:`list_auc`, so both averages are taken
        over the same users).

    Raises
    ------
    DataError
        If the shapes disagree or a valid slot has a NaN or infinite score.
    """
    s, y, m = _check_lists(scores, labels, mask)
    order, start, end, n_valid = _sorted_tie_groups(s, m)
    rows, first, last, n_pos = _clicked_groups(y, order, start, end)
    return _ndcg_from_groups(rows, first, last, n_pos, n_valid, s.shape[1])


def list_metrics(scores: Any, labels: Any, mask: Any | None = None) -> dict[str, float]:
    """The paper's list metrics: per-user list AUC and NDCG, averaged over users.

    Both :func:`list_auc` and :func:`list_ndcg` are computed (sharing one sort) and averaged over
    the users whose list has at least one clicked and one unclicked valid item.

    Parameters
    ----------
    scores
        Float array of shape ``(n_users, L)``.
    labels
        Boolean (or 0/1) array of shape ``(n_users, L)``: True where the item was clicked.
    mask
        Boolean array of shape ``(n_users, L)``: True where the slot holds a real item. Defaults to
        all True.

    Returns
    -------
    dict
        ``{"auc": mean per-user list AUC, "ndcg": mean per-user list NDCG, "users": number of users
        averaged over}``. The means are NaN when no user qualifies.

    Raises
    ------
    DataError
        If the shapes disagree or a valid slot has a NaN or infinite score (the message gives how
        many and the first user row).
    """
    s, y, m = _check_lists(scores, labels, mask)
    auc, ndcg = _list_metrics_arrays(s, y, m)
    return {
        "auc": mean_valid(auc),
        "ndcg": mean_valid(ndcg),
        "users": int(np.count_nonzero(~np.isnan(auc))),
    }


def chance_auc_se(labels: Any, mask: Any | None = None) -> float:
    r"""Standard error of the mean list AUC of a scorer that ranks each list at random.

    For a list with :math:`n_1` clicked and :math:`n_0` unclicked valid items and scores drawn
    independently of the labels, the list AUC is the Mann-Whitney statistic :math:`U / (n_1 n_0)`,
    whose null mean is 1/2 and null variance (no ties) is

    .. math:: \sigma^2 = \frac{n_1 + n_0 + 1}{12\, n_1 n_0}.

    Lists are independent, so the mean over the :math:`n` users that :func:`list_metrics` averages
    has standard error :math:`\sqrt{\sum_u \sigma_u^2} / n`. A validation AUC within a few of these
    of 0.5 is what a model that learned nothing scores.

    Parameters
    ----------
    labels, mask
        As for :func:`list_metrics`.

    Returns
    -------
    float
        The standard error; NaN when no user has a clicked and an unclicked item.
    """
    y = _as_bool(labels, "labels")
    m = np.ones(y.shape, dtype=bool) if mask is None else _as_bool(mask, "mask")
    if y.ndim != 2 or m.shape != y.shape:
        raise DataError(f"labels and mask must be 2-D of one shape, got {y.shape} and {m.shape}")
    n1 = np.count_nonzero(y & m, axis=1).astype(np.float64)
    n0 = np.count_nonzero(~y & m, axis=1).astype(np.float64)
    ok = (n1 > 0) & (n0 > 0)
    if not ok.any():
        return float("nan")
    var = (n1[ok] + n0[ok] + 1) / (12 * n1[ok] * n0[ok])
    return float(np.sqrt(var.sum()) / ok.sum())


def mean_valid(values: Any) -> float:
    """Mean of the non-NaN values.

    Parameters
    ----------
    values
        Array-like of floats; NaN marks a user without a defined metric.

    Returns
    -------
    float
        The mean over the non-NaN entries, or NaN (without a warning) if there are none.
    """
    arr = np.asarray(_to_numpy(values), dtype=np.float64).ravel()
    valid = arr[~np.isnan(arr)]
    if valid.size == 0:
        return float("nan")
    return float(valid.mean())


# ------------------------------------------------------------------------------------------------
# Full ranking over all items
# ------------------------------------------------------------------------------------------------


def _as_csr_bool(matrix: Any, shape: tuple[int, ...], name: str) -> sp.csr_matrix:
    """Return ``matrix`` as a canonical boolean CSR matrix of the given shape."""
    if not sp.issparse(matrix):
        raise DataError(f"{name} must be a scipy.sparse matrix, got {type(matrix).__name__}")
    if matrix.shape != shape:
        raise DataError(f"{name} has shape {matrix.shape} but scores have shape {shape}")
    out = sp.csr_matrix(matrix, dtype=bool, copy=True)
    out.sum_duplicates()
    out.eliminate_zeros()
    return out


def _csr_coords(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every stored entry of a CSR matrix."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    return rows, matrix.indices


def _csr_contains(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether each ``(rows[i], cols[i])`` is a stored entry of a canonical CSR matrix."""
    n_cols = matrix.shape[1]
    stored_rows, stored_cols = _csr_coords(matrix)
    keys = stored_rows.astype(np.int64) * n_cols + stored_cols  # sorted: canonical CSR
    query = rows.astype(np.int64) * n_cols + cols
    if len(keys) == 0:
        return np.zeros(query.shape, dtype=bool)
    where = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return keys[where] == query


def full_ranking_per_user(
    scores: Any, truth: Any, exclude: Any | None = None, k: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user Recall@K and NDCG@K over all items, for one chunk of users.

    Each user's items are ranked by descending score after the items in ``exclude`` (the user's
    training clicks) are removed from the ranking (their score is set to ``-inf``; an excluded item
    can never be a hit, even if it is also in ``truth``).

    * Recall@K is the *truncated* recall: hits in the top ``k`` divided by ``min(k, |truth|)``, so
      a perfect ranking scores 1 even when the user has more than ``k`` held-out items.
    * NDCG@K uses binary gains, ``DCG = sum over hits of 1 / log2(rank + 1)``, divided by the ideal
      DCG of ``min(k, |truth|)`` hits at ranks ``1..min(k, |truth|)``.

    Ties are ranked pessimistically: among items with equal scores, the items not in ``truth`` come
    first. A tie at the ``k`` boundary therefore never lets a held-out item in at the expense of an
    item that is not held out, and a constant scorer gets no credit from ties. The result does not
    depend on item ids or on the order of items in the input.

    Parameters
    ----------
    scores
        Float array of shape ``(n_users, n_items)``; all values must be finite. Chunk users to bound
        memory (with ``exclude``, this function makes one copy of the array).
    truth
        ``scipy.sparse`` matrix of shape ``(n_users, n_items)``; non-zero entries are the held-out
        clicked items.
    exclude
        Optional ``scipy.sparse`` matrix of shape ``(n_users, n_items)``; non-zero entries are
        removed from the ranking.
    k
        Cut-off, at least 1. If it exceeds the number of items, all items are ranked.

    Returns
    -------
    recall, ndcg : numpy.ndarray
        Float arrays of shape ``(n_users,)``; NaN for users without any ``truth`` item, so that
        chunks can be concatenated and averaged with :func:`mean_valid`.

    Raises
    ------
    DataError
        If shapes disagree, ``truth``/``exclude`` are not sparse, or a score is NaN or infinite.
    ConfigError
        If ``k`` is not a positive integer.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    s = _to_numpy(scores)
    if s.ndim != 2:
        raise DataError(f"scores must be a 2-D (n_users, n_items) array, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if not np.isfinite(s).all():
        _check_finite(s, np.ones(s.shape, dtype=bool), "scores")
    n_users, n_items = s.shape
    truth_csr = _as_csr_bool(truth, s.shape, "truth")
    if exclude is not None:
        s = s.copy()  # never modify the caller's array
        s[_csr_coords(_as_csr_bool(exclude, s.shape, "exclude"))] = -np.inf

    n_truth = np.diff(truth_csr.indptr)
    recall = np.full(n_users, np.nan)
    ndcg = np.full(n_users, np.nan)
    if n_items == 0 or n_users == 0:
        return recall, ndcg
    kk = min(int(k), n_items)
    rows = np.arange(n_users)[:, None]

    # The kk highest scores (arbitrary membership among ties at the boundary; corrected below).
    top = np.argpartition(s, n_items - kk, axis=1)[:, n_items - kk :]
    top_scores = s[rows, top]
    top_truth = _csr_contains(truth_csr, np.broadcast_to(rows, top.shape), top)
    threshold = top_scores.min(axis=1, keepdims=True)

    # Sort the candidates by descending score, non-truth items first within a tie.
    order = np.lexsort((top_truth, -top_scores), axis=1)
    top_scores = np.take_along_axis(top_scores, order, axis=1)
    top_truth = np.take_along_axis(top_truth, order, axis=1)

    # Every item scoring above the threshold is a candidate, so candidate positions are exact
    # there. At the threshold, non-truth items left out of the candidates still rank ahead of the
    # tied truth items: shift those truth items back by the number left out.
    at_threshold = top_scores == threshold
    truth_rows, truth_cols = _csr_coords(truth_csr)
    truth_tied = np.bincount(
        truth_rows,
        weights=s[truth_rows, truth_cols] == threshold[truth_rows, 0],
        minlength=n_users,
    )
    tied_all = np.count_nonzero(s == threshold, axis=1)
    nontruth_tied_all = (tied_all - truth_tied.astype(np.int64))[:, None]
    nontruth_tied_top = np.count_nonzero(at_threshold & ~top_truth, axis=1)[:, None]
    shift = np.where(at_threshold, nontruth_tied_all - nontruth_tied_top, 0)
    rank = np.arange(1, kk + 1) + shift
    hit = top_truth & (rank <= kk) & np.isfinite(top_scores)

    discount = np.where(hit, 1.0 / np.log2(np.minimum(rank, kk) + 1.0), 0.0)
    ideal_n = np.minimum(n_truth, k)
    ideal = _discount_prefix(kk)[np.minimum(ideal_n, kk)]
    has_truth = n_truth > 0
    recall[has_truth] = hit.sum(axis=1)[has_truth] / ideal_n[has_truth]
    ndcg[has_truth] = discount.sum(axis=1)[has_truth] / ideal[has_truth]
    return recall, ndcg


def full_ranking_metrics(
    scores: Any, truth: Any, exclude: Any | None = None, k: int = 20
) -> dict[str, float]:
    """Recall@K and NDCG@K over all items, averaged over users with at least one held-out item.

    See :func:`full_ranking_per_user` for the definitions (truncated recall, binary-gain NDCG,
    pessimistic ties, excluded training clicks). For many users, call that function on chunks of
    users, concatenate the per-user arrays and average them with :func:`mean_valid`.

    Parameters
    ----------
    scores
        Float array of shape ``(n_users, n_items)``.
    truth
        ``scipy.sparse`` matrix of shape ``(n_users, n_items)`` of held-out clicked items.
    exclude
        Optional ``scipy.sparse`` matrix of the same shape of items removed from the ranking.
    k
        Cut-off, at least 1.

    Returns
    -------
    dict
        ``{"recall@k": ..., "ndcg@k": ..., "users": ...}`` with ``k`` replaced by its value (e.g.
        ``"recall@20"``); ``users`` counts the users with at least one held-out item.
    """
    recall, ndcg = full_ranking_per_user(scores, truth, exclude, k)
    return {
        f"recall@{k}": mean_valid(recall),
        f"ndcg@{k}": mean_valid(ndcg),
        "users": int(np.count_nonzero(~np.isnan(recall))),
    }


# ------------------------------------------------------------------------------------------------
# Ground truth (simulated data)
# ------------------------------------------------------------------------------------------------


def expected_auc(scores: Any, probs: Any, mask: Any | None = None) -> np.ndarray:
    """Per-user AUC expected under the true click probabilities.

    If every valid item ``i`` of a user were clicked independently with probability ``p_i``, the
    user's AUC in expectation (weighting each ordered pair by the chance that it is a
    (clicked, unclicked) pair) is::

        sum_{i != j} p_i (1 - p_j) ([s_i > s_j] + 0.5 [s_i == s_j])
        -----------------------------------------------------------
                      sum_{i != j} p_i (1 - p_j)

    With 0/1 probabilities this is the ordinary per-user AUC of :func:`list_auc`; with constant
    scores it is 0.5. On simulated data, pass all items the user did not click in training as valid
    slots to get the true AUC over unseen items. Computed in ``O(L log L)`` per user from one sort
    and prefix sums, vectorized over users.

    Parameters
    ----------
    scores
        Float array of shape ``(n_users, L)``.
    probs
        Float array of shape ``(n_users, L)`` of true click probabilities in ``[0, 1]``.
    mask
        Boolean array of shape ``(n_users, L)``: True where the slot holds a real item. Defaults to
        all True.

    Returns
    -------
    numpy.ndarray
        Float array of shape ``(n_users,)``; NaN where the denominator is zero (fewer than two
        valid items, or every probability 0, or every probability 1).

    Raises
    ------
    DataError
        If the shapes disagree, a valid score is not finite, or a valid probability lies outside
        ``[0, 1]``.
    """
    s = _to_numpy(scores)
    p = _to_numpy(probs).astype(np.float64, copy=False)
    if p.shape != s.shape:
        raise DataError(f"probs have shape {p.shape} but scores have shape {s.shape}")
    s, _, m = _check_lists(s, np.zeros(p.shape, dtype=bool), mask)
    with np.errstate(invalid="ignore"):
        bad = m & ~((p >= 0.0) & (p <= 1.0))
    if bad.any():
        first_row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise DataError(
            f"probs contain {int(bad.sum())} value(s) outside [0, 1] at valid slots; "
            f"the first is in user row {first_row}"
        )
    p = np.where(m, p, 0.0)
    q = np.where(m, 1.0 - p, 0.0)

    order, start, end, _ = _sorted_tie_groups(s, m)
    ps = np.take_along_axis(p, order, axis=1)
    qs = np.take_along_axis(q, order, axis=1)
    q_cum = np.concatenate((np.zeros((s.shape[0], 1)), np.cumsum(qs, axis=1)), axis=1)
    q_below = np.take_along_axis(q_cum, start, axis=1)
    q_group = np.take_along_axis(q_cum, end + 1, axis=1) - q_below
    numerator = (ps * (q_below + 0.5 * (q_group - qs))).sum(axis=1)
    q_total = q_cum[:, -1:]
    denominator = (ps * (q_total - qs)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = np.clip(numerator / denominator, 0.0, 1.0)
    return np.where(denominator > 0, auc, np.nan)
