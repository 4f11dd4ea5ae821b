"""RNS's two approximations (``--mmd rff``, ``--policy-gradient sampled``) and the ``rns-fast`` sampler.

Oracles: the MMD reward from Gaussian kernels summed pair by pair in plain Python, and the REINFORCE
gradient from torch autograd of ``-R log_softmax(z / T)[j] + 0.5 l2 (|p_u|^2 + |q_j|^2)``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import assert_trains_and_resumes_exactly, chance_threshold
from test_sampler_contract import build, model_for, sampler_for

from reinforcens.config import TrainConfig
from reinforcens.errors import ConfigError
from reinforcens.mmd import rff_mmd_reward
from reinforcens.ops.base import SoftmaxChoice
from reinforcens.samplers import sampler_config
from reinforcens.samplers.base import Negatives


def _reward_by_pairs(gen: torch.Tensor, exp: torch.Tensor, bw) -> list[float]:
    """``2 mean_e k(e, g_b) - 2 mean_g k(g, g_b)``, one pair at a time."""

    def k(a, b):
        d2 = sum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True))
        return sum(math.exp(-d2 / (2 * s * s)) for s in bw)

    return [2 * sum(k(e, g) for e in exp) / len(exp) - 2 * sum(k(h, g) for h in gen) / len(gen) for g in gen]


def test_rff_reward_is_an_unbiased_estimate_whose_error_falls_with_the_features():
    g = torch.Generator().manual_seed(0)
    gen, exp = torch.randn(12, 4, generator=g) * 0.8, torch.randn(9, 4, generator=g) * 0.8 + 0.5
    bw = (0.7, 1.0, 1.5)
    want = np.array(_reward_by_pairs(gen, exp, bw))
    assert np.abs(want).max() > 0.05  # a reward that is not trivially zero

    def draws(n_features, n):
        stream = torch.Generator().manual_seed(1)
        return np.stack([rff_mmd_reward(gen, exp, bw, n_features, stream).double().numpy() for _ in range(n)])

    few = draws(30, 3000)  # many cheap estimates: their mean converges to the exact reward
    se = few.std(0, ddof=1) / math.sqrt(few.shape[0])
    assert np.all(np.abs(few.mean(0) - want) < 5 * se + 1e-9)
    err_few = np.abs(few[:20] - want).mean()
    err_many = np.abs(draws(30000, 20) - want).mean()
    assert err_many < err_few / 10  # 1000x the features: about 1/sqrt(1000) of the error


def test_rff_reward_is_zero_without_exposed_features_and_keeps_the_dtype():
    gen = torch.randn(5, 3)
    stream = torch.Generator().manual_seed(0)
    r = rff_mmd_reward(gen, gen[:0], (1.0,), 64, stream)
    assert torch.equal(r, torch.zeros(5)) and r.dtype == torch.float32
    assert rff_mmd_reward(gen, gen, (1.0,), 64, stream).dtype == torch.float32


def _autograd_gradient(s, users, cands, choice, rewards, temperature):
    """The exact REINFORCE gradient of the policy's tables and ``h`` by autograd."""
    m = s.model
    pu = m.user.weight.detach().clone().requires_grad_(True)
    q = m.item.weight.detach().clone().requires_grad_(True)
    h = m.h.detach().clone().requires_grad_(True)
    z = (pu[users].unsqueeze(1) * h * q[cands]).sum(2) / temperature
    logp = torch.log_softmax(z, 1).gather(1, choice).squeeze(1)
    j = cands.gather(1, choice).squeeze(1)
    loss = -(rewards * logp).sum() + 0.5 * s.l2 * ((pu[users] ** 2).sum() + (q[j] ** 2).sum())
    loss.backward()
    return pu.grad.double(), q.grad.double(), h.grad.double()


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampled_policy_gradient_is_unbiased_for_the_exact_one(monkeypatch, temperature):
    _, td = build(3)
    s = sampler_for("rns", td, options={"policy_gradient": "sampled", "temperature": temperature})
    s.l2 = 0.01
    m = model_for(td)
    users = td.pos_users[:40]
    neg = s.sample(users, td.pos_items[:40], m)
    rewards = torch.linspace(-1.0, 1.5, users.numel())
    want = _autograd_gradient(s, users, neg.candidates, neg.policy.choice, rewards, temperature)

    captured = []

    def capture(opt, us, ug, items, ig, hg):
        items, ig = items.reshape(-1), ig.reshape(-1, ig.shape[-1])
        gu = torch.zeros(td.n_users, ug.shape[1], dtype=torch.float64).index_add_(0, us, ug.double())
        gi = torch.zeros(td.n_items, ig.shape[1], dtype=torch.float64).index_add_(0, items, ig.double())
        captured.append((gu, gi, hg.double()))
        assert items.numel() == 2 * users.numel()  # two item rows per positive, not N_s

    monkeypatch.setattr(s.data.ops, "step_rows", capture)
    for _ in range(4000):
        s._reinforce_step(users, neg, rewards)
    for k, exact in enumerate(want):
        draws = torch.stack([c[k] for c in captured])
        se = draws.std(0) / math.sqrt(draws.shape[0])
        assert torch.all((draws.mean(0) - exact).abs() <= 5 * se + 1e-6), k
        assert float(exact.abs().max()) > 1e-3


