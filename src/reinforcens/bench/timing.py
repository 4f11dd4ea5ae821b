"""Epoch timing of our methods and of implicit's BPR, in one process.

Timed methods (:data:`METHODS`):

* ``implicit``: one epoch of :class:`implicit.cpu.bpr.BayesianPersonalizedRanking` (factors 32), if
  the optional ``bench`` extra is installed;
* ``bpr``, ``dns``, ``rns30``, ``rns100``, ``rns30fast``: one :meth:`reinforcens.train.Trainer.train_epoch`
  of the run's model (BPR-GMF by default) with uniform, DNS and RNS negatives (``N_s`` = 30 and 100,
  MMD on; ``rns30fast``: the ``rns-fast`` sampler, the MMD from random Fourier features), built from
  the public training API (:func:`build_method`);
* ``eval_lists``: the list AUC/NDCG of every test user (:func:`reinforcens.evaluation.evaluate_lists`).

Each method is warmed up first (our methods on a few batches); the methods then run interleaved,
``repeats`` times, so that every method sees the same machine load. The reported time of a method is
the median of its runs, and the ratios (:func:`reinforcens.bench.report.ratios`) are ratios of those
medians, so they come from one run on one machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reinforcens.bench.cache import ensure_prepared
from reinforcens.bench.console import note
from reinforcens.bench.machine import machine_info
from reinforcens.bench.report import ratios
from reinforcens.errors import ConfigError

if TYPE_CHECKING:
    from reinforcens.data.prepared import PreparedDataset
    from reinforcens.models import Recommender
    from reinforcens.samplers import NegativeSampler
    from reinforcens.train import Trainer

METHODS = ("implicit", "bpr", "dns", "rns30", "rns100", "rns30fast", "eval_lists")
#: sampler name and options of each of our timed methods
OUR_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "bpr": ("uniform", {}),
    "dns": ("dns", {}),
    "rns30": ("rns", {"n_candidates": 30}),
    "rns100": ("rns", {"n_candidates": 100}),
    "rns30fast": ("rns-fast", {"n_candidates": 30}),
}


class Clock:
    """A wall-clock timer that waits for queued device work before reading the time.

    Parameters
    ----------
    device
        The device whose queued work (CUDA) is waited for.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        """Seconds (:func:`time.perf_counter`) once the device's queued work is done."""
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def streams(seed: int, device: torch.device, n: int) -> list[torch.Generator]:
    """Independent random streams on ``device`` from one seed (numpy ``SeedSequence``).

    Parameters
    ----------
    seed
        The seed.
    device
        The device of the generators.
    n
        How many streams.

    Returns
    -------
    list of torch.Generator
        The streams (the trainer derives its model, data-order and sampler streams the same way).
    """
    states = np.random.SeedSequence(seed).generate_state(n, dtype=np.uint64)
    gens = []
    for s in states:
        g = torch.Generator(device=device)
        g.manual_seed(int(s) & ((1 << 63) - 1))
        gens.append(g)
    return gens


@dataclasses.dataclass
class OurMethod:
    """One of our methods, ready to run epochs: a model, its optimizer, a sampler and a batch stream,
    trained by a :class:`~reinforcens.train.Trainer`'s public :meth:`~reinforcens.train.Trainer.train_epoch`.

    Attributes
    ----------
    name
        The method (a key of :data:`OUR_METHODS`).
    trainer
        The trainer whose ``train_epoch`` runs an epoch (and whose ``train_data`` the sampler draws from).
    model
        The recommender.
    optimizer
        The recommender's optimizer (``model.make_optimizer``).
    sampler
        The negative sampler.
    batch_gen
        The stream of the batches' order.
    """

    name: str
    trainer: Trainer
    model: Recommender
    optimizer: Any
    sampler: NegativeSampler
    batch_gen: torch.Generator

    def epoch(self) -> dict[str, float]:
        """One training epoch (``Trainer.train_epoch``); returns its loss and sampler statistics."""
        return self.trainer.train_epoch(self.model, self.optimizer, self.sampler, self.batch_gen, 1, "bench")

    def train_batches(self, batches: int) -> None:
        """Train the first ``batches`` batches of an epoch with the steps of ``train_epoch`` (sample,
        BPR step, sampler update), then end the sampler's epoch: the warm-up before timing (it compiles
        the kernels and fills the caches), or a short run to profile.

        Parameters
        ----------
        batches
            How many batches (at most an epoch's; 0: none).
        """
        if batches <= 0:
            return
        from reinforcens.train import bpr_step

        cfg = self.trainer.config
        data = self.trainer.train_data
        for b, (users, pos) in enumerate(data.batches(cfg.batch_size, self.batch_gen)):
            if b >= batches:
                break
            neg = self.sampler.sample(users, pos, self.model)
            _, neg_s = bpr_step(self.optimizer, users, pos, neg, cfg.l2)
            self.sampler.update(users, pos, neg, self.model, neg_s)
        self.sampler.epoch_end()


