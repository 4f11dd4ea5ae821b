"""Static samplers: uniform (BPR-GMF), popularity, DNS, exposure-only (BPR-EN) and EBPR."""

from __future__ import annotations

import torch
from pydantic import Field

from reinforcens.models.base import Recommender
from reinforcens.samplers.base import Negatives, NegativeSampler, SamplerConfig


class UniformSampler(NegativeSampler):
    """BPR-GMF: a negative drawn uniformly among the items the user did not click."""

    name = "uniform"
    label = "BPR-{model}"
    summary = "uniform among the user's non-clicked items (BPR, Rendle et al. 2009)"
    aliases = ("bpr", "bpr-gmf")
    paper_order = 1

    def sample(self, users, positives, recommender):
        return Negatives(self.data.sample_uniform(users, 1, self.generator).squeeze(1))


class PopularityConfig(SamplerConfig):
    exponent: float = Field(0.75, ge=0.0, description="weight of item i is (clicks_i + 1)^exponent")


class PopularitySampler(NegativeSampler):
    """Negatives drawn with probability proportional to ``(training clicks + 1) ** exponent``,
    rejecting the user's clicked items."""

    name = "popularity"
    label = "BPR-Pop"
    summary = "non-clicked items drawn with weight (training clicks + 1) ** exponent"
    Config = PopularityConfig

    def __init__(self, config, data, generator, context=None):
        super().__init__(config, data, generator, context)
        weights = (data.item_clicks.double() + 1.0) ** config.exponent
        self.cdf = torch.cumsum(weights / weights.sum(), 0)

    def _draw(self, n: int) -> torch.Tensor:
        r = torch.rand(n, device=self.cdf.device, generator=self.generator, dtype=torch.float64)
        return torch.searchsorted(self.cdf, r).clamp_(max=self.cdf.numel() - 1)

    def sample(self, users, positives, recommender):
        items = self._draw(users.numel())
        bad = self.data.is_clicked(users, items)
        for _ in range(100):
            if not bool(bad.any()):
                break
            items[bad] = self._draw(int(bad.sum()))
            bad = self.data.is_clicked(users, items)
        if bool(bad.any()):  # users who clicked nearly all popular items
            items[bad] = self.data.sample_uniform(users[bad], 1, self.generator).squeeze(1)
        return Negatives(items)


class DNSConfig(SamplerConfig):
    dns_candidates: int = Field(
        50,
        ge=1,
        description="X: uniform non-clicked candidates, the best-scored one is the negative",
    )


class DNSSampler(NegativeSampler):
    """BPR-DNS (Zhang et al., 2013): the highest-scored of X uniform non-clicked candidates.

    ``Negatives.candidates`` keeps the (B, X) candidates the negative was chosen from."""

    name = "dns"
    label = "BPR-DNS"
    summary = "the best-scored of uniform candidates (DNS, Zhang et al. 2013)"
    aliases = ("bpr-dns",)
    paper_order = 2
    Config = DNSConfig

    def sample(self, users, positives, recommender: Recommender):
        cands = self.data.sample_uniform(users, self.config.dns_candidates, self.generator)
        best = self.data.ops.best_candidate(recommender.tables(), users, cands)
        return Negatives(cands.gather(1, best).squeeze(1), candidates=cands)


class ExposureSampler(NegativeSampler):
    """BPR-EN: negatives only from the user's exposed-but-unclicked items; users without any
    exposure fall back to uniform (counted in ``fallback_share``)."""

    name = "exposure"
    label = "BPR-EN"
    summary = "uniform among the user's exposed-but-unclicked items (BPR-EN)"
    aliases = ("bpr-en",)
    paper_order = 5

    def sample(self, users, positives, recommender):
        items, has = self.data.sample_exposed(users, 1, self.generator)
        fallback = self.data.sample_uniform(users, 1, self.generator)
        items = torch.where(has, items.squeeze(1), fallback.squeeze(1))
        return Negatives(items, fallback=~has)

    def update(self, users, positives, negatives, recommender, neg_scores):
        return {"fallback_share": float(negatives.fallback.float().mean())}


class EBPRConfig(SamplerConfig):
    rho: float = Field(
        0.5, ge=0.0, le=1.0, description="probability that a negative is an exposed-unclicked item"
    )


class EBPRSampler(NegativeSampler):
    """EBPR (after Ding et al., 2018): with probability rho a negative from the user's exposed-unclicked
    items, otherwise uniform among items neither clicked nor exposed."""

    name = "ebpr"
    label = "EBPR"
    summary = "exposed-unclicked with probability rho, else uniform (EBPR)"
    paper_order = 6
    Config = EBPRConfig

    def sample(self, users, positives, recommender):
        exp_items, has = self.data.sample_exposed(users, 1, self.generator)
        uni = self.data.sample_uniform(users, 1, self.generator, exclude_exposed=True).squeeze(1)
        coin = torch.rand(users.shape, device=users.device, generator=self.generator)
        use_exp = (coin < self.config.rho) & has
        return Negatives(torch.where(use_exp, exp_items.squeeze(1), uni), exposed=use_exp)

    def update(self, users, positives, negatives, recommender, neg_scores):
        return {"exposed_share": float(negatives.exposed.float().mean())}
