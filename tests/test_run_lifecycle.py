"""The run lifecycle: interruption and resumption, one writer per run, the data a run belongs to.

Each test named after a defect failed before its fix. An interruption is simulated in-process by raising
right after an epoch's files are written: every file is written atomically, so the directory is then
exactly what a ``kill -9`` at that moment leaves (the lock is released in both cases; the one real
``kill -9`` below checks that).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from reinforcens import cli
from reinforcens.config import TrainConfig
from reinforcens.data.formats import read_log
from reinforcens.data.prepared import load_prepared, prepare, save_prepared
from reinforcens.errors import ConfigError, DataError
from reinforcens.train import Trainer

FAST = dict(batch_size=512, pretrain_epochs=3, record_negatives=50)
#: metrics that measure time, not results
TIMING = ("seconds", "train_seconds_per_epoch")


class Interrupted(Exception):
    """Stands for a kill: raised right after the files of an epoch are on disk."""


def interrupt_after(monkeypatch, when):
    """Make :meth:`Trainer._save_epoch` raise :class:`Interrupted` after the save for which
    ``when(stage_dir, epoch, stopped)`` is true."""
    original = Trainer._save_epoch

    def save(self, stage_dir, model, optimizer, sampler, gens, epoch, *args, stopped=False, **kw):
        original(self, stage_dir, model, optimizer, sampler, gens, epoch, *args, stopped=stopped, **kw)
        if when(stage_dir, epoch, stopped):
            raise Interrupted

    monkeypatch.setattr(Trainer, "_save_epoch", save)
    return lambda: monkeypatch.setattr(Trainer, "_save_epoch", original)


def results(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def check_resume_equals_uninterrupted(data, cfg, tmp_path, monkeypatch, when):
    full = Trainer(data, cfg, tmp_path / "full", progress=False).fit()
    restore = interrupt_after(monkeypatch, when)
    with pytest.raises(Interrupted):
        Trainer(data, cfg, tmp_path / "cut", progress=False).fit()
    restore()
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = Trainer(data, cfg, tmp_path / "cut", progress=False, resume=True).fit()
    assert results(resumed) == results(full)
    a = torch.load(tmp_path / "full" / "best.pt", weights_only=True)["recommender"]
    b = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)["recommender"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    full_epochs = (tmp_path / "full" / "epochs.jsonl").read_text().splitlines()
    cut_epochs = (tmp_path / "cut" / "epochs.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(x).items() if "seconds" not in k} for x in full_epochs]
    assert strip == [{k: v for k, v in json.loads(x).items() if "seconds" not in k} for x in cut_epochs]
    return full


# ----------------------------------------------------------------------------- interruption
def test_resume_after_the_final_checkpoint_keeps_epochs_and_negatives(tiny_prepared, tmp_path, monkeypatch):
    # the stage stops early (patience 1) long before epoch 60; the kill comes after its last save
    cfg = TrainConfig.build(sampler="uniform", epochs=60, patience=1, min_steps=0, **FAST)
    full = check_resume_equals_uninterrupted(
        tiny_prepared, cfg, tmp_path, monkeypatch, lambda d, e, stopped: stopped
    )
    assert full["epochs"] < 60
    assert {"negatives.false_negative_rate", "negatives.mean_true_prob"} <= set(full)


def test_resume_after_an_early_stop_of_pretraining(tiny_prepared, tmp_path, monkeypatch):
    cfg = TrainConfig.build(sampler="rns", epochs=2, pretrain_patience=1, **FAST)
    check_resume_equals_uninterrupted(
        tiny_prepared, cfg, tmp_path, monkeypatch, lambda d, e, stopped: d.name == "pretrain" and stopped
    )


def test_resume_before_the_first_evaluation(tiny_prepared, tmp_path, monkeypatch):
    cfg = TrainConfig.build(sampler="uniform", init="scratch", eval_every=3, epochs=6, **FAST)
    check_resume_equals_uninterrupted(tiny_prepared, cfg, tmp_path, monkeypatch, lambda d, e, s: e == 1)


@pytest.mark.parametrize(
    "values",
    [
        dict(sampler="rns", epochs=2, eval_every=3),
        dict(sampler="dns", init="pretrained", epochs=3, eval_every=2),
    ],
    ids=["rns", "dns-pretrained"],
)
def test_eval_every_with_pretraining_finishes(values, tiny_prepared, tmp_path):
    cfg = TrainConfig.build(**values, **FAST)
    metrics = Trainer(tiny_prepared, cfg, tmp_path / "run", progress=False).fit()
    assert metrics["epochs"] == values["epochs"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "epochs.jsonl").read_text().splitlines()]
    evaluated = [r["epoch"] for r in rows if "valid_auc" in r]
    every = values["eval_every"]
    expected = sorted({e for e in range(1, values["epochs"] + 1) if e % every == 0} | {values["epochs"]})
    assert evaluated == [0, *expected]  # epoch 0: the pretrained state


def test_resume_with_eval_every_and_pretraining(tiny_prepared, tmp_path, monkeypatch):
    cfg = TrainConfig.build(sampler="rns", epochs=4, eval_every=3, **FAST)
    check_resume_equals_uninterrupted(
        tiny_prepared, cfg, tmp_path, monkeypatch, lambda d, e, s: d.name != "pretrain" and e == 1
    )


# ----------------------------------------------------------------------------- one writer
def _hold_lock(directory):
    """A child process that holds ``directory``'s lock until killed; returns it once it holds it."""
    code = (
        "import sys, time\n"
        "from reinforcens.lock import DirectoryLock\n"
        "with DirectoryLock(sys.argv[1]):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_of_a_run_directory_is_refused(tiny_prepared, tmp_path):
    from reinforcens.lock import LockedError

    run = tmp_path / "run"
    cfg = TrainConfig.build(sampler="uniform", epochs=1, **FAST)
    holder = _hold_lock(run)
    try:
        with pytest.raises(LockedError, match=f"in use by another process \\(pid {holder.pid}\\)"):
            Trainer(tiny_prepared, cfg, run, progress=False).fit()
        assert not (run / "config.json").exists()  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    # a killed holder leaves no stale lock
    Trainer(tiny_prepared, cfg, run, progress=False).fit()
    assert (run / "metrics.json").is_file()


def test_two_resumes_of_one_run_do_not_crash_each_other(tiny_prepared, tmp_path):
    """Two ``train --resume`` on one --out: the second is refused with a clear message."""
    data_dir = tmp_path / "prep"
    shutil.copytree(tiny_prepared.path, data_dir)
    args = ["train", "--data", str(data_dir), "--sampler", "uniform", "--out", str(tmp_path / "r"),
            "--epochs", "40", "--patience", "40", "--batch-size", "16", "--quiet", "--resume"]  # fmt: skip
    # batches of 16: the first run takes several times the start-up of the second, even on a loaded machine
    first = subprocess.Popen([sys.executable, "-m", "reinforcens", *args], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "r" / "config.json").is_file():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "reinforcens", *args], capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 2
        assert "in use by another process" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    # the killed one resumes, alone, to the end
    assert cli.main(args) == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["epochs"] == 40


