"""MixGCF (Huang et al., KDD 2021, "MixGCF: An Improved Training Method for Graph Neural
Network-based Recommender Systems"): a synthetic hard negative, mixed from the positive and the
best-scored of ``N`` uniform candidates, layer by layer."""

from __future__ import annotations

import torch
from pydantic import Field

from reinforcens.models.base import Recommender, Tables
from reinforcens.samplers.base import Mixture, Negatives, NegativeSampler, SamplerConfig


class MixGCFConfig(SamplerConfig):
    n_candidates: int = Field(
        64,
        ge=1,
        description="MixGCF's n_negs: uniform non-clicked candidates mixed with the positive",
    )


def first_argmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The index of the maximum along ``dim``, the earliest of equal maxima."""
    n = x.shape[dim]
    shape = [1] * x.dim()
    shape[dim] = n
    later = torch.arange(n, 0, -1, device=x.device).view(shape)  # n for position 0, 1 for the last
    return torch.where(x == x.amax(dim=dim, keepdim=True), later, 0).argmax(dim=dim)


class MixGCFSampler(NegativeSampler):
    """MixGCF: the negative is not an item but an embedding synthesised from the recommender's layers.

    For a positive ``(u, i)`` draw ``N`` (``n_candidates``) candidates ``j_1 .. j_N`` uniformly among
    the user's non-clicked items, and for every layer ``l = 0 .. L`` of the recommender
    (:meth:`reinforcens.models.base.Recommender.layer_tables`: LightGCN's ``E^(0) .. E^(L)``; the
    item table alone for GMF and MF, ``L = 0``) one ``alpha_l ~ U(0, 1)``:

    .. math::

        \\text{positive mixing (eq. 5):}\\quad e'^{(l)}_{j_n} = \\alpha_l e^{(l)}_i
            + (1 - \\alpha_l) e^{(l)}_{j_n}

        \\text{hop mixing (eq. 6-7):}\\quad e^{(l)}_{\\tilde j} = e'^{(l)}_{j_{n_l}},\\quad
            n_l = \\arg\\max_n\\; h \\cdot (e_u \\odot e'^{(l)}_{j_n})

    with ``e_u`` the user's pooled (effective) embedding; the negative's embedding is the pooling of
    its layers, their mean (the paper's eq. 8 with the ``mean`` pooling of the authors' LightGCN
    runs). The BPR step trains against it (:func:`reinforcens.optim.mixture_bpr_loss`, gradients
    flowing into the positive's and the chosen candidates' rows of every layer); the sampler returns
    it as a :class:`~reinforcens.samplers.base.Mixture` of the rows ``(i, j_{n_l})`` with the weights
    ``(alpha_l, 1 - alpha_l)`` per layer. Since ``alpha_l`` is one number per layer and ``1 - alpha_l
    > 0``, the hop-mixing argmax is the candidate with the best layer-``l`` score ``h . (e_u *
    e^(l)_j)``; ties go to the earlier candidate.

    Code and paper: this follows the authors' code (``huangtinglin/MixGCF``,
    ``modules/LightGCN.py``, ``LightGCN.negative_sampling`` and ``create_bpr_loss``): one ``alpha``
    per (positive, layer) drawn from ``torch.rand`` (the paper's eq. 5 draws it per layer too), the
    user side pooled before scoring (``pool != 'concat'``), and the L2 term on the synthetic
    negative's layer 0 rather than on the rows it mixes. With no propagation (GMF, MF) there is one
    layer and MixGCF is positive mixing alone, as in the AHNS authors' code, which runs ``mix`` with
    MF as LightGCN with zero layers (``Riwei-HEU/AHNS``, ``modules/MF.py``,
    ``mix_negative_sampling``). ``K = 1`` (BPR) and ``pool = mean`` as in the README's LightGCN
    commands. Default ``N = 64``: the parser's ``--n_negs`` (the README uses 16, 32 and 64 for its
    three datasets).

    ``Negatives.items`` reports, for logs and false-negative rates, the real item with the largest
    total weight in the mixture (the candidate chosen in most layers, weighted by ``1 - alpha_l``; ties
    to the earlier candidate); ``Negatives.candidates`` keeps the (B, N) candidates.
    """

    name = "mixgcf"
    label = "MixGCF"
    summary = "MixGCF (KDD 2021): a synthetic negative mixed from the positive and hard candidates, per layer"
    Config = MixGCFConfig
    #: the candidate counts of the authors' README commands (16, 32, 64) and 8
    tune_grid = {"n_candidates": (8, 16, 32, 64)}

    def sample(self, users, positives, recommender: Recommender):
        cands = self.data.sample_uniform(users, self.config.n_candidates, self.generator)
        with torch.no_grad():
            t = recommender.tables()
            _, layers = recommender.layer_tables()
            n_layers = layers.shape[1]
            # hop mixing: per layer, the candidate of best layer-l score (DNS's argmax on that layer's
            # items, scored in one pass without gathering the (B, N, H, K) candidate rows)
            pick = torch.cat(
                [
                    self.data.ops.best_candidate(Tables(t.user, layers[:, h].contiguous(), t.h), users, cands)
                    for h in range(n_layers)
                ],
                dim=1,
            )  # (B, H)
            alpha = torch.rand((users.shape[0], n_layers), generator=self.generator, device=cands.device).to(
                layers.dtype
            )
        chosen = cands.gather(1, pick)  # (B, H)
        items = torch.stack([positives.unsqueeze(1).expand_as(chosen), chosen], dim=2)
        weights = torch.stack([alpha, 1.0 - alpha], dim=2)
        # the reported item: the candidate with the largest summed weight (1 - alpha) over the layers
        share = torch.zeros(cands.shape, dtype=weights.dtype, device=cands.device)
        share.scatter_add_(1, pick, 1.0 - alpha)
        first = first_argmax(share, dim=1).unsqueeze(1)
        return Negatives(cands.gather(1, first).squeeze(1), candidates=cands, mixture=Mixture(items, weights))
