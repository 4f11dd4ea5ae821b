"""MixGCF (Huang et al., KDD 2021) against oracles written here.

The oracles propagate LightGCN's layers with scipy from the training clicks, score and compare in
float64 with numpy, and write the BPR gradients of a synthetic negative out by hand; none of them calls
the code under test.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import assert_trains_and_resumes_exactly, chance_threshold, random_frame
from scipy import stats

from reinforcens.config import TrainConfig
from reinforcens.data.log import ExposureLog
from reinforcens.data.prepared import prepare
from reinforcens.errors import ConfigError
from reinforcens.models.gmf import MF
from reinforcens.models.lightgcn import LightGCN
from reinforcens.samplers import SamplerContext, make_sampler, sampler_config
from reinforcens.samplers.base import Mixture
from reinforcens.training_data import TrainingData

BACKENDS = ["torch", "numba"]


@pytest.fixture(scope="module")
def prepared():
    frame = random_frame(9, n_users=20, n_items=120, max_sessions=6, slate=8, click_rate=0.3)
    return prepare(ExposureLog.from_frame(frame), min_sessions=2, list_length=10, seed=0)


def _lightgcn(td: TrainingData, layers: int = 2, seed: int = 4) -> LightGCN:
    return LightGCN(
        td.n_users, td.n_items, 8, layers, td.pos_users.numpy(), td.pos_items.numpy(), init_std=1.0,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip


def _oracle_layers(m: LightGCN, td: TrainingData) -> np.ndarray:
    """(n_items, L + 1, K) LightGCN's item layers in float64, propagated with scipy."""
    nu, ni = td.n_users, td.n_items
    pairs = sorted({(u, i) for u, i in zip(td.pos_users.tolist(), td.pos_items.tolist(), strict=True)})
    r = sp.coo_matrix((np.ones(len(pairs)), tuple(np.array(pairs).T)), shape=(nu, ni)).tocsr()
    a = sp.bmat([[None, r], [r.T, None]]).tocsr()
    deg = np.asarray(a.sum(1)).ravel()
    d = sp.diags(np.where(deg > 0, deg, 1.0) ** -0.5 * (deg > 0))
    norm = d @ a @ d
    e = np.concatenate([m.user.weight.detach().double().numpy(), m.item.weight.detach().double().numpy()])
    layers = [e]
    for _ in range(m.layers):
        layers.append(norm @ layers[-1])
    stacked = np.stack(layers, axis=1)
    return stacked[nu:], stacked[:nu]


