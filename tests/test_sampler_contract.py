"""The contract every negative sampler keeps, run on every registered sampler and both backends.

Every membership question (is this pair a training click? an exposure?) is answered by :class:`Truth`,
plain Python sets built from the prepared dataset's CSR arrays, never by the code under test
(``TrainingData.is_clicked`` and friends).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import random_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from reinforcens import kernels
from reinforcens.backend import draw_seed
from reinforcens.data.log import ExposureLog
from reinforcens.data.prepared import PreparedDataset, prepare
from reinforcens.models.gmf import GMF
from reinforcens.samplers import SAMPLERS, SamplerContext, make_sampler
from reinforcens.training_data import TrainingData

NAMES = sorted(SAMPLERS)
#: every contract holds on both compute backends
BACKENDS = ["torch", "numba"]


def build(seed: int, n_items: int = 30, no_exposure_users: int = 0, backend: str = "torch", crowd=None):
    """A random prepared dataset and its training data.

    ``crowd``: sessions (lists of item ids ``"i<k>"``) of one extra user ``"crowd"``, who clicks every
    item shown (the last two sessions become validation and test).
    """
    frame = random_frame(seed, n_users=25, n_items=n_items, max_sessions=7, slate=6, click_rate=0.35)
    if no_exposure_users:
        users = frame["user"].unique()[:no_exposure_users]
        mask = frame["user"].isin(users)
        # those users' exposures all become clicks, so they have none left
        frame.loc[mask, "clicked"] = 1
    if crowd is not None:
        rows = [
            ("crowd", it, s, 1000 * s + k, 1) for s, items in enumerate(crowd) for k, it in enumerate(items)
        ]
        frame = pd.concat([frame, pd.DataFrame(rows, columns=frame.columns)], ignore_index=True)
    data = prepare(ExposureLog.from_frame(frame), min_sessions=2, list_length=10, seed=0)
    return data, TrainingData.from_prepared(data, backend=backend)


def sampler_for(name, td, seed=0, options=None):
    gen = torch.Generator().manual_seed(seed)
    return make_sampler(name, td, gen, options=options, context=SamplerContext(dim=8))


def model_for(td, seed=0):
    return GMF(td.n_users, td.n_items, dim=8, generator=torch.Generator().manual_seed(seed))


class Truth:
    """Independent oracles: Python sets of the training clicks and exposures of a prepared dataset."""

    def __init__(self, data: PreparedDataset):
        self.n_users, self.n_items = data.n_users, data.n_items

        def per_user(ui) -> list[frozenset[int]]:
            ptr, idx = ui.indptr.tolist(), ui.indices.tolist()
            return [frozenset(idx[ptr[u] : ptr[u + 1]]) for u in range(self.n_users)]

        self.clicks_of = per_user(data.train_clicks)
        self.exposures_of = per_user(data.train_exposures)
        self.clicked = {(u, i) for u, s in enumerate(self.clicks_of) for i in s}
        self.exposed = {(u, i) for u, s in enumerate(self.exposures_of) for i in s}

    def _member(self, pairs, users, items) -> torch.Tensor:
        u, i = torch.broadcast_tensors(torch.as_tensor(users), torch.as_tensor(items))
        flags = [(a, b) in pairs for a, b in zip(u.reshape(-1).tolist(), i.reshape(-1).tolist(), strict=True)]
        return torch.tensor(flags, dtype=torch.bool).view(u.shape)

    def is_clicked(self, users, items) -> torch.Tensor:
        return self._member(self.clicked, users, items)

    def is_exposed(self, users, items) -> torch.Tensor:
        return self._member(self.exposed, users, items)

    def n_exposed(self, users) -> torch.Tensor:
        return torch.tensor([len(self.exposures_of[u]) for u in users.tolist()], dtype=torch.int64)

    def has_room(self, users) -> torch.Tensor:
        """Whether some item is neither clicked nor exposed (else "exclude exposed" draws fall back)."""
        n = [len(self.clicks_of[u]) + len(self.exposures_of[u]) for u in users.tolist()]
        return torch.tensor(n) < self.n_items

    def free_items(self, user: int) -> list[int]:
        """The items ``user`` did not click, sorted."""
        return sorted(set(range(self.n_items)) - self.clicks_of[user])


def oracle_scores(m: GMF, users: torch.Tensor, items: torch.Tensor) -> list[list[float]]:
    """``h . (p_u * q_i)`` of each user's row of items, by a plain Python loop in float64."""
    p, q, h = m.user.weight.tolist(), m.item.weight.tolist(), m.h.tolist()
    return [
        [sum(h[k] * p[u][k] * q[i][k] for k in range(len(h))) for i in row]
        for u, row in zip(users.tolist(), items.tolist(), strict=True)
    ]


