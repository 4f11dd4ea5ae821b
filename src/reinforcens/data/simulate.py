"""A simulated recommendation platform: an exposure log with a known ground truth.

The platform works as follows.

* **Users and items** have latent preference factors (``dim`` dimensions, their dot product of
  about unit variance). Items have a heavy-tailed (Zipf) popularity and a quality correlated with
  it; users have a click propensity. The true click probability of a shown item is the logistic of
  ``intercept + affinity_scale * p_u . q_i + quality_weight * quality_i + user_bias_u``, times a
  position effect (see :mod:`reinforcens.data.ground_truth`).
* **The logging recommender** only has a noisy copy of the factors and adds a popularity bonus.
  For each user it retrieves a candidate pool (its own top ``candidate_pool`` items) and, each
  session, shows a slate drawn from the pool by Plackett-Luce sampling (Gumbel top-k on its scores
  over a temperature), ordered by the perturbed score. Each slot shows a uniformly random item
  instead with probability ``exploration_rate``. Items the user already clicked are held back,
  except with a small probability, so repeated clicks happen, rarely.
* **Users** come back for a varying number of sessions (log-normal), at increasing times, and
  click each shown item independently with its true probability.

Hence many items a user would like are never shown (uniform negatives contain false negatives),
while shown-but-unclicked items were picked by the logger and so are, on average, more relevant
than random items.

Everything is vectorized over users, in chunks of :data:`CHUNK_USERS` users, each with its own
random stream spawned from the seed, so the log depends only on the configuration and the seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reinforcens.atomic import atomic_path, atomic_write_json
from reinforcens.data.ground_truth import GroundTruth, _sigmoid
from reinforcens.errors import ConfigError, DataError

__all__ = [
    "CHUNK_USERS",
    "GROUND_TRUTH_FILE",
    "LOG_FILE",
    "METADATA_FILE",
    "OUTPUT_FILES",
    "PRESETS",
    "GroundTruth",
    "SimulationConfig",
    "read_metadata",
    "resolve_config",
    "simulate",
    "summarize",
    "write_simulation",
]

LOG_FILE = "log.parquet"
GROUND_TRUTH_FILE = "ground_truth.npz"
METADATA_FILE = "simulation.json"
OUTPUT_FILES = (LOG_FILE, GROUND_TRUTH_FILE, METADATA_FILE)
_DTYPES = {
    "user": np.int64,
    "item": np.int64,
    "session": np.int64,
    "timestamp": np.int64,
    "clicked": np.int8,
}

CHUNK_USERS = 1024
"""Users simulated together; each chunk draws from its own random stream."""

_SCORE_BLOCK = 256  # users per full-catalogue score block when building candidate pools
# score penalty of already-clicked items: shown again only when the rest of the pool runs dry
_HELD_BACK = np.float32(1e4)


class SimulationConfig(BaseModel):
    """Every knob of the simulated platform.

    The defaults describe a small platform; :data:`PRESETS` holds the named configurations.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # population
    n_users: int = Field(2000, ge=1, description="Number of users, before any session filter.")
    n_items: int = Field(2000, ge=2, description="Number of items in the catalogue.")
    dim: int = Field(16, ge=1, le=512, description="Dimension of the latent preference factors.")

    # sessions
    sessions_median: float = Field(
        10.0, gt=0, description="Median number of sessions per user (log-normal distribution)."
    )
    sessions_sigma: float = Field(
        0.6,
        ge=0,
        description="Shape (log-scale standard deviation) of the sessions-per-user distribution; "
        "larger values give more users with very few and very many sessions.",
    )
    max_sessions: int = Field(60, ge=1, description="Upper bound on sessions per user.")
    slate_size_min: int = Field(20, ge=1, description="Smallest number of items shown in a session.")
    slate_size_max: int = Field(40, ge=1, description="Largest number of items shown in a session.")
    mean_session_gap: float = Field(
        86_400.0, gt=0, description="Mean time between two sessions of a user, in seconds."
    )
    time_span: float = Field(
        30 * 86_400.0,
        gt=0,
        description="Users start their first session uniformly within this many seconds.",
    )
    start_timestamp: int = Field(
        1_496_275_200, description="Timestamp (seconds) of the earliest possible session."
    )

    # items
    popularity_exponent: float = Field(
        1.0, ge=0, description="Zipf exponent of item popularity: popularity ~ rank ** -exponent."
    )
    quality_popularity_corr: float = Field(
        0.5,
        ge=-1,
        le=1,
        description="Correlation between an item's (log) popularity and its true quality.",
    )

    # true click model
    click_intercept: float = Field(-4.0, description="Global click logit (b_0).")
    affinity_scale: float = Field(
        3.0, ge=0, description="Weight of the user-item factor dot product in the click logit."
    )
    quality_weight: float = Field(0.5, description="Weight of item quality in the click logit.")
    user_bias_std: float = Field(
        0.5, ge=0, description="Standard deviation of the per-user click propensity (logits)."
    )
    position_decay: float = Field(
        0.1,
        ge=0,
        description="Examination probability of slate position k (0-based) is (k + 1) ** -decay; "
        "0 disables the position effect.",
    )

    # logging policy
    logger_noise: float = Field(
        0.7,
        ge=0,
        description="Noise of the logger's copy of the factors, relative to the true factors "
        "(0: the logger knows the true preferences).",
    )
    logger_popularity_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of log-popularity in the logger's score (popularity bias): with 1, an "
        "item's chance to be picked is proportional to its popularity, other things equal (at "
        "temperature 1).",
    )
    logger_temperature: float = Field(
        1.0,
        gt=0,
        description="Temperature of the logger's slate sampling from its candidate pool; lower is greedier.",
    )
    candidate_pool: int = Field(
        300, ge=1, description="Size of each user's candidate pool (the logger's top items)."
    )
    exploration_rate: float = Field(
        0.05, ge=0, le=1, description="Probability that a slate slot shows a uniformly random item."
    )
    reshow_clicked_prob: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Probability, per session, that an item the user already clicked is not held "
        "back from the candidate pool (so repeated clicks are rare).",
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> SimulationConfig:
        if self.slate_size_min > self.slate_size_max:
            raise ValueError("slate_size_min must not exceed slate_size_max")
        if self.candidate_pool > self.n_items:
            raise ValueError(f"candidate_pool ({self.candidate_pool}) exceeds n_items")
        if self.slate_size_max > self.candidate_pool:
            raise ValueError("slate_size_max must not exceed candidate_pool")
        return self


