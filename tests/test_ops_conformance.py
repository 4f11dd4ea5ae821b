"""Every operation of every compute backend (:mod:`reinforcens.ops`) against an oracle written here.

The oracles are plain Python sets and loops, numpy, and autograd followed by the row-wise Adam (or plain
SGD) formula of the :mod:`reinforcens.optim` module docstring written out; none of them calls the code
under test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import random_frame
from scipy import stats

from reinforcens.data.log import ExposureLog
from reinforcens.data.prepared import prepare
from reinforcens.mmd import DEFAULT_BANDWIDTHS
from reinforcens.models.gmf import GMF, MF
from reinforcens.ops import Ops, make_ops
from reinforcens.ops.numba_ops import NumbaOps
from reinforcens.ops.torch_ops import TorchOps
from reinforcens.optim import GMFOptimizer, SGDOptimizer
from reinforcens.training_data import TrainingData

BACKENDS = ["numba", "torch"]
BETAS, EPS = (0.9, 0.999), 1e-8


# ------------------------------------------------------------------------------------------ set-up
class Sets:
    """Each user's training clicks and exposed-unclicked items as Python sets."""

    def __init__(self, data):
        self.n_users, self.n_items = data.n_users, data.n_items

        def per_user(csr) -> list[set[int]]:
            ptr, idx = csr.indptr.tolist(), csr.indices.tolist()
            return [set(idx[ptr[u] : ptr[u + 1]]) for u in range(self.n_users)]

        self.clicks = per_user(data.train_clicks)
        self.exposures = per_user(data.train_exposures)

    def allowed(self, user: int, exclude_exposed: bool) -> set[int]:
        """The items a uniform draw may return (non-clicked, and non-exposed if any such is left)."""
        free = set(range(self.n_items)) - self.clicks[user]
        if exclude_exposed and free - self.exposures[user]:
            return free - self.exposures[user]
        return free


@pytest.fixture(scope="module")
def prepared():
    frame = random_frame(11, n_users=25, n_items=30, max_sessions=7, slate=6, click_rate=0.35)
    # two users click everything they are shown: they have no exposed-unclicked items
    frame.loc[frame["user"].isin(["u0", "u1"]), "clicked"] = 1
    # one user is shown every item early on: their "non-clicked non-exposed" draws fall back to
    # non-clicked ones
    rows = [("full", f"i{k}", 0, k, int(k < 2)) for k in range(30)]
    rows += [
        ("full", f"i{(k + 3 * s) % 30}", s, 1000 * s + k, int(k < 2)) for s in range(1, 7) for k in range(6)
    ]
    frame = pd.concat([frame, pd.DataFrame(rows, columns=frame.columns)], ignore_index=True)
    data = prepare(ExposureLog.from_frame(frame), min_sessions=2, list_length=10, seed=0)
    return data, Sets(data)