def assert_best_scored(m: GMF, users, cands, chosen, min_gap=1e-5):
    """``chosen`` is the candidate with the highest oracle score in every row, and the data can tell an
    argmax from an argmin (and from a near tie) in every row."""
    for b, (row, scores) in enumerate(zip(cands.tolist(), oracle_scores(m, users, cands), strict=True)):
        by_item = dict(zip(row, scores, strict=True))
        ranked = sorted(by_item, key=by_item.__getitem__, reverse=True)
        assert len(ranked) >= 2 and ranked[0] != ranked[-1], b
        assert by_item[ranked[0]] - by_item[ranked[1]] > min_gap, (b, "near tie: pick another seed")
        assert int(chosen[b]) == ranked[0], (b, by_item)


# --------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), batch=st.sampled_from([1, 7, 64]))
def test_never_returns_a_training_positive(name, backend, seed, batch):
    data, td = build(seed % 7, backend=backend)
    truth = Truth(data)
    s, m = sampler_for(name, td, seed), model_for(td)
    idx = torch.randint(0, td.n_positives, (batch,), generator=torch.Generator().manual_seed(seed))
    users, pos = td.pos_users[idx], td.pos_items[idx]
    assert bool(truth.is_clicked(users, pos).all())  # the batch is made of training positives
    neg = s.sample(users, pos, m)
    assert neg.items.shape == (batch,)
    assert bool(((neg.items >= 0) & (neg.items < td.n_items)).all())
    assert not bool(truth.is_clicked(users, neg.items).any())
    # and the update runs on any batch size
    scores = m(users, neg.items).detach()
    s.update(users, pos, neg, m, scores)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_stays_inside_its_candidate_set(name, backend):
    """Each sampler's negative lies in the set it is defined to draw from (checked against the oracle)."""
    data, td = build(1, backend=backend)
    truth = Truth(data)
    s, m = sampler_for(name, td), model_for(td)
    users, pos = td.pos_users[:200], td.pos_items[:200]
    neg = s.sample(users, pos, m)
    items = neg.items
    # every sampler: a non-clicked item of the catalogue
    assert bool(((items >= 0) & (items < td.n_items)).all())
    assert not bool(truth.is_clicked(users, items).any())
    has = truth.n_exposed(users) > 0
    assert bool(has.any())
    if neg.candidates is not None:
        cands = neg.candidates
        assert cands.shape[0] == users.shape[0]
        assert bool((cands == items[:, None]).any(1).all())
        assert bool(((cands >= 0) & (cands < td.n_items)).all())
        assert not bool(truth.is_clicked(users[:, None], cands).any())
    if name in ("uniform", "popularity"):
        # the candidate set is every non-clicked item: many draws for one user fill it exactly
        u = max(range(td.n_users), key=lambda v: len(truth.clicks_of[v]))
        many = s.sample(torch.full((4000,), u), torch.zeros(4000, dtype=torch.int64), m).items
        assert set(many.tolist()) == set(truth.free_items(u))
    if name == "dns":
        assert neg.candidates.shape == (users.shape[0], s.config.dns_candidates)
        assert_best_scored(m, users, neg.candidates, items)
    if name == "exposure":
        assert bool(truth.is_exposed(users[has], items[has]).all())
        assert torch.equal(neg.fallback, ~has)
    if name == "ebpr":
        chosen = neg.exposed
        assert bool(chosen.any()) and not bool(chosen[~has].any())
        assert bool(truth.is_exposed(users[chosen], items[chosen]).all())
        room = truth.has_room(users)
        assert not bool(truth.is_exposed(users[~chosen & room], items[~chosen & room]).any())
    if name in ("rns", "rns-es"):
        # uniform candidates avoid exposures; the last n_exp are exposed for users with exposure
        cands = neg.candidates
        n_exp = s.config.exposed_candidates
        assert n_exp >= 1
        room = truth.has_room(users)
        assert not bool(truth.is_exposed(users[:, None], cands[:, :-n_exp])[room].any())
        assert bool(truth.is_exposed(users[has, None], cands[has, -n_exp:]).all())
    if name in ("kbgan", "irgan"):
        # uniform among all non-clicked items: exposed items are not excluded, so some show up
        assert bool(truth.is_exposed(users[:, None], neg.candidates).any())
    if neg.exposed is not None:  # flags kept by the sampler are the truth
        assert torch.equal(neg.exposed, truth.is_exposed(users, items))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_reproducible_under_a_seed(name, backend):
    _, td = build(2, backend=backend)
    users, pos = td.pos_users[:100], td.pos_items[:100]
    runs = []
    for seed in (5, 5, 6):
        s, m = sampler_for(name, td, seed), model_for(td)
        runs.append(s.sample(users, pos, m).items)
    assert torch.equal(runs[0], runs[1])
    if name != "exposure":  # users with one exposure leave exposure sampling no choice
        assert not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_users_without_exposure(name, backend):
    data, td = build(3, no_exposure_users=5, backend=backend)
    truth = Truth(data)
    counts = truth.n_exposed(torch.arange(td.n_users))
    assert bool((counts == 0).any())
    users = torch.nonzero(counts == 0).squeeze(1).repeat(10)
    s, m = sampler_for(name, td), model_for(td)
    neg = s.sample(users, torch.zeros_like(users), m)
    assert bool(((neg.items >= 0) & (neg.items < td.n_items)).all())
    assert not bool(truth.is_clicked(users, neg.items).any())
    s.update(users, torch.zeros_like(users), neg, m, m(users, neg.items).detach())
    assert np.isfinite(list(s.epoch_end().values())).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_every_sampler_takes_an_empty_batch(name, backend):
    """A batch of no pairs (a data-parallel rank's share of a short last batch) samples nothing and
    steps: the torch backend's membership searches once failed to reshape zero rows."""
    _, td = build(4, backend=backend)
    s, m = sampler_for(name, td), model_for(td)
    if s.learned:
        s.init_from_pretrained(m.dot_state())
    before = {k: v.clone() for k, v in m.state_dict().items()}
    empty = torch.zeros(0, dtype=torch.long)
    neg = s.sample(empty, empty, m)
    assert neg.items.shape == (0,)
    loss, neg_s = m.make_optimizer(1e-2, backend).bpr_step(empty, empty, neg.items, 1e-4)
    assert float(loss) == 0.0 and neg_s.shape == (0,)
    s.update(empty, empty, neg, m, neg_s)
    s.epoch_end()
    for k, v in m.state_dict().items():  # Adam with zero gradients leaves the rows alone
        assert torch.equal(v, before[k]), k


