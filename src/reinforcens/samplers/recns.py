"""RecNS (Yang et al., TKDE 2022, "Region or Global? A Principle for Negative Sampling in Graph-based
Recommendation"): a synthetic negative merged in embedding space from a positive-assisted draw among
the user's 3-hop ("intermediate region") items and an exposure-augmented pick among their exposed
items."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from reinforcens.models.base import Recommender, Tables
from reinforcens.samplers.base import Mixture, Negatives, NegativeSampler, SamplerConfig
from reinforcens.training_data import TrainingData


class RecNSConfig(SamplerConfig):
    n_candidates: int = Field(
        20,
        ge=1,
        description="K_Candidates of RecNS: candidates drawn from the user's intermediate (3-hop) region, "
        "and exposed items drawn for the exposure-augmented pick",
    )
    n_negs: int = Field(
        15,
        ge=2,
        description="K_negs of RecNS: positive-assisted draws per positive; the merge weights are "
        "1 - 1/K_negs and 1/K_negs (at least 2: with 1 the positive-assisted draw gets no weight)",
    )


def first_max_position(x: torch.Tensor) -> torch.Tensor:
    """The position of each row's maximum (last dimension), the earliest of equal maxima."""
    n = x.shape[-1]
    later = torch.arange(n, 0, -1, device=x.device)  # n for position 0, 1 for the last
    return torch.where(x == x.amax(dim=-1, keepdim=True), later, 0).argmax(dim=-1)


def row_members(x: torch.Tensor, of: torch.Tensor) -> torch.Tensor:
    """Whether each entry of ``x`` (B, n) is among the entries of the same row of ``of`` (B, m): a
    binary search in ``of``'s sorted rows (a (B, n, m) comparison's reductions cost more)."""
    s = of.sort(dim=1).values
    at = torch.searchsorted(s, x.contiguous()).clamp_(max=s.shape[1] - 1)
    return s.gather(1, at) == x


def three_hop_region(click_keys: np.ndarray, n_users: int, n_items: int, chunk: int = 1024):
    """Each user's intermediate region: the items 3 hops away in the user-item graph of the training
    clicks (``u -> i -> v -> j``: ``j`` clicked by a user ``v`` who shares a clicked item ``i`` with
    ``u``), minus the user's own clicks (the authors' ``Walk``: ``A A^T A`` minus ``train_items``).

    Parameters
    ----------
    click_keys
        Sorted ``user * n_items + item`` keys of the training clicks.
    n_users, n_items
        The catalogue's sizes.
    chunk
        Users per block of the sparse product (bounds its memory: the product of a block with the
        clicks' transpose has up to ``chunk * n_users`` entries). The regions themselves are kept,
        one int64 per (user, item) pair, as the authors' code keeps them (``candidates``): on a dense
        graph that is most of ``n_users * n_items``.

    Returns
    -------
    indptr : numpy.ndarray of int64, shape (n_users + 1,)
        Offsets of each user's region.
    items : numpy.ndarray of int64
        The regions' items, sorted within each user.
    """
    users, items = np.divmod(click_keys, n_items)
    a = sp.csr_matrix((np.ones(items.size, dtype=np.float32), (users, items)), shape=(n_users, n_items))
    a_t = a.T.tocsr()
    parts = []
    for s in range(0, n_users, chunk):
        block = a[s : s + chunk]
        reach = ((block @ a_t) @ a).tocsr()
        reach.data[:] = 1.0
        reach = (reach - reach.multiply(block)).tocsr()  # drop the user's clicks
        reach.eliminate_zeros()
        reach.sort_indices()
        parts.append(reach)
    region = sp.vstack(parts).tocsr() if parts else sp.csr_matrix((n_users, n_items))
    return region.indptr.astype(np.int64), region.indices.astype(np.int64)


def recns_weights(n_negs: int) -> tuple[float, float, float]:
    """The merge weights of RecNS's negative ``k`` (the authors' ``neg_i_g_embeddings``): on the
    positive-assisted draw ``n_k``, on the first draw ``n_1`` and on the exposure-augmented pick ``x``:
    ``(1 - 1/K, (1 - 1/K) / K, 1 / K^2)``, summing to 1."""
    k = float(n_negs)
    return 1.0 - 1.0 / k, (1.0 - 1.0 / k) / k, 1.0 / (k * k)


