"""DNS(M, N) and Softmax(rho, N) (Shi et al., WWW 2023) against oracles written here.

The oracles score candidates with numpy in float64 from the model's weights and rank them with Python's
``sorted``; the Softmax(rho, N) weights are written out from the authors' formula. None of them calls the
code under test. Distributions are checked with chi-square tests that also reject the nearest wrong
distribution (so they have power).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_trains_and_resumes_exactly, chance_threshold, random_frame
from scipy import stats

from reinforcens.config import TrainConfig
from reinforcens.data.log import ExposureLog
from reinforcens.data.prepared import prepare
from reinforcens.errors import ConfigError
from reinforcens.models.gmf import GMF
from reinforcens.samplers import SamplerContext, make_sampler, sampler_config
from reinforcens.training_data import TrainingData

BACKENDS = ["torch", "numba"]


@pytest.fixture(scope="module")
def prepared():
    frame = random_frame(5, n_users=20, n_items=300, max_sessions=6, slate=8, click_rate=0.3)
    return prepare(ExposureLog.from_frame(frame), min_sessions=2, list_length=10, seed=0)


def _model(td: TrainingData, seed: int = 3) -> GMF:
    m = GMF(td.n_users, td.n_items, dim=8, init_std=1.0, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        m.h.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed + 1))  # not only ones
    return m


def _sampler(name, td, options, seed=0):
    return make_sampler(name, td, torch.Generator().manual_seed(seed), options, SamplerContext(dim=8))


def _oracle_scores(m: GMF, users: torch.Tensor, items: torch.Tensor) -> np.ndarray:
    """``h . (p_u * q_i)`` in float64 with numpy, from the GMF's weights."""
    p = m.user.weight.detach().double().numpy()
    q = m.item.weight.detach().double().numpy()
    h = m.h.detach().double().numpy()
    return np.einsum("bk,bnk->bn", p[users.numpy()] * h, q[items.numpy()])


def _clear_rows(cands: torch.Tensor, scores: np.ndarray, gap: float = 1e-4) -> np.ndarray:
    """Rows whose candidates are distinct items with no two scores closer than ``gap`` (so a rank is
    well defined in float32 too); which rows these are does not depend on the sampler's pick."""
    distinct = np.array([len(set(r)) == len(r) for r in cands.tolist()])
    s = np.sort(scores, axis=1)
    return distinct & (np.diff(s, axis=1).min(axis=1) > gap)


def _ranks(scores: np.ndarray, cands: torch.Tensor, chosen: torch.Tensor) -> np.ndarray:
    """Rank (0: best) of each row's chosen item among the row's candidates by oracle score."""
    out = []
    for row, sc, item in zip(cands.tolist(), scores.tolist(), chosen.tolist(), strict=True):
        order = sorted(range(len(row)), key=lambda c, sc=sc: -sc[c])
        out.append([row[c] for c in order].index(item))
    return np.array(out)


