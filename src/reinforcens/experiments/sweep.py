"""One numeric option against test quality: the paper's Figure 2 (RNS-ES's NDCG against beta).

``sweep(data, "rns-es", "beta", [0, 0.1, ..., 0.9])`` trains the sampler once per value and seed
(reusing cached runs) and writes ``sweep.png`` (test NDCG and AUC against the value, mean ± std over
seeds), ``sweep.csv`` (one row per value and seed), ``sweep.json`` and ``sweep.md``.

The option may be any numeric training value (``lr``, ``l2``, ``dim``, ...) or any numeric option of the
sampler (``beta``, ``alpha``, ``n_candidates``, ...). For a sampler option, every value's runs start from
the same pretrained BPR-GMF of their seed; for a training value, the pretraining run uses that value too
(``dim`` must match, and ``lr``/``l2`` then apply to both stages).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reinforcens.errors import ConfigError
from reinforcens.experiments import report
from reinforcens.experiments.compare import (
    collect_rows,
    data_record,
    parse_seeds,
    summarize,
)
from reinforcens.experiments.runner import Method, RunSpec, default_jobs, plan, run_specs
from reinforcens.lock import DirectoryLock

#: figure size in inches (pixels: times :data:`reinforcens.experiments.report.DPI`)
FIGSIZE = (10.0, 4.0)


def parse_values(text: str | Sequence[float]) -> list[float]:
    """Comma-separated numbers; ``a,b,...,z`` expands to the arithmetic progression ``a, b, ..., z``.

    Examples
    --------
    >>> parse_values("0,0.25,...,1")
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if not isinstance(text, str):
        return [float(v) for v in text]
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if "..." in parts:
            i = parts.index("...")
            if i < 2 or i != len(parts) - 2:
                raise ConfigError("--values: write the progression as a,b,...,z")
            head = [float(p) for p in parts[:i]]
            last = float(parts[-1])
            step = head[-1] - head[-2]
            if step == 0 or (last - head[-1]) / step < 0:
                raise ConfigError(f"--values: {text!r} does not reach {last} with step {step}")
            n = int(round((last - head[-1]) / step))
            values = head + [head[-1] + step * (k + 1) for k in range(n)]
            return [round(v, 10) for v in values]
        values = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--values: expected numbers, got {text!r}") from None
    if not values:
        raise ConfigError("--values: no value")
    return values


def resolve_param(sampler: str, param: str) -> tuple[str, type]:
    """Where a swept option lives (``"train"`` or ``"sampler"``) and its numeric type.

    Raises
    ------
    ConfigError
        If neither the training config nor the sampler has a numeric option of that name.
    """
    from reinforcens.config import TrainConfig
    from reinforcens.samplers import SAMPLERS

    key = param.strip().replace("-", "_")
    sampler_fields = SAMPLERS[sampler].Config.model_fields
    for where, fields in (("sampler", sampler_fields), ("train", TrainConfig.model_fields)):
        if key in fields:
            typ = _numeric_type(fields[key].annotation)
            if typ is None:
                raise ConfigError(f"option {param!r} of {where} config is not numeric")
            return where, typ
    numeric = [
        k
        for k, f in {**TrainConfig.model_fields, **sampler_fields}.items()
        if _numeric_type(f.annotation) is not None and k != "seed"
    ]
    raise ConfigError(f"{sampler!r} has no option {param!r}; numeric options: {', '.join(sorted(numeric))}")


def _numeric_type(annotation: Any) -> type | None:
    args = typing.get_args(annotation) or (annotation,)
    for typ in (int, float):
        if typ in args and bool not in args:
            return typ
    return None