class RecNSSampler(NegativeSampler):
    """RecNS: a synthetic negative, merged in embedding space from items of the user's intermediate
    region and exposed items (what the paper's Three-Region Principle asks: more negatives from the
    intermediate region, fewer adjacent and distant ones).

    For a positive ``(u, i)``, with ``C`` = ``n_candidates`` and ``K`` = ``n_negs``:

    1. the intermediate region ``R_u`` (:func:`three_hop_region`): the items 3 hops from ``u`` in the
       graph of the training clicks, less ``u``'s clicks; ``C`` candidates ``c_1 .. c_C`` are drawn
       from it (:meth:`reinforcens.ops.Ops.sample_sets`);
    2. positive-assisted sampling: with ``alpha_j ~ U(0, 1)`` per candidate,

       .. math::

           \\ell_j = \\sigma\\big(\\alpha_j\\, r_{u c_j} + (1 - \\alpha_j)\\, s_{i c_j}\\big),
           \\qquad P(n = c_j) = \\frac{e^{\\ell_j}}{\\sum_{j'} e^{\\ell_{j'}}}  \\qquad (1)

       where ``r_uj = h . (P_u * Q_j)`` is the user's score and ``s_ij = h . (Q_i * Q_j)`` the
       positive's (the candidate scored with the positive in the user's place); ``K`` draws
       ``n_1 .. n_K`` are taken from (1);
    3. exposure-augmented sampling: ``C`` items ``e_1 .. e_C`` are drawn from ``u``'s exposed-unclicked
       items (the candidates themselves for a user without exposures); with ``m`` the number of
       candidates among them, ``beta_j = m`` for the ``e_j`` that are candidates when ``m >= 2``, else
       ``beta_j = 1``, and

       .. math::

           x = e_{j^*}, \\qquad j^* = \\arg\\max_j \\sigma(\\beta_j\\, r_{u e_j})  \\qquad (2)

    4. the merge: negative ``k`` is the embedding

       .. math::

           \\tilde q_k = (1 - \\tfrac1K)\\, q_{n_k}
               + \\tfrac1K\\big[(1 - \\tfrac1K)\\, q_{n_1} + \\tfrac1K\\, q_x\\big]  \\qquad (3)

       (:func:`recns_weights`), on every layer of the recommender for LightGCN (the layers' mean is
       then (3) of the pooled embeddings, as the mixing is linear).

    The equation numbers are this docstring's. The sampler returns negative ``k`` for one ``k``
    uniform in ``1 .. K``, as a :class:`~reinforcens.samplers.base.Mixture` of the rows ``(n_k, n_1,
    x)``; the BPR step trains against it. Since the ``K`` draws of (1) are independent, ``n_k`` is
    ``n_1`` with probability ``1/K`` and an independent draw of (1) otherwise, which is how it is
    drawn. ``Negatives.items`` reports ``n_k`` (the row of largest weight) and ``Negatives.candidates``
    the (B, C) candidates.

    Code and paper: this follows the authors' LightGCN code (``zyang-16/RecNS``,
    ``lightgcn/LightGCN.py``: ``all_rating``, ``negs_id``, ``prob_beta``, ``negs_id_exposed`` and the
    merge ``neg_i_g_embeddings``; ``lightgcn/utility/load_data.py``, ``ns_recns_o_1``;
    ``lightgcn/utility/walks.py``, ``Walk``). Where it differs from what the paper's text says or
    leaves open:

    * (1) is ``tf.multinomial`` of the sigmoids taken as logits, as the code has it (not a
      distribution proportional to the sigmoids). The PinSage variant of the code
      (``pinsage/src/graphsage/model.py``) draws from the user's scores alone, ``all_rating_user``;
      this sampler follows the LightGCN code, which uses the positive, as the strategy's name says;
    * the region is always 3 hops: the code's ``--khops`` (default 3) computes ``A A^T A`` in each of
      its branches (3, 5 and 7), so no option for it is offered;
    * (2) is the argmax of ``beta_j r_ue_j`` (the sigmoid is monotone; the code's float32 sigmoid can
      tie large scores, this does not); ties go to the earlier draw;
    * the code trains a hinge loss averaged over the ``K`` negatives; the trainer here takes a BPR step
      on one negative, drawn uniformly among the ``K``, whose loss is the average's in expectation;
    * the code's ``random.sample`` fails on a region smaller than ``C``; here a region of ``1 .. C - 1``
      items is drawn with replacement (as the code draws exposures from a small exposed set), and a
      user with an empty region (whose co-clickers clicked nothing else) gets ``C`` uniform
      non-clicked candidates (``sample_uniform``);
    * exposed items are the user's exposed-but-unclicked items of the training log (the code's
      ``train_exposed.txt``), drawn from :class:`~reinforcens.training_data.TrainingData`'s exposure
      CSR as the code draws them (without replacement from ``C`` or more), not with
      ``sample_exposed``, which always draws with replacement.

    Defaults: the code's parser (``lightgcn/utility/parser.py``): ``--K_Candidates 20``,
    ``--K_negs 15``, with which the weights of (3) are ``14/15``, ``14/225`` and ``1/225``.
    """

    name = "recns"
    label = "RecNS"
    summary = (
        "a negative merged in embedding space from positive-assisted draws among 3-hop items and an "
        "exposure-augmented pick among exposed items (Yang et al., TKDE 2022)"
    )
    Config = RecNSConfig
    #: a grid around the code's defaults (``K_Candidates`` 20, ``K_negs`` 15), not one the paper states
    tune_grid = {"n_candidates": (10, 20, 50), "n_negs": (5, 10, 15, 20)}

    def __init__(self, config, data: TrainingData, generator, context=None):
        super().__init__(config, data, generator, context)
        keys = np.ascontiguousarray(data.click_keys.cpu().numpy())
        indptr, items = three_hop_region(keys, data.n_users, data.n_items)
        self.region_indptr = torch.as_tensor(indptr, device=data.device)
        self.region_items = torch.as_tensor(items, device=data.device)
        self.exposed_items = data.exp_indices

    def sample(self, users, positives, recommender: Recommender):
        cfg = self.config
        gen, dev = self.generator, users.device
        b = users.shape[0]
        ops = self.data.ops
        cands, size = ops.sample_sets(self.region_indptr, self.region_items, users, cfg.n_candidates, gen)
        empty = size == 0
        if bool(empty.any()):
            cands[empty] = self.data.sample_uniform(users[empty], cfg.n_candidates, gen)
        exposed, n_exp = ops.sample_sets(
            self.data.exp_indptr, self.exposed_items, users, cfg.n_candidates, gen
        )
        has = n_exp > 0
        exposed = torch.where(has.unsqueeze(1), exposed, cands)
        with torch.no_grad():
            t = recommender.tables()
            r = ops.score_candidates(t, users, cands)  # r_uc = h . (p_u * q_c)
            s = ops.score_candidates(Tables(t.item, t.item, t.h), positives, cands)  # s_ic = h . (q_i * q_c)
            alpha = torch.rand(r.shape, generator=gen, device=dev).to(r.dtype)
            logits = torch.sigmoid(alpha * r + (1.0 - alpha) * s)  # (1)
            g = torch.rand((b, 2, cfg.n_candidates), generator=gen, device=dev).to(r.dtype)
            gumbel = g.clamp_(min=torch.finfo(r.dtype).tiny).log_().neg_().log_().neg_()
            draws = first_max_position(logits.unsqueeze(1) + gumbel)  # (B, 2): n_1 and another draw
            same = torch.rand(b, generator=gen, device=dev) < 1.0 / cfg.n_negs  # k = 1
            first = draws[:, 0]
            kth = torch.where(same, first, draws[:, 1])
            # (2): beta from the candidates among the exposed draws (users with exposures only)
            m = row_members(cands, exposed).sum(1)  # candidates that are among the exposed draws
            boost = row_members(exposed, cands) & (has & (m >= 2)).unsqueeze(1)
            beta = torch.where(boost, m.unsqueeze(1), 1).to(r.dtype)
            r_exp = ops.score_candidates(t, users, exposed)
            x = exposed.gather(1, first_max_position(beta * r_exp).unsqueeze(1)).squeeze(1)
        n_k = cands.gather(1, kth.unsqueeze(1)).squeeze(1)
        n_1 = cands.gather(1, first.unsqueeze(1)).squeeze(1)
        n_layers = recommender.n_layers
        items = torch.stack([n_k, n_1, x], dim=1).unsqueeze(1).expand(b, n_layers, 3).contiguous()
        w = torch.tensor(recns_weights(cfg.n_negs), dtype=t.item.dtype, device=dev)
        weights = w.expand(b, n_layers, 3).contiguous()
        return Negatives(n_k, candidates=cands, mixture=Mixture(items, weights))
