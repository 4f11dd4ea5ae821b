"""Optimizers of the recommender (the config's ``optimizer``): row-wise ("lazy") Adam for the tables
of GMF and MF with Adam for GMF's ``h`` (:class:`GMFOptimizer`, ``"adam"``, the default), plain SGD for
them (:class:`SGDOptimizer`, ``"sgd"``), and an autograd :class:`torch.optim.Adam` or
:class:`torch.optim.SGD` for every other recommender (:class:`AutogradOptimizer`).

The loss, for both update rules
-------------------------------
A step on a minibatch of ``B`` triples ``(u_b, i_b, j_b)`` (user, positive, negative) minimises::

    L = sum_b [ softplus(-(r_{u_b i_b} - r_{u_b j_b}))
                + 0.5 * l2 * (||p_{u_b}||^2 + ||q_{i_b}||^2 + ||q_{j_b}||^2) ]

with ``r_ui = h . (p_u * q_i)`` (:func:`reinforcens.losses.bpr_with_grads`): the L2 term applies to the
rows of the batch, once per occurrence. With ``x_b = r_{u_b i_b} - r_{u_b j_b}`` and
``z_b = sigmoid(-x_b) = 1 / (1 + exp(x_b))``, the gradients of one triple are::

    dL/dp_u = -z_b * h * (q_i - q_j) + l2 * p_u
    dL/dq_i = -z_b * h * p_u         + l2 * q_i
    dL/dq_j =  z_b * h * p_u         + l2 * q_j
    dL/dh   = -z_b * p_u * (q_i - q_j)

all from the weights before the step. ``g_r``, the gradient of row ``r``, sums these over every
occurrence of ``r`` in the batch (a user with two triples, an item that is the positive of one and the
negative of another); ``g_h`` sums over the batch. MF fixes ``h`` at ones and never updates it.

Plain SGD (``optimizer="sgd"``)
-------------------------------
For every row ``r`` of the batch, and for ``h`` (GMF only)::

    w_r <- w_r - lr * g_r          h <- h - lr * g_h

Rows outside the batch have a zero gradient, so this row-wise step *is* dense SGD; there is no state
besides the step count. With one triple per batch and ``h = 1`` (MF) it is exactly the update of
implicit's BPR (``implicit/cpu/bpr.pyx``, ``reg = l2``, leaving out its item biases)::

    z = 1 / (1 + exp(p_u . (q_i - q_j)))
    p_u += lr * (z * (q_i - q_j) - reg * p_u)
    q_i += lr * (z * p_u - reg * q_i)
    q_j += lr * (-z * p_u - reg * q_j)

implicit applies it triple after triple (asynchronously, over threads), here the gradients of a
minibatch are summed first, so that the step does not depend on the order of the triples or on the
number of threads.

How the row-wise update differs from dense Adam
-----------------------------------------------
Let ``t`` be the number of optimizer steps taken so far (one per minibatch, counting this one), ``g_r``
the gradient of embedding row ``r`` in this minibatch (rows looked up several times in the batch have
their gradients summed first), ``lr``, ``beta1``, ``beta2`` and ``eps`` the usual Adam settings.

* **Only rows of the minibatch change.** For every row ``r`` in the batch::

      m_r <- beta1 * m_r + (1 - beta1) * g_r
      v_r <- beta2 * v_r + (1 - beta2) * g_r ** 2
      w_r <- w_r - lr * sqrt(1 - beta2 ** t) / (1 - beta1 ** t) * m_r / (sqrt(v_r) + eps)

  Rows outside the batch keep their weights *and* moments. Dense Adam would treat their gradient as
  zero: decay ``m_r`` and ``v_r`` by ``beta1`` and ``beta2`` and keep moving ``w_r`` along its old
  momentum ``m_r / sqrt(v_r)``, so a row that was last updated ``s`` steps ago has, under dense Adam,
  moved ``s`` more times and forgotten ``beta1 ** s`` of its momentum.
* **The bias correction uses the global step ``t``**, not the number of times the row was updated
  (so a rarely seen row gets a smaller correction than it would if its own count were used).
* **``eps`` is added to ``sqrt(v_r)`` before the bias correction of ``v``**, as in
  :class:`torch.optim.SparseAdam`; dense :class:`torch.optim.Adam` adds ``eps`` to
  ``sqrt(v_r / (1 - beta2 ** t))``. Equivalently, the row-wise update uses ``eps / sqrt(1 - beta2 **
  t)`` in dense Adam's formula: a larger epsilon during the first few hundred steps, the same after.
* L2 regularisation lives in the loss, on the rows of the batch (``0.5 * l2 * ||e||^2``), so it too
  reaches a row only when the row is in a batch; there is no decoupled weight decay.

Apart from floating-point summation order this is exactly :class:`torch.optim.SparseAdam`. ``h`` (a
dense ``K``-vector, in every batch) uses dense Adam, and the step count ``t`` is shared.

Implementation
--------------
The steps run in the optimizer's compute backend (:attr:`GMFOptimizer.ops`, see
:mod:`reinforcens.ops`; SGD through :meth:`~reinforcens.ops.Ops.bpr_sgd_step` and
:meth:`~reinforcens.ops.Ops.sgd_step_rows`). Implementation (``backend="numba"``, CPU):
:mod:`reinforcens.kernels` sums the gradients of repeated rows into one slot per row and updates each
row once, in one compiled pass (:meth:`GMFOptimizer.bpr_step` also computes the BPR gradients in that
pass; :func:`reinforcens.kernels.bpr_sgd_step` for SGD subtracts a row's gradients one by one instead,
in batch order, which plain SGD allows). Implementation
(``backend="torch"``): the gradients of repeated rows are summed first (``torch.unique`` and
``index_add_`` on the CPU; on a GPU ``index_add_`` into a zeroed table-sized buffer, read back for
every occurrence, so nothing waits for the device and repeated rows compute identical values). The
moments (Adam) and weights of those rows are then gathered, updated and written back with
``index_put_``. No step touches a row outside the batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reinforcens.backend import np_view
from reinforcens.losses import bpr_loss, l2_penalty, mixed_negative
from reinforcens.models.base import Recommender, rows_of
from reinforcens.models.gmf import GMF
from reinforcens.ops import Ops, make_ops
from reinforcens.ops import check_rows as _check_rows

if TYPE_CHECKING:
    from reinforcens.samplers.base import Mixture


class RowTable:
    """One embedding table updated row by row, and the scratch a step needs to sum the gradients of
    rows repeated in a batch (see the module docstring).

    Parameters
    ----------
    weight
        The table (a parameter), updated in place.
    merge
        How gradients of rows repeated in a batch are summed: ``"sort"``, ``"buffer"`` or ``"auto"``
        (``"sort"`` on the CPU, ``"buffer"`` on other devices); see :meth:`_merge`.

    Attributes
    ----------
    weight : torch.Tensor
        The table, updated in place.
    """

    def __init__(self, weight: torch.Tensor, merge: str = "auto"):
        if merge not in ("auto", "sort", "buffer"):
            raise ValueError(f"merge must be 'auto', 'sort' or 'buffer', got {merge!r}")
        self.weight = weight
        self.merge = merge
        self._scratch: torch.Tensor | None = None
        self._slot: np.ndarray | None = None
        self._rows: np.ndarray | None = None
        self._grads: np.ndarray | None = None

    def buffers(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scratch of the compiled kernels for up to ``n`` row lookups: the row -> slot map (all ``-1``
        between calls), the slots' rows and their gradients (grown as needed, never shrunk)."""
        if self._slot is None:
            self._slot = np.full(self.weight.shape[0], -1, dtype=np.int64)
        if self._rows is None or self._rows.shape[0] < n:
            self._rows = np.empty(n, dtype=np.int64)
            self._grads = np.empty((n, self.weight.shape[1]), dtype=np.float32)
        return self._slot, self._rows, self._grads

    def _merge(self, rows: torch.Tensor, grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows to update and their summed gradients.

        ``"sort"`` (the default on the CPU): ``torch.unique`` gives each row once. ``"buffer"`` (the
        default elsewhere): the gradients are summed in a table-sized buffer kept at zero and read back
        for every occurrence, which needs no sort and no wait for the device; repeated rows then
        compute the same update.
        """
        merge = self.merge
        if merge == "auto":
            merge = "sort" if rows.device.type == "cpu" else "buffer"
        if merge == "sort":
            rows, inverse = torch.unique(rows, return_inverse=True)
            merged = grads.new_zeros((rows.numel(), grads.shape[1])).index_add_(0, inverse, grads)
            return rows, merged
        if self._scratch is None:
            self._scratch = torch.zeros_like(self.weight, memory_format=torch.contiguous_format)
        self._scratch.index_add_(0, rows, grads)
        merged = self._scratch.index_select(0, rows)
        self._scratch.index_fill_(0, rows, 0.0)
        return rows, merged


class RowwiseAdam(RowTable):
    """Row-wise Adam state of one embedding table (see the module docstring).

    Parameters
    ----------
    weight
        The table (a parameter), updated in place.
    merge
        How gradients of rows repeated in a batch are summed (see :class:`RowTable`).

    Attributes
    ----------
    weight : torch.Tensor
        The table, updated in place.
    exp_avg, exp_avg_sq : torch.Tensor
        First and second moments, the table's shape.
    """

    def __init__(self, weight: torch.Tensor, merge: str = "auto"):
        super().__init__(weight, merge)
        self.exp_avg = torch.zeros_like(weight, memory_format=torch.contiguous_format)
        self.exp_avg_sq = torch.zeros_like(self.exp_avg)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """numpy views of the weight and both moments (updated in place by the kernels)."""
        return np_view(self.weight), np_view(self.exp_avg), np_view(self.exp_avg_sq)

    def step(
        self,
        rows: torch.Tensor,
        grads: torch.Tensor,
        step_size: float,
        beta1: float,
        beta2: float,
        eps: float,
    ) -> None:
        """Update ``rows`` (int64, any shape, repeats allowed) with gradients ``grads`` (rows, K)."""
        rows = rows.reshape(-1)
        rows, g = self._merge(rows, grads.reshape(rows.numel(), self.weight.shape[1]))
        weight = self.weight.data
        m = self.exp_avg.index_select(0, rows).lerp_(g, 1.0 - beta1)
        v = self.exp_avg_sq.index_select(0, rows).mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        index = (rows,)
        self.exp_avg.index_put_(index, m)
        self.exp_avg_sq.index_put_(index, v)
        w = weight.index_select(0, rows).addcdiv_(m, v.sqrt_().add_(eps), value=-step_size)
        weight.index_put_(index, w)


class RowwiseSGD(RowTable):
    """Plain SGD of one embedding table, row by row: ``w_r <- w_r - lr * g_r`` for the rows of a batch,
    ``g_r`` their summed gradients (no state besides the weight; see the module docstring)."""

    def step(self, rows: torch.Tensor, grads: torch.Tensor, lr: float) -> None:
        """Update ``rows`` (int64, any shape, repeats allowed) with gradients ``grads`` (rows, K)."""
        rows = rows.reshape(-1)
        rows, g = self._merge(rows, grads.reshape(rows.numel(), self.weight.shape[1]))
        weight = self.weight.data
        weight.index_put_((rows,), weight.index_select(0, rows).add_(g, alpha=-lr))


class _RowOptimizer:
    """What the row-wise optimizers of a GMF (or MF) share: the compute backend, ``h``'s target and
    the step from autograd's ``.grad``. Subclasses set ``model``, ``ops`` and ``steps`` and define
    ``step_rows``."""

    model: GMF
    ops: Ops
    steps: int

    @property
    def backend(self) -> str:
        """The compute backend's name (read-only: see :attr:`ops`)."""
        return self.ops.name

    def zero_grad(self) -> None:
        for p in (self.model.user.weight, self.model.item.weight, self.model.h):
            p.grad = None

    def h_target(self) -> torch.Tensor:
        """The ``h`` a fused kernel updates in place: the model's own when it trains ``h`` (GMF), a
        scratch copy of it otherwise (MF), so the model's stays fixed."""
        return self.model.h if self.model.trains_h else self.model.h.clone()

    def step_rows(
        self,
        users: torch.Tensor,
        user_grads: torch.Tensor,
        items: torch.Tensor,
        item_grads: torch.Tensor,
        h_grad: torch.Tensor | None,
    ) -> None:
        raise NotImplementedError

    def mixture_step(
        self, users: torch.Tensor, pos: torch.Tensor, mixture: Mixture, l2: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One BPR step against synthetic negatives (:func:`mixture_bpr_loss`); the gradients of the
        rows used are taken by autograd on copies of those rows and applied by :meth:`step_rows`
        (rows outside the batch are not touched, as in :meth:`bpr_step`). Returns the summed batch
        loss and the pre-step scores of the negatives."""
        m = self.model
        _check_mixture(m, users, pos, mixture, layers=1)
        pu = m.user.weight.detach()[users].requires_grad_()
        qi = m.item.weight.detach()[pos].requires_grad_()
        rows = m.item.weight.detach()[mixture.items].requires_grad_()  # (B, 1, C, K)
        h = m.h.detach().clone().requires_grad_(m.trains_h)
        leaves = [pu, qi, rows] + ([h] if m.trains_h else [])
        loss, neg_s = mixture_bpr_loss(pu, pu, qi, qi, rows, mixture.weights, h, l2)
        grads = torch.autograd.grad(loss, leaves)
        items = torch.cat([pos, mixture.items.reshape(-1)])
        item_grads = torch.cat([grads[1], grads[2].reshape(-1, m.dim)])
        self.step_rows(users, grads[0], items, item_grads, grads[3] if m.trains_h else None)
        loss = loss.detach()
        if self.ops.ranks > 1:  # the loss of the whole batch, as bpr_step returns
            loss = self.ops.all_sum(loss)
        return loss, neg_s.detach()

    def step(self) -> None:
        """One step from the ``.grad`` of the parameters (left by ``loss.backward()``)."""
        dim = self.model.dim
        device = self.model.h.device
        empty_rows = torch.zeros(0, dtype=torch.long, device=device)
        empty_grads = torch.zeros((0, dim), dtype=self.model.h.dtype, device=device)
        parts = []
        for weight in (self.model.user.weight, self.model.item.weight):
            grad = weight.grad
            if grad is None:
                parts += [empty_rows, empty_grads]
            elif grad.is_sparse:
                parts += [grad._indices()[0], grad._values()]
            else:  # a dense gradient: every row with a nonzero gradient
                rows = torch.nonzero(grad.abs().sum(1)).squeeze(1)
                parts += [rows, grad[rows]]
        h_grad = self.model.h.grad if self.model.trains_h else None
        self.step_rows(parts[0], parts[1], parts[2], parts[3], h_grad)


class GMFOptimizer(_RowOptimizer):
    """Row-wise Adam for a GMF's tables plus dense Adam for ``h`` (see the module docstring).

    Two ways to use it:

    * with autograd: ``zero_grad()``, ``loss.backward()``, ``step()`` (reads the gradients of the tables,
      sparse or dense, and of ``h``);
    * with gradients computed by hand: :meth:`step_rows`, which needs no ``.grad`` at all.

    Parameters
    ----------
    model
        The GMF (or MF) whose ``user.weight``, ``item.weight`` and ``h`` are updated in place; an MF's
        ``h`` (fixed at ones) is never written: the steps compute with it and update a scratch copy.
    lr
        Learning rate.
    betas, eps
        Adam's moment decay rates and denominator constant.
    backend
        ``"torch"`` or ``"numba"`` (compiled kernels; the model must be on the CPU), see
        :mod:`reinforcens.backend`, or the :class:`~reinforcens.ops.Ops` of the run; the steps run in
        :attr:`ops` (``make_ops(backend)``).
    """

    #: what :meth:`state_dict` records as ``kind``
    kind = "rowwise-adam"

    def __init__(
        self,
        model: GMF,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        backend: str | Ops = "torch",
    ):
        self.ops = make_ops(backend)
        self.ops.check_device(model.h.device)
        self.model = model
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.steps = 0
        self.user = RowwiseAdam(model.user.weight)
        self.item = RowwiseAdam(model.item.weight)
        h = model.h
        self.h_moments = torch.zeros((2, *h.shape), dtype=h.dtype, device=h.device)

    def step_rows(
        self,
        users: torch.Tensor,
        user_grads: torch.Tensor,
        items: torch.Tensor,
        item_grads: torch.Tensor,
        h_grad: torch.Tensor | None,
    ) -> None:
        """One Adam step from hand-computed gradients.

        Parameters
        ----------
        users, items
            Row indices (int64, any shape, repeats allowed: their gradients are summed).
        user_grads, item_grads
            Gradients of those rows, shape ``(*rows.shape, K)``.
        h_grad
            Gradient of ``h`` (``None``: ``h`` has no gradient this step and is left alone).
        """
        self.ops.step_rows(self, users, user_grads, items, item_grads, h_grad)

    def _advance(self) -> tuple[float, float]:
        """Count one step; the bias corrections ``1 - beta1^t`` and ``1 - beta2^t``."""
        self.steps += 1
        b1, b2 = self.betas
        return 1.0 - b1**self.steps, 1.0 - b2**self.steps

    def bpr_step(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, l2: float
    ) -> tuple[float, torch.Tensor]:
        """One BPR step of the model on a batch of (user, positive, negative) triples.

        The loss and gradients are those of :func:`reinforcens.losses.bpr_with_grads`, followed by
        :meth:`step_rows` (:meth:`reinforcens.ops.Ops.bpr_step`); the numba backend does both in
        one compiled pass.

        Returns
        -------
        loss : float or torch.Tensor
            The summed batch loss (BPR plus L2 on the batch rows), before the step (a 0-dim tensor on
            the torch backend, so that nothing waits for the device).
        neg_scores : torch.Tensor
            The pre-step scores of the negatives, shape (B,).
        """
        return self.ops.bpr_step(self, users, pos, neg, l2)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "steps": self.steps,
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "user_exp_avg": self.user.exp_avg,
            "user_exp_avg_sq": self.user.exp_avg_sq,
            "item_exp_avg": self.item.exp_avg,
            "item_exp_avg_sq": self.item.exp_avg_sq,
            "h_exp_avg": self.h_moments[0],
            "h_exp_avg_sq": self.h_moments[1],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load :meth:`state_dict` output (or the ``SparseAdam`` + ``Adam`` state of older versions)."""
        if "sparse" in state:  # SparseAdam for the tables and Adam for h
            state = _from_torch_optimizers(state)
        _check_kind(state, self.kind, default=self.kind)  # older states have no kind
        self.steps = int(state["steps"])
        self.lr = float(state["lr"])
        self.betas = (float(state["betas"][0]), float(state["betas"][1]))
        self.eps = float(state["eps"])
        targets = {
            "user_exp_avg": self.user.exp_avg,
            "user_exp_avg_sq": self.user.exp_avg_sq,
            "item_exp_avg": self.item.exp_avg,
            "item_exp_avg_sq": self.item.exp_avg_sq,
            "h_exp_avg": self.h_moments[0],
            "h_exp_avg_sq": self.h_moments[1],
        }
        with torch.no_grad():
            for key, target in targets.items():
                if state.get(key) is None:
                    target.zero_()
                else:
                    target.copy_(state[key])


class SGDOptimizer(_RowOptimizer):
    """Plain SGD for a GMF's (or MF's) tables and ``h``, as implicit's BPR (see the module docstring):
    the same loss and gradients as :class:`GMFOptimizer`, the update ``w <- w - lr * g``.

    The interface of :class:`GMFOptimizer` (:meth:`bpr_step`, :meth:`step_rows`, ``step()`` after
    ``loss.backward()``, :meth:`state_dict`); the steps run in :attr:`ops`
    (:meth:`reinforcens.ops.Ops.bpr_sgd_step` and :meth:`~reinforcens.ops.Ops.sgd_step_rows`).

    Parameters
    ----------
    model
        The GMF (or MF) updated in place (an MF's ``h`` is never written).
    lr
        Learning rate.
    backend
        A backend's name or the :class:`~reinforcens.ops.Ops` of the run (as :class:`GMFOptimizer`'s).

    Raises
    ------
    ConfigError
        If the operations have no SGD step (those of a data-parallel run, for now).
    """

    #: what :meth:`state_dict` records as ``kind``
    kind = "rowwise-sgd"

    def __init__(self, model: GMF, lr: float, backend: str | Ops = "torch"):
        self.ops = make_ops(backend)
        self.ops.check_device(model.h.device)
        self.model = model
        self.lr = float(lr)
        self.steps = 0
        self.user = RowwiseSGD(model.user.weight)
        self.item = RowwiseSGD(model.item.weight)

    def _advance(self) -> None:
        """Count one step."""
        self.steps += 1

    def step_rows(
        self,
        users: torch.Tensor,
        user_grads: torch.Tensor,
        items: torch.Tensor,
        item_grads: torch.Tensor,
        h_grad: torch.Tensor | None,
    ) -> None:
        """One SGD step from hand-computed gradients (arguments as :meth:`GMFOptimizer.step_rows`)."""
        self.ops.sgd_step_rows(self, users, user_grads, items, item_grads, h_grad)

    def bpr_step(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, l2: float
    ) -> tuple[float | torch.Tensor, torch.Tensor]:
        """One BPR step on (user, positive, negative) triples: the loss and gradients of
        :func:`reinforcens.losses.bpr_with_grads`, then :meth:`step_rows`; returns the pre-step summed
        loss and negative scores (as :meth:`GMFOptimizer.bpr_step`)."""
        return self.ops.bpr_sgd_step(self, users, pos, neg, l2)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "steps": self.steps, "lr": self.lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, self.kind)
        self.steps = int(state["steps"])
        self.lr = float(state["lr"])


#: the row-wise optimizers of GMF and MF, by the config's ``optimizer``
ROW_OPTIMIZERS: dict[str, type[GMFOptimizer] | type[SGDOptimizer]] = {
    "adam": GMFOptimizer,
    "sgd": SGDOptimizer,
}


def mixture_bpr_loss(
    pu: torch.Tensor,
    pu0: torch.Tensor,
    qi: torch.Tensor,
    qi0: torch.Tensor,
    layers: torch.Tensor,
    mixture: Mixture | torch.Tensor,
    h: torch.Tensor,
    l2: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The BPR loss against synthetic negatives, MixGCF's ``create_bpr_loss`` with ``K = 1``
    (``huangtinglin/MixGCF``, ``modules/LightGCN.py``)::

        q~_b = mean_h sum_c w_bhc E^(h)[j_bhc]                  (mixed_negative, pooled)
        L = sum_b softplus(h . (p_b * q~_b) - h . (p_b * q_b))
            + 0.5 * l2 * sum_b (||p0_b||^2 + ||q0_b||^2 + ||q~0_b||^2)

    with ``p_b``, ``q_b`` the pooled user and positive embeddings, ``p0_b``, ``q0_b`` their layer-0
    rows and ``q~0_b = sum_c w_b0c E^(0)[j_b0c]`` the negative's mixed layer 0: as in the authors'
    code, the L2 term takes the synthetic negative's layer 0, not the rows it was mixed from.

    Parameters
    ----------
    pu, pu0, qi, qi0
        (B, K) pooled and layer-0 rows of the users and the positives.
    layers
        (n_items, H, K) every item's layers; or, with ``mixture`` a tensor of weights (B, H, C), the
        rows already gathered, (B, H, C, K).
    mixture
        The :class:`reinforcens.samplers.base.Mixture` (or its weights, see ``layers``).
    h
        (K,) the scoring weights (ones but for GMF).
    l2
        The L2 weight.

    Returns
    -------
    loss : torch.Tensor
        The summed batch loss (0-dim).
    neg_scores : torch.Tensor
        (B,) the scores of the synthetic negatives.
    """
    if isinstance(mixture, torch.Tensor):
        mixed = (mixture.to(layers.dtype).unsqueeze(-1) * layers).sum(2)
    else:
        mixed = mixed_negative(layers, mixture.items, mixture.weights)
    pu_h = pu * h
    pos_s = torch.linalg.vecdot(pu_h, qi)
    neg_s = torch.linalg.vecdot(pu_h, mixed.mean(1))
    loss = bpr_loss(pos_s, neg_s)
    if l2 > 0:
        loss = loss + l2 * l2_penalty(pu0, qi0, mixed[:, 0])
    return loss, neg_s


def _check_mixture(
    model: Recommender, users: torch.Tensor, pos: torch.Tensor, mixture: Mixture, layers: int
) -> None:
    _check_rows(users, model.n_users, "user")
    _check_rows(pos, model.n_items, "positive item")
    _check_rows(mixture.items, model.n_items, "mixed item")
    if mixture.items.dim() != 3 or mixture.items.shape[:2] != (users.shape[0], layers):
        raise ValueError(
            f"a mixture of shape {tuple(mixture.items.shape)} for a batch of {users.shape[0]} and a model "
            f"of {layers} layer(s): expected (batch, layers, rows)"
        )
    if mixture.weights.shape != mixture.items.shape or not bool(torch.isfinite(mixture.weights).all()):
        raise ValueError("mixture weights must be finite and of the shape of its items")


def _check_kind(state: dict[str, Any], kind: str, default: str | None = None) -> None:
    """Raise ``ValueError`` unless ``state`` is the state of an optimizer of this ``kind``."""
    got = state.get("kind", default)
    if got != kind:
        raise ValueError(f"not the state of a {kind} optimizer (kind {got!r})")


def _from_torch_optimizers(state: dict[str, Any]) -> dict[str, Any]:
    """Convert the ``{"sparse": SparseAdam, "dense": Adam}`` state of older checkpoints."""
    sparse, dense = state["sparse"], state["dense"]
    group = sparse["param_groups"][0]
    out: dict[str, Any] = {
        "steps": 0,
        "lr": group["lr"],
        "betas": group["betas"],
        "eps": group["eps"],
    }
    for name, pid in zip(("user", "item"), group["params"], strict=True):
        st = sparse["state"].get(pid)
        if st:
            out[f"{name}_exp_avg"], out[f"{name}_exp_avg_sq"] = st["exp_avg"], st["exp_avg_sq"]
            out["steps"] = max(out["steps"], int(st["step"]))
    dst = dense["state"].get(dense["param_groups"][0]["params"][0])
    if dst:
        out["h_exp_avg"], out["h_exp_avg_sq"] = dst["exp_avg"], dst["exp_avg_sq"]
    return out


class AutogradOptimizer:
    """BPR through autograd with :class:`torch.optim.Adam` (``optimizer="adam"``) or
    :class:`torch.optim.SGD` (``"sgd"``: plain, no momentum, no weight decay), for recommenders
    without a fused step (LightGCN): every step recomputes the model's effective tables with gradients.

    The loss is GMF's (:func:`reinforcens.losses.bpr_with_grads`): ``sum_b softplus(-(r_ui - r_uj)) +
    0.5 * l2 * sum ||e||^2`` over the parameter rows of the batch (:meth:`Recommender.regularised_rows`:
    LightGCN's ``E^(0)`` rows). Adam is dense (every parameter with a gradient moves each step), as
    RecBole and the LightGCN authors train; SGD is ``w <- w - lr * dL/dw`` for every parameter.
    ``ops``: the run's operations; with several ranks
    (:class:`reinforcens.ops.distributed.DistributedOps`) the gradients and the loss are summed over
    them before the step.
    """

    def __init__(
        self,
        model: Recommender,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        ops: Ops | None = None,
        optimizer: str = "adam",
    ):
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.model = model
        self.ops = ops
        self.lr = float(lr)
        self.kind = optimizer
        self._sgd_steps = 0
        if optimizer == "adam":
            self.adam = torch.optim.Adam(model.parameters(), lr=self.lr, betas=betas, eps=eps)
            self.inner: torch.optim.Optimizer = self.adam
        else:
            self.inner = torch.optim.SGD(model.parameters(), lr=self.lr)

    @property
    def steps(self) -> int:
        if self.kind == "sgd":  # plain SGD keeps no state of its own
            return self._sgd_steps
        states = list(self.adam.state.values())
        return int(states[0]["step"]) if states else 0

    def bpr_step(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, l2: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One BPR step; returns the summed batch loss and the pre-step scores of the negatives."""
        model = self.model
        _check_rows(users, model.n_users, "user")
        _check_rows(pos, model.n_items, "positive item")
        _check_rows(neg, model.n_items, "negative item")
        t = model.tables(grad=True)
        pu = rows_of(t.user, users) * t.h
        pos_s = torch.linalg.vecdot(pu, rows_of(t.item, pos))
        neg_s = torch.linalg.vecdot(pu, rows_of(t.item, neg))
        loss = bpr_loss(pos_s, neg_s)
        if l2 > 0:
            loss = loss + l2 * l2_penalty(*model.regularised_rows(users, torch.cat([pos, neg])))
        return self._apply(loss), neg_s.detach()

    def mixture_step(
        self, users: torch.Tensor, pos: torch.Tensor, mixture: Mixture, l2: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One BPR step against synthetic negatives (:func:`mixture_bpr_loss` on the model's layers,
        :meth:`reinforcens.models.base.Recommender.layer_tables`, through autograd); returns the
        summed batch loss and the pre-step scores of the negatives."""
        model = self.model
        user_layers, item_layers = model.layer_tables(grad=True)
        _check_mixture(model, users, pos, mixture, layers=item_layers.shape[1])
        pu, qi = user_layers[users], item_layers[pos]
        loss, neg_s = mixture_bpr_loss(
            pu.mean(1), pu[:, 0], qi.mean(1), qi[:, 0], item_layers, mixture, model.h, l2
        )
        return self._apply(loss), neg_s.detach()

    def _apply(self, loss: torch.Tensor) -> torch.Tensor:
        """Backpropagate ``loss`` and step (gradients and loss summed over ranks first)."""
        self.inner.zero_grad(set_to_none=True)
        loss.backward()
        loss = loss.detach()
        if self.ops is not None and self.ops.ranks > 1:
            loss = self._sum_over_ranks(loss)
        self.inner.step()
        self._sgd_steps += 1
        self.model.changed()
        return loss

    def _sum_over_ranks(self, loss: torch.Tensor) -> torch.Tensor:
        """Sum the gradients and the loss over the ranks of a data-parallel run (one reduction), so
        that the step is the one of the whole batch (the loss is a sum over the batch)."""
        assert self.ops is not None
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([loss.reshape(1).to(grads[0].dtype), *(g.reshape(-1) for g in grads)])
        flat = self.ops.all_sum(flat)
        at = 1
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[at : at + g.numel()].view_as(g).clone()
            at += g.numel()
        return flat[0].to(loss.dtype)

    def state_dict(self) -> dict[str, Any]:
        if self.kind == "sgd":
            return {"kind": "sgd", "steps": self._sgd_steps, "sgd": self.inner.state_dict()}
        return {"kind": "adam", "adam": self.adam.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"not an autograd {self.kind} state (kind {state.get('kind')!r})")
        if self.kind == "sgd":
            self._sgd_steps = int(state["steps"])
        self.inner.load_state_dict(state[self.kind])
