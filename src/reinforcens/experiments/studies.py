"""The Optuna studies of ``reinforcens tune``: one per method, in a journal file, asked, run and told
in rounds, each study at its own pace (the behaviour is described in
:mod:`reinforcens.experiments.tune`); and the reporter that prunes a run from its worker process.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from reinforcens import rundir
from reinforcens.errors import ConfigError, RunStopped
from reinforcens.experiments.runner import (
    Method,
    RunSpec,
    method_values,
    pretraining_values,
    resolved_values,
    run_key,
    run_specs,
)
from reinforcens.experiments.search_space import Range, Space, grid_size, setting_values

#: the Optuna samplers ``--sampler`` names
SAMPLER_KINDS = ("tpe", "grid", "random")
DEFAULT_SAMPLER = "tpe"

#: the study journal's name in the tune directory
JOURNAL = "optuna.journal"

#: asks of a repeated setting before a trial takes an untried one drawn at random
MAX_ASKS = 10

#: TPE's random first trials (its ``n_startup_trials``): until that many of a study's trials are
#: complete or pruned, its proposals do not depend on the values told
TPE_STARTUP = 10

#: spaces up to this size are enumerated to find an untried setting
_ENUMERATE_MAX = 100_000

#: the user attribute of a trial whose run its pruner stopped: the epoch
PRUNED_ATTR = "pruned_epoch"


def default_pruner() -> optuna.pruners.BasePruner:
    """The pruner of ``--prune``: the median stopping rule, once 5 trials of the method completed and
    from a run's 5th epoch on (a learned sampler's first epochs move a lot)."""
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)


#: a description of :func:`default_pruner` for messages and docs
DEFAULT_PRUNER = "MedianPruner(n_startup_trials=5, n_warmup_steps=5)"



# ---------------------------------------------------------------------- the studies
@dataclass(eq=False)
class _Search:
    """One method's study and what its trials need."""

    method: str
    space: Space
    budget: int
    kind: str  # the effective sampler
    study: optuna.Study
    pretrain: RunSpec | None
    pre_key: str | None
    remaining: int = 0  # trials still to ask


@dataclass(eq=False)
class _Trial:
    """A trial being run: its study, number, storage id, setting and run."""

    search: _Search
    number: int
    trial_id: int
    params: dict[str, Any]
    spec: RunSpec