# ------------------------------------------------------------------------------ DNS's argmax
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dns_candidates", [2, 50])
def test_dns_picks_the_best_scored_candidate(backend, dns_candidates):
    """The negative is the argmax over its candidates of ``h . (p_u * q_i)`` computed by a Python loop
    from the GMF weights (not by the code under test); every row tells an argmax from an argmin."""
    data, td = build(1, backend=backend)
    s = sampler_for("dns", td, options={"dns_candidates": dns_candidates})
    m = GMF(td.n_users, td.n_items, dim=8, init_std=1.0, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        m.h.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(4))  # not only ones
    users, pos = td.pos_users.repeat(2), td.pos_items.repeat(2)
    neg = s.sample(users, pos, m)
    cands = neg.candidates
    assert cands.shape == (users.numel(), dns_candidates)
    # rows whose candidates are all one item cannot tell argmax from argmin: keep the others
    mixed = torch.tensor([len(set(r)) > 1 for r in cands.tolist()])
    assert int(mixed.sum()) > 100
    assert_best_scored(m, users[mixed], cands[mixed], neg.items[mixed])
    assert not bool(Truth(data).is_clicked(users[:, None], cands).any())


# ------------------------------------------------------------------- exact draws for crowded users
def _crowded(truth: Truth) -> list[int]:
    """Users with fewer free items than blocked ones: the compiled rejection draw is skipped."""
    return [u for u in range(truth.n_users) if 2 * len(truth.free_items(u)) < truth.n_items]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [1, 2])
