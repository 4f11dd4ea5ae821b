"""SRNS (Ding et al., NeurIPS 2020, "Simplify and Robustify Negative Sampling for Implicit Collaborative
Filtering"): the negative is the item of a small per-user memory of hard candidates whose score is high
and has varied most over the last epochs (false negatives keep stable, high scores)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field, ValidationInfo, field_validator

from reinforcens.errors import ConfigError
from reinforcens.models.base import Recommender
from reinforcens.samplers.base import Negatives, NegativeSampler, SamplerConfig

if TYPE_CHECKING:
    from reinforcens.models.base import Tables

#: item-score products gathered at once when the epoch's scores are recorded
_CHUNK = 1 << 22


class SRNSConfig(SamplerConfig):
    memory_size: int = Field(
        8, ge=1, description="S1: the memory of hard candidates kept per user, the negative is one of them"
    )
    fresh_candidates: int = Field(
        64,
        ge=1,
        description="S2: fresh uniform candidates (from the user's pool) that compete with the memory "
        "at every refresh",
    )
    alpha: float = Field(
        5.0, ge=0.0, description="weight of the score's standard deviation over the history (after warm-up)"
    )
    alpha_warmup: float = Field(
        50.0,
        gt=0.0,
        description="T0: epochs over which the weight of the standard deviation grows linearly from 0 "
        "to alpha",
    )
    temperature: float = Field(
        10.0, gt=0.0, description="tau: the memory refresh keeps candidates with weights exp(score / tau)"
    )
    pool_size: int = Field(
        3000,
        ge=2,
        description="uniform non-clicked candidates per user and epoch whose scores are recorded (the "
        "memory holds positions in this pool)",
    )
    history: int = Field(
        5, ge=1, description="epochs of recorded scores the standard deviation is taken over"
    )

    @field_validator("pool_size")
    @classmethod
    def _holds_the_memory(cls, value: int, info: ValidationInfo) -> int:
        s1 = info.data.get("memory_size")
        if s1 is not None and value <= s1:
            raise ValueError(
                f"pool_size = {value} must exceed memory_size = {s1} (the memory and a fresh position "
                "distinct from it are in the pool)"
            )
        return value


class SRNSSampler(NegativeSampler):
    r"""SRNS: the negative of ``(u, i)`` is the item ``j`` of ``u``'s memory ``M_u`` (``S1`` items,
    ``memory_size``) that maximises

    .. math::

        P_{pos}(j \mid u, i) + \alpha_t \, \mathrm{std}_{e}\big[P^{(e)}_{pos}(j \mid u, i)\big],
        \qquad P_{pos}(j \mid u, i) = \sigma(r_{uj} - r_{ui}),
        \qquad \alpha_t = \alpha \min(1, t / T_0),

    with ``r`` the recommender's scores ``h . (P_u * Q_j)`` from its effective tables now,
    ``P^{(e)}_{pos}`` the same quantity from the scores recorded at the end of each of the last ``H``
    (``history``) epochs ``e``, ``std`` their population standard deviation (0 before any epoch ended),
    ``t`` the number of epochs completed (0 in the first) and ``T0`` ``alpha_warmup``; ties go to the
    first memory slot. A high score makes a negative informative; a high variance over epochs marks a
    true negative, as false negatives keep stable, high scores.

    After the choice, the memory of each distinct user of the batch is refreshed: ``S2``
    (``fresh_candidates``) fresh candidates are drawn and ``S1`` items are drawn without replacement
    from ``M_u`` and the fresh ones, with probability proportional to ``exp(r_uk / tau)`` among those
    left (``temperature``; :meth:`reinforcens.ops.base.Ops.softmax_subset`), so the memory drifts to
    high scores. Scores come from ``recommender.tables()``, so any model works (GMF, MF, LightGCN).

    Code and paper: this follows the authors' code (``dingjingtao/SRNS``, ``SRNS_real/SRNS_main.py``,
    functions ``training`` and ``training_batch``) in the points below.

    * The memory holds positions in a per-user pool of ``V`` (``pool_size``, ``--varset_size``)
      candidates drawn uniformly with replacement among the user's non-clicked items
      (``candidate_cur``); the fresh candidates are positions drawn uniformly in that pool, so every
      memory item has a recorded history. Each pool serves one epoch and is scored at the end of each of
      the ``H`` epochs before it (``candidate_nxt``, ``score_cand_nxt``): ``H + 1`` pools live at once,
      the one in use and ``H`` that are being recorded. At an epoch's end the memory positions carry
      over to the next pool (they then name that pool's items), as in the code.
    * ``P^{(e)}_{pos}`` pairs the candidate's recorded score with the positive's (``score_pos_cur``),
      both from the same epochs (``hislikelihood_candidates_all``); ``H = 5`` is the code's constant.
    * The code scores the pools and positives with the untrained model before the first epoch too (one
      record, so a standard deviation of 0, and ``alpha_0 = 0`` anyway); nothing is recorded for it
      here, which gives the same criterion.
    * The negative is chosen from the memory as it stands, then the memory is refreshed with the
      pre-step model, once per distinct user (its first row in the batch), as in ``training_batch``.
    * A fresh position that repeats one of the memory's is redrawn, as in the code (``while random_item
      in Mu_set``); fresh positions may repeat each other, as there, so a memory can hold a position
      twice. ``pool_size > memory_size`` is required (the code's redraw never ends otherwise); the
      redraw gives up after 100 rounds.
    * ``alpha_t = alpha * min(1, epoch / warmup)`` with the 0-based epoch (``--warmup`` is ``T0``); the
      code's ``alpha < 0`` (choose by the standard deviation alone) is not offered.

    Defaults: the authors' ML-1M script (``SRNS_real/run.sh``: ``--S1 8 --S2_div_S1 8`` so ``S2 = 64``,
    ``--alpha 5.0 --warmup 50 --temperature 10.0``); ``pool_size`` 3000 and ``history`` 5 are the code's
    (``--varset_size`` default, and the fixed 5 of its history). The parser's own defaults are
    ``S1 = 20``, ``S2 = 20``, ``alpha = 1``, ``T0 = 1``, ``tau = 1``.

    Memory use: per user, ``H + 1`` pools of ``V`` int32 items and their float32 records of ``H``
    epochs, ``(H + 1) * V * (4 + 4 * H)`` bytes, plus ``S1`` int64 memory positions; per training click
    ``H`` float32 records of the positive's score. With the defaults (``V = 3000``, ``H = 5``,
    ``S1 = 8``) that is ``6 * 3000 * 24 + 8 * 8 = 432,064`` bytes per user and 20 bytes per click
    (:meth:`state_bytes` computes it from the tensors kept). ``last.pt`` holds this state (written every
    epoch, for an exact resume); ``best.pt`` and the trainer's copy of the best epoch do not
    (:meth:`model_state_dict` is empty: the ranking model is the recommender alone).

    Cost: per batch, the scores of ``S1`` memory items per row and ``S1 + S2`` items per distinct user
    (:meth:`reinforcens.ops.base.Ops.variance_choice` and :meth:`~reinforcens.ops.base.Ops.softmax_subset`,
    compiled kernels on the numba backend); per epoch, the scores of every user on the whole catalogue
    (one matrix product per block of users), from which the ``H`` pools' records are gathered.

    Data-parallel runs are refused (a ``ConfigError``): each rank would refresh the memories of the
    users of its own share only, so the ranks' memories would part, and a checkpoint could keep one
    rank's alone, so that a resumed run would not be the uninterrupted one.

    ``Negatives.candidates`` keeps the (B, S1) memory items the negative was chosen from.
    """

    name = "srns"
    label = "SRNS"
    summary = "SRNS (Ding et al. 2020): the memory candidate of high score that varied most over epochs"
    Config = SRNSConfig
    #: ``alpha`` and ``temperature`` are also RNS's options (with other meanings): options given for all
    #: methods of an experiment must not change this sampler
    defining_options = ("alpha", "temperature")
    #: the values of the authors' scripts and parser defaults (``run.sh``, ``SRNS_syn/run_srns.sh`` and
    #: ``parse_args``), not a grid the paper states: S1 8 and 20, S2 20 and 64, alpha 1, 5 and 10, T0 1
    #: and 50, tau 1 and 10
    tune_grid = {
        "memory_size": (8, 20),
        "fresh_candidates": (20, 64),
        "alpha": (1.0, 5.0, 10.0),
        "alpha_warmup": (1.0, 50.0),
        "temperature": (1.0, 10.0),
    }

    def __init__(self, config: SRNSConfig, data, generator, context=None):
        super().__init__(config, data, generator, context)
        if data.ops.ranks > 1:
            raise ConfigError(
                f"sampler 'srns' does not train data-parallel ({data.ops.ranks} ranks): its per-user "
                "memories are refreshed on each rank's share and would part; run it in one process"
            )
        c = self.config
        dev = data.device
        self.n_pools = c.history + 1
        #: epochs completed (``t`` of ``alpha_t``; the pool of epoch ``t`` is ``t % n_pools``)
        self.epoch = 0
        #: (H + 1, U, V) int32: pool ``p`` serves the epochs ``t`` with ``t % (H + 1) = p``
        self.pool_items = torch.empty(
            (self.n_pools, data.n_users, c.pool_size), dtype=torch.int32, device=dev
        )
        for p in range(self.n_pools):
            self._draw_pool(p)
        #: (H + 1, U, V, H) float32: the score of each pool item at the end of epoch ``e`` in slot ``e % H``
        self.pool_scores = torch.zeros(self.pool_items.shape + (c.history,), dtype=torch.float32, device=dev)
        #: (n_clicks, H) float32: each training click's score, in the same slots (click keys' order)
        self.pos_scores = torch.zeros((data.n_positives, c.history), dtype=torch.float32, device=dev)
        #: (U, S1) int64: each user's memory, positions in the pool in use
        keys = torch.rand((data.n_users, c.pool_size), device=dev, generator=generator)
        self.memory = keys.topk(c.memory_size, dim=1).indices  # S1 distinct positions, as the code's
        self._recommender: Recommender | None = None

    # ------------------------------------------------------------------ state
    def _draw_pool(self, p: int) -> None:
        users = torch.arange(self.data.n_users, device=self.data.device)
        for s in range(0, self.data.n_users, 1024):
            part = self.data.sample_uniform(users[s : s + 1024], self.config.pool_size, self.generator)
            self.pool_items[p, s : s + 1024] = part.to(torch.int32)

    def _state_shapes(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return {
            "memory": (tuple(self.memory.shape), torch.int64),
            "pool_items": (tuple(self.pool_items.shape), torch.int32),
            "pool_scores": (tuple(self.pool_scores.shape), torch.float32),
            "pos_scores": (tuple(self.pos_scores.shape), torch.float32),
        }

    def state_bytes(self) -> int:
        """The bytes of the tensors this sampler keeps across batches."""
        return sum(t.numel() * t.element_size() for t in (self.memory, self.pool_items, self.pool_scores,
                                                          self.pos_scores))  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "memory": self.memory.clone(),
            "pool_items": self.pool_items.clone(),
            "pool_scores": self.pool_scores.clone(),
            "pos_scores": self.pos_scores.clone(),
        }

    def model_state_dict(self) -> dict[str, Any]:
        """Nothing: the memory and records steer training only (``last.pt`` keeps them)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output.

        Raises
        ------
        ValueError
            One line naming the missing or misshapen entry (another ``memory_size``, ``pool_size``,
            ``history`` or data).
        """
        missing = [k for k in ("epoch", *self._state_shapes()) if k not in state]
        if missing:
            raise ValueError(f"SRNS sampler state lacks {', '.join(missing)}")
        for key, (shape, _) in self._state_shapes().items():
            got = tuple(state[key].shape)
            if got != shape:
                raise ValueError(
                    f"SRNS sampler state: {key} has shape {got}, this sampler needs {shape} "
                    "(memory_size, pool_size, history or the data differ)"
                )
        epoch = int(state["epoch"])
        if epoch < 0:
            raise ValueError(f"SRNS sampler state: epoch is {epoch}, not a count of epochs")
        dev = self.data.device
        for key, (_, dtype) in self._state_shapes().items():
            setattr(self, key, state[key].to(device=dev, dtype=dtype).clone())
        self.epoch = epoch

    # ------------------------------------------------------------------ sampling
    def alpha_t(self) -> float:
        """The weight of the standard deviation in the current epoch, ``alpha * min(1, t / T0)``."""
        return self.config.alpha * min(1.0, self.epoch / self.config.alpha_warmup)

    def _click_rows(self, users: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        keys = users * self.data.n_items + positives
        rows = torch.searchsorted(self.data.click_keys, keys)
        return rows.clamp_(max=max(self.data.n_positives - 1, 0))

    def sample(self, users, positives, recommender: Recommender):
        c = self.config
        self._recommender = recommender
        if users.numel() == 0:
            empty = users.new_zeros((0, c.memory_size))
            return Negatives(users.new_zeros(0), candidates=empty)
        ops = self.data.ops
        cur = self.epoch % self.n_pools
        slots = self.memory.index_select(0, users)
        flat = (users.unsqueeze(1) * c.pool_size + slots).view(-1)  # (user, slot) in the pool
        cands = self._pool_items(cur, flat).view(slots.shape)
        weight = self.alpha_t()
        n_hist = min(self.epoch, c.history) if weight > 0 else 0
        scores = self.pool_scores[cur].view(-1, c.history)
        cand_hist = scores.index_select(0, flat).view(*slots.shape, c.history)[..., :n_hist]
        pos_hist = self.pos_scores.index_select(0, self._click_rows(users, positives))[:, :n_hist]
        with torch.no_grad():
            tables = recommender.tables()
            pick = ops.variance_choice(tables, users, positives, cands, cand_hist, pos_hist, weight)
            self._refresh(users, slots, cur, tables)
        return Negatives(cands.gather(1, pick).squeeze(1), candidates=cands)

    def _pool_items(self, pool: int, flat: torch.Tensor) -> torch.Tensor:
        """The int64 items at flat positions ``user * V + slot`` of a pool."""
        return self.pool_items[pool].view(-1).index_select(0, flat).long()

    def _refresh(self, users: torch.Tensor, slots: torch.Tensor, pool: int, tables: Tables) -> None:
        """Each distinct user's memory (from its first row): ``S1`` of its memory and ``S2`` fresh pool
        positions (none already in the memory), drawn without replacement with weights
        ``exp(score / tau)``."""
        c = self.config
        order = torch.sort(users, stable=True).indices
        sorted_users = users.index_select(0, order)
        first = torch.ones_like(sorted_users, dtype=torch.bool)
        first[1:] = sorted_users[1:] != sorted_users[:-1]
        rows = order[first]
        who = users.index_select(0, rows)
        fresh = torch.randint(
            0, c.pool_size, (who.numel(), c.fresh_candidates), device=users.device, generator=self.generator
        )
        kept = slots.index_select(0, rows)
        for _ in range(100):  # redraw the fresh positions already in the memory
            again = (fresh.unsqueeze(2) == kept.unsqueeze(1)).any(dim=2)
            n_again = int(again.sum())
            if n_again == 0:
                break
            fresh[again] = torch.randint(
                0, c.pool_size, (n_again,), device=users.device, generator=self.generator
            )
        both = torch.cat([kept, fresh], dim=1)
        flat = (who.unsqueeze(1) * c.pool_size + both).view(-1)
        items = self._pool_items(pool, flat).view(both.shape)
        keep = self.data.ops.softmax_subset(tables, who, items, c.memory_size, c.temperature, self.generator)
        self.memory.index_copy_(0, who, both.gather(1, keep))

    # ------------------------------------------------------------------ epochs
    def epoch_end(self) -> dict[str, float]:
        """Record the scores of the ``H`` pools of the next epochs and of every training click in slot
        ``t % H`` (with the recommender of the last batch, as it is after the epoch's last step), then
        move to the next pool and draw a new one in place of the pool just used.

        The pools' scores are gathered from each user's scores of the whole catalogue (a block of users
        at a time: one matrix product, what an evaluation over all items costs)."""
        c = self.config
        if self._recommender is not None:
            with torch.no_grad():
                tables = self._recommender.tables()
                slot = self.epoch % c.history
                ahead = [(self.epoch + a) % self.n_pools for a in range(1, self.n_pools)]
                n_users = self.data.n_users
                step = max(1, _CHUNK // max(self.data.n_items, 1))
                for s in range(0, n_users, step):
                    users = torch.arange(s, min(s + step, n_users), device=self.memory.device)
                    every = (tables.user.index_select(0, users) * tables.h) @ tables.item.T
                    for p in ahead:
                        picked = every.gather(1, self.pool_items[p, s : s + step].long())
                        self.pool_scores[p, s : s + step, :, slot] = picked.float()
                keys = self.data.click_keys
                self.pos_scores[:, slot] = _pair_scores(tables, keys // self.data.n_items,
                                                        keys % self.data.n_items)  # fmt: skip
        self._draw_pool(self.epoch % self.n_pools)
        self.epoch += 1
        return {}


def _pair_scores(tables: Tables, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scores ``h . (P_u * Q_i)`` of (user, item) pairs (float32), in blocks."""
    out = torch.empty(users.shape, dtype=torch.float32, device=users.device)
    step = max(1, _CHUNK // max(tables.item.shape[1], 1))
    for s in range(0, users.numel(), step):
        pu = tables.user.index_select(0, users[s : s + step]) * tables.h
        q = tables.item.index_select(0, items[s : s + step])
        out[s : s + step] = torch.linalg.vecdot(pu, q).float()
    return out
