"""Many training runs on one prepared dataset: cached run directories, resumption, parallel processes.

Every experiment (compare, tune, ablation, sweep) is a list of :class:`RunSpec`: a method (a sampler
with its options, or ``itempop``), a seed and the training values. Each spec has its own run directory,
named after the method and a hash of everything that defines the run, the prepared dataset's content
fingerprint included (not its path: a copied or moved dataset keeps its runs), so

- a finished run (``metrics.json`` present) is reused only if it verifies
  (:func:`reinforcens.rundir.verify_finished`: its files parse, its config and data are the ones asked
  for, ``best.pt`` has the recorded checksum); one that does not is a one-line error naming the file;
- an unfinished one (``config.json`` but no ``metrics.json``) is resumed with ``Trainer(..., resume=True)``;
- a rerun with other settings, or on other data, trains new runs beside the old ones instead of reusing
  them by mistake.

Learned samplers start from a pretrained BPR-GMF; a spec may name another spec (a ``uniform`` run of the
same seed) as its ``pretrain``: that run is done first and its ``best.pt`` initialises the learned one,
so pretraining is not repeated per method.

:func:`run_specs` executes the specs with one overall progress bar on an engine
(:mod:`reinforcens.experiments.engines`): ``local``, in-process (``jobs=1``) or in up to ``jobs`` spawned
worker processes, each with one torch thread, that die with the process that started them (however it
ends, ``kill -9`` included); or ``ray``, one Ray task per run, on a local Ray or a cluster. SIGTERM stops
an experiment as an interrupt does (:class:`~reinforcens.errors.Terminated`): the runs still going are
stopped and the finished runs kept.

An experiment's directory is written by one process at a time: each experiment holds
``DirectoryLock(out, "experiment")`` (:mod:`reinforcens.lock`) while it runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from reinforcens import rundir
from reinforcens.atomic import atomic_write_json
from reinforcens.errors import ConfigError, RunStopped
from reinforcens.lock import DirectoryLock

if TYPE_CHECKING:
    from reinforcens.data.prepared import PreparedDataset

#: the method name of the popularity ranker (no training; one run per seed for paired tests)
ITEMPOP = "itempop"

#: the display name of :data:`ITEMPOP` (a sampler's is its class's ``label``)
ITEMPOP_LABEL = "ItemPop"


def display_name(name: str, model: str = "gmf", default: str | None = None) -> str:
    """The paper's display name of a method (Tables 2 and 3): ``ItemPop`` for :data:`ITEMPOP`, a
    sampler's label (:func:`reinforcens.samplers.method_label`, e.g. ``BPR-GMF`` for ``uniform``) for
    a registry name, otherwise ``default`` (``name`` itself if not given)."""
    from reinforcens.samplers import SAMPLERS, method_label

    if name == ITEMPOP:
        return ITEMPOP_LABEL
    if name in SAMPLERS:
        return method_label(name, model)
    return name if default is None else default


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
        return self.label or display_name(self.sampler, default=self.key)


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
    on_validate
        A picklable callable given to the trainer (:class:`reinforcens.train.Trainer`'s
        ``on_validate``), e.g. a tuner's report of intermediate scores; it does not define the run.
    """

    key: str
    sampler: str
    seed: int
    values: dict[str, Any]
    run_dir: str
    pretrain: str | None = None
    on_validate: Callable[[int, dict[str, float]], None] | None = None

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

    if sampler == ITEMPOP:  # not trained: only the cut-off of its full-ranking metrics matters
        return {"full_k": int(values.get("full_k", 20))}
    from reinforcens.config import canonical_model_keys

    cfg = canonical_model_keys(json.loads(TrainConfig.build(**values, sampler=sampler).to_json()), sampler)
    for key in ("sampler", *_IGNORED_KEYS):
        cfg.pop(key, None)
    return cfg


