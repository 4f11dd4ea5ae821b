"""``reinforcens tune`` on Optuna: equal budgets, no test metric read, the grid sampler, repeated
suggestions, a killed tune resumed, pruning, and studies keyed by what defines the search.

Runs use the simulator's ``tiny`` preset for 1 to 6 epochs: they check the machinery, not quality.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from reinforcens import backend as backend_module
from reinforcens.cli import main
from reinforcens.errors import ConfigError
from reinforcens.experiments import studies as studies_module
from reinforcens.experiments.runner import run_status
from reinforcens.experiments.studies import _Tuner
from reinforcens.experiments.tune import (
    JOURNAL,
    PRUNED_ATTR,
    PruningReporter,
    Range,
    TrialPrunedAt,
    method_space,
    parse_grid_overrides,
    parse_ranges,
    tune,
)

FAST_VALUES = {"epochs": 2, "batch_size": 1024}
#: a 2 x 2 grid of the common keys, for searches that cover it
SMALL_GRID = {"lr": [0.01, 0.05], "l2": [1e-5, 1e-4]}


def _studies(out: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """Every study of a tune directory's journal with its trials."""
    storage = JournalStorage(JournalFileBackend(str(out / JOURNAL)))
    return {
        s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials(deepcopy=False)
        for s in optuna.get_all_study_summaries(storage)
    }


def _valid_auc(run_dir: str) -> float:
    return json.loads((Path(run_dir) / "metrics.json").read_text())["valid.auc"]


