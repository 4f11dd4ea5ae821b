"""The operations of the training hot path that a compute backend implements (:class:`Ops`).

A backend is resolved once per run (:func:`reinforcens.ops.make_ops`), and the training data, the
samplers, the fused optimizer and the list scorer call its operations instead of branching on the
backend's name. Every operation of every backend is checked against plain-Python/autograd oracles by
``tests/test_ops_conformance.py``.

The operations fall into four groups:

* item-set draws and membership over a :class:`reinforcens.training_data.TrainingData` (uniform draws
  among a user's non-clicked, or non-clicked and non-exposed, items; draws among their
  exposed-unclicked items; candidate sets of the learned samplers with exposed slots and flags;
  membership in the clicked and exposed sets);
* candidate scoring and choice over a model's effective tables (``Tables(user, item, h)``, scores
  ``h . (user[u] * item[i])``): DNS's best candidate, DNS(M, N)'s uniform draw among the top ``n``,
  the learned samplers' softmax draw, and SRNS's variance-weighted choice and memory refresh;
* the fused steps on the state of a :class:`reinforcens.optim.GMFOptimizer` (row-wise Adam from
  hand-computed gradients, the BPR step and the REINFORCE step) and of a
  :class:`reinforcens.optim.SGDOptimizer` (plain SGD from hand-computed gradients and the BPR step);
  formulas in :mod:`reinforcens.optim`;
* list scoring for evaluation and the MMD reward of :func:`reinforcens.mmd.mmd_reward`.

For a given backend and seed the results are reproducible bit for bit; the two backends compute the
same values up to floating-point summation order, but draw different random numbers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

if TYPE_CHECKING:
    from reinforcens.models.base import Tables
    from reinforcens.optim import GMFOptimizer, SGDOptimizer
    from reinforcens.training_data import TrainingData


@dataclass
class SoftmaxChoice:
    """One draw per row from the softmax of candidate scores (:meth:`Ops.softmax_choice`).

    Attributes
    ----------
    log_softmax : torch.Tensor
        (B, N) ``log_softmax(z / T)`` over each row's candidates.
    choice : torch.Tensor
        (B, 1) int64 position of the drawn candidate in its row.
    user_rows, item_rows : torch.Tensor or None
        The policy's rows the draw gathered, (B, K) and (B, N, K): kept by the torch backend for its
        :meth:`Ops.reinforce_step`; ``None`` on the numba backend, whose step gathers them itself.
    """

    log_softmax: torch.Tensor
    choice: torch.Tensor
    user_rows: torch.Tensor | None = None
    item_rows: torch.Tensor | None = None


def check_rows(rows: torch.Tensor, n: int, what: str) -> None:
    """Raise ``IndexError`` unless every entry of ``rows`` is in ``[0, n)``."""
    if rows.numel() == 0:
        return
    lo, hi = (int(x) for x in torch.aminmax(rows))
    if lo < 0 or hi >= n:
        raise IndexError(f"{what} index out of range: got values in [{lo}, {hi}], the table has {n} rows")


class Ops(ABC):
    """The narrow set of operations a compute backend implements (see the module docstring).

    Attributes
    ----------
    name : str
        The backend's name (``"numba"`` or ``"torch"``), what :func:`reinforcens.ops.make_ops` maps.
    compiled : bool
        Whether the operations run in the compiled kernels of :mod:`reinforcens.kernels`.
    """

    name: ClassVar[str] = ""
    compiled: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    #: the training processes whose updates these operations synchronise (see
    #: :class:`reinforcens.ops.distributed.DistributedOps`); 1: this process alone
    ranks: ClassVar[int] = 1

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over the training processes (itself for one process): what a
        component's epoch statistics that feed its updates (a baseline) are reduced with."""
        return tensor

    def check_device(self, device: str | torch.device) -> None:
        """Raise ``ValueError`` if this backend cannot run on ``device`` (default: any device)."""
        return None

    def check_catalogue(self, n_items: int) -> None:
        """Raise :class:`reinforcens.errors.ConfigError` if this backend cannot draw from ``n_items``
        items (default: any)."""
        return None

    # ------------------------------------------------------------------ item sets
    @abstractmethod
    def is_clicked(self, data: TrainingData, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) is a training click.

        Parameters
        ----------
        data
            The training data.
        users, items
            int64 indices; ``users`` broadcasts against ``items``.

        Returns
        -------
        torch.Tensor of bool
            The broadcast shape.
        """

    @abstractmethod
    def is_exposed(self, data: TrainingData, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) was shown in training and not clicked (as :meth:`is_clicked`)."""

    @abstractmethod
    def sample_uniform(
        self,
        data: TrainingData,
        users: torch.Tensor,
        n: int,
        generator: torch.Generator,
        exclude_exposed: bool = False,
    ) -> torch.Tensor:
        """Items drawn uniformly, with replacement, among those each user did not click.

        Parameters
        ----------
        data
            The training data.
        users
            Shape (B,).
        n
            Draws per user.
        generator
            The random stream (on the data's device).
        exclude_exposed
            Also exclude the user's exposed-unclicked items; users for whom nothing is left fall back
            to their non-clicked items.

        Returns
        -------
        torch.Tensor
            (B, n) int64 items.
        """

    @abstractmethod
    def sample_exposed(
        self, data: TrainingData, users: torch.Tensor, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Items drawn uniformly, with replacement, among each user's exposed-unclicked items.

        Returns
        -------
        items : torch.Tensor
            (B, n) int64; ``-1`` for users without exposures.
        has : torch.Tensor of bool
            (B,) whether the user has any exposure.
        """

    @abstractmethod
    def sample_sets(
        self,
        indptr: torch.Tensor,
        flat: torch.Tensor,
        users: torch.Tensor,
        n: int,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` items per user from the user's set, a CSR ``flat[indptr[u]:indptr[u + 1]]``: a uniform
        ``n``-subset (without replacement) where the set holds ``n`` or more items, uniform draws with
        replacement where it holds fewer (RecNS's draws, :mod:`reinforcens.samplers.recns`).

        Returns
        -------
        items : torch.Tensor
            (B, n) int64; ``-1`` for users whose set is empty.
        size : torch.Tensor
            (B,) int64 the sizes of the users' sets.
        """

    @abstractmethod
    def sample_candidates(
        self,
        data: TrainingData,
        users: torch.Tensor,
        n: int,
        n_exp: int,
        exclude_exposed: bool,
        generator: torch.Generator,
        flags: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Candidates of a learned sampler: ``n - n_exp`` uniform slots, then ``n_exp`` exposed slots.

        The uniform slots are :meth:`sample_uniform` draws (with ``exclude_exposed``); the exposed
        slots are :meth:`sample_exposed` draws for users with exposures and uniform draws for the
        others.

        Returns
        -------
        cands : torch.Tensor
            (B, n) int64 items.
        exposed : torch.Tensor of bool or None
            (B, n) whether each candidate is an exposed-unclicked item of its user (``None`` unless
            ``flags``).
        """

    # ------------------------------------------------------------------ candidate scoring
    @abstractmethod
    def score_candidates(self, tables: Tables, users: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """Scores ``h . (user[u] * item[c])`` of each row's candidates, without the (B, N, K) rows.

        Parameters
        ----------
        tables
            Effective tables (``user`` may be any table indexed by ``users``: RecNS scores item pairs
            with ``Tables(item, item, h)``).
        users
            (B,) int64 rows of ``tables.user``.
        cands
            (B, N) int64 rows of ``tables.item``.

        Returns
        -------
        torch.Tensor
            (B, N) in the tables' dtype, on their device.
        """

    @abstractmethod
    def best_candidate(self, tables: Tables, users: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """Position of the highest-scored candidate of each row (DNS).

        Parameters
        ----------
        tables
            A model's effective tables: ``score(u, i) = h . (user[u] * item[i])``.
        users
            (B,) int64.
        cands
            (B, N) int64 items.

        Returns
        -------
        torch.Tensor
            (B, 1) int64 positions in ``[0, N)``.
        """

    @abstractmethod
    def top_n_choice(
        self, tables: Tables, users: torch.Tensor, cands: torch.Tensor, n: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Position of one candidate per row drawn uniformly among the row's ``n`` highest-scored
        (DNS(M, N) of :mod:`reinforcens.samplers.dns_mn`; ``n = 1``: :meth:`best_candidate`'s argmax).

        Candidates are ranked by ``score(u, c) = h . (user[u] * item[c])``, highest first; equal scores
        are ranked by position in the row, the earlier first (a repeated candidate counts once per
        position). Then one rank in ``[0, n)`` is drawn uniformly per row.

        Parameters
        ----------
        tables
            A model's effective tables.
        users
            (B,) int64.
        cands
            (B, N) int64 items.
        n
            How many of the best-scored candidates the draw is among, ``1 <= n <= N``.
        generator
            The random stream.

        Returns
        -------
        torch.Tensor
            (B, 1) int64 positions in ``[0, N)``.
        """

    @abstractmethod
    def loss_softmax_choice(
        self,
        tables: Tables,
        users: torch.Tensor,
        positives: torch.Tensor,
        cands: torch.Tensor,
        rho: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Position of one candidate per row drawn from Softmax(rho, N)'s weights
        (:mod:`reinforcens.samplers.softmax`): ``softmax(Z / tau)`` over the row, with
        ``Z_c = softplus(s_c - s_pos)`` the BPR loss of candidate ``c`` against the row's positive and
        ``tau = sqrt(Var_c(Z) / (2 rho))`` (unbiased variance); uniform where every ``Z`` is equal.

        Parameters
        ----------
        tables
            A model's effective tables (``s = h . (user[u] * item[i])``).
        users, positives
            (B,) int64.
        cands
            (B, N) int64 items, ``N >= 2``.
        rho
            ``rho > 0``.
        generator
            The random stream.

        Returns
        -------
        torch.Tensor
            (B, 1) int64 positions in ``[0, N)``.
        """

    @abstractmethod
    def softmax_choice(
        self,
        tables: Tables,
        users: torch.Tensor,
        cands: torch.Tensor,
        temperature: float,
        generator: torch.Generator,
    ) -> SoftmaxChoice:
        """One draw per row from ``softmax(z / T)``, ``z_bc = h . (user[u_b] * item[c])``.

        Parameters
        ----------
        tables
            The policy's effective tables.
        users, cands
            (B,) and (B, N) int64.
        temperature
            The softmax temperature ``T``.
        generator
            The random stream.
        """

    @abstractmethod
    def variance_choice(
        self,
        tables: Tables,
        users: torch.Tensor,
        positives: torch.Tensor,
        cands: torch.Tensor,
        cand_history: torch.Tensor,
        pos_history: torch.Tensor,
        weight: float,
    ) -> torch.Tensor:
        """Position of the candidate of each row that maximises SRNS's criterion
        (:mod:`reinforcens.samplers.srns`) ``sigmoid(z_bc - z_b) + weight * std_t sigmoid(y_bct - x_bt)``.

        ``z_bc = h . (user[u_b] * item[c])`` is a candidate's score, ``z_b`` the positive's, both from
        ``tables``; ``y_bct`` and ``x_bt`` are the candidate's and the positive's recorded scores at the
        ``T`` past times ``t`` (paired by position along the last axis), and ``std_t`` is their
        population standard deviation (0 when ``T = 0``). Ties go to the earlier position.

        Parameters
        ----------
        tables
            A model's effective tables.
        users, positives
            (B,) int64.
        cands
            (B, N) int64 items.
        cand_history
            (B, N, T) float32, ``T >= 0``.
        pos_history
            (B, T) float32.
        weight
            The standard deviation's weight (``alpha_t``).

        Returns
        -------
        torch.Tensor
            (B, 1) int64 positions in ``[0, N)``.
        """

    @abstractmethod
    def softmax_subset(
        self,
        tables: Tables,
        users: torch.Tensor,
        cands: torch.Tensor,
        k: int,
        temperature: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Positions of ``k`` candidates per row drawn without replacement, each draw with probability
        proportional to ``exp(z_bc / T)`` among the positions not drawn yet (successive sampling, what
        ``numpy.random.choice(N, k, p=softmax(z / T), replace=False)`` does), ``z_bc = h . (user[u_b] *
        item[c])``. Drawn as the ``k`` largest of ``z_bc / T + G_bc`` with ``G`` standard Gumbel noise
        (Gumbel-top-k), in decreasing order of that key.

        Parameters
        ----------
        tables
            A model's effective tables.
        users, cands
            (B,) and (B, N) int64.
        k
            ``1 <= k <= N``.
        temperature
            ``T > 0``.
        generator
            The random stream.

        Returns
        -------
        torch.Tensor
            (B, k) int64 distinct positions in ``[0, N)`` per row.
        """

    @abstractmethod
    def score_lists(self, tables: Tables, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores ``h . (user[u] * item[i])`` of item lists.

        Parameters
        ----------
        tables
            A model's effective tables (float32 on the CPU for the numba backend).
        users, items
            (n,) and (n, L) integer arrays.

        Returns
        -------
        numpy.ndarray of float64
            (n, L).
        """

    # ------------------------------------------------------------------ fused steps
    @abstractmethod
    def step_rows(
        self,
        opt: GMFOptimizer,
        users: torch.Tensor,
        user_grads: torch.Tensor,
        items: torch.Tensor,
        item_grads: torch.Tensor,
        h_grad: torch.Tensor | None,
    ) -> None:
        """One row-wise Adam step of ``opt`` from hand-computed gradients (counts one step).

        Parameters
        ----------
        opt
            The optimizer whose model and moments are updated in place.
        users, items
            Row indices, int64, any shape; repeated rows have their gradients summed.
        user_grads, item_grads
            Gradients of those rows, shape ``(*rows.shape, K)``.
        h_grad
            Gradient of ``h`` (``None``, or a model that does not train ``h``: left alone).

        Raises
        ------
        IndexError
            (numba) if a row is out of range; nothing is written then.
        """

    @abstractmethod
    def bpr_step(
        self, opt: GMFOptimizer, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, l2: float
    ) -> tuple[float | torch.Tensor, torch.Tensor]:
        """One BPR step of ``opt``'s model on (user, positive, negative) triples, then :meth:`step_rows`.

        The loss is ``sum_b softplus(-(r_ui - r_uj)) + 0.5 * l2 * (||p_u||^2 + ||q_i||^2 + ||q_j||^2)``
        (:func:`reinforcens.losses.bpr_with_grads`), all gradients from the weights before the step.

        Returns
        -------
        loss : float or torch.Tensor
            The summed batch loss before the step (a 0-dim tensor on the torch backend).
        neg_scores : torch.Tensor
            (B,) pre-step scores of the negatives.
        """

    @abstractmethod
    def sgd_step_rows(
        self,
        opt: SGDOptimizer,
        users: torch.Tensor,
        user_grads: torch.Tensor,
        items: torch.Tensor,
        item_grads: torch.Tensor,
        h_grad: torch.Tensor | None,
    ) -> None:
        """One plain SGD step of ``opt`` from hand-computed gradients (counts one step): ``w_r <- w_r -
        lr * g_r`` for each distinct row, ``g_r`` its summed gradients, and ``h <- h - lr * h_grad``.
        Arguments as :meth:`step_rows`'s."""

    @abstractmethod
    def bpr_sgd_step(
        self, opt: SGDOptimizer, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, l2: float
    ) -> tuple[float | torch.Tensor, torch.Tensor]:
        """One BPR step of ``opt``'s model with plain SGD: the loss and gradients of :meth:`bpr_step`,
        then :meth:`sgd_step_rows`; returns what :meth:`bpr_step` returns."""

    @abstractmethod
    def reinforce_step(
        self,
        opt: GMFOptimizer,
        users: torch.Tensor,
        cands: torch.Tensor,
        drawn: SoftmaxChoice,
        rewards: torch.Tensor,
        l2: float,
        temperature: float,
    ) -> None:
        """One REINFORCE step of ``opt``'s model (the policy), then the row-wise Adam update.

        The loss is ``-sum_b R_b log pi(j_b|u_b) + 0.5 * l2 * (||p_u||^2 + ||q_j||^2)`` with
        ``log pi = log_softmax(z / T)`` over the candidates; ``dL/dz_bc = R_b (pi_bc - 1[c = j_b]) / T``.

        Parameters
        ----------
        opt
            The policy's optimizer.
        users
            (B,) int64.
        cands
            (B, N) the candidates of the draw.
        drawn
            The draw (:meth:`softmax_choice` of this backend).
        rewards
            (B,) rewards ``R_b``.
        l2, temperature
            L2 weight and softmax temperature.
        """

    # ------------------------------------------------------------------ rewards
    @abstractmethod
    def mmd_reward(
        self, generated: torch.Tensor, exposed: torch.Tensor, bandwidths: Sequence[float]
    ) -> torch.Tensor:
        """Per-instance MMD reward of generated features against exposed ones
        (:func:`reinforcens.mmd.mmd_reward`): (B,), zeros when ``exposed`` is empty."""
