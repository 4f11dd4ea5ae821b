"""Device-side training data: positives, per-user click/exposure sets and vectorized samplers.

Membership tests are binary searches over sorted ``user * n_items + item`` keys (``torch.searchsorted``).
Uniform sampling among the items a user did not click (or neither clicked nor was shown) is exact and
needs no rejection: a uniform rank among the allowed items is mapped to the item with one binary search
over "gap keys" (see :func:`_gap_keys`). Nothing runs per user in Python, and nothing waits for the
device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from reinforcens.backend import np_view
from reinforcens.data.prepared import PreparedDataset
from reinforcens.errors import DataError
from reinforcens.ops import Ops, make_ops


class SortedKeys:
    """A sorted int64 array laid out for fast batched binary searches.

    The keys are stored in blocks of :attr:`block` (the last one padded with the largest int64), and
    the first key of every block is kept in a separate, ``block`` times smaller array. A search runs
    :func:`torch.searchsorted` on that small array (which stays in cache) and then compares the query
    with the one block it falls in (one contiguous read), instead of a binary search that misses the
    cache at almost every level of a large array.

    Parameters
    ----------
    keys
        Sorted int64 keys (1-D), on the device where searches run.
    block
        Keys per block.
    """

    def __init__(self, keys: torch.Tensor, block: int = 16):
        n = int(keys.numel())
        n_blocks = max(1, -(-n // block))
        padded = torch.full(
            (n_blocks * block,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=keys.device
        )
        padded[:n] = keys
        self.n = n
        self.block = block
        self.blocks = padded.view(n_blocks, block)
        self.heads = self.blocks[:, 0].contiguous()

    @property
    def keys(self) -> torch.Tensor:
        """The sorted keys (a view)."""
        return self.blocks.view(-1)[: self.n]

    def _block_of(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block index of each query, the rows of those blocks, and the queries as a column."""
        j = torch.searchsorted(self.heads, query, right=True).sub_(1).clamp_(min=0)
        return j, self.blocks.index_select(0, j.reshape(-1)), query.reshape(-1, 1)

    def count_le(self, query: torch.Tensor) -> torch.Tensor:
        """Number of keys ``<= query``, elementwise (``searchsorted(keys, query, right=True)``)."""
        if query.numel() == 0:  # a batched searchsorted cannot reshape zero rows
            return torch.zeros(query.shape, dtype=torch.int64, device=query.device)
        j, rows, column = self._block_of(query)
        inside = torch.searchsorted(rows, column, right=True).view(query.shape)
        return inside.add_(j.mul_(self.block))

    def contains(self, query: torch.Tensor) -> torch.Tensor:
        """Whether each query is one of the keys."""
        if self.n == 0 or query.numel() == 0:
            return torch.zeros(query.shape, dtype=torch.bool, device=query.device)
        _, rows, column = self._block_of(query)
        pos = torch.searchsorted(rows, column).clamp_(max=self.block - 1)
        return rows.gather(1, pos).view(query.shape) == query