def _counted(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def _distinct(trials: list[optuna.trial.FrozenTrial]) -> bool:
    return len({json.dumps(t.params, sort_keys=True) for t in trials}) == len(trials)


class _NoTestMetrics(dict):
    """A run's metrics whose test entries are NaN and raise when read by key."""

    def __getitem__(self, key: str) -> Any:
        assert not str(key).startswith("test."), f"tune read {key}"
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        assert not str(key).startswith("test."), f"tune read {key}"
        return super().get(key, default)


def test_every_method_gets_the_same_budget_and_no_test_metric_is_read(tiny_prepared, tmp_path, monkeypatch):
    real = studies_module.run_specs

    def garbled(*args: Any, then: Any = None, **kwargs: Any) -> dict[str, dict[str, Any]]:
        def hidden(r: dict[str, Any]) -> Any:  # what the tune is told, as each result arrives
            met = r["metrics"]
            r["metrics"] = _NoTestMetrics({k: math.nan if k[:5] == "test." else v for k, v in met.items()})
            return then(r) if then is not None else None

        return real(*args, then=hidden, **kwargs)

    monkeypatch.setattr(studies_module, "run_specs", garbled)
    out = tmp_path / "tune"
    methods = ["uniform", "rns-es"]
    tuned = tune(tiny_prepared.path, methods, out, trials=3, base=FAST_VALUES, jobs=1, progress=False)
    assert set(tuned["methods"]) == {"uniform", "rns-es"} and tuned["sampler"] == "tpe"
    studies = _studies(out)
    assert len(studies) == 2
    for name, entry in tuned["methods"].items():
        trials = studies[entry["study"]]
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        assert entry["trials"] == len(done) == 3 and _distinct(done) and entry["study"].startswith(name)
        # the choice is the best validation AUC of the run directories
        aucs = {t.user_attrs["run_dir"]: _valid_auc(t.user_attrs["run_dir"]) for t in done}
        assert entry["run_dir"] == max(aucs, key=aucs.get) and entry["valid_auc"] == max(aucs.values())
        assert all(t.value == aucs[t.user_attrs["run_dir"]] for t in done)
        assert all(t.intermediate_values for t in done)  # the learning curves, from epochs.jsonl
    # the learned sampler started from the best BPR-GMF trial
    best_uniform = Path(tuned["methods"]["uniform"]["run_dir"])
    for d in out.glob("runs/rns-es-*/trial-seed0"):
        assert json.loads((d / "config.json").read_text())["pretrained"] == str(best_uniform / "best.pt")
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("method,trial,state,") and len(rows) == 1 + 6
    assert all(",COMPLETE," in r for r in rows[1:])


def test_grid_sampler_covers_the_grid_and_a_changed_base_starts_a_study(tiny_prepared, tmp_path, capsys):
    out = tmp_path / "tune"
    args = ["tune", "--data", str(tiny_prepared.path), "--out", str(out), "--methods", "uniform"]
    args += ["--grid", "lr=0.01,0.05", "--grid", "l2=1e-5,1e-4", "--epochs", "1", "--batch-size", "1024"]
    args += ["--jobs", "1", "--quiet", "--sampler", "grid"]
    assert main([*args, "--trials", "3"]) == 0
    assert "BPR-GMF" in capsys.readouterr().out
    (name, trials), = _studies(out).items()
    assert len(trials) == 3 and _distinct(trials) and all(t.state == TrialState.COMPLETE for t in trials)
    # a bigger budget continues the study up to the whole grid, no more
    assert main([*args, "--trials", "10"]) == 0
    (name2, trials), = _studies(out).items()
    assert name2 == name and len(trials) == 4 and _distinct(trials)
    grid = {(a, b) for a in SMALL_GRID["lr"] for b in SMALL_GRID["l2"]}
    assert {(t.params["lr"], t.params["l2"]) for t in trials} == grid
    tuned = json.loads((out / "tuned.json").read_text())
    assert tuned["methods"]["uniform"]["trials"] == tuned["methods"]["uniform"]["grid_size"] == 4
    # a changed base setting starts another study (its runs are others too)
    assert main([*args, "--trials", "10", "--epochs", "2"]) == 0
    studies = _studies(out)
    assert len(studies) == 2 and all(len(t) == 4 for t in studies.values())
    assert json.loads((out / "tuned.json").read_text())["methods"]["uniform"]["study"] != name
    assert len(list(out.glob("runs/uniform-*"))) == 8


def test_repeated_suggestions_cost_no_budget_and_leave_no_trial(tmp_path, monkeypatch):
    """TPE on a 25-setting grid repeats itself once it has settled: the repeats are asked again (then
    replaced by an untried setting), the study holds exactly its budget of distinct trials (no training
    here: the values are made up)."""
    tuner = _Tuner(
        "unused", tmp_path, tmp_path / JOURNAL, 0, {}, 24, "tpe", None, "fp", 1, False, "local", None
    )
    s = tuner.open("uniform", method_space("uniform"))
    assert (s.budget, s.kind, s.remaining) == (24, "tpe", 24)
    untried = []
    real = studies_module._untried
    monkeypatch.setattr(studies_module, "_untried", lambda *a: untried.append(1) or real(*a))
    for _ in range(24):
        t = tuner.ask(s)
        s.study.tell(t.number, -abs(math.log10(t.params["lr"]) + 3) - abs(math.log10(t.params["l2"]) + 5))
    trials = s.study.get_trials()
    assert len(trials) == 24 and _distinct(trials) and all(t.state == TrialState.COMPLETE for t in trials)
    assert untried  # the sampler repeated itself
    # a budget that covers the space uses the grid sampler whatever was asked for
    tuner.trials = 30
    assert tuner.open("uniform", method_space("uniform")).kind == "grid"
    assert tuner.open("rns", method_space("rns", ranges={"lr": Range(1e-4, 0.1, log=True)})).budget == 30


def test_a_budget_covering_a_space_with_an_integer_range_asks_distinct_settings(tmp_path):
    """A finite space with an integer range, all of it in the budget: the grid sampler (which takes value
    lists) is not switched to, and every setting is asked once. It once crashed at the first ask."""
    tuner = _Tuner(
        "unused", tmp_path, tmp_path / JOURNAL, 0, {}, 6, "tpe", None, "fp", 1, False, "local", None
    )
    space = method_space("kbgan", {"lr": [0.01], "l2": [1e-4, 1e-3]}, parse_ranges(["n_candidates=10:12"]))
    s = tuner.open("kbgan", space)
    assert (s.budget, s.kind) == (6, "tpe")
    asked = []
    for _ in range(6):
        t = tuner.ask(s)
        s.study.tell(t.number, 0.5)
        asked.append((t.params["l2"], t.params["n_candidates"]))
    assert sorted(asked) == sorted((l2, n) for l2 in (1e-4, 1e-3) for n in (10, 11, 12))


def test_bad_search_arguments_are_one_line_errors(tiny_prepared, tmp_path):
    with pytest.raises(ConfigError, match=r"--range lr: LO must be below HI"):
        parse_ranges(["lr=0.1:0.01"])
    with pytest.raises(ConfigError, match=r"--range lr: a log range needs LO > 0"):
        parse_ranges(["lr=0:0.1:log"])
    with pytest.raises(ConfigError, match=r"--range n_candidates: bounds must be whole numbers"):
        parse_ranges(["n_candidates=10.5:20"])
    with pytest.raises(ConfigError, match=r"--range: unknown key\(s\) gamma"):
        parse_ranges(["gamma=1:2"])
    with pytest.raises(ConfigError, match=r"--range lr: also given values with --grid"):
        parse_ranges(["lr=1e-4:1e-1"], parse_grid_overrides(["lr=0.1"]))
    assert parse_ranges(["n_candidates=10:150", "lr=1e-4:1e-1:log"]) == {
        "n_candidates": Range(10, 150, False, True),
        "lr": Range(1e-4, 1e-1, True, False),
    }
    with pytest.raises(ConfigError, match=r"--sampler grid: --range lr is not a grid"):
        tune(tiny_prepared.path, ["uniform"], tmp_path, sampler="grid", ranges={"lr": Range(1e-4, 0.1)})
    with pytest.raises(ConfigError, match=r"--sampler must be one of tpe, grid, random"):
        tune(tiny_prepared.path, ["uniform"], tmp_path, sampler="cmaes")
    assert main(["tune", "--data", str(tiny_prepared.path), "--out", str(tmp_path), "--range", "lr=1"]) == 2


def _poll_journal(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> tuple[int, dict[str, Any]]:
    """Wait until a study in the journal has 2 complete trials and a running one with its full setting:
    that trial's number and setting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the tune ended first: {proc.stderr.read().decode()[-2000:]}"
        if path.is_file():
            for trials in _studies(path.parent).values():
                running = [t for t in trials if t.state == TrialState.RUNNING and len(t.params) == 2]
                if sum(t.state == TrialState.COMPLETE for t in trials) >= 2 and running:
                    return running[0].number, running[0].params
        time.sleep(0.05)
    raise AssertionError("the tune did not get to its third trial in time")


def test_killed_tune_resumes_with_the_exact_budget_and_no_repeated_trial(tiny_prepared, tmp_path):
    out = tmp_path / "tune"
    cmd = [sys.executable, "-m", "reinforcens", "tune", "--data", str(tiny_prepared.path), "--out", str(out)]
    cmd += ["--methods", "uniform", "--trials", "4", "--epochs", "6", "--batch-size", "1024", "--jobs", "1"]
    proc = subprocess.Popen([*cmd, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        number, params = _poll_journal(out / JOURNAL, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    (name, trials), = _studies(out).items()
    assert any(t.state == TrialState.RUNNING for t in trials)
    tuned = tune(
        tiny_prepared.path, ["uniform"], out, trials=4, base={"epochs": 6, "batch_size": 1024}, jobs=1,
        progress=False,
    )
    (name2, trials), = _studies(out).items()
    assert name2 == name == tuned["methods"]["uniform"]["study"]
    assert [t.state for t in trials if t.state != TrialState.FAIL] == [TrialState.COMPLETE] * 4
    assert _distinct(_counted(trials)) and tuned["methods"]["uniform"]["trials"] == 4
    # the trial the kill left running was finished with its own setting
    assert trials[number].state == TrialState.COMPLETE and trials[number].params == params
    assert len(list(out.glob("runs/uniform-*/trial-seed0/metrics.json"))) == 4


class PruneOdd(optuna.pruners.BasePruner):
    """Prunes the trials with an odd number at their first report (a deterministic stand-in)."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number % 2 == 1


def test_pruned_trials_are_recorded_and_their_runs_never_read_as_finished(
    tiny_prepared, tmp_path, monkeypatch
):
    out = tmp_path / "tune"
    kwargs: dict[str, Any] = {"base": {"epochs": 3, "batch_size": 1024}, "progress": False}
    statuses: list[tuple[str, str]] = []
    real = studies_module.run_specs

    def recorded(*args: Any, then: Any, **kw: Any) -> dict[str, dict[str, Any]]:
        def seen(r: dict[str, Any]) -> Any:
            statuses.append((r["run_dir"], r["status"]))
            return then(r)

        return real(*args, then=seen, **kw)

    monkeypatch.setattr(studies_module, "run_specs", recorded)
    # two worker processes: a pruned run is returned as stopped, the other run of its round goes on
    tuned = tune(tiny_prepared.path, ["uniform"], out, trials=4, jobs=2, prune=PruneOdd(), **kwargs)
    assert sorted(st for _, st in statuses) == ["stopped", "stopped", "trained", "trained"]
    assert len({d for d, _ in statuses}) == 4  # nothing stopped and run again
    (name, trials), = _studies(out).items()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED] * 2 and _distinct(trials)
    entry = tuned["methods"]["uniform"]
    assert entry["trials"] == 4 and entry["pruned"] == 2 and entry["trial"] in (0, 2)
    assert tuned["prune"]["class"] == "PruneOdd"
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    for t in pruned:
        assert t.user_attrs[PRUNED_ATTR] == 1 and list(t.intermediate_values) == [1]
        assert run_status(t.user_attrs["run_dir"]) == "resumed"  # unfinished, resumable
    rows = [r.split(",") for r in (out / "trials.csv").read_text().splitlines()]
    states = [r[rows[0].index("state")] for r in rows[1:]]
    assert states == ["COMPLETE", "PRUNED"] * 2
    # rerun: nothing to do, the pruned runs stay unfinished
    again = tune(tiny_prepared.path, ["uniform"], out, trials=4, jobs=1, prune=PruneOdd(), **kwargs)
    assert again == tuned and len(_studies(out)[name]) == 4
    assert all(run_status(t.user_attrs["run_dir"]) == "resumed" for t in pruned)
    # a trial of another study with a pruned setting resumes that run and finishes it
    p = pruned[0].params
    one = {"lr": [p["lr"]], "l2": [p["l2"]]}
    other = tune(tiny_prepared.path, ["uniform"], out, trials=1, jobs=1, grid=one, **kwargs)
    assert other["methods"]["uniform"]["run_dir"] == pruned[0].user_attrs["run_dir"]
    assert run_status(pruned[0].user_attrs["run_dir"]) == "cached"


def _simulated_runs(duration: Any, record: dict[str, Any]) -> Any:
    """A stand-in for ``run_specs`` on a virtual clock: ``jobs`` slots, a run of ``spec`` takes
    ``duration(spec)``, results (a validation AUC that is a function of the setting) arrive in order of
    their end and go to ``then``, whose runs join the queue. ``record`` gets the end time and the most
    runs at once."""

    def run_specs(specs: Any, data: Any, jobs: int = 1, then: Any = None, **kwargs: Any) -> dict[str, Any]:
        clock, order = 0.0, itertools.count()
        queue, going, results = deque(specs), [], {}
        while queue or going:
            while queue and len(going) < jobs:
                spec = queue.popleft()
                heapq.heappush(going, (clock + duration(spec), next(order), spec))
            record["most"] = max(record.get("most", 0), len(going))
            clock, _, spec = heapq.heappop(going)
            digest = hashlib.sha1(json.dumps(spec.values, sort_keys=True).encode()).hexdigest()
            auc = int(digest[:6], 16) / 2**24
            run = Path(spec.run_dir)
            run.mkdir(parents=True, exist_ok=True)
            (run / "epochs.jsonl").write_text(json.dumps({"epoch": 1, "valid_auc": auc}) + "\n")
            metrics = {"valid.auc": auc, "best_epoch": 1}
            result = {"status": "trained", "run_dir": spec.run_dir, "metrics": metrics}
            results[spec.run_dir] = result
            queue.extend((then(result) or ()) if then is not None else ())
        record["end"] = clock
        return results

    return run_specs


def test_a_slow_trial_does_not_hold_back_the_other_studies(tiny_prepared, tmp_path, monkeypatch):
    """Defect: a tune ran its trials in batches of --jobs (one trial of each of two studies) and
    waited for the slowest run of a batch before asking again: with uniform's runs 4 times DNS's, 3
    trials each on 2 slots took 3 x 4 = 12 run lengths, one slot idle for 3 of every 4. Their
    settings do not depend on the results (TPE's first trials are random), so all six are queued at
    once, in turn: done at 9."""
    record: dict[str, Any] = {}
    monkeypatch.setattr(
        studies_module, "run_specs", _simulated_runs(lambda s: 4.0 if s.key == "uniform" else 1.0, record)
    )
    kwargs: dict[str, Any] = {"base": FAST_VALUES, "grid": SMALL_GRID, "progress": False}
    tuned = tune(tiny_prepared.path, ["uniform", "dns"], tmp_path / "t", trials=3, jobs=2, **kwargs)
    assert [tuned["methods"][m]["trials"] for m in ("uniform", "dns")] == [3, 3]
    assert record["most"] == 2 and record["end"] == 9.0


def test_a_studys_random_trials_never_wait_for_each_other(tiny_prepared, tmp_path, monkeypatch):
    """TPE's first trials are random: a study asks them all at once, so its slow first trial (3 run
    lengths) runs beside the three others on 2 slots (done at 3), not in rounds of 2 (done at 4)."""
    record: dict[str, Any] = {}
    order = itertools.count()
    duration = _simulated_runs(lambda spec: 3.0 if next(order) == 0 else 1.0, record)
    monkeypatch.setattr(studies_module, "run_specs", duration)
    kwargs: dict[str, Any] = {"base": FAST_VALUES, "grid": SMALL_GRID, "progress": False}
    tuned = tune(tiny_prepared.path, ["softmax"], tmp_path / "t", trials=4, jobs=2, **kwargs)
    assert tuned["methods"]["softmax"]["trials"] == 4 and record["end"] == 3.0


def test_a_study_that_runs_out_of_trials_leaves_its_workers_to_the_others(
    tiny_prepared, tmp_path, monkeypatch
):
    """Defect: with rounds of a fixed ``ceil(jobs / studies)``, once one study had asked its budget its
    share of the workers idled to the end. uniform's 4-setting grid beside 24 Softmax trials, 4 jobs,
    runs of one length: the 14 trials whose settings do not depend on results (the grid, TPE's 10
    random ones) at once (4 lengths, the last with 2 slots idle: TPE's first round waits for all its
    random trials), then Softmax's TPE rounds of 4, not 2: done at 8, not 11."""
    record: dict[str, Any] = {}
    monkeypatch.setattr(studies_module, "run_specs", _simulated_runs(lambda spec: 1.0, record))
    kwargs: dict[str, Any] = {"base": FAST_VALUES, "grid": SMALL_GRID, "progress": False}
    tuned = tune(tiny_prepared.path, ["uniform", "softmax"], tmp_path / "t", trials=24, jobs=4, **kwargs)
    assert tuned["methods"]["uniform"]["trials"] == 4 and tuned["methods"]["softmax"]["trials"] == 24
    assert record["most"] == 4 and record["end"] == 8.0


def test_a_studys_proposals_do_not_depend_on_how_long_the_other_studies_take(
    tiny_prepared, tmp_path, monkeypatch
):
    """14 TPE trials per study (past TPE's 10 random ones, so the proposals follow the values told):
    the same proposals whether every run takes as long, or Softmax's runs take 7 times DNS(M,N)'s
    and each run its own length."""
    studies = []
    for name, duration in (
        ("even", lambda spec: 1.0),
        ("uneven", lambda spec: (7.0 if spec.key == "softmax" else 1.0) * (1 + len(spec.run_dir) % 5)),
    ):
        monkeypatch.setattr(studies_module, "run_specs", _simulated_runs(duration, {}))
        kwargs: dict[str, Any] = {"base": FAST_VALUES, "grid": SMALL_GRID, "progress": False}
        tune(tiny_prepared.path, ["softmax", "dns-mn"], tmp_path / name, trials=14, jobs=3, **kwargs)
        found = _studies(tmp_path / name)
        studies.append({n.split("-")[0]: [t.params for t in ts] for n, ts in found.items()})
    assert studies[0] == studies[1] and all(len(v) == 14 for v in studies[0].values())


def test_pruning_reporter_pickles_reports_and_spares_the_last_epoch(tmp_path):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / JOURNAL)))
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.ask()
    trial = study.ask()  # number 1: PruneOdd prunes it
    hook = PruningReporter(str(tmp_path / JOURNAL), "s", 1, trial._trial_id, PruneOdd(), 3)
    hook = pickle.loads(pickle.dumps(hook))
    hook(3, {"auc": 0.6, "ndcg": 0.4})  # the last epoch: reported, not pruned
    hook(1, {"auc": 0.6, "ndcg": 0.4, "final": 1.0})  # an early-stopped run's end: not pruned either
    with pytest.raises(TrialPrunedAt) as err:
        hook(2, {"auc": 0.5, "ndcg": 0.3})
    exc = pickle.loads(pickle.dumps(err.value))  # it reaches the tune from a worker process
    assert (exc.study_name, exc.number, exc.epoch) == ("s", 1, 2) and "pruned at epoch 2" in str(exc)
    frozen = study.get_trials()[1]
    assert frozen.intermediate_values == {3: 0.6, 1: 0.6, 2: 0.5} and frozen.user_attrs[PRUNED_ATTR] == 2


