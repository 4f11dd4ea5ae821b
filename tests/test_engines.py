"""The engines of the multi-run experiments (``experiments/engines.py``): a compare on Ray writes the
summary the local engine writes, a rerun of a finished experiment on Ray reruns nothing, a run whose Ray
worker dies is retried and resumes from its checkpoint, and without Ray ``--engine ray`` is a one-line
error naming the extra.

The Ray tests start a local Ray of 2 CPUs on 127.0.0.1 (no dashboard) once for the module.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

from reinforcens.cli import main
from reinforcens.errors import ConfigError, Terminated
from reinforcens.experiments.compare import compare
from reinforcens.experiments.engines import LocalEngine, RayEngine, make_engine
from reinforcens.experiments.runner import Method, RunSpec, data_fingerprint, plan, run_specs

#: training values of every run here (as flags and as values): 2 epochs on the tiny preset
FAST = ["--epochs", "2", "--batch-size", "1024", "--quiet"]
FAST_VALUES = {"epochs": 2, "batch_size": 1024}
#: BPR-GMF and RNS-ES (pretrained from the BPR-GMF run of its seed) on 2 seeds
METHODS = ["--methods", "uniform,rns-es", "--reference", "rns-es", "--seeds", "2"]

#: fields of a run's metrics.json that are times, not results
TIMING = ("seconds", "train_seconds_per_epoch")


@pytest.fixture(scope="module")
def ray_local() -> Iterator[ModuleType]:
    """A local Ray of 2 CPUs on 127.0.0.1 without dashboard, for the module; shut down after."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only (read when ray is imported)
        ray = pytest.importorskip("ray")
    ray.init(
        address="local",  # a new instance, never one that another process started on this machine
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.ERROR,
    )
    # the workers cannot import this test module: its hook travels by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield ray
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        ray.shutdown()


@pytest.fixture(scope="module")
def local_compared(tiny_prepared, tmp_path_factory) -> Path:
    """The compare of :data:`METHODS` on the local engine, in this process."""
    out = tmp_path_factory.mktemp("local") / "cmp"
    args = ["compare", "--data", str(tiny_prepared.path), "--out", str(out), *METHODS, *FAST]
    assert main([*args, "--jobs", "1", "--engine", "local"]) == 0
    return out


@pytest.fixture(scope="module")
def ray_compared(ray_local, tiny_prepared, tmp_path_factory) -> Path:
    """The same compare on Ray."""
    out = tmp_path_factory.mktemp("ray") / "cmp"
    args = ["compare", "--data", str(tiny_prepared.path), "--out", str(out), *METHODS, *FAST]
    assert main([*args, "--engine", "ray"]) == 0
    return out