def test_nearly_full_users_still_get_negatives(backend, n):
    """Users who clicked most items get exact, valid, uniform draws among their few free items.

    On the numba backend one or two draws per row (``n <= 2``) are rejection draws against a hash set
    of the clicks, except for users with fewer free than blocked items, whose draws take the exact
    gap-key path (the fallback): counter ``64 * (b * n + c) + 63`` of the call's seed, a rank modulo the
    number of free items. The draws of those users equal that oracle (so the fallback ran), the draws of
    the other users do not (so the oracle tells the two paths apart). On the torch backend every draw is
    the exact one: rank = 62-bit ``torch.randint`` modulo the number of free items.
    """
    data, td = build(1, n_items=12, backend=backend)
    truth = Truth(data)
    crowded = _crowded(truth)
    assert crowded and min(len(truth.free_items(u)) for u in crowded) <= 2
    roomy = [u for u in range(td.n_users) if u not in crowded]
    rows = 3000
    users = torch.tensor(crowded + roomy).repeat_interleave(rows)
    items = td.sample_uniform(users, n, torch.Generator().manual_seed(0))
    assert items.shape == (users.numel(), n)
    assert not bool(truth.is_clicked(users[:, None], items).any())
    # the exact draw's oracle: the k-th free item of the user
    free = [truth.free_items(u) for u in users.tolist()]
    sizes = np.array([len(f) for f in free])
    if backend == "numba":
        seed = draw_seed(torch.Generator().manual_seed(0))
        ctr = 64 * np.arange(users.numel() * n).reshape(-1, n) + 63
        ranks = np.empty((users.numel(), n), dtype=np.int64)
        for size in np.unique(sizes):
            at = sizes == size
            ranks[at] = kernels.random_below(seed, ctr[at].ravel(), int(size)).reshape(-1, n)
    else:
        draws = torch.randint(0, 1 << 62, (users.numel(), n), generator=torch.Generator().manual_seed(0))
        ranks = draws.numpy() % sizes[:, None]
    want = torch.tensor([[free[b][k] for k in ranks[b]] for b in range(len(free))])
    is_crowded = torch.tensor([u in set(crowded) for u in users.tolist()])
    assert torch.equal(items[is_crowded], want[is_crowded])  # the exact fallback was taken
    if backend == "numba":  # ... and only there: the other users' draws were rejection draws
        assert (items[~is_crowded] != want[~is_crowded]).float().mean() > 0.5
    else:
        assert torch.equal(items, want)
    # and uniform over each crowded user's free items
    for u in crowded:
        f = truth.free_items(u)
        got = items[users == u].reshape(-1)
        counts = np.array([(got == i).sum().item() for i in f])
        assert counts.sum() == got.numel()
        assert stats.chisquare(counts).pvalue > 1e-4, (u, counts)


