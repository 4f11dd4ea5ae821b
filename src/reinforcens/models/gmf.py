"""Generalized Matrix Factorization: ``score(u, i) = h . (p_u * q_i)`` (He et al., 2017)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class GMF(nn.Module):
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
        Standard deviation of the normal initialisation of both tables; ``h`` starts at ones, so an
        untrained GMF is a plain dot-product MF.
    generator
        Seeds the initialisation.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 32,
        init_std: float = 0.1,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.user = nn.Embedding(n_users, dim, sparse=True)
        self.item = nn.Embedding(n_items, dim, sparse=True)
        self.h = nn.Parameter(torch.ones(dim))
        with torch.no_grad():
            self.user.weight.normal_(0.0, init_std, generator=generator)
            self.item.weight.normal_(0.0, init_std, generator=generator)

    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Interaction features ``p_u * q_i``; ``items`` may have an extra trailing dimension."""
        p = self.user(users)
        q = self.item(items)
        if q.dim() == p.dim() + 1:
            p = p.unsqueeze(-2)
        return p * q

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of ``(users, items)``; ``items`` of shape (B,) or (B, N)."""
        return self.features(users, items) @ self.h

    @torch.no_grad()
    def score_lists(
        self, users: torch.Tensor, items: torch.Tensor, chunk: int = 4096
    ) -> torch.Tensor:
        """Scores of item lists (n, L) without building gradients, in user chunks."""
        out = []
        for s in range(0, users.shape[0], chunk):
            pu = self.user.weight[users[s : s + chunk]] * self.h
            q = self.item.weight[items[s : s + chunk]]
            out.append(torch.einsum("nd,nld->nl", pu, q))
        return torch.cat(out) if out else torch.zeros(items.shape, device=items.device)

    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for ``users``: (n, n_items)."""
        return (self.user.weight[users] * self.h) @ self.item.weight.T


class TorchScorer:
    """Adapts a GMF to the numpy :class:`reinforcens.evaluation.Scorer` protocol."""

    def __init__(self, model: GMF):
        self.model = model

    @property
    def device(self) -> torch.device:
        return self.model.h.device

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        u = torch.as_tensor(np.asarray(users), device=self.device)
        i = torch.as_tensor(np.asarray(items), device=self.device)
        return self.model.score_lists(u, i).double().cpu().numpy()

    def score_all(self, users: np.ndarray) -> np.ndarray:
        u = torch.as_tensor(np.asarray(users), device=self.device)
        return self.model.score_all(u).double().cpu().numpy()
