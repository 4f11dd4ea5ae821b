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

from reinforcens.backend import draw_seed, np_view
from reinforcens.data.prepared import PreparedDataset
from reinforcens.errors import DataError

#: upper bound (exclusive) of the integer draws reduced modulo the number of allowed items
_DRAW_RANGE = 1 << 62
#: an empty hash table: no rejection draws
_NO_TABLE = np.full(0, -1, dtype=np.int64)


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
        j, rows, column = self._block_of(query)
        inside = torch.searchsorted(rows, column, right=True).view(query.shape)
        return inside.add_(j.mul_(self.block))

    def contains(self, query: torch.Tensor) -> torch.Tensor:
        """Whether each query is one of the keys."""
        if self.n == 0:
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
    backend : str
        ``"numba"``: draws and membership tests run in the compiled kernels of
        :mod:`reinforcens.kernels` (CPU only); ``"torch"``: in torch operations.
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
    backend: str = "torch"

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
        if backend not in ("torch", "numba"):
            raise ValueError(f"backend must be 'torch' or 'numba', got {backend!r}")
        if backend == "numba" and torch.device(device).type != "cpu":
            raise ValueError(f"the numba backend runs on the CPU only, not on {device}")
        clicks, exposures = data.train_clicks, data.train_exposures
        n_users, n_items = data.n_users, data.n_items
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
            backend=backend,
        )

    @cached_property
    def _arrays(self) -> dict[str, np.ndarray]:
        """numpy views of the tensors the compiled kernels read (numba backend, CPU)."""
        names = {
            "click_gaps": self.click_gaps.keys,
            "click_indptr": self.click_indptr,
            "click_free": self.click_free,
            "blocked_gaps": self.blocked_gaps.keys,
            "blocked_indptr": self.blocked_indptr,
            "blocked_free": self.blocked_free,
            "click_keys": self.clicks.keys,
            "exposure_keys": self.exposures.keys,
            "exp_indptr": self.exp_indptr,
        }
        out = {k: np.ascontiguousarray(np_view(v)) for k, v in names.items()}
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
    def fast(self) -> bool:
        """Whether the compiled kernels are used."""
        return self.backend == "numba"

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
        if self.fast:
            a = self._arrays
            return self._contains(a["click_keys"], a["click_indptr"], users, items)
        return self.clicks.contains(users * self.n_items + items)

    def is_exposed(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) was shown in training and not clicked."""
        if self.fast:
            a = self._arrays
            return self._contains(a["exposure_keys"], a["exp_indptr"], users, items)
        return self.exposures.contains(users * self.n_items + items)

    def _contains(
        self, keys: np.ndarray, indptr: np.ndarray, users: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        from reinforcens.kernels import contains_segments

        u, i = torch.broadcast_tensors(users, items)
        u_flat, i_flat = u.reshape(-1).contiguous(), i.reshape(-1).contiguous()
        flat = contains_segments(keys, indptr, np_view(u_flat), np_view(i_flat), self.n_items)
        return torch.from_numpy(flat).view(u.shape)

    def sample_uniform(
        self,
        users: torch.Tensor,
        n: int,
        generator: torch.Generator,
        exclude_exposed: bool = False,
    ) -> torch.Tensor:
        """Items drawn uniformly (with replacement) among those each user did not click.

        Exact and without rejection: a uniform rank ``k`` among the user's allowed items is mapped to
        the ``k``-th allowed item with one search (see :func:`_gap_keys`), so the cost is a fixed
        handful of vectorized operations whatever the user's number of clicks, and nothing waits for
        the device.

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
        if self.fast:
            from reinforcens.kernels import sample_uniform

            a = self._arrays
            part = "blocked" if exclude_exposed else "click"
            # one or two draws per user: rejection against a hash set of the clicks beats a search
            table, shift = self._click_hash if n <= 2 and not exclude_exposed else (_NO_TABLE, 0)
            out = sample_uniform(
                np_view(users.contiguous()),
                n,
                a[f"{part}_gaps"],
                a[f"{part}_indptr"],
                a[f"{part}_free"],
                self.n_items,
                table,
                shift,
                draw_seed(generator),
            )
            return torch.from_numpy(out)
        if exclude_exposed:
            gaps, indptr, free = self.blocked_gaps, self.blocked_indptr, self.blocked_free
        else:
            gaps, indptr, free = self.click_gaps, self.click_indptr, self.click_free
        u = users.unsqueeze(1)
        # a 62-bit draw modulo the number of allowed items: the bias is below 2**-40
        k = torch.randint(0, _DRAW_RANGE, (users.numel(), n), device=users.device, generator=generator)
        k = k.remainder_(free.index_select(0, users).unsqueeze(1))
        below = gaps.count_le(k + u * self.n_items)
        return below.sub_(indptr.index_select(0, users).unsqueeze(1)).add_(k)

    def sample_candidates(
        self,
        users: torch.Tensor,
        n: int,
        n_exp: int,
        exclude_exposed: bool,
        generator: torch.Generator,
        flags: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Candidates of a learned sampler in one compiled pass (numba backend only).

        ``n - n_exp`` uniform draws per user (among non-clicked items, also excluding exposed ones if
        ``exclude_exposed``) followed by ``n_exp`` draws from the user's exposed-unclicked items
        (uniform draws instead for users without any): what :meth:`sample_uniform` and
        :meth:`sample_exposed` give, with other random numbers.

        Returns
        -------
        cands : torch.Tensor
            (B, n) items.
        exposed : torch.Tensor or None
            (B, n) whether each candidate is an exposed-unclicked item of the user (``None`` unless
            ``flags``).
        """
        from reinforcens.kernels import candidates

        if not self.fast:
            raise RuntimeError("sample_candidates needs the numba backend")
        a = self._arrays
        part = "blocked" if exclude_exposed else "click"
        has_exp = a["blocked_has_exposure"] if exclude_exposed else a["no_user"]
        cands, exposed = candidates(
            np_view(users.contiguous()), n, n_exp, a[f"{part}_gaps"], a[f"{part}_indptr"],
            a[f"{part}_free"], has_exp, a["exposure_keys"], a["exp_indptr"], self.n_items, flags,
            draw_seed(generator),
        )  # fmt: skip
        return torch.from_numpy(cands), torch.from_numpy(exposed) if flags else None

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
        if self.fast:
            from reinforcens.kernels import sample_segments

            a = self._arrays
            items, has = sample_segments(
                np_view(users.contiguous()),
                n,
                a["exposure_keys"],
                a["exp_indptr"],
                self.n_items,
                draw_seed(generator),
            )
            return torch.from_numpy(items), torch.from_numpy(has)
        start = self.exp_indptr.index_select(0, users)
        count = self.exp_indptr.index_select(0, users + 1).sub_(start)
        has = count > 0
        k = torch.randint(0, _DRAW_RANGE, (users.numel(), n), device=users.device, generator=generator)
        total = self.exposures.n
        if total == 0:
            return torch.full_like(k, -1), has
        idx = k.remainder_(count.clamp(min=1).unsqueeze(1)).add_(start.unsqueeze(1)).clamp_(max=total - 1)
        items = self.exposures.keys.index_select(0, idx.view(-1)).view(idx.shape)
        items = items.sub_(users.unsqueeze(1) * self.n_items)
        return items.masked_fill_(~has.unsqueeze(1), -1), has

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
