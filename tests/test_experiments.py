"""Experiments: statistics, the cached/resumable multi-run engine, tables, plots and the diagnosis.

Training runs use the simulator's ``tiny`` preset with 2 epochs: they check the machinery, not quality.
"""

from __future__ import annotations

import json
import math
import shutil

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from reinforcens.cli import main
from reinforcens.errors import ConfigError
from reinforcens.experiments.compare import compare, parse_seeds
from reinforcens.experiments.diagnose import _warnings, diagnose
from reinforcens.experiments.stats import mean_std, paired_pvalue
from reinforcens.experiments.sweep import parse_values
from reinforcens.experiments.tune import method_grid
from reinforcens.train import Trainer

FAST = ["--epochs", "2", "--batch-size", "1024", "--jobs", "1", "--quiet"]
FAST_VALUES = {"epochs": 2, "batch_size": 1024}


# ---------------------------------------------------------------------- statistics
def test_paired_pvalue_matches_scipy_and_the_formula():
    a = np.array([0.712, 0.709, 0.715, 0.711, 0.718, 0.707, 0.713, 0.716, 0.710, 0.714])
    b = np.array([0.705, 0.708, 0.706, 0.704, 0.711, 0.703, 0.709, 0.707, 0.702, 0.710])
    p = paired_pvalue(a, b)
    assert p == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    d = a - b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), d.size - 1), rel=1e-9)
    assert paired_pvalue(a, b) == paired_pvalue(b, a)  # two-sided


def test_paired_pvalue_edge_cases():
    x = [0.7, 0.71, 0.72]
    assert math.isnan(paired_pvalue(x, x))  # identical columns: t = 0/0, no p-value
    assert paired_pvalue(x, [v - 0.01 for v in x]) == 0.0  # constant non-zero difference: |t| infinite
    assert math.isnan(paired_pvalue([0.7], [0.6]))  # one pair
    # pairs with a NaN are left out, as with scipy's nan_policy="omit"
    a, b = [0.7, float("nan"), 0.72, 0.69], [0.68, 0.7, 0.71, 0.69]
    assert paired_pvalue(a, b) == pytest.approx(stats.ttest_rel([0.7, 0.72, 0.69], [0.68, 0.71, 0.69]).pvalue)
    with pytest.raises(ValueError, match="length"):
        paired_pvalue([1.0, 2.0], [1.0])


def test_mean_std_uses_the_sample_std():
    m, s = mean_std([1.0, 2.0, 3.0, float("nan")])
    assert (m, s) == (2.0, pytest.approx(1.0))
    m, s = mean_std([0.5])
    assert m == 0.5 and math.isnan(s)


def test_parsers():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("4,9") == [4, 9]
    assert parse_values("0,0.1,...,0.9") == [round(0.1 * i, 1) for i in range(10)]
    assert parse_values("10,20,...,50") == [10, 20, 30, 40, 50]
    with pytest.raises(ConfigError):
        parse_values("0,...,1")
    with pytest.raises(ConfigError):
        parse_seeds("0")


def test_tune_trials_are_an_equal_budget_from_the_grid(tmp_path):
    """Every method's study gets ``min(trials, grid size)`` trials, asked from its grid, reproducibly
    under a seed (asked here without training: the trials stay RUNNING)."""
    from reinforcens.experiments.tune import JOURNAL, _Tuner, grid_size, method_space

    grid = method_grid("rns")
    assert grid["lr"] == [1e-4, 5e-4, 1e-3, 5e-2, 1e-1] and grid["l2"] == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
    assert {"n_candidates", "alpha", "beta"} <= set(grid) and "alpha" not in method_grid("rns-es")
    assert grid_size(method_space("uniform")) == 25 and grid_size(method_space("rns")) == 25 * 15 * 6 * 10

    def asked(seed: int, out: str, trials: int = 12, method: str = "rns") -> list[dict]:
        d = tmp_path / out
        d.mkdir()
        tuner = _Tuner("unused", d, d / JOURNAL, seed, {}, trials, "tpe", None, "fp", 1, False, "local", None)
        s = tuner.open(method, method_space(method))
        return [tuner.ask(s).params for _ in range(s.budget)]

    trials = asked(3, "a")
    assert len(trials) == 12 and len({json.dumps(t, sort_keys=True) for t in trials}) == 12
    assert all(t[k] in grid[k] for t in trials for k in grid)
    assert trials == asked(3, "b") != asked(4, "c")
    whole = asked(0, "d", trials=100, method="uniform")  # a small grid is tried whole
    assert len(whole) == 25 and len({json.dumps(t, sort_keys=True) for t in whole}) == 25