def test_temporary_names_are_unique_and_a_failed_write_keeps_the_target(tmp_path):
    from reinforcens.atomic import atomic_open, atomic_write_text, temporary_sibling

    target = tmp_path / "negatives.npz"
    names = {temporary_sibling(target) for _ in range(100)}
    assert len(names) == 100
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write("half of the new")
        raise RuntimeError
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["negatives.npz"]


# ----------------------------------------------------------------------------- what a run belongs to
def test_resume_refuses_another_backend(tiny_prepared, tmp_path, monkeypatch):
    cfg = TrainConfig.build(sampler="uniform", epochs=3, backend="numba", **FAST)
    restore = interrupt_after(monkeypatch, lambda d, e, s: e == 1)
    with pytest.raises(Interrupted):
        Trainer(tiny_prepared, cfg, tmp_path / "r", progress=False).fit()
    restore()
    other = cfg.model_copy(update={"backend": "torch"})
    with pytest.raises(ConfigError, match="backend 'numba' \\(now 'torch'\\)"):
        Trainer(tiny_prepared, other, tmp_path / "r", progress=False, resume=True).fit()
    # 'auto' resolves to numba on the CPU: the same computation, so it may resume
    auto = cfg.model_copy(update={"backend": "auto"})
    Trainer(tiny_prepared, auto, tmp_path / "r", progress=False, resume=True).fit()


