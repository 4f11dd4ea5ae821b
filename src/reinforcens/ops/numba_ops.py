"""The numba backend: every operation of :class:`reinforcens.ops.base.Ops` in the compiled kernels of
:mod:`reinforcens.kernels`, on the CPU only (inputs are shared with numpy, not copied)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from reinforcens import kernels
from reinforcens.backend import draw_seed, kernel_parts, np_view
from reinforcens.errors import ConfigError
from reinforcens.mmd import mmd_reward
from reinforcens.ops.base import Ops, SoftmaxChoice, check_rows

if TYPE_CHECKING:
    from reinforcens.optim import GMFOptimizer, SGDOptimizer

#: an empty hash table: no rejection draws
NO_TABLE = np.full(0, -1, dtype=np.int64)


class NumbaOps(Ops):
    """The compiled kernels (CPU only); see :class:`reinforcens.ops.base.Ops`.

    The kernels read the training data through numpy views (``TrainingData._arrays``) and, for one or
    two uniform draws per user, reject against a hash set of the clicks (``TrainingData._click_hash``).
    """

    name = "numba"
    compiled = True

    def check_device(self, device):
        if torch.device(device).type != "cpu":
            raise ValueError(f"the numba backend runs on the CPU only, not on {device}")

    def check_catalogue(self, n_items):
        if n_items >= kernels.MAX_DRAW_BOUND:
            raise ConfigError(
                f"config key 'backend': the numba backend draws from fewer than 2**32 items, not {n_items}: "
                "use --backend torch"
            )

    # ------------------------------------------------------------------ item sets
    def is_clicked(self, data, users, items):
        a = data._arrays
        return _contains(a["click_keys"], a["click_indptr"], users, items, data.n_items)

    def is_exposed(self, data, users, items):
        a = data._arrays
        return _contains(a["exposure_keys"], a["exp_indptr"], users, items, data.n_items)

    def sample_uniform(self, data, users, n, generator, exclude_exposed=False):
        """One parallel pass of rejection draws (a uniform item, tried again while blocked, with the
        exact gap-key draw as fallback): tested against a hash set of the clicks for one or two draws
        per row, against a bitmap of the row's blocked items (built per row) for more; without
        rejection (one or two draws excluding exposures) the gap-key draw alone."""
        a = data._arrays
        part = "blocked" if exclude_exposed else "click"
        args = (np_view(users.contiguous()), n, a[f"{part}_gaps"], a[f"{part}_indptr"], a[f"{part}_free"])
        if n > 2:
            out = kernels.sample_uniform_bitmap(*args, data.n_items, draw_seed(generator))
        else:
            table, shift = data._click_hash if not exclude_exposed else (NO_TABLE, 0)
            out = kernels.sample_uniform(*args, data.n_items, table, shift, draw_seed(generator))
        return torch.from_numpy(out)

    def sample_exposed(self, data, users, n, generator):
        a = data._arrays
        items, has = kernels.sample_segments(
            np_view(users.contiguous()),
            n,
            a["exposure_keys"],
            a["exp_indptr"],
            data.n_items,
            draw_seed(generator),
        )
        return torch.from_numpy(items), torch.from_numpy(has)

    def sample_sets(self, indptr, flat, users, n, generator):
        """One compiled pass (:func:`reinforcens.kernels.sample_sets`: Floyd's algorithm)."""
        items, size = kernels.sample_sets(
            np_view(users.contiguous()), np_view(indptr.contiguous()), np_view(flat.contiguous()), int(n),
            draw_seed(generator),
        )  # fmt: skip
        return torch.from_numpy(items), torch.from_numpy(size)

    def sample_candidates(self, data, users, n, n_exp, exclude_exposed, generator, flags=True):
        """One compiled pass (:func:`reinforcens.kernels.candidates`), with other random numbers than
        separate :meth:`sample_uniform` and :meth:`sample_exposed` calls."""
        a = data._arrays
        part = "blocked" if exclude_exposed else "click"
        has_exp = a["blocked_has_exposure"] if exclude_exposed else a["no_user"]
        cands, exposed = kernels.candidates(
            np_view(users.contiguous()), n, n_exp, a[f"{part}_gaps"], a[f"{part}_indptr"],
            a[f"{part}_free"], has_exp, a["exposure_keys"], a["exp_indptr"], data.n_items, flags,
            draw_seed(generator),
        )  # fmt: skip
        return torch.from_numpy(cands), torch.from_numpy(exposed) if flags else None

    # ------------------------------------------------------------------ candidate scoring
    def score_candidates(self, tables, users, cands):
        """One compiled pass (:func:`reinforcens.kernels.score_lists`: float32 sums, stored as float64,
        so the cast back is exact)."""
        scores = kernels.score_lists(
            np_view(users.contiguous()), np_view(cands.contiguous()), np_view(tables.user),
            np_view(tables.item), np_view(tables.h),
        )  # fmt: skip
        return torch.from_numpy(scores).to(tables.item.dtype)

    def best_candidate(self, tables, users, cands):
        best = kernels.best_candidate(
            np_view(users.contiguous()), np_view(cands), np_view(tables.user), np_view(tables.item),
            np_view(tables.h),
        )  # fmt: skip
        return torch.from_numpy(best).unsqueeze(1)

    def top_n_choice(self, tables, users, cands, n, generator):
        """One compiled pass (:func:`reinforcens.kernels.top_n_choice`)."""
        if not 1 <= n <= cands.shape[1]:
            raise ValueError(f"top_n_choice: n = {n} is not in [1, {cands.shape[1]}]")
        pick = kernels.top_n_choice(
            np_view(users.contiguous()), np_view(cands.contiguous()), np_view(tables.user),
            np_view(tables.item), np_view(tables.h), int(n), draw_seed(generator),
        )  # fmt: skip
        return torch.from_numpy(pick).unsqueeze(1)

    def loss_softmax_choice(self, tables, users, positives, cands, rho, generator):
        """One compiled pass (:func:`reinforcens.kernels.loss_softmax_choice`)."""
        if cands.shape[1] < 2:
            raise ValueError(f"loss_softmax_choice: {cands.shape[1]} candidate(s), at least 2 needed")
        pick = kernels.loss_softmax_choice(
            np_view(users.contiguous()), np_view(positives.contiguous()), np_view(cands.contiguous()),
            np_view(tables.user), np_view(tables.item), np_view(tables.h), float(rho), draw_seed(generator),
        )  # fmt: skip
        return torch.from_numpy(pick).unsqueeze(1)

    def softmax_choice(self, tables, users, cands, temperature, generator):
        """An inverse-CDF draw from the softmax (:func:`reinforcens.kernels.score_and_choose`)."""
        log_p, choice = kernels.score_and_choose(
            np_view(users.contiguous()), np_view(cands), np_view(tables.user), np_view(tables.item),
            np_view(tables.h), 1.0 / temperature, draw_seed(generator),
        )  # fmt: skip
        return SoftmaxChoice(torch.from_numpy(log_p), torch.from_numpy(choice).unsqueeze(1))

    def variance_choice(self, tables, users, positives, cands, cand_history, pos_history, weight):
        """One compiled pass (:func:`reinforcens.kernels.variance_choice`)."""
        pick = kernels.variance_choice(
            np_view(users.contiguous()), np_view(positives.contiguous()), np_view(cands.contiguous()),
            np_view(cand_history.to(torch.float32).contiguous()),
            np_view(pos_history.to(torch.float32).contiguous()), np_view(tables.user),
            np_view(tables.item), np_view(tables.h), float(weight),
        )  # fmt: skip
        return torch.from_numpy(pick).unsqueeze(1)

    def softmax_subset(self, tables, users, cands, k, temperature, generator):
        """One compiled pass (:func:`reinforcens.kernels.softmax_subset`)."""
        if not 1 <= k <= cands.shape[1]:
            raise ValueError(f"softmax_subset: k = {k} is not in [1, {cands.shape[1]}]")
        keep = kernels.softmax_subset(
            np_view(users.contiguous()), np_view(cands.contiguous()), np_view(tables.user),
            np_view(tables.item), np_view(tables.h), int(k), 1.0 / temperature, draw_seed(generator),
        )  # fmt: skip
        return torch.from_numpy(keep)

    def score_lists(self, tables, users, items):
        return kernels.score_lists(
            np.ascontiguousarray(users, dtype=np.int64), np.ascontiguousarray(items, dtype=np.int64),
            tables.user.numpy(), tables.item.numpy(), tables.h.numpy(),
        )  # fmt: skip

    # ------------------------------------------------------------------ fused steps
    def step_rows(self, opt: GMFOptimizer, users, user_grads, items, item_grads, h_grad):
        # both tables are checked before either is written
        check_rows(users, opt.model.n_users, "user")
        check_rows(items, opt.model.n_items, "item")
        bc1, bc2 = opt._advance()
        b1, b2 = opt.betas
        step_size = opt.lr * math.sqrt(bc2) / bc1
        rowwise_adam = kernels.rowwise_adam.kernel  # checked above, for both tables at once
        k = opt.model.dim
        for state, rows, grads in ((opt.user, users, user_grads), (opt.item, items, item_grads)):
            r = np_view(rows.reshape(-1).contiguous())
            g = np_view(grads.detach().reshape(-1, k).contiguous())
            rowwise_adam(r, g, *state.arrays(), *state.buffers(r.shape[0]), step_size, b1, b2, opt.eps)
        if h_grad is not None and opt.model.trains_h:
            hm, hv = np_view(opt.h_moments[0]), np_view(opt.h_moments[1])
            g = np_view(h_grad.detach().contiguous())
            kernels.adam_dense(g, np_view(opt.model.h), hm, hv, opt.lr, b1, b2, opt.eps, bc1, bc2)

    def bpr_step(self, opt: GMFOptimizer, users, pos, neg, l2):
        """Gradients and the row-wise Adam update in one compiled pass
        (:func:`reinforcens.kernels.bpr_adam_step`)."""
        model = opt.model
        # checked here, before the step is counted (the kernel's own check would count it first)
        check_rows(users, model.n_users, "user")
        check_rows(pos, model.n_items, "positive item")
        check_rows(neg, model.n_items, "negative item")
        bpr_adam_step = kernels.bpr_adam_step.kernel
        bc1, bc2 = opt._advance()
        uw, um, uv = opt.user.arrays()
        iw, im, iv = opt.item.arrays()
        neg_scores = torch.empty(users.shape[0], dtype=model.h.dtype)
        b, parts = users.shape[0], kernel_parts()
        loss = bpr_adam_step(
            np_view(users.contiguous()), np_view(pos.contiguous()), np_view(neg.contiguous()),
            uw, iw, np_view(opt.h_target()), um, uv, im, iv,
            np_view(opt.h_moments[0]), np_view(opt.h_moments[1]),
            *opt.user.buffers(parts * b), *opt.item.buffers(parts * 2 * b), float(l2), opt.lr,
            opt.betas[0], opt.betas[1], opt.eps, bc1, bc2, np_view(neg_scores), parts,
        )  # fmt: skip
        return float(loss), neg_scores

    def sgd_step_rows(self, opt: SGDOptimizer, users, user_grads, items, item_grads, h_grad):
        # both tables are checked before either is written
        check_rows(users, opt.model.n_users, "user")
        check_rows(items, opt.model.n_items, "item")
        opt._advance()
        rowwise_sgd = kernels.rowwise_sgd.kernel  # checked above
        k = opt.model.dim
        for state, rows, grads in ((opt.user, users, user_grads), (opt.item, items, item_grads)):
            r = np_view(rows.reshape(-1).contiguous())
            g = np_view(grads.detach().reshape(-1, k).contiguous())
            rowwise_sgd(r, g, np_view(state.weight), *state.buffers(r.shape[0]), opt.lr)
        if h_grad is not None and opt.model.trains_h:
            with torch.no_grad():
                opt.model.h.add_(h_grad.detach(), alpha=-opt.lr)

    def bpr_sgd_step(self, opt: SGDOptimizer, users, pos, neg, l2):
        """Gradients and the SGD update in one compiled pass (:func:`reinforcens.kernels.bpr_sgd_step`)."""
        model = opt.model
        check_rows(users, model.n_users, "user")
        check_rows(pos, model.n_items, "positive item")
        check_rows(neg, model.n_items, "negative item")
        bpr_sgd_step = kernels.bpr_sgd_step.kernel
        opt._advance()
        neg_scores = torch.empty(users.shape[0], dtype=model.h.dtype)
        loss = bpr_sgd_step(
            np_view(users.contiguous()), np_view(pos.contiguous()), np_view(neg.contiguous()),
            np_view(opt.user.weight), np_view(opt.item.weight), np_view(opt.h_target()), float(l2),
            opt.lr, np_view(neg_scores), kernel_parts(),
        )  # fmt: skip
        return float(loss), neg_scores

    def reinforce_step(self, opt: GMFOptimizer, users, cands, drawn, rewards, l2, temperature):
        """Log-softmax gradients and the update in one compiled pass
        (:func:`reinforcens.kernels.reinforce_adam_step`)."""
        bc1, bc2 = opt._advance()
        uw, um, uv = opt.user.arrays()
        iw, im, iv = opt.item.arrays()
        r = (rewards.detach().to(torch.float32) / temperature).contiguous()
        cands = np_view(cands)
        parts = kernel_parts()
        kernels.reinforce_adam_step(
            np_view(users.contiguous()), cands, np_view(drawn.choice.reshape(-1)),
            np_view(drawn.log_softmax), np_view(r), uw, iw, np_view(opt.h_target()), um, uv, im, iv,
            np_view(opt.h_moments[0]), np_view(opt.h_moments[1]), *opt.user.buffers(parts * cands.shape[0]),
            *opt.item.buffers(parts * cands.size), float(l2), opt.lr, opt.betas[0], opt.betas[1],
            opt.eps, bc1, bc2, parts,
        )  # fmt: skip

    # ------------------------------------------------------------------ rewards
    def mmd_reward(self, generated: torch.Tensor, exposed: torch.Tensor, bandwidths: Sequence[float]):
        return mmd_reward(generated, exposed, bandwidths, compiled=True)


def _contains(
    keys: np.ndarray, indptr: np.ndarray, users: torch.Tensor, items: torch.Tensor, n_items: int
) -> torch.Tensor:
    """Membership of broadcast (user, item) pairs in a per-user CSR of sorted keys."""
    u, i = torch.broadcast_tensors(users, items)
    u_flat, i_flat = u.reshape(-1).contiguous(), i.reshape(-1).contiguous()
    flat = kernels.contains_segments(keys, indptr, np_view(u_flat), np_view(i_flat), n_items)
    return torch.from_numpy(flat).view(u.shape)
