"""IRGAN (Wang et al., SIGIR 2017) in its pairwise form, with a dot-product generator (GMF or MF).

The generator G (a GMF or MF, the run's ``sampler_model``) samples an item for each positive from
the softmax of its scores over ``N_s``
uniform non-clicked candidates; the discriminator (the recommender R) takes a BPR step that ranks the true
positive above G's item; G then takes a REINFORCE step with reward ``log(1 + exp(r_uj))`` (IRGAN's
generator reward), minus the previous epoch's mean. As in IRGAN and the RNS paper's comparison, the
*generator* is the model that ranks at evaluation.

IRGAN's generator softmax runs over all items; here it runs over ``N_s`` sampled candidates, which keeps
an epoch's cost independent of the catalogue size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from reinforcens.models.base import Recommender
from reinforcens.samplers.adversarial import RNSConfig, RNSSampler


class IRGANConfig(RNSConfig):
    n_candidates: int = Field(100, ge=2, description="candidates of the generator's softmax")
    alpha: float = Field(0.0, ge=0.0, description="unused by IRGAN (exposure reward weight)")
    exposed_candidates: int = Field(0, ge=0, description="unused by IRGAN")
    warmup: int = Field(
        0, ge=0, le=0, description="not for IRGAN: its generator ranks, and a warm-up would train it unseen"
    )


class IRGANSampler(RNSSampler):
    """IRGAN: the generator is trained to produce items the discriminator scores high, and ranks."""

    name = "irgan"
    Config = IRGANConfig
    label = "IRGAN"
    summary = "IRGAN (Wang et al. 2017): a generator trained by policy gradient that also ranks"
    defining_options = ("alpha", "beta", "exposed_candidates", "hardness")
    paper_order = 4
    tune_grid = {"n_candidates": tuple(range(10, 151, 10))}

    def _candidates_and_flags(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = self.config.n_candidates
        return self.data.sample_candidates(users, n, 0, False, self.generator, flags=False)

    def rewards(self, users, items, recommender, neg_scores, exposed=None):
        return {"hardness": F.softplus(neg_scores.detach())}

    def ranking_model(self, recommender: Recommender) -> Recommender:
        return self.model