class _Tuner:
    """The studies of one tune call: opening them, asking, running and telling their trials."""

    def __init__(
        self,
        data: str | Path,
        out: Path,
        journal: Path,
        seed: int,
        base: dict[str, Any],
        trials: int,
        sampler: str,
        pruner: optuna.pruners.BasePruner | None,
        fingerprint: str,
        jobs: int,
        progress: bool,
        engine: str,
        address: str | None,
    ):
        self.data, self.seed, self.base, self.trials = data, seed, base, trials
        self.sampler, self.pruner, self.fingerprint = sampler, pruner, fingerprint
        self.jobs, self.progress, self.engine, self.address = jobs, progress, engine, address
        self.runs_dir = out.resolve() / "runs"
        self.journal = journal.resolve()
        self.storage = JournalStorage(JournalFileBackend(str(self.journal)))
        self.queue: deque[_Trial] = deque()  # trials to run before new ones are asked
        self._bar: Any = None

    # ------------------------------------------------------------------ opening a study
    def open(self, method: str, space: Space, pretrain: RunSpec | None = None, pre_key: str | None = None):
        """The method's study (created, or loaded as a previous call left it), its stale trials queued."""
        size = grid_size(space)
        budget = self.trials if size is None else min(self.trials, size)
        has_range = any(isinstance(v, Range) for v in space.values())
        kind = "grid" if size is not None and budget == size and not has_range else self.sampler
        values = resolved_values(method, method_values(Method(method, method), self.base))
        for key in space:  # the space decides these
            values.pop(key, None)
            values.get("sampler_options", {}).pop(key, None)
        ident = {
            "method": method,
            "base": values,
            "space": {k: v.describe() if isinstance(v, Range) else v for k, v in space.items()},
            "sampler": self.sampler,  # as asked: the budget (which may turn it into the grid) is not part
            "seed": self.seed,
            "pruner": None if self.pruner is None else _pruner_ident(self.pruner),
            "data": self.fingerprint,
            "pretrain": pre_key,
        }
        digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
        study = optuna.create_study(
            storage=self.storage,
            study_name=f"{method}-{digest}",
            direction="maximize",
            load_if_exists=True,
            pruner=optuna.pruners.NopPruner(),  # the runs' reporters prune (PruningReporter)
        )
        if "search" not in study.user_attrs:
            study.set_user_attr("search", ident)
        search = _Search(method, space, budget, kind, study, pretrain, pre_key)
        self._resume(search)
        return search

    def _resume(self, s: _Search) -> None:
        """Finish what a killed tune left: its ``RUNNING`` trials are queued to run their setting again
        (or told ``PRUNED`` if their pruner had stopped them, ``FAIL`` if they have no full setting,
        repeat another or exceed the budget); sets how many trials remain to ask."""
        for _ in s.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            # enqueued by a killed tune, never asked: asked now (it pops them) and dropped
            stale = s.study.ask()
            stale.set_user_attr("stale", True)
            s.study.tell(stale, state=TrialState.FAIL)
        trials = s.study.get_trials(deepcopy=False)
        counted = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        seen = {_key(t.params) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
        queued = 0
        for t in trials:
            if t.state != TrialState.RUNNING:
                continue
            if PRUNED_ATTR in t.user_attrs:
                s.study.tell(t.number, state=TrialState.PRUNED)
                counted += 1
            elif set(t.params) != set(s.space) or _key(t.params) in seen or counted + queued >= s.budget:
                optuna.trial.Trial(s.study, t._trial_id).set_user_attr("stale", True)
                s.study.tell(t.number, state=TrialState.FAIL)
            else:
                seen.add(_key(t.params))
                stale = self._trial(s, t.number, t._trial_id, dict(t.params))
                if "run_dir" not in t.user_attrs:  # killed right after its ask
                    optuna.trial.Trial(s.study, t._trial_id).set_user_attr("run_dir", stale.spec.run_dir)
                self.queue.append(stale)
                queued += 1
        s.remaining = max(s.budget - counted - queued, 0)

    def bar(self, searches: Any) -> Any:
        """A progress bar over the trials of ``searches`` (as the context of their :meth:`run`)."""
        searches = list(searches)
        total = sum(s.budget for s in searches)
        left = sum(s.remaining for s in searches) + sum(t.search in searches for t in self.queue)
        self._bar = tqdm(
            total=total, initial=total - left, desc="tune", unit="trial", disable=not self.progress,
            dynamic_ncols=True,
        )
        return self._bar

    # ------------------------------------------------------------------ asking
    def _trial(self, s: _Search, number: int, trial_id: int, params: dict[str, Any]) -> _Trial:
        values = method_values(Method(s.method, s.method, values=setting_values(params)), self.base)
        key = run_key(s.method, s.method, values, s.pre_key, fingerprint=self.fingerprint)
        run_dir = str(self.runs_dir / key / f"trial-seed{self.seed}")
        hook = None
        if self.pruner is not None:
            epochs = int(resolved_values(s.method, values)["epochs"])
            name = s.study.study_name
            hook = PruningReporter(str(self.journal), name, number, trial_id, self.pruner, epochs)
        pretrain = None if s.pretrain is None else s.pretrain.run_dir
        spec = RunSpec(s.method, s.method, self.seed, values, run_dir, pretrain, on_validate=hook)
        return _Trial(s, number, trial_id, params, spec)

    def ask(self, s: _Search) -> _Trial:
        """A new trial of ``s`` with a setting its study has not tried (see the module)."""
        live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        seen = {_key(t.params): t.number for t in s.study.get_trials(deepcopy=False, states=live)}
        n = len(s.study.get_trials(deepcopy=False))
        if s.kind == "grid":  # the grid's n-th setting in the seed's order: no repeat, asked directly
            s.study.sampler = make_sampler(s.kind, s.space, self.seed)
            trial = s.study.ask()
            params = suggest(trial, s.space)
            if _key(params) not in seen:
                return self._asked(s, trial, params)
            # a grid that stale trials used up (told FAIL) repeats itself
            trial.set_user_attr("duplicate_of", seen[_key(params)])
            s.study.tell(trial, state=TrialState.FAIL)
            params = None
        else:
            params = self._propose(s, set(seen), _derived_seed(self.seed, n))
        if params is None:
            params = _untried(s.space, set(seen), np.random.default_rng(_derived_seed(self.seed, n)))
            if params is None:  # pragma: no cover - the budget never exceeds a finite space
                raise ConfigError(f"tune {s.method}: no untried setting left in its space")
        s.study.enqueue_trial(params)
        trial = s.study.ask()
        return self._asked(s, trial, suggest(trial, s.space))

    def _propose(self, s: _Search, seen: set[str], seed: int) -> dict[str, Any] | None:
        """A setting that the sampler of ``s`` proposes and its study has not tried, asked in an
        in-memory copy of the study (a repeat is told ``FAIL`` there and asked again, and leaves no trial
        in the journal); ``None`` after :data:`MAX_ASKS` repeats."""
        live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        scratch = optuna.create_study(direction="maximize", sampler=make_sampler(s.kind, s.space, seed))
        scratch.add_trials(s.study.get_trials(deepcopy=False, states=live))
        for _ in range(MAX_ASKS):
            trial = scratch.ask()
            params = suggest(trial, s.space)
            if _key(params) not in seen:
                return params
            scratch.tell(trial, state=TrialState.FAIL)
        return None

    def _asked(self, s: _Search, trial: optuna.Trial, params: dict[str, Any]) -> _Trial:
        t = self._trial(s, trial.number, trial._trial_id, params)
        trial.set_user_attr("run_dir", t.spec.run_dir)
        return t

    # ------------------------------------------------------------------ running and telling
    def run(self, searches: list[_Search]) -> None:
        """Run the queued trials and ask and run new ones until every study of ``searches`` has its
        budget, keeping up to ``jobs`` runs going.

        Each study runs its trials in the rounds :meth:`rounds` plans, a round's trials asked
        together, and asks its next round as soon as its last one is told, whatever the other studies'
        runs are doing: a slow trial holds back its own study's next round, not the other studies. A
        study's asks thus see the same trials, and its proposals are the same, however long the other
        studies' runs take. The queued trials (left running by a killed tune) are their study's first
        round; the first rounds of the studies are queued in turn (one trial of each, then the next).
        """
        plan = self.rounds(searches)
        going: dict[_Search, int] = dict.fromkeys(searches, 0)  # each study's trials of its round
        trials: dict[str, _Trial] = {}

        def start(batch: list[_Trial]) -> list[RunSpec]:
            for t in batch:
                if t.spec.run_dir in trials:  # pragma: no cover - distinct settings have distinct runs
                    raise ConfigError(f"tune {t.search.method}: two trials share the run {t.spec.run_dir}")
                going[t.search] += 1
                trials[t.spec.run_dir] = t
            return [t.spec for t in batch]

        def next_round(s: _Search) -> list[_Trial]:
            n = plan[s].popleft() if plan[s] else 0
            s.remaining -= n
            return [self.ask(s) for _ in range(n)]

        def told(result: dict[str, Any]) -> list[RunSpec]:
            t = trials.pop(result["run_dir"])
            self._settle(t, result)
            going[t.search] -= 1
            return start(next_round(t.search)) if going[t.search] == 0 else []

        first = start([self.queue.popleft() for _ in range(len(self.queue))])
        rounds = [start(next_round(s)) for s in searches if going[s] == 0]
        first += [spec for turn in itertools.zip_longest(*rounds) for spec in turn if spec is not None]
        if not first:
            return
        planned = len(first) + sum(s.remaining for s in searches)
        run_specs(
            first, self.data, jobs=self._jobs(planned), progress=False, desc="tune", engine=self.engine,
            address=self.address, then=told,
        )

    def rounds(self, searches: list[_Search]) -> dict[_Search, deque[int]]:
        """Each study's round sizes for this call, from the trials left to ask only (never from how
        long runs take).

        A study's asks that do not depend on the values of its trials (:meth:`free_asks`) are its
        first round, asked at once: they keep every worker busy without a wait. For the others,
        round by round, ``jobs`` is shared by the studies that still have trials to ask,
        ``ceil(jobs / studies)`` each (at least one), so a study that runs out leaves its share to
        the others.
        """
        free = {s: self.free_asks(s) for s in searches}
        left = {s: s.remaining - free[s] for s in searches}
        plan: dict[_Search, deque[int]] = {s: deque([free[s]] if free[s] else []) for s in searches}
        while any(left.values()):
            active = [s for s in searches if left[s]]
            width = -(-self.jobs // len(active))
            for s in active:
                n = min(width, left[s])
                plan[s].append(n)
                left[s] -= n
        return plan

    def free_asks(self, s: _Search) -> int:
        """How many of the study's next asks do not depend on the values its trials are told: all of
        them for the grid and random samplers; for TPE those before its :data:`TPE_STARTUP` random
        trials are used up (it proposes at random while fewer trials are complete or pruned, and the
        study's trials, running ones included, are at least as many)."""
        if s.kind != "tpe":
            return s.remaining
        live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        held = len(s.study.get_trials(deepcopy=False, states=live))
        return max(0, min(s.remaining, TPE_STARTUP - held))

    def _settle(self, t: _Trial, result: dict[str, Any]) -> None:
        """Tell the study a finished run's outcome."""
        if result["status"] != "stopped":
            self._tell(t, result["metrics"])
        elif PRUNED_ATTR in _frozen(t).user_attrs:  # its reporter stopped it
            self._tell_pruned(t)
        else:  # pragma: no cover - only the reporters stop runs
            raise ConfigError(f"tune {t.search.method}: trial {t.number} stopped: {result['reason']}")

    def _jobs(self, runs: int) -> int:
        """The ``jobs`` of a call that runs ``runs`` runs: no more worker processes than runs on the
        local engine; on Ray, the tune's ``jobs`` always (the first call sizes the local Ray it starts,
        which the later calls share)."""
        return self.jobs if self.engine == "ray" else min(self.jobs, runs)

    def _tell_pruned(self, t: _Trial) -> None:
        t.search.study.tell(t.number, state=TrialState.PRUNED)
        self._told(t, "pruned")

    def _tell(self, t: _Trial, metrics: dict[str, Any]) -> None:
        """Tell a finished trial its validation AUC (``-inf`` if it has none); its learning curve (the
        main stage's validation AUC by epoch) is recorded as intermediate values if not yet reported."""
        trial = optuna.trial.Trial(t.search.study, t.trial_id)
        history = rundir.read_json_lines(Path(t.spec.run_dir) / rundir.EPOCHS)
        reported = _frozen(t).intermediate_values
        for row in history:
            epoch, auc = int(row.get("epoch", 0)), row.get("valid_auc")
            main_stage = row.get("stage", "train") == "train" and epoch >= 1
            if main_stage and auc is not None and epoch not in reported:
                trial.report(float(auc), epoch)
        trial.set_user_attr("valid_ndcg", metrics.get("valid.ndcg"))
        trial.set_user_attr("best_epoch", metrics.get("best_epoch"))
        auc = metrics.get("valid.auc")
        value = -math.inf if auc is None or not math.isfinite(float(auc)) else float(auc)
        t.search.study.tell(t.number, value)
        self._told(t, "done")

    def _told(self, t: _Trial, what: str) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"{t.search.method} #{t.number} {what}")

    # ------------------------------------------------------------------ pretraining
    def pretraining(self, uniform: _Search | None) -> tuple[RunSpec, str]:
        """The run the learned samplers start from, verified (or trained), and its key: the best
        ``uniform`` trial, else a ``uniform`` run with the common settings."""
        if uniform is not None:
            complete = [t for t in _counted(uniform) if t.state == TrialState.COMPLETE]
            if not complete:
                raise ConfigError("tune uniform: every trial was pruned, no run to pretrain from")
            best = max(complete, key=lambda t: t.value)
            spec = self._trial(uniform, best.number, best._trial_id, dict(best.params)).spec
            spec.on_validate = None
            pre_key = "tuned-uniform:" + Path(spec.run_dir).parent.name
        else:
            values = pretraining_values(self.base)
            pre_key = run_key("uniform", "uniform", values, fingerprint=self.fingerprint)
            run_dir = str(self.runs_dir / pre_key / f"trial-seed{self.seed}")
            spec = RunSpec("uniform", "uniform", self.seed, values, run_dir)
        run_specs(
            [spec], self.data, jobs=self._jobs(1), progress=self.progress, desc="pretrain",
            engine=self.engine, address=self.address,
        )
        return spec, pre_key


def _frozen(t: _Trial) -> FrozenTrial:
    """The trial as its study holds it now."""
    frozen = t.search.study.get_trials(deepcopy=False)[t.number]
    assert frozen.number == t.number
    return frozen


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """The trial's setting: each key of ``space`` suggested (categorical, integer or float)."""
    out: dict[str, Any] = {}
    for key, v in space.items():
        if isinstance(v, Range) and v.integer:
            out[key] = trial.suggest_int(key, int(v.low), int(v.high), log=v.log)
        elif isinstance(v, Range):
            out[key] = trial.suggest_float(key, float(v.low), float(v.high), log=v.log)
        else:
            out[key] = trial.suggest_categorical(key, v)
    return out


class _GridSampler(optuna.samplers.GridSampler):
    """:class:`optuna.samplers.GridSampler` without its stop at the grid's end (``Study.stop``, which
    raises outside ``Study.optimize``): the tune loop stops at the budget itself."""

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        pass


def make_sampler(kind: str, space: Space, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``kind`` (:data:`SAMPLER_KINDS`) of a space, seeded."""
    if kind == "grid":
        return _GridSampler({k: list(v) for k, v in space.items()}, seed=seed)  # type: ignore[arg-type]
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP)


def _derived_seed(seed: int, n: int) -> int:
    """The seed of a study's ``n``-th ask (or fallback draw) under ``seed``."""
    return int(np.random.SeedSequence([seed, n]).generate_state(1)[0])


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def _untried(space: Space, seen: set[str], rng: np.random.Generator) -> dict[str, Any] | None:
    """A setting of ``space`` not in ``seen`` (by :func:`_key`), drawn uniformly; ``None`` if none."""
    size = grid_size(space)
    keys = list(space)
    if size is not None and size <= _ENUMERATE_MAX:
        axes = [range(int(v.low), int(v.high) + 1) if isinstance(v, Range) else v for v in space.values()]
        untried = [dict(zip(keys, c, strict=True)) for c in itertools.product(*axes)]
        untried = [p for p in untried if _key(p) not in seen]
        return untried[int(rng.integers(len(untried)))] if untried else None
    for _ in range(1000):
        p: dict[str, Any] = {}
        for k, v in space.items():
            if not isinstance(v, Range):
                p[k] = v[int(rng.integers(len(v)))]
            elif v.integer:
                p[k] = int(rng.integers(int(v.low), int(v.high) + 1))
            elif v.log:
                p[k] = float(math.exp(rng.uniform(math.log(v.low), math.log(v.high))))
            else:
                p[k] = float(rng.uniform(v.low, v.high))
        if _key(p) not in seen:
            return p
    return None  # pragma: no cover


def _pruner_ident(pruner: optuna.pruners.BasePruner) -> dict[str, Any]:
    """What defines a pruner: its class and its plain settings."""
    plain = (bool, int, float, str, type(None))
    settings = {k.lstrip("_"): v for k, v in vars(pruner).items() if isinstance(v, plain)}
    return {"class": type(pruner).__name__, **settings}


def _counted(s: _Search) -> list[FrozenTrial]:
    """The trials of ``s`` that count: its first ``budget`` complete or pruned ones, by number."""
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return sorted(s.study.get_trials(deepcopy=False, states=done), key=lambda t: t.number)[: s.budget]


@contextmanager
def _optuna_warnings_only() -> Iterator[None]:
    """Optuna's log shows warnings only while the block runs (not a line per trial)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _repair_journal(path: Path) -> None:
    """Undo what a process killed while writing the journal may have left (only while no one else
    writes it): its lock file, and a last line cut short (which would corrupt the next one)."""
    lock = Path(str(path) + ".lock")
    if lock.is_symlink() or lock.exists():
        lock.unlink()
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(max(size - 1, 0))
        if f.read(1) == b"\n":
            return
        f.seek(0)
        text = f.read()
        f.truncate(text.rfind(b"\n") + 1)


# ---------------------------------------------------------------------- pruning in the worker
class TrialPrunedAt(optuna.TrialPruned, RunStopped):
    """A run stopped by its trial's pruner (raised by :class:`PruningReporter` in the worker): a
    :class:`~reinforcens.errors.RunStopped`, so the runner returns the run as ``"stopped"`` and the
    other runs go on."""

    def __init__(self, study_name: str, number: int, epoch: int):
        super().__init__(study_name, number, epoch)
        self.study_name, self.number, self.epoch = study_name, number, epoch

    def __str__(self) -> str:
        return f"trial {self.number} of study {self.study_name} pruned at epoch {self.epoch}"


class PruningReporter:
    """A run's ``on_validate`` hook (:attr:`RunSpec.on_validate`): reports the validation AUC of each
    epoch to the trial in the journal and stops the run when the pruner says so.

    It runs in the worker process; it opens the journal there (at its first call). On pruning it marks
    the trial (user attribute :data:`PRUNED_ATTR`: the epoch) and raises :class:`TrialPrunedAt`; the
    trainer has saved the epoch, so the run stays unfinished and resumable. A run at its last epoch
    (``epochs``) is not pruned: it has nothing left to save.
    """

    def __init__(
        self,
        journal: str,
        study_name: str,
        number: int,
        trial_id: int,
        pruner: optuna.pruners.BasePruner,
        epochs: int | None = None,
    ):
        self.journal, self.study_name, self.pruner = journal, study_name, pruner
        self.number, self.trial_id, self.epochs = number, trial_id, epochs
        self._study: optuna.Study | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_study": None}

    def __call__(self, epoch: int, scores: dict[str, float]) -> None:
        if self._study is None:
            storage = JournalStorage(JournalFileBackend(self.journal))
            self._study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=self.pruner)
        trial = optuna.trial.Trial(self._study, self.trial_id)
        with _optuna_warnings_only():
            trial.report(float(scores["auc"]), epoch)
            # a run that ends at this epoch (its last, or early stopped) has nothing left to save
            last = bool(scores.get("final")) or (self.epochs is not None and epoch >= self.epochs)
            if not last and trial.should_prune():
                trial.set_user_attr(PRUNED_ATTR, epoch)
                raise TrialPrunedAt(self.study_name, self.number, epoch)
