"""The recommender's plain-SGD update (``optimizer="sgd"``, :class:`reinforcens.optim.SGDOptimizer`).

The oracle is written here: plain Python loops over the triples of a batch in float64, the gradients
of repeated rows summed, then ``w <- w - lr * g`` (the maths of the :mod:`reinforcens.optim` module
docstring); none of it calls the code under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import chance_threshold

from reinforcens import rundir
from reinforcens.config import TrainConfig
from reinforcens.errors import ConfigError
from reinforcens.experiments.runner import run_key
from reinforcens.models.gmf import GMF, MF
from reinforcens.ops import Ops, make_ops
from reinforcens.ops.torch_ops import TorchOps
from reinforcens.optim import AutogradOptimizer, GMFOptimizer, SGDOptimizer
from reinforcens.train import Trainer

BACKENDS = ["numba", "torch"]
N_USERS, N_ITEMS, DIM = 12, 30, 6


def _model(kind: str, seed: int = 0) -> GMF:
    cls = GMF if kind == "gmf" else MF
    return cls(N_USERS, N_ITEMS, DIM, init_std=0.3, generator=torch.Generator().manual_seed(seed))


class Oracle:
    """float64 copies of a model's weights, trained by the SGD formulas written out."""

    def __init__(self, model: GMF):
        self.p = model.user.weight.detach().double().numpy().copy()
        self.q = model.item.weight.detach().double().numpy().copy()
        self.h = model.h.detach().double().numpy().copy()
        self.trains_h = model.trains_h
        self.steps = 0

    def bpr_step(self, users, pos, neg, l2: float, lr: float) -> tuple[float, np.ndarray]:
        gp, gq, gh = np.zeros_like(self.p), np.zeros_like(self.q), np.zeros_like(self.h)
        loss, neg_scores = 0.0, []
        for u, i, j in zip(users.tolist(), pos.tolist(), neg.tolist(), strict=True):
            p, qi, qj, h = self.p[u], self.q[i], self.q[j], self.h
            x = sum(h[k] * p[k] * (qi[k] - qj[k]) for k in range(DIM))
            neg_scores.append(sum(h[k] * p[k] * qj[k] for k in range(DIM)))
            z = 1.0 / (1.0 + math.exp(x))  # sigmoid(-x)
            loss += math.log1p(math.exp(-x)) + 0.5 * l2 * sum(
                p[k] ** 2 + qi[k] ** 2 + qj[k] ** 2 for k in range(DIM)
            )
            for k in range(DIM):  # repeated rows: summed
                gp[u, k] += -z * h[k] * (qi[k] - qj[k]) + l2 * p[k]
                gq[i, k] += -z * h[k] * p[k] + l2 * qi[k]
                gq[j, k] += z * h[k] * p[k] + l2 * qj[k]
                gh[k] += -z * p[k] * (qi[k] - qj[k])
        self.apply(lr, gp, gq, gh)
        return loss, np.array(neg_scores)

    def apply(self, lr: float, gp: np.ndarray, gq: np.ndarray, gh: np.ndarray | None) -> None:
        self.steps += 1
        self.p -= lr * gp  # rows outside the batch: a zero gradient
        self.q -= lr * gq
        if self.trains_h and gh is not None:
            self.h -= lr * gh

    def assert_matches(self, model: GMF, steps: int) -> None:
        for got, want in ((model.user.weight, self.p), (model.item.weight, self.q), (model.h, self.h)):
            np.testing.assert_allclose(got.detach().double().numpy(), want, rtol=1e-5, atol=2e-6)
        assert steps == self.steps


