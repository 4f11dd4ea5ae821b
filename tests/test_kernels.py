"""The compiled (numba) backend computes what the torch backend computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from test_sampler_contract import Truth, build, model_for, sampler_for

from reinforcens import backend as be
from reinforcens import kernels
from reinforcens.errors import ConfigError
from reinforcens.mmd import gaussian_kernel, mmd_reward
from reinforcens.models.gmf import GMF
from reinforcens.ops import SoftmaxChoice
from reinforcens.ops.numba_ops import NumbaOps
from reinforcens.optim import GMFOptimizer
from reinforcens.samplers.base import Negatives


def _twins(n_users=30, n_items=40, dim=6):
    a = GMF(n_users, n_items, dim, generator=torch.Generator().manual_seed(1))
    b = GMF(n_users, n_items, dim, generator=torch.Generator().manual_seed(1))
    return a, b


def _assert_same_state(opt_a: GMFOptimizer, opt_b: GMFOptimizer, rtol=1e-5, atol=1e-6):
    for a, b in zip(opt_a.model.parameters(), opt_b.model.parameters(), strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=rtol, atol=atol)
    for key in ("user_exp_avg", "user_exp_avg_sq", "item_exp_avg", "item_exp_avg_sq", "h_exp_avg"):
        torch.testing.assert_close(opt_a.state_dict()[key], opt_b.state_dict()[key], rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------ choosing
def test_backend_resolution(monkeypatch):
    cpu = torch.device("cpu")
    assert be.resolve_backend("torch", cpu) == "torch"
    assert be.resolve_backend("numba", cpu) == "numba"
    assert be.resolve_backend("auto", cpu) == "numba"
    assert be.resolve_backend("auto", torch.device("cuda")) == "torch"
    with pytest.raises(ConfigError, match="CPU only"):
        be.resolve_backend("numba", torch.device("cuda"))
    with pytest.raises(ConfigError, match="'backend'"):
        be.resolve_backend("fortran", cpu)
    monkeypatch.setattr(be, "numba_available", lambda: False)
    assert be.resolve_backend("auto", cpu) == "torch"
    with pytest.raises(ConfigError, match="not installed"):
        be.resolve_backend("numba", cpu)


def test_optimizer_refuses_an_unknown_backend():
    m, _ = _twins()
    with pytest.raises(ValueError, match="backend"):
        GMFOptimizer(m, 0.1, backend="fortran")


# ----------------------------------------------------------------------------------- optimizer
@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_bpr_step_backends_agree(l2):
    """Several BPR steps with repeated rows: same losses, scores, weights and moments."""
    g = torch.Generator().manual_seed(0)
    ref, fast = _twins()
    opt_ref, opt_fast = GMFOptimizer(ref, 0.05), GMFOptimizer(fast, 0.05, backend="numba")
    for _ in range(6):
        u = torch.randint(0, 30, (64,), generator=g)
        i, j = torch.randint(0, 40, (64,), generator=g), torch.randint(0, 40, (64,), generator=g)
        loss_ref, s_ref = opt_ref.bpr_step(u, i, j, l2)
        loss_fast, s_fast = opt_fast.bpr_step(u, i, j, l2)
        assert loss_fast == pytest.approx(float(loss_ref), rel=1e-5)
        torch.testing.assert_close(s_fast, s_ref, rtol=1e-5, atol=1e-6)
    assert opt_fast.steps == opt_ref.steps == 6
    _assert_same_state(opt_ref, opt_fast)


def test_step_rows_backends_agree():
    g = torch.Generator().manual_seed(1)
    ref, fast = _twins()
    opt_ref, opt_fast = GMFOptimizer(ref, 0.02), GMFOptimizer(fast, 0.02, backend="numba")
    for step in range(4):
        u = torch.randint(0, 30, (2, 50), generator=g)  # any shape, many repeats
        i = torch.randint(0, 40, (70,), generator=g)
        gu, gi = torch.randn(2, 50, 6, generator=g), torch.randn(70, 6, generator=g)
        gh = torch.randn(6, generator=g) if step % 2 else None
        opt_ref.step_rows(u, gu, i, gi, gh)
        opt_fast.step_rows(u, gu, i, gi, gh)
    _assert_same_state(opt_ref, opt_fast)


def test_compiled_optimizer_refuses_a_gpu_model():
    m, _ = _twins()
    m.h = torch.nn.Parameter(torch.ones(6, device="meta"))
    with pytest.raises(ValueError, match="CPU only"):
        GMFOptimizer(m, 0.1, backend="numba")


# --------------------------------------------------------------------------------- learned samplers
@pytest.mark.parametrize("name", ["rns", "kbgan", "rns-es"])
def test_compiled_reinforce_step_equals_torch_step(name):
    """Same candidates and choice: the compiled log-softmax and REINFORCE update equal the torch ones."""
    _, fast_td = build(5, backend="numba")
    _, ref_td = build(5, backend="torch")
    users, pos = fast_td.pos_users[:150], fast_td.pos_items[:150]
    fast, ref = sampler_for(name, fast_td, seed=3), sampler_for(name, ref_td, seed=3)
    ref.model.load_state_dict(fast.model.state_dict())
    rec = model_for(fast_td)
    neg = fast.sample(users, pos, rec)
    cands, choice = neg.candidates, neg.policy.choice
    logits, pu, q = ref.model.candidate_scores(users, cands)
    log_p = torch.log_softmax(logits / ref.config.temperature, 1)
    torch.testing.assert_close(neg.policy.log_softmax, log_p, rtol=1e-5, atol=1e-6)
    drawn = SoftmaxChoice(log_p, choice, user_rows=pu, item_rows=q)
    ref_neg = Negatives(neg.items, log_p.gather(1, choice).squeeze(1), candidates=cands, policy=drawn)
    scores = rec(users, neg.items).detach()
    rewards = torch.randn(users.shape[0], generator=torch.Generator().manual_seed(0))
    fast._reinforce_step(users, neg, rewards)
    ref._reinforce_step(users, ref_neg, rewards)
    _assert_same_state(ref.optimizer, fast.optimizer)
    # and the whole update (rewards, MMD, overlap from the kept flags) agrees too
    fast2, ref2 = sampler_for(name, fast_td, seed=4), sampler_for(name, ref_td, seed=4)
    ref2.model.load_state_dict(fast2.model.state_dict())
    gen_state = fast2.generator.get_state()
    fast2.update(users, pos, neg, rec, scores)
    ref2.generator.set_state(gen_state)
    # the torch path draws the MMD's exposed items with its own stream: compare the terms it shares
    sums_fast = fast2._sums.clone()
    ref2.update(users, pos, ref_neg, rec, scores)
    torch.testing.assert_close(sums_fast[[0, 2, 5]], ref2._sums[[0, 2, 5]])


def test_compiled_draw_follows_the_softmax():
    """Many draws over fixed candidates: frequencies match softmax(logits) (chi-square)."""
    rng = np.random.default_rng(0)
    n_items, dim, n = 12, 4, 6
    user_w = rng.normal(0, 0.7, (1, dim)).astype(np.float32)
    item_w = rng.normal(0, 0.7, (n_items, dim)).astype(np.float32)
    h = np.ones(dim, np.float32)
    rows = 60000
    users = np.zeros(rows, np.int64)
    cands = np.tile(np.arange(n, dtype=np.int64), (rows, 1))
    log_p, choice = kernels.score_and_choose(users, cands, user_w, item_w, h, 2.0, 12345)  # T = 0.5
    z = ((user_w[0] * h) @ item_w[:n].T).astype(np.float64) / 0.5
    want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(np.exp(log_p[0]), want, rtol=1e-5)
    counts = np.bincount(choice, minlength=n)
    assert stats.chisquare(counts, want * rows).pvalue > 1e-3


@pytest.mark.parametrize("scale", [0.01, 0.5, 30.0])
def test_compiled_mmd_equals_kernel_definition(scale):
    g = torch.Generator().manual_seed(0)
    gen = torch.randn(40, 8, generator=g) * scale
    exp = (torch.randn(25, 8, generator=g) + 0.5) * scale
    want = 2 * gaussian_kernel(exp.double(), gen.double()).mean(0) - 2 * gaussian_kernel(
        gen.double(), gen.double()
    ).mean(0)
    got = mmd_reward(gen, exp, compiled=True)
    assert got.dtype == torch.float32
    tol = 1e-4 * float(want.abs().max()) + 1e-9
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=tol)
    torch.testing.assert_close(got, mmd_reward(gen, exp), rtol=1e-4, atol=tol)
    assert torch.equal(mmd_reward(gen, exp[:0], compiled=True), torch.zeros(40))


# ------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("exclude", [False, True])
def test_compiled_uniform_draws_cover_exactly_the_allowed_items(n, exclude):
    """One draw per row (hash-set rejection) and several (bitmap rejection): exact support, uniform."""
    data, td = build(6, backend="numba")
    truth = Truth(data)
    gen = torch.Generator().manual_seed(0)
    every = torch.arange(td.n_items)
    for user in range(td.n_users):
        items = td.sample_uniform(torch.full((6000 // n,), user), n, gen, exclude_exposed=exclude)
        u = torch.full_like(every, user)
        allowed = ~truth.is_clicked(u, every)
        if exclude and bool((allowed & ~truth.is_exposed(u, every)).any()):
            allowed &= ~truth.is_exposed(u, every)
        counts = torch.bincount(items.reshape(-1), minlength=td.n_items)
        assert torch.equal(counts > 0, allowed), (user, exclude)
        expected = counts.sum().item() / int(allowed.sum())
        assert stats.chisquare(counts[allowed].numpy(), np.full(int(allowed.sum()), expected)).pvalue > 1e-4


@pytest.mark.parametrize("exclude", [False, True])
def test_candidate_flags_are_exposure(exclude):
    data, td = build(7, backend="numba")
    truth = Truth(data)
    users = torch.arange(td.n_users).repeat(5)
    gen = torch.Generator().manual_seed(0)
    cands, flags = td.sample_candidates(users, 10, 2, exclude, gen)
    assert torch.equal(flags, truth.is_exposed(users[:, None], cands))
    assert not bool(truth.is_clicked(users[:, None], cands).any())
    has = truth.n_exposed(users) > 0
    assert bool(flags[has, -2:].all())
    if exclude:
        assert not bool(flags[has & truth.has_room(users), :-2].any())
    else:
        assert bool(flags[:, :-2].any())  # uniform draws among all non-clicked items hit exposures
    # the torch backend keeps the same contract (with other random numbers)
    torch_td = build(7)[1]
    cands, flags = torch_td.sample_candidates(users, 10, 2, exclude, gen)
    assert torch.equal(flags, truth.is_exposed(users[:, None], cands))
    assert bool(flags[has, -2:].all())


def _row_gap_keys(keys, n_users, n_items):
    """Offsets and row gaps (what the kernels read) of sorted ``user * n_items + item`` keys."""
    from reinforcens.training_data import _gap_keys, _row_gaps

    indptr, gaps = _gap_keys(keys, n_users, n_items)
    return indptr, _row_gaps(gaps, indptr, n_items)


@pytest.mark.parametrize("n_items", [30, 2**31 + 7])
def test_row_gaps_give_back_each_rows_blocked_items(n_items):
    """The row gaps the kernels read are ``b_t - t`` per row: adding ``t`` gives back each user's
    blocked items (a plain-set oracle), in int32 while the catalogue allows it and in int64 beyond
    (where an int32 would wrap)."""
    from reinforcens.training_data import _gap_keys, _row_gaps

    blocked = [{0, 5, 6, 7, n_items - 1}, set(), {n_items - 3, n_items - 2}]
    keys = np.array(sorted(u * n_items + i for u, s in enumerate(blocked) for i in s), dtype=np.int64)
    indptr, gaps = _gap_keys(keys, len(blocked), n_items)
    rows = _row_gaps(gaps, indptr, n_items)
    assert rows.dtype == (np.int32 if n_items < 2**31 else np.int64)
    for u, s in enumerate(blocked):
        lo, hi = indptr[u], indptr[u + 1]
        assert {int(rows[t]) + int(t - lo) for t in range(lo, hi)} == s


def _gap_oracle(seed, ctr, free):
    """The kernels' exact draw: the ``k``-th item of ``free`` (sorted), ``k = _below(seed, ctr, len)``."""
    return np.array([free[k] for k in kernels.random_below(seed, ctr, len(free))])


