"""Generalized Matrix Factorization: ``score(u, i) = h . (p_u * q_i)`` (He et al., 2017)."""

from __future__ import annotations

import math

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
        Standard deviation of the normal initialisation of both tables, or ``"xavier"`` for Glorot's
        normal scale ``sqrt(2 / (rows + dim))`` of each table (PyTorch's ``xavier_normal_``, which
        RecBole uses for its embeddings); ``h`` starts at ones, so an untrained GMF is a plain
        dot-product MF.
    generator
        Seeds the initialisation.
    """

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
        with torch.no_grad():
            for table in (self.user, self.item):
                rows = table.weight.shape[0]
                std = math.sqrt(2.0 / (rows + dim)) if init_std == "xavier" else float(init_std)
                table.weight.normal_(0.0, std, generator=generator)

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
            Shape (B, N): ``h . (p_u * q_i)``.
        user_rows : torch.Tensor
            ``p_u``, shape (B, K).
        item_rows : torch.Tensor
            ``q_i``, shape (B, N, K).
        """
        pu = self.user.weight.index_select(0, users)
        q = self.item.weight.index_select(0, items.reshape(-1)).view(*items.shape, self.dim)
        scores = torch.linalg.vecdot(q, (pu * self.h).unsqueeze(1))
        return scores, pu, q

    @torch.no_grad()
    def score_lists(self, users: torch.Tensor, items: torch.Tensor, chunk: int = 128) -> torch.Tensor:
        """Scores of item lists (n, L) without building gradients.

        Works through ``chunk`` users at a time so that the gathered item rows stay in cache.
        """
        out = torch.empty(items.shape, dtype=self.h.dtype, device=items.device)
        for s in range(0, users.shape[0], chunk):
            pu = self.user.weight.index_select(0, users[s : s + chunk]).mul_(self.h)
            rows = items[s : s + chunk]
            q = self.item.weight.index_select(0, rows.reshape(-1)).view(*rows.shape, self.dim)
            out[s : s + chunk] = torch.linalg.vecdot(q, pu.unsqueeze(1))
        return out

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
        """Scores of item lists; on the CPU with numba, one compiled pass (rows in parallel)."""
        from reinforcens.backend import numba_available

        if self.device.type == "cpu" and numba_available() and self.model.h.dtype == torch.float32:
            from reinforcens.kernels import score_lists

            m = self.model
            return score_lists(
                np.ascontiguousarray(users, dtype=np.int64), np.ascontiguousarray(items, dtype=np.int64),
                m.user.weight.detach().numpy(), m.item.weight.detach().numpy(), m.h.detach().numpy(),
            )  # fmt: skip
        u = torch.as_tensor(np.asarray(users), device=self.device)
        i = torch.as_tensor(np.asarray(items), device=self.device)
        return self.model.score_lists(u, i).double().cpu().numpy()

    def score_all(self, users: np.ndarray) -> np.ndarray:
        u = torch.as_tensor(np.asarray(users), device=self.device)
        return self.model.score_all(u).double().cpu().numpy()