def test_a_tune_on_ray_asks_its_jobs_of_every_call(tmp_path):
    """The first call of a tune sizes the local Ray it starts (which later calls share): every call
    asks for the tune's --jobs on Ray, not its number of runs (once 1, for the pretraining run); the
    local engine starts no more worker processes than runs."""
    def tuner(engine: str) -> _Tuner:
        return _Tuner(
            "unused", tmp_path, tmp_path / JOURNAL, 0, {}, 4, "tpe", None, "fp", 4, False, engine, None
        )

    assert [tuner("ray")._jobs(n) for n in (1, 2, 8)] == [4, 4, 4]
    assert [tuner("local")._jobs(n) for n in (1, 2, 8)] == [1, 2, 4]


def test_integer_sampler_options_get_integer_ranges_and_grid_values():
    """Every sampler option declared ``int`` (read here from the configs' annotations) is searched in
    whole numbers: a float there fails the sampler's validation (AHNS's ``p``, RecNS's ``n_negs``)."""
    from reinforcens.samplers import SAMPLERS

    declared = {
        key
        for cls in SAMPLERS.values()
        for key, field in cls.Config.model_fields.items()
        if field.annotation is int
    }
    assert {"p", "n_negs", "top_m", "n_candidates"} <= declared
    for key in sorted(declared & {"p", "n_negs", "top_m", "memory_size"}):
        lo, hi = (-4, -1) if key == "p" else (2, 9)
        assert parse_ranges([f"{key}={lo}:{hi}"])[key] == Range(lo, hi, False, True), key
        assert parse_grid_overrides([f"{key}={lo},{hi}"])[key] == [lo, hi], key
        assert all(type(v) is int for v in parse_grid_overrides([f"{key}={lo},{hi}"])[key]), key