# ---------------------------------------------------------------------- compare
@pytest.fixture(scope="module")
def compared(tiny_prepared, tmp_path_factory):
    """An uninterrupted compare of BPR-GMF and RNS-ES (pretrained from BPR-GMF) on 2 seeds."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    code = main(
        ["compare", "--data", str(tiny_prepared.path), "--methods", "uniform,rns-es"]
        + ["--seeds", "2", "--reference", "rns-es", "--out", str(out), *FAST]
    )
    assert code == 0
    return out


def test_compare_writes_table_csv_and_summary(compared, capsys):
    summary = json.loads((compared / "summary.json").read_text())
    assert summary["reference"] == "rns-es" and summary["seeds"] == [0, 1]
    assert set(summary["methods"]) == {"uniform", "rns-es"}
    for entry in summary["methods"].values():
        for key in ("test_auc_mean", "test_auc_std", "test_ndcg_mean", "test_ndcg_std"):
            assert 0.0 <= entry[key] <= 1.0, key
        for key in ("test_recall@20_mean", "test_ndcg@20_mean", "test_true_auc_mean", "valid_auc_mean"):
            assert key in entry
        assert entry["n"] == 2
        assert ("p_auc" in entry) and ("p_ndcg" in entry)
    assert summary["methods"]["rns-es"]["p_auc"] is None  # the reference itself
    rows = (compared / "results.csv").read_text().splitlines()
    assert rows[0].startswith("method,label,seed,test_auc,test_ndcg,test_recall@20,test_ndcg@20")
    assert len(rows) == 1 + 2 * 2
    table = (compared / "table.md").read_text()
    assert "BPR-GMF" in table and "RNS-ES" in table and "p (AUC) vs RNS-ES" in table
    # the learned sampler started from the seed's BPR-GMF run instead of pretraining again
    uniform_dirs = sorted(compared.glob("runs/uniform-*/seed*"))
    rns_dirs = sorted(compared.glob("runs/rns-es-*/seed*"))
    assert len(uniform_dirs) == len(rns_dirs) == 2
    for u, r in zip(uniform_dirs, rns_dirs, strict=True):
        cfg = json.loads((r / "config.json").read_text())
        assert cfg["pretrained"] == str(u / "best.pt") and not (r / "pretrain").exists()


def test_interrupted_compare_resumes_to_the_same_result(compared, tiny_prepared, tmp_path, monkeypatch):
    out = tmp_path / "cut"
    calls = {"n": 0}
    original = Trainer.train_epoch

    def crash(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # uniform seed 0 (2 epochs), then epoch 2 of uniform seed 1
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", crash)
    run = dict(methods="uniform,rns-es", seeds=2, out=out, reference="rns-es", jobs=1, progress=False)
    with pytest.raises(KeyboardInterrupt):
        compare(tiny_prepared.path, base=FAST_VALUES, **run)
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert not (out / "summary.json").exists()

    res = compare(tiny_prepared.path, base=FAST_VALUES, **run)
    by_run = {(p.split("/")[-2].rsplit("-", 1)[0], p.split("/")[-1]): s for p, s in res.status.items()}
    assert by_run == {
        ("uniform", "seed0"): "cached",
        ("uniform", "seed1"): "resumed",
        ("rns-es", "seed0"): "trained",
        ("rns-es", "seed1"): "trained",
    }
    full = json.loads((compared / "summary.json").read_text())["methods"]
    for name, entry in res.summary["methods"].items():
        for key in ("test_auc_mean", "test_ndcg_mean", "test_auc_std"):
            assert entry[key] == pytest.approx(full[name][key], abs=1e-12), (name, key)


def test_rerun_with_one_more_method_reuses_finished_runs(compared, tiny_prepared, tmp_path):
    out = tmp_path / "more"
    shutil.copytree(compared, out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/metrics.json")}
    assert len(mtimes) == 4
    res = compare(
        tiny_prepared.path,
        "uniform,rns-es,itempop",
        2,
        out,
        reference="rns-es",
        base=FAST_VALUES,
        jobs=1,
        progress=False,
    )
    statuses = sorted(res.status.values())
    assert statuses == ["cached"] * 4 + ["trained"] * 2
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert set(res.summary["methods"]) == {"uniform", "rns-es", "itempop"}
    pop = res.summary["methods"]["itempop"]
    assert pop["test_auc_std"] == 0.0 and 0.0 <= pop["p_auc"] <= 1.0  # deterministic, still paired


def test_parallel_workers_give_the_same_rows(compared, tiny_prepared, tmp_path):
    # ItemPop needs no training: this checks the process pool, not the trainer
    kw = dict(methods="itempop", seeds=2, reference=None, progress=False)
    serial = compare(tiny_prepared.path, out=tmp_path / "serial", jobs=1, **kw)
    parallel = compare(tiny_prepared.path, out=tmp_path / "parallel", jobs=2, **kw)
    assert sorted(parallel.status.values()) == ["trained", "trained"]
    cols = ["method", "seed", "test_auc", "test_ndcg", "test_recall@20"]
    assert parallel.rows[cols].equals(serial.rows[cols])


def test_uniform_with_init_pretrained_does_not_wait_for_itself(tiny_prepared, tmp_path):
    # regression: with init "pretrained" for all methods, the shared pretraining run asked to be
    # pretrained too, and compare stopped with "runs wait for a pretraining run that is not planned"
    base = dict(FAST_VALUES, init="pretrained", pretrain_epochs=2)
    res = compare(tiny_prepared.path, "uniform", 1, tmp_path / "pre", reference=None, base=base, jobs=2,
                  progress=False)  # fmt: skip
    runs = sorted(p.parent.parent.name[:7] for p in (tmp_path / "pre").glob("runs/*/seed0/metrics.json"))
    assert runs == ["uniform", "uniform"]  # the scratch pretraining run, and the run started from it
    assert len(res.rows) == 1  # the pretraining run is not a row of the table
    run = res.rows.iloc[0]["run_dir"]
    start = json.loads(open(f"{run}/config.json").read())["pretrained"]
    assert start is not None and start.endswith("best.pt") and not start.startswith(run)


def test_compare_rejects_an_option_no_method_has(tiny_prepared, tmp_path):
    with pytest.raises(ConfigError, match="dns_candidates"):
        compare(
            tiny_prepared.path,
            "uniform",
            1,
            tmp_path,
            reference=None,
            base={**FAST_VALUES, "sampler_options": {"dns_candidates": 5}},
            jobs=1,
            progress=False,
        )


# ---------------------------------------------------------------------- plots
def _png_shape(path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 0
    return matplotlib.image.imread(path).shape[:2]


def test_sweep_plot_and_numbers(tiny_prepared, tmp_path):
    out = tmp_path / "sweep"
    code = main(
        ["sweep", "--data", str(tiny_prepared.path), "--sampler", "uniform", "--param", "lr"]
        + ["--values", "0.01,0.05", "--seeds", "1", "--out", str(out), "--epochs", "1"]
        + ["--batch-size", "1024", "--jobs", "1", "--quiet"]
    )
    assert code == 0
    assert _png_shape(out / "sweep.png") == (400, 1000)
    res = json.loads((out / "sweep.json").read_text())
    assert res["param"] == "lr" and res["values"] == [0.01, 0.05]
    assert [p["value"] for p in res["points"]] == [0.01, 0.05]
    assert all(0 <= p["test_ndcg_mean"] <= 1 for p in res["points"])
    assert len((out / "sweep.csv").read_text().splitlines()) == 3


def test_sweep_rejects_unknown_or_non_numeric_options(tiny_prepared, tmp_path):
    from reinforcens.experiments.sweep import sweep

    with pytest.raises(ConfigError, match="no option 'gamma'"):
        sweep(tiny_prepared.path, "rns-es", "gamma", "0,1", out=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="not numeric"):
        sweep(tiny_prepared.path, "rns-es", "hardness", "0,1", out=tmp_path, progress=False)


def test_analyze_plots_tsne_and_overlap_mmd(compared, tmp_path, capsys):
    runs = sorted(compared.glob("runs/rns-es-*/seed*"))
    out = tmp_path / "analysis"
    code = main(
        ["analyze", "--run", str(runs[0]), "--run", str(runs[1]), "--label", "a", "--label", "b"]
        + ["--out", str(out), "--points", "60"]
    )
    assert code == 0
    assert _png_shape(out / "tsne_a.png") == (600, 600)
    assert _png_shape(out / "tsne_b.png") == (600, 600)
    assert _png_shape(out / "overlap_mmd.png") == (400, 1000)
    res = json.loads((out / "analysis.json").read_text())
    assert [r["name"] for r in res["runs"]] == ["a", "b"]
    for r in res["runs"]:
        assert r["epochs"] == [1, 2] and len(r["overlap"]) == len(r["mmd"]) == 2
        assert all(0 <= v <= 1 for v in r["overlap"]) and all(v >= -1e-12 for v in r["mmd"])
        pts = r["tsne_points"]
        assert pts["generated"] + pts["overlap"] == 60 and 0 < pts["exposed"] <= 60
    assert "final" in res["features"]
    assert "overlap" in capsys.readouterr().out


# ---------------------------------------------------------------------- diagnose
def test_diagnose_numbers_and_warning(tiny_prepared, capsys):
    d = diagnose(tiny_prepared)
    assert d["users"] == tiny_prepared.n_users
    assert 0 < d["share_users_with_exposures"] <= 1
    assert d["exposures_per_click"] == pytest.approx(
        tiny_prepared.train_exposures.nnz / tiny_prepared.train_clicks.nnz
    )
    assert d["mean_popularity_exposed"] > 0 and d["mean_popularity_uniform"] > 0
    for key in ("valid_auc_exposure_count", "valid_auc_itempop", "valid_auc_user_exposed"):
        assert 0 <= d[key] <= 1
    # on tiny, items exposed-but-unclicked often across users rank validation clicks above random
    assert d["valid_auc_exposure_count"] > 0.5
    assert any("MORE likely to be clicked" in w for w in d["warnings"])
    assert main(["diagnose", "--data", str(tiny_prepared.path)]) == 0
    printed = capsys.readouterr().out
    assert "WARNING: exposed-but-unclicked items look MORE likely" in printed
    assert main(["diagnose", "--data", str(tiny_prepared.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["users"] == tiny_prepared.n_users


def test_diagnose_stays_quiet_when_exposures_look_negative():
    quiet = {
        "train_exposures": 100,
        "share_users_with_exposures": 0.9,
        "valid_auc_exposure_count": 0.45,
        "valid_auc_itempop": 0.6,
        "reexposure_lift": 0.6,
        "valid_click_rate_skipped_before": 0.1,
        "valid_click_rate_new": 0.2,
    }
    assert _warnings(quiet) == []
    assert len(_warnings({**quiet, "reexposure_lift": 1.2})) == 1
    assert "no exposed-but-unclicked" in _warnings({**quiet, "train_exposures": 0})[0]


def test_popularity_alignment_is_the_rank_correlation_of_mean_scores_and_clicks():
    import torch

    from reinforcens.experiments.analysis import popularity_alignment
    from reinforcens.models.gmf import GMF

    model = GMF(7, 12, dim=4, generator=torch.Generator().manual_seed(0))
    clicks = np.random.default_rng(0).integers(0, 50, 12)
    with torch.no_grad():  # brute force: score every (user, item), average per item
        mean = [float(np.mean([model(torch.tensor([u]), torch.tensor([i])).item() for u in range(7)]))
                for i in range(12)]  # fmt: skip
    assert popularity_alignment(model, clicks) == pytest.approx(stats.spearmanr(mean, clicks).statistic)
    ordered = np.argsort(np.argsort(mean))  # clicks in the order of the mean scores: correlation 1
    assert popularity_alignment(model, ordered) == pytest.approx(1.0)
