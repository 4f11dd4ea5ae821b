"""Equal-budget hyper-parameter search on validation AUC (the paper's grid).

Every method gets the same number of trials (``min(trials, grid size)``: a method whose grid is smaller
than ``trials`` tries all of it), drawn without replacement from its grid under one seed. A trial is a
training run of the method with that setting; its validation list AUC (the quantity the trainer's early
stopping also uses) decides. Test metrics are never read.

The grid (section 3.1 of the paper): L2 in {1e-6, ..., 1e-2} and learning rate in {1e-4, 5e-4, 1e-3,
5e-2, 1e-1} for every trained method; the sampler's candidate set size N_s in {10, 20, ..., 150} for
KBGAN, IRGAN, RNS and RNS-ES; alpha and beta for RNS, beta for RNS-ES (the parameters Table 3 lists).

Learned samplers start from a pretrained BPR-GMF: the best ``uniform`` trial when ``uniform`` is tuned
in the same call (its trials run first), else a ``uniform`` run with the common settings.

Output in the tune directory: ``tuned.json`` (``{"metric", "seed", "trials", "data", "data_fingerprint",
"base", "methods": {NAME: {"values", "valid_auc", "valid_ndcg", "trials"}}}``, readable by ``compare
--tuned``), ``trials.csv`` (every trial) and ``tuned.md``. The trial runs are cached in ``runs/`` under
names that include the dataset's fingerprint; one process at a time writes the directory.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reinforcens.errors import ConfigError
from reinforcens.experiments import report
from reinforcens.experiments.runner import (
    ITEMPOP,
    Method,
    RunSpec,
    data_fingerprint,
    default_jobs,
    display_name,
    method_values,
    needs_pretraining,
    pretraining_values,
    run_key,
    run_specs,
)
from reinforcens.lock import DirectoryLock

#: the training values searched for every trained method (the paper's section 3.1)
COMMON_GRID: dict[str, list[float]] = {
    "l2": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2],
    "lr": [1e-4, 5e-4, 1e-3, 5e-2, 1e-1],
}
#: sampler options searched, by sampler ("where they apply")
SAMPLER_GRID: dict[str, dict[str, list[float]]] = {
    "kbgan": {"n_candidates": list(range(10, 151, 10))},
    "irgan": {"n_candidates": list(range(10, 151, 10))},
    "rns": {
        "n_candidates": list(range(10, 151, 10)),
        "alpha": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0],
        "beta": [round(0.1 * i, 1) for i in range(10)],
    },
    "rns-es": {
        "n_candidates": list(range(10, 151, 10)),
        "beta": [round(0.1 * i, 1) for i in range(10)],
    },
}


def method_grid(sampler: str, overrides: dict[str, list[Any]] | None = None) -> dict[str, list[Any]]:
    """The grid of one sampler: common values, its own options, then ``overrides`` for the keys it
    has (an override of a key the sampler lacks is ignored for it)."""
    grid = {**COMMON_GRID, **SAMPLER_GRID.get(sampler, {})}
    for key, values in (overrides or {}).items():
        if key in grid:
            grid[key] = list(values)
    return grid


def grid_size(grid: dict[str, list[Any]]) -> int:
    return math.prod(len(v) for v in grid.values())


def draw_trials(grid: dict[str, list[Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``min(n, grid size)`` distinct settings drawn uniformly from the grid under ``seed``."""
    keys = list(grid)
    total = grid_size(grid)
    if n >= total:
        combos = list(itertools.product(*(grid[k] for k in keys)))
        return [dict(zip(keys, c, strict=True)) for c in combos]
    rng = np.random.default_rng(seed)
    picks = rng.choice(total, size=n, replace=False)
    out = []
    for p in picks:
        setting, rest = {}, int(p)
        for k in reversed(keys):
            rest, idx = divmod(rest, len(grid[k]))
            setting[k] = grid[k][idx]
        out.append({k: setting[k] for k in keys})
    return out


