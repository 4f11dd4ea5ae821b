"""SRNS (Ding et al., NeurIPS 2020) against oracles written here.

The oracles score items with numpy in float64 from the model's weights, take sigmoids and population
standard deviations with numpy, and enumerate the memory refresh's outcomes in plain Python; none of them
calls the code under test. The sampler's state tensors (pools, recorded scores, memory) are read and set
directly to build the cases.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

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


def _sampler(td, options=None, seed=0):
    return make_sampler("srns", td, torch.Generator().manual_seed(seed), options, SamplerContext(dim=8))


def _scores(m: GMF, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``h . (p_u * q_i)`` in float64 with numpy: ``users`` (B,) against ``items`` (B,) or (B, N)."""
    p = m.user.weight.detach().double().numpy()
    q = m.item.weight.detach().double().numpy()
    h = m.h.detach().double().numpy()
    pu = p[users] * h
    if items.ndim == 2:
        return np.einsum("bk,bnk->bn", pu, q[items])
    return np.einsum("bk,bk->b", pu, q[items])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _click_row(td: TrainingData) -> dict[tuple[int, int], int]:
    """The row of each training click in the positives' records (the sorted click keys' order)."""
    keys = sorted(int(k) for k in td.click_keys.tolist())
    return {(k // td.n_items, k % td.n_items): r for r, k in enumerate(keys)}


# ------------------------------------------------------------------------- the behaviour
@pytest.mark.parametrize("backend", BACKENDS)
def test_prefers_the_candidate_whose_score_varied_more(prepared, backend):
    """Two memory items with the same current score (identical item rows) and the same mean recorded
    score: the one whose recorded score varied across the epochs is the negative, in either memory
    order; with alpha = 0 the tie goes to the first slot, so the test can tell the criterion from the
    slot order."""
    td = TrainingData.from_prepared(prepared, backend=backend)
    m = _model(td)
    users, pos = td.pos_users[:40], td.pos_items[:40]
    clicked = set(zip(td.pos_users.tolist(), td.pos_items.tolist(), strict=True))
    a, b = next(
        (i, j)
        for i in range(td.n_items)
        for j in range(i + 1, td.n_items)
        if not any((u, i) in clicked or (u, j) in clicked for u in set(users.tolist()))
    )
    with torch.no_grad():
        m.item.weight[b] = m.item.weight[a]
    for alpha, order, want in ((1.0, (a, b), b), (1.0, (b, a), b), (0.0, (a, b), a), (0.0, (b, a), b)):
        s = _sampler(td, {"memory_size": 2, "pool_size": 3, "alpha": alpha, "alpha_warmup": 1.0})
        s.epoch = 7  # alpha_t = alpha; 5 recorded epochs
        cur = s.epoch % s.n_pools
        s.pool_items[cur] = torch.tensor([*order, order[0]], dtype=torch.int32)  # slot 2: refresh only
        s.memory[:] = torch.tensor([0, 1])
        s.pos_scores[:] = 0.0
        stable = torch.zeros(5)
        varied = torch.tensor([-2.0, 2.0, -2.0, 2.0, 0.0])  # mean of the sigmoids 0.5 as the stable one's
        s.pool_scores[cur, :, order.index(a)] = stable
        s.pool_scores[cur, :, order.index(b)] = varied
        neg = s.sample(users, pos, m)
        assert neg.items.tolist() == [want] * 40, (alpha, order)


# ------------------------------------------------------------------------------ the criterion
def _run_epochs(td, m, options, epochs, seed=0):
    """A sampler after ``epochs`` epochs of sampling every positive (the model moves between epochs)."""
    s = _sampler(td, options, seed)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(epochs):
        s.sample(td.pos_users, td.pos_items, m)
        with torch.no_grad():
            m.item.weight.add_(torch.randn(m.item.weight.shape, generator=g), alpha=0.5)
        s.epoch_end()
    return s


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("epochs", [0, 3, 8])
def test_choice_is_the_argmax_of_score_plus_alpha_t_std(prepared, backend, epochs):
    """The negative maximises ``sigmoid(r_uj - r_ui) + alpha * min(1, t / T0) * std_e sigmoid(r^e_uj -
    r^e_ui)`` over the memory, computed here from the recorded scores of the last min(t, 5) epochs."""
    td = TrainingData.from_prepared(prepared, backend=backend)
    m = _model(td)
    opts = {"memory_size": 6, "pool_size": 40, "alpha": 3.0, "alpha_warmup": 4.0}
    s = _run_epochs(td, m, opts, epochs)
    reps = -(-3000 // td.n_positives)
    users, pos = td.pos_users.repeat(reps), td.pos_items.repeat(reps)
    perm = torch.randperm(users.numel(), generator=torch.Generator().manual_seed(9))
    users, pos = users[perm][:3000], pos[perm][:3000]
    # the oracle reads the state before the batch refreshes the memory
    u = users.numpy()
    cur = epochs % 6
    slots = s.memory.numpy()[u]  # (B, S1)
    items = s.pool_items[cur].numpy()[u[:, None], slots].astype(np.int64)
    n = min(epochs, 5)
    rows = np.array([_click_row(td)[(a, b)] for a, b in zip(u.tolist(), pos.tolist(), strict=True)])
    cand_hist = s.pool_scores[cur].double().numpy()[u[:, None], slots, :n]
    pos_hist = s.pos_scores.double().numpy()[rows, :n]
    alpha_t = 3.0 * min(1.0, epochs / 4.0)
    crit = _sigmoid(_scores(m, u, items) - _scores(m, u, pos.numpy())[:, None])
    if n:
        crit = crit + alpha_t * np.std(_sigmoid(cand_hist - pos_hist[:, None, :]), axis=2)
    # rows whose best value leads the next different one by 1e-4 (a repeated item ties with itself:
    # its first slot wins, as numpy's argmax)
    srt = [sorted(set(row)) for row in crit.tolist()]
    clear = np.array([len(r) > 1 and r[-1] - r[-2] > 1e-4 for r in srt])
    assert clear.sum() > 1500
    neg = s.sample(users, pos, m)
    assert torch.equal(neg.candidates, torch.from_numpy(items))
    assert (neg.items.numpy()[clear] == items[clear, crit[clear].argmax(1)]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_epoch_end_records_the_scores_of_the_next_pools_and_of_every_click(prepared, backend):
    """At the end of epoch t: the pools of epochs t+1 .. t+5 get their items' scores in slot t % 5, every
    training click its score; the pool of epoch t is redrawn among the user's non-clicked items; the
    pool of epoch t+1 becomes the current one."""
    td = TrainingData.from_prepared(prepared, backend=backend)
    m = _model(td)
    s = _run_epochs(td, m, {"pool_size": 30}, 6)  # t = 6 now
    before = s.pool_items.clone()
    scores_before = s.pool_scores.clone()
    s.sample(td.pos_users[:5], td.pos_items[:5], m)
    s.epoch_end()
    assert s.epoch == 7
    all_users = np.arange(td.n_users)
    for p in range(6):
        items = s.pool_items[p].numpy().astype(np.int64)
        if p == 6 % 6:  # redrawn, and not recorded this epoch
            assert not torch.equal(s.pool_items[p], before[p])
            clicked = set(zip(td.pos_users.tolist(), td.pos_items.tolist(), strict=True))
            assert not any((u, i) in clicked for u in range(td.n_users) for i in items[u].tolist())
            assert torch.equal(s.pool_scores[p], scores_before[p])
            continue
        assert torch.equal(s.pool_items[p], before[p])
        want = _scores(m, all_users, items)
        np.testing.assert_allclose(s.pool_scores[p, :, :, 6 % 5].double().numpy(), want, rtol=1e-4, atol=1e-4)
        others = [k for k in range(5) if k != 6 % 5]
        assert torch.equal(s.pool_scores[p][..., others], scores_before[p][..., others])
    keys = sorted(int(k) for k in td.click_keys.tolist())
    cu = np.array([k // td.n_items for k in keys])
    ci = np.array([k % td.n_items for k in keys])
    np.testing.assert_allclose(s.pos_scores[:, 1].double().numpy(), _scores(m, cu, ci), rtol=1e-4, atol=1e-4)


def _refresh_oracle(weights: list[float], n_fresh: int, pool: int, memory: tuple[int, ...], keep: int):
    """The distribution of the refreshed memory (as a sorted tuple of pool positions): ``n_fresh``
    positions uniform among the pool's positions not in the memory (the code redraws the others), then
    ``keep`` slots of memory + fresh drawn one at a time without replacement, each with probability
    ``w / (sum of the w left)``, ``w`` the weight of its position."""
    out: Counter = Counter()
    fresh_all = list(itertools.product([p for p in range(pool) if p not in memory], repeat=n_fresh))
    for fresh in fresh_all:
        slots = list(memory) + list(fresh)
        for taken in itertools.permutations(range(len(slots)), keep):
            prob, left = 1.0 / len(fresh_all), sum(weights[x] for x in slots)
            for t in taken:
                prob *= weights[slots[t]] / left
                left -= weights[slots[t]]
            out[tuple(sorted(slots[t] for t in taken))] += prob
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [1.0, 0.4])
def test_memory_refresh_draws_by_softmax_without_replacement(prepared, backend, temperature):
    """S1 = 2 of the memory and S2 = 2 fresh pool positions (outside the memory), kept with weights
    ``exp(r / tau)`` without replacement (the successive draws written out here); a chi-square test over
    the outcomes, which also rejects the draw without the softmax weights (uniform) and one at tau = 1
    when tau = 0.4. A fresh position inside the memory would give outcomes the oracle rules out."""
    td = TrainingData.from_prepared(prepared, backend=backend)
    m = _model(td)
    with torch.no_grad():  # every user scores alike: one batch of all users gives n_users draws
        m.user.weight[:] = m.user.weight[0]
    s = _sampler(td, {"memory_size": 2, "fresh_candidates": 2, "pool_size": 4, "temperature": temperature})
    pool_items = [0, 1, 2, 3]
    s.pool_items[0] = torch.tensor(pool_items, dtype=torch.int32)
    r = _scores(m, np.zeros(4, dtype=np.int64), np.array(pool_items))
    want = _refresh_oracle([math.exp(x / temperature) for x in r], 2, 4, (0, 1), 2)
    flat = [math.exp(0.0)] * 4
    wrong = (
        _refresh_oracle(flat, 2, 4, (0, 1), 2)
        if temperature == 1.0
        else _refresh_oracle([math.exp(x) for x in r], 2, 4, (0, 1), 2)
    )
    users = torch.arange(td.n_users)
    got: Counter = Counter()
    for _ in range(600):
        s.memory[:] = torch.tensor([0, 1])
        s.sample(users, torch.zeros_like(users), m)
        got.update(tuple(sorted(row)) for row in s.memory.tolist())
    outcomes = sorted(want)
    assert set(got) <= set(outcomes)
    counts = np.array([got[o] for o in outcomes])
    total = counts.sum()
    assert stats.chisquare(counts, np.array([want[o] for o in outcomes]) * total).pvalue > 1e-4
    assert stats.chisquare(counts, np.array([wrong[o] for o in outcomes]) * total).pvalue < 1e-6


def test_each_user_is_refreshed_once_per_batch(prepared):
    """A user's rows of a batch all choose from the memory as it stood; the memory changes once."""
    td = TrainingData.from_prepared(prepared)
    m = _model(td)
    s = _sampler(td, {"pool_size": 200})
    u = int(td.pos_users[0])
    mem = s.memory[u].clone()
    items = s.pool_items[0, u].long()[mem]
    neg = s.sample(torch.full((50,), u), torch.full((50,), int(td.pos_items[0])), m)
    assert torch.equal(neg.candidates, items.expand(50, -1))
    assert not torch.equal(s.memory[u], mem)
    assert s.memory.shape == (td.n_users, 8)


def test_initial_memory_is_distinct_positions(prepared):
    td = TrainingData.from_prepared(prepared)
    s = _sampler(td, {"memory_size": 8, "pool_size": 10})
    assert all(len(set(row)) == 8 and max(row) < 10 for row in s.memory.tolist())


# ------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"memory_size": 0}, "memory_size"),
        ({"fresh_candidates": 0}, "fresh_candidates"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha_warmup": 0.0}, "alpha_warmup"),
        ({"temperature": 0.0}, "temperature"),
        ({"pool_size": 0}, "pool_size"),
        ({"memory_size": 9, "pool_size": 8}, "pool_size"),
        ({"memory_size": 8, "pool_size": 8}, "pool_size"),
        ({"history": 0}, "history"),
        ({"warmup": 3}, "warmup"),
    ],
)
def test_invalid_options_are_one_line_errors_naming_the_key(options, key):
    with pytest.raises(ConfigError) as err:
        sampler_config("srns", options)
    msg = str(err.value)
    assert f"option {key!r}" in msg and "\n" not in msg, msg


def test_defaults():
    assert sampler_config("srns").model_dump() == {
        "memory_size": 8,
        "fresh_candidates": 64,
        "alpha": 5.0,
        "alpha_warmup": 50.0,
        "temperature": 10.0,
        "pool_size": 3000,
        "history": 5,
    }
    assert sampler_config("srns", {"memory_size": 4, "pool_size": 5}).pool_size == 5  # V = S1 + 1


def test_memory_use_per_user_is_the_documented_one(prepared):
    """The docstring's 432,064 bytes per user and 20 per click at the defaults, from the tensors kept."""
    td = TrainingData.from_prepared(prepared)
    s = _sampler(td)
    per_user = (6 * 3000 * 4) + (6 * 3000 * 5 * 4) + 8 * 8
    assert per_user == 432_064
    assert s.state_bytes() == per_user * td.n_users + 5 * 4 * td.n_positives


# ------------------------------------------------------------------------------------- state
@pytest.mark.parametrize("backend", BACKENDS)
def test_state_round_trip_continues_exactly(prepared, backend):
    td = TrainingData.from_prepared(prepared, backend=backend)
    m = _model(td)
    opts = {"pool_size": 50, "alpha_warmup": 2.0}
    s = _run_epochs(td, m, opts, 3)
    state = s.state_dict()
    gen_state = s.generator.get_state()
    other = _sampler(td, opts, seed=7)
    other.load_state_dict(state)
    other.generator.set_state(gen_state)
    assert other.epoch == 3
    for _ in range(3):
        a, b = s.sample(td.pos_users, td.pos_items, m), other.sample(td.pos_users, td.pos_items, m)
        assert torch.equal(a.items, b.items)
        s.epoch_end()
        other.epoch_end()
    for k, v in s.state_dict().items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(other.state_dict()[k])), k


@pytest.mark.parametrize(
    ("options", "key"),
    [({"memory_size": 4}, "memory"), ({"pool_size": 60}, "pool_items"), ({"history": 4}, "pool_items")],
)
def test_loading_a_state_of_other_shapes_is_a_one_line_error(prepared, options, key):
    td = TrainingData.from_prepared(prepared)
    state = _sampler(td, {"pool_size": 50}).state_dict()
    s = _sampler(td, {"pool_size": 50, **options})
    with pytest.raises(ValueError) as err:
        s.load_state_dict(state)
    msg = str(err.value)
    assert f"{key} has shape" in msg and "\n" not in msg, msg
    del state["pos_scores"]
    with pytest.raises(ValueError, match="lacks pos_scores"):
        _sampler(td, {"pool_size": 50}).load_state_dict(state)


# ------------------------------------------------------------------------------- training on tiny
@pytest.fixture(scope="module")
def floor(tiny_prepared):
    return chance_threshold(tiny_prepared)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", ["gmf", "mf", "lightgcn"])
def test_trains_above_chance_and_resumes_exactly(tiny_prepared, floor, tmp_path, monkeypatch, model, backend):
    """12 epochs with alpha_t reaching alpha at epoch 3 (so the interrupted epochs use the records)."""
    cfg = TrainConfig.build(
        model=model, sampler="srns", epochs=12, min_steps=0, batch_size=512, lr=0.01, backend=backend,
        sampler_options={"alpha_warmup": 3.0, "pool_size": 500},
    )  # fmt: skip
    full = assert_trains_and_resumes_exactly(tiny_prepared, cfg, tmp_path, monkeypatch, crash_at=5)
    assert full["valid.auc"] > floor and full["test.auc"] > floor


def test_srns_refuses_data_parallel_training(prepared):
    """Each rank would refresh only its share's memories: a run over several ranks is refused with one
    line, before any state is drawn."""
    from types import SimpleNamespace

    from reinforcens.ops import make_ops
    from reinforcens.ops.distributed import DistributedOps

    td = TrainingData.from_prepared(prepared, backend="torch")
    td.ops = DistributedOps(make_ops("torch"), SimpleNamespace(world=2, rank=0))
    with pytest.raises(ConfigError, match="data-parallel") as err:
        _sampler(td, {"pool_size": 50})
    assert "\n" not in str(err.value)


def test_best_checkpoint_copied_the_srns_memory(tiny_prepared, tmp_path):
    """Defect: the best state (``best.pt`` and the trainer's in-memory copy) held the whole SRNS memory
    and score records, (H + 1) * V * 24 bytes a user, though evaluation uses the recommender alone;
    on MovieLens-100k each run wrote a 408 MB ``best.pt`` at every improved epoch. ``last.pt`` must
    still hold the state (an exact resume needs it)."""
    from reinforcens.checkpoint import load_checkpoint
    from reinforcens.train import Trainer

    cfg = TrainConfig.build(
        model="mf", sampler="srns", epochs=3, min_steps=0, batch_size=512, lr=0.01,
        sampler_options={"pool_size": 500},
    )  # fmt: skip
    Trainer(tiny_prepared, cfg, tmp_path / "run", progress=False).fit()
    best = load_checkpoint(tmp_path / "run" / "best.pt", "cpu")
    last = load_checkpoint(tmp_path / "run" / "last.pt", "cpu")
    assert best["sampler"] == {}
    assert set(last["sampler"]) >= {"memory", "pool_items", "pool_scores", "pos_scores"}
    state_bytes = sum(v.numel() * v.element_size() for v in last["sampler"].values() if torch.is_tensor(v))
    assert (tmp_path / "run" / "best.pt").stat().st_size < state_bytes
