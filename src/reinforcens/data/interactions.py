"""Per-user item sets in CSR form, with vectorized membership tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class UserItems:
    """A set of (user, item) pairs stored per user (CSR), items sorted within each user.

    Attributes
    ----------
    indptr : numpy.ndarray of int64, shape (n_users + 1,)
    indices : numpy.ndarray of int64
        Items of user ``u`` are ``indices[indptr[u]:indptr[u + 1]]``, sorted and unique.
    n_items : int
    """

    indptr: np.ndarray
    indices: np.ndarray
    n_items: int

    @classmethod
    def from_pairs(
        cls, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
    ) -> UserItems:
        """Build from (possibly repeated) pairs; duplicates are merged."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        keys = np.unique(users * n_items + items)
        u = keys // n_items
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(u, minlength=n_users), out=indptr[1:])
        return cls(indptr=indptr, indices=keys % n_items, n_items=n_items)

    @classmethod
    def from_keys(cls, keys: np.ndarray, n_users: int, n_items: int) -> UserItems:
        """Build from ``user * n_items + item`` keys (possibly repeated)."""
        keys = np.asarray(keys, dtype=np.int64)
        return cls.from_pairs(keys // n_items, keys % n_items, n_users, n_items)

    @property
    def n_users(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def counts(self) -> np.ndarray:
        """Number of items per user."""
        return np.diff(self.indptr)

    def users(self) -> np.ndarray:
        """The user of every stored pair (aligned with :attr:`indices`)."""
        return np.repeat(np.arange(self.n_users, dtype=np.int64), self.counts())

    def keys(self) -> np.ndarray:
        """Sorted ``user * n_items + item`` keys of all pairs."""
        return self.users() * self.n_items + self.indices

    def row(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user] : self.indptr[user + 1]]

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Elementwise membership of ``(users[k], items[k])``; any shapes that broadcast."""
        return contains_keys(self.keys(), np.asarray(users) * self.n_items + np.asarray(items))

    def to_csr(self) -> sp.csr_matrix:
        data = np.ones(self.nnz, dtype=np.float32)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=(self.n_users, self.n_items))


def contains_keys(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Membership of each query key in a sorted unique key array (vectorized binary search)."""
    if sorted_keys.size == 0:
        return np.zeros(np.shape(query), dtype=bool)
    pos = np.searchsorted(sorted_keys, query)
    pos = np.minimum(pos, sorted_keys.size - 1)
    return sorted_keys[pos] == query
