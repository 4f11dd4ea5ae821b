"""``reinforcens bench``: epoch times against implicit's BPR, evaluation time, and peak memory.

Timing mode (the default) generates a simulator preset once (cached), prepares it, then times, in one
process and interleaved so that every method sees the same machine load:

* ``implicit``: one epoch of :class:`implicit.cpu.bpr.BayesianPersonalizedRanking` (factors 32, the
  same number of threads), if the optional ``bench`` extra is installed;
* ``bpr``, ``dns``, ``rns30``, ``rns100``: one :meth:`reinforcens.train.Trainer.train_epoch` of
  BPR-GMF with uniform, DNS and RNS negatives (``N_s`` = 30 and 100, MMD on);
* ``eval_lists``: the list AUC/NDCG of every test user (:func:`reinforcens.evaluation.evaluate_lists`).

Each method is warmed up on a few batches first; the reported time is the median over ``--repeats``
runs, and the ratios are ratios of those medians, so they come from one run on one machine.

Memory mode (``--memory``, the ``beibei`` preset by default) runs the simulation, ``prepare`` and a
training epoch each in a child process and reports each child's peak resident set size
(``os.wait4``'s ``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reinforcens.backend import set_threads
from reinforcens.cli._common import seed
from reinforcens.errors import ConfigError

#: prepare settings per simulator preset: (min_sessions, list_length)
PREPARE_SETTINGS: dict[str, tuple[int, int]] = {
    "tiny": (4, 40),
    "small": (6, 160),
    "zhihu": (6, 160),
    "beibei": (4, 40),
}
METHODS = ("implicit", "bpr", "dns", "rns30", "rns100", "eval_lists")
#: sampler name and options of each of our timed methods
OUR_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "bpr": ("uniform", {}),
    "dns": ("dns", {}),
    "rns30": ("rns", {"n_candidates": 30}),
    "rns100": ("rns", {"n_candidates": 100}),
}
TARGETS: dict[str, float] = {
    "bpr_vs_implicit": 2.0,
    "rns30_vs_bpr": 2.5,
    "rns30_vs_implicit": 5.0,
}
EVAL_TARGET_S = 0.5
MEMORY_TARGET_MB = 4096.0


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/reinforcens/bench`` (``~/.cache/reinforcens/bench`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "reinforcens" / "bench"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time training epochs against implicit's BPR, or measure peak memory",
        description="Generate a simulator preset once (cached), prepare it and time one epoch of "
        "implicit's BPR, our BPR-GMF, DNS and RNS (N_s = 30 and 100), and the evaluation of all "
        "users' lists: median of --repeats runs after a warm-up, with the ratios measured in the "
        "same run. With --memory: peak RSS of prepare and of a training epoch, in child processes.",
    )
    p.add_argument(
        "--preset",
        default=None,
        choices=sorted(PREPARE_SETTINGS),
        help="simulator preset (default: zhihu; beibei with --memory)",
    )
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method (default 3)")
    p.add_argument(
        "--warmup-batches",
        type=int,
        default=30,
        help="batches each method runs before it is timed (default 30)",
    )
    p.add_argument(
        "--threads", type=int, default=2, help="threads of torch and the compiled kernels (default 2)"
    )
    p.add_argument(
        "--implicit-threads", type=int, default=None, help="implicit's threads (default: --threads)"
    )
    p.add_argument("--device", default="cpu", help="torch device of our methods (default cpu)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "numba", "torch"],
        help="training kernels of our methods (default auto: numba on the CPU)",
    )
    p.add_argument(
        "--model",
        default="gmf",
        choices=["gmf", "mf", "lightgcn"],
        help="the recommender of our methods (default gmf)",
    )
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {', '.join(METHODS)}",
    )
    p.add_argument(
        "--cache",
        default=None,
        help="folder of generated and prepared presets (default ~/.cache/reinforcens/bench)",
    )
    p.add_argument("--seed", type=seed, default=0, help="simulation and training seed (default 0)")
    p.add_argument(
        "--memory",
        action="store_true",
        help="measure peak RSS of prepare and of a training epoch instead of timing",
    )
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def _log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def preset_paths(preset: str, cache: Path, seed: int) -> tuple[Path, Path]:
    """The simulation folder and prepared-dataset folder of a preset in the cache."""
    base = cache / f"{preset}-seed{seed}"
    return base / "sim", base / "prep"


def prepare_command(preset: str, sim_dir: Path, out: Path) -> list[str]:
    """The ``reinforcens prepare`` command line (run with this interpreter) for a preset."""
    min_sessions, list_length = PREPARE_SETTINGS[preset]
    return [
        sys.executable,
        "-m",
        "reinforcens",
        "prepare",
        "--input",
        str(sim_dir / "log.parquet"),
        "--out",
        str(out),
        "--min-sessions",
        str(min_sessions),
        "--list-length",
        str(list_length),
        "--force",
    ]


def ensure_prepared(preset: str, cache: Path, seed: int = 0, quiet: bool = False) -> Path:
    """Generate and prepare ``preset`` unless the cache holds it already; returns the prepared folder."""
    from reinforcens.data.formats import read_log
    from reinforcens.data.prepared import is_current_prepared_dir, is_prepared_dir, prepare, save_prepared
    from reinforcens.data.simulate import PRESETS, read_metadata, write_simulation

    sim_dir, prep_dir = preset_paths(preset, cache, seed)
    meta = read_metadata(sim_dir)
    current = PRESETS[preset].model_dump(mode="json")
    if meta is not None and meta.get("config") != current:
        _log(f"the cached {preset!r} simulation was made with other settings: regenerating", quiet)
        shutil.rmtree(prep_dir, ignore_errors=True)
        meta = None
    if meta is None:
        _log(f"simulating preset {preset!r} into {sim_dir} (once)", quiet)
        write_simulation(sim_dir, preset, seed)
    if is_prepared_dir(prep_dir) and not is_current_prepared_dir(prep_dir):
        _log(f"the cached {preset!r} dataset was prepared by an earlier version: preparing it again", quiet)
        shutil.rmtree(prep_dir)
    if not is_prepared_dir(prep_dir):
        _log(f"preparing {preset!r} into {prep_dir} (once)", quiet)
        min_sessions, list_length = PREPARE_SETTINGS[preset]
        data = prepare(
            read_log(sim_dir / "log.parquet", "table"),
            min_sessions=min_sessions,
            list_length=list_length,
            seed=seed,
        )
        save_prepared(
            data, prep_dir, force=True, extra_files={"ground_truth.npz": sim_dir / "ground_truth.npz"}
        )
    return prep_dir


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------


class _Clock:
    """Wall-clock timer that waits for queued device work before reading the time."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def _implicit_runner(data, threads: int, seed: int) -> Callable[[], None] | None:
    """A function fitting one epoch of implicit's CPU BPR, or ``None`` if implicit is missing."""
    try:
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError:
        return None
    import scipy.sparse as sp

    clicks = data.train_clicks
    matrix = sp.csr_matrix(
        (np.ones(clicks.indices.size, dtype=np.float32), clicks.indices, clicks.indptr),
        shape=(data.n_users, data.n_items),
    )

    def fit() -> None:
        model = BayesianPersonalizedRanking(factors=32, iterations=1, num_threads=threads, random_state=seed)
        model.fit(matrix, show_progress=False)

    return fit


