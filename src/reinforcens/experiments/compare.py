"""Every method on the same data and seeds: the paper's Table 2 with paired t-tests.

:func:`compare` plans one run per (method, seed) (:mod:`reinforcens.experiments.runner`), runs what is
not cached, and writes to the experiment directory:

``table.md``
    Mean ± sample std over seeds of the test list AUC and NDCG, the paired t-test p-value of each
    method against the reference on AUC and on NDCG, and the full-ranking Recall@k/NDCG@k (and the
    simulator's true AUC when the data has a ground truth).
``results.csv``
    One row per method and seed.
``summary.json``
    ``{"reference": NAME, "seeds": [...], "data": PATH, "data_fingerprint": SHA256, "methods": {NAME:
    {"label", "n", "test_auc_mean", "test_auc_std", "test_ndcg_mean", "test_ndcg_std", "p_auc",
    "p_ndcg", ...}}}``.

The runs are cached in ``runs/`` under names that include the dataset's fingerprint: on other data a
compare trains new runs beside the old ones. One process at a time writes the directory (its
``.lock``). With a tune result, each tuned method's best trial is copied in as its run of the tune's
seed where it is that run (:func:`adopt_tuned_runs`), instead of being trained again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reinforcens import rundir
from reinforcens.errors import ConfigError, DataError
from reinforcens.experiments import report
from reinforcens.experiments.runner import (
    ITEMPOP,
    Method,
    RunSpec,
    check_options_used,
    data_fingerprint,
    default_jobs,
    display_name,
    plan,
    run_specs,
    run_status,
)
from reinforcens.experiments.stats import mean_std, paired_pvalue
from reinforcens.lock import LOCK_FILE, DirectoryLock
from reinforcens.samplers import PAPER_SAMPLERS

#: the methods of the paper's Table 2, in its order: ItemPop, then the samplers by their ``paper_order``
PAPER_METHODS: tuple[str, ...] = (ITEMPOP, *PAPER_SAMPLERS)


def canonical_method(name: str) -> str:
    """The registry name of a method (``itempop`` or a sampler name or alias)."""
    from reinforcens.samplers import canonical_name

    key = name.strip().lower()
    if key in (ITEMPOP, "pop", "item-pop"):
        return ITEMPOP
    return canonical_name(key)


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """Comma-separated method names to canonical names, in order, without duplicates."""
    names = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for n in names:
        if not n.strip():
            continue
        key = canonical_method(n)
        if key not in out:
            out.append(key)
    if not out:
        raise ConfigError("--methods names no method")
    return out


def parse_seeds(text: str | int | Sequence[int]) -> list[int]:
    """``10`` means seeds 0..9; ``3,7,11`` means those seeds."""
    if isinstance(text, int):
        n = text
    elif not isinstance(text, str):
        return [int(s) for s in text]
    elif "," in text:
        try:
            return [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds: expected a count or a comma-separated list, got {text!r}") from None
    else:
        try:
            n = int(text)
        except ValueError:
            raise ConfigError(f"--seeds: expected a count or a comma-separated list, got {text!r}") from None
    if n < 1:
        raise ConfigError(f"--seeds must be at least 1, got {n}")
    return list(range(n))


def tuned_overrides(tuned: dict[str, Any] | None, method: str) -> dict[str, Any]:
    """A method's best training values from a tune result (``{}`` if the method was not tuned)."""
    if not tuned:
        return {}
    best = tuned.get("methods", {}).get(method)
    return dict(best["values"]) if best else {}


