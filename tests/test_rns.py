"""The learned samplers' update: rewards, the MMD term, and the policy-gradient direction."""

from __future__ import annotations

import math

import pytest
import torch
from test_sampler_contract import build, model_for, sampler_for

from reinforcens.mmd import gaussian_kernel, mmd2, mmd_reward
from reinforcens.optim import GMFOptimizer
from reinforcens.samplers.base import Negatives


def test_kernel_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, generator=g), torch.randn(5, 3, generator=g)
    bw = (0.5, 2.0)
    k = gaussian_kernel(x, y, bw)
    for a in range(4):
        for b in range(5):
            d2 = float(((x[a] - y[b]) ** 2).sum())
            want = sum(math.exp(-d2 / (2 * s * s)) for s in bw)
            assert abs(float(k[a, b]) - want) < 1e-5


def test_mmd_reward_is_equation_6_times_L():
    g = torch.Generator().manual_seed(1)
    L = 6
    gen, exp = torch.randn(L, 4, generator=g), torch.randn(L, 4, generator=g) + 1.0
    bw = (1.0, 3.0)
    r = mmd_reward(gen, exp, bw)

    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s * s)) for s in bw)

    for j in range(L):
        eq6 = 2 / L**2 * (sum(k(gen[j], exp[v]) for v in range(L)) - sum(k(gen[j], gen[v]) for v in range(L)))
        assert abs(float(r[j]) - L * eq6) < 1e-5
    # moving one generated point onto the exposed cloud raises its reward and lowers the MMD
    moved = gen.clone()
    moved[0] = exp.mean(0)
    assert float(mmd_reward(moved, exp, bw)[0]) > float(r[0])
    assert mmd2(moved, exp, bw) < mmd2(gen, exp, bw)


def test_rewards_hardness_overlap_and_baseline():
    _, td = build(1)
    s, m = sampler_for("rns", td), model_for(td)
    users, pos = td.pos_users[:300], td.pos_items[:300]
    neg = s.sample(users, pos, m)
    scores = m(users, neg.items).detach()
    r = s.rewards(users, neg.items, m, scores)
    assert torch.allclose(r["hardness"], -torch.sigmoid(-scores))
    assert torch.equal(r["overlap"].bool(), td.is_exposed(users, neg.items))
    assert r["mmd"].shape == users.shape and users.numel() > 50
    s.update(users, pos, neg, m, scores)
    stats = s.epoch_end()
    assert abs(stats["reward_hardness"] - float(r["hardness"].mean())) < 1e-6
    assert abs(float(s.baseline[0]) - stats["reward_hardness"]) < 1e-9
    assert abs(stats["overlap"] - float(r["overlap"].mean())) < 1e-6


def test_reinforce_step_moves_probability_towards_rewarded_items():
    _, td = build(2)
    s, m = sampler_for("rns", td), model_for(td)
    s.config = s.config.model_copy(update={"alpha": 1.0, "beta": 0.0, "hardness": False})
    s.l2 = 0.0
    s.optimizer = GMFOptimizer(s.model, 0.05)
    user = td.pos_users[:1]
    cands = s.candidates(user)
    logits_before = s.model(user, cands).detach()
    # the exposed candidate (last) earns overlap reward 1, the others 0: its probability must rise
    exposed_col = cands.shape[1] - 1
    assert bool(td.is_exposed(user, cands[:, exposed_col]).all())
    p_before = torch.softmax(logits_before, 1)[0, exposed_col]
    for _ in range(20):
        users = user.repeat(64)
        c = cands.repeat(64, 1)
        logits = s.model(users, c)
        choice = torch.multinomial(torch.softmax(logits.detach(), 1), 1, generator=s.generator)
        lp = torch.log_softmax(logits, 1).gather(1, choice).squeeze(1)
        neg = Negatives(c.gather(1, choice).squeeze(1), lp, {"candidates": c})
        s.update(users, users, neg, m, torch.zeros(64))
    p_after = torch.softmax(s.model(user, cands).detach(), 1)[0, exposed_col]
    assert float(p_after) > float(p_before) + 0.05