def build_method(trainer: Trainer, name: str, seed: int) -> OurMethod:
    """Build one of our methods on ``trainer``'s data with the public training API.

    The model is :func:`reinforcens.models.make_model` of the trainer's config, the sampler
    :func:`reinforcens.samplers.make_sampler` on ``trainer.train_data`` and the optimizer
    ``model.make_optimizer(lr, train_data.ops)``, as the trainer builds them for a run.

    Parameters
    ----------
    trainer
        A trainer built publicly, e.g. ``Trainer(data, config, None, progress=False)``; its config
        gives the model, learning rate, L2, batch size and the learned samplers' settings.
    name
        A key of :data:`OUR_METHODS`.
    seed
        Seed of the model's initialisation, the batches' order and the sampler's draws.

    Returns
    -------
    OurMethod
        The method, ready to train epochs.
    """
    from reinforcens.models import ModelSpec, make_model
    from reinforcens.samplers import SamplerContext, make_sampler

    sampler_name, options = OUR_METHODS[name]
    cfg = trainer.config
    init, order, draws = streams(seed, trainer.device, 3)
    model_seed = int(torch.randint(0, 2**62, (1,), generator=init, device=init.device))
    model = make_model(
        ModelSpec.of(cfg, trainer.data), generator=torch.Generator().manual_seed(model_seed)
    ).to(trainer.device)
    ctx = SamplerContext(
        dim=cfg.dim, lr=cfg.lr, l2=cfg.l2, init_std=cfg.init_std, model=cfg.resolved_sampler_model()
    )
    sampler = make_sampler(sampler_name, trainer.train_data, draws, options, ctx)
    optimizer = model.make_optimizer(cfg.lr, trainer.train_data.ops, cfg.optimizer)
    return OurMethod(name, trainer, model, optimizer, sampler, order)


def implicit_epoch(data: PreparedDataset, threads: int, seed: int) -> Callable[[], None] | None:
    """A function fitting one epoch of implicit's CPU BPR (factors 32) on the training clicks.

    Parameters
    ----------
    data
        The prepared dataset.
    threads
        implicit's ``num_threads``.
    seed
        implicit's ``random_state``.

    Returns
    -------
    callable or None
        The function, or ``None`` if implicit is not installed.
    """
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