@pytest.fixture(scope="module")
def two_splits(tiny_sim, tmp_path_factory):
    """The tiny log prepared twice with other list seeds: same sizes and ids, other lists."""
    log = read_log(tiny_sim / "log.parquet", "table")
    out = []
    for seed in (0, 1):
        path = tmp_path_factory.mktemp("split") / f"prep{seed}"
        save_prepared(prepare(log, min_sessions=4, list_length=40, seed=seed), path)
        out.append(load_prepared(path))
    assert (out[0].n_users, out[0].n_items) == (out[1].n_users, out[1].n_items)
    assert out[0].fingerprint != out[1].fingerprint
    return out


def test_resume_refuses_other_data_of_the_same_size(two_splits, tmp_path, monkeypatch):
    a, b = two_splits
    cfg = TrainConfig.build(sampler="uniform", epochs=3, **FAST)
    restore = interrupt_after(monkeypatch, lambda d, e, s: e == 1)
    with pytest.raises(Interrupted):
        Trainer(a, cfg, tmp_path / "r", progress=False).fit()
    restore()
    with pytest.raises(ConfigError, match="trained on other data"):
        Trainer(b, cfg, tmp_path / "r", progress=False, resume=True).fit()
    # a copy of the same dataset, elsewhere, is the same data
    moved = tmp_path / "elsewhere" / "prep"
    shutil.copytree(a.path, moved)
    metrics = Trainer(load_prepared(moved), cfg, tmp_path / "r", progress=False, resume=True).fit()
    # and a finished run is only returned for its own data
    assert Trainer(a, cfg, tmp_path / "r", progress=False, resume=True).fit() == metrics
    with pytest.raises(ConfigError, match="trained on other data"):
        Trainer(b, cfg, tmp_path / "r", progress=False, resume=True).fit()


def test_a_pretrained_checkpoint_of_other_data_is_refused(two_splits, tmp_path):
    a, b = two_splits
    Trainer(a, TrainConfig.build(sampler="uniform", epochs=1, **FAST), tmp_path / "u", progress=False).fit()
    cfg = TrainConfig.build(sampler="dns", pretrained=str(tmp_path / "u" / "best.pt"), epochs=1, **FAST)
    with pytest.raises(DataError, match="trained on other data"):
        Trainer(b, cfg, tmp_path / "d", progress=False).fit()