PRESETS: dict[str, SimulationConfig] = {
    # A few hundred users and items, generated in a fraction of a second: for tests.
    "tiny": SimulationConfig(
        n_users=200,
        n_items=300,
        dim=8,
        sessions_median=6.0,
        sessions_sigma=0.6,
        max_sessions=30,
        slate_size_min=8,
        slate_size_max=16,
        candidate_pool=60,
    ),
    # The README demo: 2k users and items, 20-40 items a session, about 150k clicks.
    "small": SimulationConfig(),
    # Zhihu-like: after a 6-session filter close to the paper's Table 1 (16k users, 46k items,
    # 3.3M clicks, 6.7M unclicked exposures): long sessions (40-112 items), a third clicked.
    "zhihu": SimulationConfig(
        n_users=24_000,
        n_items=46_000,
        dim=32,
        sessions_median=6.5,
        sessions_sigma=0.4,
        max_sessions=40,
        slate_size_min=40,
        slate_size_max=112,
        candidate_pool=2000,
        logger_temperature=1.5,
        exploration_rate=0.02,
        click_intercept=-4.6,
        mean_session_gap=2 * 86_400.0,
    ),
    # Beibei-like: after a 4-session filter close to the paper's Table 1 (66k users, 59k items,
    # 1.6M training clicks, 30M exposures): 32-46 items a session, about 6% clicked.
    "beibei": SimulationConfig(
        n_users=69_000,
        n_items=59_300,
        dim=32,
        sessions_median=10.0,
        sessions_sigma=0.6,
        max_sessions=60,
        slate_size_min=32,
        slate_size_max=46,
        candidate_pool=3000,
        logger_temperature=2.0,
        click_intercept=-8.6,
        position_decay=0.2,
    ),
}


