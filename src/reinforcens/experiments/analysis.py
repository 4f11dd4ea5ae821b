"""Generated versus exposed negatives: the paper's Figure 3.

For each finished run directory:

- **t-SNE** (:class:`sklearn.manifold.TSNE`) of the feature vectors ``f = p_u * q_i`` of up to 1000
  negatives the sampler generated (from ``negatives.npz``, the best epoch's record, else the last) and
  as many exposed instances (for each generated ``(u, j)``, one item drawn from ``u``'s training
  exposed-but-unclicked items; users without exposures are left out). Exposed instances are red,
  generated ones blue, and generated negatives that are themselves exposed to their user (the overlap)
  green.
- **overlap and MMD over training epochs**: per recorded epoch, the share of generated ``(u, j)`` that
  are in ``u``'s training exposures, and the (biased) squared MMD (:func:`reinforcens.mmd.mmd2`, the
  run's kernel bandwidths) between the generated and exposed feature sets.
- **popularity alignment**: the Spearman correlation (:func:`scipy.stats.spearmanr`) between each item's
  mean score over all users, ``h . (mean_u p_u * q_i)``, and its training clicks: how much of what the
  recommender learned is popularity (hard negatives are mostly popular items, and pushing them down
  lowers it).

All features come from the run's *final* recommender (its ``best.pt``), also for earlier epochs: the
negatives of epoch k are those the sampler drew at epoch k, but they are embedded with the selected
model, not the model of epoch k (which is not stored). The numbers are comparable across epochs of a
run and across runs on the same data, not with the values logged during training.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reinforcens import rundir
from reinforcens.errors import ConfigError, DataError
from reinforcens.experiments import report

#: sizes in inches of the t-SNE and the curves figures
TSNE_FIGSIZE = (6.0, 6.0)
CURVES_FIGSIZE = (10.0, 4.0)
COLORS = {"exposed": "tab:red", "generated": "tab:blue", "overlap": "tab:green"}


@dataclass
class RunAnalysis:
    """The numbers of one run (see the module docstring)."""

    name: str
    run_dir: str
    sampler: str
    epochs: list[int]
    overlap: list[float]
    mmd: list[float]
    tsne_epoch: int
    tsne: np.ndarray
    kinds: np.ndarray
    popularity_spearman: float = float("nan")

    def to_json(self) -> dict[str, Any]:
        counts = {k: int((self.kinds == k).sum()) for k in ("exposed", "generated", "overlap")}
        return {
            "name": self.name,
            "run_dir": self.run_dir,
            "sampler": self.sampler,
            "epochs": self.epochs,
            "overlap": self.overlap,
            "mmd": self.mmd,
            "tsne_epoch": self.tsne_epoch,
            "tsne_points": counts,
            "tsne_overlap_share": counts["overlap"] / max(counts["overlap"] + counts["generated"], 1),
            "popularity_spearman": self.popularity_spearman,
        }


def _load_data_for(run_dir: Path, data: str | Path | None):
    from reinforcens.rundir import data_for

    return data_for(run_dir, data)


def _recommender(run_dir: Path, data):
    """The run's recommender (for IRGAN too, whose ranking model is its generator); ``data``: its
    prepared dataset (a graph model's graph)."""
    from reinforcens.train import load_run

    cfg, model, _ = load_run(run_dir, data=data, recommender=True)
    return cfg, model.eval()


def _ranking_model(run_dir: Path, data):
    """The model that ranks (IRGAN's generator, else the recommender)."""
    from reinforcens.train import load_run

    return load_run(run_dir, data=data)[1]


def _exposed_for(users: np.ndarray, exposures, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One exposed item per user occurrence (users without exposures dropped)."""
    counts = exposures.counts()[users]
    keep = counts > 0
    u = users[keep]
    offs = (rng.random(u.size) * counts[keep]).astype(np.int64)
    items = exposures.indices[exposures.indptr[u] + offs]
    return u, items


def _features(model, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.features(
            torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long)
        )


def popularity_alignment(model, clicks: np.ndarray) -> float:
    """Spearman correlation between each item's mean score over all users and its training clicks.

    Parameters
    ----------
    model
        A recommender; with its effective tables ``P, Q, h``, item ``i``'s mean score over users is
        ``h . (mean_u P_u * Q_i)``.
    clicks
        Training clicks per item.

    Returns
    -------
    float
        The rank correlation; NaN when either side is constant.
    """
    from scipy.stats import spearmanr

    with torch.no_grad():
        t = model.tables()
        mean_user = t.user.double().mean(0)
        scores = (t.item.double() * mean_user) @ t.h.double()
    clicks = np.asarray(clicks)
    if np.ptp(clicks) == 0 or float(scores.max() - scores.min()) == 0:
        return float("nan")
    return float(spearmanr(scores.numpy(), clicks).statistic)


def analyze_run(
    run_dir: str | Path,
    name: str | None = None,
    data: str | Path | None = None,
    n: int = 1000,
    seed: int = 0,
    perplexity: float = 30.0,
) -> RunAnalysis:
    """Overlap and MMD per epoch, and the t-SNE embedding, of one run.

    Parameters
    ----------
    run_dir
        A finished run directory with ``negatives.npz`` (``record_negatives > 0``).
    name
        Its name in plots (default: the directory name).
    data
        The prepared dataset (default: the one recorded in the run's ``data.json``).
    n
        Points per set in the t-SNE.
    seed
        Seeds the exposed samples and the t-SNE.
    perplexity
        t-SNE perplexity (lowered automatically for tiny samples).

    Raises
    ------
    DataError
        If the run is unfinished or recorded no negatives.
    """
    from sklearn.manifold import TSNE

    from reinforcens.mmd import DEFAULT_BANDWIDTHS, median_bandwidths, mmd2

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError("no such run directory", run_dir)
    for required in (rundir.CONFIG, rundir.BEST):
        if not (run_dir / required).is_file():
            raise DataError("missing: not a finished run directory", run_dir / required)
    neg_path = run_dir / rundir.NEGATIVES
    if not neg_path.is_file():
        raise DataError("missing: train with record_negatives > 0", neg_path)
    prepared = _load_data_for(run_dir, data)
    cfg, model = _recommender(run_dir, prepared)
    if prepared.n_users != model.n_users or prepared.n_items != model.n_items:
        raise DataError("the run was trained on other data than --data", run_dir)
    exposures = prepared.train_exposures
    bandwidths = tuple(cfg.sampler_options.get("bandwidths") or DEFAULT_BANDWIDTHS)
    records = rundir.read_negatives(neg_path, n_users=prepared.n_users, n_items=prepared.n_items)
    if not records:
        raise DataError("negatives.npz holds no epoch", run_dir)
    epochs = sorted(records)
    rng = np.random.default_rng(seed)
    overlaps, mmds = [], []
    for e in epochs:
        users, items = records[e][0].astype(np.int64), records[e][1].astype(np.int64)
        overlaps.append(float(exposures.contains(users, items).mean()) if users.size else float("nan"))
        eu, ei = _exposed_for(users, exposures, rng)
        # float64: the kernel values are close to their maximum, float32 would leave rounding noise
        gen, exp = _features(model, users, items).double(), _features(model, eu, ei).double()
        bw = bandwidths
        if cfg.sampler_options.get("bandwidth_scale") == "median":  # as the run rescaled them
            bw = median_bandwidths(gen, exp, bandwidths)
        mmds.append(mmd2(gen, exp, bw))

    metrics_path = run_dir / rundir.METRICS
    best = rundir.read_metrics(run_dir)["best_epoch"] if metrics_path.is_file() else None
    tsne_epoch = int(best) if best in records else epochs[-1]
    users, items = records[tsne_epoch][0].astype(np.int64), records[tsne_epoch][1].astype(np.int64)
    pick = rng.permutation(users.size)[:n]
    users, items = users[pick], items[pick]
    eu, ei = _exposed_for(users, exposures, rng)
    gen_kind = np.where(exposures.contains(users, items), "overlap", "generated")
    feats = torch.cat([_features(model, users, items), _features(model, eu, ei)]).numpy()
    kinds = np.concatenate([gen_kind, np.full(eu.size, "exposed")])
    perp = min(perplexity, max((feats.shape[0] - 1) / 3.0, 1.0))
    emb = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(
        feats.astype(np.float64)
    )
    return RunAnalysis(
        popularity_spearman=popularity_alignment(
            _ranking_model(run_dir, prepared), prepared.item_popularity()
        ),
        name=name or run_dir.name,
        run_dir=str(run_dir),
        sampler=cfg.sampler,
        epochs=epochs,
        overlap=overlaps,
        mmd=mmds,
        tsne_epoch=tsne_epoch,
        tsne=emb,
        kinds=kinds,
    )


def plot_tsne(res: RunAnalysis, path: str | Path) -> Path:
    """Figure 3(a)/(b): the t-SNE of exposed (red), generated (blue) and overlapping (green) points."""
    fig, axes = report.new_figure(*TSNE_FIGSIZE)
    ax = axes[0]
    for kind, label in (
        ("exposed", "exposed"),
        ("generated", "generated"),
        ("overlap", "generated and exposed"),
    ):
        sel = res.kinds == kind
        ax.scatter(
            res.tsne[sel, 0],
            res.tsne[sel, 1],
            s=6,
            c=COLORS[kind],
            label=f"{label} ({int(sel.sum())})",
            alpha=0.7,
            linewidths=0,
        )
    ax.set_title(f"{res.name} ({res.sampler}), epoch {res.tsne_epoch}")
    ax.legend(loc="upper right", fontsize=8, markerscale=2)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.subplots_adjust(left=0.04, right=0.96, bottom=0.04, top=0.93)
    return report.save_figure(fig, path)


def plot_curves(results: Sequence[RunAnalysis], path: str | Path) -> Path:
    """Figure 3(c)/(d): overlap and MMD between generated and exposed negatives over epochs."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = report.new_figure(*CURVES_FIGSIZE, ncols=2)
    for res in results:
        axes[0].plot(res.epochs, res.overlap, marker=".", label=res.name)
        axes[1].plot(res.epochs, res.mmd, marker=".", label=res.name)
    axes[0].set_ylabel("share of generated negatives exposed")
    axes[1].set_ylabel("MMD²")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("overlap")
    axes[1].set_title("MMD (features of the final model)")
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.3)
    return report.save_figure(fig, path)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def analyze(
    runs: Sequence[str | Path],
    out: str | Path,
    names: Sequence[str] | None = None,
    data: str | Path | None = None,
    n: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Analyse runs and write ``tsne_<name>.png`` per run, ``overlap_mmd.png`` and ``analysis.json``.

    Parameters
    ----------
    runs
        Finished run directories (e.g. RNS-ES with beta 0 and 0.9).
    out
        Output directory.
    names
        Names of the runs in plots and files (default: unique forms of the directory names).
    data
        The prepared dataset (default: each run's recorded one).
    n
        Points per set in each t-SNE.
    seed
        Seeds the exposed samples and the t-SNE.

    Returns
    -------
    dict
        The contents of ``analysis.json``.
    """
    if not runs:
        raise ConfigError("give at least one --run")
    if names and len(names) != len(runs):
        raise ConfigError(f"{len(names)} --label(s) for {len(runs)} --run(s)")
    out = Path(out)
    labels = list(names) if names else [_default_name(Path(r)) for r in runs]
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label in seen:
            seen[label] += 1
            labels[i] = f"{label}-{seen[label]}"
        else:
            seen[label] = 1
    results = [
        analyze_run(r, name=lab, data=data, n=n, seed=seed) for r, lab in zip(runs, labels, strict=True)
    ]
    files = []
    for res in results:
        files.append(str(plot_tsne(res, out / f"tsne_{_slug(res.name)}.png")))
    files.append(str(plot_curves(results, out / "overlap_mmd.png")))
    summary = {
        "features": "f = p_u * q_i from each run's final (best) recommender, for every epoch",
        "mmd": "biased squared MMD, sum of Gaussian kernels with the run's bandwidths",
        "overlap": "share of generated (u, j) with j in u's training exposed-unclicked items",
        "exposed_sample": "one exposed item per generated (u, j), for the same user u",
        "runs": [r.to_json() for r in results],
        "files": files,
    }
    report.write_json(out / "analysis.json", summary)
    return summary


def _default_name(run_dir: Path) -> str:
    """``seed0`` alone says little: use ``<method dir>/<seed dir>`` for runs made by compare/sweep."""
    name = run_dir.name
    if name.startswith(("seed", "trial")) and run_dir.parent.name:
        name = f"{run_dir.parent.name.rsplit('-', 1)[0]}_{name}"
    return name
