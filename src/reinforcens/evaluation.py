"""Evaluate any scorer on a prepared dataset: the paper's list metrics, full ranking, ground truth.

A scorer is anything with ``score(users, items) -> scores`` (``items`` of shape (n, L), scores of the
same shape) and ``score_all(users) -> (n, n_items)``: :class:`ItemPop` here, trained models later.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import scipy.sparse as sp

from reinforcens import metrics
from reinforcens.data.prepared import PreparedDataset
from reinforcens.data.split import EvalLists


class Scorer(Protocol):
    """What evaluation needs of a model."""

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of ``items`` (shape (n, L)) for ``users`` (shape (n,))."""
        ...

    def score_all(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item for ``users``: shape (n, n_items)."""
        ...


class ItemPop:
    """Rank items by their number of training clicks (the paper's ItemPop baseline)."""

    def __init__(self, popularity: np.ndarray):
        self.popularity = np.asarray(popularity, dtype=np.float64)

    @classmethod
    def fit(cls, data: PreparedDataset) -> ItemPop:
        return cls(data.item_popularity())

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.popularity[np.maximum(items, 0)]

    def score_all(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(users), self.popularity.size))


def list_scores(scorer: Scorer, lists: EvalLists) -> np.ndarray:
    """Score a split's lists; empty slots get score 0 (they are masked out of every metric)."""
    scores = np.asarray(scorer.score(lists.users, np.maximum(lists.items, 0)), dtype=np.float64)
    return np.where(lists.mask, scores, 0.0)


def evaluate_lists(scorer: Scorer, lists: EvalLists) -> dict[str, float]:
    """The paper's per-user list AUC and NDCG, averaged over users with a click and a non-click."""
    return metrics.list_metrics(list_scores(scorer, lists), lists.labels, lists.mask)


def auc_by_negative_kind(scores: np.ndarray, lists: EvalLists) -> dict[str, float]:
    """The list AUC against each kind of negative alone: ``auc_exposed`` over the pairs of a click and
    an unclicked exposure of the session, ``auc_padded`` over the pairs of a click and a padding item
    (drawn uniformly); each averaged over the users whose list has such a pair."""
    from reinforcens.data.split import EXPOSED, PADDED

    out = {}
    for name, kind in (("auc_exposed", EXPOSED), ("auc_padded", PADDED)):
        keep = lists.mask & (lists.labels | (lists.kind == kind))
        out[name] = metrics.list_metrics(scores, lists.labels, keep)["auc"]
    return out


def held_out_clicks(lists: EvalLists, n_users: int, n_items: int) -> sp.csr_matrix:
    """Every click of the split's held-out sessions (:attr:`EvalLists.clicks`), as a 0/1 matrix; for
    lists made without them, the clicks the lists hold."""
    if lists.clicks is not None:
        return lists.clicks.to_csr()
    sel = lists.labels
    rows = np.broadcast_to(lists.users[:, None], lists.items.shape)[sel]
    cols = lists.items[sel]
    return sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n_users, n_items))


def evaluate_full_ranking(
    scorer: Scorer, data: PreparedDataset, split: str = "test", k: int = 20, chunk: int = 2048
) -> dict[str, float]:
    """Recall@k and NDCG@k of every click of the split's held-out sessions, ranking all items.

    The truth is all clicks of each user's held-out session (:func:`held_out_clicks`), not only those
    its fixed-length list kept. The user's training clicks are excluded from the ranking, and for
    ``split="test"`` also every validation click.
    """
    lists = data.valid if split == "valid" else data.test
    truth = held_out_clicks(lists, data.n_users, data.n_items)
    exclude = data.train_clicks.to_csr()
    if split == "test":
        exclude = exclude + held_out_clicks(data.valid, data.n_users, data.n_items)
    exclude = exclude.tocsr()
    users = lists.users
    recalls, ndcgs = [], []
    for start in range(0, users.size, chunk):
        u = users[start : start + chunk]
        scores = np.asarray(scorer.score_all(u), dtype=np.float64)
        r, n = metrics.full_ranking_per_user(scores, truth[u], exclude[u], k=k)
        recalls.append(r)
        ndcgs.append(n)
    recall = np.concatenate(recalls) if recalls else np.zeros(0)
    ndcg = np.concatenate(ndcgs) if ndcgs else np.zeros(0)
    return {
        f"recall@{k}": metrics.mean_valid(recall),
        f"ndcg@{k}": metrics.mean_valid(ndcg),
    }


def evaluate_ground_truth(
    scorer: Scorer, data: PreparedDataset, users: np.ndarray | None = None, chunk: int = 1024
) -> dict[str, float]:
    """Expected AUC against the simulator's true click probabilities.

    For each user, over all items the user did not click in training, the AUC the scorer would get if
    each item were clicked with its true probability (see :func:`reinforcens.metrics.expected_auc`).
    Only for prepared datasets that carry a ``ground_truth.npz``.
    """
    from reinforcens.data.ground_truth import GroundTruth

    path = data.ground_truth_path
    if path is None:
        return {}
    truth = GroundTruth.load(path)
    raw_items = data.item_ids.astype(np.int64)
    raw_users = data.user_ids.astype(np.int64)
    if users is None:
        users = np.arange(data.n_users)
    train = data.train_clicks.to_csr()
    values = []
    for start in range(0, users.size, chunk):
        u = users[start : start + chunk]
        probs = truth.prob_matrix(raw_users[u])[:, raw_items]
        scores = np.asarray(scorer.score_all(u), dtype=np.float64)
        mask = np.asarray(train[u].todense()) == 0
        values.append(metrics.expected_auc(scores, probs, mask))
    return {"true_auc": metrics.mean_valid(np.concatenate(values))}


def evaluate(
    scorer: Scorer,
    data: PreparedDataset,
    splits: tuple[str, ...] = ("valid", "test"),
    full_k: int | None = 20,
    ground_truth: bool = True,
) -> dict[str, dict[str, float]]:
    """All metrics of ``scorer`` for each split: ``{split: {"auc", "ndcg", "users", ...}}``;
    ``auc_chance_se`` is the standard error of the AUC a random ranking gets on the split's lists
    (:func:`reinforcens.metrics.chance_auc_se`), ``auc_exposed`` and ``auc_padded`` the AUC against
    each kind of negative alone (:func:`auc_by_negative_kind`)."""
    out: dict[str, dict[str, float]] = {}
    for split in splits:
        lists = data.valid if split == "valid" else data.test
        scores = list_scores(scorer, lists)
        res: dict[str, float] = dict(metrics.list_metrics(scores, lists.labels, lists.mask))
        res["auc_chance_se"] = metrics.chance_auc_se(lists.labels, lists.mask)
        res.update(auc_by_negative_kind(scores, lists))
        if full_k:
            res.update(evaluate_full_ranking(scorer, data, split, k=full_k))
        out[split] = res
    if ground_truth and data.ground_truth_path is not None and "test" in out:
        out["test"].update(evaluate_ground_truth(scorer, data))
    return out