def adopt_tuned_runs(specs: Sequence[RunSpec], tuned: dict[str, Any] | None, fingerprint: str) -> list[str]:
    """Copy each tuned method's best trial into the compare's run of the tune's seed where the trial is
    that run, so that it is not trained twice; returns the run directories filled.

    A trial is that run when the method, its values and the data are the same, which the run
    directory's name hashes (:func:`~reinforcens.experiments.runner.run_key`), and the run is not
    pretrained (a learned sampler starts from a pretraining run that the compare trains itself, so
    its trial is never adopted). The trial must be finished and verify against the run's config, the
    data and how the run would be computed here (backend, device;
    :func:`reinforcens.rundir.verify_finished`), and the run directory must not exist yet; otherwise,
    or if the copy fails, the run is trained as before. The copy (without the trial's lock file) is
    made beside the run directory and renamed into place, so an interrupted copy leaves no half run
    (a copy left by a killed compare is removed by the next); the run is then verified again as any
    finished run before it is read. The caller holds the experiment's lock.
    """
    if not tuned:
        return []
    from reinforcens.train import computed_as

    adopted = []
    for spec in specs:
        entry = tuned.get("methods", {}).get(spec.key) or {}
        trial = Path(entry.get("run_dir") or "")
        target = Path(spec.run_dir)
        for left in target.parent.glob(f".{target.name}.adopting-*"):  # a killed compare's copy
            shutil.rmtree(left, ignore_errors=True)
        if spec.seed != tuned.get("seed") or spec.pretrain is not None or target.exists():
            continue
        if trial.parent.name != target.parent.name or run_status(trial) != "cached":
            continue
        partial = target.with_name(f".{target.name}.adopting-{os.getpid()}")
        try:
            config = spec.config()
            rundir.verify_finished(trial, config.to_json(), fingerprint, computed_as(config))
            shutil.copytree(trial, partial, ignore=shutil.ignore_patterns(LOCK_FILE))
            os.rename(partial, target)
        except (ConfigError, DataError, OSError, shutil.Error):
            continue  # trained instead
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        adopted.append(spec.run_dir)
    return adopted


#: metrics read from each run's ``metrics.json``, as CSV column -> metrics key (``{k}`` = full_k)
METRIC_COLUMNS = {
    "test_auc": "test.auc",
    "test_ndcg": "test.ndcg",
    "test_recall@{k}": "test.recall@{k}",
    "test_ndcg@{k}": "test.ndcg@{k}",
    "test_true_auc": "test.true_auc",
    "valid_auc": "valid.auc",
    "valid_ndcg": "valid.ndcg",
    "valid_auc_chance_se": "valid.auc_chance_se",
    "test_auc_exposed": "test.auc_exposed",
    "test_auc_padded": "test.auc_padded",
    #: on the simulator: the share of the last epoch's recorded negatives the user would click
    "negatives_false_negative_rate": "negatives.false_negative_rate",
}

#: a run whose best validation AUC is below 0.5 + CHANCE_Z standard errors of a random ranking's
#: (:func:`reinforcens.metrics.chance_auc_se`) is not distinguishable from chance on the validation
#: lists (one-sided, about 2% of random rankings exceed it at one evaluation; a run's best over many
#: evaluations exceeds it more often, so the flag catches stalled runs and does not certify learning)
CHANCE_Z = 2.0


@dataclass
class ExperimentResult:
    """What :func:`compare` (and the experiments built on it) return.

    Attributes
    ----------
    rows : pandas.DataFrame
        One row per method and seed.
    summary : dict
        The contents of ``summary.json``.
    table : str
        The Markdown table.
    status : dict
        ``{run_dir: "cached" | "resumed" | "trained"}`` of every run.
    """

    rows: pd.DataFrame
    summary: dict[str, Any]
    table: str
    status: dict[str, str]


def collect_rows(
    specs, results: dict[str, dict[str, Any]], methods: Sequence[Method], k: int
) -> pd.DataFrame:
    """One row per (method, seed) with the metrics of its run."""
    by_key = {m.key: m for m in methods}
    rows = []
    for s in specs:
        if s.key not in by_key:
            continue  # a pretraining run that is not itself a method
        met = results[s.run_dir]["metrics"]
        row: dict[str, Any] = {"method": s.key, "label": by_key[s.key].display, "seed": s.seed}
        for col, name in METRIC_COLUMNS.items():
            value = met.get(name.format(k=k))
            row[col.format(k=k)] = float("nan") if value is None else float(value)
        for extra in ("best_epoch", "epochs", "seconds", "train_seconds_per_epoch"):
            row[extra] = met.get(extra)
        row["from_pretrained"] = s.pretrain is not None
        row["run_dir"] = s.run_dir
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in ("test_true_auc", "negatives_false_negative_rate"):  # ground-truth columns
        if col in frame and frame[col].isna().all():
            frame = frame.drop(columns=col)
    return frame