def _batch(g: torch.Generator, b: int = 40) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triples with repeated users and items (an item may be a positive and a negative)."""
    users = torch.randint(0, N_USERS, (b,), generator=g)
    return users, torch.randint(0, N_ITEMS, (b,), generator=g), torch.randint(0, N_ITEMS, (b,), generator=g)


# ------------------------------------------------------------------------------------- the steps
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["gmf", "mf"])
@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_bpr_sgd_step_equals_the_oracle(backend, kind, l2):
    lr = 0.05
    model = _model(kind)
    opt = model.make_optimizer(lr, backend, "sgd")
    assert isinstance(opt, SGDOptimizer) and opt.backend == backend
    oracle = Oracle(model)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        users, pos, neg = _batch(g)
        before = model.item.weight.detach().clone()
        loss, neg_scores = opt.bpr_step(users, pos, neg, l2)
        want_loss, want_neg = oracle.bpr_step(users, pos, neg, l2, lr)
        assert float(loss) == pytest.approx(want_loss, rel=1e-5)
        np.testing.assert_allclose(neg_scores.double().numpy(), want_neg, rtol=1e-5, atol=1e-6)
        oracle.assert_matches(model, opt.steps)
        untouched = sorted(set(range(N_ITEMS)) - set(pos.tolist()) - set(neg.tolist()))
        assert untouched and torch.equal(model.item.weight.detach()[untouched], before[untouched])
    if kind == "mf":
        assert torch.equal(model.h.detach(), torch.ones(DIM))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["gmf", "mf"])
def test_sgd_step_rows_equals_the_oracle(backend, kind):
    lr = 0.02
    model = _model(kind, seed=1)
    opt = SGDOptimizer(model, lr, backend=backend)
    oracle = Oracle(model)
    g = torch.Generator().manual_seed(2)
    for step in range(3):
        users = torch.randint(0, N_USERS, (2, 25), generator=g)  # any shape, repeats summed
        items = torch.randint(0, N_ITEMS, (35,), generator=g)
        gu, gi = torch.randn(2, 25, DIM, generator=g), torch.randn(35, DIM, generator=g)
        gh = torch.randn(DIM, generator=g) if step % 2 else None
        opt.step_rows(users, gu, items, gi, gh)
        gp, gq = np.zeros_like(oracle.p), np.zeros_like(oracle.q)
        for u, row in zip(users.reshape(-1).tolist(), gu.reshape(-1, DIM).double().numpy(), strict=True):
            gp[u] += row
        for i, row in zip(items.tolist(), gi.double().numpy(), strict=True):
            gq[i] += row
        oracle.apply(lr, gp, gq, None if gh is None else gh.double().numpy())
        oracle.assert_matches(model, opt.steps)


def test_autograd_sgd_equals_the_oracle():
    """The autograd path (LightGCN's) with ``torch.optim.SGD``, on a GMF: the same step."""
    lr, l2 = 0.05, 0.1
    model = _model("gmf", seed=3)
    opt = AutogradOptimizer(model, lr, optimizer="sgd")
    oracle = Oracle(model)
    g = torch.Generator().manual_seed(3)
    for _ in range(2):
        users, pos, neg = _batch(g)
        loss, _ = opt.bpr_step(users, pos, neg, l2)
        want, _ = oracle.bpr_step(users, pos, neg, l2, lr)
        assert float(loss) == pytest.approx(want, rel=1e-5)
        oracle.assert_matches(model, opt.steps)
    again = AutogradOptimizer(_model("gmf"), lr, optimizer="sgd")
    again.load_state_dict(opt.state_dict())
    assert again.steps == 2
    with pytest.raises(ValueError, match="sgd"):
        AutogradOptimizer(_model("gmf"), lr).load_state_dict(opt.state_dict())


def _numba_run(monkeypatch, parts: int, threads: int) -> tuple[GMF, list[float]]:
    import numba

    from reinforcens.ops import numba_ops

    monkeypatch.setattr(numba_ops, "kernel_parts", lambda: parts)
    numba.set_num_threads(threads)
    try:
        model = GMF(50, 80, 8, init_std=0.3, generator=torch.Generator().manual_seed(4))
        opt = SGDOptimizer(model, 0.05, backend="numba")
        g = torch.Generator().manual_seed(5)
        losses = []
        for _ in range(3):
            users = torch.randint(0, 50, (600,), generator=g)
            pos, neg = torch.randint(0, 80, (600,), generator=g), torch.randint(0, 80, (600,), generator=g)
            losses.append(opt.bpr_step(users, pos, neg, 0.01)[0])
    finally:
        numba.set_num_threads(1)
    return model, losses


def test_numba_sgd_step_is_the_same_for_any_number_of_threads(monkeypatch):
    import numba

    runs = [(1, 1), (2, 1), (3, 1)]
    if numba.config.NUMBA_NUM_THREADS >= 2:
        runs.append((2, 2))
    results = [_numba_run(monkeypatch, parts, threads) for parts, threads in runs]
    first, first_losses = results[0]
    for model, losses in results[1:]:  # bit for bit
        assert losses == first_losses
        for name, p in model.state_dict().items():
            assert torch.equal(p, first.state_dict()[name]), name


def test_state_and_refusals():
    model = _model("gmf")
    opt = SGDOptimizer(model, 0.05)
    opt.bpr_step(*_batch(torch.Generator().manual_seed(6)), 0.0)
    state = opt.state_dict()
    assert state == {"kind": "rowwise-sgd", "steps": 1, "lr": 0.05}
    again = SGDOptimizer(_model("gmf"), 0.5)
    again.load_state_dict(state)
    assert again.steps == 1 and again.lr == 0.05
    # an Adam state is not an SGD one, nor the other way round
    with pytest.raises(ValueError, match="rowwise-sgd"):
        again.load_state_dict(GMFOptimizer(_model("gmf"), 0.1).state_dict())
    with pytest.raises(ValueError, match="rowwise-adam"):
        GMFOptimizer(_model("gmf"), 0.1).load_state_dict(state)
    with pytest.raises(ValueError, match="optimizer must be"):
        _model("gmf").make_optimizer(0.1, "torch", "adagrad")

    class NoSGD(TorchOps):  # operations without their SGD steps cannot be built (they are abstract)
        sgd_step_rows = Ops.sgd_step_rows
        bpr_sgd_step = Ops.bpr_sgd_step

    with pytest.raises(TypeError, match="abstract"):
        NoSGD()
    assert isinstance(make_ops("torch"), TorchOps)


# ---------------------------------------------------------------------------------- the config key
def test_the_config_key_validates_and_keeps_old_run_keys():
    assert TrainConfig.build().optimizer == "adam"
    assert TrainConfig.build(optimizer="sgd").optimizer == "sgd"
    with pytest.raises(ConfigError) as err:
        TrainConfig.build(optimizer="adagrad")
    assert "'optimizer'" in str(err.value) and "\n" not in str(err.value)
    f = "fingerprint"
    # the keys of default runs, as before the key existed
    assert run_key("rns", "rns", {}, fingerprint=f) == "rns-95596e29"
    assert run_key("uniform", "uniform", {}, fingerprint=f) == "uniform-292e8bcc"
    assert run_key("rns", "rns", {"optimizer": "adam"}, fingerprint=f) == "rns-95596e29"
    assert run_key("uniform", "uniform", {"optimizer": "sgd"}, fingerprint=f) != "uniform-292e8bcc"
    old = {k: v for k, v in json.loads(TrainConfig.build().to_json()).items() if k != "optimizer"}
    assert rundir.config_differences(old, json.loads(TrainConfig.build().to_json())) == []
    assert rundir.config_differences(old, json.loads(TrainConfig.build(optimizer="sgd").to_json())) == [
        "optimizer"
    ]


@pytest.mark.parametrize("command", ["train", "compare", "tune", "sweep", "ablation"])
def test_the_flag_is_on_every_training_command(command, capsys):
    from reinforcens.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--optimizer" in capsys.readouterr().out


# --------------------------------------------------------------------------------------- training
def test_sgd_training_learns_and_resumes_exactly(tiny_prepared, tmp_path, monkeypatch):
    cfg = TrainConfig.build(sampler="uniform", optimizer="sgd", lr=0.1, epochs=4, min_steps=0, patience=10)
    full = Trainer(tiny_prepared, cfg, tmp_path / "full", progress=False).fit()
    assert full["valid.auc"] > chance_threshold(tiny_prepared)
    last = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert last["optimizer"]["kind"] == "rowwise-sgd"

    calls = {"n": 0}
    original = Trainer.train_epoch

    def crash(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # after epochs 1-2
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_prepared, cfg, tmp_path / "cut", progress=False).fit()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = Trainer(tiny_prepared, cfg, tmp_path / "cut", progress=False, resume=True).fit()
    for key in ("test.auc", "test.ndcg", "valid.auc", "valid.ndcg", "best_epoch", "epochs"):
        assert resumed[key] == full[key], key


def test_lightgcn_trains_with_sgd(tiny_prepared):
    cfg = TrainConfig.build(
        model="lightgcn", sampler="uniform", optimizer="sgd", lr=0.05, epochs=1, min_steps=0, backend="torch"
    )
    metrics = Trainer(tiny_prepared, cfg, None, progress=False).fit()
    assert math.isfinite(metrics["valid.auc"])
