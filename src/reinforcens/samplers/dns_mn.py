"""DNS(M, N) (Shi et al., WWW 2023, "On the Theories Behind Hard Negative Sampling for
Recommendation"): one of the ``M`` best-scored of ``N`` uniform non-clicked candidates."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from reinforcens.models.base import Recommender
from reinforcens.samplers.base import Negatives, NegativeSampler, SamplerConfig


class DNSMNConfig(SamplerConfig):
    dns_candidates: int = Field(
        32,
        ge=1,
        description="N of DNS(M, N): uniform non-clicked candidates scored by the recommender",
    )
    top_m: int = Field(
        2,
        ge=1,
        description="M of DNS(M, N): the negative is drawn uniformly among the M best-scored candidates "
        "(1: DNS's argmax; dns_candidates: uniform over the candidates)",
    )

    @field_validator("top_m")
    @classmethod
    def _within_the_candidates(cls, value: int, info: ValidationInfo) -> int:
        n = info.data.get("dns_candidates")
        if n is not None and value > n:
            raise ValueError(f"top_m = {value} exceeds dns_candidates = {n} (M <= N)")
        return value


class DNSMNSampler(NegativeSampler):
    """DNS(M, N): draw ``N`` (``dns_candidates``) candidates uniformly among the user's non-clicked
    items, score them with the recommender's effective tables and return one drawn uniformly among the
    ``M`` (``top_m``) highest-scored; ties rank by candidate position, the earlier first
    (:meth:`reinforcens.ops.base.Ops.top_n_choice`). BPR with it estimates the one-way partial AUC
    OPAUC(beta) with ``beta = M / N`` (the paper's Theorem; smaller ``M / N``: harder negatives).

    The paper's letters are kept: ``N`` is the number of candidates and ``M`` the number of hardest
    kept (``M <= N``). ``M = 1`` is DNS (:class:`reinforcens.samplers.static.DNSSampler`), ``M = N``
    uniform sampling.

    Code and paper: the authors' code (``swt-user/WWW_2023_code``, ``model.py``,
    ``BaseModel.loss_function`` with ``loss_type == 1``; ``--sample_num`` is N, ``--lambda_w`` is M)
    does not draw one negative: it sums the BPR losses of all ``M`` top-scored candidates,
    ``sum_{j in top-M} -log sigmoid(r_ui - r_uj)``. This sampler returns one negative per positive, as
    every sampler here does, drawn uniformly among the top ``M``, as the AHNS authors' implementation of
    ``dns_mn`` does (``Riwei-HEU/AHNS``, ``modules/MF.py``, ``dynamic_mn_negative_sampling``:
    ``torch.topk`` then a uniform index): its BPR gradient is in expectation the code's divided by
    ``M`` (a constant factor, absorbed by the learning rate), and it is the sampling distribution the
    paper states (probability ``1 / M`` for each of the top ``M``, 0 for the others).

    Defaults: ``M = 2`` from the authors' README example (``--sample_num 200 --lambda_w 2``); ``N = 32``
    from AHNS (``--n_negs``, the candidate count it gives every sampler, ``dns_mn`` included), not the
    README's 200: the candidates are drawn with replacement (``sample_uniform``), and on a small
    catalogue 200 draws hold the user's best item ``M`` times over, so the draw collapses to DNS's
    argmax (``tune_grid`` searches N up to 500).

    ``Negatives.candidates`` keeps the (B, N) candidates the negative was chosen from.
    """

    name = "dns-mn"
    label = "DNS(M,N)"
    summary = "DNS(M,N) (Shi et al. 2023): uniform among the M best-scored of N candidates"
    Config = DNSMNConfig
    #: ``dns_candidates``: the values of the authors' sweep of ``-s`` (``config/run.sh``) up to 500;
    #: ``top_m``: their README's 2 and run script's 5, and 1 (DNS)
    tune_grid = {"dns_candidates": (20, 50, 100, 200, 300, 400, 500), "top_m": (1, 2, 5)}

    def sample(self, users, positives, recommender: Recommender):
        cands = self.data.sample_uniform(users, self.config.dns_candidates, self.generator)
        pick = self.data.ops.top_n_choice(
            recommender.tables(), users, cands, self.config.top_m, self.generator
        )
        return Negatives(cands.gather(1, pick).squeeze(1), candidates=cands)
