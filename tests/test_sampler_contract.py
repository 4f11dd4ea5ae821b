"""The contract every negative sampler keeps, run on every registered sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reinforcens.data.log import ExposureLog
from reinforcens.data.prepared import prepare
from reinforcens.models.gmf import GMF
from reinforcens.samplers import SAMPLERS, SamplerContext, make_sampler
from reinforcens.training_data import TrainingData

NAMES = sorted(SAMPLERS)
#: every contract holds on both compute backends
BACKENDS = ["torch", "numba"]


def build(seed: int, n_items: int = 30, no_exposure_users: int = 0, backend: str = "torch"):
    frame = random_frame(seed, n_users=25, n_items=n_items, max_sessions=7, slate=6, click_rate=0.35)
    if no_exposure_users:
        users = frame["user"].unique()[:no_exposure_users]
        mask = frame["user"].isin(users)
        # those users' exposures all become clicks, so they have none left
        frame.loc[mask, "clicked"] = 1
    data = prepare(ExposureLog.from_frame(frame), min_sessions=2, list_length=10, seed=0)
    return data, TrainingData.from_prepared(data, backend=backend)


def sampler_for(name, td, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return make_sampler(name, td, gen, context=SamplerContext(dim=8))


def model_for(td, seed=0):
    return GMF(td.n_users, td.n_items, dim=8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), batch=st.sampled_from([1, 7, 64]))
def test_never_returns_a_training_positive(name, backend, seed, batch):
    _, td = build(seed % 7, backend=backend)
    s, m = sampler_for(name, td, seed), model_for(td)
    idx = torch.randint(0, td.n_positives, (batch,), generator=torch.Generator().manual_seed(seed))
    users, pos = td.pos_users[idx], td.pos_items[idx]
    neg = s.sample(users, pos, m)
    assert neg.items.shape == (batch,)
    assert bool(((neg.items >= 0) & (neg.items < td.n_items)).all())
    assert not bool(td.is_clicked(users, neg.items).any())
    # and the update runs on any batch size
    scores = m(users, neg.items).detach()
    s.update(users, pos, neg, m, scores)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_stays_inside_its_candidate_set(name, backend):
    _, td = build(1, backend=backend)
    s, m = sampler_for(name, td), model_for(td)
    users, pos = td.pos_users[:200], td.pos_items[:200]
    neg = s.sample(users, pos, m)
    if "candidates" in neg.extra:
        cands = neg.extra["candidates"]
        assert bool((cands == neg.items[:, None]).any(1).all())
    if name == "exposure":
        has = td.exposure_counts(users) > 0
        assert bool(td.is_exposed(users[has], neg.items[has]).all())
    if name == "ebpr":
        chosen = neg.extra["exposed"]
        assert bool(td.is_exposed(users[chosen], neg.items[chosen]).all())
        assert not bool(td.is_exposed(users[~chosen], neg.items[~chosen]).any())
    if name in ("rns", "rns-es"):
        # uniform candidates avoid exposures; the last one is exposed for users with exposure
        cands = neg.extra["candidates"]
        has = td.exposure_counts(users) > 0
        assert not bool(td.is_exposed(users[:, None], cands[:, :-1])[has].any())
        assert bool(td.is_exposed(users[has], cands[has, -1]).all())
    if "chosen_exposed" in neg.extra:  # flags kept by the compiled path are the truth
        assert torch.equal(neg.extra["chosen_exposed"], td.is_exposed(users, neg.items))


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
    _, td = build(3, no_exposure_users=5, backend=backend)
    counts = td.exposure_counts(torch.arange(td.n_users))
    assert bool((counts == 0).any())
    users = torch.nonzero(counts == 0).squeeze(1).repeat(10)
    s, m = sampler_for(name, td), model_for(td)
    neg = s.sample(users, torch.zeros_like(users), m)
    assert not bool(td.is_clicked(users, neg.items).any())
    s.update(users, torch.zeros_like(users), neg, m, m(users, neg.items).detach())
    assert np.isfinite(list(s.epoch_end().values())).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nearly_full_users_still_get_negatives(backend):
    # a user who clicked all but one item: rejection falls back to exact sampling
    _, td = build(4, n_items=12, backend=backend)
    counts = td.click_counts
    u = int(torch.argmax(counts))
    items = td.sample_uniform(torch.full((50,), u), 3, torch.Generator().manual_seed(0))
    assert not bool(td.is_clicked(torch.full_like(items, u), items).any())
