"""AHNS (Lai et al., AAAI 2024, "Adaptive Hardness Negative Sampling for Collaborative Filtering"): of
``M`` uniform non-clicked candidates, the one whose score is closest to a target set by the positive's
score, ``beta * (r_ui + alpha) ** (p + 1)`` with ``p < 0``: the better the positive is already ranked,
the easier its negative."""

from __future__ import annotations

import torch
from pydantic import Field

from reinforcens.models.base import Recommender
from reinforcens.samplers.base import Negatives, NegativeSampler, SamplerConfig


class AHNSConfig(SamplerConfig):
    n_candidates: int = Field(
        32, ge=1, description="M of AHNS: uniform non-clicked candidates scored by the recommender"
    )
    alpha: float = Field(
        1.0,
        ge=0.0,
        description="alpha of AHNS: the shift of the positive's score in the target "
        "beta * (r_ui + alpha) ** (p + 1)",
    )
    beta: float = Field(
        0.1, gt=0.0, description="beta of AHNS: the scale of the target beta * (r_ui + alpha) ** (p + 1)"
    )
    p: int = Field(
        -2,
        lt=0,
        description="p of AHNS_{p<0}: the power of the target beta * (r_ui + alpha) ** (p + 1), a negative "
        "integer (-1: a fixed target beta, whatever the positive's score)",
    )


def ahns_targets(pos_scores: torch.Tensor, alpha: float, beta: float, p: int) -> torch.Tensor:
    """The score AHNS wants of each positive's negative: ``beta * (r_ui + alpha) ** (p + 1)``.

    Parameters
    ----------
    pos_scores
        (B,) the positives' scores ``r_ui``.
    alpha, beta, p
        The sampler's options (``p`` a negative integer, so a negative base is raised to an integer
        power; ``r_ui = -alpha`` with ``p < -1`` gives an infinite target, equally far from every
        candidate, so the sampler takes the first).
    """
    return pos_scores.add(alpha).pow(p + 1).mul(beta)


class AHNSSampler(NegativeSampler):
    """AHNS_{p<0}: draw ``M`` (``n_candidates``) candidates uniformly, with replacement, among the user's
    non-clicked items, score them with the recommender's effective tables and return the one whose
    score is closest to the positive's target:

    .. math::

        j^* = \\arg\\min_{j \\in \\mathcal{M}} \\left| r_{uj} - \\beta (r_{ui} + \\alpha)^{p + 1} \\right|
        \\qquad (1)

    where ``r_ui`` is the positive's and ``r_uj`` the candidates' score ``h . (P_u * Q_j)``; ties go to
    the earlier candidate (``torch.argmin``). (1) (numbered here) is the paper's AHNS_{p<0}, a uniform
    candidate draw and then a pick by a rating of the candidates parameterised by ``alpha``, ``beta``
    and ``p < 0``, as the authors' code writes it (``Riwei-HEU/AHNS``, ``modules/MF.py``,
    ``LightGCN.adaptive_negative_sampling``: ``scores = |n_scores - beta * (p_scores + alpha) **
    (p + 1)|``, then the index of ``torch.min(scores, dim=1)``).

    With ``p < -1`` and ``r_ui + alpha > 0`` the target falls as the positive's score rises
    (``d/dr beta (r + alpha)^(p+1) = beta (p + 1) (r + alpha)^p < 0``), which is the paper's second
    criterion: the higher the positive's predicted score, the lower the hardness of its negative (its
    first criterion, a hardness set by the positive, is the target itself; its third, that the hardness
    be adjustable, is ``alpha``, ``beta`` and ``p``). ``p = -1`` makes the target the constant
    ``beta``: a fixed hardness, whatever the positive.

    Code and paper: this follows the authors' code. Its candidates are ``n_negs`` draws, uniform with
    replacement among the user's non-clicked items (``main.py``, ``get_feed_dict``), what
    ``sample_uniform`` draws; it scores them by the inner product of the mean-pooled layer embeddings
    (``--simi ip``, ``--pool mean``; ``modules/MF.py`` is LightGCN with ``--context_hops 0``), which are
    the effective tables here for GMF, MF and LightGCN alike. The code draws ``K`` negatives per positive
    (``--K``, default 1) from ``K`` disjoint blocks of candidates; this sampler returns one, the code's
    default. ``p`` is an integer, as the code's parser has it (``type=int``), so a negative base has a
    real power.

    Defaults: the authors' parser (``utils/parser.py``): ``--n_negs 32``, ``--alpha 1.0``, ``--beta 0.1``,
    ``--p -2``, for which the target is ``0.1 / (r_ui + 1)``.

    ``Negatives.candidates`` keeps the (B, M) candidates the negative was chosen from.
    """

    name = "ahns"
    label = "AHNS"
    summary = (
        "the one of M uniform non-clicked candidates scored closest to beta*(r_ui+alpha)^(p+1): easier "
        "negatives for better-ranked positives (Lai et al., AAAI 2024)"
    )
    Config = AHNSConfig
    #: ``alpha`` and ``beta`` are also RNS's options (and ``p`` is short): options given for all methods
    #: of an experiment must not change this sampler
    defining_options = ("alpha", "beta", "p")
    #: a grid around the authors' parser defaults (``n_negs`` 32, ``alpha`` 1, ``beta`` 0.1, ``p`` -2),
    #: not a grid the paper's text states
    tune_grid = {
        "n_candidates": (16, 32, 64),
        "alpha": (0.5, 1.0, 2.0),
        "beta": (0.01, 0.1, 0.5, 1.0),
        "p": (-1, -2, -3, -4),
    }

    def sample(self, users, positives, recommender: Recommender):
        cfg = self.config
        cands = self.data.sample_uniform(users, cfg.n_candidates, self.generator)
        if users.numel() == 0:
            return Negatives(cands[:, 0], candidates=cands)
        with torch.no_grad():
            scores = recommender.candidate_scores(users, torch.cat([positives.unsqueeze(1), cands], 1))[0]
            target = ahns_targets(scores[:, :1], cfg.alpha, cfg.beta, cfg.p)
            gap = (scores[:, 1:] - target).abs_()
            # an infinite target makes every gap infinite (NaN for an infinite score): all equal, so the
            # first candidate, as on any tie
            gap = torch.nan_to_num_(gap, nan=torch.finfo(gap.dtype).max)
            pick = gap.argmin(dim=1, keepdim=True)
        return Negatives(cands.gather(1, pick).squeeze(1), candidates=cands)