# --------------------------------------------------------------------------------------- DNS(M, N)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("top_m", [1, 3, 8])
def test_dns_mn_draws_uniformly_among_the_m_best_scored(prepared, backend, top_m):
    """With N = 8 candidates: M = 1 always returns the argmax, M = N a uniform rank over all N, and
    1 < M < N always one of the M best, each equally often (chi-square, which rejects uniform over the
    N candidates)."""
    n = 8
    td = TrainingData.from_prepared(prepared, backend=backend)
    s = _sampler("dns-mn", td, {"dns_candidates": n, "top_m": top_m})
    m = _model(td)
    reps = -(-14000 // td.n_positives)
    users, pos = td.pos_users.repeat(reps), td.pos_items.repeat(reps)
    neg = s.sample(users, pos, m)
    cands = neg.candidates
    assert cands.shape == (users.numel(), n)
    assert bool((cands == neg.items[:, None]).any(1).all())
    scores = _oracle_scores(m, users, cands)
    clear = _clear_rows(cands, scores)
    assert clear.sum() > 8000
    ranks = _ranks(scores[clear], cands[clear], neg.items[clear])
    assert ranks.max() < top_m  # never outside the M best
    if top_m == 1:
        return
    counts = np.bincount(ranks, minlength=n)
    assert stats.chisquare(counts[:top_m]).pvalue > 1e-3, counts
    if top_m < n:  # the check can tell "uniform among the M best" from "uniform among all N"
        assert stats.chisquare(counts, np.full(n, clear.sum() / n)).pvalue < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_dns_mn_is_reproducible_and_m_one_is_dns(prepared, backend):
    td = TrainingData.from_prepared(prepared, backend=backend)
    m = _model(td)
    users, pos = td.pos_users[:300], td.pos_items[:300]
    runs = [
        _sampler("dns-mn", td, {"dns_candidates": 20, "top_m": 4}, seed).sample(users, pos, m)
        for seed in (5, 5, 6)
    ]
    assert torch.equal(runs[0].items, runs[1].items) and torch.equal(runs[0].candidates, runs[1].candidates)
    assert not torch.equal(runs[0].items, runs[2].items)
    # M = 1 is DNS's argmax over the same candidates (the first position on ties)
    one = _sampler("dns-mn", td, {"dns_candidates": 20, "top_m": 1}, 7).sample(users, pos, m)
    best = td.ops.best_candidate(m.tables(), users, one.candidates)
    assert torch.equal(one.items, one.candidates.gather(1, best).squeeze(1))


# ---------------------------------------------------------------------------------- Softmax(rho, N)
def _softmax_oracle(pos_score: float, cand_scores: np.ndarray, rho: float) -> np.ndarray:
    """The authors' weights: ``softmax(Z / tau)``, ``Z = -log sigmoid(r_ui - r_uj)``,
    ``tau = sqrt(var(Z, unbiased) / (2 rho))``."""
    z = np.log1p(np.exp(cand_scores - pos_score))
    tau = np.sqrt(np.var(z, ddof=1) / (2 * rho))
    w = np.exp((z - z.max()) / tau)
    return w / w.sum()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rho", [0.3, 2.0])
def test_softmax_frequencies_follow_the_authors_weights(prepared, backend, rho, monkeypatch):
    """On one fixed candidate set the draws have the frequencies of ``softmax(Z / tau)`` (chi-square);
    the same check rejects uniform draws and a plain ``softmax(score / rho)`` (it has power)."""
    td = TrainingData.from_prepared(prepared, backend=backend)
    m = _model(td)
    u, i = int(td.pos_users[0]), int(td.pos_items[0])
    clicked = set(td.pos_items[td.pos_users == u].tolist())
    fixed = torch.tensor([j for j in range(td.n_items) if j not in clicked][:6])
    rows = 30000
    monkeypatch.setattr(td, "sample_uniform", lambda users, n, gen, **kw: fixed.repeat(users.numel(), 1))
    s = _sampler("softmax", td, {"n_candidates": 6, "rho": rho})
    users, pos = torch.full((rows,), u), torch.full((rows,), i)
    neg = s.sample(users, pos, m)
    assert torch.equal(neg.candidates, fixed.repeat(rows, 1))
    counts = np.array([(neg.items == j).sum().item() for j in fixed.tolist()])
    assert counts.sum() == rows
    scores = _oracle_scores(m, torch.tensor([u]), torch.cat([torch.tensor([[i]]), fixed[None]], 1))[0]
    want = _softmax_oracle(scores[0], scores[1:], rho)
    assert stats.chisquare(counts, want * rows).pvalue > 1e-3, (counts, want * rows)
    assert stats.chisquare(counts).pvalue < 1e-6  # not uniform
    naive = np.exp(scores[1:] / rho) / np.exp(scores[1:] / rho).sum()
    assert stats.chisquare(counts, naive * rows).pvalue < 1e-6  # not a softmax of the raw scores


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_large_rho_picks_the_argmax_and_small_rho_is_uniform(prepared, backend):
    td = TrainingData.from_prepared(prepared, backend=backend)
    m = _model(td)
    reps = -(-8000 // td.n_positives)
    users, pos = td.pos_users.repeat(reps), td.pos_items.repeat(reps)
    hard = _sampler("softmax", td, {"n_candidates": 8, "rho": 1e9}).sample(users, pos, m)
    scores = _oracle_scores(m, users, hard.candidates)
    clear = _clear_rows(hard.candidates, scores, gap=1e-2)
    assert clear.sum() > 1000
    assert _ranks(scores[clear], hard.candidates[clear], hard.items[clear]).max() == 0
    easy = _sampler("softmax", td, {"n_candidates": 8, "rho": 1e-9}).sample(users, pos, m)
    scores = _oracle_scores(m, users, easy.candidates)
    clear = _clear_rows(easy.candidates, scores)
    counts = np.bincount(_ranks(scores[clear], easy.candidates[clear], easy.items[clear]), minlength=8)
    assert stats.chisquare(counts).pvalue > 1e-3, counts


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_draws_uniformly_when_every_loss_is_equal(prepared, backend, monkeypatch):
    """Var(Z) = 0 (a model scoring every item 0): no temperature, every candidate equally likely."""
    td = TrainingData.from_prepared(prepared, backend=backend)
    m = _model(td)
    with torch.no_grad():
        m.item.weight.zero_()
    fixed = torch.arange(5)
    monkeypatch.setattr(td, "sample_uniform", lambda users, n, gen, **kw: fixed.repeat(users.numel(), 1))
    rows = 20000
    neg = _sampler("softmax", td, {"n_candidates": 5}).sample(torch.zeros(rows, dtype=torch.long),
                                                             torch.full((rows,), 7), m)  # fmt: skip
    counts = np.bincount(neg.items.numpy(), minlength=5)
    assert stats.chisquare(counts).pvalue > 1e-3, counts


def test_softmax_rows_with_equal_losses_are_uniform():
    from reinforcens.samplers.softmax import softmax_weights

    log_w = softmax_weights(torch.zeros(3), torch.ones(3, 4), 1.0)
    torch.testing.assert_close(log_w.exp(), torch.full((3, 4), 0.25))


# ------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize(
    ("name", "options", "key"),
    [
        ("dns-mn", {"dns_candidates": 3, "top_m": 4}, "top_m"),
        ("dns-mn", {"top_m": 0}, "top_m"),
        ("dns-mn", {"dns_candidates": 0}, "dns_candidates"),
        ("dns-mn", {"n_candidates": 10}, "n_candidates"),
        ("softmax", {"rho": 0.0}, "rho"),
        ("softmax", {"rho": -1.0}, "rho"),
        ("softmax", {"n_candidates": 1}, "n_candidates"),
        ("softmax", {"top_m": 2}, "top_m"),
    ],
)
def test_invalid_options_are_one_line_errors_naming_the_key(name, options, key):
    with pytest.raises(ConfigError) as err:
        sampler_config(name, options)
    msg = str(err.value)
    assert f"option {key!r}" in msg and "\n" not in msg, msg


def test_defaults():
    assert sampler_config("dns-mn").model_dump() == {"dns_candidates": 32, "top_m": 2}
    assert sampler_config("softmax").model_dump() == {"n_candidates": 200, "rho": 1.0}
    assert sampler_config("dns-mn", {"dns_candidates": 5, "top_m": 5}).top_m == 5  # M = N is allowed


# ------------------------------------------------------------------------------- training on tiny
@pytest.fixture(scope="module")
def floor(tiny_prepared):
    return chance_threshold(tiny_prepared)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", ["gmf", "mf", "lightgcn"])
@pytest.mark.parametrize("sampler", ["dns-mn", "softmax"])
def test_trains_above_chance_and_resumes_exactly(
    tiny_prepared, floor, tmp_path, monkeypatch, sampler, model, backend
):
    cfg = TrainConfig.build(
        model=model, sampler=sampler, epochs=12, min_steps=0, batch_size=512, lr=0.01, backend=backend
    )
    full = assert_trains_and_resumes_exactly(tiny_prepared, cfg, tmp_path, monkeypatch, crash_at=5)
    assert full["valid.auc"] > floor and full["test.auc"] > floor