@dataclasses.dataclass
class _OurMethod:
    """One of our methods, ready to run epochs: a model, its optimizer, a sampler, a batch stream."""

    trainer: Any
    model: Any
    optimizer: Any
    sampler: Any
    batch_gen: torch.Generator

    def epoch(self, warmup_positives: int | None = None) -> None:
        tr = self.trainer
        full = tr.train_data
        if warmup_positives is not None:
            n = min(warmup_positives, full.n_positives)
            tr.train_data = dataclasses.replace(
                full, pos_users=full.pos_users[:n], pos_items=full.pos_items[:n]
            )
        try:
            tr.train_epoch(self.model, self.optimizer, self.sampler, self.batch_gen, 1, "bench")
        finally:
            tr.train_data = full


def _our_method(trainer, name: str, seed: int) -> _OurMethod:
    from reinforcens.samplers import SamplerContext, make_sampler
    from reinforcens.train import _generators

    sampler_name, options = OUR_METHODS[name]
    cfg = trainer.config
    gens = _generators(seed, trainer.device, 3)
    model = trainer._new_model(gens[0])
    ctx = SamplerContext(
        dim=cfg.dim, lr=cfg.lr, l2=cfg.l2, init_std=cfg.init_std, model=cfg.resolved_sampler_model()
    )
    sampler = make_sampler(sampler_name, trainer.train_data, gens[2], options, ctx)
    opt = model.make_optimizer(cfg.lr, trainer.backend)
    return _OurMethod(trainer, model, opt, sampler, gens[1])