def test_exhausted_rejection_falls_back_to_the_exact_draw():
    """A hash set that rejects every item (all of the user's keys) makes all 32 rejection tries fail
    for a user with room (so rejection is on): every draw is then the exact gap draw (counter
    ``64 * (b * n + c) + 63``), and a valid non-clicked item."""
    n_items, user, n = 20, 1, 2
    clicked = np.array([3, 4, 11, 17])  # 16 of 20 free: 2 * free >= n_items, rejection is on
    keys = user * n_items + clicked
    indptr, gaps = _row_gap_keys(keys, 3, n_items)
    free_count = np.array([n_items, n_items - clicked.size, n_items])
    every = kernels.hash_build(user * n_items + np.arange(n_items), 6)  # 64 slots, 20 keys
    users = np.full(5000, user)
    seed = 99
    out = kernels.sample_uniform(users, n, gaps, indptr, free_count, n_items, every, 64 - 6, seed)
    free = sorted(set(range(n_items)) - set(clicked.tolist()))
    ctr = 64 * np.arange(users.size * n) + 63
    np.testing.assert_array_equal(out.reshape(-1), _gap_oracle(seed, ctr, free))
    assert not np.isin(out, clicked).any()
    counts = np.bincount(out.reshape(-1), minlength=n_items)[free]
    assert stats.chisquare(counts).pvalue > 1e-4
    # with the honest hash set of the clicks the draws are rejection draws: the oracle tells them apart
    honest = kernels.hash_build(keys, 6)
    out2 = kernels.sample_uniform(users, n, gaps, indptr, free_count, n_items, honest, 64 - 6, seed)
    assert not np.isin(out2, clicked).any()
    assert (out2.reshape(-1) != _gap_oracle(seed, ctr, free)).mean() > 0.5


