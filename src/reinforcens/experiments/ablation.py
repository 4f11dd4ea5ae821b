"""The paper's Table 3: BPR-GMF, RNS-AS (the adversarial reward only, i.e. KBGAN), RNS-ES (the
exposure rewards only) and RNS, with the alpha and beta each one uses.

The runs are planned exactly like :func:`reinforcens.experiments.compare.compare` (same run keys), so an
ablation in the directory of an earlier compare reuses its BPR-GMF, KBGAN and RNS runs. Output:
``ablation.md``, ``ablation.csv`` and ``ablation.json`` (the same schema as compare's ``summary.json``,
with ``alpha`` and ``beta`` per method).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reinforcens.experiments import report
from reinforcens.experiments.compare import (
    ExperimentResult,
    data_record,
    format_table,
    parse_seeds,
    run_methods,
    summarize,
    tuned_overrides,
)
from reinforcens.experiments.runner import Method, display_name, method_values
from reinforcens.lock import DirectoryLock
from reinforcens.samplers import sampler_config


def ablation_methods(
    rns_alpha: float | None = None,
    rns_beta: float | None = None,
    es_beta: float | None = None,
    tuned: dict[str, Any] | None = None,
    model: str = "gmf",
) -> list[Method]:
    """The four methods of Table 3 (keys ``uniform``, ``kbgan``, ``rns-es``, ``rns``); ``model``: the
    recommender, which names the uniform row (``BPR-GMF``, ``BPR-MF``, ...)."""

    def opts(**kw: float | None) -> dict[str, float]:
        return {k: v for k, v in kw.items() if v is not None}

    return [
        Method(
            "uniform",
            "uniform",
            values=tuned_overrides(tuned, "uniform"),
            label=display_name("uniform", model),
        ),
        Method("kbgan", "kbgan", values=tuned_overrides(tuned, "kbgan"), label="RNS-AS"),
        Method("rns-es", "rns-es", opts(beta=es_beta), tuned_overrides(tuned, "rns-es"), label="RNS-ES"),
        Method(
            "rns", "rns", opts(alpha=rns_alpha, beta=rns_beta), tuned_overrides(tuned, "rns"), label="RNS"
        ),
    ]


def ablation(
    data: str | Path,
    seeds: Sequence[int] | int = 10,
    out: str | Path = "ablation",
    base: dict[str, Any] | None = None,
    rns_alpha: float | None = None,
    rns_beta: float | None = None,
    es_beta: float | None = None,
    tuned: dict[str, Any] | None = None,
    jobs: int | None = None,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
) -> ExperimentResult:
    """Run Table 3 and write ``ablation.md``, ``ablation.csv``, ``ablation.json``.

    Parameters
    ----------
    data
        The prepared dataset directory.
    seeds
        A count (seeds 0..n-1) or the seeds.
    out
        The experiment directory (may be a compare's, to reuse its runs).
    base
        Training values for every method.
    rns_alpha, rns_beta
        RNS's alpha and beta (default: the sampler's, 2.5 and 0.75 as on Zhihu).
    es_beta
        RNS-ES's beta (default: the sampler's, 0.9 as on Zhihu).
    tuned
        A tune result whose settings override the defaults (the explicit alpha/beta win).
    jobs
        Parallel processes (default: the CPU count); with ``engine="ray"``, the CPUs of the local Ray it
        starts.
    progress
        Show the overall progress bar.
    engine, address
        Where the runs execute (see :func:`reinforcens.experiments.runner.run_specs`).

    Raises
    ------
    reinforcens.lock.LockedError
        If another process runs an experiment in ``out``.
    """
    seeds = parse_seeds(seeds)
    base = dict(base or {})
    from reinforcens.experiments.tune import check_tuned_model

    check_tuned_model(tuned, base)
    methods = ablation_methods(rns_alpha, rns_beta, es_beta, tuned, str(base.get("model", "gmf")))
    pre = {**base, **tuned_overrides(tuned, "uniform")}
    out = Path(out)
    record = data_record(data)  # the data is loaded and verified before anything is written
    with DirectoryLock(out, "experiment"):
        rows, status = run_methods(
            data, methods, seeds, out, base, pre, jobs, progress, "ablation", engine, address, tuned=tuned
        )
        summary = summarize(rows, methods, "rns", seeds)
        summary.update(record)
        table = _write_ablation(out, rows, summary, methods, base)
    return ExperimentResult(rows, summary, table, status)


def _write_ablation(
    out: Path, rows: pd.DataFrame, summary: dict[str, Any], methods: list[Method], base: dict[str, Any]
) -> str:
    """Add each method's alpha and beta to ``summary``, write the three outputs; returns the table."""
    for m in methods:
        opts = method_values(m, base)["sampler_options"]
        resolved = sampler_config(m.sampler, opts).model_dump()
        entry = summary["methods"][m.key]
        uses_exposure = resolved.get("alpha", 0.0) > 0
        entry["alpha"] = resolved.get("alpha") if m.sampler in ("rns", "kbgan") else None
        entry["beta"] = resolved.get("beta") if uses_exposure else None
    k = int(base.get("full_k", 20))

    def alpha(key: str, e: dict[str, Any]) -> str:
        return "-" if e.get("alpha") is None else f"{e['alpha']:.2f}"

    def beta(key: str, e: dict[str, Any]) -> str:
        return "-" if e.get("beta") is None else f"{e['beta']:.2f}"

    table = format_table(summary, k, extra_cols=[("α", alpha), ("β", beta)])
    report.write_text(out / "ablation.md", table)
    report.write_csv(out / "ablation.csv", rows)
    report.write_json(out / "ablation.json", summary)
    return table