def test_evaluate_run_checks_the_data_against_the_run(two_splits, tiny_prepared, tmp_path, capsys):
    a, b = two_splits
    run = tmp_path / "run"
    Trainer(a, TrainConfig.build(sampler="uniform", epochs=1, **FAST), run, progress=False).fit()
    # other lists over the same id maps: a legitimate evaluation
    assert cli.main(["evaluate", "--run", str(run), "--data", str(b.path), "--json"]) == 0
    # other users and items: refused, not scored out of range
    other = _other_sized(tmp_path)
    assert cli.main(["evaluate", "--run", str(run), "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "is not the data" in err and len(err.strip().splitlines()) == 1


def _other_sized(tmp_path):
    from conftest import random_frame

    from reinforcens.data.log import ExposureLog

    path = tmp_path / "other"
    frame = random_frame(5, n_users=30, n_items=25, max_sessions=7, slate=6, click_rate=0.35)
    save_prepared(prepare(ExposureLog.from_frame(frame), min_sessions=2, list_length=10), path)
    return path


def test_evaluate_run_from_another_folder_finds_its_data(tiny_prepared, tmp_path, monkeypatch):
    """data.json stored --data as given (relative): evaluate --run from elsewhere failed."""
    shutil.copytree(tiny_prepared.path, tmp_path / "a" / "prep")
    monkeypatch.chdir(tmp_path / "a")
    args = ["train", "--data", "prep", "--sampler", "uniform", "--out", "run", "--epochs", "1", "--quiet"]
    assert cli.main(args) == 0
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    assert cli.main(["evaluate", "--run", "../a/run", "--json"]) == 0


def test_out_of_range_list_items_are_refused_not_read(tiny_prepared, tmp_path, capsys):
    from reinforcens.data.split import EvalLists
    from reinforcens.evaluation import evaluate_lists
    from reinforcens.models import GMF, TorchScorer

    # through the Python API: an IndexError, not numbers computed from memory past the table
    model = GMF(tiny_prepared.n_users, tiny_prepared.n_items, 8)
    lists = tiny_prepared.valid
    items = lists.items.copy()
    items[0, 0] = 10**6
    with pytest.raises(IndexError, match="out of range"):
        evaluate_lists(TorchScorer(model), EvalLists(lists.users, items, lists.kind))
    users = lists.users.copy()
    users[0] = tiny_prepared.n_users
    with pytest.raises(IndexError, match="out of range"):
        evaluate_lists(TorchScorer(model), EvalLists(users, lists.items, lists.kind))
    # through the files: valid.npz with an item of 10**6 is refused when the dataset loads
    prep = tmp_path / "prep"
    shutil.copytree(tiny_prepared.path, prep)
    with np.load(prep / "valid.npz") as z:
        arrays = dict(z)
    arrays["items"][0, 0] = 10**6
    np.savez(prep / "valid.npz", **arrays)
    with pytest.raises(DataError, match="valid.npz: items out of range"):
        load_prepared(prep)
    assert cli.main(["evaluate", "--data", str(prep), "--model", "itempop"]) == 2
    assert "valid.npz" in capsys.readouterr().err


def test_a_checkpoint_of_something_else_is_refused(tiny_prepared, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(tiny_prepared, TrainConfig.build(sampler="uniform", epochs=1, **FAST), run, progress=False).fit()
    torch.save({"weights": torch.zeros(3)}, run / "best.pt")
    assert cli.main(["evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert "best.pt" in err and "no key" in err and len(err.strip().splitlines()) == 1
    # last.pt is not a model state either
    args = ["train", "--data", str(tiny_prepared.path), "--sampler", "dns", "--out", str(tmp_path / "d"),
            "--pretrained", str(run / "last.pt"), "--epochs", "1", "--quiet"]  # fmt: skip
    assert cli.main(args) == 2
    assert "last.pt" in capsys.readouterr().err


def test_a_killed_run_releases_its_lock_and_resumes(tiny_prepared, tmp_path):
    data_dir = tmp_path / "prep"
    shutil.copytree(tiny_prepared.path, data_dir)
    args = ["train", "--data", str(data_dir), "--sampler", "uniform", "--out", str(tmp_path / "r"),
            "--epochs", "40", "--patience", "40", "--batch-size", "64"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "reinforcens", *args], stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "train epoch 2:" in line:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    assert not (tmp_path / "r" / "metrics.json").exists()
    assert cli.main([*args, "--quiet", "--resume"]) == 0
    # the resumed run is the uninterrupted one
    full = [*args[:6], str(tmp_path / "full"), *args[7:], "--quiet"]
    assert cli.main(full) == 0
    resumed = json.loads((tmp_path / "r" / "metrics.json").read_text())
    uninterrupted = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert results(resumed) == results(uninterrupted)


@pytest.mark.parametrize("cut", [1, 3])
def test_a_run_interrupted_in_or_after_its_warm_up_resumes_to_the_same_result(tiny_prepared, tmp_path,
                                                                              monkeypatch, cut):  # fmt: skip
    cfg = TrainConfig.build(sampler="rns", epochs=5, eval_every=2, min_steps=0, patience=1,
                            sampler_options={"warmup": 2}, **FAST)  # fmt: skip
    check_resume_equals_uninterrupted(
        tiny_prepared, cfg, tmp_path, monkeypatch, lambda d, e, stopped: d.name != "pretrain" and e == cut
    )
    rows = [json.loads(line) for line in (tmp_path / "full" / "epochs.jsonl").read_text().splitlines()]
    # evaluated: the start, every 2nd epoch after the 2 warm-up epochs, and the last one (unless the
    # stage stopped at epoch 4)
    assert [r["epoch"] for r in rows if "valid_auc" in r] in ([0, 4], [0, 4, 5])


def test_the_stop_rules_wait_for_min_steps(tiny_prepared):
    """A recommender that cannot move (lr 1e-12) has its best at epoch 1; with patience 1 it stops at
    epoch 2, or at the first epoch that completes ``min_steps`` optimizer steps if that is later."""
    steps = math.ceil(tiny_prepared.train_clicks.indices.size / 512)  # minibatches of 512 per epoch
    for min_steps, stop in ((0, 2), (5 * steps, 5), (5 * steps + 1, 6)):
        cfg = TrainConfig.build(sampler="uniform", init="scratch", lr=1e-12, epochs=50, patience=1,
                                min_steps=min_steps, batch_size=512, record_negatives=0)  # fmt: skip
        m = Trainer(tiny_prepared, cfg, progress=False).fit()
        assert (m["best_epoch"], m["epochs"]) == (1, stop), min_steps
