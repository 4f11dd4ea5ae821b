"""Learned samplers trained by policy gradient: RNS, RNS-ES and KBGAN (= RNS-AS).

A second model S (a GMF or an MF, the run's ``sampler_model``) scores ``N_s`` candidates per
positive (uniform among items the user neither clicked nor was exposed to, plus
``exposed_candidates`` drawn from the user's exposed-unclicked items), and samples one negative ``j``
from the softmax of its scores (:meth:`reinforcens.ops.Ops.softmax_choice`: Gumbel-max on the torch
backend, an inverse-CDF draw in the compiled kernel). S sees the
user, not the positive. After the recommender's step, S takes one REINFORCE step on the reward

``(hardness - b1) + alpha * ((1 - beta) * overlap + beta * mmd - b2)``

with ``hardness = -sigmoid(-r_uj)`` from the recommender, ``overlap = 1[j exposed to u]`` and ``mmd`` the
feature-matching reward (:func:`reinforcens.mmd.mmd_reward`) of ``f = p_u * q_j`` from the recommender's
embeddings against one exposed item per instance. ``b1`` and ``b2`` are the previous epoch's mean
rewards (0 in the first epoch).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from reinforcens.losses import l2_penalty, reinforce_loss
from reinforcens.mmd import DEFAULT_BANDWIDTHS, median_bandwidths, rff_mmd_reward
from reinforcens.models.base import Recommender
from reinforcens.ops.base import SoftmaxChoice
from reinforcens.samplers.base import Negatives, NegativeSampler, SamplerConfig


class RNSConfig(SamplerConfig):
    legacy_options: ClassVar[dict[str, Any]] = {
        "mmd": "exact",
        "rff_features": 64,
        "policy_gradient": "exact",
    }

    n_candidates: int = Field(30, ge=2, description="N_s: candidates scored by the sampler per positive")
    exposed_candidates: int = Field(
        1, ge=0, description="how many of the N_s candidates come from the user's exposed items"
    )
    alpha: float = Field(2.5, ge=0.0, description="weight of the exposure-matching rewards")
    beta: float = Field(0.75, ge=0.0, le=1.0, description="share of MMD in the exposure reward")
    hardness: bool = Field(True, description="include the adversarial (hardness) reward")
    bandwidths: tuple[float, ...] = Field(
        DEFAULT_BANDWIDTHS, min_length=1, description="Gaussian kernel bandwidths of the MMD"
    )
    bandwidth_scale: Literal["fixed", "median"] = Field(
        "fixed",
        description="'fixed': the bandwidths as given (the paper's); 'median': rescaled per batch so "
        "that their median is the median distance between generated and exposed features",
    )
    sampler_lr: float | None = Field(None, gt=0, description="sampler learning rate (default: lr)")
    sampler_l2: float | None = Field(None, ge=0, description="sampler L2 (default: l2)")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the sampler")
    warmup: int = Field(
        0,
        ge=0,
        description="epochs at the start of the learned stage in which the sampler learns from the "
        "recommender's scores while the recommender does not train (0: none, the paper's set-up)",
    )
    sampler_init: Literal["pretrained", "scratch"] = Field(
        "pretrained",
        description="start the sampler from the pretrained recommender's embeddings (the paper's "
        "set-up) or from a random initialisation (a policy close to uniform over the candidates)",
    )
    mmd: Literal["exact", "rff"] = Field(
        "exact",
        description="'exact': the MMD reward from every pair of the batch's features (the paper's); "
        "'rff': an approximation from --rff-features random Fourier features, linear in the batch",
    )
    rff_features: int = Field(
        64, ge=1, description="with --mmd rff: random frequencies in all, shared among the bandwidths"
    )
    policy_gradient: Literal["exact", "sampled"] = Field(
        "exact",
        description="'exact': the REINFORCE gradient reaches all N_s candidates' rows (the paper's); "
        "'sampled': an unbiased estimate from one more draw of the policy, which moves two item "
        "rows per positive",
    )


class RNSSampler(NegativeSampler):
    """The Reinforced Negative Sampler (Ding et al., IJCAI 2019)."""

    name = "rns"
    Config = RNSConfig
    default_init = "pretrained"
    learned = True
    label = "RNS"
    summary = "RNS (Ding et al. 2019): a learned policy over uniform and exposed candidates, rewarded by MMD"
    paper_order = 7
    tune_grid = {
        "n_candidates": tuple(range(10, 151, 10)),
        "alpha": (0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
        "beta": tuple(round(0.1 * i, 1) for i in range(10)),
    }

    def __init__(self, config: RNSConfig, data, generator, context=None):
        super().__init__(config, data, generator, context)
        from reinforcens.models import MODELS

        ctx = self.context
        #: the policy model: a GMF or an MF (``SamplerContext.model``), trained by the fused steps
        self.model = MODELS[ctx.model](
            data.n_users, data.n_items, dim=ctx.dim, init_std=ctx.init_std, generator=_cpu_gen(generator)
        )
        self.model.to(data.device)
        self.lr = config.sampler_lr or ctx.lr
        self.l2 = ctx.l2 if config.sampler_l2 is None else config.sampler_l2
        self.optimizer = self._new_optimizer()
        dev = data.device
        self.baseline = torch.zeros(2, dtype=torch.float64, device=dev)  # b1 hardness, b2 exposure
        # running sums over the epoch: hardness, exposure, overlap, mmd, total, count, entropy, and the
        # count of rows whose policy was known (the entropy's denominator)
        self._sums = torch.zeros(8, dtype=torch.float64, device=dev)

    def init_from_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        if self.config.sampler_init == "scratch":
            return
        state = dict(state)
        if not self.model.trains_h:  # an MF policy: fold the start's h into its user rows
            state["user.weight"] = state["user.weight"] * state["h"]
            state["h"] = torch.ones_like(state["h"])
        self.model.load_state_dict({k: state[k] for k in self.model.state_dict()})
        self.optimizer = self._new_optimizer()

    def _new_optimizer(self):
        return self.model.make_optimizer(self.lr, self.data.ops)

    @property
    def warmup_epochs(self) -> int:
        return self.config.warmup

    @property
    def uses_exposure(self) -> bool:
        return self.config.alpha > 0

    def _uniform_excludes_exposed(self) -> bool:
        """Whether the uniform candidates exclude the user's exposed items."""
        return True

    def candidates(self, users: torch.Tensor) -> torch.Tensor:
        """N_s candidates per user: uniform non-clicked non-exposed items plus exposed ones.

        Users without exposures get uniform candidates in the exposed slots too.
        """
        return self._candidates_and_flags(users)[0]

    def _candidates_and_flags(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The candidates and, when the rewards use exposure, whether each is an exposed-unclicked item."""
        n = self.config.n_candidates
        n_exp = min(self.config.exposed_candidates, n)
        return self.data.sample_candidates(
            users, n, n_exp, self._uniform_excludes_exposed(), self.generator, flags=self.uses_exposure
        )

    def sample(self, users, positives, recommender):
        """One negative per positive from the softmax of S's scores over the candidates
        (:meth:`reinforcens.ops.Ops.softmax_choice`: Gumbel-max on the torch backend; the compiled
        kernel inverts the softmax's distribution function instead).

        Nothing is recorded for autograd: ``log_probs`` holds the values of ``log pi(j|u)``, and
        ``candidates`` and ``policy`` keep the candidates and the draw (the log-softmax, the choice and,
        on the torch backend, S's rows), from which :meth:`update` computes the policy gradient by
        hand. (Negatives built elsewhere with autograd log-probabilities and no ``policy`` are updated
        through autograd.)
        """
        cands, exposed = self._candidates_and_flags(users)
        drawn = self.data.ops.softmax_choice(
            self.model.tables(), users, cands, self.config.temperature, self.generator
        )
        log_p, choice = drawn.log_softmax, drawn.choice
        items = cands.gather(1, choice).squeeze(1)
        chosen = None if exposed is None else exposed.gather(1, choice).squeeze(1)
        return Negatives(
            items, log_p.gather(1, choice).squeeze(1), candidates=cands, policy=drawn, exposed=chosen
        )

    def rewards(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        recommender: Recommender,
        neg_scores: torch.Tensor,
        exposed: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The three reward terms of each generated negative (all detached).

        ``exposed``: whether each item is exposed to its user, when the caller already knows.
        """
        c = self.config
        out: dict[str, torch.Tensor] = {"hardness": -torch.sigmoid(-neg_scores.detach())}
        if self.uses_exposure:
            if exposed is None:
                exposed = self.data.is_exposed(users, items)
            out["overlap"] = exposed.to(neg_scores.dtype)
            if c.beta > 0:
                with torch.no_grad():
                    t = recommender.tables()
                    pu = t.user.index_select(0, users)
                    gen = pu * t.item.index_select(0, items)
                    exp_items, has = self.data.sample_exposed(users, 1, self.generator)
                    exp_q = t.item.index_select(0, exp_items.squeeze(1).clamp(min=0))
                    exp_feat = (pu * exp_q)[has]
                    bw = c.bandwidths
                    if c.bandwidth_scale == "median":
                        bw = median_bandwidths(gen, exp_feat, c.bandwidths)
                    if c.mmd == "rff":
                        out["mmd"] = rff_mmd_reward(gen, exp_feat, bw, c.rff_features, self.generator)
                    else:
                        out["mmd"] = self.data.ops.mmd_reward(gen, exp_feat, bw)
            else:
                out["mmd"] = torch.zeros_like(out["overlap"])
        return out

    def update(self, users, positives, negatives, recommender, neg_scores):
        c = self.config
        known = negatives.exposed
        r = self.rewards(users, negatives.items, recommender, neg_scores, known)
        b1, b2 = self.baseline[0].to(neg_scores.dtype), self.baseline[1].to(neg_scores.dtype)
        hard = r["hardness"]
        total = torch.zeros_like(hard)
        if c.hardness:
            total = total + (hard - b1)
        exposure = None
        if self.uses_exposure:
            exposure = (1 - c.beta) * r["overlap"] + c.beta * r["mmd"]
            total = total + c.alpha * (exposure - b2)
        if negatives.policy is not None:
            self._reinforce_step(users, negatives, total)
        else:  # log-probabilities built with autograd (e.g. by a caller's own policy)
            self.optimizer.zero_grad()
            loss = reinforce_loss(negatives.log_probs, total)
            if self.l2 > 0:
                rows = (self.model.user(users), self.model.item(negatives.items))
                loss = loss + self.l2 * l2_penalty(*rows)
            loss.backward()
            self.optimizer.step()
        overlap = r.get("overlap")
        if overlap is None:
            if known is None:
                known = self.data.is_exposed(users, negatives.items)
            overlap = known.to(hard.dtype)
        zero = hard.new_zeros(())
        self._sums += torch.stack(
            [
                hard.sum(),
                exposure.sum() if exposure is not None else zero,
                overlap.sum(),
                r["mmd"].sum() if "mmd" in r else zero,
                total.sum(),
                hard.new_tensor(float(hard.numel())),
                _entropy_sum(negatives.policy.log_softmax if negatives.policy else None, zero),
                hard.new_tensor(float(hard.numel() if negatives.policy is not None else 0)),
            ]
        ).to(torch.float64)
        return {}

    def _reinforce_step(self, users: torch.Tensor, negatives: Negatives, rewards: torch.Tensor) -> None:
        """The REINFORCE step with the gradient computed by hand from what :meth:`sample` kept.

        The loss is ``-sum_b R_b log pi(j_b|u_b) + 0.5 * l2 * (||p_u||^2 + ||q_j||^2)`` with
        ``log pi = log_softmax(z / T)`` over the candidates and ``z_bc = h . (p_u * q_c)``, so
        ``dL/dz_bc = R_b (pi_bc - 1[c = j_b]) / T``, and the chain rule through ``z`` gives the rows'
        and ``h``'s gradients. It equals the autograd path of :meth:`update` (tested).
        """
        assert negatives.policy is not None and negatives.candidates is not None
        if self.config.policy_gradient == "sampled":
            self._sampled_reinforce_step(users, negatives, rewards)
            return
        self.data.ops.reinforce_step(
            self.optimizer, users, negatives.candidates, negatives.policy, rewards, self.l2,
            self.config.temperature,
        )  # fmt: skip

    def _sampled_reinforce_step(self, users: torch.Tensor, negatives: Negatives, rewards: torch.Tensor):
        """The REINFORCE step of ``policy_gradient="sampled"``: the exact step's gradient with
        ``pi_bc`` replaced by ``1[c = c'_b]``, ``c'_b`` one more draw from the policy.

        ``dL/dz_bc = R_b (pi_bc - 1[c = j_b]) / T`` becomes ``R_b (1[c = c'_b] - 1[c = j_b]) / T``, whose
        expectation over ``c'_b ~ pi_b`` is the exact value, so the gradients of the rows and of ``h``
        (linear in ``dL/dz``) are unbiased. It is the exact step (:meth:`reinforcens.ops.Ops.
        reinforce_step`) over the two candidates ``(c'_b, j_b)`` with the policy ``(1, 0)`` and ``j_b``
        chosen: with ``g_b = R_b / T``, ``grad p_u = g_b h * (q_c' - q_j) + l2 p_u``,
        ``grad q_c' = g_b h * p_u``, ``grad q_j = -g_b h * p_u + l2 q_j``,
        ``grad h = sum_b g_b p_u * (q_c' - q_j)``. The row-wise Adam then moves the user's row and two
        item rows per positive instead of N_s; the other candidates keep their moments (lazy Adam), so
        the steps are not those of the exact gradient's Adam in expectation: an approximation, to be
        judged by its results.
        """
        assert negatives.policy is not None and negatives.candidates is not None
        cands, policy = negatives.candidates, negatives.policy
        with torch.no_grad():
            cdf = policy.log_softmax.to(torch.float64).exp_().cumsum_(1)
            u = torch.rand((cands.shape[0], 1), generator=self.generator, device=cdf.device, dtype=cdf.dtype)
            other = torch.searchsorted(cdf, u.mul_(cdf[:, -1:])).clamp_(max=cands.shape[1] - 1)
            pair = torch.cat([other, policy.choice], dim=1)  # (B, 2): c' then j
            log_p = torch.zeros(pair.shape, dtype=policy.log_softmax.dtype, device=pair.device)
            log_p[:, 1] = -1e4  # pi = (1, 0): exp underflows to 0
            rows = None
            if policy.item_rows is not None:  # the torch backend's step takes the rows of the draw
                k = policy.item_rows.shape[2]
                rows = policy.item_rows.gather(1, pair.unsqueeze(2).expand(-1, -1, k))
            drawn = SoftmaxChoice(log_p, torch.ones_like(policy.choice), policy.user_rows, rows)
            self.data.ops.reinforce_step(
                self.optimizer, users, cands.gather(1, pair), drawn, rewards, self.l2,
                self.config.temperature,
            )  # fmt: skip

    def epoch_end(self) -> dict[str, float]:
        sums = self.data.ops.all_sum(self._sums).cpu()  # over the ranks of a data-parallel run
        n = max(float(sums[5]), 1.0)
        self.baseline = (sums[:2] / n).to(self.baseline.device)
        out = {
            "reward_hardness": float(sums[0]) / n,
            "reward_exposure": float(sums[1]) / n,
            "overlap": float(sums[2]) / n,
            "reward_mmd": float(sums[3]) / n,
            "reward_total": float(sums[4]) / n,
            # the policy's entropy over the N_s candidates, over log N_s (1: uniform over them)
            # (NaN when no batch carried its distribution)
            "entropy": float(sums[6]) / float(sums[7]) / math.log(self.config.n_candidates)
            if float(sums[7]) > 0
            else float("nan"),
        }
        self._sums.zero_()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "baseline": self.baseline.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer = self._new_optimizer()
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"].clone().to(torch.float64).to(self.data.device)


def _entropy_sum(log_p: torch.Tensor | None, zero: torch.Tensor) -> torch.Tensor:
    """The summed entropy ``-sum_c pi_c log pi_c`` of a batch of policies (rows of ``log_p``)."""
    if log_p is None:
        return zero
    return -(log_p.exp() * log_p).sum().to(zero.dtype)


def _cpu_gen(generator: torch.Generator) -> torch.Generator:
    """A CPU generator seeded from ``generator`` (initialisation runs on the CPU)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)


class RNSESConfig(RNSConfig):
    hardness: bool = Field(False, description="include the adversarial (hardness) reward")
    beta: float = Field(0.9, ge=0.0, le=1.0, description="share of MMD in the exposure reward")


class RNSESSampler(RNSSampler):
    """RNS-ES: RNS with the hardness reward off (exposure matching only)."""

    name = "rns-es"
    Config = RNSESConfig
    label = "RNS-ES"
    summary = "RNS-ES: RNS with the hardness reward off, the policy rewarded by exposure matching only"
    defining_options = ("hardness",)
    paper_order = None
    tune_grid = {
        "n_candidates": tuple(range(10, 151, 10)),
        "beta": tuple(round(0.1 * i, 1) for i in range(10)),
    }


class RNSFastConfig(RNSConfig):
    mmd: Literal["exact", "rff"] = Field("rff", description=RNSConfig.model_fields["mmd"].description)


class RNSFastSampler(RNSSampler):
    """RNS with the MMD reward from random Fourier features (:func:`reinforcens.mmd.rff_mmd_reward`),
    linear in the batch instead of quadratic; everything else is RNS's.

    The other approximation, ``--policy-gradient sampled``, is not among its defaults: on the ``small``
    simulator it lowered the test list AUC against exact RNS (EXPERIMENTS.md, section 13)."""

    name = "rns-fast"
    Config = RNSFastConfig
    label = "RNS-fast"
    summary = "RNS with the MMD reward from random Fourier features (an approximation, linear in the batch)"
    defining_options = ("mmd",)
    paper_order = None


class KBGANConfig(RNSConfig):
    alpha: float = Field(0.0, ge=0.0, description="weight of the exposure rewards (0 for KBGAN)")
    exposed_candidates: int = Field(
        0, ge=0, description="how many of the N_s candidates come from the user's exposed items"
    )


class KBGANSampler(RNSSampler):
    """KBGAN (Cai and Wang, 2018) with BPR, i.e. RNS-AS: the hardness reward only, and candidates
    drawn uniformly among all non-clicked items (the sampler sees no exposure)."""

    name = "kbgan"
    Config = KBGANConfig
    label = "KBGAN"
    summary = "KBGAN / RNS-AS: a learned adversarial policy over uniform candidates"
    aliases = ("rns-as",)
    defining_options = ("alpha", "beta", "exposed_candidates", "hardness")
    paper_order = 3
    tune_grid = {"n_candidates": tuple(range(10, 151, 10))}

    def _uniform_excludes_exposed(self) -> bool:
        return self.config.exposed_candidates > 0
