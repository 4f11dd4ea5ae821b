"""Scale-out on one machine: training epochs on 1 process vs 2 torchrun ranks, and an experiment grid on
1 vs 2 workers (the local engine's processes, and Ray's tasks when Ray is installed).

Usage::

    python benchmarks/scaling.py PREPARED [--samplers uniform,dns,rns] [--epochs 3] [--backends torch,numba]
        [--grid-seeds 2] [--grid-epochs 20]

Epochs: each sampler trains ``--epochs`` epochs (``--init scratch``, no pretraining, so every sampler
times the same kind of epoch) on each of ``--backends``; the figure is ``train_seconds_per_epoch`` of
``metrics.json`` (rank 0's, training only, no evaluation), for

* one process with one thread at batch 2B;
* one process with two threads at batch 2B;
* ``torchrun --nproc-per-node 2`` (gloo, one thread each) at batch B per rank: the same global batch.

Grid: ``reinforcens compare`` of uniform and DNS x ``--grid-seeds`` seeds (``--grid-epochs`` each),
cold (a fresh experiment directory), wall time of the command, with ``--jobs 1`` and ``--jobs 2`` for the
local engine and for Ray (a local Ray started by the command with that many CPUs).

Prints a Markdown table per part. Ratios are within one invocation, on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def _epoch_seconds(cmd: list[str], out: Path, threads: int) -> float:
    subprocess.run(cmd, check=True, env=_env(threads), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return float(json.loads((out / "metrics.json").read_text())["train_seconds_per_epoch"])


def epochs(
    data: str, samplers: list[str], n_epochs: int, batch: int, work: Path, backend: str
) -> list[list[str]]:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    rows = []
    for name in samplers:
        def args(out: Path, b: int, name: str = name) -> list[str]:
            return ["train", "--data", data, "--sampler", name, "--out", str(out), "--backend", backend,
                    "--init", "scratch", "--epochs", str(n_epochs), "--eval-every", str(n_epochs),
                    "--batch-size", str(b), "--quiet"]  # fmt: skip

        times = []
        for threads in (1, 2):
            out = work / f"{name}-{backend}-p1-t{threads}"
            cmd = [sys.executable, "-m", "reinforcens", "--threads", str(threads), *args(out, 2 * batch)]
            times.append(_epoch_seconds(cmd, out, threads))
        out = work / f"{name}-{backend}-r2"
        cmd = [torchrun, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
               str(_port()), "-m", "reinforcens", *args(out, batch)]  # fmt: skip
        times.append(_epoch_seconds(cmd, out, 1))
        rows.append([backend, name, *(f"{t:.2f}" for t in times), f"{times[0] / times[2]:.2f}x"])
    return rows


def grid(data: str, n_epochs: int, seeds: int, work: Path) -> list[list[str]]:
    engines = ["local"]
    try:
        import ray  # noqa: F401

        engines.append("ray")
    except ImportError:
        pass
    rows = []
    for engine in engines:
        wall = []
        for jobs in (1, 2):
            out = work / f"grid-{engine}-{jobs}"
            cmd = [sys.executable, "-m", "reinforcens", "compare", "--data", data, "--out", str(out),
                   "--methods", "uniform,dns", "--seeds", str(seeds), "--jobs", str(jobs),
                   "--reference", "none", "--epochs", str(n_epochs), "--quiet",
                   "--engine", engine]  # fmt: skip
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=_env(1), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            wall.append(time.perf_counter() - t0)
        rows.append([engine, f"{wall[0]:.1f}", f"{wall[1]:.1f}", f"{wall[0] / wall[1]:.2f}x"])
    return rows


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="prepared dataset directory")
    p.add_argument("--samplers", default="uniform,dns,rns")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=512, help="per-rank batch B (one process: 2B)")
    p.add_argument("--backends", default="torch,numba", help="compute backends of the epoch part")
    p.add_argument("--grid-seeds", type=int, default=2)
    p.add_argument("--grid-epochs", type=int, default=20, help="epochs of each run of the grid")
    p.add_argument("--skip-epochs", action="store_true")
    p.add_argument("--skip-grid", action="store_true")
    a = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; data {a.data}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not a.skip_epochs:
            rows = [r for b in a.backends.split(",") for r in
                    epochs(a.data, a.samplers.split(","), a.epochs, a.batch, work, b)]  # fmt: skip
            print("\nseconds per training epoch\n")
            print(table(["backend", "sampler", f"1 process, 1 thread, batch {2 * a.batch}",
                         f"1 process, 2 threads, batch {2 * a.batch}",
                         f"2 gloo ranks x 1 thread, batch {a.batch}",
                         "speed-up of 2 ranks over 1 thread"], rows))  # fmt: skip
        if not a.skip_grid:
            rows = grid(a.data, a.grid_epochs, a.grid_seeds, work)
            print(f"\ncompare uniform,dns x {a.grid_seeds} seeds, {a.grid_epochs} epochs: wall seconds\n")
            print(table(["engine", "1 worker", "2 workers", "speed-up"], rows))


if __name__ == "__main__":
    main()