def _rejection_oracle(seed, ctr, blocked, n_items):
    """A rejection draw by Python sets: the first of ``_below(seed, ctr + a, n_items)``, ``a < 32``,
    not in ``blocked``; else the exact draw among the free items (counter ``ctr + 63``)."""
    free = sorted(set(range(n_items)) - blocked)
    if 2 * len(free) >= n_items:
        for a in range(32):
            j = int(kernels.random_below(seed, [ctr + a], n_items)[0])
            if j not in blocked:
                return j
    return int(_gap_oracle(seed, [ctr + 63], free)[0])


def _rejection_rows(seed, users, n, blocked, n_items):
    """``_rejection_oracle`` for ``n`` draws of each row (counter ``64 * (b * n + c)``)."""
    return np.array(
        [
            [_rejection_oracle(seed, 64 * (b * n + c), blocked[u], n_items) for c in range(n)]
            for b, u in enumerate(users.tolist())
        ]
    )


def _blocked_sets(n_items=30, blocked=None):
    """Row gaps of users' blocked item sets; by default three users of 30 items: few blocked, all but
    one blocked (no rejection), none blocked."""
    if blocked is None:
        blocked = [{0, 5, 6, 7, 29}, set(range(30)) - {13}, set()]
    keys = np.array(sorted(u * n_items + i for u, s in enumerate(blocked) for i in s), dtype=np.int64)
    indptr, gaps = _row_gap_keys(keys, len(blocked), n_items)
    free = np.array([n_items - len(s) for s in blocked], dtype=np.int64)
    return n_items, blocked, gaps, indptr, free


