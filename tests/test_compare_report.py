"""The compare table says when a learned method never left its pretrained start (and why it then equals
BPR-GMF to the last digit) and shows each method's best epochs."""

from __future__ import annotations

from conftest import random_frame

from reinforcens.data.log import ExposureLog
from reinforcens.data.prepared import prepare, save_prepared
from reinforcens.experiments.compare import compare

VALUES = {"epochs": 2, "pretrain_epochs": 3, "batch_size": 1024}


def test_a_learned_method_that_never_beat_its_start_is_marked(tmp_path):
    log = ExposureLog.from_frame(random_frame(1, n_users=40, n_items=60, max_sessions=8))
    data = save_prepared(prepare(log, min_sessions=2, list_length=10, seed=0), tmp_path / "prep")
    # RNS with learning rates of 1e-12 cannot move: its best epoch is the pretrained start
    frozen = {"lr": 1e-12, "sampler_options": {"sampler_lr": 1e-12}}
    tuned = {"methods": {"rns": {"values": frozen}}}
    res = compare(data, "uniform,rns", 2, tmp_path / "cmp", reference=None, base=VALUES, tuned=tuned,
                  jobs=1, progress=False)  # fmt: skip
    rows = res.rows.set_index(["method", "seed"])
    for seed in (0, 1):  # the oracle: each seed's RNS row equals its BPR-GMF row, digit for digit
        assert rows.loc[("rns", seed), "best_epoch"] == 0
        assert rows.loc[("rns", seed), "test_auc"] == rows.loc[("uniform", seed), "test_auc"]
    entry = res.summary["methods"]["rns"]
    assert entry["never_beat_start"] == 2 and entry["best_epochs"] == [0, 0]
    assert res.summary["methods"]["uniform"]["never_beat_start"] == 0
    labels = [line.split("|")[1].strip() for line in res.table.splitlines()[2:4]]
    assert labels == ["BPR-GMF", "RNS †"]
    assert "† RNS: in 2 of 2 seed(s) the learned stage never beat its pretrained BPR-GMF start" in res.table
    assert "best epoch" in res.table.splitlines()[0]
