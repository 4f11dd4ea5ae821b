"""``prepare`` on random, broken and thin logs: a result or a one-line error, never a partial directory."""

from __future__ import annotations

import string

from conftest import random_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reinforcens.cli import main

HEADER = "user,item,session,timestamp,clicked\n"


def run_prepare(path, out, *extra):
    return main(["prepare", "--input", str(path), "--out", str(out), "--min-sessions", "2",
                 "--list-length", "8", *extra])


def check_outcome(code, out, err):
    if code == 0:
        assert (out / "meta.json").is_file() and (out / "test.npz").is_file()
    else:
        assert code == 2
        assert err.startswith("reinforcens prepare: error:") and len(err.strip().splitlines()) == 1
        assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    assert not leftovers


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=st.text(alphabet=string.printable, max_size=300))
def test_random_text(tmp_path_factory, capfd, body):
    tmp = tmp_path_factory.mktemp("fz")
    (tmp / "log.csv").write_text(HEADER + body)
    code = run_prepare(tmp / "log.csv", tmp / "out")
    check_outcome(code, tmp / "out", capfd.readouterr().err)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    max_sessions=st.integers(1, 6),
    click_rate=st.sampled_from([0.0, 0.2, 1.0]),
    cut=st.floats(0.0, 1.0),
    negative_time=st.booleans(),
    huge_ids=st.booleans(),
)
def test_random_logs_truncated_or_thin(tmp_path_factory, capfd, seed, max_sessions, click_rate, cut,
                                       negative_time, huge_ids):
    tmp = tmp_path_factory.mktemp("fz")
    frame = random_frame(seed, n_users=12, n_items=15, max_sessions=max_sessions, slate=5,
                         click_rate=click_rate)
    if negative_time:
        frame["timestamp"] = -frame["timestamp"] * 1000 - 7
    if huge_ids:
        frame["user"] = frame["user"].str[1:].astype(int) + 2**62
    text = frame.to_csv(index=False)
    (tmp / "log.csv").write_text(text[: int(len(text) * cut)] if cut < 0.98 else text)
    code = run_prepare(tmp / "log.csv", tmp / "out")
    check_outcome(code, tmp / "out", capfd.readouterr().err)


def test_existing_dataset_survives_a_failed_prepare(tmp_path, capfd):
    frame = random_frame(1, n_users=30, max_sessions=8)
    frame.to_csv(tmp_path / "good.csv", index=False)
    (tmp_path / "bad.csv").write_text(HEADER + "1,2,x,3,1\n")
    assert run_prepare(tmp_path / "good.csv", tmp_path / "out") == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert run_prepare(tmp_path / "bad.csv", tmp_path / "out", "--force") == 2
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert before == after
    assert "bad.csv:2" in capfd.readouterr().err
