"""Pure loss functions of training: BPR for the recommender, REINFORCE for learned samplers."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """``sum -log sigmoid(r_ui - r_uj)`` over the batch (the paper's equation 1, summed)."""
    return -F.logsigmoid(pos_scores - neg_scores).sum()


def l2_penalty(*rows: torch.Tensor) -> torch.Tensor:
    """``0.5 * sum ||e||^2`` over the embedding rows looked up in the batch."""
    return 0.5 * sum(r.pow(2).sum() for r in rows)


def reinforce_loss(log_probs: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Policy-gradient surrogate ``-sum reward * log pi(j|u)`` (minimised; rewards detached)."""
    return -(rewards.detach() * log_probs).sum()
