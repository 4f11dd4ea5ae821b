"""The recommender interface every model implements, and the dot-product view the samplers use.

Every recommender scores a pair ``(u, i)`` as ``r(u, i) = h . (P_u * Q_i)``, where ``P`` and ``Q`` are
its *effective* tables: the embedding tables themselves for GMF and MF, the propagated embeddings for
LightGCN. :meth:`Recommender.tables` returns them (detached, no gradients), and everything that reads a
model without training it (candidate scoring in DNS and the learned samplers, RNS's interaction
features ``P_u * Q_i``, list and full-ranking evaluation, ``recommend``) goes through it, so every
sampler works with every model and the compiled kernels of :mod:`reinforcens.kernels` score any of
them. Training goes through :meth:`Recommender.make_optimizer`: GMF and MF take the fused BPR/Adam
step with hand-computed gradients (:class:`reinforcens.optim.GMFOptimizer`), other models an
autograd step (:class:`reinforcens.optim.AutogradOptimizer`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from reinforcens.ops import Ops, make_ops

if TYPE_CHECKING:
    from reinforcens.data.prepared import PreparedDataset


class Tables(NamedTuple):
    """The effective tables of a recommender: ``score(u, i) = h . (user[u] * item[i])``."""

    user: torch.Tensor
    item: torch.Tensor
    h: torch.Tensor


@dataclass(frozen=True)
class ModelSpec:
    """What a model is built from: its kind and options, the table sizes and the training clicks
    (the graph of graph models)."""

    kind: str
    n_users: int
    n_items: int
    dim: int = 32
    init_std: float | str = 0.1
    layers: int = 3
    click_users: np.ndarray | None = None
    click_items: np.ndarray | None = None

    @classmethod
    def of(cls, config: Any, data: PreparedDataset, kind: str | None = None) -> ModelSpec:
        """The spec of a run's recommender (``kind``: another model kind on the same data)."""
        clicks = data.train_clicks
        return cls(
            kind=kind or config.model,
            n_users=data.n_users,
            n_items=data.n_items,
            dim=config.dim,
            init_std=config.init_std,
            layers=config.layers,
            click_users=clicks.users(),
            click_items=clicks.indices,
        )