def sweep(
    data: str | Path,
    sampler: str,
    param: str,
    values: Sequence[float] | str,
    seeds: Sequence[int] | int = 1,
    out: str | Path = "sweep",
    base: dict[str, Any] | None = None,
    jobs: int | None = None,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
) -> dict[str, Any]:
    """Train ``sampler`` for each value of ``param`` and seed; write the plot and the numbers.

    Parameters
    ----------
    data
        The prepared dataset directory.
    sampler
        The sampler (name or alias).
    param
        A numeric training value or sampler option.
    values
        The values (or a string for :func:`parse_values`).
    seeds
        A count (seeds 0..n-1) or the seeds.
    out
        The experiment directory.
    base
        Training values common to all runs.
    jobs
        Parallel processes (default: the CPU count); with ``engine="ray"``, the CPUs of the local Ray it
        starts.
    progress
        Show the overall progress bar.
    engine, address
        Where the runs execute (see :func:`reinforcens.experiments.runner.run_specs`).

    Returns
    -------
    dict
        The contents of ``sweep.json``: ``{"sampler", "param", "where", "values", "seeds", "data",
        "data_fingerprint", "points": [{"value", "n", "test_auc_mean", "test_auc_std",
        "test_ndcg_mean", ...}]}``.

    Raises
    ------
    reinforcens.lock.LockedError
        If another process runs an experiment in ``out``.
    """
    from reinforcens.samplers import canonical_name

    sampler = canonical_name(sampler)
    param = param.strip().replace("-", "_")
    where, typ = resolve_param(sampler, param)
    vals = [typ(v) if typ is int else float(v) for v in parse_values(values)]
    if typ is int and any(float(v) != float(x) for v, x in zip(vals, parse_values(values), strict=True)):
        raise ConfigError(f"{param} takes integers, got {values!r}")
    seeds = parse_seeds(seeds)
    base = dict(base or {})
    out = Path(out)
    k = int(base.get("full_k", 20))
    record = data_record(data)  # the data is loaded and verified before anything is written
    with DirectoryLock(out, "experiment"):
        methods, specs = _plan_sweep(
            sampler, param, where, vals, seeds, base, out, record["data_fingerprint"]
        )
        results = run_specs(specs, data, jobs or default_jobs(), progress, "sweep", engine, address)
        rows = collect_rows(specs, results, methods, k)
        rows.insert(1, param, [vals[[m.key for m in methods].index(key)] for key in rows["method"]])
        summary = summarize(rows, methods, None, seeds)
        points = []
        for v, m in zip(vals, methods, strict=True):
            e = summary["methods"][m.key]
            points.append({"value": v, **{k2: v2 for k2, v2 in e.items() if k2 not in ("label", "sampler")}})
        result = {
            "sampler": sampler,
            "param": param,
            "where": where,
            "values": vals,
            "seeds": seeds,
            **record,
            "points": points,
        }
        report.write_csv(out / "sweep.csv", rows.drop(columns=["label"]))
        report.write_json(out / "sweep.json", result)
        report.write_text(out / "sweep.md", format_sweep(result, k))
        plot_sweep(result, out / "sweep.png", k)
    return result


def _plan_sweep(
    sampler: str,
    param: str,
    where: str,
    vals: Sequence[float],
    seeds: Sequence[int],
    base: dict[str, Any],
    out: Path,
    fingerprint: str,
) -> tuple[list[Method], list[RunSpec]]:
    """One method per value (a sampler option, or a training value that the pretraining run shares)
    and its runs."""
    methods: list[Method] = []
    specs: list[RunSpec] = []
    for v in vals:
        key = f"{sampler}_{param}={v:g}"
        if where == "sampler":
            m = Method(key, sampler, options={param: v}, label=f"{param}={v:g}")
            specs += plan([m], seeds, base, out, fingerprint=fingerprint)
        else:
            m = Method(key, sampler, values={param: v}, label=f"{param}={v:g}")
            pre = {**base, param: v}
            specs += plan([m], seeds, base, out, pretrain_values=pre, fingerprint=fingerprint)
        methods.append(m)
    return methods, specs


def format_sweep(result: dict[str, Any], k: int) -> str:
    """A Markdown table of the sweep (one row per value)."""
    headers = [result["param"], "AUC", "NDCG", f"Recall@{k}", f"NDCG@{k}", "valid AUC"]
    body = []
    for p in result["points"]:
        body.append(
            [f"{p['value']:g}"]
            + [
                report.fmt_mean_std(p.get(f"{c}_mean"), p.get(f"{c}_std"))
                for c in ("test_auc", "test_ndcg", f"test_recall@{k}", f"test_ndcg@{k}", "valid_auc")
            ]
        )
    n = len(result["seeds"])
    return (
        report.markdown_table(headers, body)
        + f"\n\n{result['sampler']}: test metrics against {result['param']}, mean ± sample std over "
        f"{n} seed(s).\n"
    )


def plot_sweep(result: dict[str, Any], path: str | Path, k: int = 20) -> Path:
    """Figure 2: test NDCG (left) and AUC (right) against the swept value, mean ± std over seeds."""
    fig, axes = report.new_figure(*FIGSIZE, ncols=2)
    x = np.array([p["value"] for p in result["points"]], dtype=float)
    for ax, col, name in zip(axes, ("test_ndcg", "test_auc"), ("NDCG", "AUC"), strict=True):
        y = np.array([_num(p.get(f"{col}_mean")) for p in result["points"]])
        err = np.array([_num(p.get(f"{col}_std")) for p in result["points"]])
        err = np.where(np.isfinite(err), err, 0.0)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color="tab:blue")
        ax.set_xlabel(result["param"])
        ax.set_ylabel(f"test {name}")
        ax.set_title(f"{result['sampler']}: {name} vs {result['param']}")
        ax.grid(alpha=0.3)
    n = len(result["seeds"])
    fig.suptitle(f"mean ± std over {n} seed(s)" if n > 1 else "one seed", fontsize=9)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.85, wspace=0.28)
    return report.save_figure(fig, path)


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)
