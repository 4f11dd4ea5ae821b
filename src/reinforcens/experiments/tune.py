"""Equal-budget hyper-parameter search on validation AUC with Optuna (the paper's grid by default).

One Optuna study per method searches its space: by default the paper's grid (section 3.1), each key a
categorical over its values: L2 in {1e-6, ..., 1e-2} and learning rate in {1e-4, 5e-4, 1e-3, 5e-2, 1e-1}
for every trained method; the sampler's candidate set size N_s in {10, 20, ..., 150} for KBGAN, IRGAN,
RNS and RNS-ES; alpha and beta for RNS, beta for RNS-ES (the parameters Table 3 lists). ``grid`` replaces
a key's values, ``ranges`` (:class:`Range`) makes a key a continuous (or integer) range.

Every method gets the same budget: ``min(trials, space size)`` trials (``trials`` for a space with a
continuous range). A trial is a training run of the method with the trial's setting; its validation list
AUC (the quantity the trainer's early stopping also uses) is the trial's value. Test metrics are never
read. The samplers (``sampler``):

- ``tpe`` (the default): :class:`optuna.samplers.TPESampler` (its first 10 trials are random, then it
  models what worked). With ``trials`` far below the grid's size (20 of RNS's 22,500 settings) a
  model-based search finds better settings for the same budget than a random draw, and it is the same
  search for every method, so the comparison stays fair.
- ``grid``: :class:`optuna.samplers.GridSampler`, the grid's settings in a random order without
  repetition: the previous releases' uniform draw without replacement. It has no ranges.
- ``random``: :class:`optuna.samplers.RandomSampler`.

A budget that covers the whole (finite) space tries all of it with the grid sampler, whatever
``sampler`` says: every sampler would end with the same set of trials. The TPE and random samplers
are seeded at each ask with ``seed`` and the number of trials the study holds, so an uninterrupted tune
is reproducible and a resumed one does not redraw what it drew before; the grid sampler's order is
``seed``'s shuffle of the grid (its n-th trial takes the n-th setting).

A setting the method's study already tried (or is trying) is never trained twice, and a repeated
suggestion costs no budget and leaves no trial behind: the TPE and random samplers propose in an
in-memory copy of the study, where a repeat is told ``FAIL`` (which the samplers ignore) and asked again,
up to :data:`MAX_ASKS` times; the setting is then given to the study's trial
(:meth:`optuna.study.Study.enqueue_trial`). If the sampler keeps repeating itself (TPE, once settled on
a small grid, does), the trial takes an untried setting drawn uniformly, as a random search would. The
grid sampler never repeats itself and is asked directly.

Learned samplers start from a pretrained BPR-GMF: the best ``uniform`` trial when ``uniform`` is tuned
in the same call (its study finishes first), else a ``uniform`` run with the common settings.

Studies live in ``optuna.journal`` in the tune directory (an Optuna journal file:
``optuna.load_study(study_name=..., storage=JournalStorage(JournalFileBackend(path)))`` reads one; each
study's user attribute ``search`` says what defines it); a study's name is the method and a hash of what
defines its search (the base training values, the space, the sampler asked for, the seed, the pruner,
the data's fingerprint and, for learned samplers, the pretraining run), so a changed setting starts
another study instead of mixing its trials with an old one; the budget is not part of it (a rerun with
more ``trials`` continues the study; one with fewer selects from its first trials). The tune directory
is written by one process at a time (``DirectoryLock(out, "experiment")``), so a trial that a study
holds as ``RUNNING`` when a tune starts was left by a killed tune: it is finished by running its setting
again (its run directory resumes; one with a partial setting, or past the budget, is told ``FAIL``), and
a journal line the kill cut short is dropped. A rerun with the same arguments thus ends with exactly the
budget of trials per method. A complete trial's learning curve (its validation AUC by epoch, from
``epochs.jsonl``) is recorded as its intermediate values.

Up to ``jobs`` trials run at once through :func:`reinforcens.experiments.runner.run_specs`. Each study
runs its trials in rounds asked together, and asks its next round as soon as its last one is told,
whatever the other studies' runs are doing: a slow trial holds back its own study's next round, not
the other studies. The round sizes are planned from the trials left to ask, never from how long runs
take, so a study's proposals do not depend on the other studies' run times. The asks whose proposal
does not depend on the values told (every ask of the grid and random samplers; TPE's first 10, which
are random) are a study's first round, all at once: with a budget of up to 10 trials nothing waits.
For the later rounds, ``jobs`` is shared by the studies that still have trials to ask
(``ceil(jobs / studies)`` each, at least one; a study that runs out leaves its share to the others);
workers can idle at the end of such a round (its study waits for its slowest trial) when no other
study has a trial to start. Learned samplers are a second phase, after the pretraining run. With
``prune``, each run reports its validation AUC after each epoch to its trial (:class:`PruningReporter`,
in the worker process) and stops when the pruner says so (default: :data:`DEFAULT_PRUNER`, a median
stopping rule; a run at its last epoch is not pruned); the trial is told ``PRUNED`` and counts in the
budget, and its run directory stays unfinished (a later trial with the same setting resumes it; it is
never read as finished). A pruned run is returned by the runner as ``"stopped"``
(:class:`~reinforcens.errors.RunStopped`), so the other runs go on.

Output in the tune directory: ``tuned.json`` (``{"metric", "seed", "trials", "data", "data_fingerprint",
"base", "sampler", "prune", "journal", "methods": {NAME: {"values", "valid_auc", "valid_ndcg",
"trials", "pruned", "grid_size", "sampler", "study", "trial", "run_dir"}}}``, readable by ``compare
--tuned``), ``trials.csv`` (every counted trial, with its ``state``: ``COMPLETE`` or ``PRUNED``) and
``tuned.md``. The trial runs are cached in ``runs/`` under names that include the dataset's fingerprint.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from reinforcens.errors import ConfigError
from reinforcens.experiments import report
from reinforcens.experiments.runner import (
    ITEMPOP,
    Method,
    default_jobs,
    display_name,
    method_values,
    needs_pretraining,
)
from reinforcens.experiments.search_space import (
    COMMON_GRID,
    INTEGER_KEYS,
    Range,
    grid_size,
    known_keys,
    method_grid,
    method_space,
    parse_grid_overrides,
    parse_ranges,
    setting_values,
)
from reinforcens.experiments.studies import (
    DEFAULT_PRUNER,
    DEFAULT_SAMPLER,
    JOURNAL,
    PRUNED_ATTR,
    SAMPLER_KINDS,
    PruningReporter,
    TrialPrunedAt,
    _counted,
    _optuna_warnings_only,
    _pruner_ident,
    _repair_journal,
    _Search,
    _Tuner,
    default_pruner,
)
from reinforcens.lock import DirectoryLock

__all__ = [
    "COMMON_GRID", "DEFAULT_PRUNER", "DEFAULT_SAMPLER", "INTEGER_KEYS", "JOURNAL", "PRUNED_ATTR",
    "SAMPLER_KINDS", "PruningReporter", "Range", "TrialPrunedAt", "check_tuned_model", "format_tuned",
    "grid_size", "load_tuned", "method_grid", "method_space", "parse_grid_overrides", "parse_ranges",
    "setting_values", "tune",
]  # fmt: skip


def tune(
    data: str | Path,
    methods: Sequence[str],
    out: str | Path,
    trials: int = 20,
    seed: int = 0,
    base: dict[str, Any] | None = None,
    grid: dict[str, list[Any]] | None = None,
    jobs: int | None = None,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
    *,
    ranges: dict[str, Range] | None = None,
    sampler: str = DEFAULT_SAMPLER,
    prune: bool | optuna.pruners.BasePruner = False,
) -> dict[str, Any]:
    """Search each method's space on validation AUC with the same number of trials (see the module).

    Parameters
    ----------
    data
        The prepared dataset directory.
    methods
        Method names; ``itempop`` has nothing to tune and is skipped.
    out
        The tune directory (the study journal and the trial runs, in ``out/runs``).
    trials
        Trials per method (fewer for a smaller space).
    seed
        Seeds the samplers and every trial's training.
    base
        Training values common to all trials (e.g. ``epochs``); the space's values override them.
    grid
        Values that replace those of grid keys (``{"lr": [...], ...}``).
    jobs
        Trials run at once (default: the CPU count).
    progress
        Show a progress bar over the trials.
    engine, address
        Where the trials run (see :func:`reinforcens.experiments.runner.run_specs`).
    ranges
        Keys searched in a range instead of a grid (:func:`parse_ranges`).
    sampler
        ``"tpe"``, ``"grid"`` or ``"random"`` (see the module).
    prune
        Stop unpromising runs early: ``True`` for :func:`default_pruner`, or an Optuna pruner (it must
        be picklable, and importable in the worker processes).

    Returns
    -------
    dict
        The contents of ``tuned.json``.

    Raises
    ------
    ConfigError
        On a bad argument (naming its flag), or if every trial of a method was pruned.
    reinforcens.lock.LockedError
        If another process runs an experiment in ``out``.
    """
    from reinforcens.experiments.compare import data_record, parse_methods

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if sampler not in SAMPLER_KINDS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLER_KINDS)}, got {sampler!r}")
    if sampler == "grid" and ranges:
        key = sorted(ranges)[0]
        raise ConfigError(f"--sampler grid: --range {key} is not a grid; give its values with --grid")
    names = [n for n in parse_methods(methods) if n != ITEMPOP]
    if not names:
        raise ConfigError("no method to tune (ItemPop has no hyper-parameters)")
    pruner = default_pruner() if prune is True else (prune or None)
    base = dict(base or {})
    base.pop("sampler_options", None)  # the space decides the options it searches
    out = Path(out)
    spaces = {n: method_space(n, grid, ranges) for n in names}
    record = data_record(data)  # the data is loaded and verified before anything is written
    with DirectoryLock(out, "experiment"), _optuna_warnings_only():
        journal = out / JOURNAL
        _repair_journal(journal)
        tuner = _Tuner(
            data, out, journal, seed, base, trials, sampler, pruner, record["data_fingerprint"],
            jobs or default_jobs(), progress, engine, address,
        )
        first = [n for n in names if not needs_pretraining(n, method_values(Method(n, n), base))]
        searches = {n: tuner.open(n, spaces[n]) for n in first}
        with tuner.bar(searches.values()):
            tuner.run(list(searches.values()))
        later = [n for n in names if n not in first]
        if later:
            pre_spec, pre_key = tuner.pretraining(searches.get("uniform"))
            more = {n: tuner.open(n, spaces[n], pre_spec, pre_key) for n in later}
            with tuner.bar(more.values()):
                tuner.run(list(more.values()))
            searches.update(more)
        best, rows = _select([searches[n] for n in names])
        tuned = {
            "metric": "valid.auc",
            "seed": seed,
            "trials": trials,
            **record,
            "base": base,
            "sampler": sampler,
            "prune": None if pruner is None else _pruner_ident(pruner),
            "journal": JOURNAL,
            "methods": best,
        }
        report.write_csv(out / "trials.csv", _trials_frame(rows))
        report.write_json(out / "tuned.json", tuned)
        report.write_text(out / "tuned.md", format_tuned(tuned))
    return tuned


# ---------------------------------------------------------------------- results
def _select(searches: list[_Search]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Each method's best complete trial on validation AUC (the ``methods`` of ``tuned.json``) and one
    row per counted trial."""
    rows = []
    best: dict[str, Any] = {}
    for s in searches:
        trials = _counted(s)
        best_entry: dict[str, Any] | None = None
        for t in trials:
            complete = t.state == TrialState.COMPLETE
            rows.append(
                {
                    "method": s.method,
                    "trial": t.number,
                    "state": t.state.name,
                    **t.params,
                    "valid_auc": t.value if complete else None,
                    "valid_ndcg": t.user_attrs.get("valid_ndcg"),
                    "best_epoch": t.user_attrs.get("best_epoch"),
                    PRUNED_ATTR: t.user_attrs.get(PRUNED_ATTR),
                    "run_dir": t.user_attrs.get("run_dir"),
                }
            )
            if complete and (best_entry is None or t.value > best_entry["valid_auc"]):
                best_entry = {
                    "values": setting_values(t.params),
                    "valid_auc": t.value,
                    "valid_ndcg": t.user_attrs.get("valid_ndcg"),
                    "run_dir": t.user_attrs.get("run_dir"),
                    "trial": t.number,
                }
        if best_entry is None:
            raise ConfigError(f"tune {s.method}: every trial was pruned, no setting to choose")
        best_entry["trials"] = len(trials)
        best_entry["pruned"] = sum(t.state == TrialState.PRUNED for t in trials)
        best_entry["grid_size"] = grid_size(s.space)
        best_entry["sampler"] = s.kind
        best_entry["study"] = s.study.study_name
        best[s.method] = best_entry
    return best, rows