def _run_metrics(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Each run's metrics.json by (method, seed), without its times, and without the checksum of its
    ``best.pt`` where that holds the run's location (the path of the pretrained start in its config)."""
    found = {}
    for path in out.glob("runs/*/seed*/metrics.json"):
        metrics = json.loads(path.read_text())
        drop = TIMING
        if json.loads((path.parent / "config.json").read_text()).get("pretrained"):
            drop += ("checkpoint_sha256",)
        key = (path.parent.parent.name.rsplit("-", 1)[0], path.parent.name)
        found[key] = {k: v for k, v in metrics.items() if k not in drop}
    return found


def test_compare_on_ray_writes_the_local_summary(local_compared, ray_compared):
    # summary.json holds no time: all of it must be equal (the runs read the same data at the same path)
    local = json.loads((local_compared / "summary.json").read_text())
    on_ray = json.loads((ray_compared / "summary.json").read_text())
    assert set(on_ray["methods"]) == {"uniform", "rns-es"}
    assert on_ray == local
    # every run's metrics too (its times aside; the uniform runs' best.pt bit for bit), and the run
    # directories have the same names
    assert _run_metrics(ray_compared) == _run_metrics(local_compared)
    assert len(_run_metrics(local_compared)) == 4
    names = {p.relative_to(ray_compared) for p in ray_compared.glob("runs/*/seed*")}
    assert names == {p.relative_to(local_compared) for p in local_compared.glob("runs/*/seed*")}
    # results.csv: the same rows but for the times and the run directories' location
    drop = [*TIMING, "run_dir"]
    rows = [pd.read_csv(out / "results.csv").drop(columns=drop) for out in (local_compared, ray_compared)]
    pd.testing.assert_frame_equal(rows[1], rows[0], check_exact=True)


def test_rerun_of_a_finished_experiment_on_ray_reruns_nothing(ray_compared, tiny_prepared):
    # the run files, not the lock each verification takes
    mtimes = {p: p.stat().st_mtime_ns for p in ray_compared.glob("runs/*/seed*/*") if p.name != ".lock"}
    res = compare(
        tiny_prepared.path,
        "uniform,rns-es",
        2,
        ray_compared,
        reference="rns-es",
        base=FAST_VALUES,
        progress=False,
        engine="ray",
    )
    assert sorted(res.status.values()) == ["cached"] * 4
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # no run file was written


def _uniform_seed0(data: Path, out: Path) -> RunSpec:
    """The run of BPR-GMF on seed 0 with :data:`FAST_VALUES` in the experiment directory ``out``."""
    (spec,) = plan([Method("uniform", "uniform")], [0], FAST_VALUES, out, fingerprint=data_fingerprint(data))
    return spec


class ExitOnce:
    """An ``on_validate`` hook that kills its process (``os._exit``) after the first epoch is saved,
    the first time only (it leaves ``marker``)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, epoch: int, scores: dict[str, float]) -> None:
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(f"{os.getpid()} {epoch}\n")
            os._exit(1)


def test_run_whose_ray_worker_dies_is_retried_and_resumes(ray_local, local_compared, tiny_prepared, tmp_path):
    data = tiny_prepared.path
    spec = _uniform_seed0(data, tmp_path / "killed")
    marker = tmp_path / "killed-once"
    spec.on_validate = ExitOnce(str(marker))
    results = run_specs([spec], data, jobs=1, progress=False, engine="ray")
    # the first worker died after epoch 1 (its pid is not this process's); the retry resumed the run
    pid, epoch = marker.read_text().split()
    assert int(pid) != os.getpid() and epoch == "1"
    assert results[spec.run_dir]["status"] == "resumed"
    epochs = [json.loads(line)["epoch"] for line in (Path(spec.run_dir) / "epochs.jsonl").open()]
    assert epochs == sorted(set(epochs)) and max(epochs) == 2  # each epoch once: none was trained twice
    # ... to the result of the uninterrupted local run of the same settings and seed
    (uniform,) = [
        m for (key, seed), m in _run_metrics(local_compared).items() if key == "uniform" and seed == "seed0"
    ]
    resumed = {k: v for k, v in results[spec.run_dir]["metrics"].items() if k not in TIMING}
    assert resumed == uniform


def test_failing_run_on_ray_raises_its_own_one_line_error(ray_local, local_compared, tiny_prepared, tmp_path):
    data = tiny_prepared.path
    spec = _uniform_seed0(data, tmp_path / "other")
    # an unfinished run of other settings in its directory: the trainer refuses to resume it
    (source,) = local_compared.glob("runs/uniform-*/seed0/config.json")
    config = json.loads(source.read_text())
    config["lr"] = config["lr"] * 2
    Path(spec.run_dir).mkdir(parents=True)
    (Path(spec.run_dir) / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="cannot resume the run") as err:
        run_specs([spec], data, jobs=1, progress=False, engine="ray")
    assert len(str(err.value).splitlines()) == 1
    assert isinstance(err.value.__cause__, ray_local.exceptions.RayTaskError)  # it failed in a Ray task


def test_engine_ray_without_ray_is_a_one_line_error_naming_the_extra(
    tiny_prepared, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(tiny_prepared.path), "--out", str(out), *METHODS, *FAST]
    assert main([*args, "--engine", "ray"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("reinforcens compare: error:") and "pip install 'reinforcens[ray]'" in line
    assert not list(out.glob("runs/*/seed*"))  # nothing ran


def test_make_engine_picks_the_class_and_rejects_what_does_not_fit(monkeypatch):
    assert isinstance(make_engine("local", 3), LocalEngine) and make_engine("local", 3).jobs == 3
    with pytest.raises(ConfigError, match="--address is for --engine ray"):
        make_engine("local", 1, "auto")
    with pytest.raises(ConfigError, match="--engine must be one of local, ray"):
        make_engine("dask", 1)
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # restored after (the engine sets it)
    ray = make_engine("ray", 2)  # Ray starts only once a run needs it
    assert isinstance(ray, RayEngine) and ray.jobs == 2 and ray.address is None


def test_sigterm_that_a_wait_turns_into_an_interrupt_is_still_terminated():
    # Ray's waits check for signals themselves and raise a plain KeyboardInterrupt for whatever the
    # handler raised: SIGTERM must still end the experiment as Terminated (exit 143), not as Ctrl-C
    from reinforcens.experiments import engines

    with engines._sigterm_raises(), pytest.raises(Terminated), engines._as_terminated():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except Terminated:
            raise KeyboardInterrupt from None  # what ray.wait raises instead
    with engines._sigterm_raises(), pytest.raises(KeyboardInterrupt) as err, engines._as_terminated():
        raise KeyboardInterrupt  # Ctrl-C stays an interrupt
    assert not isinstance(err.value, Terminated)


def test_ray_connects_before_the_runs_when_more_runs_may_follow(monkeypatch):
    """Defect: a tune's follow-up trials arrive while the runs go, and Ray connected late (at the first
    run that was not finished already) installs its own SIGTERM handler over the one that raises
    Terminated. The session connects up front when runs may follow, even with none to run yet."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    engine = RayEngine(2)
    connects: list[int] = []
    monkeypatch.setattr(engine, "_connect", lambda: connects.append(1))
    with engine._session([], more=False):
        assert connects == []  # nothing to run: Ray is not started
    with engine._session([], more=True):
        assert connects == [1]