def test_rns_fast_is_rns_with_the_rff_reward_and_options_are_checked():
    fast = sampler_config("rns-fast", {})
    assert (fast.mmd, fast.policy_gradient) == ("rff", "exact")
    exact = sampler_config("rns", {})
    assert (exact.mmd, exact.policy_gradient) == ("exact", "exact")
    for key, value in (("mmd", "fourier"), ("policy_gradient", "approx"), ("rff_features", 0)):
        with pytest.raises(ConfigError, match=key):
            sampler_config("rns", {key: value})


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("model", ["gmf", "mf"])
def test_rns_fast_and_the_sampled_gradient_train_above_chance_and_resume_exactly(
    tiny_prepared, tmp_path, monkeypatch, model, backend
):
    cfg = TrainConfig.build(
        model=model, sampler="rns-fast", sampler_options={"policy_gradient": "sampled"}, epochs=10,
        pretrain_epochs=4, min_steps=0, batch_size=512,
        lr=0.01, backend=backend,
    )  # fmt: skip
    full = assert_trains_and_resumes_exactly(tiny_prepared, cfg, tmp_path, monkeypatch, crash_at=6)
    floor = chance_threshold(tiny_prepared)
    assert full["valid.auc"] > floor and full["test.auc"] > floor


def test_rff_reward_is_unbiased_in_float32_with_the_papers_wide_bandwidths():
    # features of norm about 0.4 against bandwidths 19-23: every kernel value is within 1e-3 of 1
    g = torch.Generator().manual_seed(2)
    gen, exp = torch.randn(10, 8, generator=g) * 0.15, torch.randn(10, 8, generator=g) * 0.15 + 0.1
    bw = (19.0, 20.0, 21.0, 22.0, 23.0)
    want = np.array(_reward_by_pairs(gen.double(), exp.double(), bw))
    stream = torch.Generator().manual_seed(3)
    draws = np.stack([rff_mmd_reward(gen, exp, bw, 50, stream).double().numpy() for _ in range(4000)])
    se = draws.std(0, ddof=1) / math.sqrt(draws.shape[0])
    assert np.all(np.abs(draws.mean(0) - want) < 5 * se + 1e-9)
    assert np.abs(want).max() < 1e-2 and np.abs(want).min() > 0


def test_sampled_step_is_the_same_on_both_backends():
    _, td_t = build(4, n_items=400)
    _, td_n = build(4, n_items=400, backend="numba")
    opts = {"policy_gradient": "sampled", "temperature": 0.7}
    st, sn = sampler_for("rns", td_t, options=opts), sampler_for("rns", td_n, options=opts)
    st.l2 = sn.l2 = 0.01
    sn.model.load_state_dict(st.model.state_dict())
    users = td_t.pos_users[:64]
    neg = st.sample(users, td_t.pos_items[:64], model_for(td_t))
    bare = Negatives(
        neg.items, neg.log_probs, candidates=neg.candidates,
        policy=SoftmaxChoice(neg.policy.log_softmax, neg.policy.choice),
    )  # fmt: skip
    rewards = torch.linspace(-1.0, 1.0, 64)
    before = st.model.item.weight.detach().clone()
    for s, n in ((st, neg), (sn, bare)):
        s.generator.manual_seed(7)
        s._reinforce_step(users, n, rewards)
    moved = set(torch.nonzero((st.model.item.weight - before).abs().sum(1) > 0).flatten().tolist())
    for name, a in st.model.state_dict().items():
        assert torch.allclose(a, sn.model.state_dict()[name], atol=1e-6), name
    # two item rows per positive at most: the chosen one and one more draw among its candidates
    assert 0 < len(moved) <= 2 * 64 < len(set(neg.candidates.flatten().tolist()))


def test_the_new_rns_options_changed_the_keys_of_old_rns_runs():
    from reinforcens.experiments.runner import run_key
    from reinforcens.rundir import config_differences

    f = "fingerprint"
    old = run_key("rns", "rns", {}, fingerprint=f)  # the key of a default run before these options
    assert old == "rns-95596e29"
    assert run_key("rns", "rns", {"sampler_options": {"mmd": "exact"}}, fingerprint=f) == old
    assert run_key("rns", "rns", {"sampler_options": {"mmd": "rff"}}, fingerprint=f) != old
    assert run_key("rns", "rns", {"sampler_options": {"policy_gradient": "sampled"}}, fingerprint=f) != old
    mine = json.loads(TrainConfig.build(sampler="rns").to_json())
    saved = json.loads(json.dumps(mine))
    for key in ("mmd", "rff_features", "policy_gradient"):
        del saved["sampler_options"][key]  # a config.json written before the options existed
    assert config_differences(saved, mine) == []
    saved["sampler_options"]["mmd"] = "rff"
    assert config_differences(saved, mine) == ["sampler_options"]