def setting_values(setting: dict[str, Any]) -> dict[str, Any]:
    """A grid setting as training values (training keys, and sampler options under
    ``sampler_options``)."""
    values: dict[str, Any] = {}
    opts: dict[str, Any] = {}
    for k, v in setting.items():
        (values if k in COMMON_GRID else opts)[k] = v
    if opts:
        values["sampler_options"] = opts
    return values


def parse_grid_overrides(pairs: Sequence[str] | None) -> dict[str, list[float]]:
    """``KEY=v1,v2,...`` strings to a grid override."""
    out: dict[str, list[float]] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--grid expects KEY=V1,V2,..., got {pair!r}")
        key, text = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            vals = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--grid {key}: values must be numbers, got {text!r}") from None
        if not vals:
            raise ConfigError(f"--grid {key}: no values")
        out[key] = [int(v) if v.is_integer() and key in ("n_candidates",) else v for v in vals]
    known = set(COMMON_GRID).union(*(g.keys() for g in SAMPLER_GRID.values()))
    unknown = sorted(set(out) - known)
    if unknown:
        raise ConfigError(f"--grid: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return out


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
) -> dict[str, Any]:
    """Search each method's grid on validation AUC with the same number of trials.

    Parameters
    ----------
    data
        The prepared dataset directory.
    methods
        Method names; ``itempop`` has nothing to tune and is skipped.
    out
        The tune directory (trial runs are cached in ``out/runs``).
    trials
        Trials per method.
    seed
        Seeds the choice of trials and every trial's training.
    base
        Training values common to all trials (e.g. ``epochs``); grid values override them.
    grid
        Overrides of grid keys (``{"lr": [...], ...}``).
    jobs
        Parallel processes (default: the CPU count).
    progress
        Show the overall progress bar.
    engine, address
        Where the trials run (see :func:`reinforcens.experiments.runner.run_specs`).

    Returns
    -------
    dict
        The contents of ``tuned.json``.

    Raises
    ------
    reinforcens.lock.LockedError
        If another process runs an experiment in ``out``.
    """
    from reinforcens.experiments.compare import data_record, parse_methods

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    names = [n for n in parse_methods(methods) if n != ITEMPOP]
    if not names:
        raise ConfigError("no method to tune (ItemPop has no hyper-parameters)")
    base = dict(base or {})
    base.pop("sampler_options", None)  # the grid decides the options it searches
    out = Path(out)
    plans: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for n in names:
        settings = draw_trials(method_grid(n, grid), trials, seed)
        plans[n] = [(s, method_values(Method(n, n, values=setting_values(s)), base)) for s in settings]
    record = data_record(data)  # the data is loaded and verified before anything is written
    with DirectoryLock(out, "experiment"):
        specs, results = _run_trials(
            data, plans, out, seed, base, jobs or default_jobs(), progress, engine, address
        )
        best, rows = _select(plans, specs, results, grid)
        tuned = {
            "metric": "valid.auc",
            "seed": seed,
            "trials": trials,
            **record,
            "base": base,
            "methods": best,
        }
        report.write_csv(out / "trials.csv", pd.DataFrame(rows))
        report.write_json(out / "tuned.json", tuned)
        report.write_text(out / "tuned.md", format_tuned(tuned))
    return tuned