def machine_info(threads: int, device: torch.device) -> dict[str, Any]:
    """Cores, CPU model, load, library versions and the device, for the results file."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": threads,
        "device": str(device),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    for name in ("implicit", "numba"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_timing(
    preset: str,
    cache: Path,
    repeats: int = 3,
    threads: int = 2,
    device: str = "cpu",
    methods: tuple[str, ...] = METHODS,
    warmup_batches: int = 30,
    seed: int = 0,
    quiet: bool = False,
    implicit_threads: int | None = None,
    backend: str = "auto",
    recommender: str = "gmf",
) -> dict[str, Any]:
    """Time the methods on a preset and return the results dict (see the module docstring).

    Parameters
    ----------
    preset
        A simulator preset; generated and prepared into ``cache`` on first use.
    repeats
        Timed runs per method; the median is reported.
    threads
        ``torch.set_num_threads``.
    device
        Torch device of our methods (implicit always runs on the CPU).
    methods
        Subset of :data:`METHODS`.
    warmup_batches
        Batches each of our methods trains before its first timed epoch.
    implicit_threads
        implicit's ``num_threads`` (default: ``threads``).
    backend
        Training kernels of our methods (:mod:`reinforcens.backend`).
    recommender
        The model of our methods (the ``model`` config value).
    """
    from reinforcens.config import TrainConfig
    from reinforcens.data.prepared import load_prepared
    from reinforcens.evaluation import evaluate_lists
    from reinforcens.models import TorchScorer
    from reinforcens.train import Trainer, resolve_device

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ConfigError(f"unknown --methods {', '.join(unknown)}; known: {', '.join(METHODS)}")
    if repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    set_threads(threads)
    dev = resolve_device(device)
    clock = _Clock(dev)
    prep = ensure_prepared(preset, cache, seed, quiet)
    data = load_prepared(prep)
    cfg = TrainConfig.build(device=device, seed=seed, backend=backend, model=recommender)
    trainer = Trainer(data, cfg, None, progress=False)
    warm = warmup_batches * cfg.batch_size

    runners: dict[str, Callable[[], None]] = {}
    skipped: dict[str, str] = {}
    ours: dict[str, _OurMethod] = {}
    for name in methods:
        if name == "implicit":
            fit = _implicit_runner(data, implicit_threads or threads, seed)
            if fit is None:
                skipped[name] = "implicit is not installed (pip install 'reinforcens[bench]')"
                continue
            runners[name] = fit
        elif name in OUR_METHODS:
            ours[name] = _our_method(trainer, name, seed)
            runners[name] = ours[name].epoch
    if "eval_lists" in methods:
        model = ours["bpr"].model if "bpr" in ours else _our_method(trainer, "bpr", seed).model
        scorer = TorchScorer(model, trainer.backend)
        runners["eval_lists"] = lambda: evaluate_lists(scorer, data.test)

    limits = _blas_single_thread()
    try:
        _log(f"warming up {', '.join(runners)}", quiet)
        for name, fn in runners.items():
            if name in ours:
                ours[name].epoch(warmup_positives=warm)
            else:
                fn()
        times: dict[str, list[float]] = {name: [] for name in runners}
        for r in range(repeats):
            for name, fn in runners.items():
                t0 = clock.now()
                fn()
                times[name].append(clock.now() - t0)
            _log(
                f"run {r + 1}/{repeats}: " + "  ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()),
                quiet,
            )
    finally:
        if limits is not None:
            limits.unregister()

    med = {name: statistics.median(v) for name, v in times.items()}
    ratios: dict[str, float] = {}

    def ratio(key: str, a: str, b: str) -> None:
        if a in med and b in med and med[b] > 0:
            ratios[key] = med[a] / med[b]

    ratio("bpr_vs_implicit", "bpr", "implicit")
    ratio("rns30_vs_bpr", "rns30", "bpr")
    ratio("rns30_vs_implicit", "rns30", "implicit")
    ratio("rns100_vs_bpr", "rns100", "bpr")
    ratio("rns100_vs_implicit", "rns100", "implicit")
    ratio("dns_vs_bpr", "dns", "bpr")
    ratio("dns_vs_implicit", "dns", "implicit")
    ratio("eval_lists_vs_implicit", "eval_lists", "implicit")
    targets = {k: {"target": v, "met": ratios[k] <= v} for k, v in TARGETS.items() if k in ratios}
    if "eval_lists" in med:
        targets["eval_lists_seconds"] = {
            "target": EVAL_TARGET_S,
            "met": med["eval_lists"] <= EVAL_TARGET_S,
        }
    return {
        "mode": "timing",
        "preset": preset,
        "seed": seed,
        "repeats": repeats,
        "warmup_batches": warmup_batches,
        "data": data.stats(),
        "batch_size": cfg.batch_size,
        "batches_per_epoch": -(-data.stats()["train"] // cfg.batch_size),
        "machine": machine_info(threads, dev)
        | {"implicit_threads": implicit_threads or threads, "backend": trainer.backend, "model": recommender},
        "times": {name: {"median": med[name], "runs": times[name]} for name in times},
        "ratios": ratios,
        "targets": targets,
        "skipped": skipped,
    }


def _blas_single_thread():
    """Limit BLAS to one thread while implicit runs (as implicit recommends), if threadpoolctl exists."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(1, "blas")