class Recommender(nn.Module):
    """Base class of the recommenders (see the module docstring).

    Subclasses set :attr:`kind` and :attr:`label`, implement :meth:`from_spec` (the registry builds
    every model with it) and :meth:`tables` (with gradients when ``grad=True``); the rest is shared.
    """

    kind: ClassVar[str] = ""
    label: ClassVar[str] = ""
    #: whether the fused GMF step (hand-computed gradients, row-wise Adam) trains it
    dot_product: ClassVar[bool] = False
    #: whether it is built from the training clicks (its graph), so loading it needs the run's data
    needs_graph: ClassVar[bool] = False

    @classmethod
    def from_spec(cls, spec: ModelSpec, generator: torch.Generator | None = None) -> Recommender:
        """A new model of this kind for ``spec``, initialised from ``generator``."""
        raise NotImplementedError

    n_users: int
    n_items: int
    dim: int

    def tables(self, grad: bool = False) -> Tables:
        """The effective tables; detached unless ``grad`` (then differentiable in the parameters)."""
        raise NotImplementedError

    @property
    def n_layers(self) -> int:
        """``H``, the layers of :meth:`layer_tables` (1 for models without propagation)."""
        return 1

    def layer_tables(self, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The layers whose mean is the effective user and item tables: shapes ``(n_users, H, K)`` and
        ``(n_items, H, K)``, layer 0 the embedding tables themselves (LightGCN: ``E^(0) .. E^(K)``,
        ``H = K + 1``; one layer, the tables, for models without propagation). Detached unless
        ``grad``; without, they come from the same cache as :meth:`tables` (LightGCN fills both with one
        propagation). A synthetic negative (:class:`reinforcens.samplers.base.Mixture`) mixes rows of
        each layer."""
        t = self.tables(grad=grad)
        return t.user.unsqueeze(1), t.item.unsqueeze(1)

    @torch.no_grad()
    def mixture_scores(self, users: torch.Tensor, mixture: Any) -> torch.Tensor:
        """Scores ``h . (P_u * q~)`` of synthetic negatives ``q~``
        (:func:`reinforcens.losses.mixed_negative` of a :class:`reinforcens.samplers.base.Mixture`),
        without gradients."""
        from reinforcens.losses import mixed_negative

        t = self.tables()
        _, items = self.layer_tables()
        q = mixed_negative(items, mixture.items, mixture.weights).mean(1)
        return torch.linalg.vecdot(rows_of(t.user, users) * t.h, q)

    def changed(self) -> None:
        """Called after every update of the parameters (drops cached effective tables)."""

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.changed()
        return out

    def make_optimizer(self, lr: float, backend: str | Ops, optimizer: str = "adam"):
        """The optimizer that trains this model with BPR (``bpr_step``, ``state_dict``); ``backend``: a
        backend's name or the run's :class:`~reinforcens.ops.Ops`; ``optimizer``: the update rule,
        ``"adam"`` or ``"sgd"`` (the config's ``optimizer``, see :mod:`reinforcens.optim`)."""
        from reinforcens.optim import AutogradOptimizer

        return AutogradOptimizer(self, lr, ops=make_ops(backend), optimizer=optimizer)

    def regularised_rows(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parameter rows the L2 term of a BPR step applies to (the embeddings looked up)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ scoring (no gradients)
    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of ``(users, items)``, ``items`` of shape (B,) or (B, N): differentiable when
        gradients are enabled, from the cached effective tables otherwise."""
        t = self.tables(grad=torch.is_grad_enabled())
        p, q = rows_of(t.user, users), rows_of(t.item, items)
        if q.dim() == p.dim() + 1:
            p = p.unsqueeze(-2)
        return (p * q) @ t.h

    def features(self, users: torch.Tensor, items: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Interaction features ``P_u * Q_i`` (what RNS's MMD reward matches); ``items`` may have an
        extra trailing dimension."""
        t = self.tables(grad=grad)
        p = rows_of(t.user, users)
        q = rows_of(t.item, items)
        if q.dim() == p.dim() + 1:
            p = p.unsqueeze(-2)
        return p * q

    @torch.no_grad()
    def candidate_scores(
        self, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores of each user's candidates without building gradients.

        Parameters
        ----------
        users
            Shape (B,).
        items
            Shape (B, N).

        Returns
        -------
        scores : torch.Tensor
            Shape (B, N): ``h . (P_u * Q_i)``.
        user_rows : torch.Tensor
            ``P_u``, shape (B, K).
        item_rows : torch.Tensor
            ``Q_i``, shape (B, N, K).
        """
        from reinforcens.ops.torch_ops import candidate_scores

        return candidate_scores(self.tables(), users, items)

    @torch.no_grad()
    def score_lists(self, users: torch.Tensor, items: torch.Tensor, chunk: int = 128) -> torch.Tensor:
        """Scores of item lists (n, L) without building gradients.

        Works through ``chunk`` users at a time so that the gathered item rows stay in cache.
        """
        from reinforcens.ops.torch_ops import list_scores

        return list_scores(self.tables(), users, items, chunk)

    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for ``users``: (n, n_items)."""
        t = self.tables()
        return (t.user[users] * t.h) @ t.item.T

    def recommend(
        self, users: np.ndarray, k: int = 20, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` items of each user by score, in internal ids.

        Parameters
        ----------
        users
            (n,) internal user ids.
        k
            Items per user.
        exclude
            (n, n_items) sparse matrix whose nonzero entries are never recommended (e.g. the users'
            training clicks), row ``r`` for ``users[r]``.

        Returns
        -------
        items : numpy.ndarray of int64
            (n, min(k, n_items)) best first, ties by the lower item id; -1 past a user's last item.
        scores : numpy.ndarray of float64
            The scores of ``items`` (``-inf`` where ``items`` is -1).
        """
        scores = self.score_all(torch.as_tensor(np.asarray(users), device=self.device)).double().cpu().numpy()
        if exclude is not None:
            rows = sp.coo_matrix(exclude)
            scores[rows.row, rows.col] = -np.inf
        items = top_k(scores, min(k, scores.shape[1]))
        picked = np.take_along_axis(scores, np.maximum(items, 0), axis=1)
        return items, np.where(items >= 0, picked, -np.inf)

    def dot_state(self) -> dict[str, torch.Tensor]:
        """The effective tables as the state of a GMF (``user.weight``, ``item.weight``, ``h``): a
        GMF or MF loaded with it scores every pair as this model does."""
        t = self.tables()
        return {"user.weight": t.user.clone(), "item.weight": t.item.clone(), "h": t.h.clone()}


def rows_of(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` (rows, ``index`` of any shape) by ``index_select``, whose backward (an
    ``index_add``) sums repeated rows in a fixed order; the backward of ``table[index]`` does not on a
    multi-threaded CPU, so training would not be reproducible from its seed."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[1])


@torch.no_grad()
def init_tables(
    tables: tuple[nn.Embedding, ...], init_std: float | str, generator: torch.Generator | None
) -> None:
    """Initialise embedding tables in order: a normal of std ``init_std``, or for ``"xavier"`` Glorot's
    normal scale ``sqrt(2 / (rows + dim))`` of each table (PyTorch's ``xavier_normal_``)."""
    for table in tables:
        rows, dim = table.weight.shape
        std = math.sqrt(2.0 / (rows + dim)) if init_std == "xavier" else float(init_std)
        table.weight.normal_(0.0, std, generator=generator)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` highest finite scores, best first, ties by lower index;
    rows with fewer finite scores are padded with -1."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    finite = np.isfinite(np.take_along_axis(scores, order, axis=1))
    return np.where(finite, order, -1)


class TorchScorer:
    """Adapts a recommender to the numpy :class:`reinforcens.evaluation.Scorer` protocol.

    ``backend``: ``"numba"`` scores item lists in one compiled pass over the effective tables (CPU,
    float32), ``"torch"`` in torch operations on the model's device; ``None`` picks numba where it
    can run. The backend is resolved once, here, into :attr:`ops` (:func:`reinforcens.ops.make_ops`),
    whose list scoring (:meth:`reinforcens.ops.Ops.score_lists`) :meth:`score` calls.
    """

    def __init__(self, model: Recommender, backend: str | None = None):
        self.model = model
        if backend is None:
            from reinforcens.backend import numba_available

            fits = model.device.type == "cpu" and model.tables().h.dtype == torch.float32
            backend = "numba" if fits and numba_available() else "torch"
        self.ops = make_ops(backend)

    @property
    def backend(self) -> str:
        """The compute backend's name (read-only: see :attr:`ops`)."""
        return self.ops.name

    @property
    def device(self) -> torch.device:
        return self.model.device

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of item lists (float64)."""
        return self.ops.score_lists(self.model.tables(), users, items)

    def score_all(self, users: np.ndarray) -> np.ndarray:
        u = torch.as_tensor(np.asarray(users), device=self.device)
        return self.model.score_all(u).double().cpu().numpy()