@contextlib.contextmanager
def blas_single_thread() -> Iterator[None]:
    """Limit BLAS to one thread (as implicit recommends) while the context runs, if threadpoolctl is
    installed; otherwise do nothing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1, "blas"):
        yield


def time_interleaved(
    runners: dict[str, Callable[[], Any]], repeats: int, clock: Clock, quiet: bool = False
) -> dict[str, list[float]]:
    """Run every function ``repeats`` times, interleaved (one of each per round), timing each run.

    Parameters
    ----------
    runners
        The functions by method name.
    repeats
        Rounds.
    clock
        The timer.
    quiet
        Print no per-round times on stderr.

    Returns
    -------
    dict
        Each method's run times in seconds, in order.
    """
    times: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(repeats):
        for name, fn in runners.items():
            t0 = clock.now()
            fn()
            times[name].append(clock.now() - t0)
        note(f"run {r + 1}/{repeats}: " + "  ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()), quiet)
    return times


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
    optimizer: str = "adam",
) -> dict[str, Any]:
    """Time the methods on a preset (see the module docstring).

    Parameters
    ----------
    preset
        A simulator preset; simulated and prepared into ``cache`` on first use.
    cache
        The preset cache folder (:mod:`reinforcens.bench.cache`).
    repeats
        Timed runs per method; the median is reported.
    threads
        Threads of torch and the compiled kernels.
    device
        Torch device of our methods (implicit always runs on the CPU).
    methods
        Subset of :data:`METHODS`.
    warmup_batches
        Batches each of our methods trains before its first timed epoch.
    seed
        Simulation and training seed.
    quiet
        Print no progress on stderr.
    implicit_threads
        implicit's ``num_threads`` (default: ``threads``).
    backend
        Training kernels of our methods (:mod:`reinforcens.backend`).
    recommender
        The model of our methods (the ``model`` config value).
    optimizer
        The recommender's update rule (the ``optimizer`` config value: ``"adam"`` or ``"sgd"``).

    Returns
    -------
    dict
        The result: ``mode`` (``"timing"``), ``preset``, ``seed``, ``repeats``, ``warmup_batches``,
        ``data`` (the dataset's statistics), ``batch_size``, ``batches_per_epoch``, ``machine``,
        ``times`` (per method ``median`` and ``runs``, seconds), ``ratios`` and ``skipped`` (methods not
        run, with the reason).

    Raises
    ------
    ConfigError
        For an unknown method or ``repeats`` below 1.
    """
    from reinforcens.backend import set_threads
    from reinforcens.config import TrainConfig
    from reinforcens.data.prepared import load_prepared
    from reinforcens.evaluation import evaluate_lists
    from reinforcens.models import TorchScorer
    from reinforcens.train import Trainer

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ConfigError(f"unknown --methods {', '.join(unknown)}; known: {', '.join(METHODS)}")
    if repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    set_threads(threads)
    prep = ensure_prepared(preset, cache, seed, quiet)
    data = load_prepared(prep)
    cfg = TrainConfig.build(device=device, seed=seed, backend=backend, model=recommender, optimizer=optimizer)
    trainer = Trainer(data, cfg, None, progress=False)
    clock = Clock(trainer.device)

    runners: dict[str, Callable[[], Any]] = {}
    skipped: dict[str, str] = {}
    ours: dict[str, OurMethod] = {}
    for name in methods:
        if name == "implicit":
            fit = implicit_epoch(data, implicit_threads or threads, seed)
            if fit is None:
                skipped[name] = "implicit is not installed (pip install 'reinforcens[bench]')"
                continue
            runners[name] = fit
        elif name in OUR_METHODS:
            ours[name] = build_method(trainer, name, seed)
            runners[name] = ours[name].epoch
    if "eval_lists" in methods:
        model = ours["bpr"].model if "bpr" in ours else build_method(trainer, "bpr", seed).model
        scorer = TorchScorer(model, trainer.backend)
        runners["eval_lists"] = lambda: evaluate_lists(scorer, data.test)

    with blas_single_thread():
        note(f"warming up {', '.join(runners)}", quiet)
        for name, fn in runners.items():
            if name in ours:
                ours[name].train_batches(warmup_batches)
            else:
                fn()
        times = time_interleaved(runners, repeats, clock, quiet)

    med = {name: statistics.median(v) for name, v in times.items()}
    n_train = data.stats()["train"]
    return {
        "mode": "timing",
        "preset": preset,
        "seed": seed,
        "repeats": repeats,
        "warmup_batches": warmup_batches,
        "data": data.stats(),
        "batch_size": cfg.batch_size,
        "batches_per_epoch": -(-n_train // cfg.batch_size),
        "machine": machine_info(threads, trainer.device)
        | {"implicit_threads": implicit_threads or threads, "backend": trainer.backend, "model": recommender,
           "optimizer": optimizer},
        "times": {name: {"median": med[name], "runs": times[name]} for name in times},
        "ratios": ratios(med),
        "skipped": skipped,
    }
