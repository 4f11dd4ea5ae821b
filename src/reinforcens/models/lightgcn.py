"""LightGCN (He et al., SIGIR 2020): embeddings propagated over the user-item graph of training clicks.

With ``E^(0)`` the stacked user and item embeddings and ``A`` the symmetric-normalised adjacency of the
bipartite graph of training clicks, ``A = D^(-1/2) [[0, R], [R^T, 0]] D^(-1/2)`` (the paper's equation
7; ``D`` the node degrees, isolated nodes left at zero),

.. math::

    E^{(k+1)} = A E^{(k)}, \\qquad E = \\frac{1}{K + 1} \\sum_{k=0}^{K} E^{(k)}

(equations 8 and 9: no feature transform, no non-linearity, the layer mean), and ``score(u, i) = e_u .
e_i``. Only ``E^(0)`` is trained; the L2 term of a BPR step applies to the ``E^(0)`` rows of the batch
(the paper's equation 15). Training differentiates through the propagation (autograd), as the authors'
code and RecBole's ``LightGCN`` do.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from reinforcens.models.base import ModelSpec, Recommender, Tables, init_tables, rows_of


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """The sparse (CSR) ``D^(-1/2) A D^(-1/2)`` of the bipartite click graph, users first; repeated
    pairs count once."""
    keys = np.unique(np.asarray(users, dtype=np.int64) * n_items + np.asarray(items, dtype=np.int64))
    u, i = keys // n_items, keys % n_items
    n = n_users + n_items
    rows = np.concatenate([u, n_users + i])
    cols = np.concatenate([n_users + i, u])
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    inv = np.zeros(n)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    vals = (inv[rows] * inv[cols]).astype(np.float32)
    adj = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(vals), (n, n), check_invariants=True
    ).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": matmul by a dense matrix is all we use
        warnings.simplefilter("ignore", UserWarning)
        return adj.to_sparse_csr()


class _SymmetricPropagation(torch.autograd.Function):
    """``A @ E`` for a symmetric sparse ``A`` (no gradient of its own), whose backward is ``A @ G``.

    Autograd's backward of a sparse CSR product multiplies by ``A^T``, which it builds anew on every
    call. The normalised adjacency of :func:`normalized_adjacency` is exactly symmetric (entries
    ``(u, i)`` and ``(i, u)`` hold the same float32 product ``d_u^{-1/2} d_i^{-1/2}``), so its backward
    is one more product like the forward's (BENCHMARKS.md, "LightGCN's backward pass").
    """

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(adjacency)
        return adjacency @ e

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        (adjacency,) = ctx.saved_tensors
        return None, adjacency @ grad


class LightGCN(Recommender):
    """LightGCN over the training clicks (see the module docstring).

    Parameters
    ----------
    n_users, n_items, dim, init_std, generator
        As :class:`reinforcens.models.gmf.GMF` (the paper initialises with a normal of std 0.1).
    layers
        ``K``, the propagation layers (3 in the paper's main results).
    click_users, click_items
        The training clicks: the graph.
    """

    kind: ClassVar[str] = "lightgcn"
    label: ClassVar[str] = "LightGCN"
    needs_graph: ClassVar[bool] = True

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        layers: int,
        click_users: np.ndarray,
        click_items: np.ndarray,
        init_std: float | str = 0.1,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.n_users, self.n_items, self.dim, self.layers = n_users, n_items, dim, layers
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        init_tables((self.user, self.item), init_std, generator)
        self.register_buffer(
            "adjacency", normalized_adjacency(click_users, click_items, n_users, n_items), persistent=False
        )
        self.register_buffer("h", torch.ones(dim), persistent=False)
        self._cache: Tables | None = None
        self._layers: tuple[torch.Tensor, torch.Tensor] | None = None
        #: the propagation behind the caches, recorded by autograd: (user, item, user layers, item layers)
        self._graph: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        #: the weights' in-place versions when the caches were filled
        self._versions: tuple[int, int] | None = None

    @classmethod
    def from_spec(cls, spec: ModelSpec, generator: torch.Generator | None = None) -> LightGCN:
        if spec.click_users is None or spec.click_items is None:
            raise ValueError("LightGCN needs the training clicks (its graph)")
        return cls(
            spec.n_users, spec.n_items, spec.dim, spec.layers, spec.click_users, spec.click_items,
            spec.init_std, generator,
        )  # fmt: skip

    def _apply(self, fn, recurse: bool = True):  # .to(device) and friends drop the cache
        self.changed()
        return super()._apply(fn, recurse)

    def changed(self) -> None:
        self._cache = self._layers = self._graph = self._versions = None

    def _weight_versions(self) -> tuple[int, int]:
        return self.user.weight._version, self.item.weight._version

    def _drop_stale(self) -> None:
        """Drop the caches if a weight was changed in place since they were filled (by an optimizer
        or code that does not call :meth:`changed`): torch counts every in-place write of a tensor."""
        if self._versions is not None and self._versions != self._weight_versions():
            self.changed()

    def _layer_list(self) -> list[torch.Tensor]:
        """``[E^(0), .., E^(K)]``, users first in each."""
        e = torch.cat([self.user.weight, self.item.weight])
        layers = [e]
        for _ in range(self.layers):
            e = _SymmetricPropagation.apply(self.adjacency, e)
            layers.append(e)
        return layers

    def _pooled(self, layers: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        total = layers[0]
        for e in layers[1:]:
            total = total + e
        total = total / (self.layers + 1)
        return total[: self.n_users], total[self.n_users :]

    def _stacked(self, layers: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        stacked = torch.stack(layers, dim=1)
        return stacked[: self.n_users], stacked[self.n_users :]

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The propagated user and item embeddings (differentiable in ``E^(0)``)."""
        return self._pooled(self._layer_list())

    def propagate_layers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The layers ``E^(0) .. E^(K)`` of the users and the items, shapes ``(n_users, K + 1, dim)``
        and ``(n_items, K + 1, dim)`` (differentiable in ``E^(0)``); their mean over the layers is
        :meth:`propagate` up to rounding."""
        return self._stacked(self._layer_list())

    def _fill_cache(self) -> None:
        """One propagation for both caches (the effective tables and the layers, detached) and for the
        next training step of the same weights: it is recorded by autograd, and the first call of
        :meth:`tables` or :meth:`layer_tables` with ``grad=True`` takes it (later ones propagate
        anew), so a sampler that scores with the model and the BPR step that follows share one pass
        (the authors' samplers score with the embeddings of the training forward too). The values
        are those of a new propagation; the caches last until the weights change."""
        with torch.enable_grad():
            layers = self._layer_list()
            p, q = self._pooled(layers)
            user_layers, item_layers = self._stacked(layers)
        # kept only if autograd recorded it (not under inference_mode, nor for frozen weights)
        self._graph = (p, q, user_layers, item_layers) if p.requires_grad else None
        self._cache = Tables(p.detach(), q.detach(), self.h)
        self._layers = (user_layers.detach(), item_layers.detach())
        self._versions = self._weight_versions()

    def _take_graph(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The recorded propagation of the current weights, once (a graph is backpropagated once)."""
        self._drop_stale()
        graph, self._graph = self._graph, None
        return graph

    @property
    def n_layers(self) -> int:
        return self.layers + 1

    def tables(self, grad: bool = False) -> Tables:
        if grad:
            graph = self._take_graph()
            p, q = graph[:2] if graph is not None else self.propagate()
            return Tables(p, q, self.h)
        self._drop_stale()
        if self._cache is None:
            self._fill_cache()
        assert self._cache is not None
        return self._cache

    def layer_tables(self, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if grad:
            graph = self._take_graph()
            return (graph[2], graph[3]) if graph is not None else self.propagate_layers()
        self._drop_stale()
        if self._layers is None:
            self._fill_cache()
        assert self._layers is not None
        return self._layers

    def regularised_rows(self, users, items):
        return rows_of(self.user.weight, users), rows_of(self.item.weight, items)