def test_compare_adopts_each_tuned_best_trial_as_its_run_of_the_tunes_seed(
    tiny_prepared, tmp_path, monkeypatch
):
    """A compare after a tune trained each tuned method's seed-0 run again, though the best trial is
    that run (the same method, values, data and seed). It is copied in instead: the same metrics as
    training it afresh. Trained instead: a learned sampler (pretrained by the compare's own run), a
    trial that does not verify, one computed with another backend."""
    from reinforcens.experiments.compare import compare

    kwargs: dict[str, Any] = {"base": FAST_VALUES, "grid": SMALL_GRID, "progress": False, "jobs": 1}
    tuned = tune(tiny_prepared.path, ["uniform", "dns", "rns-es"], tmp_path / "tune", trials=2, **kwargs)
    methods = ["uniform", "dns", "rns-es"]
    common: dict[str, Any] = {"seeds": [0, 1], "reference": None, "base": FAST_VALUES, "jobs": 1}
    result = compare(tiny_prepared.path, methods, out=tmp_path / "cmp", tuned=tuned, progress=False, **common)
    status = {(Path(d).parent.name.rsplit("-", 1)[0], Path(d).name): s for d, s in result.status.items()}
    assert status[("uniform", "seed0")] == status[("dns", "seed0")] == "cached"
    trained = [status[("uniform", "seed1")], status[("dns", "seed1")], status[("rns-es", "seed0")]]
    assert trained == ["trained"] * 3
    for m in ("uniform", "dns"):
        trial = Path(tuned["methods"][m]["run_dir"])
        assert (tmp_path / "cmp" / "runs" / trial.parent.name / "seed0" / "best.pt").is_file()  # its key
    # the oracle: the same runs trained afresh (a tune result without its trials' directories)
    bare = json.loads(json.dumps(tuned))
    for entry in bare["methods"].values():
        entry["run_dir"] = None
    fresh = compare(tiny_prepared.path, methods, out=tmp_path / "fresh", tuned=bare, progress=False, **common)
    assert set(fresh.status.values()) == {"trained"}
    ignore = ["seconds", "train_seconds_per_epoch", "run_dir"]
    pd.testing.assert_frame_equal(
        result.rows.drop(columns=ignore).reset_index(drop=True),
        fresh.rows.drop(columns=ignore).reset_index(drop=True),
    )
    # a trial whose config was edited does not verify: not adopted, the run is trained
    dns_trial = Path(tuned["methods"]["dns"]["run_dir"])
    config = json.loads((dns_trial / "config.json").read_text())
    config["lr"] = config["lr"] * 2
    (dns_trial / "config.json").write_text(json.dumps(config))
    again = compare(tiny_prepared.path, methods, out=tmp_path / "b", tuned=tuned, progress=False, **common)
    dns_status = {Path(d).name: s for d, s in again.status.items() if "/dns-" in d}
    assert dns_status == {"seed0": "trained", "seed1": "trained"}
    assert not list((tmp_path / "cmp" / "runs").glob("*/.*adopting*"))
    # computed with another backend (auto resolves to torch where numba is missing): trained, no error
    monkeypatch.setattr(backend_module, "numba_available", lambda: False)
    other = compare(
        tiny_prepared.path, ["uniform"], out=tmp_path / "e", tuned=tuned, progress=False, **common
    )
    assert set(other.status.values()) == {"trained"}
    monkeypatch.undo()
    # a learned sampler tuned without uniform: its trial's pretraining has the compare's key, still trained
    alone = tune(tiny_prepared.path, ["rns-es"], tmp_path / "tune2", trials=1, **kwargs)
    res = compare(tiny_prepared.path, ["rns-es"], out=tmp_path / "d", tuned=alone, progress=False, **common)
    assert {Path(d).name: s for d, s in res.status.items() if "/rns-es-" in d}["seed0"] == "trained"