# ------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------


def _peak_rss_of(cmd: list[str], quiet: bool) -> dict[str, Any]:
    """Run ``cmd`` as a child process; its wall time, exit code and peak RSS in MiB."""
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


def run_memory(
    preset: str,
    cache: Path,
    threads: int = 2,
    device: str = "cpu",
    seed: int = 0,
    quiet: bool = False,
    recommender: str = "gmf",
) -> dict[str, Any]:
    """Peak RSS of simulating (if not cached), preparing and training one epoch, each in a child.

    ``prepare`` always runs (into a temporary folder when the cache already holds the prepared
    preset). The training child loads the prepared dataset, builds the trainer, runs one epoch of
    BPR and one of RNS (``N_s`` = 30) with the ``recommender`` model, and evaluates the validation
    lists.
    """
    from reinforcens.data.prepared import is_prepared_dir
    from reinforcens.data.simulate import METADATA_FILE

    sim_dir, prep_dir = preset_paths(preset, cache, seed)
    steps: dict[str, Any] = {}
    if not (sim_dir / METADATA_FILE).is_file():
        _log(f"simulating preset {preset!r} into {sim_dir} (once)", quiet)
        code = (
            "import sys; from reinforcens.data.simulate import write_simulation; "
            "write_simulation(sys.argv[1], sys.argv[2], int(sys.argv[3]))"
        )
        steps["simulate"] = _peak_rss_of([sys.executable, "-c", code, str(sim_dir), preset, str(seed)], quiet)
        _check_child("simulate", steps["simulate"])
    with tempfile.TemporaryDirectory(prefix="reinforcens-bench-") as tmp:
        target = Path(tmp) / "prep" if is_prepared_dir(prep_dir) else prep_dir
        _log(f"prepare {preset!r} -> {target}", quiet)
        steps["prepare"] = _peak_rss_of(prepare_command(preset, sim_dir, target), quiet)
        _check_child("prepare", steps["prepare"])
    _log(f"training one epoch of BPR and one of RNS (N_s = 30), model {recommender}", quiet)
    steps["train"] = _peak_rss_of(
        [
            sys.executable,
            "-m",
            "reinforcens.cli.bench",
            "_train_child",
            str(prep_dir),
            device,
            str(threads),
            str(seed),
            recommender,
        ],
        quiet,
    )
    _check_child("train", steps["train"])
    peak = max(s["peak_rss_mb"] for k, s in steps.items() if k != "simulate")
    return {
        "mode": "memory",
        "preset": preset,
        "seed": seed,
        "machine": machine_info(threads, torch.device(device)) | {"model": recommender},
        "steps": steps,
        "peak_rss_mb": peak,
        "targets": {"peak_rss_mb": {"target": MEMORY_TARGET_MB, "met": peak <= MEMORY_TARGET_MB}},
    }