@pytest.fixture(params=BACKENDS)
def backend(request, prepared):
    """``(ops, training data, sets)`` of one backend."""
    data, sets = prepared
    return make_ops(request.param), TrainingData.from_prepared(data, backend=request.param), sets


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tables(n_users=9, n_items=40, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    user = torch.from_numpy(rng.normal(0, 1, (n_users, dim)).astype(np.float32))
    item = torch.from_numpy(rng.normal(0, 1, (n_items, dim)).astype(np.float32))
    h = torch.from_numpy(rng.normal(0, 1, dim).astype(np.float32))
    return GMF.tables(_model_with(user, item, h))


def _model_with(user, item, h) -> GMF:
    m = GMF(user.shape[0], item.shape[0], user.shape[1])
    with torch.no_grad():
        m.user.weight.copy_(user)
        m.item.weight.copy_(item)
        m.h.copy_(h)
    return m


def _brute_scores(tables, users, items) -> list[list[float]]:
    """``h . (user[u] * item[i])`` of each row of items, by a Python loop in float64."""
    uw, iw, h = tables.user.tolist(), tables.item.tolist(), tables.h.tolist()
    return [
        [sum(h[k] * uw[u][k] * iw[i][k] for k in range(len(h))) for i in row]
        for u, row in zip(users.tolist(), items.tolist(), strict=True)
    ]


def test_the_factory_maps_names_to_classes():
    assert isinstance(make_ops("numba"), NumbaOps) and isinstance(make_ops("torch"), TorchOps)
    assert make_ops("numba").name == "numba" and make_ops("torch").name == "torch"
    assert all(isinstance(make_ops(n), Ops) for n in BACKENDS)
    with pytest.raises(ValueError, match="backend"):
        make_ops("fortran")
    with pytest.raises(ValueError, match="CPU only"):
        make_ops("numba").check_device("meta")
    make_ops("torch").check_device("meta")


def test_backend_is_resolved_once_into_the_data(backend):
    ops, td, _ = backend
    assert type(td.ops) is type(ops) and td.backend == ops.name and td.fast == (ops.name == "numba")


# ------------------------------------------------------------------------------------- membership
def test_membership_equals_python_sets(backend):
    ops, td, sets = backend
    rng = np.random.default_rng(0)
    users = torch.from_numpy(rng.integers(0, td.n_users, 400))
    items = torch.from_numpy(rng.integers(0, td.n_items, 400))
    # every known pair too, so that both answers occur
    known = [(u, i) for u in range(td.n_users) for i in sorted(sets.clicks[u] | sets.exposures[u])]
    users = torch.cat([users, torch.tensor([u for u, _ in known])])
    items = torch.cat([items, torch.tensor([i for _, i in known])])
    want_c = torch.tensor([i in sets.clicks[u] for u, i in zip(users.tolist(), items.tolist(), strict=True)])
    want_e = torch.tensor(
        [i in sets.exposures[u] for u, i in zip(users.tolist(), items.tolist(), strict=True)]
    )
    assert torch.equal(ops.is_clicked(td, users, items), want_c)
    assert torch.equal(ops.is_exposed(td, users, items), want_e)
    # users broadcast against a (B, N) block of items
    block = torch.arange(td.n_items).repeat(td.n_users, 1)
    col = torch.arange(td.n_users).unsqueeze(1)
    got = ops.is_exposed(td, col, block)
    assert got.shape == block.shape
    assert got.tolist() == [[i in sets.exposures[u] for i in range(td.n_items)] for u in range(td.n_users)]


# ------------------------------------------------------------------------------------------ draws
def _assert_uniform(draws: list[int], allowed: set[int]) -> None:
    assert set(draws) <= allowed
    counts = np.array([draws.count(i) for i in sorted(allowed)])
    assert stats.chisquare(counts).pvalue > 1e-4, counts


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("exclude", [False, True])
def test_uniform_draws_are_uniform_over_the_allowed_items(backend, n, exclude):
    ops, td, sets = backend
    users = torch.arange(td.n_users).repeat_interleave(2400 // n)
    items = ops.sample_uniform(td, users, n, _gen(), exclude_exposed=exclude)
    assert items.shape == (users.numel(), n) and items.dtype == torch.int64
    for u in range(td.n_users):
        _assert_uniform(items[users == u].reshape(-1).tolist(), sets.allowed(u, exclude))
    assert any(not (set(range(td.n_items)) - sets.clicks[u] - sets.exposures[u]) for u in range(td.n_users))


def test_uniform_draws_are_reproducible(backend):
    ops, td, _ = backend
    users = torch.arange(td.n_users).repeat(20)
    a = ops.sample_uniform(td, users, 3, _gen(5))
    assert torch.equal(a, ops.sample_uniform(td, users, 3, _gen(5)))
    assert not torch.equal(a, ops.sample_uniform(td, users, 3, _gen(6)))


def test_exposed_draws_are_uniform_over_the_exposed_items(backend):
    ops, td, sets = backend
    users = torch.arange(td.n_users).repeat_interleave(600)
    items, has = ops.sample_exposed(td, users, 3, _gen())
    assert items.shape == (users.numel(), 3)
    assert has.tolist() == [bool(sets.exposures[u]) for u in users.tolist()]
    assert not all(has.tolist())  # some users without exposures
    for u in range(td.n_users):
        got = items[users == u].reshape(-1).tolist()
        if sets.exposures[u]:
            _assert_uniform(got, sets.exposures[u])
        else:
            assert set(got) == {-1}


def test_set_draws_are_uniform_subsets_or_uniform_with_replacement(backend):
    """``sample_sets``: from a set of ``n`` or more items, ``n`` distinct items with every ``n``-subset
    equally likely (chi-square over the subsets, a Python ``itertools`` oracle); from a smaller set,
    draws uniform with replacement; ``-1`` from an empty set; the sizes; reproducible under a seed."""
    ops = backend[0]
    sets = [[3, 7, 9, 11, 20], [4], [], [1, 2], list(range(30, 42))]
    indptr = torch.tensor(np.cumsum([0] + [len(x) for x in sets]), dtype=torch.int64)
    flat = torch.tensor([i for x in sets for i in x], dtype=torch.int64)
    users = torch.arange(len(sets)).repeat(6000)
    items, size = ops.sample_sets(indptr, flat, users, 2, _gen())
    assert items.shape == (users.numel(), 2) and items.dtype == torch.int64
    assert size.tolist() == [len(sets[u]) for u in users.tolist()]
    rows = {u: items[users == u].tolist() for u in range(len(sets))}
    for u in (0, 3, 4):  # n <= m: distinct items of the set, uniform over the unordered pairs
        subsets = [frozenset(r) for r in rows[u]]
        assert all(len(x) == 2 for x in subsets) and set().union(*subsets) <= set(sets[u])
        want = [frozenset(c) for c in itertools.combinations(sets[u], 2)]
        counts = np.array([subsets.count(c) for c in want])
        assert counts.sum() == len(subsets)
        if len(want) > 1:
            assert stats.chisquare(counts).pvalue > 1e-4, counts
    assert all(r == [4, 4] for r in rows[1])  # one item, drawn twice
    assert all(r == [-1, -1] for r in rows[2])  # empty set
    three, _ = ops.sample_sets(indptr, flat, torch.full((6000,), 3), 3, _gen(1))  # m = 2 < n = 3
    triples = [tuple(r) for r in three.tolist()]
    assert set(triples) == set(itertools.product([1, 2], repeat=3))  # with replacement
    assert stats.chisquare([triples.count(t) for t in itertools.product([1, 2], repeat=3)]).pvalue > 1e-4
    again, _ = ops.sample_sets(indptr, flat, users, 2, _gen())
    assert torch.equal(items, again)
    assert not torch.equal(items, ops.sample_sets(indptr, flat, users, 2, _gen(7))[0])


@pytest.mark.parametrize("flags", [True, False])
@pytest.mark.parametrize("exclude", [False, True])
def test_candidates_fill_uniform_then_exposed_slots(backend, exclude, flags):
    ops, td, sets = backend
    n, n_exp = 8, 2
    users = torch.arange(td.n_users).repeat_interleave(300)
    cands, exposed = ops.sample_candidates(td, users, n, n_exp, exclude, _gen(), flags=flags)
    assert cands.shape == (users.numel(), n)
    if flags:
        want = [
            [i in sets.exposures[u] for i in row]
            for u, row in zip(users.tolist(), cands.tolist(), strict=True)
        ]
        assert exposed.tolist() == want
    else:
        assert exposed is None
    for u in range(td.n_users):
        rows = cands[users == u]
        allowed = sets.allowed(u, exclude)
        _assert_uniform(rows[:, : n - n_exp].reshape(-1).tolist(), allowed)
        tail = rows[:, n - n_exp :].reshape(-1).tolist()
        _assert_uniform(tail, sets.exposures[u] if sets.exposures[u] else allowed)


# ------------------------------------------------------------------------------- scoring and choice
def test_candidate_scores_equal_brute_force_scores(backend):
    """``score_candidates`` against a float64 Python loop, for user-item scores and for item-item
    scores (``Tables(item, item, h)``, as RecNS scores a positive against its candidates); float32,
    on the tables' device, of the candidates' shape."""
    ops = backend[0]
    tables = _tables()
    rng = np.random.default_rng(2)
    users = torch.from_numpy(rng.integers(0, 9, 200))
    cands = torch.from_numpy(rng.integers(0, 40, (200, 7)))
    got = ops.score_candidates(tables, users, cands)
    assert got.shape == (200, 7) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), _brute_scores(tables, users, cands), rtol=1e-5, atol=1e-5)
    pairs = type(tables)(tables.item, tables.item, tables.h)
    positives = torch.from_numpy(rng.integers(0, 40, 200))
    got = ops.score_candidates(pairs, positives, cands)
    np.testing.assert_allclose(got.numpy(), _brute_scores(pairs, positives, cands), rtol=1e-5, atol=1e-5)