# -------------------------------------------------------------------------------- popularity
def _popularity_weights(data: PreparedDataset, exponent: float) -> np.ndarray:
    """The stated weights: ``(training clicks of the item + 1) ** exponent`` (counted here, not by the
    code under test)."""
    pop = np.zeros(data.n_items)
    for i in data.train_clicks.indices.tolist():
        pop[i] += 1
    return (pop + 1.0) ** exponent


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("exponent", [0.75, 2.0])
def test_popularity_draws_follow_the_popularity_weights(backend, exponent):
    """For a fixed user, draws have probability proportional to the weights over the non-clicked items
    (chi-square), and the same check rejects uniform draws over those items (it has power)."""
    data, td = build(1, backend=backend)
    truth = Truth(data)
    weights = _popularity_weights(data, exponent)
    s, m = sampler_for("popularity", td, options={"exponent": exponent}), model_for(td)
    by_clicks = sorted(range(td.n_users), key=lambda v: len(truth.clicks_of[v]))
    rows = 20000
    for u in (by_clicks[0], by_clicks[-1]):  # fewest and most clicks
        free = truth.free_items(u)
        users = torch.full((rows,), u)
        got = s.sample(users, torch.zeros_like(users), m).items
        counts = np.bincount(got.numpy(), minlength=td.n_items)
        assert counts[free].sum() == rows  # nothing outside the free items
        want = weights[free] / weights[free].sum() * rows
        assert stats.chisquare(counts[free], want).pvalue > 1e-4, (u, counts[free], want)
        uniform = td.sample_uniform(users, 1, torch.Generator().manual_seed(1)).squeeze(1)
        u_counts = np.bincount(uniform.numpy(), minlength=td.n_items)[free]
        assert stats.chisquare(u_counts, want).pvalue < 1e-6, (u, "the check cannot tell uniform draws")


@pytest.mark.parametrize("backend", BACKENDS)
def test_popularity_falls_back_when_rejection_keeps_failing(backend, monkeypatch):
    """A user whose only free items are the two least popular ones: with a steep exponent every one of
    the 100 popularity draws is rejected, and the fallback (a uniform non-clicked draw) is reached."""
    base = random_frame(1, n_users=25, n_items=12, max_sessions=7, slate=6, click_rate=0.35)
    clicks = base[base["clicked"] == 1]["item"].value_counts()
    rare = sorted(clicks.index, key=lambda it: (clicks[it], it))[:2]
    common = [f"i{k}" for k in range(12) if f"i{k}" not in rare]
    # training sessions click the ten common items; validation and test click one rare item each
    sessions = [common[:4], common[4:7], common[7:], rare[:1], rare[1:]]
    data, td = build(1, n_items=12, backend=backend, crowd=sessions)
    truth = Truth(data)
    u = int(np.flatnonzero(data.user_ids == "crowd")[0])
    free = truth.free_items(u)
    assert len(free) == 2
    exponent = 40.0
    weights = _popularity_weights(data, exponent)
    accept = weights[free].sum() / weights.sum()
    assert 1 - (1 - accept) ** 101 < 1e-4  # every try of 1 + 100 is rejected, but for a 1e-4 chance
    calls = []
    real = td.sample_uniform

    def spy(users, n, generator, **kw):
        calls.append(users.clone())
        return real(users, n, generator, **kw)

    monkeypatch.setattr(td, "sample_uniform", spy)
    s, m = sampler_for("popularity", td, options={"exponent": exponent}), model_for(td)
    users = torch.full((3000,), u)
    got = s.sample(users, torch.zeros_like(users), m).items
    assert len(calls) == 1 and torch.equal(calls[0], users)  # the fallback ran, on every row
    assert set(got.tolist()) == set(free)
    assert stats.chisquare(np.bincount(got.numpy())[free]).pvalue > 1e-4