@pytest.mark.parametrize("backend", BACKENDS)
def test_synthetic_negative_lies_between_the_positive_and_the_best_candidate_of_each_layer(prepared, backend):
    """Eq. 5-7: in layer l the negative is alpha_l e_i + (1 - alpha_l) e_j, alpha_l in (0, 1), j the
    candidate with the best layer-l score against the user's pooled embedding."""
    td = TrainingData.from_prepared(prepared, backend=backend)
    m = _lightgcn(td)
    s = make_sampler(
        "mixgcf", td, torch.Generator().manual_seed(1), {"n_candidates": 6}, SamplerContext(dim=8)
    )
    users, pos = td.pos_users.repeat(5), td.pos_items.repeat(5)
    n = users.shape[0]
    neg = s.sample(users, pos, m)
    mix = neg.mixture
    assert mix is not None and mix.items.shape == (n, 3, 2) and mix.weights.shape == (n, 3, 2)
    items_l, users_l = _oracle_layers(m, td)
    pu = users_l[users.numpy()].mean(1)  # the pooled user embedding (h = 1)
    a, w = mix.items.numpy(), mix.weights.double().numpy()
    assert (a[:, :, 0] == pos.numpy()[:, None]).all()  # the positive is mixed into every layer
    assert ((w[:, :, 0] > 0) & (w[:, :, 0] < 1)).all() and np.allclose(w.sum(2), 1.0)
    cands = neg.candidates.numpy()
    checked = 0
    for b in range(n):
        for layer in range(3):
            scores = [float(pu[b] @ items_l[j, layer]) for j in cands[b]]
            order = sorted(scores, reverse=True)
            if len(set(cands[b])) < len(cands[b]) or order[0] - order[1] < 1e-4:
                continue  # a tie in float32: either pick is right
            checked += 1
            assert a[b, layer, 1] == cands[b][scores.index(order[0])]
    assert checked > n
    # alpha is uniform on (0, 1): a Kolmogorov-Smirnov test on the positive's weights
    assert stats.kstest(w[:, :, 0].ravel(), "uniform").pvalue > 1e-3
    # the reported item is one of the chosen candidates, and one of the candidates
    assert all(int(neg.items[b]) in set(a[b, :, 1].tolist()) for b in range(n))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mf_mixture_step_follows_the_hand_written_gradients(prepared, backend):
    """Positive mixing on MF with plain SGD: every touched row moves by -lr times the gradient of
    softplus(-(p.q_i - p.q~)) + l2/2 (|p|^2 + |q_i|^2 + |q~|^2), q~ = a q_i + (1 - a) q_j."""
    td = TrainingData.from_prepared(prepared, backend=backend)
    m = MF(td.n_users, td.n_items, dim=8, init_std=0.5, generator=torch.Generator().manual_seed(2))
    opt = m.make_optimizer(0.1, backend, optimizer="sgd")
    users, pos, negs = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8])
    alpha = torch.tensor([0.2, 0.5, 0.9])
    mixture = Mixture(
        torch.stack([pos, negs], 1).unsqueeze(1), torch.stack([alpha, 1 - alpha], 1).unsqueeze(1)
    )
    p0 = m.user.weight.detach().double().numpy().copy()
    q0 = m.item.weight.detach().double().numpy().copy()
    l2, lr = 0.01, 0.1
    loss, neg_s = opt.mixture_step(users, pos, mixture, l2)
    want_p, want_q, want_loss = p0.copy(), q0.copy(), 0.0
    for u, i, j, a in zip(users.tolist(), pos.tolist(), negs.tolist(), alpha.double().tolist(), strict=True):
        p, qi, qj = p0[u], q0[i], q0[j]
        qt = a * qi + (1 - a) * qj
        x = p @ qi - p @ qt
        z = 1.0 / (1.0 + np.exp(x))
        want_loss += np.log1p(np.exp(-x)) + 0.5 * l2 * (p @ p + qi @ qi + qt @ qt)
        assert float(neg_s[users.tolist().index(u)]) == pytest.approx(p @ qt, rel=1e-5)
        want_p[u] -= lr * (-z * (qi - qt) + l2 * p)
        want_q[i] -= lr * (-z * p + z * a * p + l2 * qi + l2 * a * qt)
        want_q[j] -= lr * (z * (1 - a) * p + l2 * (1 - a) * qt)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    np.testing.assert_allclose(m.user.weight.detach().double().numpy(), want_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.item.weight.detach().double().numpy(), want_q, rtol=1e-5, atol=1e-6)