def _trials_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows of ``trials.csv``: the trial's method, number and state, its setting, its results."""
    frame = pd.DataFrame(rows)
    keys = [k for k in frame.columns if k in known_keys()]
    rest = [k for k in frame.columns if k not in keys and k not in ("method", "trial", "state")]
    # whole numbers stay whole beside the rows that lack them (other methods, pruned trials)
    for k in {*INTEGER_KEYS, "best_epoch", PRUNED_ATTR} & set(frame.columns):
        if frame[k].dropna().map(lambda v: float(v).is_integer()).all():
            frame[k] = frame[k].astype("Int64")
    return frame[["method", "trial", "state", *keys, *rest]]


def format_tuned(tuned: dict[str, Any]) -> str:
    """A Markdown table of each method's best setting and its validation AUC."""
    headers = ["Method", "trials", "space", "sampler", "valid AUC", "valid NDCG", "best setting"]
    body = []
    for n, e in tuned["methods"].items():
        vals = dict(e["values"])
        opts = vals.pop("sampler_options", {})
        text = ", ".join(f"{k}={v:g}" for k, v in {**vals, **opts}.items())
        trials = str(e["trials"]) + (f" ({e['pruned']} pruned)" if e.get("pruned") else "")
        size = e.get("grid_size")
        body.append(
            [
                display_name(n, (tuned.get("base") or {}).get("model", "gmf")),
                trials,
                "∞" if size is None else str(size),
                e.get("sampler", "random"),
                report.fmt_value(e["valid_auc"]),
                report.fmt_value(e["valid_ndcg"]),
                text,
            ]
        )
    return (
        report.markdown_table(headers, body, align="lrrlrrl")
        + f"\n\nSelected on validation list AUC only; seed {tuned['seed']}.\n"
    )


def check_tuned_model(tuned: dict[str, Any] | None, base: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` if ``tuned`` was tuned for another recommender than ``base``'s."""
    if not tuned:
        return
    theirs = (tuned.get("base") or {}).get("model", "gmf")
    mine = base.get("model", "gmf")
    if theirs != mine:
        raise ConfigError(f"--tuned: its settings were tuned for --model {theirs}, not {mine}")


def load_tuned(path: str | Path) -> dict[str, Any]:
    """Read a ``tuned.json`` written by :func:`tune`.

    Raises
    ------
    ConfigError
        If it cannot be read or is not a tune result.
    """
    path = Path(path)
    try:
        tuned = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the tuned settings ({exc})") from None
    if not isinstance(tuned, dict) or not isinstance(tuned.get("methods"), dict):
        raise ConfigError(f"{path}: not a tune result (no 'methods')")
    from reinforcens.experiments.compare import canonical_method

    tuned["methods"] = {canonical_method(k): v for k, v in tuned["methods"].items()}
    return tuned