def resolve_config(config: str | SimulationConfig | Mapping[str, Any]) -> SimulationConfig:
    """Return ``config`` itself, the preset it names, or the configuration it spells out.

    Parameters
    ----------
    config
        A :class:`SimulationConfig`, a key of :data:`PRESETS`, or a mapping of field values (e.g. a
        parsed JSON file; missing fields take their defaults).

    Raises
    ------
    ConfigError
        If ``config`` names no preset, or a mapping has unknown keys or invalid values.
    """
    if isinstance(config, SimulationConfig):
        return config
    if isinstance(config, str):
        try:
            return PRESETS[config]
        except KeyError:
            raise ConfigError(f"unknown simulation preset {config!r}; known: {', '.join(PRESETS)}") from None
    if isinstance(config, Mapping):
        try:
            return SimulationConfig.model_validate(dict(config))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(f"invalid simulation config: {problems}") from None
    raise TypeError(f"expected a preset name or a SimulationConfig, got {type(config).__name__}")


def simulate(
    config: str | SimulationConfig | Mapping[str, Any], seed: int, *, progress: bool = False
) -> tuple[pd.DataFrame, GroundTruth]:
    """Simulate an exposure log.

    Parameters
    ----------
    config
        A :class:`SimulationConfig`, the name of a preset in :data:`PRESETS`, or a mapping of
        field values (see :func:`resolve_config`).
    seed
        Seed of :func:`numpy.random.default_rng`; the log depends only on ``config`` and ``seed``.
    progress
        Show a progress bar over user chunks.

    Returns
    -------
    log : pandas.DataFrame
        One row per item shown in a session, ordered by user, session and slate position, with
        int64 columns ``user, item, session, timestamp`` and int8 ``clicked`` (0/1). Ids start at 0;
        session ids are unique over the whole log and increase with time within a user, and so do
        timestamps (seconds).
    ground_truth : GroundTruth
        The true click model, indexed by the ids in ``log``.

    Raises
    ------
    ConfigError
        If ``config`` names no preset or is an invalid mapping.

    Notes
    -----
    Time is dominated by scoring the whole catalogue once per user (``n_users * n_items * dim``) and
    memory by the log itself (about 33 bytes a row) plus ``CHUNK_USERS * n_items`` floats.
    """
    config = resolve_config(config)
    rng = np.random.default_rng(seed)
    truth, logger_users, logger_items = _draw_platform(config, rng)
    n_sessions = _draw_session_counts(config, rng)
    first_session = np.concatenate(([0], np.cumsum(n_sessions)[:-1])).astype(np.int64)

    starts = range(0, config.n_users, CHUNK_USERS)
    streams = rng.spawn(len(starts))
    chunks = zip(starts, streams, strict=True)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, total=len(starts), desc="simulating", unit="chunk", leave=False, disable=None)
    parts = [
        _simulate_chunk(
            config,
            truth,
            logger_users,
            logger_items,
            np.arange(start, min(start + CHUNK_USERS, config.n_users)),
            n_sessions,
            first_session,
            stream,
        )
        for start, stream in chunks
    ]
    columns = {}
    for name, dtype in _DTYPES.items():  # column by column, freeing the chunks' copies as we go
        columns[name] = np.concatenate([part.pop(name) for part in parts], dtype=dtype)
    return pd.DataFrame(columns, copy=False), truth


