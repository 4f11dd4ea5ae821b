"""The true click model behind a simulated exposure log.

A simulated user ``u`` shown item ``i`` at slate position ``k`` (0-based) clicks it with probability

.. math::

    e(k) \\cdot \\sigma\\big(b_0 + a\\, p_u^\\top q_i + w\\, c_i + b_u\\big),

where :math:`p_u, q_i` are latent preference factors, :math:`c_i` the item's quality, :math:`b_u`
a per-user click propensity and :math:`e(k) = (k + 1)^{-\\eta}` the chance that position ``k`` is
looked at (``e(0) = 1``). :class:`GroundTruth` answers the relevance part, the click probability
at the top of a slate, for any (user, item) pair, shown or not, so that samplers and models can
be judged against the truth: false-negative rates, a true AUC over all unseen items, and so on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reinforcens.data.integrity import one_line
from reinforcens.errors import DataError

_FORMAT = "reinforcens-ground-truth"
_VERSION = 1
_ARRAYS = ("user_factors", "item_factors", "user_bias", "item_quality", "item_log_popularity")
_SCALARS = ("intercept", "affinity_scale", "quality_weight", "position_decay")


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """The true click probabilities of a simulated platform.

    Ids are the simulator's raw ids, i.e. the ``user`` and ``item`` values in the simulated log.

    Attributes
    ----------
    user_factors : numpy.ndarray of float32, shape (n_users, dim)
        Latent preference factors :math:`p_u`.
    item_factors : numpy.ndarray of float32, shape (n_items, dim)
        Latent preference factors :math:`q_i`.
    user_bias : numpy.ndarray of float32, shape (n_users,)
        Per-user click propensity :math:`b_u` (in logits).
    item_quality : numpy.ndarray of float32, shape (n_items,)
        Item quality :math:`c_i` (standardized; correlated with popularity).
    item_log_popularity : numpy.ndarray of float32, shape (n_items,)
        The platform's (log) popularity prior of each item, which the logging policy favours. It is
        not part of the click model; it is kept for analysis (e.g. popularity bias of a sampler).
    intercept : float
        :math:`b_0`, the global click logit.
    affinity_scale : float
        :math:`a`, the weight of the factor dot product.
    quality_weight : float
        :math:`w`, the weight of item quality.
    position_decay : float
        :math:`\\eta`, the examination decay over slate positions (0: no position effect).
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    user_bias: np.ndarray
    item_quality: np.ndarray
    item_log_popularity: np.ndarray
    intercept: float
    affinity_scale: float
    quality_weight: float
    position_decay: float

    def __post_init__(self) -> None:
        n_users, dim = self.user_factors.shape
        n_items = self.item_factors.shape[0]
        if self.item_factors.shape != (n_items, dim):
            raise ValueError("user_factors and item_factors must have the same number of columns")
        if self.user_bias.shape != (n_users,):
            raise ValueError(f"user_bias must have shape ({n_users},)")
        for name in ("item_quality", "item_log_popularity"):
            if getattr(self, name).shape != (n_items,):
                raise ValueError(f"{name} must have shape ({n_items},)")

    def __repr__(self) -> str:
        return (
            f"GroundTruth(n_users={self.n_users}, n_items={self.n_items}, dim={self.dim}, "
            f"intercept={self.intercept:.3g}, affinity_scale={self.affinity_scale:.3g}, "
            f"quality_weight={self.quality_weight:.3g}, position_decay={self.position_decay:.3g})"
        )

    @property
    def n_users(self) -> int:
        """Number of simulated users (raw ids ``0 .. n_users - 1``)."""
        return int(self.user_factors.shape[0])

    @property
    def n_items(self) -> int:
        """Number of simulated items (raw ids ``0 .. n_items - 1``)."""
        return int(self.item_factors.shape[0])

    @property
    def dim(self) -> int:
        """Dimension of the latent factors."""
        return int(self.user_factors.shape[1])

    @property
    def item_bias(self) -> np.ndarray:
        """The item part of the click logit, :math:`b_0 + w\\, c_i`, float32, shape (n_items,)."""
        return (self.intercept + self.quality_weight * self.item_quality).astype(np.float32)

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True click logits of (user, item) pairs, elementwise.

        Parameters
        ----------
        users, items
            Integer arrays of the same shape (or broadcastable), raw simulator ids.

        Returns
        -------
        numpy.ndarray of float32
            :math:`b_0 + a\\, p_u^\\top q_i + w\\, c_i + b_u`, in the broadcast shape.
        """
        users, items = np.broadcast_arrays(
            self._check_ids(users, self.n_users, "user"),
            self._check_ids(items, self.n_items, "item"),
        )
        shape = users.shape
        users, items = users.ravel(), items.ravel()
        out = np.empty(users.shape[0], dtype=np.float32)
        step = 1 << 20  # bounds the (pairs x dim) temporaries
        for start in range(0, users.shape[0], step):
            u, i = users[start : start + step], items[start : start + step]
            dot = np.einsum("nd,nd->n", self.user_factors[u], self.item_factors[i])
            out[start : start + step] = (
                self.affinity_scale * dot
                + self.intercept
                + self.quality_weight * self.item_quality[i]
                + self.user_bias[u]
            )
        return out.reshape(shape)

    def click_prob(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True click probability of each (user, item) pair when shown at the top of a slate.

        Parameters
        ----------
        users, items
            Integer arrays of the same shape (or broadcastable), raw simulator ids.

        Returns
        -------
        numpy.ndarray of float32
            Probabilities in (0, 1), elementwise. Further down a slate multiply by
            :meth:`examination`. Costs ``O(len(users) * dim)``.
        """
        return _sigmoid(self.logits(users, items))

    def prob_matrix(self, users: np.ndarray) -> np.ndarray:
        """True click probabilities of the given users for every item.

        Parameters
        ----------
        users
            1-d integer array of raw user ids.

        Returns
        -------
        numpy.ndarray of float32, shape (len(users), n_items)
            Row ``k`` holds ``click_prob(users[k], item)`` for every item. Memory is
            ``4 * len(users) * n_items`` bytes: call it on chunks of users for large catalogues.
        """
        users = self._check_ids(np.asarray(users).reshape(-1), self.n_users, "user")
        scores = self.user_factors[users] @ self.item_factors.T
        scores *= np.float32(self.affinity_scale)
        scores += self.item_bias[None, :]
        scores += self.user_bias[users][:, None]
        return _sigmoid(scores, out=scores)

    def examination(self, positions: np.ndarray) -> np.ndarray:
        """Probability that slate position ``k`` (0-based) is looked at.

        It is ``(k + 1) ** -position_decay``.

        Parameters
        ----------
        positions
            Non-negative integer array.

        Returns
        -------
        numpy.ndarray of float32
            Values in (0, 1], 1 at the top position.
        """
        positions = np.asarray(positions)
        return np.power(positions + 1.0, -self.position_decay).astype(np.float32)

    def save(self, path: str | Path) -> None:
        """Write the ground truth to ``path`` as an ``.npz`` file (no pickled objects).

        Parameters
        ----------
        path
            The file to write, written as given (no suffix is added).
        """
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        scalars = {name: np.float64(getattr(self, name)) for name in _SCALARS}
        with open(path, "wb") as handle:
            np.savez(
                handle,
                format=np.array(_FORMAT),
                version=np.int64(_VERSION),
                **arrays,
                **scalars,
            )
            handle.flush()
            os.fsync(handle.fileno())

    @classmethod
    def load(cls, path: str | Path) -> GroundTruth:
        """Read a ground truth written by :meth:`save`.

        Parameters
        ----------
        path
            An ``.npz`` file.

        Raises
        ------
        DataError
            If the file is missing, unreadable or not a ground-truth file.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError("no such ground-truth file", path)
        try:
            with np.load(path, allow_pickle=False) as data:
                if "format" not in data.files or str(data["format"]) != _FORMAT:
                    raise DataError("not a reinforcens ground-truth file", path)
                version = int(data["version"])
                if version != _VERSION:
                    raise DataError(f"unsupported ground-truth version {version}", path)
                missing = [k for k in _ARRAYS + _SCALARS if k not in data.files]
                if missing:
                    raise DataError(f"ground-truth file lacks {', '.join(missing)}", path)
                arrays = {k: np.asarray(data[k], dtype=np.float32) for k in _ARRAYS}
                scalars = {k: float(data[k]) for k in _SCALARS}
        except DataError:
            raise
        except Exception as exc:  # truncated, garbled (a failed CRC check), not a zip, ...
            raise DataError(f"unreadable ground-truth file ({one_line(exc)})", path) from None
        try:
            return cls(**arrays, **scalars)
        except ValueError as exc:
            raise DataError(f"inconsistent ground-truth file ({one_line(exc)})", path) from None

    @staticmethod
    def _check_ids(ids: np.ndarray, n: int, what: str) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"{what} ids must be integers, got {ids.dtype}")
        ids = ids.astype(np.int64, copy=False)
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise IndexError(f"{what} id out of range [0, {n}): {ids.min()} .. {ids.max()}")
        return ids


def _sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Logistic function in float32, overflow-free."""
    x = np.asarray(x, dtype=np.float32)
    out = np.negative(x, out=out)
    np.clip(out, -80.0, 80.0, out=out)
    np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)