def test_several_uniform_draws_per_row_are_the_rejection_draws_of_a_set_oracle():
    """More than two draws per row go through a bitmap of the row's blocked items (built per row and
    cleared after it); a bit left set by one row would block the item for the next rows of the chunk.
    The rows alternate users, so every row follows one with other blocked items."""
    n_items, blocked, gaps, indptr, free = _blocked_sets()
    users = np.tile(np.array([0, 1, 2]), 70)  # 210 rows: four chunks of 64
    n, seed = 5, 1234
    out = kernels.sample_uniform_bitmap(users, n, gaps, indptr, free, n_items, seed)
    np.testing.assert_array_equal(out, _rejection_rows(seed, users, n, blocked, n_items))
    assert (out[users == 1] == 13).all()  # one free item: the exact draw


def test_the_bitmap_is_clean_after_rows_with_few_and_with_many_blocked_items():
    """The bitmap is cleared item by item after a row with few blocked items and wholesale after one
    with many (an eighth of its words or more); either way the next rows of the chunk must see none of
    them. 640 items are 10 words: rows with one blocked item take the first way, 100 the second."""
    rng = np.random.default_rng(5)
    sets = [{600}, set(rng.choice(640, 100, replace=False).tolist()), set(), {300}]
    n_items, blocked, gaps, indptr, free = _blocked_sets(640, sets)
    users = np.tile(np.array([0, 2, 3, 2, 1]), 128)  # 640 rows: ten chunks of 64
    n, seed = 20, 99
    out = kernels.sample_uniform_bitmap(users, n, gaps, indptr, free, n_items, seed)
    np.testing.assert_array_equal(out, _rejection_rows(seed, users, n, blocked, n_items))


