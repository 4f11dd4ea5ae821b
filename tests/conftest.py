"""Shared fixtures: small random exposure logs and the simulator's ``tiny`` preset, prepared."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reinforcens.backend import set_threads

# tests run in parallel processes on 2 cores: one intra-op thread each avoids oversubscription
set_threads(1)


def random_frame(
    seed: int = 0,
    n_users: int = 40,
    n_items: int = 60,
    max_sessions: int = 8,
    slate: int = 8,
    click_rate: float = 0.25,
) -> pd.DataFrame:
    """A random exposure log (no structure), independent of the simulator."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for s in range(int(rng.integers(1, max_sessions + 1))):
            items = rng.choice(n_items, size=min(slate, n_items), replace=False)
            clicks = rng.random(items.size) < click_rate
            for it, c in zip(items, clicks, strict=True):
                rows.append((f"u{u}", f"i{it}", s, 1000 * s + int(rng.integers(0, 999)), int(c)))
    return pd.DataFrame(rows, columns=["user", "item", "session", "timestamp", "clicked"])


def chance_threshold(data, draws: int = 400) -> float:
    """0.5 + 2 standard errors of the mean list AUC of random scores, estimated by brute force: the
    AUC of ``draws`` random score draws on the validation lists, computed pair by pair in plain Python."""
    rng = np.random.default_rng(0)
    labels, mask = data.valid.labels, data.valid.mask
    means = []
    for _ in range(draws):
        scores = rng.random(labels.shape)
        aucs = []
        for y, m, s in zip(labels, mask, scores, strict=True):
            pos, neg = s[m & y], s[m & ~y]
            if pos.size and neg.size:
                aucs.append(sum(float(p > n) for p in pos for n in neg) / (pos.size * neg.size))
        means.append(sum(aucs) / len(aucs))
    return 0.5 + 2 * float(np.std(means))


@pytest.fixture(scope="session")
def tiny_sim(tmp_path_factory):
    """The ``tiny`` simulator preset written to disk: its directory."""
    from reinforcens.data.simulate import write_simulation

    out = tmp_path_factory.mktemp("sim") / "tiny"
    write_simulation(out, "tiny", seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_prepared(tiny_sim, tmp_path_factory):
    """The ``tiny`` preset prepared (L = 40), loaded from disk (ground truth included)."""
    from reinforcens.data.formats import read_log
    from reinforcens.data.prepared import load_prepared, prepare, save_prepared

    log = read_log(tiny_sim / "log.parquet", "table")
    data = prepare(log, min_sessions=4, list_length=40, seed=0)
    out = tmp_path_factory.mktemp("prep") / "tiny"
    save_prepared(data, out, extra_files={"ground_truth.npz": tiny_sim / "ground_truth.npz"})
    return load_prepared(out)


def assert_trains_and_resumes_exactly(data, cfg, tmp_path, monkeypatch, crash_at: int = 5) -> dict:
    """Train ``cfg`` on ``data`` once uninterrupted and once interrupted in epoch ``crash_at`` then
    resumed; assert the two end alike (test and validation metrics, best epoch, epochs) and return the
    uninterrupted run's metrics."""
    from reinforcens.train import Trainer

    full = Trainer(data, cfg, tmp_path / "full", progress=False).fit()
    calls = {"n": 0}
    original = Trainer.train_epoch

    def crash(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        Trainer(data, cfg, tmp_path / "cut", progress=False).fit()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = Trainer(data, cfg, tmp_path / "cut", progress=False, resume=True).fit()
    for key in ("test.auc", "test.ndcg", "valid.auc", "best_epoch", "epochs"):
        assert resumed[key] == full[key], key
    return full