def summarize(log: pd.DataFrame) -> dict[str, Any]:
    """Summary statistics of a simulated log.

    Parameters
    ----------
    log
        A log as returned by :func:`simulate` (session ids unique over the whole log).

    Returns
    -------
    dict
        ``users`` and ``items`` (distinct ids in the log), ``sessions``, ``exposures`` (rows),
        ``clicks``, ``unclicked_exposures``, ``click_rate`` (clicks per exposure),
        ``repeated_clicks`` (clicks of a (user, item) pair clicked before) and
        ``sessions_per_user`` (min, median, mean, max over users in the log).
    """
    users = log["user"].to_numpy()
    items = log["item"].to_numpy()
    clicked = log["clicked"].to_numpy() == 1
    n_rows, n_clicks = len(log), int(clicked.sum())
    if n_rows == 0:
        raise DataError("the simulated log is empty")
    first_rows = _first_of_each_session(log["session"].to_numpy())
    per_user = np.bincount(users[first_rows])
    per_user = per_user[per_user > 0]
    click_keys = users[clicked] * np.int64(items.max() + 1) + items[clicked]
    return {
        "users": int(np.count_nonzero(np.bincount(users))),
        "items": int(np.count_nonzero(np.bincount(items))),
        "sessions": int(first_rows.size),
        "exposures": n_rows,
        "clicks": n_clicks,
        "unclicked_exposures": n_rows - n_clicks,
        "click_rate": round(n_clicks / n_rows, 6),
        "repeated_clicks": n_clicks - int(np.unique(click_keys).size),
        "sessions_per_user": {
            "min": int(per_user.min()),
            "median": float(np.median(per_user)),
            "mean": round(float(per_user.mean()), 3),
            "max": int(per_user.max()),
        },
    }


def _first_of_each_session(session: np.ndarray) -> np.ndarray:
    """Row index of the first row of each distinct session id."""
    if session.size and np.all(session[1:] >= session[:-1]):  # the simulator's order: cheap
        return np.flatnonzero(np.concatenate(([True], session[1:] != session[:-1])))
    return np.unique(session, return_index=True)[1]


def write_simulation(
    out_dir: str | Path,
    config: str | SimulationConfig | Mapping[str, Any],
    seed: int,
    *,
    progress: bool = False,
) -> Path:
    """Simulate a log and write it with its ground truth.

    Writes ``out_dir/log.parquet`` (columns ``user, item, session, timestamp, clicked``),
    ``out_dir/ground_truth.npz`` (:meth:`GroundTruth.save`) and ``out_dir/simulation.json`` (the
    preset name, the resolved configuration, the seed and :func:`summarize`). Each file is written
    to a temporary file and moved into place; ``simulation.json`` is removed first and written
    last, so a directory holding it always holds a complete, consistent simulation.

    Parameters
    ----------
    out_dir
        Created if missing. Files of these three names are replaced; nothing else is touched.
    config, seed, progress
        As for :func:`simulate`.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    preset = config if isinstance(config, str) else None
    config = resolve_config(config)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError("not a directory", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METADATA_FILE).unlink(missing_ok=True)

    log, truth = simulate(config, seed, progress=progress)
    table = pa.table({name: log[name].to_numpy() for name in _DTYPES})
    with atomic_path(out_dir / LOG_FILE) as tmp:
        pq.write_table(table, tmp)
    del table
    with atomic_path(out_dir / GROUND_TRUTH_FILE) as tmp:
        truth.save(tmp)
    metadata = {
        "format": "reinforcens-simulation",
        "version": 1,
        "preset": preset,
        "seed": int(seed),
        "config": config.model_dump(mode="json"),
        "stats": summarize(log),
        "files": {"log": LOG_FILE, "ground_truth": GROUND_TRUTH_FILE},
    }
    atomic_write_json(out_dir / METADATA_FILE, metadata, sort_keys=False)
    return out_dir


def read_metadata(out_dir: str | Path) -> dict[str, Any] | None:
    """The ``simulation.json`` of a simulation directory, or ``None`` if there is none."""
    path = Path(out_dir) / METADATA_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == "reinforcens-simulation" else None


# --------------------------------------------------------------------------------------------------
# internals


def _draw_platform(
    config: SimulationConfig, rng: np.random.Generator
) -> tuple[GroundTruth, np.ndarray, np.ndarray]:
    """Draw the true platform and the logger's noisy view of its factors.

    Returns
    -------
    truth : GroundTruth
    logger_users, logger_items : numpy.ndarray of float32
        The logger's user and item factors, already scaled so that their dot product is on the scale
        of the true affinity term.
    """
    n_users, n_items, dim = config.n_users, config.n_items, config.dim
    # Zipf popularity over a random order of the items; log-popularity centred on 0.
    rank = rng.permutation(n_items) + 1
    log_pop = (-config.popularity_exponent * np.log(rank)).astype(np.float32)
    log_pop -= log_pop.mean()
    std = float(log_pop.std())
    z_pop = log_pop / std if std > 0 else np.zeros_like(log_pop)
    rho = config.quality_popularity_corr
    quality = rho * z_pop + math.sqrt(1.0 - rho * rho) * rng.standard_normal(n_items, dtype=np.float32)

    scale = np.float32(dim**-0.25)  # so that p_u . q_i has about unit variance
    user_factors = rng.standard_normal((n_users, dim), dtype=np.float32) * scale
    item_factors = rng.standard_normal((n_items, dim), dtype=np.float32) * scale
    user_bias = rng.standard_normal(n_users, dtype=np.float32) * np.float32(config.user_bias_std)

    truth = GroundTruth(
        user_factors=user_factors,
        item_factors=item_factors,
        user_bias=user_bias,
        item_quality=quality.astype(np.float32),
        item_log_popularity=log_pop,
        intercept=config.click_intercept,
        affinity_scale=config.affinity_scale,
        quality_weight=config.quality_weight,
        position_decay=config.position_decay,
    )
    logger_users = _noisy_copy(user_factors, config.logger_noise, rng)
    logger_items = _noisy_copy(item_factors, config.logger_noise, rng)
    logger_users *= np.float32(config.affinity_scale)
    return truth, logger_users, logger_items


def _noisy_copy(factors: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``(factors + noise * eps) / sqrt(1 + noise^2)``: same scale, correlation
    ``1 / sqrt(1 + noise^2)`` with ``factors``."""
    eps = rng.standard_normal(factors.shape, dtype=np.float32)
    eps *= np.float32(noise * factors.std()) if factors.size else np.float32(0)
    eps += factors
    eps *= np.float32(1.0 / math.sqrt(1.0 + noise * noise))
    return eps


