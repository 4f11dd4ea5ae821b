"""Bad options and unusable paths end in one line naming the option, key or file, before anything is
written. Each case failed before its fix (a traceback, a silent default, or a half-made directory)."""

from __future__ import annotations

import shutil

import pytest
import torch

from reinforcens import cli
from reinforcens.backend import available_cpus


def one_line_error(capsys, argv, code: int = 2) -> str:
    """Run the CLI; assert it failed with ``code`` and a single error line; return that line."""
    try:
        got = cli.main(argv)
    except SystemExit as exc:  # argparse refuses a malformed value itself
        got = exc.code
    err = capsys.readouterr().err.strip()
    assert got == code, err
    lines = [x for x in err.splitlines() if "error:" in x]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.fixture()
def prep(tiny_prepared, tmp_path):
    path = tmp_path / "prep"
    shutil.copytree(tiny_prepared.path, path)
    return path


@pytest.mark.parametrize(
    "flag,value",
    [("--alpha", "inf"), ("--alpha", "nan"), ("--lr", "inf"), ("--lr", "-inf"), ("--l2", "nan"),
     ("--temperature", "inf"), ("--bandwidths", "1,inf")],  # fmt: skip
)
def test_non_finite_options_are_refused_before_a_run_directory_exists(prep, tmp_path, capsys, flag, value):
    out = tmp_path / "run"
    line = one_line_error(capsys, ["train", "--data", str(prep), "--sampler", "rns", "--out", str(out),
                                   f"{flag}={value}"])  # fmt: skip
    assert "finite number" in line and flag.lstrip("-") in line
    assert not out.exists()


@pytest.mark.parametrize("command", ["prepare", "simulate", "train"])
def test_a_negative_seed_is_one_line(prep, tmp_path, capsys, command):
    argv = {
        "prepare": ["prepare", "--input", str(tmp_path / "x.csv"), "--out", str(tmp_path / "p")],
        "simulate": ["simulate", "--preset", "tiny", "--out", str(tmp_path / "s")],
        "train": ["train", "--data", str(prep), "--sampler", "uniform", "--out", str(tmp_path / "r")],
    }[command]
    line = one_line_error(capsys, [*argv, "--seed", "-1"])
    assert "--seed" in line and "-1" in line
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_list_length_zero_is_refused_not_taken_as_none(tiny_sim, tmp_path, capsys):
    argv = ["prepare", "--input", str(tiny_sim / "log.parquet"), "--out", str(tmp_path / "p")]
    assert "--list-length must be at least 2" in one_line_error(capsys, [*argv, "--list-length", "0"])
    assert not (tmp_path / "p").exists()


def test_threads_zero_is_refused_and_too_many_are_capped(prep, tmp_path, capsys):
    assert "--threads" in one_line_error(capsys, ["--threads", "0", "stats", str(prep)])
    before = torch.get_num_threads()
    try:
        assert cli.main(["--threads", "9999", "stats", str(prep)]) == 0
        err = capsys.readouterr().err
        assert f"using {available_cpus()}" in err
        assert torch.get_num_threads() == available_cpus()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("command", ["prepare", "train", "simulate", "evaluate-itempop"])
def test_an_unwritable_out_is_one_line_naming_it(prep, tiny_sim, tmp_path, capsys, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = str(blocker / "sub")
    argv = {
        "prepare": ["prepare", "--input", str(tiny_sim / "log.parquet"), "--out", out],
        "train": ["train", "--data", str(prep), "--sampler", "uniform", "--out", out, "--epochs", "1"],
        "simulate": ["simulate", "--preset", "tiny", "--out", out],
        "evaluate-itempop": None,
    }[command]
    if argv is None:  # evaluate writes nothing: an unreadable --data instead
        argv = ["evaluate", "--data", out, "--model", "itempop"]
    line = one_line_error(capsys, argv)
    assert "a-file" in line


def test_an_unreadable_input_is_one_line_naming_it(tmp_path, capsys):
    link = tmp_path / "log.csv"
    link.symlink_to(tmp_path / "gone.csv")  # a dangling link: exists as a name, cannot be opened
    line = one_line_error(capsys, ["prepare", "--input", str(link), "--out", str(tmp_path / "p")])
    assert "log.csv" in line or "gone.csv" in line
    fifo_dir = tmp_path / "dir.csv"
    fifo_dir.mkdir()
    line = one_line_error(capsys, ["prepare", "--input", str(fifo_dir), "--out", str(tmp_path / "p")])
    assert "dir.csv" in line


@pytest.mark.parametrize("content", [b"[]", b"\xff\xfe{", b'{"lr": "fast"}'], ids=["list", "bytes", "type"])
def test_a_bad_config_file_is_one_line_naming_it(prep, tmp_path, capsys, content):
    bad = tmp_path / "bad-config.json"
    bad.write_bytes(content)
    argv = ["train", "--data", str(prep), "--sampler", "uniform", "--out", str(tmp_path / "r"),
            "--config", str(bad)]  # fmt: skip
    assert "bad-config.json" in one_line_error(capsys, argv)
    assert not (tmp_path / "r").exists()
