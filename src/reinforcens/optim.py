"""Optimizers for GMF models.

The embedding tables are updated with :class:`torch.optim.SparseAdam` (row-wise "lazy" Adam): only the
rows looked up in a batch are touched, their first/second moments are updated only when the row is in a
batch, and rows outside the batch keep their moments unchanged (dense Adam would decay every row's
moments and still move rows with a zero gradient through momentum). The dense output vector ``h`` uses
ordinary Adam. Both use the same learning rate and betas.
"""

from __future__ import annotations

from typing import Any

import torch

from reinforcens.models.gmf import GMF


class GMFOptimizer:
    """Row-wise Adam for a GMF's tables plus dense Adam for ``h``."""

    def __init__(self, model: GMF, lr: float):
        self.sparse = torch.optim.SparseAdam([model.user.weight, model.item.weight], lr=lr)
        self.dense = torch.optim.Adam([model.h], lr=lr)

    def zero_grad(self) -> None:
        self.sparse.zero_grad(set_to_none=True)
        self.dense.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.sparse.step()
        self.dense.step()

    def state_dict(self) -> dict[str, Any]:
        return {"sparse": self.sparse.state_dict(), "dense": self.dense.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sparse.load_state_dict(state["sparse"])
        self.dense.load_state_dict(state["dense"])
