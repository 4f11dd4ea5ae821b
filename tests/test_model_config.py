"""The recommender keys of a run's config (``model``, ``layers``, ``sampler_model``): regression
tests of their defects."""

from __future__ import annotations

import json
import shutil

import pytest

from reinforcens import rundir
from reinforcens.config import TrainConfig
from reinforcens.errors import ConfigError
from reinforcens.experiments.runner import run_key
from reinforcens.train import Trainer


def test_an_mf_run_refuses_a_gmf_checkpoint_instead_of_keeping_its_h(tiny_prepared, tmp_path):
    gmf = TrainConfig.build(model="gmf", sampler="uniform", epochs=1, min_steps=0)
    Trainer(tiny_prepared, gmf, tmp_path / "gmf", progress=False).fit()
    for model in ("mf", "lightgcn"):
        cfg = TrainConfig.build(
            model=model, sampler="rns", pretrained=str(tmp_path / "gmf" / "best.pt"), epochs=1
        )
        with pytest.raises(ConfigError, match=f"gmf model, this run trains --model {model}"):
            Trainer(tiny_prepared, cfg, None, progress=False).fit()


def test_a_lightgcn_checkpoint_of_other_layers_is_refused(tiny_prepared, tmp_path):
    two = TrainConfig.build(model="lightgcn", layers=2, sampler="uniform", epochs=1, min_steps=0)
    Trainer(tiny_prepared, two, tmp_path / "two", progress=False).fit()
    cfg = TrainConfig.build(
        model="lightgcn", sampler="rns", pretrained=str(tmp_path / "two" / "best.pt"), epochs=1
    )
    with pytest.raises(ConfigError, match="lightgcn with 2 layers"):
        Trainer(tiny_prepared, cfg, None, progress=False).fit()


def test_default_runs_keep_their_keys_and_equal_runs_share_one():
    f = "fingerprint"
    # the keys of default GMF runs, as before the recommender keys existed (computed by that version)
    assert run_key("rns", "rns", {}, fingerprint=f) == "rns-95596e29"
    assert run_key("uniform", "uniform", {}, fingerprint=f) == "uniform-292e8bcc"
    same = [{}, {"model": "gmf", "layers": 3}, {"sampler_model": "gmf"}, {"sampler_model": "auto"}]
    assert len({run_key("rns", "rns", v, fingerprint=f) for v in same}) == 1
    # a static sampler has no model of its own: sampler_model does not make another run
    assert run_key("uniform", "uniform", {"sampler_model": "mf"}, fingerprint=f) == "uniform-292e8bcc"
    assert run_key("uniform", "uniform", {"model": "mf", "sampler_model": "gmf"}, fingerprint=f) == run_key(
        "uniform", "uniform", {"model": "mf"}, fingerprint=f
    )
    assert run_key("rns", "rns", {"model": "mf"}, fingerprint=f) == run_key(
        "rns", "rns", {"model": "mf", "sampler_model": "mf"}, fingerprint=f
    )
    assert run_key("rns", "rns", {"model": "mf"}, fingerprint=f) != run_key(
        "rns", "rns", {"model": "mf", "sampler_model": "gmf"}, fingerprint=f
    )


def test_a_run_saved_before_the_model_keys_resumes(tiny_prepared, tmp_path):
    cfg = TrainConfig.build(sampler="uniform", epochs=2, min_steps=0)
    Trainer(tiny_prepared, cfg, tmp_path / "r", progress=False).fit()
    path = tmp_path / "r" / rundir.CONFIG
    old = {
        k: v for k, v in json.loads(path.read_text()).items() if k not in ("model", "layers", "sampler_model")
    }
    path.write_text(json.dumps(old))
    assert rundir.config_differences(old, json.loads(cfg.to_json())) == []
    resumed = Trainer(tiny_prepared, cfg, tmp_path / "r", progress=False, resume=True).fit()
    assert resumed["epochs"] == 2


def test_evaluate_of_a_lightgcn_run_uses_the_data_given(tiny_prepared, tmp_path, capsys):
    from reinforcens.cli import main

    prep = tmp_path / "prep"
    shutil.copytree(tiny_prepared.path, prep)
    from reinforcens.data.prepared import load_prepared

    cfg = TrainConfig.build(model="lightgcn", sampler="uniform", epochs=1, min_steps=0)
    Trainer(load_prepared(prep), cfg, tmp_path / "run", progress=False).fit()
    moved = tmp_path / "moved"
    prep.rename(moved)
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--data", str(moved), "--json"]) == 0
    assert "auc" in capsys.readouterr().out


def test_compare_refuses_settings_tuned_for_another_model(tmp_path):
    from reinforcens.experiments.tune import check_tuned_model

    tuned = {"base": {"model": "gmf"}, "methods": {}}
    check_tuned_model(tuned, {"model": "gmf"})
    with pytest.raises(ConfigError, match="tuned for --model gmf, not lightgcn"):
        check_tuned_model(tuned, {"model": "lightgcn"})
