"""Every dataset format's fixture prepares and trains end to end, through the command line."""

from __future__ import annotations

import json

import pytest
from test_formats import FIX, FIXTURES

from reinforcens.cli import main


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_prepares_and_trains(name, tmp_path, capsys):
    fmt, options = FIXTURES[name]
    prep, run_dir = tmp_path / "prep", tmp_path / "run"
    argv = ["prepare", "--input", str(FIX / name), "--format", fmt, "--out", str(prep),
            "--min-sessions", "2", "--list-length", "10"]
    for key, value in options.items():
        argv += ["--option", f"{key}={json.dumps(value)}"]
    assert main(argv) == 0, capsys.readouterr().err
    stats = json.loads((prep / "meta.json").read_text())["stats"]
    assert stats["users"] >= 3 and stats["train"] > 0 and stats["test"] > 0
    code = main(["train", "--data", str(prep), "--sampler", "rns", "--out", str(run_dir), "--epochs", "1",
                 "--pretrain-epochs", "1", "--batch-size", "64", "--quiet", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads(out[out.index("{"):])
    assert 0.0 <= metrics["test.auc"] <= 1.0
