"""The compare table says when a learned method never left its pretrained start (and why it then equals
BPR-GMF to the last digit) and shows each method's best epochs."""

from __future__ import annotations

import json

from conftest import chance_threshold, random_frame

from reinforcens.data.log import ExposureLog
from reinforcens.data.prepared import load_prepared, prepare, save_prepared
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
    assert labels[0].split()[0] == "BPR-GMF" and "†" not in labels[0]
    assert labels[1].startswith("RNS †")
    assert "† RNS: in 2 of 2 seed(s) the learned stage never beat its pretrained start" in res.table
    assert "best epoch" in res.table.splitlines()[0]


def test_a_seed_at_chance_level_and_a_run_ended_by_the_epoch_cap_are_marked(tmp_path):
    log = ExposureLog.from_frame(random_frame(2, n_users=60, n_items=80, max_sessions=8))
    prep = save_prepared(prepare(log, min_sessions=2, list_length=10, seed=0), tmp_path / "prep")
    # a recommender with learning rate 1e-12 keeps its random start: its validation AUC is chance's
    frozen = {"lr": 1e-12, "epochs": 3, "init": "scratch", "batch_size": 1024}
    res = compare(prep, "uniform", 4, tmp_path / "cmp", reference=None, base=frozen, jobs=1,
                  progress=False)  # fmt: skip
    threshold = chance_threshold(load_prepared(prep), draws=200)  # brute force, not the code under test
    expected = int((res.rows["valid_auc"] < threshold).sum())
    entry = res.summary["methods"]["uniform"]
    assert entry["at_chance"] == expected >= 3
    assert ("‡ BPR-GMF: " + f"{expected} of 4 seed(s) ended at chance level") in res.table
    # a learning method with a cap of 3 epochs still improves at its last epoch
    # patience 1 without min_steps: some seeds stop early, the others run to the cap of 4 epochs
    learning = {"epochs": 4, "init": "scratch", "lr": 0.05, "batch_size": 64, "patience": 1, "min_steps": 0}
    res = compare(prep, "uniform", 4, tmp_path / "cmp2", reference=None, base=learning, jobs=1,
                  progress=False)  # fmt: skip
    capped = 0  # the oracle: the epoch log ends at the cap with its best validation AUC
    for run in res.rows["run_dir"]:
        rows = [json.loads(line) for line in open(f"{run}/epochs.jsonl")]
        capped += rows[-1]["epoch"] == 4 and rows[-1]["valid_auc"] == max(r["valid_auc"] for r in rows)
    assert res.summary["methods"]["uniform"]["at_cap"] == capped > 0
    assert f"§ BPR-GMF: {capped} of 4 seed(s) were still improving when the epoch cap" in res.table
