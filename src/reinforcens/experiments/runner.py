"""Many training runs on one prepared dataset: cached run directories, resumption, parallel processes.

Every experiment (compare, tune, ablation, sweep) is a list of :class:`RunSpec`: a method (a sampler
with its options, or ``itempop``), a seed and the training values. Each spec has its own run directory,
named after the method and a hash of everything that defines the run, so

- a finished run (``metrics.json`` present) is reused as it is;
- an unfinished one (``config.json`` but no ``metrics.json``) is resumed with ``Trainer(..., resume=True)``;
- a rerun with other settings trains new runs beside the old ones instead of reusing them by mistake.

Learned samplers start from a pretrained BPR-GMF; a spec may name another spec (a ``uniform`` run of the
same seed) as its ``pretrain``: that run is done first and its ``best.pt`` initialises the learned one,
so pretraining is not repeated per method.

:func:`run_specs` executes the specs in-process (``jobs=1``) or in up to ``jobs`` spawned worker
processes, each with one torch thread, with one overall progress bar.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from reinforcens.errors import ConfigError

#: the method name of the popularity ranker (no training; one run per seed for paired tests)
ITEMPOP = "itempop"

#: the paper's display names of the methods (Tables 2 and 3)
LABELS = {
    ITEMPOP: "ItemPop",
    "uniform": "BPR-GMF",
    "popularity": "BPR-Pop",
    "dns": "BPR-DNS",
    "kbgan": "KBGAN",
    "irgan": "IRGAN",
    "exposure": "BPR-EN",
    "ebpr": "EBPR",
    "rns": "RNS",
    "rns-es": "RNS-ES",
}

#: keys of a run's config that do not change its result or are tied to its location
_IGNORED_KEYS = ("device", "pretrained", "seed")


@dataclass(frozen=True)
class Method:
    """A method of an experiment: a sampler (or ``itempop``) with option and training overrides.

    Attributes
    ----------
    key
        The method's name in tables and files (e.g. ``rns``, ``rns-as``, ``rns-es``).
    sampler
        Canonical sampler name, or :data:`ITEMPOP`.
    options
        Sampler options that override the defaults.
    values
        Training values (``lr``, ``l2``, ...) that override the experiment's common ones.
    label
        Display name (the paper's).
    """

    key: str
    sampler: str
    options: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def display(self) -> str:
        return self.label or LABELS.get(self.sampler, self.key)


@dataclass
class RunSpec:
    """One training run of an experiment.

    Attributes
    ----------
    key
        The method key (see :class:`Method`).
    sampler
        Canonical sampler name or :data:`ITEMPOP`.
    seed
        The run's seed.
    values
        All training values except ``sampler``, ``seed`` and ``pretrained`` (``sampler_options``
        included), as given to :meth:`reinforcens.config.TrainConfig.build`.
    run_dir
        The run directory (absolute).
    pretrain
        The run directory of the ``uniform`` run whose ``best.pt`` initialises this one, or ``None``.
    """

    key: str
    sampler: str
    seed: int
    values: dict[str, Any]
    run_dir: str
    pretrain: str | None = None

    def config(self):
        """The run's validated :class:`~reinforcens.config.TrainConfig`."""
        from reinforcens.config import TrainConfig

        values = dict(self.values)
        if self.pretrain is not None:
            values["init"] = "pretrained"
            values["pretrained"] = str(Path(self.pretrain) / "best.pt")
        return TrainConfig.build(**values, sampler=self.sampler, seed=self.seed)


def resolved_values(sampler: str, values: dict[str, Any]) -> dict[str, Any]:
    """The full, validated training values of a sampler (defaults filled in, no seed or sampler)."""
    from reinforcens.config import TrainConfig

    if sampler == ITEMPOP:
        return {}
    cfg = json.loads(TrainConfig.build(**values, sampler=sampler).to_json())
    for key in ("sampler", *_IGNORED_KEYS):
        cfg.pop(key, None)
    return cfg


def run_key(key: str, sampler: str, values: dict[str, Any], pretrain_key: str | None = None) -> str:
    """Directory name of a method's runs: the key and a hash of its resolved settings."""
    ident = {"sampler": sampler, "values": resolved_values(sampler, values), "pretrain": pretrain_key}
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in key)
    return f"{safe}-{digest}"


def needs_pretraining(sampler: str, values: dict[str, Any]) -> bool:
    """Whether a run of ``sampler`` with ``values`` starts from a pretrained BPR-GMF that compare
    should provide (its ``init`` resolves to ``pretrained`` and no checkpoint is given)."""
    from reinforcens.config import TrainConfig

    if sampler == ITEMPOP or values.get("pretrained"):
        return False
    return TrainConfig.build(**values, sampler=sampler).resolved_init() == "pretrained"


