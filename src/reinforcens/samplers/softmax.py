"""Softmax(rho, N) (Shi et al., WWW 2023, "On the Theories Behind Hard Negative Sampling for
Recommendation"): one of ``N`` uniform non-clicked candidates, drawn with softmax weights of their BPR
losses at a temperature set by ``rho``."""

from __future__ import annotations

import torch
from pydantic import Field

from reinforcens.models.base import Recommender
from reinforcens.samplers.base import Negatives, NegativeSampler, SamplerConfig


class SoftmaxConfig(SamplerConfig):
    n_candidates: int = Field(
        200, ge=2, description="N of Softmax(rho, N): uniform non-clicked candidates (at least 2)"
    )
    rho: float = Field(
        1.0,
        gt=0.0,
        description="rho of Softmax(rho, N): temperature sqrt(Var(loss) / (2 rho)); larger is harder",
    )


def softmax_weights(pos_scores: torch.Tensor, cand_scores: torch.Tensor, rho: float) -> torch.Tensor:
    """The log-weights (B, N) of Softmax(rho, N): ``log_softmax(Z / tau)`` over each row, with
    ``Z_j = -log sigmoid(r_ui - r_uj)`` the BPR loss of candidate ``j`` and
    ``tau = sqrt(Var_j(Z) / (2 rho))`` (the unbiased variance over the row's candidates). A row whose
    losses are all equal (``Var = 0``) gets uniform weights.

    Parameters
    ----------
    pos_scores
        (B,) the positives' scores ``r_ui``.
    cand_scores
        (B, N) the candidates' scores ``r_uj``, ``N >= 2``.
    rho
        ``rho > 0``.
    """
    z = torch.nn.functional.softplus(cand_scores - pos_scores.unsqueeze(1))
    tau = z.var(dim=1, keepdim=True).div_(2.0 * rho).sqrt_()
    shifted = z - z.amax(dim=1, keepdim=True)  # <= 0; all 0 where every loss is the row's maximum
    logits = torch.where(tau > 0, shifted / tau.clamp(min=torch.finfo(z.dtype).tiny), torch.zeros_like(z))
    return torch.log_softmax(logits, dim=1)


class SoftmaxSampler(NegativeSampler):
    """Softmax(rho, N): draw ``N`` (``n_candidates``) candidates uniformly among the user's non-clicked
    items and return one drawn with probability ``softmax(Z / tau)`` over them
    (:func:`softmax_weights`): ``Z_j = -log sigmoid(r_ui - r_uj)`` is candidate ``j``'s BPR loss against
    the positive ``i``, ``tau = sqrt(Var_j(Z) / (2 rho))``. Scores come from the recommender's
    effective tables. Larger ``rho`` means a lower temperature and harder negatives: ``rho -> 0`` is
    uniform over the candidates, ``rho -> infinity`` the highest-scored one (DNS). BPR with it is the
    paper's soft estimator of OPAUC (a KL-constrained worst case over the negatives, of radius
    ``rho``).

    Code and paper: this follows the authors' code (``swt-user/WWW_2023_code``, ``model.py``,
    ``BaseModel.loss_function`` with ``loss_type == 2``: ``Z = -logsigmoid(pred)``,
    ``tau = sqrt(var(Z, dim=1) / (2 * lambda_w))``, ``importance = softmax(Z / tau - log q)``, ``q``
    the proposal, uniform here so ``log q`` drops out; ``--lambda_w`` is rho, ``--sample_num`` N). The
    weights are over the candidates' BPR losses with a per-row adaptive temperature, not a softmax of
    raw scores at a fixed temperature (what :meth:`reinforcens.ops.base.Ops.softmax_choice` draws), so
    this sampler computes them itself. The code weights the BPR losses of all ``N`` candidates by the
    (detached) importance; this sampler draws one negative from the importance, whose BPR gradient is
    the code's in expectation. The draw is :meth:`reinforcens.ops.base.Ops.loss_softmax_choice`: on
    the torch backend a Gumbel-max from the sampler's generator, compiled on the numba backend (one
    pass per row, an inverse-CDF draw from the same weights). The defaults
    are the authors' README example (``--lambda_w 1 --sample_num 200``).

    ``Negatives.candidates`` keeps the (B, N) candidates the negative was chosen from.
    """

    name = "softmax"
    label = "Softmax(rho,N)"
    summary = "Softmax(rho,N) (Shi et al. 2023): candidates drawn by softmax of their BPR losses"
    Config = SoftmaxConfig
    #: ``rho`` is also EBPR's option (a probability there): an ``--rho`` given for all methods of an
    #: experiment must not change this sampler
    defining_options = ("rho",)
    #: ``n_candidates``: the authors' sweep of ``-s`` (``config/run.sh``) up to 500; ``rho``: a log grid
    #: around their README's 1 (not a grid the paper states)
    tune_grid = {
        "n_candidates": (20, 50, 100, 200, 300, 400, 500),
        "rho": (0.01, 0.1, 1.0, 10.0, 100.0),
    }

    def sample(self, users, positives, recommender: Recommender):
        cands = self.data.sample_uniform(users, self.config.n_candidates, self.generator)
        if users.numel() == 0:  # an empty batch: no variance to take
            return Negatives(cands[:, 0], candidates=cands)
        with torch.no_grad():
            pick = self.data.ops.loss_softmax_choice(
                recommender.tables(), users, positives, cands, self.config.rho, self.generator
            )
        return Negatives(cands.gather(1, pick).squeeze(1), candidates=cands)