def test_torch_top_n_choice_and_best_candidate_record_no_gradient_graph(monkeypatch):
    """The torch backend scores candidates under ``no_grad`` for every op that scores them (an op that
    lost its ``no_grad`` built an autograd graph over the gathered rows of tables that require grad)."""
    import reinforcens.ops.torch_ops as torch_ops

    seen: list[bool] = []
    real = torch_ops.candidate_scores

    def spy(*args, **kwargs):
        seen.append(torch.is_grad_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(torch_ops, "candidate_scores", spy)
    tables = _tables()
    tables = type(tables)(*(t.detach().clone().requires_grad_() for t in tables))
    users, cands = torch.tensor([0, 1, 2]), torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    ops = TorchOps()
    assert not ops.score_candidates(tables, users, cands).requires_grad
    ops.best_candidate(tables, users, cands)
    ops.top_n_choice(tables, users, cands, 2, _gen())
    ops.loss_softmax_choice(tables, users, users, cands, 1.0, _gen())
    ops.softmax_choice(tables, users, cands, 1.0, _gen())
    history = torch.zeros((3, 3, 2))
    ops.variance_choice(tables, users, users, cands, history, history[:, 0], 1.0)
    ops.softmax_subset(tables, users, cands, 2, 1.0, _gen())
    assert len(seen) >= 7 and not any(seen), seen


def test_best_candidate_is_the_first_argmax_of_brute_force_scores(backend):
    ops = backend[0]
    tables = _tables()
    rng = np.random.default_rng(1)
    users = torch.from_numpy(rng.integers(0, 9, 300))
    cands = torch.from_numpy(rng.integers(0, 40, (300, 9)))
    cands[:, 5] = cands[:, 2]  # a repeated candidate: the first position wins
    got = ops.best_candidate(tables, users, cands)
    assert got.shape == (300, 1)
    scores = _brute_scores(tables, users, cands)
    want = [max(range(len(s)), key=lambda c, s=s: (s[c], -c)) for s in scores]
    gap = [sorted(set(s))[-1] - sorted(set(s))[-2] for s in scores]
    clear = [g > 1e-4 for g in gap]  # rows without a float32 near tie
    assert sum(clear) > 290
    assert [a for a, ok in zip(got.squeeze(1).tolist(), clear, strict=True) if ok] == [
        w for w, ok in zip(want, clear, strict=True) if ok
    ]
    assert 5 not in got.squeeze(1).tolist()


@pytest.mark.parametrize("n", [1, 3, 9])
def test_top_n_choice_is_among_the_n_best_of_brute_force_scores(backend, n):
    """The chosen position ranks below ``n`` by brute-force score (ties by position, the earlier
    first); ``n = 1`` is :meth:`best_candidate`'s pick, ``n = 9`` (all) any position."""
    ops = backend[0]
    tables = _tables(seed=4)
    rng = np.random.default_rng(4)
    users = torch.from_numpy(rng.integers(0, 9, 300))
    cands = torch.from_numpy(rng.integers(0, 40, (300, 9)))
    cands[:, 5] = cands[:, 2]  # a repeated candidate: position 2 ranks before position 5
    got = ops.top_n_choice(tables, users, cands, n, _gen())
    assert got.shape == (300, 1) and got.dtype == torch.int64
    scores = _brute_scores(tables, users, cands)
    ranks = [sorted(range(9), key=lambda c, s=s: (-s[c], c)) for s in scores]
    gaps = [min(np.diff(sorted(set(s)))) for s in scores]
    clear = [g > 1e-4 for g in gaps]  # rows without a float32 near tie
    assert sum(clear) > 250
    for row, ok in enumerate(clear):
        if ok:
            assert ranks[row].index(int(got[row])) < n, row
    if n == 1:
        best = ops.best_candidate(tables, users, cands)
        assert [a for a, ok in zip(got.squeeze(1).tolist(), clear, strict=True) if ok] == [
            b for b, ok in zip(best.squeeze(1).tolist(), clear, strict=True) if ok
        ]
    assert torch.equal(got, ops.top_n_choice(tables, users, cands, n, _gen()))  # reproducible


@pytest.mark.parametrize("n", [2, 5, 6])
def test_top_n_choice_is_uniform_over_the_n_best(backend, n):
    ops = backend[0]
    tables = _tables(seed=5)
    rows = 30000
    users = torch.zeros(rows, dtype=torch.int64)
    cands = torch.arange(6).repeat(rows, 1)
    got = ops.top_n_choice(tables, users, cands, n, _gen()).squeeze(1).numpy()
    scores = _brute_scores(tables, users[:1], cands[:1])[0]
    best = sorted(range(6), key=lambda c: -scores[c])[:n]
    counts = np.bincount(got, minlength=6)
    assert counts[best].sum() == rows
    assert stats.chisquare(counts[best]).pvalue > 1e-3, counts
    with pytest.raises(ValueError, match="top_n_choice"):
        ops.top_n_choice(tables, users, cands, 7, _gen())
    with pytest.raises(ValueError, match="top_n_choice"):
        ops.top_n_choice(tables, users, cands, 0, _gen())


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_softmax_choice_follows_the_softmax(backend, temperature):
    ops = backend[0]
    tables = _tables(seed=2)
    rows, n = 40000, 6
    users = torch.zeros(rows, dtype=torch.int64)
    cands = torch.arange(n).repeat(rows, 1)
    drawn = ops.softmax_choice(tables, users, cands, temperature, _gen())
    assert drawn.choice.shape == (rows, 1) and drawn.log_softmax.shape == (rows, n)
    z = torch.tensor(_brute_scores(tables, users[:1], cands[:1]), dtype=torch.float64) / temperature
    want = torch.log_softmax(z, 1)
    torch.testing.assert_close(drawn.log_softmax.double(), want.expand(rows, n), rtol=1e-5, atol=1e-6)
    counts = np.bincount(drawn.choice.squeeze(1).numpy(), minlength=n)
    assert stats.chisquare(counts, want.exp().squeeze(0).numpy() * rows).pvalue > 1e-4


def test_softmax_choice_log_softmax_on_mixed_rows(backend):
    ops = backend[0]
    tables = _tables(seed=3)
    rng = np.random.default_rng(3)
    users = torch.from_numpy(rng.integers(0, 9, 200))
    cands = torch.from_numpy(rng.integers(0, 40, (200, 7)))
    drawn = ops.softmax_choice(tables, users, cands, 0.7, _gen())
    z = torch.tensor(_brute_scores(tables, users, cands), dtype=torch.float64) / 0.7
    torch.testing.assert_close(drawn.log_softmax.double(), torch.log_softmax(z, 1), rtol=1e-5, atol=1e-6)
    assert bool(((drawn.choice >= 0) & (drawn.choice < 7)).all())


def test_list_scores_equal_a_brute_force_loop(backend):
    ops = backend[0]
    tables = _tables(seed=4)
    rng = np.random.default_rng(4)
    users, items = rng.integers(0, 9, 300), rng.integers(0, 40, (300, 11))  # > one 128-user chunk
    got = ops.score_lists(tables, users, items)
    assert got.dtype == np.float64 and got.shape == (300, 11)
    np.testing.assert_allclose(
        got, _brute_scores(tables, torch.as_tensor(users), torch.as_tensor(items)), rtol=1e-5, atol=1e-5
    )


# ------------------------------------------------------------------------------------ fused steps
class AdamOracle:
    """Row-wise Adam on the tables and dense Adam on ``h``, written out (the optim module docstring)."""

    def __init__(self, model: GMF):
        self.w = {
            k: v.detach().double().clone()
            for k, v in (("user", model.user.weight), ("item", model.item.weight), ("h", model.h))
        }
        self.m = {k: torch.zeros_like(v) for k, v in self.w.items()}
        self.v = {k: torch.zeros_like(v) for k, v in self.w.items()}
        self.t = 0
        self.trains_h = model.trains_h

    def leaves(self):
        return {k: v.clone().requires_grad_(True) for k, v in self.w.items()}

    def step(self, lr: float, grads: dict[str, torch.Tensor], rows: dict[str, set[int]]) -> None:
        self.t += 1
        b1, b2 = BETAS
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        for name in ("user", "item"):
            for r in sorted(rows[name]):  # only the batch's rows, moments included
                g = grads[name][r]
                self.m[name][r] = b1 * self.m[name][r] + (1 - b1) * g
                self.v[name][r] = b2 * self.v[name][r] + (1 - b2) * g * g
                step = lr * math.sqrt(bc2) / bc1
                self.w[name][r] -= step * self.m[name][r] / (self.v[name][r].sqrt() + EPS)
        if self.trains_h and grads["h"] is not None:  # no gradient: h and its moments stay
            g = grads["h"]
            self.m["h"] = b1 * self.m["h"] + (1 - b1) * g
            self.v["h"] = b2 * self.v["h"] + (1 - b2) * g * g
            self.w["h"] = self.w["h"] - lr / bc1 * self.m["h"] / (self.v["h"].sqrt() / math.sqrt(bc2) + EPS)

    def assert_matches(self, opt: GMFOptimizer) -> None:
        m = opt.model
        for name, got in (("user", m.user.weight), ("item", m.item.weight), ("h", m.h)):
            torch.testing.assert_close(got.detach().double(), self.w[name], rtol=1e-5, atol=2e-6)
        state = opt.state_dict()
        # an MF's h is fixed (the numba kernels update moments of a scratch copy): not compared
        for name in ("user", "item", "h") if self.trains_h else ("user", "item"):
            torch.testing.assert_close(state[f"{name}_exp_avg"].double(), self.m[name], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(
                state[f"{name}_exp_avg_sq"].double(), self.v[name], rtol=1e-4, atol=1e-8
            )
        assert opt.steps == self.t


def _policy(kind: str, seed: int = 0) -> GMF:
    cls = GMF if kind == "gmf" else MF
    return cls(12, 30, 6, init_std=0.3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["gmf", "mf"])
@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_bpr_step_equals_autograd_then_rowwise_adam(backend, kind, l2):
    ops = backend[0]
    model = _policy(kind)
    opt = GMFOptimizer(model, 0.05, betas=BETAS, eps=EPS, backend=ops.name)
    oracle = AdamOracle(model)
    g = _gen(1)
    for _ in range(3):
        users = torch.randint(0, 12, (40,), generator=g)  # repeated rows
        pos, neg = torch.randint(0, 30, (40,), generator=g), torch.randint(0, 30, (40,), generator=g)
        x = oracle.leaves()
        pu = x["user"][users] * x["h"]
        r_pos, r_neg = (pu * x["item"][pos]).sum(1), (pu * x["item"][neg]).sum(1)
        loss = torch.nn.functional.softplus(-(r_pos - r_neg)).sum()
        loss = loss + 0.5 * l2 * sum(
            e.pow(2).sum() for e in (x["user"][users], x["item"][pos], x["item"][neg])
        )
        loss.backward()
        got_loss, got_neg = ops.bpr_step(opt, users, pos, neg, l2)
        assert float(got_loss) == pytest.approx(float(loss.detach()), rel=1e-5)
        torch.testing.assert_close(got_neg.double(), r_neg.detach(), rtol=1e-5, atol=1e-6)
        grads = {k: v.grad for k, v in x.items()}
        oracle.step(0.05, grads, {"user": set(users.tolist()), "item": set(pos.tolist()) | set(neg.tolist())})
        oracle.assert_matches(opt)
    if kind == "mf":
        assert torch.equal(model.h.detach(), torch.ones(6))


@pytest.mark.parametrize("kind", ["gmf", "mf"])
def test_bpr_sgd_step_equals_autograd_then_sgd(backend, kind):
    """Plain SGD (``optimizer="sgd"``): the autograd gradients of the same loss, ``w <- w - lr * g``."""
    ops, lr, l2 = backend[0], 0.05, 0.1
    model = _policy(kind, seed=3)
    opt = SGDOptimizer(model, lr, backend=ops.name)
    w = AdamOracle(model).w
    g = _gen(4)
    for _ in range(3):
        users = torch.randint(0, 12, (40,), generator=g)  # repeated rows
        pos, neg = torch.randint(0, 30, (40,), generator=g), torch.randint(0, 30, (40,), generator=g)
        x = {k: v.clone().requires_grad_(True) for k, v in w.items()}
        pu = x["user"][users] * x["h"]
        r_pos, r_neg = (pu * x["item"][pos]).sum(1), (pu * x["item"][neg]).sum(1)
        loss = torch.nn.functional.softplus(-(r_pos - r_neg)).sum()
        rows = (x["user"][users], x["item"][pos], x["item"][neg])
        loss = loss + 0.5 * l2 * sum(e.pow(2).sum() for e in rows)
        loss.backward()
        got_loss, got_neg = ops.bpr_sgd_step(opt, users, pos, neg, l2)
        assert float(got_loss) == pytest.approx(float(loss.detach()), rel=1e-5)
        torch.testing.assert_close(got_neg.double(), r_neg.detach(), rtol=1e-5, atol=1e-6)
        for name in ("user", "item", "h") if model.trains_h else ("user", "item"):
            w[name] = w[name] - lr * x[name].grad
        for name, got in (("user", model.user.weight), ("item", model.item.weight), ("h", model.h)):
            torch.testing.assert_close(got.detach().double(), w[name], rtol=1e-5, atol=2e-6)
    assert opt.steps == 3


@pytest.mark.parametrize("kind", ["gmf", "mf"])
def test_step_rows_equals_rowwise_adam(backend, kind):
    ops = backend[0]
    model = _policy(kind, seed=1)
    opt = GMFOptimizer(model, 0.02, betas=BETAS, eps=EPS, backend=ops.name)
    oracle = AdamOracle(model)
    g = _gen(2)
    for step in range(3):
        users = torch.randint(0, 12, (2, 25), generator=g)  # any shape, repeats summed
        items = torch.randint(0, 30, (35,), generator=g)
        gu, gi = torch.randn(2, 25, 6, generator=g), torch.randn(35, 6, generator=g)
        gh = torch.randn(6, generator=g) if step % 2 else None
        ops.step_rows(opt, users, gu, items, gi, gh)
        su = torch.zeros(12, 6, dtype=torch.float64).index_add_(
            0, users.reshape(-1), gu.reshape(-1, 6).double()
        )
        si = torch.zeros(30, 6, dtype=torch.float64).index_add_(0, items, gi.double())
        oracle.step(
            0.02,
            {"user": su, "item": si, "h": gh.double() if gh is not None else None},
            {"user": set(users.reshape(-1).tolist()), "item": set(items.tolist())},
        )
        oracle.assert_matches(opt)


@pytest.mark.parametrize("kind", ["gmf", "mf"])
@pytest.mark.parametrize(("l2", "temperature"), [(0.0, 1.0), (0.1, 0.7)])
def test_reinforce_step_equals_autograd_then_rowwise_adam(backend, kind, l2, temperature):
    ops = backend[0]
    model = _policy(kind, seed=2)
    opt = GMFOptimizer(model, 0.03, betas=BETAS, eps=EPS, backend=ops.name)
    oracle = AdamOracle(model)
    g = _gen(3)
    for _ in range(2):
        users = torch.randint(0, 12, (30,), generator=g)
        cands = torch.randint(0, 30, (30, 7), generator=g)  # repeated items across and within rows
        rewards = torch.randn(30, generator=g)
        drawn = ops.softmax_choice(model.tables(), users, cands, temperature, g)
        choice = drawn.choice
        x = oracle.leaves()
        z = ((x["user"][users] * x["h"]).unsqueeze(1) * x["item"][cands]).sum(2) / temperature
        log_pi = torch.log_softmax(z, 1).gather(1, choice).squeeze(1)
        chosen = cands.gather(1, choice).squeeze(1)
        loss = -(rewards.double() * log_pi).sum()
        loss = loss + 0.5 * l2 * (x["user"][users].pow(2).sum() + x["item"][chosen].pow(2).sum())
        loss.backward()
        ops.reinforce_step(opt, users, cands, drawn, rewards, l2, temperature)
        grads = {k: v.grad for k, v in x.items()}
        oracle.step(0.03, grads, {"user": set(users.tolist()), "item": set(cands.reshape(-1).tolist())})
        oracle.assert_matches(opt)


# ------------------------------------------------------------------------------------------- MMD
def _brute_mmd_reward(gen: np.ndarray, exp: np.ndarray, bandwidths) -> np.ndarray:
    """``2 mean_e k(e, g_b) - 2 mean_g' k(g', g_b)``, ``k = sum_s exp(-||x - y||^2 / (2 s^2))``."""

    def k(x, y):
        d2 = ((x - y) ** 2).sum()
        return sum(math.exp(-d2 / (2 * s * s)) for s in bandwidths)

    out = []
    for g in gen:
        out.append(2 * np.mean([k(e, g) for e in exp]) - 2 * np.mean([k(o, g) for o in gen]))
    return np.array(out)


@pytest.mark.parametrize(
    ("scale", "bandwidths"),
    [
        (0.01, DEFAULT_BANDWIDTHS),
        (0.5, DEFAULT_BANDWIDTHS),
        (30.0, DEFAULT_BANDWIDTHS),
        (0.5, (0.3, 1.0, 3.0)),
    ],
)
def test_mmd_reward_equals_the_definition(backend, scale, bandwidths):
    ops = backend[0]
    rng = np.random.default_rng(0)
    gen = (rng.normal(0, 1, (30, 6)) * scale).astype(np.float32)
    exp = ((rng.normal(0, 1, (20, 6)) + 0.5) * scale).astype(np.float32)
    got = ops.mmd_reward(torch.from_numpy(gen), torch.from_numpy(exp), bandwidths)
    want = _brute_mmd_reward(gen.astype(np.float64), exp.astype(np.float64), bandwidths)
    assert got.shape == (30,) and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max() + 1e-9)
    assert torch.equal(
        ops.mmd_reward(torch.from_numpy(gen), torch.from_numpy(exp[:0]), bandwidths), torch.zeros(30)
    )


# ------------------------------------------------------------------------------------------ SRNS
@pytest.mark.parametrize(("t_count", "weight"), [(0, 2.0), (1, 2.0), (5, 0.0), (5, 2.0)])
def test_variance_choice_is_the_argmax_of_the_criterion(backend, t_count, weight):
    """``sigmoid(z_c - z_pos) + weight * std_t sigmoid(y_ct - x_t)`` by numpy in float64 (population
    standard deviation; none without history); a repeated candidate with the same history loses to its
    first position."""
    ops = backend[0]
    tables = _tables(seed=6)
    rng = np.random.default_rng(6)
    b, n = 400, 7
    users = torch.from_numpy(rng.integers(0, 9, b))
    positives = torch.from_numpy(rng.integers(0, 40, b))
    cands = torch.from_numpy(rng.integers(0, 40, (b, n)))
    cand_hist = torch.from_numpy(rng.normal(0, 2, (b, n, t_count)).astype(np.float32))
    pos_hist = torch.from_numpy(rng.normal(0, 2, (b, t_count)).astype(np.float32))
    cands[:, 5] = cands[:, 2]
    cand_hist[:, 5] = cand_hist[:, 2]
    got = ops.variance_choice(tables, users, positives, cands, cand_hist, pos_hist, weight)
    assert got.shape == (b, 1) and got.dtype == torch.int64
    z = np.array(_brute_scores(tables, users, cands))
    zp = np.array(_brute_scores(tables, users, positives.unsqueeze(1)))
    crit = 1.0 / (1.0 + np.exp(zp - z))
    if t_count:
        past = 1.0 / (1.0 + np.exp(pos_hist.double().numpy()[:, None, :] - cand_hist.double().numpy()))
        crit = crit + weight * past.std(axis=2)
    srt = [sorted(set(row)) for row in crit.tolist()]
    clear = np.array([len(r) > 1 and r[-1] - r[-2] > 1e-5 for r in srt])
    assert clear.sum() > 350
    assert (got.squeeze(1).numpy()[clear] == crit[clear].argmax(1)).all()
    assert 5 not in got.squeeze(1).tolist()


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_softmax_subset_draws_without_replacement_by_the_softmax(backend, temperature):
    """``k = 1``: a draw from ``softmax(z / T)``; ``k = 2`` of 4: the ordered pairs of successive
    sampling, ``p_a * p_b / (1 - p_a)`` (chi-square, which also rejects uniform pairs); ``k = N``: a
    permutation; reproducible under a seed."""
    ops = backend[0]
    tables = _tables(seed=7)
    rows = 30000
    users = torch.zeros(rows, dtype=torch.int64)
    cands = torch.arange(4).repeat(rows, 1)
    z = np.array(_brute_scores(tables, users[:1], cands[:1])[0]) / temperature
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    one = ops.softmax_subset(tables, users, cands, 1, temperature, _gen())
    assert one.shape == (rows, 1) and one.dtype == torch.int64
    assert stats.chisquare(np.bincount(one.squeeze(1).numpy(), minlength=4), p * rows).pvalue > 1e-4
    two = ops.softmax_subset(tables, users, cands, 2, temperature, _gen(1))
    assert bool((two[:, 0] != two[:, 1]).all())
    pairs = [(a, b) for a in range(4) for b in range(4) if a != b]
    want = np.array([p[a] * p[b] / (1.0 - p[a]) for a, b in pairs])
    codes = (two[:, 0] * 4 + two[:, 1]).numpy()
    counts = np.array([(codes == a * 4 + b).sum() for a, b in pairs])
    assert counts.sum() == rows
    assert stats.chisquare(counts, want * rows).pvalue > 1e-4
    assert stats.chisquare(counts).pvalue < 1e-6
    every = ops.softmax_subset(tables, users[:50], cands[:50], 4, temperature, _gen(2))
    assert all(sorted(r) == [0, 1, 2, 3] for r in every.tolist())
    assert torch.equal(two, ops.softmax_subset(tables, users, cands, 2, temperature, _gen(1)))
    with pytest.raises(ValueError, match="softmax_subset"):
        ops.softmax_subset(tables, users, cands, 5, temperature, _gen())
    with pytest.raises(ValueError, match="softmax_subset"):
        ops.softmax_subset(tables, users, cands, 0, temperature, _gen())


def test_softmax_subset_keeps_the_best_scored_at_a_low_temperature_without_overflow(backend):
    """At T = 1e-4 the gaps ``(max z - z) / T`` exceed exp's range: the draw must still be by score
    (the k best-scored, best first), not by position (an overflow to infinity made every key equal)."""
    ops = backend[0]
    tables = _tables(seed=7)
    users = torch.zeros(200, dtype=torch.int64)
    cands = torch.arange(4).repeat(200, 1)
    z = np.array(_brute_scores(tables, users[:1], cands[:1])[0])
    assert (np.diff(np.sort(z)) > 1e-3).all()  # distinct scores: one right answer
    got = ops.softmax_subset(tables, users, cands, 2, 1e-4, _gen())
    best = [int(i) for i in np.argsort(-z)[:2]]
    assert all(row == best for row in got.tolist()), (got[:3].tolist(), best)
