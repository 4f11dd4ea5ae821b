"""The operations of one rank of a data-parallel run: a backend's :class:`~reinforcens.ops.base.Ops`
whose update steps are synchronised across ranks (:mod:`reinforcens.parallel`).

Every draw, membership test, candidate choice and reward runs on this rank's share of the batch alone.
The steps that change shared state gather their inputs from every rank first and then run the wrapped
backend's step on the concatenated batch (in rank order, i.e. in the order of the one-process batch):

* :meth:`bpr_step`: the (user, positive, negative) triples; it returns the whole batch's loss and this
  rank's negatives' pre-step scores;
* :meth:`reinforce_step`: users, candidates, the draw (its log-softmax, choice and the rows it gathered)
  and the rewards;
* :meth:`step_rows`: rows and their gradients (``h``'s gradient is summed);
* :meth:`bpr_sgd_step` and :meth:`sgd_step_rows`: the same with plain SGD (``--optimizer sgd``);
* :meth:`all_sum`: a sum over the ranks, e.g. of the statistics a learned sampler's baseline is the mean
  of.

So every rank takes, on the same state, the step that one process takes at batch ``ranks * B``, and the
ranks stay identical; what is split between them is the sampling, where DNS and the learned samplers
spend their time. Autograd optimizers sum their gradients with :meth:`all_sum`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from reinforcens.ops.base import Ops, SoftmaxChoice

if TYPE_CHECKING:
    from reinforcens.models.base import Tables
    from reinforcens.optim import GMFOptimizer
    from reinforcens.parallel import Parallel
    from reinforcens.training_data import TrainingData


class DistributedOps(Ops):
    """``inner``'s operations with update steps synchronised over ``parallel``'s ranks (module docstring).

    Parameters
    ----------
    inner
        The backend's operations.
    parallel
        The ranks (:class:`reinforcens.parallel.Parallel`).
    """

    def __init__(self, inner: Ops, parallel: Parallel):
        self.inner = inner
        self.parallel = parallel
        self.name = inner.name  # type: ignore[misc]  # the backend it runs
        self.compiled = inner.compiled  # type: ignore[misc]
        self.ranks = parallel.world  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"DistributedOps({self.inner!r}, rank {self.parallel.rank} of {self.parallel.world})"

    def check_device(self, device: str | torch.device) -> None:
        self.inner.check_device(device)

    def check_catalogue(self, n_items: int) -> None:
        self.inner.check_catalogue(n_items)

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.parallel.all_sum(tensor)

    # ------------------------------------------------------------------ this rank's share alone
    def is_clicked(self, data: TrainingData, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.inner.is_clicked(data, users, items)

    def is_exposed(self, data: TrainingData, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.inner.is_exposed(data, users, items)

    def sample_uniform(self, data, users, n, generator, exclude_exposed=False):
        return self.inner.sample_uniform(data, users, n, generator, exclude_exposed)

    def sample_exposed(self, data, users, n, generator):
        return self.inner.sample_exposed(data, users, n, generator)

    def sample_sets(self, indptr, flat, users, n, generator):
        return self.inner.sample_sets(indptr, flat, users, n, generator)

    def sample_candidates(self, data, users, n, n_exp, exclude_exposed, generator, flags=True):
        return self.inner.sample_candidates(data, users, n, n_exp, exclude_exposed, generator, flags)

    def score_candidates(self, tables: Tables, users: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        return self.inner.score_candidates(tables, users, cands)

    def best_candidate(self, tables: Tables, users: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        return self.inner.best_candidate(tables, users, cands)

    def top_n_choice(self, tables, users, cands, n, generator):
        return self.inner.top_n_choice(tables, users, cands, n, generator)

    def loss_softmax_choice(self, tables, users, positives, cands, rho, generator):
        return self.inner.loss_softmax_choice(tables, users, positives, cands, rho, generator)

    def softmax_choice(self, tables, users, cands, temperature, generator):
        return self.inner.softmax_choice(tables, users, cands, temperature, generator)

    def variance_choice(self, tables, users, positives, cands, cand_history, pos_history, weight):
        return self.inner.variance_choice(tables, users, positives, cands, cand_history, pos_history, weight)

    def softmax_subset(self, tables, users, cands, k, temperature, generator):
        return self.inner.softmax_subset(tables, users, cands, k, temperature, generator)

    def score_lists(self, tables, users, items):
        return self.inner.score_lists(tables, users, items)

    def mmd_reward(self, generated: torch.Tensor, exposed: torch.Tensor, bandwidths: Sequence[float]):
        return self.inner.mmd_reward(generated, exposed, bandwidths)

    # ------------------------------------------------------------------ synchronised steps
    def step_rows(self, opt: GMFOptimizer, users, user_grads, items, item_grads, h_grad):
        k = opt.model.dim
        (users, user_grads), _ = self.parallel.gather(users.reshape(-1), user_grads.reshape(-1, k))
        (items, item_grads), _ = self.parallel.gather(items.reshape(-1), item_grads.reshape(-1, k))
        if h_grad is not None:
            h_grad = self.parallel.all_sum(h_grad)
        self.inner.step_rows(opt, users, user_grads, items, item_grads, h_grad)

    def sgd_step_rows(self, opt, users, user_grads, items, item_grads, h_grad):
        k = opt.model.dim
        (users, user_grads), _ = self.parallel.gather(users.reshape(-1), user_grads.reshape(-1, k))
        (items, item_grads), _ = self.parallel.gather(items.reshape(-1), item_grads.reshape(-1, k))
        if h_grad is not None:
            h_grad = self.parallel.all_sum(h_grad)
        self.inner.sgd_step_rows(opt, users, user_grads, items, item_grads, h_grad)

    def bpr_sgd_step(self, opt, users, pos, neg, l2):
        n = int(users.shape[0])
        (users, pos, neg), start = self.parallel.gather(users, pos, neg)
        loss, neg_scores = self.inner.bpr_sgd_step(opt, users, pos, neg, l2)
        return loss, neg_scores[start : start + n]

    def bpr_step(self, opt: GMFOptimizer, users, pos, neg, l2):
        n = int(users.shape[0])
        (users, pos, neg), start = self.parallel.gather(users, pos, neg)
        loss, neg_scores = self.inner.bpr_step(opt, users, pos, neg, l2)
        return loss, neg_scores[start : start + n]

    def reinforce_step(self, opt: GMFOptimizer, users, cands, drawn: SoftmaxChoice, rewards, l2, temperature):
        rows = [r for r in (drawn.user_rows, drawn.item_rows) if r is not None]
        gathered, _ = self.parallel.gather(
            users, cands, drawn.log_softmax, drawn.choice, rewards.to(drawn.log_softmax.dtype), *rows
        )
        users, cands, log_softmax, choice, rewards, *rows = gathered
        user_rows, item_rows = (rows[0], rows[1]) if rows else (None, None)
        whole = SoftmaxChoice(log_softmax, choice, user_rows, item_rows)
        self.inner.reinforce_step(opt, users, cands, whole, rewards, l2, temperature)