def summarize(
    rows: pd.DataFrame, methods: Sequence[Method], reference: str | None, seeds: Sequence[int]
) -> dict[str, Any]:
    """Per method: mean and std of every metric column, p-values against the reference, the best epoch
    of each seed's own stage (``best_epochs``) and, for a method started from a pretrained BPR-GMF, in how
    many seeds its stage never beat that start (``never_beat_start``: best epoch 0, so the seed reports
    the pretrained model itself)."""
    metric_cols = [
        c for c in rows.columns if c.startswith(("test_", "valid_")) and not c.endswith("chance_se")
    ]
    out: dict[str, Any] = {"reference": reference, "seeds": list(seeds), "methods": {}}
    ref_rows = rows[rows["method"] == reference].set_index("seed") if reference else None
    for m in methods:
        mine = rows[rows["method"] == m.key].set_index("seed").sort_index()
        entry: dict[str, Any] = {"label": m.display, "sampler": m.sampler, "n": int(len(mine))}
        best = [None if pd.isna(b) else int(b) for b in mine.get("best_epoch", pd.Series(dtype=float))]
        pretrained = mine["from_pretrained"].astype(bool) if "from_pretrained" in mine else None
        entry["best_epochs"] = best
        entry["from_pretrained"] = bool(pretrained is not None and pretrained.any())
        entry["never_beat_start"] = (
            int(((mine["best_epoch"] == 0) & pretrained).sum()) if entry["from_pretrained"] else 0
        )
        trained = m.sampler != ITEMPOP
        entry["at_chance"] = _count(trained, mine, lambda f: f["valid_auc"]
                                    < 0.5 + CHANCE_Z * f["valid_auc_chance_se"])  # fmt: skip
        # the last epoch was the best: the epoch cap ended a run that was still improving
        entry["at_cap"] = _count(
            trained, mine, lambda f: (f["best_epoch"] == f["epochs"]) & (f["epochs"] > 0)
        )
        for col in metric_cols:
            entry[f"{col}_mean"], entry[f"{col}_std"] = mean_std(mine[col].to_numpy())
        for col, p_name in (("test_auc", "p_auc"), ("test_ndcg", "p_ndcg")):
            if ref_rows is None or m.key == reference:
                entry[p_name] = None
                continue
            common = mine.index.intersection(ref_rows.index)
            entry[p_name] = paired_pvalue(mine.loc[common, col], ref_rows.loc[common, col])
        out["methods"][m.key] = entry
    return out


def _count(trained: bool, frame: pd.DataFrame, flag: Callable[[pd.DataFrame], pd.Series]) -> int:
    """How many rows of a trained method's ``frame`` the ``flag`` marks."""
    if not trained or frame.empty:
        return 0
    return int(flag(frame).fillna(False).astype(bool).sum())  # NaN (undefined AUC): not flagged


