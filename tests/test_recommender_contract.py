"""One contract for every recommender (after implicit's ``tests/recommender_base_test.py``).

:class:`RecommenderContract` holds the tests; each model joins with one line (a subclass naming its
kind). The oracles are written here, independently of the models: plain torch formulas of each
model's score, a dense LightGCN propagation built with Python loops, Adam's first step in closed form,
Python sets of the training clicks, scikit-learn's ROC AUC.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from reinforcens.config import TrainConfig
from reinforcens.evaluation import ItemPop, evaluate_lists
from reinforcens.models import MODELS, ModelSpec, TorchScorer, make_model
from reinforcens.recommend import TrainedRecommender
from reinforcens.samplers import SAMPLERS
from reinforcens.train import Trainer, load_run

N_USERS, N_ITEMS, DIM = 7, 11, 5


def _graph(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    users = rng.integers(0, N_USERS, 30)
    items = rng.integers(0, N_ITEMS - 1, 30)  # the last item is never clicked (an isolated node)
    return users, items


def _spec(kind: str, rng: np.random.Generator, layers: int = 2) -> ModelSpec:
    users, items = _graph(rng)
    return ModelSpec(kind, N_USERS, N_ITEMS, DIM, 0.3, layers, users, items)


def oracle_tables(kind: str, state: dict[str, torch.Tensor], spec: ModelSpec):
    """The effective tables of a model from its parameters, written out for each kind."""
    p, q = state["user.weight"].double(), state["item.weight"].double()
    if kind == "gmf":
        return p, q, state["h"].double()
    ones = torch.ones(p.shape[1], dtype=torch.float64)
    if kind == "mf":
        return p, q, ones
    assert kind == "lightgcn"
    n = spec.n_users + spec.n_items
    edges = {(int(u), spec.n_users + int(i)) for u, i in zip(spec.click_users, spec.click_items, strict=True)}
    adj = torch.zeros(n, n, dtype=torch.float64)
    for a, b in edges:
        adj[a, b] = adj[b, a] = 1.0
    deg = adj.sum(1)
    for a in range(n):
        for b in range(n):
            if adj[a, b]:
                adj[a, b] /= math.sqrt(deg[a] * deg[b])
    e = torch.cat([p, q])
    layers, total = [e], e
    for _ in range(spec.layers):
        layers.append(adj @ layers[-1])
        total = total + layers[-1]
    total = total / (spec.layers + 1)
    return total[: spec.n_users], total[spec.n_users :], ones


def _trainable(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class RecommenderContract:
    """Tests every recommender passes; a subclass sets :attr:`kind`."""

    kind: str = ""

    def _model(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        spec = _spec(self.kind, rng)
        model = make_model(spec, torch.Generator().manual_seed(seed))
        if "h" in dict(model.named_parameters()):
            with torch.no_grad():
                model.h.copy_(torch.linspace(0.5, 1.5, DIM))
        model.changed()
        return spec, model

    def test_registered_under_its_kind(self):
        assert MODELS[self.kind].kind == self.kind and MODELS[self.kind].label

    def test_scores_match_the_oracle_formula(self):
        spec, model = self._model()
        p, q, h = oracle_tables(self.kind, _trainable(model), spec)
        expected = (p * h) @ q.T
        users = torch.arange(N_USERS)
        torch.testing.assert_close(model.score_all(users).double(), expected, rtol=1e-5, atol=1e-6)

    def test_stale_tables_after_weights_written_in_place_are_dropped(self):
        """Weights written in place by code that does not call ``changed()`` (another optimizer, a
        manual edit): the tables, with and without gradients, are those of the new weights (the dense
        oracle's), not a cache of the old ones."""
        spec, model = self._model(2)
        model.tables(), model.layer_tables()  # fill any cache
        with torch.no_grad():
            model.user.weight.mul_(-2.0)
            model.item.weight.add_(0.25)
        p, q, h = oracle_tables(self.kind, _trainable(model), spec)
        for t in (model.tables(), model.tables(grad=True)):
            torch.testing.assert_close(t.user.detach().double(), p, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(t.item.detach().double(), q, rtol=1e-5, atol=1e-6)
        _, items = model.layer_tables()
        torch.testing.assert_close(items.mean(1).double(), q, rtol=1e-5, atol=1e-6)

    def test_tables_filled_under_inference_mode_still_train(self):
        """Scoring under ``torch.inference_mode()`` fills the caches with tensors autograd cannot use;
        the training step that follows still gets tables differentiable in the weights."""
        _, model = self._model(3)
        with torch.inference_mode():
            model.tables()
        model.tables(grad=True).user.sum().backward()
        assert model.user.weight.grad is not None and bool(model.user.weight.grad.abs().sum() > 0)

    def test_batched_and_unbatched_scores_agree(self):
        _, model = self._model(1)
        users = torch.tensor([0, 3, 3, 6])
        items = torch.tensor([[0, 1, 10], [2, 2, 5], [9, 4, 0], [10, 7, 3]])
        full = model.score_all(torch.arange(N_USERS))
        one_by_one = torch.tensor(
            [
                [float(model(users[b : b + 1], items[b, c : c + 1]).detach()) for c in range(3)]
                for b in range(4)
            ]
        )
        torch.testing.assert_close(model.score_lists(users, items, chunk=3), one_by_one, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.candidate_scores(users, items)[0], one_by_one, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(full[users.unsqueeze(1), items], one_by_one, rtol=1e-5, atol=1e-6)
        lists = TorchScorer(model, "torch").score(users.numpy(), items.numpy())
        np.testing.assert_allclose(lists, one_by_one.numpy(), rtol=1e-5, atol=1e-6)
        compiled = TorchScorer(model, "numba").score(users.numpy(), items.numpy())
        np.testing.assert_allclose(compiled, lists, rtol=1e-5, atol=1e-6)

    def test_features_are_the_product_of_the_effective_rows(self):
        spec, model = self._model(2)
        p, q, _ = oracle_tables(self.kind, _trainable(model), spec)
        users, items = torch.tensor([1, 4]), torch.tensor([[3, 0], [10, 10]])
        expected = p[users].unsqueeze(1) * q[items]
        torch.testing.assert_close(model.features(users, items).double(), expected, rtol=1e-5, atol=1e-6)

    def test_recommend_in_internal_ids_is_the_brute_force_top_k(self):
        import scipy.sparse as sp

        _, model = self._model(5)
        users = np.array([0, 4, 6])
        seen = {0: {1, 2}, 4: set(range(N_ITEMS - 2)), 6: set()}  # user 4 has only 2 items left
        rows = [r for r, u in enumerate(users) for _ in seen[u]]
        cols = [i for u in users for i in sorted(seen[u])]
        exclude = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(users.size, N_ITEMS))
        items, scores = model.recommend(users, k=4, exclude=exclude)
        full = model.score_all(torch.as_tensor(users)).numpy()
        for r, u in enumerate(users):
            free = sorted((i for i in range(N_ITEMS) if i not in seen[u]), key=lambda i: (-full[r, i], i))[:4]
            assert [i for i in items[r] if i >= 0] == free
            np.testing.assert_allclose(scores[r][: len(free)], full[r, free], rtol=1e-6)
            assert (items[r][len(free) :] == -1).all() and np.isneginf(scores[r][len(free) :]).all()

    def test_state_round_trip(self):
        spec, model = self._model(3)
        state = model.state_dict()
        fresh = make_model(spec, torch.Generator().manual_seed(99))
        assert not torch.allclose(
            fresh.score_all(torch.arange(N_USERS)), model.score_all(torch.arange(N_USERS))
        )
        path_state = {k: v.clone() for k, v in state.items()}
        fresh.load_state_dict(path_state)
        torch.testing.assert_close(
            fresh.score_all(torch.arange(N_USERS)), model.score_all(torch.arange(N_USERS))
        )

    @pytest.mark.parametrize("backend", ["numba", "torch"])
    def test_bpr_step_matches_autograd_on_the_same_loss(self, backend):
        spec, model = self._model(4)
        before = _trainable(model)
        params = {
            k: v.double().requires_grad_(k in dict(model.named_parameters())) for k, v in before.items()
        }
        users = torch.tensor([0, 2, 2, 5, 6])
        pos = torch.tensor([1, 3, 3, 0, 9])
        neg = torch.tensor([4, 10, 8, 0, 2])
        l2, lr = 0.01, 0.05
        # the oracle: the loss in plain torch, gradients by autograd, Adam's first step in closed form
        p, q, h = oracle_tables(self.kind, params, spec)
        x = ((p[users] * h) * (q[pos] - q[neg])).sum(1)
        rows = [params["user.weight"][users], params["item.weight"][pos], params["item.weight"][neg]]
        loss = torch.nn.functional.softplus(-x).sum() + 0.5 * l2 * sum(r.pow(2).sum() for r in rows)
        loss.backward()
        opt = model.make_optimizer(lr, backend)
        got_loss, neg_scores = opt.bpr_step(users, pos, neg, l2)
        assert float(got_loss) == pytest.approx(float(loss.detach()), rel=1e-5)
        torch.testing.assert_close(
            neg_scores.double(), ((p[users] * h) * q[neg]).sum(1).detach(), rtol=1e-5, atol=1e-6
        )
        after = _trainable(model)
        for name, v in params.items():
            if v.grad is None:  # not trained (MF's h, fixed at ones)
                assert torch.equal(after[name], before[name]), name
                continue
            g = v.grad
            # Adam's first step from zero moments moves each weight by lr * g / (|g| + eps'), eps' of
            # at most 3.2e-7 (1e-8, or 1e-8 / sqrt(1 - beta2) in the row-wise form): by lr * sign(g)
            # where |g| is far above eps'
            step = after[name].double() - before[name].double()
            big = g.abs() > 1e-2
            assert int(big.sum()) >= 1, name
            torch.testing.assert_close(step[big], -lr * torch.sign(g[big]), rtol=1e-4, atol=1e-7)
            assert bool((step.abs() <= lr * (1 + 1e-5)).all()), name
            assert bool((step[g == 0] == 0).all()), name

    def test_trains_on_tiny_above_itempop(self, tiny_prepared):
        cfg = TrainConfig.build(
            model=self.kind, sampler="uniform", epochs=40, batch_size=128, lr=0.01, min_steps=0, seed=0
        )
        trainer = Trainer(tiny_prepared, cfg, None, progress=False)
        metrics = trainer.fit()
        pop = evaluate_lists(ItemPop.fit(tiny_prepared), tiny_prepared.test)
        assert metrics["test.auc"] > pop["auc"] + 0.01
        # the list AUC against scikit-learn on the trained model's own scores
        lists = tiny_prepared.test
        scores = TorchScorer(trainer.model, "torch").score(lists.users, lists.items)
        aucs = [
            roc_auc_score(lists.labels[r][lists.mask[r]], scores[r][lists.mask[r]])
            for r in range(lists.users.size)
            if 0 < lists.labels[r][lists.mask[r]].sum() < lists.mask[r].sum()
        ]
        assert metrics["test.auc"] == pytest.approx(float(np.mean(aucs)), abs=1e-6)

    def test_recommend_excludes_seen_items_and_answers_in_raw_ids(self, tiny_prepared, tmp_path):
        cfg = TrainConfig.build(model=self.kind, sampler="uniform", epochs=2, min_steps=0)
        Trainer(tiny_prepared, cfg, tmp_path / "run", progress=False).fit()
        import reinforcens

        rec = reinforcens.load_run(tmp_path / "run")
        assert isinstance(rec, TrainedRecommender) and rec.model.kind == self.kind
        out = rec.recommend(k=5)
        clicks = tiny_prepared.train_clicks
        seen = {
            (str(tiny_prepared.user_ids[u]), str(tiny_prepared.item_ids[i]))
            for u, i in zip(clicks.users(), clicks.indices, strict=True)
        }
        got = set(zip(out["user"].astype(str), out["item"].astype(str), strict=True))
        assert got and not got & seen
        assert set(out["item"].astype(str)) <= {str(i) for i in tiny_prepared.item_ids}
        # the top item of each user is the best-scored unseen item under the oracle's tables
        _, model, _ = load_run(tmp_path / "run")
        full = model.score_all(torch.arange(tiny_prepared.n_users)).numpy()
        first = out[out["rank"] == 1]
        for user, item, score in zip(first["user"], first["item"], first["score"], strict=True):
            u = int(np.flatnonzero(tiny_prepared.user_ids.astype(str) == str(user))[0])
            unseen = [
                i
                for i in range(tiny_prepared.n_items)
                if (str(user), str(tiny_prepared.item_ids[i])) not in seen
            ]
            assert score == pytest.approx(max(full[u, i] for i in unseen), rel=1e-6)
            assert str(item) in {str(tiny_prepared.item_ids[i]) for i in unseen}

    def test_export_reproduces_the_scores(self, tiny_prepared, tmp_path):
        cfg = TrainConfig.build(model=self.kind, sampler="uniform", epochs=1, min_steps=0)
        Trainer(tiny_prepared, cfg, tmp_path / "run", progress=False).fit()
        rec = TrainedRecommender.load(tmp_path / "run")
        rec.export(tmp_path / "x")
        p, q, h = (np.load(tmp_path / "x" / f) for f in ("user_factors.npy", "item_factors.npy", "h.npy"))
        full = rec.model.score_all(torch.arange(tiny_prepared.n_users)).numpy()
        np.testing.assert_allclose((p * h) @ q.T, full, rtol=1e-5, atol=1e-6)
        sims = rec.similar_items([tiny_prepared.item_ids[0]], k=3)
        assert len(sims) == 3 and str(tiny_prepared.item_ids[0]) not in set(sims["similar"].astype(str))


class TestGMF(RecommenderContract):
    kind = "gmf"


class TestMF(RecommenderContract):
    kind = "mf"


class TestLightGCN(RecommenderContract):
    kind = "lightgcn"

    def test_the_normalised_adjacency_is_exactly_symmetric(self):
        """The backward pass multiplies by ``A`` for ``A^T``: that needs ``A^T == A`` to the last bit."""
        spec, model = self._model(5)
        dense = model.adjacency.to_dense()
        assert torch.equal(dense, dense.T)
        assert int((dense != 0).sum()) == 2 * len(
            {(int(u), int(i)) for u, i in zip(spec.click_users, spec.click_items, strict=True)}
        )

    def test_propagation_gradient_is_the_dense_oracle_gradient(self):
        """The gradient of any function of the propagated tables, taken through the propagation
        (forward ``A @ E`` and backward ``A @ G``), equals the autograd gradient of the dense oracle
        propagation in float64."""
        spec, model = self._model(6)
        self._assert_oracle_gradient(spec, model, lambda: model.propagate(), seed=3)

    def _assert_oracle_gradient(self, spec, model, tables, seed: int) -> None:
        """Backpropagate a random linear function of ``tables()`` (the user and item tables) and of
        the dense float64 oracle's tables; the weights' gradients must agree."""
        gen = torch.Generator().manual_seed(seed)
        w_u = torch.randn(N_USERS, DIM, generator=gen, dtype=torch.float64)
        w_i = torch.randn(N_ITEMS, DIM, generator=gen, dtype=torch.float64)
        p, q = tables()
        ((p.double() * w_u).sum() + (q.double() * w_i).sum()).backward()
        params = {
            k: v.double().requires_grad_(k in dict(model.named_parameters()))
            for k, v in _trainable(model).items()
        }
        po, qo, _ = oracle_tables(self.kind, params, spec)
        ((po * w_u).sum() + (qo * w_i).sum()).backward()
        for name, param in model.named_parameters():
            torch.testing.assert_close(param.grad.double(), params[name].grad, rtol=1e-5, atol=1e-6)


    def test_the_training_step_after_sampling_reuses_the_sampling_propagation(self, monkeypatch):
        """A sampler's scoring (``tables()``) and the BPR step that follows (``tables(grad=True)``) share
        one propagation, whose gradient is the dense oracle's; the next call with gradients
        propagates anew, so backpropagating twice without an update works."""
        from reinforcens.models import lightgcn

        spec, model = self._model(7)
        calls = []
        forward = lightgcn._SymmetricPropagation.forward

        def counted(ctx, adjacency, e):
            calls.append(1)
            return forward(ctx, adjacency, e)

        monkeypatch.setattr(lightgcn._SymmetricPropagation, "forward", staticmethod(counted))
        model.tables()
        assert len(calls) == model.layers
        self._assert_oracle_gradient(spec, model, lambda: model.tables(grad=True)[:2], seed=4)
        assert len(calls) == model.layers  # the sampling pass, reused
        again = model.tables(grad=True)
        assert len(calls) == 2 * model.layers
        again.user.sum().backward()  # a new graph: no "backward through the graph a second time"


def test_every_model_is_in_the_contract():
    covered = {cls.kind for cls in RecommenderContract.__subclasses__()}
    assert covered == set(MODELS)


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_trains_every_model(tiny_prepared, kind, sampler):
    cfg = TrainConfig.build(
        model=kind, sampler=sampler, epochs=1, pretrain_epochs=1, min_steps=0, batch_size=512
    )
    trainer = Trainer(tiny_prepared, cfg, None, progress=False)
    metrics = trainer.fit()
    assert np.isfinite(metrics["test.auc"]) and metrics["epochs"] == 1
    assert type(trainer.model).kind == kind
    policy = getattr(trainer.sampler, "model", None)
    if policy is not None:  # a learned sampler's own model: the resolved sampler_model
        assert policy.kind == cfg.resolved_sampler_model()


def test_mf_h_stays_ones_through_training(tiny_prepared):
    for backend in ("numba", "torch"):
        cfg = TrainConfig.build(
            model="mf", sampler="rns", epochs=2, pretrain_epochs=2, min_steps=0, backend=backend
        )
        trainer = Trainer(tiny_prepared, cfg, None, progress=False)
        trainer.fit()
        assert torch.equal(trainer.model.h, torch.ones(cfg.dim))
        assert torch.equal(trainer.sampler.model.h, torch.ones(cfg.dim))


def test_mf_policy_started_from_a_gmf_scores_as_the_gmf(tiny_prepared):
    # sampler_model mf under a GMF recommender: h folds into the policy's user rows
    cfg = TrainConfig.build(
        model="gmf", sampler="rns", sampler_model="mf", epochs=0, pretrain_epochs=2, min_steps=0
    )
    trainer = Trainer(tiny_prepared, cfg, None, progress=False)
    gens = [torch.Generator().manual_seed(0) for _ in range(3)]
    model = trainer._new_model(gens[0])
    with torch.no_grad():
        model.h.copy_(torch.linspace(0.2, 2.0, cfg.dim))
    from reinforcens.samplers import SamplerContext, make_sampler

    sampler = make_sampler("rns", trainer.train_data, gens[2], {}, SamplerContext(dim=cfg.dim, model="mf"))
    sampler.init_from_pretrained(model.dot_state())
    users = torch.arange(tiny_prepared.n_users)
    torch.testing.assert_close(sampler.model.score_all(users), model.score_all(users), rtol=1e-5, atol=1e-6)
    assert torch.equal(sampler.model.h, torch.ones(cfg.dim))


def test_lightgcn_run_resumes_to_the_same_result(tiny_prepared, tmp_path, monkeypatch):
    cfg = TrainConfig.build(model="lightgcn", sampler="dns", epochs=4, min_steps=0, batch_size=512)
    full = Trainer(tiny_prepared, cfg, tmp_path / "full", progress=False).fit()
    calls = {"n": 0}
    original = Trainer.train_epoch

    def crash(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_prepared, cfg, tmp_path / "cut", progress=False).fit()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = Trainer(tiny_prepared, cfg, tmp_path / "cut", progress=False, resume=True).fit()
    for key in ("test.auc", "test.ndcg", "valid.auc", "best_epoch", "epochs"):
        assert resumed[key] == full[key], key


def test_layers_are_refused_for_models_without_them():
    from reinforcens.errors import ConfigError

    with pytest.raises(ConfigError, match="'layers'"):
        TrainConfig.build(model="gmf", layers=2)
    assert TrainConfig.build(model="lightgcn", layers=0).layers == 0


def test_lightgcn_training_is_reproducible_from_its_seed_on_several_threads():
    # regression: the backward of table[index] sums repeated rows in a thread-dependent order, so two
    # runs from one seed drifted apart (by 1e-8 after 20 steps); index_select's backward does not
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 300, 8000), rng.integers(0, 400, 8000)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:

        def train() -> torch.Tensor:
            model = make_model(
                ModelSpec("lightgcn", 300, 400, 16, 0.1, 2, users, items), torch.Generator().manual_seed(0)
            )
            opt = model.make_optimizer(1e-3, "torch")
            g = torch.Generator().manual_seed(1)
            for _ in range(20):
                u, p, n = (torch.randint(0, hi, (2048,), generator=g) for hi in (300, 400, 400))
                opt.bpr_step(u, p, n, 1e-5)
            return model.item.weight.detach().clone()

        runs = [train() for _ in range(3)]
        assert all(torch.equal(runs[0], r) for r in runs[1:])
    finally:
        torch.set_num_threads(threads)