def _check_child(name: str, step: dict[str, Any]) -> None:
    if step["returncode"] != 0:
        raise ConfigError(f"bench --memory: the {name} step failed (exit {step['returncode']})")


def _train_child(prep_dir: str, device: str, threads: str, seed: str, model: str = "gmf") -> None:
    """The child process of the memory mode's training step."""
    from reinforcens.config import TrainConfig
    from reinforcens.data.prepared import load_prepared
    from reinforcens.train import Trainer

    set_threads(int(threads))
    data = load_prepared(prep_dir)
    cfg = TrainConfig.build(device=device, seed=int(seed), model=model)
    trainer = Trainer(data, cfg, None, progress=False)
    for name in ("bpr", "rns30"):
        method = _our_method(trainer, name, int(seed))
        t0 = time.perf_counter()
        method.epoch()
        print(f"{name} epoch: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        result = trainer.validate(method.model)
        print(f"{name} valid auc {result['auc']:.4f}", file=sys.stderr, flush=True)
        del method


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table of a timing or memory result."""
    if result["mode"] == "memory":
        lines = ["| step | peak RSS (MiB) | wall (s) |", "|---|---:|---:|"]
        for name, s in result["steps"].items():
            lines.append(f"| {name} | {s['peak_rss_mb']:.0f} | {s['seconds']:.1f} |")
        t = result["targets"]["peak_rss_mb"]
        lines.append(
            f"\npeak of prepare and train: {result['peak_rss_mb']:.0f} MiB "
            f"(target <= {t['target']:.0f}: {'met' if t['met'] else 'NOT met'})"
        )
        return "\n".join(lines)
    times = result["times"]
    base = times.get("implicit", {}).get("median")
    bpr = times.get("bpr", {}).get("median")
    lines = [
        "| method | median (s) | runs (s) | vs implicit | vs our BPR |",
        "|---|---:|---|---:|---:|",
    ]
    for name, t in times.items():
        runs = ", ".join(f"{x:.3f}" for x in t["runs"])
        vs_i = f"{t['median'] / base:.2f}x" if base and name != "eval_lists" else ""
        vs_b = f"{t['median'] / bpr:.2f}x" if bpr and name not in ("eval_lists", "implicit") else ""
        lines.append(f"| {name} | {t['median']:.3f} | {runs} | {vs_i} | {vs_b} |")
    if result["targets"]:
        lines.append("")
        for key, t in result["targets"].items():
            value = result["ratios"].get(key, times.get("eval_lists", {}).get("median"))
            lines.append(
                f"- {key}: {value:.2f} (target <= {t['target']}): {'met' if t['met'] else 'NOT met'}"
            )
    for name, why in result.get("skipped", {}).items():
        lines.append(f"- {name} skipped: {why}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cache = Path(args.cache) if args.cache else default_cache()
    if args.memory:
        preset = args.preset or "beibei"
        result = run_memory(preset, cache, args.threads, args.device, args.seed, args.quiet, args.model)
    else:
        preset = args.preset or "zhihu"
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        result = run_timing(
            preset,
            cache,
            repeats=args.repeats,
            threads=args.threads,
            device=args.device,
            methods=methods,
            warmup_batches=args.warmup_batches,
            seed=args.seed,
            quiet=args.quiet,
            implicit_threads=args.implicit_threads,
            backend=args.backend,
            recommender=args.model,
        )
    m = result["machine"]
    print(
        f"reinforcens bench ({result['mode']}, preset {preset}): {m['cpu']}, {m['cores']} cores, "
        f"torch {m['torch']} ({m['torch_threads']} threads, {m['device']}"
        + (f", {m['backend']} kernels" if "backend" in m else "")
        + "), "
        + (f"implicit {m['implicit_threads']} threads, " if "implicit_threads" in m else "")
        + f"load {m.get('load_average')}"
    )
    print(format_table(result))
    if args.out:
        from reinforcens.atomic import atomic_write_json

        atomic_write_json(Path(args.out), result, sort_keys=False)
    return 0


if __name__ == "__main__":  # the memory mode's child processes
    if len(sys.argv) > 1 and sys.argv[1] == "_train_child":
        _train_child(*sys.argv[2:7])
