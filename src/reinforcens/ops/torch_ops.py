"""The torch backend: every operation of :class:`reinforcens.ops.base.Ops` as vectorized torch
operations, on any device (nothing waits for the device)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from reinforcens.losses import bpr_with_grads
from reinforcens.mmd import mmd_reward
from reinforcens.ops.base import Ops, SoftmaxChoice

if TYPE_CHECKING:
    from reinforcens.models.base import Tables
    from reinforcens.optim import GMFOptimizer, SGDOptimizer

#: upper bound (exclusive) of the integer draws reduced modulo the number of allowed items
DRAW_RANGE = 1 << 62


def candidate_scores(
    tables: Tables, users: torch.Tensor, items: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores (B, N) ``h . (P_u * Q_i)``, user rows (B, K) and item rows (B, N, K) of candidates
    (what :meth:`reinforcens.models.base.Recommender.candidate_scores` computes)."""
    pu = tables.user.index_select(0, users)
    q = tables.item.index_select(0, items.reshape(-1)).view(*items.shape, tables.item.shape[1])
    scores = torch.linalg.vecdot(q, (pu * tables.h).unsqueeze(1))
    return scores, pu, q


@torch.no_grad()
def list_scores(tables: Tables, users: torch.Tensor, items: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """Scores (n, L) ``h . (P_u * Q_i)`` of item lists, ``chunk`` users at a time so that the gathered
    item rows stay in cache (what :meth:`reinforcens.models.base.Recommender.score_lists` computes)."""
    out = torch.empty(items.shape, dtype=tables.h.dtype, device=items.device)
    for s in range(0, users.shape[0], chunk):
        pu = tables.user.index_select(0, users[s : s + chunk]) * tables.h
        rows = items[s : s + chunk]
        q = tables.item.index_select(0, rows.reshape(-1)).view(*rows.shape, tables.item.shape[1])
        out[s : s + chunk] = torch.linalg.vecdot(q, pu.unsqueeze(1))
    return out


class TorchOps(Ops):
    """The torch implementations (any device); see :class:`reinforcens.ops.base.Ops`."""

    name = "torch"
    compiled = False

    # ------------------------------------------------------------------ item sets
    def is_clicked(self, data, users, items):
        return data.clicks.contains(users * data.n_items + items)

    def is_exposed(self, data, users, items):
        return data.exposures.contains(users * data.n_items + items)

    def sample_uniform(self, data, users, n, generator, exclude_exposed=False):
        """Exact and without rejection: a uniform rank ``k`` among the user's allowed items is mapped to
        the ``k``-th allowed item with one search (see :func:`reinforcens.training_data._gap_keys`)."""
        if exclude_exposed:
            gaps, indptr, free = data.blocked_gaps, data.blocked_indptr, data.blocked_free
        else:
            gaps, indptr, free = data.click_gaps, data.click_indptr, data.click_free
        u = users.unsqueeze(1)
        # a 62-bit draw modulo the number of allowed items: the bias is below 2**-40
        k = torch.randint(0, DRAW_RANGE, (users.numel(), n), device=users.device, generator=generator)
        k = k.remainder_(free.index_select(0, users).unsqueeze(1))
        below = gaps.count_le(k + u * data.n_items)
        return below.sub_(indptr.index_select(0, users).unsqueeze(1)).add_(k)

    def sample_exposed(self, data, users, n, generator):
        start = data.exp_indptr.index_select(0, users)
        count = data.exp_indptr.index_select(0, users + 1).sub_(start)
        has = count > 0
        k = torch.randint(0, DRAW_RANGE, (users.numel(), n), device=users.device, generator=generator)
        total = data.exposures.n
        if total == 0:
            return torch.full_like(k, -1), has
        idx = k.remainder_(count.clamp(min=1).unsqueeze(1)).add_(start.unsqueeze(1)).clamp_(max=total - 1)
        items = data.exposures.keys.index_select(0, idx.view(-1)).view(idx.shape)
        items = items.sub_(users.unsqueeze(1) * data.n_items)
        return items.masked_fill_(~has.unsqueeze(1), -1), has

    def sample_sets(self, indptr, flat, users, n, generator):
        """Floyd's algorithm, vectorised over the rows: for ``t = 0 .. n - 1`` a rank ``r`` uniform in
        ``[0, m - n + t]`` (``m`` the set's size), replaced by ``m - n + t`` if already drawn; the ``n``
        ranks are a uniform ``n``-subset. Rows of a smaller set take ``n`` ranks uniform in ``[0, m)``."""
        start = indptr[users]
        size = indptr[users + 1] - start
        b = users.shape[0]
        u = torch.rand((b, n), generator=generator, device=users.device, dtype=torch.float64)
        with_repl = (u * size.unsqueeze(1)).long()
        ranks = torch.empty((b, n), dtype=torch.int64, device=users.device)
        for t in range(n):
            top = size - n + t  # the largest rank of step t (negative where the set is too small)
            r = (u[:, t] * (top + 1).clamp(min=1)).long()
            seen = (ranks[:, :t] == r.unsqueeze(1)).any(1) if t else torch.zeros_like(r, dtype=torch.bool)
            ranks[:, t] = torch.where(seen, top, r)
        ranks = torch.where((size >= n).unsqueeze(1), ranks, with_repl)
        ranks = torch.minimum(ranks, (size - 1).clamp(min=0).unsqueeze(1))
        if flat.numel() == 0:
            return torch.full((b, n), -1, dtype=torch.int64, device=users.device), size
        items = flat[(start.unsqueeze(1) + ranks).clamp(max=flat.numel() - 1)]
        return torch.where((size > 0).unsqueeze(1), items, -1), size

    def sample_candidates(self, data, users, n, n_exp, exclude_exposed, generator, flags=True):
        """:meth:`sample_uniform` for all ``n`` slots, then :meth:`sample_exposed` for the last ``n_exp``
        (kept where the user has exposures); the flags are looked up afterwards."""
        cands = self.sample_uniform(data, users, n, generator, exclude_exposed=exclude_exposed)
        if n_exp > 0:
            exp, has = self.sample_exposed(data, users, n_exp, generator)
            cands[:, n - n_exp :] = torch.where(has.unsqueeze(1), exp, cands[:, n - n_exp :])
        if not flags:
            return cands, None
        return cands, self.is_exposed(data, users.unsqueeze(1), cands)

    # ------------------------------------------------------------------ candidate scoring
    @torch.no_grad()
    def score_candidates(self, tables, users, cands):
        return candidate_scores(tables, users, cands)[0]

    @torch.no_grad()
    def best_candidate(self, tables, users, cands):
        return candidate_scores(tables, users, cands)[0].argmax(dim=1, keepdim=True)

    @torch.no_grad()
    def loss_softmax_choice(self, tables, users, positives, cands, rho, generator):
        """Scores of the positive and the candidates in one gather, the weights of
        :func:`reinforcens.samplers.softmax.softmax_weights`, then a Gumbel-max draw."""
        from reinforcens.samplers.softmax import softmax_weights

        if cands.shape[1] < 2:
            raise ValueError(f"loss_softmax_choice: {cands.shape[1]} candidate(s), at least 2 needed")
        scores = candidate_scores(tables, users, torch.cat([positives.unsqueeze(1), cands], 1))[0]
        log_w = softmax_weights(scores[:, 0], scores[:, 1:], rho)
        u = torch.rand(log_w.shape, dtype=log_w.dtype, device=log_w.device, generator=generator)
        neg_gumbel = u.clamp_(min=1e-30).log_().neg_().log_()
        return (log_w - neg_gumbel).argmax(dim=1, keepdim=True)

    @torch.no_grad()
    def top_n_choice(self, tables, users, cands, n, generator):
        """A stable descending sort of the scores (ties: the earlier position first), then a uniform
        rank in ``[0, n)`` per row from ``torch.randint``."""
        if not 1 <= n <= cands.shape[1]:
            raise ValueError(f"top_n_choice: n = {n} is not in [1, {cands.shape[1]}]")
        scores = candidate_scores(tables, users, cands)[0]
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        rank = torch.randint(0, n, (users.numel(), 1), device=cands.device, generator=generator)
        return order.gather(1, rank)

    @torch.no_grad()
    def softmax_choice(self, tables, users, cands, temperature, generator):
        """Gumbel-max: ``argmax(log p + G)``, ``G = -log(-log U)`` with ``U ~ U(0, 1)``."""
        logits, pu, q = candidate_scores(tables, users, cands)
        if temperature != 1.0:
            logits = logits.div_(temperature)
        log_p = torch.log_softmax(logits, dim=1)
        u = torch.rand(log_p.shape, dtype=log_p.dtype, device=log_p.device, generator=generator)
        neg_gumbel = u.clamp_(min=1e-30).log_().neg_().log_()
        choice = (log_p - neg_gumbel).argmax(dim=1, keepdim=True)
        return SoftmaxChoice(log_p, choice, user_rows=pu, item_rows=q)

    @torch.no_grad()
    def variance_choice(self, tables, users, positives, cands, cand_history, pos_history, weight):
        """The criterion in the scores' dtype; the standard deviation by ``Tensor.std(correction=0)``."""
        scores = candidate_scores(tables, users, cands)[0]
        pos = candidate_scores(tables, users, positives.unsqueeze(1))[0]
        crit = torch.sigmoid(scores - pos)
        if weight != 0.0 and cand_history.shape[2] > 0:
            past = torch.sigmoid(cand_history.to(crit.dtype) - pos_history.to(crit.dtype).unsqueeze(1))
            crit = crit.add_(past.std(dim=2, correction=0), alpha=weight)
        return crit.argmax(dim=1, keepdim=True)

    @torch.no_grad()
    def softmax_subset(self, tables, users, cands, k, temperature, generator):
        """Gumbel-top-k: ``topk(z / T + G)``, ``G = -log(-log U)`` with ``U ~ U(0, 1)``."""
        if not 1 <= k <= cands.shape[1]:
            raise ValueError(f"softmax_subset: k = {k} is not in [1, {cands.shape[1]}]")
        keys = candidate_scores(tables, users, cands)[0]
        if temperature != 1.0:
            keys = keys.div_(temperature)
        u = torch.rand(keys.shape, dtype=keys.dtype, device=keys.device, generator=generator)
        keys = keys.sub_(u.clamp_(min=1e-30).log_().neg_().log_())
        return keys.topk(k, dim=1).indices

    @torch.no_grad()
    def score_lists(self, tables, users, items, chunk: int = 128):
        """Works through ``chunk`` users at a time so that the gathered item rows stay in cache."""
        device = tables.h.device
        users = torch.as_tensor(np.asarray(users), device=device)
        items = torch.as_tensor(np.asarray(items), device=device)
        return list_scores(tables, users, items, chunk).double().cpu().numpy()

    # ------------------------------------------------------------------ fused steps
    def step_rows(self, opt: GMFOptimizer, users, user_grads, items, item_grads, h_grad):
        """Repeated rows' gradients are summed (:meth:`reinforcens.optim.RowwiseAdam.step`), then the
        rows' moments and weights are gathered, updated and written back."""
        bc1, bc2 = opt._advance()
        b1, b2 = opt.betas
        step_size = opt.lr * math.sqrt(bc2) / bc1
        with torch.no_grad():
            opt.user.step(users, user_grads, step_size, b1, b2, opt.eps)
            opt.item.step(items, item_grads, step_size, b1, b2, opt.eps)
            if h_grad is not None and opt.model.trains_h:
                _step_h(opt, h_grad, bc1, bc2)

    def bpr_step(self, opt: GMFOptimizer, users, pos, neg, l2):
        with torch.no_grad():
            loss, items, grad_pu, grad_q, grad_h, neg_scores = _bpr_grads(opt.model, users, pos, neg, l2)
            self.step_rows(opt, users, grad_pu, items, grad_q, grad_h)
        return loss, neg_scores

    def sgd_step_rows(self, opt: SGDOptimizer, users, user_grads, items, item_grads, h_grad):
        """Repeated rows' gradients are summed (:meth:`reinforcens.optim.RowwiseSGD.step`), then the rows
        are gathered, moved by ``-lr`` times their gradient and written back."""
        opt._advance()
        with torch.no_grad():
            opt.user.step(users, user_grads, opt.lr)
            opt.item.step(items, item_grads, opt.lr)
            if h_grad is not None and opt.model.trains_h:
                opt.model.h.data.add_(h_grad, alpha=-opt.lr)

    def bpr_sgd_step(self, opt: SGDOptimizer, users, pos, neg, l2):
        with torch.no_grad():
            loss, items, grad_pu, grad_q, grad_h, neg_scores = _bpr_grads(opt.model, users, pos, neg, l2)
            self.sgd_step_rows(opt, users, grad_pu, items, grad_q, grad_h)
        return loss, neg_scores

    def reinforce_step(self, opt: GMFOptimizer, users, cands, drawn, rewards, l2, temperature):
        """The gradients by the chain rule through ``z`` from the rows kept by :meth:`softmax_choice`."""
        choice, pu, q = drawn.choice, drawn.user_rows, drawn.item_rows
        assert pu is not None and q is not None, "a draw of the torch backend keeps its rows"
        b, n, k = q.shape
        h = opt.model.h.detach()
        with torch.no_grad():
            rewards = rewards.to(q.dtype)
            if temperature != 1.0:
                rewards = rewards / temperature
            gz = drawn.log_softmax.exp().mul_(rewards.unsqueeze(1))
            gz.scatter_add_(1, choice, rewards.unsqueeze(1).neg())
            grad_q = gz.unsqueeze(2) * (pu * h).unsqueeze(1)
            gq = torch.bmm(gz.unsqueeze(1), q).squeeze(1)
            grad_h = torch.linalg.vecdot(pu, gq, dim=0)
            grad_pu = gq.mul_(h)
            if l2 > 0:
                grad_pu.add_(pu, alpha=l2)
                flat = torch.arange(b, device=q.device).mul_(n).add_(choice.squeeze(1))
                grad_q = grad_q.view(b * n, k)
                grad_q.index_add_(0, flat, q.view(b * n, k).index_select(0, flat), alpha=l2)
            self.step_rows(opt, users, grad_pu, cands, grad_q, grad_h)

    # ------------------------------------------------------------------ rewards
    def mmd_reward(self, generated: torch.Tensor, exposed: torch.Tensor, bandwidths: Sequence[float]):
        return mmd_reward(generated, exposed, bandwidths, compiled=False)


def _bpr_grads(model, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, l2: float):
    """The BPR loss and gradients of a batch (:func:`reinforcens.losses.bpr_with_grads`) from the
    model's rows: ``(loss, items, grad_pu, grad_q, grad_h, neg_scores)``, ``items`` the positives then
    the negatives (the rows ``grad_q`` is of)."""
    items = torch.cat([pos, neg])
    pu = model.user.weight.index_select(0, users)
    q = model.item.weight.index_select(0, items)
    loss, grad_pu, grad_q, grad_h, neg_scores = bpr_with_grads(pu, q, model.h, l2)
    return loss, items, grad_pu, grad_q, grad_h, neg_scores


def _step_h(opt: GMFOptimizer, grad: torch.Tensor, bc1: float, bc2: float) -> None:
    """Dense Adam on ``h`` (``eps`` added after the bias correction of ``v``)."""
    b1, b2 = opt.betas
    m, v = opt.h_moments[0], opt.h_moments[1]
    m.lerp_(grad, 1.0 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
    denom = (v.sqrt() / math.sqrt(bc2)).add_(opt.eps)
    opt.model.h.data.addcdiv_(m, denom, value=-opt.lr / bc1)
