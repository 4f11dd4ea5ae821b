"""Peak memory of the benchmark's steps, each measured in its own child process.

:func:`run_memory` runs the simulation (when the preset is not cached), ``reinforcens prepare`` and a
training step as child processes and reports each child's peak resident set size (``os.wait4``'s
``ru_maxrss``). The training child (:func:`train_child`) loads the prepared dataset, builds a trainer
with the asked device, backend and model, trains one epoch of BPR and one of RNS (``N_s`` = 30),
evaluates the validation lists after each, and writes what it ran with (its resolved backend among it)
to a small JSON file that the parent adds to the result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from reinforcens.bench.cache import prepare_command, preset_paths
from reinforcens.bench.console import note
from reinforcens.bench.machine import machine_info
from reinforcens.errors import ConfigError

#: our methods the training child trains one epoch of each
CHILD_METHODS = ("bpr", "rns30")
_SIMULATE = (
    "import sys; from reinforcens.data.simulate import write_simulation; "
    "write_simulation(sys.argv[1], sys.argv[2], int(sys.argv[3]))"
)
_TRAIN = "import sys; from reinforcens.bench.memory import train_child; train_child(sys.argv[1:])"


def peak_rss_of(cmd: list[str], quiet: bool = False) -> dict[str, Any]:
    """Run ``cmd`` as a child process and measure it.

    Parameters
    ----------
    cmd
        The command's arguments.
    quiet
        Discard the child's output (else it goes to stderr).

    Returns
    -------
    dict
        ``peak_rss_mb`` (the child's peak RSS in MiB), ``seconds`` (wall time), ``returncode`` and
        ``command`` (the command line).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=sys.stderr if not quiet else subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    scale = 1.0 / (1024 * 1024) if sys.platform == "darwin" else 1.0 / 1024
    return {
        "peak_rss_mb": usage.ru_maxrss * scale,
        "seconds": seconds,
        "returncode": proc.returncode,
        "command": " ".join(cmd),
    }


def check_step(name: str, step: dict[str, Any]) -> None:
    """Raise if a measured child failed.

    Parameters
    ----------
    name
        The step's name, for the message.
    step
        The step's measurement (:func:`peak_rss_of`).

    Raises
    ------
    ConfigError
        If the child's exit code is not 0.
    """
    if step["returncode"] != 0:
        raise ConfigError(f"bench --memory: the {name} step failed (exit {step['returncode']})")


def train_command(
    prep_dir: Path, report: Path, device: str, threads: int, seed: int, recommender: str, backend: str
) -> list[str]:
    """The command line of the training child (:func:`train_child`), run with this interpreter.

    Parameters
    ----------
    prep_dir
        The prepared dataset.
    report
        The JSON file the child writes what it ran with to.
    device, threads, seed, recommender, backend
        The child's torch device, threads, seed, model and training backend (config values).

    Returns
    -------
    list of str
        The command's arguments.
    """
    return [
        sys.executable,
        "-c",
        _TRAIN,
        str(prep_dir),
        "--report",
        str(report),
        "--device",
        device,
        "--threads",
        str(threads),
        "--seed",
        str(seed),
        "--model",
        recommender,
        "--backend",
        backend,
    ]


def train_child(argv: Sequence[str]) -> None:
    """The training child: one epoch of each of :data:`CHILD_METHODS`, then the validation lists.

    Parameters
    ----------
    argv
        ``PREPARED --report FILE [--device D] [--threads N] [--seed S] [--model M] [--backend B]``
        (:func:`train_command`). ``FILE`` gets ``backend`` and ``device`` (as the trainer resolved
        them), ``model``, per method its epoch's ``seconds`` and its validation ``auc``.
    """
    from reinforcens.backend import set_threads
    from reinforcens.bench.timing import build_method
    from reinforcens.config import TrainConfig
    from reinforcens.data.prepared import load_prepared
    from reinforcens.train import Trainer

    p = argparse.ArgumentParser(prog="reinforcens bench --memory (training child)")
    p.add_argument("prepared")
    p.add_argument("--report", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="gmf")
    p.add_argument("--backend", default="auto")
    args = p.parse_args(list(argv))

    set_threads(args.threads)
    data = load_prepared(args.prepared)
    cfg = TrainConfig.build(device=args.device, seed=args.seed, model=args.model, backend=args.backend)
    trainer = Trainer(data, cfg, None, progress=False)
    ran: dict[str, Any] = {
        "backend": trainer.train_data.backend,
        "device": str(trainer.device),
        "model": args.model,
        "methods": {},
    }
    for name in CHILD_METHODS:
        method = build_method(trainer, name, args.seed)
        t0 = time.perf_counter()
        method.epoch()
        seconds = time.perf_counter() - t0
        auc = trainer.validate(method.model)["auc"]
        print(f"{name} epoch: {seconds:.1f}s, valid auc {auc:.4f}", file=sys.stderr, flush=True)
        ran["methods"][name] = {"seconds": seconds, "auc": auc}
        del method
    Path(args.report).write_text(json.dumps(ran, indent=2) + "\n")


def run_memory(
    preset: str,
    cache: Path,
    threads: int = 2,
    device: str = "cpu",
    seed: int = 0,
    quiet: bool = False,
    recommender: str = "gmf",
    backend: str = "auto",
) -> dict[str, Any]:
    """Peak RSS of simulating (if not cached), preparing and training, each in a child process.

    ``prepare`` always runs (into a temporary folder when the cache already holds the prepared preset).

    Parameters
    ----------
    preset
        A simulator preset.
    cache
        The preset cache folder (:mod:`reinforcens.bench.cache`).
    threads
        Threads of the training child.
    device
        Torch device of the training child.
    seed
        Simulation and training seed.
    quiet
        Print no progress, and discard the children's output.
    recommender
        The model the training child trains.
    backend
        The training child's backend (config value ``auto``, ``numba`` or ``torch``).

    Returns
    -------
    dict
        ``mode`` (``"memory"``), ``preset``, ``seed``, ``machine`` (with the ``model`` and the
        ``backend`` the training child used), ``steps`` (per step :func:`peak_rss_of`'s measurement;
        the training step also has ``backend``, ``device`` and ``methods`` from the child) and
        ``peak_rss_mb`` (the peak of prepare and training).

    Raises
    ------
    ConfigError
        If a step fails.
    """
    from reinforcens.data.prepared import is_prepared_dir
    from reinforcens.data.simulate import METADATA_FILE

    sim_dir, prep_dir = preset_paths(preset, cache, seed)
    steps: dict[str, Any] = {}
    if not (sim_dir / METADATA_FILE).is_file():
        note(f"simulating preset {preset!r} into {sim_dir} (once)", quiet)
        steps["simulate"] = peak_rss_of(
            [sys.executable, "-c", _SIMULATE, str(sim_dir), preset, str(seed)], quiet
        )
        check_step("simulate", steps["simulate"])
    with tempfile.TemporaryDirectory(prefix="reinforcens-bench-") as tmp:
        target = Path(tmp) / "prep" if is_prepared_dir(prep_dir) else prep_dir
        note(f"prepare {preset!r} -> {target}", quiet)
        steps["prepare"] = peak_rss_of(prepare_command(preset, sim_dir, target), quiet)
        check_step("prepare", steps["prepare"])
        note(f"training one epoch of BPR and one of RNS (N_s = 30), model {recommender}, {backend}", quiet)
        report = Path(tmp) / "train.json"
        cmd = train_command(prep_dir, report, device, threads, seed, recommender, backend)
        steps["train"] = peak_rss_of(cmd, quiet)
        check_step("train", steps["train"])
        ran = json.loads(report.read_text())
    steps["train"].update(ran)
    peak = max(s["peak_rss_mb"] for k, s in steps.items() if k != "simulate")
    return {
        "mode": "memory",
        "preset": preset,
        "seed": seed,
        "machine": machine_info(threads, torch.device(device))
        | {"model": recommender, "backend": ran["backend"]},
        "steps": steps,
        "peak_rss_mb": peak,
    }