def plan(
    methods: Sequence[Method],
    seeds: Sequence[int],
    base: dict[str, Any],
    out: str | Path,
    pretrain_values: dict[str, Any] | None = None,
    seed_dir: Callable[[int], str] = lambda s: f"seed{s}",
) -> list[RunSpec]:
    """The runs of every method and seed, with shared ``uniform`` pretraining runs where needed.

    Parameters
    ----------
    methods
        The methods.
    seeds
        The seeds; every method runs on each.
    base
        Training values common to all methods (``sampler_options`` holds options given for all
        samplers; each method keeps those its sampler has).
    out
        The experiment directory; runs go to ``out/runs/<key>-<hash>/seed<k>``.
    pretrain_values
        Training values of the shared ``uniform`` pretraining run (default: ``base``). If a method with
        the ``uniform`` sampler has exactly these values, it *is* that run.
    seed_dir
        The name of a seed's directory inside a method's directory.

    Returns
    -------
    list of RunSpec
        Pretraining runs first.
    """
    runs_dir = Path(out).resolve() / "runs"
    pre_values = method_values(Method("uniform", "uniform"), pretrain_values or base)
    pre_key = run_key("uniform", "uniform", pre_values)
    pre_specs: dict[int, RunSpec] = {}
    specs: list[RunSpec] = []

    def pre_spec(seed: int) -> RunSpec:
        if seed not in pre_specs:
            pre_specs[seed] = RunSpec(
                "uniform", "uniform", seed, pre_values, str(runs_dir / pre_key / seed_dir(seed))
            )
        return pre_specs[seed]

    for m in methods:
        values = method_values(m, base)
        pretrain = needs_pretraining(m.sampler, values)
        key = run_key(m.key, m.sampler, values, pre_key if pretrain else None)
        for seed in seeds:
            run_dir = str(runs_dir / key / seed_dir(seed))
            if m.sampler == "uniform" and resolved_values("uniform", values) == resolved_values(
                "uniform", pre_values
            ):
                run_dir = pre_spec(seed).run_dir
            spec = RunSpec(m.key, m.sampler, seed, values, run_dir)
            if pretrain:
                spec.pretrain = pre_spec(seed).run_dir
            specs.append(spec)
    extra = [s for s in pre_specs.values() if all(s.run_dir != x.run_dir for x in specs)]
    return extra + sorted(specs, key=lambda s: s.pretrain is not None)


def method_values(method: Method, base: dict[str, Any]) -> dict[str, Any]:
    """The training values of ``method``: ``base`` with the method's overrides; of the sampler options
    in ``base``, only those that the sampler has and that do not define the method (see
    :data:`DEFINING_OPTIONS`)."""
    from reinforcens.samplers import SAMPLERS

    values = {k: v for k, v in base.items() if k != "sampler_options"}
    if method.sampler == ITEMPOP:
        return {}
    fields = SAMPLERS[method.sampler].Config.model_fields
    fixed = DEFINING_OPTIONS.get(method.sampler, ())
    opts = {k: v for k, v in (base.get("sampler_options") or {}).items() if k in fields and k not in fixed}
    values.update({k: v for k, v in method.values.items() if k != "sampler_options"})
    opts.update(method.values.get("sampler_options", {}))
    opts.update(method.options)
    values["sampler_options"] = opts
    return values


#: options that make a sampler what it is; options given for all methods leave them alone
#: (e.g. ``--alpha`` tunes RNS and must not turn KBGAN, whose alpha is 0, into RNS)
DEFINING_OPTIONS: dict[str, tuple[str, ...]] = {
    "kbgan": ("alpha", "beta", "exposed_candidates", "hardness"),
    "irgan": ("alpha", "beta", "exposed_candidates", "hardness"),
    "rns-es": ("hardness",),
}


