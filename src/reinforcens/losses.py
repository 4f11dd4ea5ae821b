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


def mixed_negative(layers: torch.Tensor, items: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The layer embeddings of synthetic negatives (MixGCF's mixing):

    .. math::

        \\tilde q_b^{(h)} = \\sum_c w_{bhc} \\, E^{(h)}_{j_{bhc}}

    Parameters
    ----------
    layers
        ``(n_items, H, K)``: every item's layer embeddings ``E^(h)``
        (:meth:`reinforcens.models.base.Recommender.layer_tables`), differentiable or not.
    items, weights
        ``(B, H, C)``: the rows ``j_bhc`` mixed into layer ``h`` of negative ``b`` and their weights.

    Returns
    -------
    torch.Tensor
        ``(B, H, K)``; the negative's item embedding is the pooling (mean) over ``H``.
    """
    h = torch.arange(layers.shape[1], device=items.device).view(1, -1, 1)
    rows = layers[items, h]  # (B, H, C, K)
    return (weights.to(rows.dtype).unsqueeze(-1) * rows).sum(2)


def reinforce_loss(log_probs: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Policy-gradient surrogate ``-sum reward * log pi(j|u)`` (minimised; rewards detached)."""
    return -(rewards.detach() * log_probs).sum()


def bpr_with_grads(
    pu: torch.Tensor,
    q: torch.Tensor,
    h: torch.Tensor,
    l2: float,
    grad_q: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The GMF BPR loss of a batch and its gradients, computed by hand (no autograd).

    With ``x_b = h . (p_u * (q_i - q_j))`` the loss is
    ``sum_b softplus(-x_b) + 0.5 * l2 * (||p_u||^2 + ||q_i||^2 + ||q_j||^2)`` (:func:`bpr_loss` plus
    ``l2`` times :func:`l2_penalty`), and with ``s_b = sigmoid(-x_b)``:

    * ``dL/dp_u = -s_b * h * (q_i - q_j) + l2 * p_u``
    * ``dL/dq_i = -s_b * h * p_u + l2 * q_i`` and ``dL/dq_j = s_b * h * p_u + l2 * q_j``
    * ``dL/dh = -sum_b s_b * p_u * (q_i - q_j)``

    Parameters
    ----------
    pu
        User rows, shape (B, K).
    q
        Positive item rows stacked over negative item rows, shape (2B, K).
    h
        GMF output weights, shape (K,).
    l2
        L2 weight on the rows.
    grad_q
        Optional (2B, K) output buffer of the item-row gradients.

    Returns
    -------
    loss : torch.Tensor
        0-dim, the summed loss.
    grad_pu, grad_q, grad_h : torch.Tensor
        Gradients of the user rows (B, K), of the item rows (2B, K, aligned with ``q``) and of ``h``.
    neg_scores : torch.Tensor
        The scores ``h . (p_u * q_j)`` of the negatives, shape (B,).
    """
    b = pu.shape[0]
    qi, qj = q[:b], q[b:]
    ph = pu * h
    d = qi - qj
    neg_scores = torch.linalg.vecdot(ph, qj)
    neg_x = neg_scores - torch.linalg.vecdot(ph, qi)
    s = torch.sigmoid(neg_x)
    loss = F.softplus(neg_x).sum()
    grad_h = torch.mv((pu * d).T, s).neg_()
    s = s.unsqueeze(1)
    hd = d.mul_(h)
    if grad_q is None:
        grad_q = torch.empty_like(q)
    gi, gj = grad_q[:b], grad_q[b:]
    if l2 > 0:
        flat_p, flat_q = pu.reshape(-1), q.reshape(-1)
        loss = loss + 0.5 * l2 * (torch.dot(flat_p, flat_p) + torch.dot(flat_q, flat_q))
        torch.mul(q, l2, out=grad_q)
        gi.addcmul_(s, ph, value=-1.0)
        gj.addcmul_(s, ph)
        grad_pu = torch.addcmul(pu * l2, s, hd, value=-1.0)
    else:
        torch.mul(ph, s, out=gj)
        torch.neg(gj, out=gi)
        grad_pu = hd.mul_(s).neg_()
    return loss, grad_pu, grad_q, grad_h, neg_scores