def _draw_session_counts(config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """Sessions per user: a rounded log-normal, clipped to ``[1, max_sessions]``."""
    raw = rng.lognormal(math.log(config.sessions_median), config.sessions_sigma, config.n_users)
    return np.clip(np.rint(raw), 1, config.max_sessions).astype(np.int64)


def _candidate_pools(
    config: SimulationConfig,
    logger_users: np.ndarray,
    logger_items: np.ndarray,
    log_pop: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's candidate pool: the logger's top ``candidate_pool`` items and their scores.

    Returns
    -------
    items : numpy.ndarray of int32, shape (len(logger_users), candidate_pool)
        Unordered.
    scores : numpy.ndarray of float32, same shape
        The logger's scores (factor dot product plus popularity bonus).
    """
    n, m = logger_users.shape[0], config.candidate_pool
    bonus = np.float32(config.logger_popularity_weight) * log_pop
    items = np.empty((n, m), dtype=np.int32)
    scores = np.empty((n, m), dtype=np.float32)
    for start in range(0, n, _SCORE_BLOCK):
        block = logger_users[start : start + _SCORE_BLOCK] @ logger_items.T
        block += bonus[None, :]
        top = _top_m_columns(block, m)
        items[start : start + _SCORE_BLOCK] = top
        scores[start : start + _SCORE_BLOCK] = np.take_along_axis(block, top, axis=1)
    return items, scores


def _top_m_columns(scores: np.ndarray, m: int) -> np.ndarray:
    """Column indices of the ``m`` largest entries of each row, in no particular order."""
    n_rows, n_cols = scores.shape
    if m >= n_cols:
        return np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    return np.argpartition(scores, n_cols - m, axis=1)[:, n_cols - m :]


def _session_times(config: SimulationConfig, n_sessions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Timestamps (seconds) of each user's sessions: a uniform start, then exponential gaps.

    Returns
    -------
    numpy.ndarray of int64, shape (len(n_sessions), n_sessions.max())
        Strictly increasing along each row (entries past a user's last session are meaningless).
    """
    width = int(n_sessions.max())
    start = rng.uniform(0.0, config.time_span, size=len(n_sessions))
    gaps = rng.exponential(config.mean_session_gap, size=(len(n_sessions), width))
    gaps[:, 0] = start
    times = np.floor(np.cumsum(gaps, axis=1)).astype(np.int64)
    times += np.arange(width, dtype=np.int64)  # at least one second apart
    return times + np.int64(config.start_timestamp)


def _simulate_chunk(
    config: SimulationConfig,
    truth: GroundTruth,
    logger_users: np.ndarray,
    logger_items: np.ndarray,
    users: np.ndarray,
    n_sessions_all: np.ndarray,
    first_session_all: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """All sessions of a chunk of users, session by session, vectorized over the users."""
    n_sessions = n_sessions_all[users]
    first_session = first_session_all[users]
    times = _session_times(config, n_sessions, rng)
    pool_items, pool_scores = _candidate_pools(
        config, logger_users[users], logger_items, truth.item_log_popularity
    )
    pool_scores /= np.float32(config.logger_temperature)
    clicked_before = np.zeros(pool_items.shape, dtype=bool)
    k_max = config.slate_size_max
    examination = truth.examination(np.arange(k_max))

    out: dict[str, list[np.ndarray]] = {k: [] for k in ("user", "item", "session", "time", "pos")}
    out["clicked"] = []
    for t in range(int(n_sessions.max())):
        active = np.flatnonzero(n_sessions > t)
        rows = np.arange(active.size)[:, None]
        # Plackett-Luce slate from the pool (Gumbel top-k), already-clicked items held back
        scores = pool_scores[active]
        noise = rng.standard_exponential(scores.shape, dtype=np.float32)
        perturbed = scores - np.log(np.maximum(noise, np.float32(1e-30), out=noise))
        held = clicked_before[active]
        if config.reshow_clicked_prob > 0:
            r, c = np.nonzero(held)
            back = rng.random(r.size) < config.reshow_clicked_prob
            held[r[back], c[back]] = False
        perturbed[held] -= _HELD_BACK
        top = _top_k_sorted(perturbed, k_max)
        items = pool_items[active][rows, top].astype(np.int64)
        from_pool = np.ones(items.shape, dtype=bool)
        # exploration: some slots show a uniformly random item
        if config.exploration_rate > 0:
            explore = rng.random(items.shape) < config.exploration_rate
            items[explore] = rng.integers(0, config.n_items, size=int(explore.sum()))
            from_pool &= ~explore
        sizes = rng.integers(config.slate_size_min, k_max + 1, size=active.size)
        shown = np.arange(k_max)[None, :] < sizes[:, None]
        shown &= ~_duplicates(items)
        # clicks from the true model
        user_ids = users[active][:, None]
        prob = _sigmoid(truth.logits(np.broadcast_to(user_ids, items.shape), items))
        prob *= examination[None, :]
        clicked = (rng.random(items.shape, dtype=np.float32) < prob) & shown
        hit = clicked & from_pool
        clicked_before[active[np.nonzero(hit)[0]], top[hit]] = True

        r, c = np.nonzero(shown)
        out["user"].append(users[active][r].astype(np.int32))
        out["item"].append(items[r, c].astype(np.int32))
        out["session"].append(first_session[active][r] + t)
        out["time"].append(times[active, t][r])
        out["pos"].append(c.astype(np.int16))
        out["clicked"].append(clicked[r, c])

    merged = {k: np.concatenate(v) for k, v in out.items()}
    order = np.lexsort((merged["pos"], merged["session"]))
    return {
        "user": merged["user"][order],
        "item": merged["item"][order],
        "session": merged["session"][order],
        "timestamp": merged["time"][order],
        "clicked": merged["clicked"][order].astype(np.int8),
    }


def _top_k_sorted(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest entries of each row, largest first."""
    if k < scores.shape[1]:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def _duplicates(items: np.ndarray) -> np.ndarray:
    """Mask of entries equal to an earlier entry (by position) of the same row."""
    order = np.argsort(items, axis=1, kind="stable")
    sorted_items = np.take_along_axis(items, order, axis=1)
    dup_sorted = np.zeros(items.shape, dtype=bool)
    dup_sorted[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
    dup = np.zeros(items.shape, dtype=bool)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return dup
