"""End-to-end training on the simulator's ``tiny`` preset (smoke tests, not quality claims)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from reinforcens.config import TrainConfig
from reinforcens.errors import ConfigError
from reinforcens.samplers import SAMPLERS
from reinforcens.train import Trainer, load_run

FAST = dict(epochs=2, pretrain_epochs=2, batch_size=512, record_negatives=50)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_trains_end_to_end(name, tiny_prepared, tmp_path):
    cfg = TrainConfig.build(sampler=name, **FAST)
    metrics = Trainer(tiny_prepared, cfg, tmp_path / "run", progress=False).fit()
    for key in ("valid.auc", "valid.ndcg", "test.auc", "test.ndcg", "test.recall@20", "test.true_auc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["epochs"] == 2 and 0 <= metrics["best_epoch"] <= 2
    assert 0.0 <= metrics["negatives.false_negative_rate"] <= 1.0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test.auc"] == pytest.approx(metrics["test.auc"])
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert set(ckpt["recommender"]) == {"user.weight", "item.weight", "h"}
    assert TrainConfig.model_validate_json(ckpt["config"]).sampler == name
    lines = (tmp_path / "run" / "epochs.jsonl").read_text().splitlines()
    assert all(math.isfinite(json.loads(x).get("loss", 0.0)) for x in lines)
    learned = SAMPLERS[name].default_init == "pretrained"
    assert (tmp_path / "run" / "pretrain" / "done.json").is_file() == learned


def test_training_learns_on_tiny(tiny_prepared):
    cfg = TrainConfig.build(sampler="uniform", epochs=15, lr=0.01, batch_size=256)
    tr = Trainer(tiny_prepared, cfg, None, progress=False)
    metrics = tr.fit()
    assert metrics["valid.auc"] > 0.6  # an untrained GMF scores about 0.5
    losses = [h["loss"] for h in tr.history if "loss" in h]
    assert losses[-1] < losses[0]


def test_same_seed_same_run_and_other_seed_differs(tiny_prepared):
    runs = [
        Trainer(tiny_prepared, TrainConfig.build(sampler="rns", seed=s, **FAST), None, progress=False).fit()
        for s in (3, 3, 4)
    ]
    assert runs[0]["test.auc"] == runs[1]["test.auc"]
    assert runs[0]["test.auc"] != runs[2]["test.auc"]


def test_interrupted_run_resumes_to_the_same_result(tiny_prepared, tmp_path, monkeypatch):
    cfg = TrainConfig.build(sampler="rns", epochs=4, pretrain_epochs=2, batch_size=512, patience=10)
    full = Trainer(tiny_prepared, cfg, tmp_path / "full", progress=False).fit()

    calls = {"n": 0}
    original = Trainer.train_epoch

    def crash(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # 2 pretraining epochs, then epochs 1-2 of the main stage
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_prepared, cfg, tmp_path / "cut", progress=False).fit()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(tiny_prepared, cfg, tmp_path / "cut", progress=False).fit()
    resumed = Trainer(tiny_prepared, cfg, tmp_path / "cut", progress=False, resume=True).fit()
    for key in ("test.auc", "test.ndcg", "valid.auc", "best_epoch", "epochs"):
        assert resumed[key] == full[key], key
    a = torch.load(tmp_path / "full" / "best.pt", weights_only=True)["recommender"]["item.weight"]
    b = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)["recommender"]["item.weight"]
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="finished run"):
        Trainer(tiny_prepared, cfg, tmp_path / "full", progress=False).fit()


def test_reuse_a_pretrained_checkpoint(tiny_prepared, tmp_path):
    Trainer(tiny_prepared, TrainConfig.build(sampler="uniform", **FAST), tmp_path / "u", progress=False).fit()
    cfg = TrainConfig.build(
        sampler="dns", init="pretrained", pretrained=str(tmp_path / "u" / "best.pt"), **FAST
    )
    Trainer(tiny_prepared, cfg, tmp_path / "d", progress=False).fit()
    assert not (tmp_path / "d" / "pretrain").exists()
    _, model, st = load_run(tmp_path / "d")
    assert model.item.weight.shape[0] == tiny_prepared.n_items


def test_a_pretrained_checkpoint_is_used_by_static_samplers_too(tiny_prepared, tmp_path):
    cfg = TrainConfig.build(sampler="dns", pretrained=str(tmp_path / "x.pt"))
    assert cfg.resolved_init() == "pretrained"
    assert TrainConfig.build(sampler="dns").resolved_init() == "scratch"
    with pytest.raises(ConfigError, match="'init' and 'pretrained'"):
        TrainConfig.build(sampler="dns", init="scratch", pretrained="x.pt")


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="'lrr'"):
        TrainConfig.build(lrr=0.1)
    with pytest.raises(ConfigError, match="'batch_size'"):
        TrainConfig.build(batch_size=0)
    with pytest.raises(ConfigError, match="unknown sampler 'nope'"):
        TrainConfig.build(sampler="nope")
    with pytest.raises(ConfigError, match="option 'alphaa'"):
        TrainConfig.build(sampler="rns", sampler_options={"alphaa": 1})
    with pytest.raises(ConfigError, match="'beta'"):
        TrainConfig.build(sampler="rns", sampler_options={"beta": 2})
    assert TrainConfig.build(sampler="rns-as").sampler == "kbgan"
    from reinforcens.train import resolve_device

    with pytest.raises(ConfigError, match="'device'"):
        resolve_device("not-a-device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error():
    from reinforcens.train import resolve_device

    TrainConfig.build(device="cuda")  # validated when a trainer resolves it
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")


def test_resume_when_no_epoch_beat_the_pretrained_state(tiny_prepared, tmp_path, monkeypatch):
    # regression: the epoch-0 (pretrained) best state must be on disk before the first epoch ends
    base = TrainConfig.build(sampler="uniform", epochs=2, batch_size=512)
    Trainer(tiny_prepared, base, tmp_path / "u", progress=False).fit()
    cfg = TrainConfig.build(
        sampler="rns",
        epochs=3,
        batch_size=512,
        lr=1e-12,
        sampler_options={"sampler_lr": 1e-12},
        init="pretrained",
        pretrained=str(tmp_path / "u" / "best.pt"),
    )
    original = Trainer.train_epoch
    calls = {"n": 0}

    def crash(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_prepared, cfg, tmp_path / "r", progress=False).fit()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    metrics = Trainer(tiny_prepared, cfg, tmp_path / "r", progress=False, resume=True).fit()
    assert metrics["best_epoch"] == 0 and metrics["epochs"] == 3


def test_init_std_sets_the_initial_scale_of_the_tables(tiny_prepared, tmp_path, capsys):
    from reinforcens.cli import main
    from reinforcens.models.gmf import GMF

    n_users, n_items = 400, 3000
    normal = GMF(n_users, n_items, 16, init_std=0.02, generator=torch.Generator().manual_seed(0))
    xavier = GMF(n_users, n_items, 16, init_std="xavier", generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    oracle = torch.nn.init.xavier_normal_(torch.empty(n_items, 16), generator=gen)  # torch's own xavier
    assert float(normal.item.weight.detach().std()) == pytest.approx(0.02, rel=0.03)
    assert float(xavier.item.weight.detach().std()) == pytest.approx(float(oracle.std()), rel=0.03)
    assert float(xavier.user.weight.detach().std()) == pytest.approx((2 / (n_users + 16)) ** 0.5, rel=0.05)
    argv = ["train", "--data", str(tiny_prepared.path), "--sampler", "uniform", "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "x"), "--init-std", "xavier"]) == 0
    assert json.loads((tmp_path / "x" / "config.json").read_text())["init_std"] == "xavier"
    assert main([*argv, "--out", str(tmp_path / "y"), "--init-std", "0"]) == 2
    assert "config key 'init_std': Input should be greater than 0" in capsys.readouterr().err


def test_epoch_trace_records_the_shares_of_exposed_and_popular_negatives(tiny_prepared, tmp_path):
    from reinforcens import rundir

    cfg = TrainConfig.build(sampler="ebpr", epochs=2, batch_size=512, record_negatives=300)
    Trainer(tiny_prepared, cfg, tmp_path / "r", progress=False).fit()
    rows = [json.loads(line) for line in (tmp_path / "r" / "epochs.jsonl").read_text().splitlines()]
    records = rundir.read_negatives(tmp_path / "r" / "negatives.npz")
    # oracles in plain Python: the exposure sets, and the items with at least the 90th percentile of
    # training clicks (and at least one)
    clicks, exposures = tiny_prepared.train_clicks, tiny_prepared.train_exposures
    exposed = {(u, int(i)) for u in range(tiny_prepared.n_users)
               for i in exposures.indices[exposures.indptr[u]:exposures.indptr[u + 1]]}  # fmt: skip
    counts = [0] * tiny_prepared.n_items
    for i in clicks.indices:
        counts[int(i)] += 1
    cut = sorted(counts)[math.ceil(0.9 * (len(counts) - 1))]
    popular = {i for i, c in enumerate(counts) if c >= max(cut, 1)}
    for row in rows:
        users, items = records[row["epoch"]]
        pairs = list(zip(users.tolist(), items.tolist(), strict=True))
        assert len(pairs) == 300
        assert row["neg_exposed_share"] == pytest.approx(sum(p in exposed for p in pairs) / 300)
        assert row["neg_popular_share"] == pytest.approx(sum(i in popular for _, i in pairs) / 300)
    assert rows[0]["neg_exposed_share"] > 0.2  # EBPR draws half of its negatives from the exposures