def _run_trials(
    data: str | Path,
    plans: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]],
    out: Path,
    seed: int,
    base: dict[str, Any],
    jobs: int,
    progress: bool,
    engine: str = "local",
    address: str | None = None,
) -> tuple[dict[str, list[RunSpec]], dict[str, dict[str, Any]]]:
    """Run every method's trials: those without pretraining first (``uniform`` among them), then the
    learned samplers from the best ``uniform`` trial (or a ``uniform`` run with the common settings).

    Returns
    -------
    tuple
        The specs of each method's trials (in the order of ``plans``) and the results by run directory.
    """
    runs_dir = out.resolve() / "runs"
    fingerprint = data_fingerprint(data)

    def spec(n: str, values: dict[str, Any], key: str, pretrain: str | None = None) -> RunSpec:
        return RunSpec(n, n, seed, values, str(runs_dir / key / f"trial-seed{seed}"), pretrain)

    def specs_of(n: str, pretrain: str | None, pre_key: str | None) -> list[RunSpec]:
        return [
            spec(n, values, run_key(n, n, values, pre_key, fingerprint=fingerprint), pretrain)
            for _, values in plans[n]
        ]

    first = [n for n in plans if not needs_pretraining(n, plans[n][0][1])]
    later = [n for n in plans if n not in first]
    all_specs: dict[str, list[RunSpec]] = {n: specs_of(n, None, None) for n in first}
    results = run_specs(
        [s for n in first for s in all_specs[n]], data, jobs=jobs, progress=progress, desc="tune",
        engine=engine, address=address,
    )
    if later:
        if "uniform" in first:
            pre_spec = _best(all_specs["uniform"], results)
            pre_key = "tuned-uniform:" + Path(pre_spec.run_dir).parent.name
        else:
            pre_values = pretraining_values(base)
            pre_key = run_key("uniform", "uniform", pre_values, fingerprint=fingerprint)
            pre_spec = spec("uniform", pre_values, pre_key)
            results.update(
                run_specs(
                    [pre_spec], data, jobs=1, progress=progress, desc="pretrain", engine=engine,
                    address=address,
                )
            )
        for n in later:
            all_specs[n] = specs_of(n, pre_spec.run_dir, pre_key)
        results.update(
            run_specs(
                [s for n in later for s in all_specs[n]], data, jobs=jobs, progress=progress, desc="tune",
                engine=engine, address=address,
            )
        )
    return {n: all_specs[n] for n in plans}, results


def _select(
    plans: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]],
    specs: dict[str, list[RunSpec]],
    results: dict[str, dict[str, Any]],
    grid: dict[str, list[Any]] | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Each method's best trial on validation AUC (the ``methods`` of ``tuned.json``) and one row per
    trial."""
    rows = []
    best: dict[str, Any] = {}
    for n in plans:
        best_auc, best_entry = -math.inf, None
        for (setting, _), spec in zip(plans[n], specs[n], strict=True):
            met = results[spec.run_dir]["metrics"]
            auc = met.get("valid.auc")
            auc = -math.inf if auc is None else float(auc)
            rows.append(
                {
                    "method": n,
                    **setting,
                    "valid_auc": auc,
                    "valid_ndcg": met.get("valid.ndcg"),
                    "best_epoch": met.get("best_epoch"),
                    "run_dir": spec.run_dir,
                }
            )
            if auc > best_auc:
                best_auc = auc
                best_entry = {
                    "values": setting_values(setting),
                    "valid_auc": auc,
                    "valid_ndcg": met.get("valid.ndcg"),
                    "run_dir": spec.run_dir,
                }
        assert best_entry is not None
        best_entry["trials"] = len(plans[n])
        best_entry["grid_size"] = grid_size(method_grid(n, grid))
        best[n] = best_entry
    return best, rows


def _best(specs: list[RunSpec], results: dict[str, dict[str, Any]]) -> RunSpec:
    def auc(s: RunSpec) -> float:
        v = results[s.run_dir]["metrics"].get("valid.auc")
        return -math.inf if v is None else float(v)

    return max(specs, key=auc)


def format_tuned(tuned: dict[str, Any]) -> str:
    """A Markdown table of each method's best setting and its validation AUC."""
    headers = ["Method", "trials", "grid", "valid AUC", "valid NDCG", "best setting"]
    body = []
    for n, e in tuned["methods"].items():
        vals = dict(e["values"])
        opts = vals.pop("sampler_options", {})
        text = ", ".join(f"{k}={v:g}" for k, v in {**vals, **opts}.items())
        body.append(
            [
                display_name(n, (tuned.get("base") or {}).get("model", "gmf")),
                str(e["trials"]),
                str(e["grid_size"]),
                report.fmt_value(e["valid_auc"]),
                report.fmt_value(e["valid_ndcg"]),
                text,
            ]
        )
    return (
        report.markdown_table(headers, body, align="lrrrrl")
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
