"""Generalized Matrix Factorization ``score(u, i) = h . (p_u * q_i)`` (He et al., WWW 2017) and plain
matrix factorization ``score(u, i) = p_u . q_i`` (the BPR-MF of Rendle et al., UAI 2009)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from reinforcens.models.base import ModelSpec, Recommender, Tables, init_tables, rows_of
from reinforcens.ops import Ops


class GMF(Recommender):
    """GMF scorer with user/item embeddings and an output weight vector, no bias.

    The embedding tables are ``nn.Embedding(sparse=True)`` so that a row-wise optimizer
    (:class:`torch.optim.SparseAdam`) touches only the rows of a batch; ``h`` is a dense parameter.

    Parameters
    ----------
    n_users, n_items
        Table sizes.
    dim
        Embedding size ``K`` (32 in the paper).
    init_std
        Standard deviation of the normal initialisation of both tables, or ``"xavier"`` for Glorot's
        normal scale ``sqrt(2 / (rows + dim))`` of each table (PyTorch's ``xavier_normal_``, which
        RecBole uses for its embeddings); ``h`` starts at ones, so an untrained GMF is a plain
        dot-product MF.
    generator
        Seeds the initialisation.
    """

    kind: ClassVar[str] = "gmf"
    label: ClassVar[str] = "GMF"
    dot_product: ClassVar[bool] = True
    #: whether ``h`` is trained (GMF) or fixed at ones (MF)
    trains_h: ClassVar[bool] = True

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 32,
        init_std: float | str = 0.1,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.user = nn.Embedding(n_users, dim, sparse=True)
        self.item = nn.Embedding(n_items, dim, sparse=True)
        self.h = nn.Parameter(torch.ones(dim))
        init_tables((self.user, self.item), init_std, generator)

    @classmethod
    def from_spec(cls, spec: ModelSpec, generator: torch.Generator | None = None) -> GMF:
        return cls(spec.n_users, spec.n_items, spec.dim, spec.init_std, generator=generator)

    def tables(self, grad: bool = False) -> Tables:
        if grad:
            return Tables(self.user.weight, self.item.weight, self.h)
        return Tables(self.user.weight.detach(), self.item.weight.detach(), self.h.detach())

    def features(self, users: torch.Tensor, items: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Interaction features ``p_u * q_i``; ``items`` may have an extra trailing dimension. With
        ``grad``, through the sparse embedding lookups (sparse table gradients)."""
        if not grad:
            return super().features(users, items)
        p = self.user(users)
        q = self.item(items)
        if q.dim() == p.dim() + 1:
            p = p.unsqueeze(-2)
        return p * q

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores ``h . (p_u * q_i)``, through the sparse embedding lookups when gradients are on."""
        if not torch.is_grad_enabled():
            return super().forward(users, items)
        return self.features(users, items, grad=True) @ self.h

    def regularised_rows(self, users, items):
        return rows_of(self.user.weight, users), rows_of(self.item.weight, items)

    def make_optimizer(self, lr: float, backend: str | Ops, optimizer: str = "adam"):
        """The fused row-wise optimizer of ``optimizer``: ``"adam"``
        (:class:`~reinforcens.optim.GMFOptimizer`) or ``"sgd"`` (:class:`~reinforcens.optim.SGDOptimizer`)."""
        from reinforcens.optim import ROW_OPTIMIZERS

        if optimizer not in ROW_OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(ROW_OPTIMIZERS)}, got {optimizer!r}")
        return ROW_OPTIMIZERS[optimizer](self, lr, backend=backend)


class MF(GMF):
    """Matrix factorization, ``score(u, i) = p_u . q_i``: a GMF whose ``h`` is fixed at ones (a
    buffer, never trained), so it shares GMF's compiled training and scoring kernels. The BPR-MF of
    Rendle et al. (UAI 2009), the common baseline of the negative-sampling papers since (MixGCF, DENS,
    AHNS). ``init_std`` as GMF's."""

    kind: ClassVar[str] = "mf"
    label: ClassVar[str] = "MF"
    trains_h: ClassVar[bool] = False

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 32,
        init_std: float | str = 0.1,
        generator: torch.Generator | None = None,
    ):
        super().__init__(n_users, n_items, dim, init_std, generator)
        del self.h
        self.register_buffer("h", torch.ones(dim))