def test_the_uniform_candidates_are_the_same_rejection_draws():
    """The learned samplers' candidates draw their uniform part like ``sample_uniform_bitmap`` and
    their exposed part from the user's exposures (counter ``64 * (b * n + c)``)."""
    n_items, blocked, gaps, indptr, free = _blocked_sets()
    exposed = [[1, 2], [], [4]]
    exp_keys = np.array([u * n_items + i for u, s in enumerate(exposed) for i in s], dtype=np.int64)
    exp_indptr = np.cumsum([0] + [len(s) for s in exposed]).astype(np.int64)
    users = np.tile(np.array([0, 1, 2]), 40)
    n, n_exp, seed = 6, 2, 77
    has_exp = np.ones(3, dtype=bool)
    cands, flags = kernels.candidates(
        users, n, n_exp, gaps, indptr, free, has_exp, exp_keys, exp_indptr, n_items, True, seed
    )
    for b, u in enumerate(users.tolist()):
        n_uni = n - n_exp if exposed[u] else n
        for c in range(n):
            ctr = 64 * (b * n + c)
            if c < n_uni:
                assert cands[b, c] == _rejection_oracle(seed, ctr, blocked[u], n_items), (b, c)
                assert not flags[b, c]
            else:
                k = int(kernels.random_below(seed, [ctr], len(exposed[u]))[0])
                assert cands[b, c] == exposed[u][k] and flags[b, c]


def _brute_best(users, cands, user_w, item_w, h):
    """Index of the first highest ``h . (p_u * q_c)`` of each row, by a Python loop in float64."""
    out = []
    for u, row in zip(users.tolist(), cands.tolist(), strict=True):
        s = [sum(float(h[k]) * float(user_w[u, k]) * float(item_w[i, k]) for k in range(h.size)) for i in row]
        out.append(max(range(len(s)), key=lambda c: (s[c], -c)))
    return np.array(out)