def format_table(
    summary: dict[str, Any], k: int, extra_cols: Sequence[tuple[str, Any]] = (), title: str = ""
) -> str:
    """The Markdown table of a summary (``extra_cols``: ``(header, fn(key, entry) -> str)`` after the
    method name, e.g. Table 3's alpha and beta)."""
    ref = summary["reference"]
    ref_label = summary["methods"][ref]["label"] if ref in summary["methods"] else ref
    has_truth = any("test_true_auc_mean" in e for e in summary["methods"].values())
    headers = ["Method", *[h for h, _ in extra_cols], "best epoch", "AUC", "NDCG"]
    if ref:
        headers += [f"p (AUC) vs {ref_label}", f"p (NDCG) vs {ref_label}"]
    headers += [f"Recall@{k}", f"NDCG@{k}"]
    if has_truth:
        headers.append("true AUC")
    body = []
    stuck = {key: e for key, e in summary["methods"].items() if e.get("never_beat_start")}
    chance = {key: e for key, e in summary["methods"].items() if e.get("at_chance")}
    capped = {key: e for key, e in summary["methods"].items() if e.get("at_cap")}
    for key, e in summary["methods"].items():
        marks = "".join(m for m, group in (("†", stuck), ("‡", chance), ("§", capped)) if key in group)
        label = e["label"] + (f" {marks}" if marks else "")
        row = [label, *[fn(key, e) for _, fn in extra_cols], _epochs_text(e)]
        row += [fmt(e, "test_auc"), fmt(e, "test_ndcg")]
        if ref:
            row += ["-" if key == ref else report.fmt_p(e["p_auc"])]
            row += ["-" if key == ref else report.fmt_p(e["p_ndcg"])]
        row += [fmt(e, f"test_recall@{k}"), fmt(e, f"test_ndcg@{k}")]
        if has_truth:
            row.append(fmt(e, "test_true_auc"))
        body.append(row)
    seeds = summary["seeds"]
    lines = [title] if title else []
    lines += [
        report.markdown_table(headers, body),
        "",
        f"Test metrics, mean ± sample std over {len(seeds)} seed(s) ({_seed_text(seeds)}). "
        "AUC/NDCG: per-user over the fixed evaluation lists (the paper's protocol); "
        f"Recall@{k}/NDCG@{k}: ranking all items, training and validation clicks excluded"
        + ("; true AUC: expected AUC against the simulator's click probabilities" if has_truth else "")
        + ".",
    ]
    if ref:
        lines.append(
            f"p: two-sided paired t-test (scipy.stats.ttest_rel) over seeds against {ref_label}; "
            "n/a when undefined (fewer than 2 seeds, or identical values)."
        )
    lines.append(
        "best epoch: median (min-max over seeds) of the epoch of each run's own stage whose validation AUC "
        "was best; 0 is the pretrained start of a learned sampler."
    )
    for e in stuck.values():
        lines.append(
            f"† {e['label']}: in {e['never_beat_start']} of {e['n']} seed(s) the learned stage never beat "
            "its pretrained start (BPR with uniform negatives) on validation AUC, so those seeds report "
            "the pretrained model itself (equal to the uniform run of the same seed where that run is the "
            "start)."
        )
    for e in chance.values():
        lines.append(
            f"‡ {e['label']}: {e['at_chance']} of {e['n']} seed(s) ended at chance level: best validation "
            f"AUC below 0.5 + {CHANCE_Z:g} standard errors of a random ranking's on these lists, so not "
            "distinguishable from a model that learned nothing."
        )
    for e in capped.values():
        lines.append(
            f"§ {e['label']}: {e['at_cap']} of {e['n']} seed(s) were still improving when the epoch cap "
            "ended them (the last epoch was the best); a larger --epochs may do better."
        )
    return "\n".join(lines) + "\n"


def _epochs_text(entry: dict[str, Any]) -> str:
    epochs = [b for b in entry.get("best_epochs") or [] if b is not None]
    if not epochs or entry.get("sampler") == ITEMPOP:
        return "-"
    med = float(np.median(epochs))
    mid = f"{med:.0f}" if med == int(med) else f"{med:.1f}"
    return mid if min(epochs) == max(epochs) else f"{mid} ({min(epochs)}-{max(epochs)})"


def fmt(entry: dict[str, Any], col: str) -> str:
    return report.fmt_mean_std(entry.get(f"{col}_mean"), entry.get(f"{col}_std"))


