from __future__ import annotations

import numpy as np

from reinforcens.data.ground_truth import GroundTruth
from reinforcens.quality import negative_quality


def test_negative_quality_against_direct_computation(tiny_prepared):
    data = tiny_prepared
    truth = GroundTruth.load(data.ground_truth_path)
    rng = np.random.default_rng(0)
    users = rng.integers(0, data.n_users, 500)
    items = rng.integers(0, data.n_items, 500)
    q = negative_quality(data, users, items)
    p = np.array([truth.click_prob(np.array([int(data.user_ids[u])]), np.array([int(data.item_ids[i])]))[0]
                  for u, i in zip(users, items, strict=True)])
    assert abs(q["mean_true_prob"] - p.mean()) < 1e-9
    assert abs(q["false_negative_rate"] - np.mean(p >= q["positive_median_prob"])) < 1e-12
    # exposed-unclicked pairs are counted as exposed, and only those
    eu = data.train_exposures.users()[:50]
    ei = data.train_exposures.indices[:50]
    assert negative_quality(data, eu, ei)["exposed_share"] == 1.0
    clicked = negative_quality(data, data.train_clicks.users(), data.train_clicks.indices)
    assert clicked["exposed_share"] == 0.0
    # the training positives themselves: half of them are at or above their own median
    assert clicked["false_negative_rate"] >= 0.5