def test_best_candidate_is_the_first_argmax_of_the_scores():
    """``kernels.best_candidate`` (DNS) returns the argmax of the brute-force scores, the first position
    of the best item when it is repeated; the rows are built so that argmax and argmin differ."""
    rng = np.random.default_rng(0)
    n_users, n_items, dim = 7, 40, 5
    user_w = rng.normal(0, 1, (n_users, dim)).astype(np.float32)
    item_w = rng.normal(0, 1, (n_items, dim)).astype(np.float32)
    h = rng.normal(0, 1, dim).astype(np.float32)
    users = rng.integers(0, n_users, 300)
    cands = rng.integers(0, n_items, (300, 9))
    cands[:, 5] = cands[:, 2]  # repeated candidates: the first position wins
    got = kernels.best_candidate(users, cands, user_w, item_w, h)
    want = _brute_best(users, cands, user_w, item_w, h)
    np.testing.assert_array_equal(got, want)
    z = np.einsum("bk,bck->bc", (user_w[users] * h).astype(np.float64), item_w[cands].astype(np.float64))
    top2 = np.sort(z, 1)[:, -2:]
    distinct = np.array([len(set(r)) > 1 for r in cands.tolist()])
    assert distinct.all() and (z.argmax(1) != z.argmin(1)).all()
    assert ((top2[:, 1] - top2[:, 0] > 1e-4) | (top2[:, 1] == top2[:, 0])).all()  # no float32 near ties
    assert (got != 5).all()  # the repeat of position 2 never wins


@pytest.mark.parametrize("n_top", [1, 2, 5, 32, 33, 60])
def test_top_n_choice_takes_the_drawn_rank_of_a_stable_sort_with_ties_and_nans(n_top):
    """DNS(M,N)'s pick is the candidate at rank ``_below(seed, b, n_top)`` of numpy's stable sort of
    the negated scores (ties by position, NaN last), whether the kernel keeps the best by insertion
    (``n_top <= 32``) or sorts. Integer weights make every score exact in float32, so equal scores
    are real ties; some item rows are NaN."""
    rng = np.random.default_rng(n_top)
    n_users, n_items, dim, n = 6, 50, 4, 60
    user_w = rng.integers(-2, 3, (n_users, dim)).astype(np.float32)
    item_w = rng.integers(-2, 3, (n_items, dim)).astype(np.float32)
    item_w[[3, 17, 41]] = np.nan
    h = np.ones(dim, np.float32)
    users = rng.integers(0, n_users, 200)
    cands = rng.integers(0, n_items, (200, n))
    got = kernels.top_n_choice(users, cands, user_w, item_w, h, n_top, 11)
    z = np.einsum("bk,bck->bc", user_w[users].astype(np.float64), item_w[cands].astype(np.float64))
    ranks = kernels.random_below(11, np.arange(200), n_top)
    want = [np.argsort(-z[b], kind="stable")[ranks[b]] for b in range(200)]
    np.testing.assert_array_equal(got, want)
    assert np.isnan(z).any(axis=1).mean() > 0.9 and (ranks > 0).any() == (n_top > 1)


def test_counter_random_numbers_are_uniform_and_seeded():
    a = kernels.random_below(7, np.arange(50000), 10)
    assert stats.chisquare(np.bincount(a, minlength=10)).pvalue > 1e-3
    assert np.array_equal(a, kernels.random_below(7, np.arange(50000), 10))
    assert not np.array_equal(a, kernels.random_below(8, np.arange(50000), 10))


def _splitmix62(seed: int, counter: int) -> int:
    """The stated random number in Python integers: the top 62 bits of splitmix64 of
    ``seed + counter * phi`` (mod 2**64)."""
    mask = (1 << 64) - 1
    z = (seed + counter * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) >> 2


@pytest.mark.parametrize("n", [1, 7, 45_778, 2**31 - 1, 2**32 - 1])
def test_draws_below_n_are_the_multiply_shift_of_the_62_bit_random_number(n):
    """``_below`` is ``floor(r * n / 2**62)`` exactly (the 32-bit halves' products lose nothing), checked
    against Python's unbounded integers for catalogue sizes up to the largest that takes that path."""
    counters = np.arange(2_000) * 977 + 3
    got = kernels.random_below(12345, counters, n)
    want = [(_splitmix62(12345, int(c)) * n) >> 62 for c in counters]
    assert got.tolist() == want
    assert got.min() >= 0 and got.max() < n


def test_draws_below_n_refuse_bounds_of_32_bits_and_more():
    with pytest.raises(ValueError, match="2\\*\\*32"):
        kernels.random_below(3, np.arange(4), 2**32)
    with pytest.raises(ValueError, match="0 < n"):
        kernels.random_below(3, np.arange(4), 0)