def _seed_text(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if seeds == list(range(len(seeds))) and len(seeds) > 2:
        return f"0-{len(seeds) - 1}"
    return ", ".join(map(str, seeds))


def run_methods(
    data: str | Path,
    methods: Sequence[Method],
    seeds: Sequence[int],
    out: str | Path,
    base: dict[str, Any] | None = None,
    pretrain_values: dict[str, Any] | None = None,
    jobs: int | None = None,
    progress: bool = True,
    desc: str = "runs",
    engine: str = "local",
    address: str | None = None,
    tuned: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Plan and execute the runs of ``methods`` x ``seeds`` on the data (its runs are named after its
    fingerprint) on ``engine`` (with ``address``: see :func:`reinforcens.experiments.runner.run_specs`);
    returns the rows and run statuses. ``tuned``: a tune result whose best trials are adopted as runs
    (:func:`adopt_tuned_runs`). The caller holds the experiment's lock."""
    base = dict(base or {})
    check_options_used(methods, base.get("sampler_options") or {})
    fingerprint = data_fingerprint(data)
    specs = plan(methods, seeds, base, out, pretrain_values=pretrain_values, fingerprint=fingerprint)
    adopt_tuned_runs(specs, tuned, fingerprint)
    results = run_specs(
        specs, data, jobs=jobs or default_jobs(), progress=progress, desc=desc, engine=engine, address=address
    )
    k = int(base.get("full_k", 20))
    rows = collect_rows(specs, results, methods, k)
    return rows, {d: r["status"] for d, r in results.items()}


def compare(
    data: str | Path,
    methods: Sequence[str] = PAPER_METHODS,
    seeds: Sequence[int] | int = 10,
    out: str | Path = "compare",
    reference: str | None = "rns",
    base: dict[str, Any] | None = None,
    tuned: dict[str, Any] | None = None,
    jobs: int | None = None,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
) -> ExperimentResult:
    """Train every method on every seed (reusing cached runs) and write the Table-2 outputs.

    Parameters
    ----------
    data
        The prepared dataset directory.
    methods
        Method names (``itempop`` or sampler names/aliases).
    seeds
        A count (seeds 0..n-1) or the seeds.
    out
        The experiment directory.
    reference
        The method the others are tested against (default ``rns``; ``None`` for no tests). It is added
        to the methods if missing.
    base
        Training values for every method (as from ``reinforcens train``'s flags), including
        ``sampler_options`` that apply to the samplers having them.
    tuned
        A :func:`reinforcens.experiments.tune.tune` result: each tuned method's best values override
        ``base``; the ``uniform`` entry also sets the shared pretraining run.
    jobs
        Parallel processes (default: the CPU count); with ``engine="ray"``, the CPUs of the local Ray it
        starts.
    progress
        Show the overall progress bar.
    engine, address
        Where the runs execute: ``"local"`` or ``"ray"`` (with the cluster's address, or ``None`` for a
        local Ray); see :func:`reinforcens.experiments.runner.run_specs`. The results are the same.

    Returns
    -------
    ExperimentResult

    Raises
    ------
    reinforcens.lock.LockedError
        If another process runs an experiment in ``out``.
    """
    names = parse_methods(methods)
    if reference is not None:
        reference = canonical_method(reference)
        if reference not in names:
            names.append(reference)
    seeds = parse_seeds(seeds)
    base = dict(base or {})
    from reinforcens.experiments.tune import check_tuned_model

    check_tuned_model(tuned, base)
    model = str(base.get("model", "gmf"))
    ms = [Method(n, n, values=tuned_overrides(tuned, n), label=display_name(n, model)) for n in names]
    pre = {**base, **tuned_overrides(tuned, "uniform")}
    out = Path(out)
    record = data_record(data)  # the data is loaded and verified before anything is written
    with DirectoryLock(out, "experiment"):
        rows, status = run_methods(
            data, ms, seeds, out, base, pre, jobs, progress, desc="compare", engine=engine, address=address,
            tuned=tuned,
        )
        summary = summarize(rows, ms, reference, seeds)
        summary.update(record)
        summary["tuned"] = sorted(n for n in names if tuned_overrides(tuned, n))
        k = int(base.get("full_k", 20))
        table = format_table(summary, k, title="")
        report.write_text(out / "table.md", table)
        report.write_csv(out / "results.csv", rows)
        report.write_json(out / "summary.json", summary)
    return ExperimentResult(rows, summary, table, status)


def data_record(data: str | Path) -> dict[str, str]:
    """What an experiment's summary says of its data: ``{"data": absolute path, "data_fingerprint"}``."""
    return {"data": str(Path(data).resolve()), "data_fingerprint": data_fingerprint(data)}
