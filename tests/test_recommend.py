"""Recommendations and embeddings out of a finished run, against brute-force oracles."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from reinforcens.cli import main
from reinforcens.config import TrainConfig
from reinforcens.errors import ConfigError
from reinforcens.recommend import TrainedRecommender
from reinforcens.train import Trainer


@pytest.fixture(scope="module")
def run(tiny_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "run"
    cfg = TrainConfig.build(sampler="uniform", epochs=3, batch_size=512, record_negatives=0)
    Trainer(tiny_prepared, cfg, out, progress=False).fit()
    return out


def brute_force_top(rec: TrainedRecommender, user: int, k: int, exclude_seen: bool) -> list[tuple]:
    """Score every item one by one, drop training clicks (a Python set), sort by (-score, item)."""
    d = rec.data
    seen = set(d.train_clicks.indices[d.train_clicks.indptr[user] : d.train_clicks.indptr[user + 1]].tolist())
    scored = []
    with torch.no_grad():
        for i in range(d.n_items):
            if exclude_seen and i in seen:
                continue
            s = float(rec.model(torch.tensor([user]), torch.tensor([i])).double())
            scored.append((-s, i))
    return [(d.item_ids[i], -s) for s, i in sorted(scored)[:k]]


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_recommend_is_the_brute_force_top_k_in_raw_ids(run, exclude_seen):
    rec = TrainedRecommender.load(run)
    users = [rec.data.user_ids[u] for u in (0, 5, 17)]
    out = rec.recommend(users, k=7, exclude_seen=exclude_seen)
    assert list(out.columns) == ["user", "item", "score", "rank"]
    for u, raw in zip((0, 5, 17), users, strict=True):
        mine = out[out["user"] == raw].sort_values("rank")
        expected = brute_force_top(rec, u, 7, exclude_seen)
        assert mine["rank"].tolist() == list(range(1, 8))
        assert mine["item"].tolist() == [i for i, _ in expected]
        assert mine["score"].to_numpy() == pytest.approx([s for _, s in expected], rel=1e-5)


def test_recommend_all_users_excludes_every_training_click(run):
    rec = TrainedRecommender.load(run)
    out = rec.recommend(k=5)
    d = rec.data
    assert out["user"].nunique() == d.n_users and len(out) == 5 * d.n_users
    ptr, idx = d.train_clicks.indptr, d.train_clicks.indices
    clicked = {(d.user_ids[u], d.item_ids[i]) for u in range(d.n_users) for i in idx[ptr[u] : ptr[u + 1]]}
    assert not clicked & set(zip(out["user"], out["item"], strict=True))


def test_unknown_ids_are_a_one_line_error_naming_the_first(run, tmp_path, capsys):
    rec = TrainedRecommender.load(run)
    with pytest.raises(ConfigError, match="1 unknown user id.*'nobody'"):
        rec.recommend([rec.data.user_ids[0], "nobody"])
    ids = tmp_path / "users.txt"
    ids.write_text("nobody\n")
    out = str(tmp_path / "r.parquet")
    assert main(["recommend", "--run", str(run), "--users", str(ids), "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nobody" in err[0]
    assert not (tmp_path / "r.parquet").exists()


def test_recommend_cli_writes_parquet(run, tmp_path):
    rec = TrainedRecommender.load(run)
    ids = tmp_path / "users.txt"
    ids.write_text(f"{rec.data.user_ids[3]}\n\n{rec.data.user_ids[4]}\n")
    out = tmp_path / "recs.parquet"
    assert main(["recommend", "--run", str(run), "--users", str(ids), "--k", "4", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert len(table) == 8 and set(table["rank"]) == {1, 2, 3, 4}
    expected = rec.recommend([rec.data.user_ids[3], rec.data.user_ids[4]], k=4)
    assert table["item"].astype(str).tolist() == expected["item"].astype(str).tolist()


def test_an_unfinished_run_is_refused(tiny_prepared, tmp_path, monkeypatch):
    cfg = TrainConfig.build(sampler="uniform", epochs=3, batch_size=512)
    calls = {"n": 0}
    original = Trainer.train_epoch

    def stop(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", stop)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_prepared, cfg, tmp_path / "r", progress=False).fit()
    with pytest.raises(Exception, match="metrics.json"):
        TrainedRecommender.load(tmp_path / "r")


def test_similar_items_are_the_brute_force_cosine_neighbours(run):
    rec = TrainedRecommender.load(run)
    m = rec.model
    vec = [(m.item.weight[i] * m.h).double().tolist() for i in range(m.n_items)]

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))

    raw = rec.data.item_ids[[2, 9]]
    out = rec.similar_items(raw, k=3)
    for i, r in zip((2, 9), raw, strict=True):
        expected = sorted((-cos(vec[i], vec[j]), j) for j in range(m.n_items) if j != i)[:3]
        mine = out[out["item"] == r].sort_values("rank")
        assert mine["similar"].tolist() == [rec.data.item_ids[j] for _, j in expected]
        assert mine["score"].to_numpy() == pytest.approx([-c for c, _ in expected])


def test_export_reproduces_the_scores_and_ids(run, tmp_path):
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "x")]) == 0
    x = tmp_path / "x"
    p, q, h = (np.load(x / f"{n}.npy") for n in ("user_factors", "item_factors", "h"))
    meta = json.loads((x / "model.json").read_text())
    rec = TrainedRecommender.load(run)
    assert meta["dim"] == p.shape[1] == 32 and meta["config"]["sampler"] == "uniform"
    users = pd.read_parquet(x / "user_ids.parquet")["raw_id"].to_numpy()
    items = pd.read_parquet(x / "item_ids.parquet")["raw_id"].to_numpy()
    assert (users == rec.data.user_ids).all() and (items == rec.data.item_ids).all()
    with torch.no_grad():
        scores = rec.model.score_all(torch.arange(4)).numpy()
    assert (p[:4] * h) @ q.T == pytest.approx(scores, rel=1e-5, abs=1e-6)