def test_the_numba_backend_refuses_catalogues_its_draws_cannot_reach(monkeypatch):
    """``_below`` is exact for fewer than ``2**32`` items only: the numba backend's training data refuse
    larger catalogues with a one-line error (the bound lowered here to stand for ``2**32``)."""
    from reinforcens.training_data import TrainingData

    NumbaOps().check_catalogue(2**32 - 1)
    with pytest.raises(ConfigError, match="--backend torch"):
        NumbaOps().check_catalogue(2**32)
    data, _ = build(1, n_items=12)
    monkeypatch.setattr(kernels, "MAX_DRAW_BOUND", data.n_items)
    TrainingData.from_prepared(data, "cpu", "torch")  # the torch backend has no such bound
    with pytest.raises(ConfigError, match=f"not {data.n_items}"):
        TrainingData.from_prepared(data, "cpu", "numba")


def test_hash_set_membership_equals_isin():
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 10**9, 5000))
    table = kernels.hash_build(keys, 13)
    shift = 64 - 13
    probes = np.concatenate([keys, rng.integers(0, 10**9, 5000)])
    got = np.array([kernels._hash_has(table, shift, int(k)) for k in probes])
    assert np.array_equal(got, np.isin(probes, keys))


def test_parallel_kernels_do_not_depend_on_the_number_of_parts(monkeypatch):
    """Rows are split among workers, but each row's gradient is summed in batch order: bit-identical."""
    import reinforcens.ops.numba_ops as numba_ops

    results = []
    for parts in (1, 3):
        monkeypatch.setattr(numba_ops, "kernel_parts", lambda p=parts: p)
        g = torch.Generator().manual_seed(0)
        m, _ = _twins()
        opt = GMFOptimizer(m, 0.05, backend="numba")
        for _ in range(3):
            u = torch.randint(0, 30, (64,), generator=g)
            i, j = torch.randint(0, 40, (64,), generator=g), torch.randint(0, 40, (64,), generator=g)
            opt.bpr_step(u, i, j, 0.1)
        _, td = build(5, backend="numba")
        s = sampler_for("rns", td, seed=3)
        users, pos = td.pos_users[:100], td.pos_items[:100]
        neg = s.sample(users, pos, m)
        s.update(users, pos, neg, m, m(users, neg.items).detach())
        results.append([p.detach().clone() for p in (*m.parameters(), *s.model.parameters())])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_compiled_list_scores_equal_torch_scores():
    from reinforcens.models import TorchScorer

    m, _ = _twins()
    g = np.random.default_rng(0)
    users, items = g.integers(0, 30, 50), g.integers(0, 40, (50, 7))
    got = TorchScorer(m).score(users, items)
    want = m.score_lists(torch.as_tensor(users), torch.as_tensor(items)).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float64


def test_training_data_refuses_numba_off_the_cpu():
    from reinforcens.training_data import TrainingData

    data, _ = build(1)
    with pytest.raises(ValueError, match="CPU only"):
        TrainingData.from_prepared(data, device="meta", backend="numba")
    with pytest.raises(ValueError, match="backend"):
        TrainingData.from_prepared(data, backend="fortran")


@pytest.mark.parametrize("bad", [-1, 40])
def test_compiled_steps_refuse_out_of_range_rows(bad):
    """The kernels do not check indices themselves: the optimizer does, before any write."""
    m, _ = _twins()
    opt = GMFOptimizer(m, 0.05, backend="numba")
    before = m.item.weight.detach().clone()
    u, i = torch.tensor([0, 1]), torch.tensor([2, 3])
    with pytest.raises(IndexError, match="negative item index out of range"):
        opt.bpr_step(u, i, torch.tensor([4, bad]), 0.0)
    with pytest.raises(IndexError, match="item index out of range"):
        opt.step_rows(u, torch.zeros(2, 6), torch.tensor([bad]), torch.zeros(1, 6), None)
    assert opt.steps == 0 and torch.equal(m.item.weight.detach(), before)