def check_options_used(methods: Sequence[Method], options: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` if a sampler option given for all methods applies to none."""
    from reinforcens.samplers import SAMPLERS

    unused = []
    for name in options:
        if not any(
            m.sampler != ITEMPOP
            and name in SAMPLERS[m.sampler].Config.model_fields
            and name not in DEFINING_OPTIONS.get(m.sampler, ())
            for m in methods
        ):
            unused.append(name)
    if unused:
        raise ConfigError(f"sampler option(s) {', '.join(unused)} apply to none of the methods")


# ---------------------------------------------------------------------- executing one run
_DATA: dict[str, Any] = {}


def _load_data(path: str):
    from reinforcens.data.prepared import load_prepared

    if path not in _DATA:
        _DATA.clear()
        _DATA[path] = load_prepared(path)
    return _DATA[path]


def _itempop(spec: RunSpec, data_path: str) -> dict[str, Any]:
    from reinforcens.evaluation import ItemPop, evaluate

    data = _load_data(data_path)
    k = int(spec.values.get("full_k", 20))
    results = evaluate(ItemPop.fit(data), data, full_k=k)
    metrics: dict[str, Any] = {"sampler": ITEMPOP, "seed": spec.seed, "best_epoch": 0, "epochs": 0}
    for split, vals in results.items():
        for name, v in vals.items():
            metrics[f"{split}.{name}"] = v
    return metrics


def execute(spec: RunSpec, data_path: str) -> dict[str, Any]:
    """Run (or reuse, or resume) one spec; returns ``{"status", "run_dir", "metrics"}``.

    ``status`` is ``"cached"`` (finished before), ``"resumed"`` (an unfinished run continued) or
    ``"trained"`` (started afresh).

    Raises
    ------
    ConfigError
        If the run directory holds a finished run of other settings.
    """
    run_dir = Path(spec.run_dir)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        if spec.sampler != ITEMPOP:
            _check_same_config(spec, run_dir)
        return {"status": "cached", "run_dir": spec.run_dir, "metrics": json.loads(metrics_path.read_text())}
    if spec.sampler == ITEMPOP:
        metrics = _itempop(spec, data_path)
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / ".metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        tmp.replace(metrics_path)
        return {"status": "trained", "run_dir": spec.run_dir, "metrics": metrics}

    from reinforcens.train import Trainer

    if _WORKER_THREADS is not None:
        from reinforcens.backend import set_threads

        set_threads(_WORKER_THREADS)
    config = spec.config()
    resume = (run_dir / "config.json").is_file()
    Trainer(_load_data(data_path), config, run_dir, progress=False, resume=resume).fit()
    metrics = json.loads(metrics_path.read_text())
    return {"status": "resumed" if resume else "trained", "run_dir": spec.run_dir, "metrics": metrics}


def _check_same_config(spec: RunSpec, run_dir: Path) -> None:
    saved = json.loads((run_dir / "config.json").read_text())
    mine = json.loads(spec.config().to_json())
    diff = sorted(k for k in mine if k not in ("device", "pretrained") and saved.get(k) != mine[k])
    if diff:
        raise ConfigError(f"{run_dir} holds a finished run with other settings ({', '.join(diff)})")


_WORKER_THREADS: int | None = None


def _init_worker(threads: int) -> None:
    """Worker-process set-up: the torch thread count, applied when a run first needs torch."""
    global _WORKER_THREADS
    _WORKER_THREADS = threads


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def default_jobs() -> int:
    """The number of CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def run_specs(
    specs: Sequence[RunSpec],
    data_path: str | Path,
    jobs: int = 1,
    progress: bool = True,
    desc: str = "runs",
) -> dict[str, dict[str, Any]]:
    """Execute ``specs`` (pretraining runs before the runs that need them).

    Parameters
    ----------
    specs
        The runs; duplicates (the same ``run_dir``) run once.
    data_path
        The prepared dataset directory.
    jobs
        Parallel worker processes; 1 runs everything in this process.
    progress
        Show one progress bar over all runs.
    desc
        The progress bar's label.

    Returns
    -------
    dict
        ``{run_dir: {"status", "run_dir", "metrics"}}`` for every spec.

    Notes
    -----
    The first failing run stops the experiment: queued runs are cancelled, the error is raised, and the
    finished runs stay cached for the next call. An interrupted run resumes at its last epoch.
    """
    data_path = str(Path(data_path).resolve())
    unique: dict[str, RunSpec] = {}
    for s in specs:
        unique.setdefault(s.run_dir, s)
    waiting = list(unique.values())
    # runs that others depend on go first
    needed = {s.pretrain for s in waiting if s.pretrain}
    waiting.sort(key=lambda s: (s.run_dir not in needed, s.pretrain is not None))
    done: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(waiting), desc=desc, unit="run", disable=not progress, dynamic_ncols=True)

    def ready(s: RunSpec) -> bool:
        return s.pretrain is None or s.pretrain not in unique or s.pretrain in done

    def finished(result: dict[str, Any]) -> None:
        done[result["run_dir"]] = result
        bar.update(1)
        bar.set_postfix_str(f"{Path(result['run_dir']).parent.name.rsplit('-', 1)[0]} {result['status']}")

    try:
        if jobs <= 1:
            while waiting:
                s = next(x for x in waiting if ready(x))
                waiting.remove(s)
                finished(execute(s, data_path))
            return done
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(1,)) as pool:
            running: dict[Future, RunSpec] = {}
            try:
                while waiting or running:
                    for s in [x for x in waiting if ready(x)][: max(jobs - len(running), 0)]:
                        waiting.remove(s)
                        running[pool.submit(execute, s, data_path)] = s
                    if not running:  # pragma: no cover - a dependency outside the plan
                        raise ConfigError("runs wait for a pretraining run that is not planned")
                    finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished_now:
                        running.pop(fut)
                        finished(fut.result())
            except BaseException:
                # interrupted or failed: stop the workers now (their runs resume from their last epoch)
                for fut in running:
                    fut.cancel()
                _terminate_workers(pool)
                raise
        return done
    finally:
        bar.close()
