"""The life cycle of the multi-run experiments (compare, tune, ablation, sweep: ``experiments/runner.py``).

- runs are keyed by the prepared dataset's content, and a cached run is reused only if it verifies;
- the worker processes of ``--jobs N`` end with the experiment, however it ends;
- one experiment at a time writes an experiment directory.

The datasets are small random logs (``conftest.random_frame``) and the runs train for 2 epochs; the
tests that kill a compare run it as a real subprocess and watch the process table (``/proc``).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from conftest import random_frame

from reinforcens.cli import main
from reinforcens.config import TrainConfig
from reinforcens.data.log import ExposureLog
from reinforcens.data.prepared import load_prepared, prepare, save_prepared
from reinforcens.evaluation import ItemPop, evaluate
from reinforcens.experiments.compare import ExperimentResult, compare
from reinforcens.train import Trainer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

#: training values of every run here (as flags and as values)
FAST = ["--epochs", "2", "--pretrain-epochs", "2", "--batch-size", "1024", "--jobs", "1", "--quiet"]
VALUES = {"epochs": 2, "pretrain_epochs": 2, "batch_size": 1024}
#: a compare of ItemPop and BPR-GMF on one seed
METHODS = ["--methods", "itempop,uniform", "--reference", "none", "--seeds", "1"]


def _prepare(out: Path, seed: int) -> Path:
    log = ExposureLog.from_frame(random_frame(seed, n_users=40, n_items=60, max_sessions=8))
    save_prepared(prepare(log, min_sessions=2, list_length=10, seed=0), out)
    return out


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> tuple[Path, Path]:
    """Two prepared datasets of the same shape from different random logs."""
    root = tmp_path_factory.mktemp("lifecycle-data")
    return _prepare(root / "a", 1), _prepare(root / "b", 2)


def _fingerprint(data: Path) -> str:
    return json.loads((data / "meta.json").read_text())["fingerprint"]


def _compare(data: Path, out: Path) -> ExperimentResult:
    return compare(data, "itempop,uniform", 1, out, reference=None, base=VALUES, jobs=1, progress=False)


def _expected_test_auc(data: Path) -> dict[str, float]:
    """The test AUC of each method trained directly (no experiment, no run directory)."""
    prepared = load_prepared(data)
    cfg = TrainConfig.build(sampler="uniform", seed=0, **VALUES)
    uniform = Trainer(prepared, cfg, None, progress=False).fit()["test.auc"]
    itempop = evaluate(ItemPop.fit(prepared), prepared)["test"]["auc"]
    return {"itempop": itempop, "uniform": uniform}


def _test_auc(res: ExperimentResult) -> dict[str, float]:
    return dict(zip(res.rows["method"], res.rows["test_auc"], strict=True))


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------- runs keyed by the data
def test_compare_on_other_data_trains_new_runs_beside_the_old(datasets, tmp_path):
    a, b = datasets
    out = tmp_path / "cmp"
    first = _compare(a, out)
    second = _compare(b, out)
    assert sorted(second.status.values()) == ["trained", "trained"]
    assert set(first.status).isdisjoint(second.status)
    assert len(list(out.glob("runs/*/seed0"))) == 4
    for res, data in ((first, a), (second, b)):
        for run_dir in res.status:
            recorded = json.loads((Path(run_dir) / "data.json").read_text())["fingerprint"]
            assert recorded == _fingerprint(data), run_dir
    assert _test_auc(second) == pytest.approx(_expected_test_auc(b), abs=1e-12)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"] == str(b.resolve())
    assert summary["methods"]["uniform"]["test_auc_mean"] == pytest.approx(_test_auc(second)["uniform"])


def test_compare_on_a_copied_dataset_reuses_its_runs(datasets, tmp_path):
    a, _ = datasets
    out = tmp_path / "cmp"
    first = _compare(a, out)
    metrics = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed0/metrics.json")}
    assert len(metrics) == 2
    copy = shutil.copytree(a, tmp_path / "elsewhere" / "a-copy")
    again = _compare(copy, out)
    assert again.status == {d: "cached" for d in first.status}
    assert {p: p.stat().st_mtime_ns for p in metrics} == metrics
    assert _test_auc(again) == _test_auc(first)


@pytest.fixture(scope="module")
def finished(datasets, tmp_path_factory) -> Path:
    """A finished compare of ItemPop and BPR-GMF on dataset a (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "cmp"
    _compare(datasets[0], out)
    return out


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _replace_with_last(path: Path) -> None:
    shutil.copyfile(path.with_name("last.pt"), path)


def _garble(path: Path) -> None:
    path.write_text('{"test.auc": 0.5, ')


@pytest.mark.parametrize(
    ("method", "name", "damage"),
    [
        ("uniform", "best.pt", _truncate),
        ("uniform", "best.pt", _replace_with_last),
        ("uniform", "metrics.json", _garble),
        ("uniform", "config.json", _garble),
        ("uniform", "data.json", _garble),
        ("itempop", "metrics.json", _garble),
        ("itempop", "data.json", _garble),
    ],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_corrupt_cached_run_is_a_one_line_error_naming_the_file(
    datasets, finished, tmp_path, capsys, method: str, name: str, damage: Callable[[Path], None]
):
    out = shutil.copytree(finished, tmp_path / "cmp")
    (run_dir,) = out.glob(f"runs/{method}-*/seed0")
    target = run_dir / name
    damage(target)
    code = main(["compare", "--data", str(datasets[0]), "--out", str(out), *METHODS, *FAST])
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("reinforcens compare: error: ") and str(target.resolve()) in line


# ---------------------------------------------------------------------- workers end with the compare
#: a compare whose BPR-GMF runs train for minutes (its ItemPop runs finish at once)
LONG = ["--methods", "itempop,uniform", "--reference", "none", "--seeds", "2", "--jobs", "2", "--quiet"]
LONG += ["--epochs", "100000", "--patience", "100000", "--eval-every", "1000", "--batch-size", "1024"]


def _processes() -> dict[int, tuple[int, str, int]]:
    """``{pid: (parent pid, state, start time)}`` of every process, from ``/proc/PID/stat``."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        table[int(stat.parent.name)] = (int(fields[1]), fields[0], int(fields[19]))
    return table


def _children(pid: int) -> dict[int, int]:
    """The live children of ``pid``: ``{pid: start time}``."""
    return {p: start for p, (ppid, state, start) in _processes().items() if ppid == pid and state != "Z"}


def _alive(procs: dict[int, int]) -> set[int]:
    """Those of ``procs`` (``{pid: start time}``) still running (a zombie has ended; a reused pid is
    another process)."""
    table = _processes()
    return {p for p, start in procs.items() if p in table and table[p][2] == start and table[p][1] != "Z"}


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"no {what} after {timeout:.0f} s")


@contextmanager
def _running_compare(data: Path, out: Path) -> Iterator[tuple[subprocess.Popen, dict[int, int], Path]]:
    """A ``compare --jobs 2`` subprocess, once both BPR-GMF runs train in its two workers; yields it, the
    children seen (``{pid: start time}``) and its stderr file. Whatever is left of them is killed after."""
    stderr = out.parent / "stderr.txt"
    cmd = [sys.executable, "-m", "reinforcens", "compare", "--data", str(data), "--out", str(out), *LONG]
    seen: dict[int, int] = {}
    with open(stderr, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:

        def training() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"compare ended early ({proc.returncode}): {stderr.read_text()}")
            seen.update(_children(proc.pid))
            workers = [p for p in _alive(seen) if _is_worker(p)]
            started = len(list(out.glob("runs/uniform-*/seed*/last.pt")))
            return len(workers) == 2 and started == 2

        _wait_until(training, 90, "two workers training")
        yield proc, seen, stderr
    finally:
        for pid in [proc.pid, *_alive(seen)]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_killed_compare_leaves_no_worker_behind(datasets, tmp_path):
    with _running_compare(datasets[0], tmp_path / "cmp") as (proc, seen, _):
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        _wait_until(lambda: not _alive(seen), 20, f"end of the workers {sorted(_alive(seen))}")


def test_terminated_compare_stops_its_workers_and_keeps_finished_runs(datasets, tmp_path):
    out = tmp_path / "cmp"
    with _running_compare(datasets[0], out) as (proc, seen, stderr):
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("compare did not stop within 20 s of SIGTERM")
        _wait_until(lambda: not _alive(seen), 20, f"end of the workers {sorted(_alive(seen))}")
    assert code == 143, stderr.read_text()
    assert "reinforcens compare: terminated" in stderr.read_text().splitlines()
    assert len(list(out.glob("runs/itempop-*/seed*/metrics.json"))) == 2  # finished: kept
    assert len(list(out.glob("runs/uniform-*/seed*/last.pt"))) == 2  # interrupted: resumable
    assert not list(out.glob("runs/uniform-*/seed*/metrics.json"))


# ---------------------------------------------------------------------- one experiment per directory
@pytest.fixture
def held_out(tmp_path) -> Iterator[tuple[Path, int]]:
    """An experiment directory whose lock another process holds: the directory and that process's id."""
    out = tmp_path / "out"
    code = (
        "import sys, time\n"
        "from reinforcens.lock import DirectoryLock\n"
        "with DirectoryLock(sys.argv[1], 'experiment'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline().strip() == "held"
        yield out, proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=30)


#: each experiment's arguments besides --data and --out
EXPERIMENTS = {
    "compare": ["compare", "--methods", "uniform", "--reference", "none", "--seeds", "1"],
    "compare-tune": ["compare", "--tune", "--trials", "1", "--methods", "uniform", "--reference", "none"],
    "tune": ["tune", "--methods", "uniform", "--trials", "1"],
    "ablation": ["ablation", "--seeds", "1"],
    "sweep": ["sweep", "--sampler", "uniform", "--param", "lr", "--values", "0.01", "--seeds", "1"],
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_second_experiment_on_one_out_is_refused_in_one_line(datasets, held_out, capsys, experiment):
    out, holder = held_out
    command, *args = EXPERIMENTS[experiment]
    code = main([command, "--data", str(datasets[0]), "--out", str(out), *args, *FAST])
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert "in use by another process" in line and f"pid {holder}" in line and "--resume" not in line
    assert not (out / "runs").exists() and not (out / "tune").exists()


def test_run_started_meanwhile_is_continued_not_refused_with_resume(datasets, tmp_path, monkeypatch, capsys):
    original = Trainer.fit

    def started_elsewhere(self: Trainer) -> dict[str, Any]:
        # as if another process set the run up between the experiment's look at it and the trainer's
        if not (self.out / "config.json").exists():
            Trainer(self.data, self.config, self.out, progress=False)._prepare_out()
        return original(self)

    monkeypatch.setattr(Trainer, "fit", started_elsewhere)
    out = tmp_path / "cmp"
    code = main(["compare", "--data", str(datasets[0]), "--out", str(out), *METHODS, *FAST])
    err = capsys.readouterr().err
    assert "--resume" not in err
    assert code == 0, err
    assert len(list(out.glob("runs/uniform-*/seed0/metrics.json"))) == 1


def test_compare_tune_runs_under_one_lock_and_releases_it(datasets, tmp_path):
    out = tmp_path / "cmp"
    args = ["--tune", "--trials", "1", "--methods", "uniform", "--reference", "none", "--seeds", "1"]
    assert main(["compare", "--data", str(datasets[0]), "--out", str(out), *args, *FAST]) == 0
    assert (out / "tune" / "tuned.json").is_file() and (out / "summary.json").is_file()
    for lock in (out / ".lock", out / "tune" / ".lock"):  # free again: a new open file may take it
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_itempop_in_compare_uses_the_full_k_of_the_experiment(datasets, tmp_path):
    """ItemPop ignored --full-k (its run had no values): its Recall/NDCG@k columns came out NaN, and a
    cached @20 run was reused for another k."""
    a, _ = datasets
    prepared = load_prepared(a)
    expected = evaluate(ItemPop.fit(prepared), prepared, full_k=5)["test"]
    for k in (5, 20):
        res = compare(a, "itempop", 1, tmp_path / "cmp", reference=None, base={**VALUES, "full_k": k},
                      jobs=1, progress=False)  # fmt: skip
        assert res.status and set(res.status.values()) == {"trained"}
    res = compare(a, "itempop", 1, tmp_path / "cmp", reference=None, base={**VALUES, "full_k": 5},
                  jobs=1, progress=False)  # fmt: skip
    assert set(res.status.values()) == {"cached"}
    assert res.rows["test_recall@5"].iloc[0] == pytest.approx(expected["recall@5"])
    assert res.rows["test_ndcg@5"].iloc[0] == pytest.approx(expected["ndcg@5"])
