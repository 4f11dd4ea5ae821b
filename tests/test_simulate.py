"""The exposure-log simulator: schema, determinism, ground truth, structure, files and CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

import reinforcens.data.simulate as sim
from reinforcens.cli import main
from reinforcens.data.formats import read_log
from reinforcens.data.ground_truth import GroundTruth
from reinforcens.data.simulate import (
    PRESETS,
    SimulationConfig,
    resolve_config,
    simulate,
    summarize,
    write_simulation,
)
from reinforcens.errors import ConfigError, DataError

COLUMNS = ["user", "item", "session", "timestamp", "clicked"]


@pytest.fixture(scope="module")
def tiny():
    return simulate("tiny", 0)


@pytest.fixture(scope="module")
def tiny_masks(tiny):
    """True probabilities of every (user, item) and the shown / clicked masks."""
    log, truth = tiny
    prob = truth.prob_matrix(np.arange(truth.n_users))
    shown = np.zeros(prob.shape, dtype=bool)
    shown[log["user"], log["item"]] = True
    clicked = np.zeros(prob.shape, dtype=bool)
    hits = log[log["clicked"] == 1]
    clicked[hits["user"], hits["item"]] = True
    return prob, shown, clicked


def _small_config(**changes) -> SimulationConfig:
    base = dict(
        n_users=120,
        n_items=150,
        dim=6,
        sessions_median=4.0,
        max_sessions=12,
        slate_size_min=5,
        slate_size_max=10,
        candidate_pool=40,
    )
    return SimulationConfig(**(base | changes))


# --------------------------------------------------------------------------- schema and determinism


def test_schema_and_dtypes(tiny):
    log, truth = tiny
    assert list(log.columns) == COLUMNS
    assert [str(t) for t in log.dtypes] == ["int64", "int64", "int64", "int64", "int8"]
    assert set(np.unique(log["clicked"])) == {0, 1}
    cfg = PRESETS["tiny"]
    assert (truth.n_users, truth.n_items) == (cfg.n_users, cfg.n_items)
    # every user has at least one session, so user ids are exactly 0 .. n_users - 1
    assert np.array_equal(np.unique(log["user"]), np.arange(cfg.n_users))
    assert log["item"].min() >= 0 and log["item"].max() < cfg.n_items
    assert log["session"].min() == 0


def test_one_row_per_item_shown_in_a_session(tiny):
    log, _ = tiny
    assert not log.duplicated(["session", "item"]).any()
    assert (log.groupby("session")["user"].nunique() == 1).all()  # session ids are global
    sizes = log.groupby("session").size()
    cfg = PRESETS["tiny"]
    assert sizes.max() <= cfg.slate_size_max
    # a slot whose random item duplicates another one is dropped, so a slate may lose a few items
    assert sizes.min() >= cfg.slate_size_min - 3
    assert sizes.median() >= cfg.slate_size_min


def test_deterministic_under_seed(tiny):
    log, truth = tiny
    again, truth_again = simulate("tiny", 0)
    pd.testing.assert_frame_equal(log, again)
    np.testing.assert_array_equal(truth.user_factors, truth_again.user_factors)
    np.testing.assert_array_equal(truth.item_quality, truth_again.item_quality)
    other, truth_other = simulate("tiny", 1)
    assert not np.array_equal(truth.item_factors, truth_other.item_factors)
    assert len(other) != len(log) or not log.equals(other)


def test_config_object_and_preset_name_give_the_same_log():
    a, _ = simulate(PRESETS["tiny"], 3)
    b, _ = simulate(PRESETS["tiny"].model_dump(), 3)
    pd.testing.assert_frame_equal(a, b)


def test_several_chunks_keep_the_invariants(monkeypatch):
    monkeypatch.setattr(sim, "CHUNK_USERS", 32)
    log, truth = simulate(_small_config(), 5)
    assert np.array_equal(np.unique(log["user"]), np.arange(truth.n_users))
    # sorted by user then session; session ids contiguous from 0
    assert (np.diff(log["user"].to_numpy()) >= 0).all()
    assert (np.diff(log["session"].to_numpy()) >= 0).all()
    sessions = np.unique(log["session"])
    assert np.array_equal(sessions, np.arange(sessions.size))
    again, _ = simulate(_small_config(), 5)
    pd.testing.assert_frame_equal(log, again)


def test_timestamps_increase_with_sessions_of_a_user(tiny):
    log, _ = tiny
    per_session = log.groupby("session").agg(
        user=("user", "first"), t_min=("timestamp", "min"), t_max=("timestamp", "max")
    )
    assert (per_session["t_min"] == per_session["t_max"]).all()  # one time per session
    per_session = per_session.sort_index()
    same_user = per_session["user"].to_numpy()[1:] == per_session["user"].to_numpy()[:-1]
    steps = np.diff(per_session["t_min"].to_numpy())
    assert same_user.any()
    assert (steps[same_user] > 0).all()
    assert log["timestamp"].min() >= PRESETS["tiny"].start_timestamp


def test_sessions_per_user_vary(tiny):
    log, _ = tiny
    per_user = log.groupby("user")["session"].nunique()
    assert (per_user < 3).sum() >= 3  # work for a min-sessions filter
    assert (per_user >= 8).sum() >= 20
    assert per_user.max() <= PRESETS["tiny"].max_sessions


def test_click_rate_is_sane(tiny):
    log, _ = tiny
    assert 0.05 < log["clicked"].mean() < 0.6
    stats = summarize(log)
    assert stats["clicks"] + stats["unclicked_exposures"] == stats["exposures"] == len(log)
    assert stats["users"] == PRESETS["tiny"].n_users
    assert stats["sessions"] == log["session"].nunique()


def test_popularity_is_heavy_tailed(tiny):
    log, truth = tiny
    counts = np.sort(np.bincount(log["item"], minlength=truth.n_items))[::-1]
    top_tenth = counts[: truth.n_items // 10].sum() / counts.sum()
    assert top_tenth > 0.2  # a uniform catalogue would give 0.1
    # and the platform's popularity prior is what drives it
    popular = truth.item_log_popularity > np.quantile(truth.item_log_popularity, 0.9)
    exposures = np.bincount(log["item"], minlength=truth.n_items)
    assert exposures[popular].mean() > 2 * exposures[~popular].mean()


# --------------------------------------------------------------------------- ground truth


def test_click_prob_matches_prob_matrix(tiny):
    _, truth = tiny
    rng = np.random.default_rng(0)
    users = rng.integers(0, truth.n_users, 500)
    items = rng.integers(0, truth.n_items, 500)
    probs = truth.click_prob(users, items)
    assert probs.shape == (500,)
    assert ((probs > 0) & (probs < 1)).all()
    matrix = truth.prob_matrix(np.unique(users))
    assert matrix.shape == (np.unique(users).size, truth.n_items)
    rows = np.searchsorted(np.unique(users), users)
    np.testing.assert_allclose(probs, matrix[rows, items], rtol=1e-5, atol=1e-6)
    # broadcasting: one user against many items
    np.testing.assert_allclose(
        truth.click_prob(users[0], np.arange(truth.n_items)), matrix[rows[0]], rtol=1e-5
    )


def test_click_prob_rejects_bad_ids(tiny):
    _, truth = tiny
    with pytest.raises(IndexError):
        truth.click_prob(np.array([truth.n_users]), np.array([0]))
    with pytest.raises(IndexError):
        truth.click_prob(np.array([0]), np.array([-1]))
    with pytest.raises(TypeError):
        truth.click_prob(np.array([0.5]), np.array([0]))


def test_ground_truth_save_load_round_trip(tiny, tmp_path):
    _, truth = tiny
    path = tmp_path / "gt.npz"
    truth.save(path)
    loaded = GroundTruth.load(path)
    assert (loaded.n_users, loaded.n_items, loaded.dim) == (truth.n_users, truth.n_items, truth.dim)
    for name in ("user_factors", "item_factors", "user_bias", "item_quality", "item_log_popularity"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(truth, name))
    assert loaded.intercept == truth.intercept
    assert loaded.position_decay == truth.position_decay
    users = np.arange(truth.n_users)
    np.testing.assert_array_equal(loaded.prob_matrix(users[:5]), truth.prob_matrix(users[:5]))
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        assert "user_factors" in data.files


def test_ground_truth_load_rejects_other_files(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    with pytest.raises(DataError, match="not a reinforcens ground-truth file"):
        GroundTruth.load(other)
    with pytest.raises(DataError, match="no such"):
        GroundTruth.load(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(DataError):
        GroundTruth.load(garbage)


def test_examination_decays_from_one(tiny):
    _, truth = tiny
    e = truth.examination(np.arange(20))
    assert e[0] == 1.0
    assert (np.diff(e) < 0).all() if truth.position_decay > 0 else (e == 1).all()


def test_clicks_are_drawn_from_the_ground_truth(tiny):
    log, truth = tiny
    position = log.groupby("session").cumcount().to_numpy()  # rows are in slate order
    expected = truth.click_prob(log["user"].to_numpy(), log["item"].to_numpy()) * truth.examination(position)
    observed = log["clicked"].to_numpy()
    # calibrated overall and within probability bins (binomial tolerance of 4 standard deviations)
    bins = np.digitize(expected, [0.1, 0.3, 0.6])
    for b in range(4):
        sel = bins == b
        if sel.sum() < 200:
            continue
        p = expected[sel].mean()
        sd = np.sqrt(p * (1 - p) / sel.sum())
        assert abs(observed[sel].mean() - p) < 4 * sd + 1e-3, b


# --------------------------------------------------------------------------- structure RNS relies on


def test_clicked_items_are_more_relevant_than_shown_unclicked(tiny_masks):
    prob, shown, clicked = tiny_masks
    assert prob[clicked].mean() > 2 * prob[shown & ~clicked].mean()


def test_shown_unclicked_are_harder_than_random_unshown(tiny_masks):
    prob, shown, clicked = tiny_masks
    exposed_negative = shown & ~clicked
    per_user = [
        (prob[u][exposed_negative[u]].mean(), prob[u][~shown[u]].mean())
        for u in range(prob.shape[0])
        if exposed_negative[u].any() and (~shown[u]).any()
    ]
    exposed_mean, unshown_mean = np.mean(per_user, axis=0)
    assert exposed_mean > 1.3 * unshown_mean
    # most users see it, not only a few
    assert np.mean([a > b for a, b in per_user]) > 0.75
    # ... but they are mostly real negatives: less relevant than what users click
    assert prob[exposed_negative].mean() < 0.5 * prob[clicked].mean()


def test_many_high_probability_items_are_never_shown(tiny_masks):
    prob, shown, _ = tiny_masks
    k = int(0.05 * prob.shape[1])
    top = np.argsort(-prob, axis=1)[:, :k]
    never_shown = ~np.take_along_axis(shown, top, axis=1)
    assert never_shown.mean() > 0.25  # uniform negatives contain false negatives
    # and among unshown items there are some the user likes more than a typical click
    assert (prob[~shown] > np.median(prob[shown])).sum() > prob.shape[0]


def test_the_effect_comes_from_the_logger():
    """With exploration only (random slates), exposed negatives are no harder than unshown items."""
    config = _small_config(exploration_rate=1.0, n_users=200, sessions_median=6.0)
    log, truth = simulate(config, 0)
    prob = truth.prob_matrix(np.arange(truth.n_users))
    shown = np.zeros(prob.shape, dtype=bool)
    shown[log["user"], log["item"]] = True
    assert abs(prob[shown].mean() - prob[~shown].mean()) < 0.02
    logged, truth_logged = simulate(_small_config(n_users=200, sessions_median=6.0), 0)
    shown_logged = np.zeros(prob.shape, dtype=bool)
    shown_logged[logged["user"], logged["item"]] = True
    prob_logged = truth_logged.prob_matrix(np.arange(truth.n_users))
    assert prob_logged[shown_logged].mean() > prob_logged[~shown_logged].mean() + 0.05


def test_items_are_reshown_and_repeated_clicks_are_rare(tiny):
    log, _ = tiny
    shown_twice = log.groupby(["user", "item"])["session"].nunique() > 1
    assert shown_twice.mean() > 0.1
    clicks = log[log["clicked"] == 1]
    repeated = clicks.duplicated(["user", "item"]).sum()
    assert repeated == summarize(log)["repeated_clicks"]
    assert 0 < repeated < 0.06 * len(clicks)


def test_clicked_items_are_held_back():
    """Without re-showing, a clicked item comes back only by exploration or a dry pool."""
    config = _small_config(reshow_clicked_prob=0.0, exploration_rate=0.0, candidate_pool=150)
    log, _ = simulate(config, 2)
    clicks = log[log["clicked"] == 1]
    first_click = clicks.groupby(["user", "item"])["session"].min().rename("first")
    later = log.join(first_click, on=["user", "item"], how="inner")
    assert (later["session"] <= later["first"]).all()


# --------------------------------------------------------------------------- configuration


def test_presets():
    assert set(PRESETS) == {"tiny", "small", "zhihu", "beibei"}
    tiny = PRESETS["tiny"]
    assert 150 <= tiny.n_users <= 300 and 200 <= tiny.n_items <= 400
    small = PRESETS["small"]
    assert 1000 <= small.n_users <= 3000 and 1000 <= small.n_items <= 3000
    assert 20 <= small.slate_size_min <= small.slate_size_max <= 40
    assert PRESETS["beibei"].n_users > PRESETS["zhihu"].n_users
    for name, config in PRESETS.items():
        assert resolve_config(name) is config
        assert SimulationConfig.model_validate(config.model_dump()) == config


def test_every_field_is_described():
    for name, field in SimulationConfig.model_fields.items():
        assert field.description, name


def test_invalid_configs_are_refused():
    with pytest.raises(ValidationError):
        SimulationConfig(n_users=10, no_such_knob=1)
    with pytest.raises(ValidationError):
        SimulationConfig(slate_size_min=30, slate_size_max=20)
    with pytest.raises(ValidationError):
        SimulationConfig(n_items=100, candidate_pool=200)
    with pytest.raises(ValidationError):
        SimulationConfig(exploration_rate=1.5)
    with pytest.raises(ConfigError, match="no_such_knob"):
        resolve_config({"no_such_knob": 1})


def test_unknown_preset_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="'huge'"):
        simulate("huge", 0)
    with pytest.raises(ConfigError, match="tiny"):  # and lists the known ones
        resolve_config("huge")


# --------------------------------------------------------------------------- files


def test_write_simulation(tmp_path, tiny):
    out = write_simulation(tmp_path / "sim", "tiny", 0)
    assert sorted(p.name for p in out.iterdir()) == ["ground_truth.npz", "log.parquet", "simulation.json"]
    table = pq.read_table(out / "log.parquet")
    assert table.column_names == COLUMNS
    log, truth = tiny
    pd.testing.assert_frame_equal(table.to_pandas(), log)
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["preset"] == "tiny" and meta["seed"] == 0
    assert SimulationConfig.model_validate(meta["config"]) == PRESETS["tiny"]
    stats = meta["stats"]
    assert stats["exposures"] == len(log)
    assert stats["clicks"] == int(log["clicked"].sum())
    assert stats["click_rate"] == pytest.approx(log["clicked"].mean(), abs=1e-6)
    loaded = GroundTruth.load(out / "ground_truth.npz")
    np.testing.assert_array_equal(loaded.item_factors, truth.item_factors)


def test_written_log_reads_back_as_a_generic_table(tmp_path):
    out = write_simulation(tmp_path / "sim", "tiny", 1)
    log = read_log(out / "log.parquet", "table")
    assert log.n_users == PRESETS["tiny"].n_users
    assert len(log) == json.loads((out / "simulation.json").read_text())["stats"]["exposures"]


def test_interrupted_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    out = tmp_path / "sim"

    def broken_write(table, where, **kwargs):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(sim.pq, "write_table", broken_write)
    with pytest.raises(KeyboardInterrupt):
        write_simulation(out, "tiny", 0)
    assert list(out.iterdir()) == []


def test_rewrite_removes_stale_metadata_first(tmp_path, monkeypatch):
    out = write_simulation(tmp_path / "sim", "tiny", 0)

    def broken_save(self, path):
        raise RuntimeError("disk full")

    monkeypatch.setattr(GroundTruth, "save", broken_save)
    with pytest.raises(RuntimeError):
        write_simulation(out, "tiny", 1)
    # the new log is complete but not described by the old metadata: no simulation.json at all
    assert not (out / "simulation.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["ground_truth.npz", "log.parquet"]


# --------------------------------------------------------------------------- command line


def test_cli_writes_the_three_files(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--preset", "tiny", "--out", str(out), "--seed", "2"]) == 0
    assert {p.name for p in out.iterdir()} == {"log.parquet", "ground_truth.npz", "simulation.json"}
    printed = capsys.readouterr().out
    assert "200 users" in printed and "clicks" in printed
    assert json.loads((out / "simulation.json").read_text())["seed"] == 2
    # a previous simulation may be overwritten
    assert main(["simulate", "--preset", "tiny", "--out", str(out), "--seed", "3"]) == 0
    assert json.loads((out / "simulation.json").read_text())["seed"] == 3


def test_cli_refuses_to_clobber_other_files(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["simulate", "--preset", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main(["simulate", "--preset", "tiny", "--out", str(out), "--force"]) == 0
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "log.parquet").exists()


def test_cli_refuses_a_file_as_out(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    assert main(["simulate", "--preset", "tiny", "--out", str(path)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_unknown_preset(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--preset", "huge", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'huge'" in err and "Traceback" not in err
    assert not out.exists()