def run_key(
    key: str, sampler: str, values: dict[str, Any], pretrain_key: str | None = None, *, fingerprint: str
) -> str:
    """Directory name of a method's runs: the key and a hash of its resolved settings and data.

    Parameters
    ----------
    key
        The method key.
    sampler
        Canonical sampler name or :data:`ITEMPOP`.
    values
        The method's training values.
    pretrain_key
        What identifies the run whose ``best.pt`` initialises these runs, if any.
    fingerprint
        The prepared dataset's content fingerprint (:attr:`PreparedDataset.fingerprint`), so that runs
        on other data never share a directory and a copied or moved dataset finds its runs.

    Returns
    -------
    str
        ``<key>-<hash>``, with the characters of ``key`` that are unsafe in a file name replaced.
    """
    ident = {
        "sampler": sampler,
        "values": resolved_values(sampler, values),
        "pretrain": pretrain_key,
        "data": fingerprint,
    }
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


#: the key of a shared pretraining run that is not itself a method's run (never a method key, so
#: tables skip it even when a method is keyed ``uniform``)
PRETRAINING = "uniform (pretraining)"


def plan(
    methods: Sequence[Method],
    seeds: Sequence[int],
    base: dict[str, Any],
    out: str | Path,
    pretrain_values: dict[str, Any] | None = None,
    seed_dir: Callable[[int], str] = lambda s: f"seed{s}",
    *,
    fingerprint: str,
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
    fingerprint
        The prepared dataset's content fingerprint (see :func:`run_key` and :func:`data_fingerprint`).

    Returns
    -------
    list of RunSpec
        Pretraining runs first.
    """
    runs_dir = Path(out).resolve() / "runs"
    pre_values = pretraining_values(pretrain_values or base)
    pre_key = run_key("uniform", "uniform", pre_values, fingerprint=fingerprint)
    pre_specs: dict[int, RunSpec] = {}
    specs: list[RunSpec] = []

    def pre_spec(seed: int) -> RunSpec:
        if seed not in pre_specs:
            pre_specs[seed] = RunSpec(
                PRETRAINING, "uniform", seed, pre_values, str(runs_dir / pre_key / seed_dir(seed))
            )
        return pre_specs[seed]

    for m in methods:
        values = method_values(m, base)
        pretrain = needs_pretraining(m.sampler, values)
        key = run_key(m.key, m.sampler, values, pre_key if pretrain else None, fingerprint=fingerprint)
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


def pretraining_values(base: dict[str, Any]) -> dict[str, Any]:
    """The training values of a shared BPR-GMF pretraining run: ``base`` for ``uniform``, started from
    scratch (with ``init: pretrained`` given for all methods it would otherwise wait for itself)."""
    values = method_values(Method("uniform", "uniform"), base)
    return {k: v for k, v in values.items() if k != "init"}


def method_values(method: Method, base: dict[str, Any]) -> dict[str, Any]:
    """The training values of ``method``: ``base`` with the method's overrides; of the sampler options
    in ``base``, only those that the sampler has and that do not define the method (its
    :attr:`~reinforcens.samplers.NegativeSampler.defining_options`: e.g. ``--alpha`` tunes RNS and
    must not turn KBGAN, whose alpha is 0, into RNS)."""
    from reinforcens.samplers import SAMPLERS

    values = {k: v for k, v in base.items() if k != "sampler_options"}
    if method.sampler == ITEMPOP:
        return {k: v for k, v in values.items() if k == "full_k"}
    fields = SAMPLERS[method.sampler].Config.model_fields
    fixed = SAMPLERS[method.sampler].defining_options
    opts = {k: v for k, v in (base.get("sampler_options") or {}).items() if k in fields and k not in fixed}
    values.update({k: v for k, v in method.values.items() if k != "sampler_options"})
    opts.update(method.values.get("sampler_options", {}))
    opts.update(method.options)
    values["sampler_options"] = opts
    return values


def check_options_used(methods: Sequence[Method], options: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` if a sampler option given for all methods applies to none."""
    from reinforcens.samplers import SAMPLERS

    unused = []
    for name in options:
        if not any(
            m.sampler != ITEMPOP
            and name in SAMPLERS[m.sampler].Config.model_fields
            and name not in SAMPLERS[m.sampler].defining_options
            for m in methods
        ):
            unused.append(name)
    if unused:
        raise ConfigError(f"sampler option(s) {', '.join(unused)} apply to none of the methods")


# ---------------------------------------------------------------------- executing one run
#: the prepared dataset this process has loaded, by its path and the identity of its ``meta.json``
_DATA: dict[tuple[str, int, int], PreparedDataset] = {}


def _load_data(path: str) -> PreparedDataset:
    """The prepared dataset at ``path``, loaded (its fingerprint verified) once per process and again
    if it was replaced on disk since."""
    from reinforcens.data.prepared import load_prepared

    try:
        meta = (Path(path) / "meta.json").stat()
        ident = (path, meta.st_ino, meta.st_mtime_ns)
    except OSError:  # not a prepared dataset: load_prepared says so
        return load_prepared(path)
    if ident not in _DATA:
        _DATA.clear()
        _DATA[ident] = load_prepared(path)
    return _DATA[ident]


def data_fingerprint(data_path: str | Path) -> str:
    """The content fingerprint of the prepared dataset at ``data_path``, which names its runs (see
    :func:`run_key`); the dataset is loaded and verified as the runs load it."""
    return _load_data(str(Path(data_path).resolve())).fingerprint


def _itempop_metrics(spec: RunSpec, data: PreparedDataset) -> dict[str, Any]:
    from reinforcens.evaluation import ItemPop, evaluate

    k = int(spec.values.get("full_k", 20))
    results = evaluate(ItemPop.fit(data), data, full_k=k)
    metrics: dict[str, Any] = {"sampler": ITEMPOP, "seed": spec.seed, "best_epoch": 0, "epochs": 0}
    for split, vals in results.items():
        for name, v in vals.items():
            metrics[f"{split}.{name}"] = v
    return metrics


def run_status(run_dir: str | Path) -> str:
    """What :func:`execute` will do with a run directory: ``"cached"`` (it holds a finished run, to
    verify), ``"resumed"`` (a started one) or ``"trained"`` (nothing yet)."""
    run_dir = Path(run_dir)
    if (run_dir / rundir.METRICS).is_file():
        return "cached"
    return "resumed" if (run_dir / rundir.CONFIG).is_file() else "trained"


def execute(spec: RunSpec, data_path: str, threads: int | None = None) -> dict[str, Any]:
    """Run (or reuse, or resume) one spec; returns ``{"status", "run_dir", "metrics"}``.

    ``status`` is ``"cached"`` (finished before), ``"resumed"`` (an unfinished run continued) or
    ``"trained"`` (started afresh), see :func:`run_status`; or ``"stopped"`` when the spec's
    ``on_validate`` hook stopped the run (:class:`~reinforcens.errors.RunStopped`; ``metrics`` is then
    ``None`` and ``reason`` says why; the run stays resumable). A finished run is reused only if it verifies
    (:func:`reinforcens.rundir.verify_finished`; for ``itempop``, its ``data.json``). ``threads``: the
    torch thread count to set before training (a worker process's, see
    :mod:`reinforcens.experiments.engines`); ``None`` leaves it.

    Raises
    ------
    ConfigError
        If the run directory holds a run of other settings or on other data.
    DataError
        If one of the run's files is corrupt (the message names it), ``best.pt`` included.
    reinforcens.lock.LockedError
        If another process writes the run.
    """
    run_dir = Path(spec.run_dir)
    data = _load_data(data_path)
    status = run_status(run_dir)
    if spec.sampler == ITEMPOP:
        metrics = _run_itempop(spec, data, run_dir)
    else:
        try:
            metrics = _run_trained(spec, data, run_dir, threads)
        except RunStopped as exc:
            return {"status": "stopped", "run_dir": spec.run_dir, "metrics": None, "reason": str(exc)}
    return {"status": status, "run_dir": spec.run_dir, "metrics": metrics}


def _run_trained(
    spec: RunSpec, data: PreparedDataset, run_dir: Path, threads: int | None = None
) -> dict[str, Any]:
    """Train, resume or verify the run with the trainer (which holds the run's lock). Always with
    ``resume=True``: a run that another process started or finished meanwhile is continued or verified,
    never refused with a hint at a flag the experiments do not have."""
    from reinforcens.train import Trainer

    if threads is not None:
        from reinforcens.backend import set_threads

        set_threads(threads)
    Trainer(data, spec.config(), run_dir, progress=False, resume=True, on_validate=spec.on_validate).fit()
    return rundir.read_json(run_dir / rundir.METRICS)


def _run_itempop(spec: RunSpec, data: PreparedDataset, run_dir: Path) -> dict[str, Any]:
    """Evaluate ItemPop once (``data.json``, then ``metrics.json``) or check the finished run's data."""
    with DirectoryLock(run_dir, "run"):
        if not (run_dir / rundir.METRICS).is_file():
            atomic_write_json(run_dir / rundir.DATA, data.describe())
            atomic_write_json(run_dir / rundir.METRICS, _itempop_metrics(spec, data))
        rundir.check_same_data(run_dir, data.fingerprint)
        return rundir.read_json(run_dir / rundir.METRICS)


# ---------------------------------------------------------------------- executing many runs
def default_jobs() -> int:
    """The number of CPUs this process may use (:func:`reinforcens.backend.available_cpus`)."""
    from reinforcens.backend import available_cpus

    return available_cpus()


def run_specs(
    specs: Sequence[RunSpec],
    data_path: str | Path,
    jobs: int = 1,
    progress: bool = True,
    desc: str = "runs",
    engine: str = "local",
    address: str | None = None,
    then: Callable[[dict[str, Any]], Sequence[RunSpec] | None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Execute ``specs`` (pretraining runs before the runs that need them).

    Parameters
    ----------
    specs
        The runs; duplicates (the same ``run_dir``) run once.
    data_path
        The prepared dataset directory.
    jobs
        Local engine: parallel worker processes (1 runs everything in this process). Ray: the CPUs of
        the local Ray it starts (ignored with ``address`` or an initialised Ray).
    progress
        Show one progress bar over all runs.
    desc
        The progress bar's label.
    engine
        ``"local"`` (this process, or a pool of ``jobs`` worker processes) or ``"ray"`` (one Ray task
        per run); see :func:`reinforcens.experiments.engines.make_engine`.
    address
        The Ray cluster's address (``"auto"``, or ``host:port``) with ``engine="ray"``; ``None`` starts
        a local Ray.
    then
        Called with each result as it arrives (in this process); the runs it returns are executed too
        (their results join the returned ones), so that a caller can keep ``jobs`` runs going while
        it decides what to run next.

    Returns
    -------
    dict
        ``{run_dir: {"status", "run_dir", "metrics"}}`` for every spec (and every run ``then``
        added), whatever the engine.

    Raises
    ------
    ConfigError
        If ``engine`` is unknown, or is ``"ray"`` and Ray is not installed (before any run starts).

    Notes
    -----
    The first failing run stops the experiment: queued runs are cancelled, running ones stopped, the
    error is raised, and the finished runs stay cached for the next call. An interrupted run resumes at
    its last epoch. SIGTERM interrupts as Ctrl-C does, raising :class:`~reinforcens.errors.Terminated`
    (a :class:`KeyboardInterrupt`). Local worker processes never outlive this process.
    """
    from reinforcens.experiments.engines import make_engine

    executor = make_engine(engine, jobs, address)  # before anything runs: an unknown engine, no Ray
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

    def finished(result: dict[str, Any]) -> Sequence[RunSpec]:
        done[result["run_dir"]] = result
        bar.update(1)
        bar.set_postfix_str(f"{Path(result['run_dir']).parent.name.rsplit('-', 1)[0]} {result['status']}")
        more = list(then(result) or ()) if then is not None else []
        if more:
            bar.total += len(more)
            bar.refresh()
        return more

    try:
        executor.run(waiting, data_path, finished, more=then is not None)
        return done
    finally:
        bar.close()