def test_kbgan_prefers_items_the_recommender_scores_high():
    _, td = build(3)
    s, m = sampler_for("kbgan", td), model_for(td)
    s.l2 = 0.0
    s.optimizer = GMFOptimizer(s.model, 0.05)
    user = td.pos_users[:1]
    cands = s.data.sample_uniform(user, 10, s.generator)
    r_scores = m(user, cands).detach()
    best = int(r_scores.argmax())
    p0 = float(torch.softmax(s.model(user, cands).detach(), 1)[0, best])
    for _ in range(30):
        users, c = user.repeat(64), cands.repeat(64, 1)
        logits = s.model(users, c)
        choice = torch.multinomial(torch.softmax(logits.detach(), 1), 1, generator=s.generator)
        lp = torch.log_softmax(logits, 1).gather(1, choice).squeeze(1)
        items = c.gather(1, choice).squeeze(1)
        s.update(users, users, Negatives(items, lp), m, m(users, items).detach())
        s.epoch_end()  # moving baseline
    p1 = float(torch.softmax(s.model(user, cands).detach(), 1)[0, best])
    assert p1 > p0 + 0.05


def test_sampler_init_scratch_keeps_the_random_start():
    _, td = build(5)
    start = model_for(td).state_dict()
    paper = sampler_for("rns", td, seed=1)
    paper.init_from_pretrained(start)
    assert all(torch.equal(a, start[k]) for k, a in paper.model.state_dict().items())
    scratch = sampler_for("rns", td, seed=1, options={"sampler_init": "scratch"})
    before = {k: v.clone() for k, v in scratch.model.state_dict().items()}
    scratch.init_from_pretrained(start)
    assert all(torch.equal(a, before[k]) for k, a in scratch.model.state_dict().items())
    assert not torch.equal(scratch.model.item.weight, start["item.weight"])


def test_warmup_trains_the_sampler_and_leaves_the_recommender(tiny_prepared, tmp_path, monkeypatch):
    import reinforcens.train as train_mod
    from reinforcens.checkpoint import load_checkpoint
    from reinforcens.config import TrainConfig
    from reinforcens.train import Trainer

    fast = dict(batch_size=512, pretrain_epochs=2, record_negatives=0)
    Trainer(tiny_prepared, TrainConfig.build(sampler="uniform", epochs=2, **fast), tmp_path / "u",
            progress=False).fit()  # fmt: skip
    start = load_checkpoint(tmp_path / "u" / "best.pt")["recommender"]
    cfg = TrainConfig.build(sampler="rns", epochs=3, sampler_options={"warmup": 2},
                            pretrained=str(tmp_path / "u" / "best.pt"), **fast)  # fmt: skip
    samplers, seen = [], []  # the sampler of the run; R's and S's tables as each epoch starts
    make, epoch = train_mod.make_sampler, Trainer.train_epoch

    def keep(*args, **kwargs):
        samplers.append(make(*args, **kwargs))
        return samplers[-1]

    def spy(self, model, *args, **kwargs):
        seen.append((model.item.weight.clone(), samplers[-1].model.item.weight.clone()))
        return epoch(self, model, *args, **kwargs)

    monkeypatch.setattr(train_mod, "make_sampler", keep)
    monkeypatch.setattr(Trainer, "train_epoch", spy)
    tr = Trainer(tiny_prepared, cfg, progress=False)
    tr.fit()
    # R starts epochs 1, 2 and 3 as pretrained: the warm-up epochs did not train it; S did learn
    assert all(torch.equal(r, start["item.weight"]) for r, _ in seen)
    assert not torch.equal(seen[2][1], seen[0][1])
    assert [h["epoch"] for h in tr.history if "valid_auc" in h] == [0, 3]  # warm-up: not evaluated


def test_median_bandwidths_put_the_median_distance_at_the_median_bandwidth():
    from reinforcens.mmd import median_bandwidths

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 4, generator=g) * 0.1, torch.randn(40, 4, generator=g) * 0.1
    dists = sorted(math.dist(a.tolist(), b.tolist()) for a in x for b in y)  # brute force, 2000 pairs
    med = (dists[999] + dists[1000]) / 2
    bw = median_bandwidths(x, y, (19.0, 20.0, 21.0, 22.0, 23.0))
    assert bw[2] == pytest.approx(med, rel=2e-3)  # torch's median takes the lower middle value
    assert [b / bw[2] for b in bw] == pytest.approx([19 / 21, 20 / 21, 1.0, 22 / 21, 23 / 21])
    assert median_bandwidths(x, y[:0], (1.0, 2.0)) == (1.0, 2.0)
    # the reward is no longer flat: its spread grows by orders of magnitude
    flat = mmd_reward(x, y, (19.0, 20.0, 21.0, 22.0, 23.0))
    scaled = mmd_reward(x, y, bw)
    assert float(scaled.std()) > 100 * float(flat.std())