def test_lightgcn_mixture_step_follows_the_finite_difference_gradient(prepared):
    """LightGCN: the SGD step against a synthetic negative is -lr times the gradient of the loss
    computed here in float64 from the scipy propagation (central differences on E^(0))."""
    td = TrainingData.from_prepared(prepared, backend="torch")
    m = _lightgcn(td, layers=2)
    opt = m.make_optimizer(0.05, "torch", optimizer="sgd")
    users, pos = td.pos_users[:5], td.pos_items[:5]
    s = make_sampler(
        "mixgcf", td, torch.Generator().manual_seed(3), {"n_candidates": 4}, SamplerContext(dim=8)
    )
    mix = s.sample(users, pos, m).mixture
    a, w = mix.items.numpy(), mix.weights.double().numpy()
    l2 = 0.01

    def loss_of(m_: LightGCN) -> float:
        items_l, users_l = _oracle_layers(m_, td)
        total = 0.0
        for b, (u, i) in enumerate(zip(users.tolist(), pos.tolist(), strict=True)):
            p, qi = users_l[u].mean(0), items_l[i].mean(0)
            mixed = np.stack([sum(w[b, h, c] * items_l[a[b, h, c], h] for c in range(2)) for h in range(3)])
            x = p @ qi - p @ mixed.mean(0)
            total += np.log1p(np.exp(-x))
            total += (
                0.5
                * l2
                * (users_l[u, 0] @ users_l[u, 0] + items_l[i, 0] @ items_l[i, 0] + mixed[0] @ mixed[0])
            )
        return total

    before = {k: v.detach().double().clone() for k, v in m.state_dict().items()}
    loss, _ = opt.mixture_step(users, pos, mix, l2)
    assert float(loss) == pytest.approx(loss_of(_with(m, before)), rel=1e-5)
    rows = [
        ("item.weight", int(pos[0]), 1),
        ("item.weight", int(a[0, 0, 1]), 2),  # the candidate mixed into layer 0
        ("user.weight", int(users[0]), 3),
    ]
    for table, row, col in rows:
        eps = 1e-6
        plus = {k: v.clone() for k, v in before.items()}
        plus[table][row, col] += eps
        minus = {k: v.clone() for k, v in before.items()}
        minus[table][row, col] -= eps
        grad = (loss_of(_with(m, plus)) - loss_of(_with(m, minus))) / (2 * eps)
        moved = float(getattr(m, table.split(".")[0]).weight.detach()[row, col] - before[table][row, col])
        assert abs(grad) > 1e-4  # a coordinate the step moves
        assert moved == pytest.approx(-0.05 * grad, rel=1e-3, abs=1e-6), (table, row)


def _with(m: LightGCN, state: dict[str, torch.Tensor]) -> SimpleNamespace:
    """What the oracle reads of a LightGCN (its tables and layer count), with the weights ``state``."""
    return SimpleNamespace(
        user=SimpleNamespace(weight=state["user.weight"]),
        item=SimpleNamespace(weight=state["item.weight"]),
        layers=m.layers,
    )


def test_options_and_defaults():
    assert sampler_config("mixgcf").model_dump() == {"n_candidates": 64}
    with pytest.raises(ConfigError) as err:
        sampler_config("mixgcf", {"n_candidates": 0})
    assert "option 'n_candidates'" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", ["gmf", "mf", "lightgcn"])
def test_mixgcf_trains_above_chance_and_resumes_exactly(tiny_prepared, tmp_path, monkeypatch, model, backend):
    floor = chance_threshold(tiny_prepared)
    cfg = TrainConfig.build(
        model=model, sampler="mixgcf", epochs=10, min_steps=0, batch_size=512, lr=0.01, backend=backend,
        sampler_options={"n_candidates": 16},
    )  # fmt: skip
    full = assert_trains_and_resumes_exactly(tiny_prepared, cfg, tmp_path, monkeypatch, crash_at=4)
    assert full["valid.auc"] > floor and full["test.auc"] > floor


@pytest.mark.parametrize("model", ["mf", "lightgcn"])
def test_a_malformed_mixture_is_refused_before_any_row_moves(prepared, model):
    td = TrainingData.from_prepared(prepared, backend="torch")
    if model == "mf":
        m = MF(td.n_users, td.n_items, dim=8, generator=torch.Generator().manual_seed(0))
    else:
        m = _lightgcn(td)
    opt = m.make_optimizer(0.1, "torch")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    users, pos = td.pos_users[:4], td.pos_items[:4]
    layers = 1 if model == "mf" else 3
    good_items = torch.stack([pos, pos], 1).unsqueeze(1).expand(4, layers, 2)
    half = torch.full((4, layers, 2), 0.5)
    bad = [
        (Mixture(good_items[:, :, :1], half), "shape"),  # weights and items differ
        (Mixture(good_items[:3], half[:3]), "batch"),  # not one per positive
        (Mixture(torch.full((4, layers + 1, 2), 0), torch.full((4, layers + 1, 2), 0.5)), "layer"),
        (Mixture(good_items, torch.full((4, layers, 2), float("nan"))), "finite"),
        (Mixture(good_items + td.n_items, half), "mixed item"),
    ]
    for mixture, word in bad:
        with pytest.raises((ValueError, IndexError)) as err:
            opt.mixture_step(users, pos, mixture, 1e-5)
        assert word in str(err.value) and "\n" not in str(err.value), str(err.value)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
