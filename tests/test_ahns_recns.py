"""AHNS (Lai et al., AAAI 2024) and RecNS (Yang et al., TKDE 2022) against oracles written here.

The oracles score candidates with numpy in float64 from the model's weights, pick with Python loops and
``sorted``, and take the training clicks, the exposures and the graph's hops from plain Python sets
built from the prepared dataset's CSR arrays; none of them calls the code under test. Distributions are
checked with chi-square tests that also reject the nearest wrong distribution (so they have power).
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


def _clicks_of(data) -> list[set[int]]:
    ptr, idx = data.train_clicks.indptr.tolist(), data.train_clicks.indices.tolist()
    return [set(idx[ptr[u] : ptr[u + 1]]) for u in range(data.n_users)]


def _exposures_of(data) -> list[set[int]]:
    ptr, idx = data.train_exposures.indptr.tolist(), data.train_exposures.indices.tolist()
    return [set(idx[ptr[u] : ptr[u + 1]]) for u in range(data.n_users)]


# ------------------------------------------------------------------------------------------- AHNS
def _ahns_oracle(pos_score: float, cand_scores: list[float], alpha: float, beta: float, p: int):
    """The paper's rule, written out: the candidate position minimising ``|r_uj - beta (r_ui +
    alpha)^(p + 1)|`` (the earliest on ties), and the gap between the best and second-best distance."""
    target = beta * (pos_score + alpha) ** (p + 1)
    dist = [abs(s - target) for s in cand_scores]
    order = sorted(range(len(dist)), key=lambda c: (dist[c], c))
    return order[0], dist[order[1]] - dist[order[0]]


def _scored_gmf(td: TrainingData, item_scores: np.ndarray) -> GMF:
    """A GMF of dimension 1 that scores every (user, item) as ``item_scores[item]``."""
    m = GMF(td.n_users, td.n_items, dim=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        m.user.weight.fill_(1.0)
        m.h.fill_(1.0)
        m.item.weight.copy_(torch.as_tensor(item_scores, dtype=torch.float32)[:, None])
    return m


@pytest.mark.parametrize("backend", BACKENDS)
def test_ahns_choice_moves_with_the_positive_score_as_its_paper_says(prepared, backend, monkeypatch):
    """On one fixed candidate set, raising the positive's score lowers the score of the chosen negative
    (the paper's criterion C2: the better a positive is ranked, the easier its negative), and every
    choice is the oracle's ``argmin_j |r_uj - beta (r_ui + alpha)^(p+1)|``. A sampler that ignored the
    positive (``p = -1``, a fixed target) or moved the other way (DNS-like, harder for better
    positives) fails the checks."""
    td = TrainingData.from_prepared(prepared, backend=backend)
    clicks = _clicks_of(prepared)
    u = int(td.pos_users[0])
    free = [j for j in range(td.n_items) if j not in clicks[u]]
    fixed, positives = free[:12], free[12:52]
    rng = np.random.default_rng(0)
    item_scores = np.zeros(td.n_items)
    item_scores[fixed] = rng.uniform(-0.2, 1.2, size=len(fixed))
    item_scores[positives] = np.linspace(0.0, 6.0, len(positives))  # the positive's score, rising
    m = _scored_gmf(td, item_scores)
    monkeypatch.setattr(
        td, "sample_uniform", lambda users, n, gen, **kw: torch.tensor(fixed).repeat(users.numel(), 1)
    )
    alpha, beta, p = 1.0, 1.0, -2
    s = _sampler("ahns", td, {"n_candidates": len(fixed), "alpha": alpha, "beta": beta, "p": p})
    users, pos = torch.full((len(positives),), u), torch.tensor(positives)
    neg = s.sample(users, pos, m)
    assert torch.equal(neg.candidates, torch.tensor(fixed).repeat(len(positives), 1))
    q = m.item.weight.detach().double().numpy()[:, 0]  # the float32 scores, in float64
    chosen_scores = []
    for b, i in enumerate(positives):
        want, margin = _ahns_oracle(q[i], [q[j] for j in fixed], alpha, beta, p)
        assert margin > 1e-5, (b, "near tie: pick another seed")
        assert int(neg.items[b]) == fixed[want], (b, q[i])
        chosen_scores.append(q[int(neg.items[b])])
    # C2: non-increasing in the positive's score, and it does move (from the hardest to the easiest)
    assert all(a >= c for a, c in zip(chosen_scores, chosen_scores[1:], strict=False)), chosen_scores
    assert chosen_scores[-1] < chosen_scores[0]
    assert len(set(chosen_scores)) >= 4
    # p = -1: a fixed target beta, the same choice whatever the positive
    flat = _sampler("ahns", td, {"n_candidates": len(fixed), "alpha": alpha, "beta": 0.5, "p": -1})
    got = flat.sample(users, pos, m).items
    want = fixed[_ahns_oracle(0.0, [q[j] for j in fixed], alpha, 0.5, -1)[0]]
    assert set(got.tolist()) == {want}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("alpha", "beta", "p"), [(1.0, 0.1, -2), (2.0, 0.5, -3), (0.5, 1.0, -1)])
def test_ahns_picks_the_oracle_candidate_with_any_model(prepared, backend, alpha, beta, p):
    """Random GMF weights (scores of both signs, some positives with ``r_ui + alpha < 0``): the negative
    is the oracle's choice among the candidates in every row the float64 oracle separates clearly, and
    the candidates are non-clicked items."""
    td = TrainingData.from_prepared(prepared, backend=backend)
    clicks = _clicks_of(prepared)
    s = _sampler("ahns", td, {"n_candidates": 16, "alpha": alpha, "beta": beta, "p": p})
    m = _model(td)
    reps = -(-4000 // td.n_positives)
    users, pos = td.pos_users.repeat(reps), td.pos_items.repeat(reps)
    neg = s.sample(users, pos, m)
    cands = neg.candidates
    assert cands.shape == (users.numel(), 16)
    assert all(j not in clicks[u] for u, row in zip(users.tolist(), cands.tolist(), strict=True) for j in row)
    pos_s = _oracle_scores(m, users, pos[:, None])[:, 0]
    cand_s = _oracle_scores(m, users, cands)
    checked = 0
    for b in range(users.numel()):
        if abs(pos_s[b] + alpha) < 0.05:  # near the pole: float32 cannot follow
            continue
        want, margin = _ahns_oracle(pos_s[b], cand_s[b].tolist(), alpha, beta, p)
        if margin < 1e-3 * max(1.0, abs(beta * (pos_s[b] + alpha) ** (p + 1))):
            continue
        assert int(neg.items[b]) == int(cands[b, want]), b
        checked += 1
    assert checked > 3000
    assert bool((pos_s + alpha < 0).any())  # both sides of the pole were exercised


@pytest.mark.parametrize("backend", BACKENDS)
def test_ahns_is_reproducible_and_takes_an_empty_batch(prepared, backend):
    td = TrainingData.from_prepared(prepared, backend=backend)
    m = _model(td)
    users, pos = td.pos_users[:300], td.pos_items[:300]
    runs = [_sampler("ahns", td, {}, seed).sample(users, pos, m) for seed in (5, 5, 6)]
    assert torch.equal(runs[0].items, runs[1].items) and torch.equal(runs[0].candidates, runs[1].candidates)
    assert not torch.equal(runs[0].items, runs[2].items)
    empty = torch.zeros(0, dtype=torch.long)
    assert _sampler("ahns", td, {}).sample(empty, empty, m).items.shape == (0,)


# ------------------------------------------------------------------------------------------ RecNS
@pytest.fixture(scope="module")
def dense():
    """A denser random log (so regions and exposures overlap) whose first three users click every
    item shown (so they have no exposure)."""
    frame = random_frame(1, n_users=30, n_items=60, max_sessions=7, slate=6, click_rate=0.3)
    frame.loc[frame["user"].isin(frame["user"].unique()[:3]), "clicked"] = 1
    return prepare(ExposureLog.from_frame(frame), min_sessions=2, list_length=10, seed=0)


def _region_oracle(clicks: list[set[int]]) -> list[set[int]]:
    """Items 3 hops from each user (``u -> i -> v -> j``), less the user's clicks, by set loops."""
    clickers: dict[int, set[int]] = {}
    for v, items in enumerate(clicks):
        for i in items:
            clickers.setdefault(i, set()).add(v)
    out = []
    for items in clicks:
        reach = set()
        for i in items:
            for v in clickers[i]:
                reach |= clicks[v]
        out.append(reach - items)
    return out


def _weights_oracle(k: int) -> list[float]:
    """The authors' merge written out: ``(1-1/K) q_{n_k} + (1/K) [(1-1/K) q_{n_1} + (1/K) q_x]``."""
    return [1 - 1 / k, (1 / k) * (1 - 1 / k), (1 / k) * (1 / k)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_recns_candidates_are_the_three_hop_region(dense, backend):
    """Candidates lie in the user's 3-hop region (set oracle) and are distinct when the region holds
    at least C items; a smaller region is drawn with replacement and an empty one falls back to
    non-clicked items. For one user the draws are uniform over the region (chi-square), and a draw
    uniform over the non-clicked items would have put hundreds of candidates outside it."""
    td = TrainingData.from_prepared(dense, backend=backend)
    clicks, region = _clicks_of(dense), _region_oracle(_clicks_of(dense))
    c = 10
    s, m = _sampler("recns", td, {"n_candidates": c}), _model(td)
    users = torch.arange(td.n_users).repeat(200)
    pos = torch.tensor([min(clicks[u]) for u in users.tolist()])
    neg = s.sample(users, pos, m)
    assert neg.candidates.shape == (users.numel(), c)
    sizes = {u: len(region[u]) for u in range(td.n_users)}
    assert any(v >= c for v in sizes.values()) and any(0 < v < c for v in sizes.values())
    for u, row, item in zip(users.tolist(), neg.candidates.tolist(), neg.items.tolist(), strict=True):
        assert item in row
        assert not (set(row) & clicks[u])
        if sizes[u] == 0:
            continue
        assert set(row) <= region[u], u
        if sizes[u] >= c:
            assert len(set(row)) == c, (u, row)
    big = max(range(td.n_users), key=lambda v: sizes[v])
    reg = sorted(region[big])
    many = s.sample(torch.full((3000,), big), torch.full((3000,), min(clicks[big])), m).candidates
    counts = np.array([(many == j).sum().item() for j in reg])
    assert counts.sum() == many.numel()
    assert stats.chisquare(counts).pvalue > 1e-3, counts
    free = td.n_items - len(clicks[big])
    assert many.numel() * (free - len(reg)) / free > 500  # what a non-clicked draw would leave outside
    # a user with an empty region (forced: the region replaced by the oracle's, one user's emptied)
    lone = big
    sets = [sorted(region[v]) if v != lone else [] for v in range(td.n_users)]
    s.region_indptr = torch.tensor(np.cumsum([0] + [len(x) for x in sets]))
    s.region_items = torch.tensor([j for x in sets for j in x])
    got = s.sample(torch.full((3000,), lone), torch.full((3000,), min(clicks[lone])), m).candidates
    assert not (set(got.reshape(-1).tolist()) & clicks[lone])
    assert set(got.reshape(-1).tolist()) - region[lone]  # uniform non-clicked: outside the region too


def _positive_assisted_oracle(r: np.ndarray, s_: np.ndarray, draws: int = 400_000) -> np.ndarray:
    """``E_alpha softmax_j sigmoid(alpha_j r_j + (1 - alpha_j) s_j)`` by Monte Carlo in float64, the
    ``alpha_j`` independent U(0, 1) (the authors' ``tf.multinomial`` of ``all_rating``)."""
    rng = np.random.default_rng(0)
    a = rng.random((draws, r.size))
    ell = 1.0 / (1.0 + np.exp(-(a * r + (1 - a) * s_)))
    w = np.exp(ell)
    return (w / w.sum(1, keepdims=True)).mean(0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_recns_positive_assisted_draws_follow_the_code(dense, backend):
    """For a user whose region holds exactly C items (so every row's candidates are the region), the
    negative's frequencies are the code's ``E_alpha softmax(sigmoid(alpha r_uj + (1 - alpha) s_ij))``
    (chi-square), which rejects the PinSage variant ``softmax(sigmoid(r_uj))`` and weights proportional
    to the sigmoids; ``n_k = n_1`` as often as a uniform ``k`` of K iid draws makes it; and the
    mixture's rows and weights are the authors' merge."""
    td = TrainingData.from_prepared(dense, backend=backend)
    clicks, region = _clicks_of(dense), _region_oracle(_clicks_of(dense))
    u = max((v for v in range(td.n_users) if 8 <= len(region[v]) <= 20), key=lambda v: len(region[v]))
    reg = sorted(region[u])
    i = min(clicks[u])
    k = 15
    s, m = _sampler("recns", td, {"n_candidates": len(reg), "n_negs": k}), _model(td)
    rows = 40_000
    users, pos = torch.full((rows,), u), torch.full((rows,), i)
    neg = s.sample(users, pos, m)
    assert all(sorted(row) == reg for row in neg.candidates[:200].tolist())
    counts = np.array([(neg.items == j).sum().item() for j in reg])
    assert counts.sum() == rows
    p_ = m.user.weight.detach().double().numpy()[u]
    q = m.item.weight.detach().double().numpy()
    h = m.h.detach().double().numpy()
    r = q[reg] @ (p_ * h)
    s_ = q[reg] @ (q[i] * h)
    want = _positive_assisted_oracle(r, s_)
    assert stats.chisquare(counts, want * rows).pvalue > 1e-3, (counts, want * rows)
    user_only = np.exp(1 / (1 + np.exp(-r)))
    assert stats.chisquare(counts, user_only / user_only.sum() * rows).pvalue < 1e-6
    a = np.random.default_rng(1).random((400_000, len(reg)))
    proportional = (1 / (1 + np.exp(-(a * r + (1 - a) * s_)))).mean(0)
    assert stats.chisquare(counts, proportional / proportional.sum() * rows).pvalue < 1e-6
    # the mixture: (n_k, n_1, x) on every layer, with the merge's weights
    mix = neg.mixture
    assert mix.items.shape == (rows, 1, 3) and mix.weights.shape == (rows, 1, 3)
    assert torch.equal(mix.items[:, 0, 0], neg.items)
    assert set(mix.items[:, 0, 1].tolist()) <= set(reg)
    torch.testing.assert_close(
        mix.weights[0, 0].double(), torch.tensor(_weights_oracle(k), dtype=torch.float64)
    )
    assert bool((mix.weights == mix.weights[:1]).all())
    # n_k = n_1: with probability 1/K (k = 1), else by two independent draws agreeing
    same = int((mix.items[:, 0, 0] == mix.items[:, 0, 1]).sum())
    p_same = 1 / k + (1 - 1 / k) * float((want**2).sum())
    assert stats.binomtest(same, rows, p_same).pvalue > 1e-3, (same / rows, p_same)
    assert stats.binomtest(same, rows, float((want**2).sum())).pvalue < 1e-6  # k = 1 is drawn


@pytest.mark.parametrize("backend", BACKENDS)
def test_recns_exposure_augmented_pick_is_the_code_argmax(dense, backend):
    """With C equal to the user's number of exposed items (so the C exposed draws are that set), the
    exposure-augmented item is ``argmax_e beta_e r_ue`` with ``beta_e = m`` (the number of candidates
    among the exposed items, when at least 2) for exposed candidates and 1 otherwise; the boost changes
    the pick in some rows (a pick without it fails). A user without exposures takes the best-scored
    candidate."""
    td = TrainingData.from_prepared(dense, backend=backend)
    clicks, region, exposed = _clicks_of(dense), _region_oracle(_clicks_of(dense)), _exposures_of(dense)
    eligible = [u for u in range(td.n_users) if len(exposed[u]) >= 2 and len(region[u] & exposed[u]) >= 2]
    bare = [u for u in range(td.n_users) if not exposed[u]]
    assert len(eligible) >= 5 and bare
    m = _model(td)

    def scores(u, items):
        return _oracle_scores(m, torch.tensor([u]), torch.tensor([items]))[0].tolist()

    boosted = checked = 0
    for u in eligible + [None]:
        c = len(exposed[u]) if u is not None else 8
        group = [u] if u is not None else bare
        s = _sampler("recns", td, {"n_candidates": c}, seed=len(exposed[u]) if u is not None else 0)
        users = torch.tensor(group).repeat(300)
        neg = s.sample(users, torch.tensor([min(clicks[v]) for v in users.tolist()]), m)
        x = neg.mixture.items[:, 0, 2].tolist()
        for b, (v, row) in enumerate(zip(users.tolist(), neg.candidates.tolist(), strict=True)):
            if u is None:  # no exposure: the best-scored candidate
                sc = scores(v, row)
                assert x[b] == row[max(range(len(row)), key=lambda j, sc=sc: (sc[j], -j))]
                continue
            pool = sorted(exposed[v])
            n_in = sum(1 for cand in row if cand in exposed[v])
            beta = [n_in if (n_in >= 2 and e in row) else 1 for e in pool]
            sc = scores(v, pool)
            val = [bt * y for bt, y in zip(beta, sc, strict=True)]
            order = sorted(range(len(pool)), key=lambda j, val=val: -val[j])
            if val[order[0]] - val[order[1]] < 1e-4:  # a near tie in float32
                continue
            assert x[b] == pool[order[0]], (v, row)
            checked += 1
            boosted += pool[order[0]] != pool[max(range(len(pool)), key=lambda j, sc=sc: sc[j])]
    assert checked > 1000 and boosted > 50, (checked, boosted)


# ------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize(
    ("name", "options", "key"),
    [
        ("ahns", {"n_candidates": 0}, "n_candidates"),
        ("ahns", {"p": 0}, "p"),
        ("ahns", {"p": 1}, "p"),
        ("ahns", {"p": -1.5}, "p"),
        ("ahns", {"beta": 0.0}, "beta"),
        ("ahns", {"alpha": -0.1}, "alpha"),
        ("ahns", {"alpha": float("nan")}, "alpha"),
        ("ahns", {"top_m": 2}, "top_m"),
        ("recns", {"n_candidates": 0}, "n_candidates"),
        ("recns", {"n_negs": 1}, "n_negs"),
        ("recns", {"khops": 3}, "khops"),
    ],
)
def test_invalid_options_are_one_line_errors_naming_the_key(name, options, key):
    with pytest.raises(ConfigError) as err:
        sampler_config(name, options)
    msg = str(err.value)
    assert f"option {key!r}" in msg and "\n" not in msg, msg


def test_defaults():
    assert sampler_config("ahns").model_dump() == {"n_candidates": 32, "alpha": 1.0, "beta": 0.1, "p": -2}
    assert sampler_config("recns").model_dump() == {"n_candidates": 20, "n_negs": 15}


# ------------------------------------------------------------------------------- training on tiny
@pytest.fixture(scope="module")
def floor(tiny_prepared):
    return chance_threshold(tiny_prepared)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", ["gmf", "mf", "lightgcn"])
@pytest.mark.parametrize("sampler", ["ahns", "recns"])
def test_trains_above_chance_and_resumes_exactly(
    tiny_prepared, floor, tmp_path, monkeypatch, sampler, model, backend
):
    cfg = TrainConfig.build(
        model=model, sampler=sampler, epochs=12, min_steps=0, batch_size=512, lr=0.01, backend=backend
    )
    full = assert_trains_and_resumes_exactly(tiny_prepared, cfg, tmp_path, monkeypatch, crash_at=5)
    assert full["valid.auc"] > floor and full["test.auc"] > floor


def test_row_members_equals_python_sets():
    """``row_members(x, of)[b, j]`` is ``x[b, j] in set(of[b])`` (repeated entries, rows of other
    lengths, a row with no member, a row where all are members)."""
    from reinforcens.samplers.recns import row_members

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 12, (200, 7)))
    of = torch.from_numpy(rng.integers(0, 12, (200, 5)))
    of[0] = 99
    of[1, :] = x[1, :5]
    x[1, 5:] = x[1, 0]
    got = row_members(x, of).tolist()
    want = [[v in set(o) for v in row] for row, o in zip(x.tolist(), of.tolist(), strict=True)]
    assert got == want
    assert not any(got[0]) and all(got[1])
