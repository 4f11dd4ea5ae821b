"""The command line end to end on the ``tiny`` preset, and its handling of user errors."""

from __future__ import annotations

import json

import pytest

from reinforcens.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_pipeline(tiny_sim, tmp_path, capsys):
    prep = tmp_path / "prep"
    code, out, _ = run(capsys, "prepare", "--input", tiny_sim / "log.parquet", "--out", prep,
                       "--min-sessions", "4", "--list-length", "30")
    assert code == 0 and "(+ ground truth)" in out
    code, out, _ = run(capsys, "stats", prep, "--json")
    stats = json.loads(out)
    assert code == 0 and stats["users"] > 50 and stats["train"] > stats["test"] > 0
    code, out, _ = run(capsys, "stats", prep)
    assert "Exposure#" in out and f"{stats['users']:,}" in out
    code, out, _ = run(capsys, "evaluate", "--data", prep, "--model", "itempop", "--json")
    res = json.loads(out)
    assert code == 0 and 0.5 < res["test"]["auc"] <= 1.0 and "true_auc" in res["test"]
    code, out, _ = run(capsys, "train", "--data", prep, "--sampler", "rns", "--out", tmp_path / "run",
                       "--epochs", "1", "--pretrain-epochs", "1", "--quiet", "--json", "--beta", "0.5",
                       "--no-hardness")
    metrics = json.loads(out)
    assert code == 0 and 0 <= metrics["test.auc"] <= 1
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["sampler_options"]["beta"] == 0.5 and cfg["sampler_options"]["hardness"] is False
    code, out, _ = run(capsys, "evaluate", "--run", tmp_path / "run", "--json")
    again = json.loads(out)
    assert again["test"]["auc"] == pytest.approx(metrics["test.auc"])
    # preparing again into the same directory is refused, --force replaces it
    code, _, err = run(capsys, "prepare", "--input", tiny_sim / "log.parquet", "--out", prep)
    assert code == 2 and "--force" in err
    code, _, _ = run(capsys, "prepare", "--input", tiny_sim / "log.parquet", "--out", prep, "--force",
                     "--list-length", "none")
    assert code == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["stats", "{tmp}/absent"], "not a prepared dataset"),
        (["prepare", "--input", "{tmp}/bad.csv", "--out", "{tmp}/p"], "bad.csv:3"),
        (["prepare", "--input", "{tmp}/bad.csv", "--out", "{tmp}/p", "--format", "nope"], "unknown --format"),
        (["prepare", "--input", "{tmp}/bad.csv", "--out", "{tmp}/p", "--option", "foo=1"], "no option foo"),
        (["prepare", "--input", "{tmp}/bad.csv", "--out", "{tmp}/p", "--list-length", "x"], "--list-length"),
        (["evaluate", "--data", "{tmp}", "--model", "bpr"], "unknown --model"),
        (["train", "--data", "{tmp}/absent", "--sampler", "nope", "--out", "{tmp}/r"], "unknown sampler"),
        (["train", "--data", "{tmp}/absent", "--sampler", "dns", "--out", "{tmp}/r", "--alpha", "1"],
         "has no option alpha"),
        (["train", "--data", "{tmp}/absent", "--sampler", "dns", "--out", "{tmp}/r"], "not a prepared"),
    ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path, capsys, argv, needle):
    (tmp_path / "bad.csv").write_text("user,item,session,timestamp,clicked\n1,2,1,5,1\n1,3,1,5,7\n")
    code, _, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
