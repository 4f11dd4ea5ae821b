"""The quality of sampled negatives, measured against the simulator's ground truth."""

from __future__ import annotations

import numpy as np

from reinforcens.data.ground_truth import GroundTruth
from reinforcens.data.prepared import PreparedDataset


def negative_quality(
    data: PreparedDataset, users: np.ndarray, items: np.ndarray, truth: GroundTruth | None = None
) -> dict[str, float]:
    """How often sampled negatives are really negatives.

    Parameters
    ----------
    data
        The prepared dataset (its ``ground_truth.npz`` is used unless ``truth`` is given).
    users, items
        Internal ids of sampled negatives.

    Returns
    -------
    dict
        ``mean_true_prob``: mean true click probability of the negatives; ``false_negative_rate``: the
        share of negatives whose true click probability is at least the median true click probability of
        the training positives (items the user would click about as readily as a typical positive);
        ``exposed_share``: the share that are exposed-but-unclicked training items of the user.
        Empty if there is no ground truth.
    """
    if truth is None:
        if data.ground_truth_path is None:
            return {}
        truth = GroundTruth.load(data.ground_truth_path)
    raw_u = data.user_ids.astype(np.int64)
    raw_i = data.item_ids.astype(np.int64)
    p_neg = truth.click_prob(raw_u[users], raw_i[items])
    pos_u = data.train_clicks.users()
    p_pos = truth.click_prob(raw_u[pos_u], raw_i[data.train_clicks.indices])
    threshold = float(np.median(p_pos))
    return {
        "mean_true_prob": float(np.mean(p_neg)),
        "false_negative_rate": float(np.mean(p_neg >= threshold)),
        "positive_median_prob": threshold,
        "exposed_share": float(np.mean(data.train_exposures.contains(users, items))),
    }