def _gap_keys(keys: np.ndarray, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user offsets and "gap keys" of a sorted, unique array of blocked ``user * n_items + item``.

    If a user's blocked items are ``b_0 < b_1 < ... < b_{m-1}``, their gap keys are
    ``user * n_items + b_t - t`` (still sorted). The ``k``-th (0-based) item that is not blocked is
    ``k + #{t : b_t - t <= k}``, so for a rank ``k`` it is
    ``k + searchsorted(gap_keys, user * n_items + k, right=True) - indptr[user]``.

    Returns
    -------
    indptr : numpy.ndarray of int64, shape (n_users + 1,)
        Offsets of each user's keys.
    gaps : numpy.ndarray of int64
        The gap keys, aligned with ``keys``.
    """
    users = keys // n_items
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    rank = np.arange(keys.size, dtype=np.int64) - indptr[users]
    return indptr, keys - rank


def _row_gaps(gaps: np.ndarray, indptr: np.ndarray, n_items: int) -> np.ndarray:
    """The gap keys of :func:`_gap_keys` without their row's ``user * n_items``: ``b_t - t`` for a
    user's ``t``-th blocked item, so the ``k``-th item that is not blocked is
    ``k + #{t : b_t - t <= k}`` within the row's segment, and a row starting at ``lo = indptr[user]``
    blocks the items ``gaps[lo + t] + t``.

    What the compiled kernels read: int32 (half the bytes of the int64 keys, which a per-row bitmap or
    binary search streams through) while ``n_items`` allows it, int64 otherwise.
    """
    dtype = np.int32 if n_items <= np.iinfo(np.int32).max else np.int64
    rows = np.repeat(np.arange(indptr.size - 1, dtype=np.int64) * n_items, np.diff(indptr))
    np.subtract(gaps, rows, out=rows)  # one temporary of the keys' size
    return rows.astype(dtype, copy=False)


@dataclass
class TrainingData:
    """Tensors of one prepared dataset on one device.

    Attributes
    ----------
    pos_users, pos_items : torch.Tensor
        The training clicks, one entry per positive pair.
    clicks, exposures : SortedKeys
        Sorted ``user * n_items + item`` keys of training clicks and of exposed-unclicked pairs
        (:attr:`click_keys` and :attr:`exposure_keys` are the plain arrays).
    click_counts : torch.Tensor
        Training clicks per user.
    exp_indptr : torch.Tensor
        Per-user offsets into the exposure keys (a CSR of exposed-unclicked items).
    item_clicks : torch.Tensor
        Training clicks per item.
    click_gaps, click_indptr, click_free
        Gap keys (:func:`_gap_keys`) and per-user offsets of the clicked items, and each user's
        number of non-clicked items: uniform sampling among non-clicked items.
    blocked_gaps, blocked_indptr, blocked_free
        The same for clicked or exposed items (only clicked ones for users who were shown every
        other item): uniform sampling among items neither clicked nor exposed.
    ops : reinforcens.ops.Ops
        The compute backend the draws and membership tests run in (:func:`reinforcens.ops.make_ops`):
        the compiled kernels of :mod:`reinforcens.kernels` (``"numba"``, CPU only) or torch
        operations (``"torch"``); :attr:`backend` is its name.
    """

    n_users: int
    n_items: int
    pos_users: torch.Tensor
    pos_items: torch.Tensor
    clicks: SortedKeys
    click_counts: torch.Tensor
    exposures: SortedKeys
    exp_indptr: torch.Tensor
    item_clicks: torch.Tensor
    click_gaps: SortedKeys
    click_indptr: torch.Tensor
    click_free: torch.Tensor
    blocked_gaps: SortedKeys
    blocked_indptr: torch.Tensor
    blocked_free: torch.Tensor
    ops: Ops

    @classmethod
    def from_prepared(
        cls, data: PreparedDataset, device: str | torch.device = "cpu", backend: str = "torch"
    ) -> TrainingData:
        """Build the tensors of ``data`` on ``device``; ``backend`` is ``"torch"`` or ``"numba"``.

        Raises
        ------
        DataError
            If a user clicked every item (no negative exists for them).
        """
        ops = make_ops(backend)
        ops.check_device(device)
        clicks, exposures = data.train_clicks, data.train_exposures
        n_users, n_items = data.n_users, data.n_items
        ops.check_catalogue(n_items)
        click_counts = clicks.counts()
        full = np.flatnonzero(click_counts >= n_items)
        if full.size:
            raise DataError(
                f"{full.size} user(s) clicked every item in training, so no negative exists for "
                f"them (first: user {data.user_ids[full[0]]!r})",
                data.path,
            )

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a, dtype=np.int64), device=device)

        def keys(a: np.ndarray) -> SortedKeys:
            return SortedKeys(t(a))

        click_keys = clicks.keys()
        exposure_keys = exposures.keys()
        click_indptr, click_gaps = _gap_keys(click_keys, n_users, n_items)
        # items neither clicked nor exposed; users left with none keep only their clicks blocked
        room = click_counts + exposures.counts() < n_items
        if room.all():
            blocked = np.union1d(click_keys, exposure_keys)
        else:
            blocked = np.union1d(click_keys, exposure_keys[room[exposure_keys // n_items]])
        blocked_indptr, blocked_gaps = _gap_keys(blocked, n_users, n_items)
        del blocked
        return cls(
            n_users=n_users,
            n_items=n_items,
            pos_users=t(clicks.users()),
            pos_items=t(clicks.indices),
            clicks=keys(click_keys),
            click_counts=t(click_counts),
            exposures=keys(exposure_keys),
            exp_indptr=t(exposures.indptr),
            item_clicks=t(data.item_popularity()),
            click_gaps=keys(click_gaps),
            click_indptr=t(click_indptr),
            click_free=t(n_items - click_counts),
            blocked_gaps=keys(blocked_gaps),
            blocked_indptr=t(blocked_indptr),
            blocked_free=t(n_items - np.diff(blocked_indptr)),
            ops=ops,
        )

    @cached_property
    def _arrays(self) -> dict[str, np.ndarray]:
        """numpy views of the tensors the compiled kernels read (numba backend, CPU), the gap keys as
        row gaps (:func:`_row_gaps`)."""
        names = {
            "click_indptr": self.click_indptr,
            "click_free": self.click_free,
            "blocked_indptr": self.blocked_indptr,
            "blocked_free": self.blocked_free,
            "click_keys": self.clicks.keys,
            "exposure_keys": self.exposures.keys,
            "exp_indptr": self.exp_indptr,
        }
        out = {k: np.ascontiguousarray(np_view(v)) for k, v in names.items()}
        for part in ("click", "blocked"):
            gaps = np_view(getattr(self, f"{part}_gaps").keys)
            out[f"{part}_gaps"] = _row_gaps(gaps, out[f"{part}_indptr"], self.n_items)
        # a user's blocked set includes their exposures (else only their clicks: no room was left)
        out["blocked_has_exposure"] = np.diff(out["blocked_indptr"]) > np.diff(out["click_indptr"])
        out["no_user"] = np.zeros(self.n_users, dtype=bool)
        return out

    @cached_property
    def _click_hash(self) -> tuple[np.ndarray, int]:
        """A hash set of the click keys for rejection draws (numba backend): table and shift."""
        from reinforcens.kernels import hash_build

        keys = self._arrays["click_keys"]
        bits = max(4, int(np.ceil(np.log2(max(keys.size, 1) * 1.5))))
        return hash_build(keys, bits), 64 - bits

    @property
    def backend(self) -> str:
        """The compute backend's name, ``"numba"`` or ``"torch"`` (read-only: see :attr:`ops`)."""
        return self.ops.name

    @property
    def fast(self) -> bool:
        """Whether the compiled kernels are used."""
        return self.ops.compiled

    @property
    def device(self) -> torch.device:
        return self.pos_users.device

    @property
    def n_positives(self) -> int:
        return int(self.pos_users.numel())

    @property
    def click_keys(self) -> torch.Tensor:
        """Sorted ``user * n_items + item`` keys of the training clicks."""
        return self.clicks.keys

    @property
    def exposure_keys(self) -> torch.Tensor:
        """Sorted ``user * n_items + item`` keys of the exposed-unclicked pairs."""
        return self.exposures.keys

    @property
    def exp_indices(self) -> torch.Tensor:
        """Exposed-unclicked items, per user in :attr:`exp_indptr` order (computed on access)."""
        return self.exposure_keys.remainder(self.n_items)

    def exposure_counts(self, users: torch.Tensor) -> torch.Tensor:
        return self.exp_indptr[users + 1] - self.exp_indptr[users]

    def is_clicked(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) is a training click; ``users`` broadcasts against ``items``."""
        return self.ops.is_clicked(self, users, items)

    def is_exposed(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) was shown in training and not clicked."""
        return self.ops.is_exposed(self, users, items)

    def sample_uniform(
        self,
        users: torch.Tensor,
        n: int,
        generator: torch.Generator,
        exclude_exposed: bool = False,
    ) -> torch.Tensor:
        """Items drawn uniformly (with replacement) among those each user did not click.

        Exact: a uniform rank ``k`` among the user's allowed items is mapped to the ``k``-th allowed
        item with one search (see :func:`_gap_keys`), so the cost is a fixed handful of vectorized
        operations whatever the user's number of clicks, and nothing waits for the device
        (:meth:`reinforcens.ops.Ops.sample_uniform`).

        Parameters
        ----------
        users
            Shape (B,).
        n
            Draws per user; result shape (B, n).
        generator
            The random stream (on the data's device).
        exclude_exposed
            Also exclude the user's exposed-unclicked items. Users for whom nothing is left fall back
            to non-clicked items.
        """
        return self.ops.sample_uniform(self, users, n, generator, exclude_exposed)

    def sample_candidates(
        self,
        users: torch.Tensor,
        n: int,
        n_exp: int,
        exclude_exposed: bool,
        generator: torch.Generator,
        flags: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Candidates of a learned sampler (:meth:`reinforcens.ops.Ops.sample_candidates`).

        ``n - n_exp`` uniform draws per user (among non-clicked items, also excluding exposed ones if
        ``exclude_exposed``) followed by ``n_exp`` draws from the user's exposed-unclicked items
        (uniform draws instead for users without any): what :meth:`sample_uniform` and
        :meth:`sample_exposed` give (with other random numbers on the numba backend, which draws them
        all in one compiled pass).

        Returns
        -------
        cands : torch.Tensor
            (B, n) items.
        exposed : torch.Tensor or None
            (B, n) whether each candidate is an exposed-unclicked item of the user (``None`` unless
            ``flags``).
        """
        return self.ops.sample_candidates(self, users, n, n_exp, exclude_exposed, generator, flags)

    def sample_exposed(
        self, users: torch.Tensor, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Items drawn uniformly (with replacement) from each user's exposed-unclicked items.

        Returns
        -------
        items : torch.Tensor of shape (B, n)
            ``-1`` for users without exposures.
        has : torch.Tensor of bool, shape (B,)
            Whether the user has any exposure.
        """
        return self.ops.sample_exposed(self, users, n, generator)

    def batches(
        self, batch_size: int, generator: torch.Generator, repeat: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled minibatches of (users, positive items); each positive ``repeat`` times.

        The epoch's order is gathered once, so each batch is a pair of views.
        """
        n = self.n_positives * repeat
        perm = torch.randperm(n, device=self.device, generator=generator)
        if repeat > 1:
            perm = perm.remainder_(self.n_positives)
        users, items = self.pos_users[perm], self.pos_items[perm]
        del perm
        for s in range(0, n, batch_size):
            yield users[s : s + batch_size], items[s : s + batch_size]
