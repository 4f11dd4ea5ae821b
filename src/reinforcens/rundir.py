"""A run directory's files, read with one-line errors, and what makes a finished run reusable.

Layout of ``RUN/`` (written by :class:`reinforcens.train.Trainer`):

``config.json``
    The resolved :class:`~reinforcens.config.TrainConfig`.
``data.json``
    What the run was trained on (:meth:`PreparedDataset.describe`): the content fingerprint, the
    absolute path, the sizes, and the fingerprint of the id maps (``ids_fingerprint``).
``run.json``
    How it is computed: the resolved backend and device type (a resumed run must use the same, since
    they draw different random numbers) and the SHA-256 of the ``pretrained`` checkpoint, if any.
``epochs.jsonl``, ``last.pt``, ``best.pt``, ``negatives.npz``, ``pretrain/``
    Per-epoch metrics, the resumable state, the best state, recorded negatives, the pretraining stage.
``metrics.json``
    Written last: the test metrics and the SHA-256 of ``best.pt`` (``checkpoint_sha256``).
``.lock``
    Held by the process that writes the run (:class:`reinforcens.lock.DirectoryLock`).

A finished run is reused only if it *verifies* (:func:`verify_finished`): its metrics parse, its config
and its data fingerprint are the ones asked for, and ``best.pt`` has the recorded checksum.

Every reader here names the file at fault: a file that does not parse, or parses to the wrong shape or
without a key it must have, is a :class:`DataError` naming that file, never a difference of settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from reinforcens.config import TrainConfig
from reinforcens.data.integrity import file_sha256, one_line
from reinforcens.errors import ConfigError, DataError

CONFIG, DATA, RUN, METRICS, EPOCHS, BEST, LAST, NEGATIVES = (
    "config.json",
    "data.json",
    "run.json",
    "metrics.json",
    "epochs.jsonl",
    "best.pt",
    "last.pt",
    "negatives.npz",
)

#: config keys that do not change a run's result (or are checked as resolved, in ``run.json``)
NON_DEFINING_KEYS = ("device", "backend", "pretrained")

#: config keys without which a run's model cannot be rebuilt (a config lacking one is corrupt)
MODEL_KEYS = ("sampler", "sampler_options", "dim")

#: keys every trained run's ``metrics.json`` has (the trainer writes them, the commands print them)
METRICS_KEYS = ("sampler", "seed", "best_epoch", "epochs", "seconds", "train_seconds_per_epoch",
                "valid.auc", "test.auc", "checkpoint_sha256")  # fmt: skip


def read_json(path: Path, kind: type = dict) -> Any:
    """Parse a JSON file of the expected top-level ``kind``; a :class:`DataError` naming it if not."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("missing", path) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"corrupt JSON ({one_line(exc)})", path) from None
    if not isinstance(value, kind):
        raise DataError(f"corrupt: expected a JSON {kind.__name__}", path)
    return value


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file, naming the first bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("missing", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable ({one_line(exc)})", path) from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DataError(f"corrupt JSON line ({one_line(exc)})", path, n) from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise DataError("corrupt line: expected an object with an integer 'epoch'", path, n)
        rows.append(row)
    return rows


def read_negatives(
    path: Path, last_epoch: int | None = None, n_users: int | None = None, n_items: int | None = None
) -> dict[int, np.ndarray]:
    """The recorded negatives (``negatives.npz``: key ``e<epoch>``, a (2, n) array of users and items)
    of the epochs up to ``last_epoch``; with the sizes, every id is checked to be in range."""
    try:
        with np.load(path, allow_pickle=False) as z:
            records = {int(k[1:]): z[k] for k in z.files}
    except Exception as exc:  # missing, truncated, garbled (a failed CRC check), foreign keys
        raise DataError(f"corrupt or truncated ({one_line(exc)})", path) from None
    for epoch, a in records.items():
        if a.ndim != 2 or a.shape[0] != 2 or not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"corrupt: epoch {epoch} is not a (2, n) integer array", path)
        for row, n in ((0, n_users), (1, n_items)):
            if n is not None and a.shape[1] and (a[row].min() < 0 or a[row].max() >= n):
                raise DataError(f"corrupt: epoch {epoch} holds ids out of range", path)
    return {e: a for e, a in records.items() if last_epoch is None or e <= last_epoch}


def read_config_values(run_dir: Path) -> dict[str, Any]:
    """The values of the run's ``config.json`` as written; a :class:`DataError` naming the file if it
    does not parse, lacks a key of :data:`MODEL_KEYS` or is not a valid config."""
    path = run_dir / CONFIG
    values = read_json(path)
    missing = [k for k in MODEL_KEYS if k not in values]
    if missing:
        raise DataError(f"corrupt: no key {missing[0]!r}", path)
    try:
        TrainConfig.build(**values)
    except ConfigError as exc:
        raise DataError(f"corrupt ({exc})", path) from None
    return values


def read_config(run_dir: Path) -> TrainConfig:
    """The run's ``config.json`` as a :class:`TrainConfig` (see :func:`read_config_values`)."""
    return TrainConfig.build(**read_config_values(run_dir))


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A trained run's ``metrics.json``; a :class:`DataError` naming it if it does not parse or lacks a
    key of :data:`METRICS_KEYS`."""
    path = run_dir / METRICS
    metrics = read_json(path)
    missing = [k for k in METRICS_KEYS if k not in metrics]
    if missing:
        raise DataError(f"corrupt: no key {missing[0]!r}", path)
    if not isinstance(metrics["checkpoint_sha256"], str):
        raise DataError("corrupt: 'checkpoint_sha256' is not a string", path)
    return metrics


def read_data_info(run_dir: Path) -> dict[str, Any]:
    """The run's ``data.json``; a :class:`DataError` naming it if it does not parse or records no data
    fingerprint."""
    path = run_dir / DATA
    info = read_json(path)
    if not isinstance(info.get("fingerprint"), str):
        raise DataError(
            "records no data fingerprint (corrupt, or made by an older version); retrain it", path
        )
    return info


def config_differences(saved: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    """The defining config keys in which two configs differ (see :data:`NON_DEFINING_KEYS`: the device
    and backend are compared as resolved, in ``run.json``; the pretrained checkpoint by checksum)."""
    from reinforcens.config import canonical_model_keys

    saved, mine = (canonical_model_keys(c, str(c.get("sampler", "uniform"))) for c in (saved, mine))
    keys = set(saved) | set(mine)
    return sorted(k for k in keys if k not in NON_DEFINING_KEYS and saved.get(k) != mine.get(k))


def check_same_data(run_dir: Path, fingerprint: str) -> None:
    """Raise :class:`ConfigError` unless the run was trained on data with this fingerprint (a
    :class:`DataError` naming ``data.json`` if it records none)."""
    info = read_data_info(run_dir)
    saved = info["fingerprint"]
    if saved != fingerprint:
        raise ConfigError(
            f"{run_dir} was trained on other data (fingerprint {str(saved)[:12]}, this dataset "
            f"{fingerprint[:12]}, from {info.get('path')}); choose another --out"
        )


def data_for(run_dir: Path, data_path: str | Path | None = None):
    """The prepared dataset to evaluate a run on: ``data_path``, or the one in its ``data.json``.

    Raises
    ------
    ConfigError
        If the dataset does not index the same users and items as the run's (its id maps differ), or
        the recorded one is gone and no other is given.
    DataError
        If ``data.json`` is corrupt, or the dataset is (naming the file).
    """
    from reinforcens.data.prepared import load_prepared

    info = read_data_info(run_dir)
    if data_path is None:
        data_path = info.get("path")
        if not isinstance(data_path, str) or not Path(data_path).is_dir():
            raise ConfigError(
                f"{run_dir / DATA}: the prepared dataset it records ({data_path}) is not found; pass --data"
            )
    data = load_prepared(data_path)
    same = info.get("fingerprint") == data.fingerprint
    if not same and info.get("ids_fingerprint") != data.describe()["ids_fingerprint"]:
        raise ConfigError(
            f"{data_path} is not the data {run_dir} was trained on ({data.n_users} users, {data.n_items} "
            f"items against {info.get('n_users')} and {info.get('n_items')}, other id maps); its ids "
            "would index other users and items"
        )
    return data


def check_same_run_info(run_dir: Path, mine: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` if ``run.json`` says the run is computed otherwise than ``mine`` (a
    :class:`DataError` naming it if it is corrupt or lacks a key that ``mine`` has a value for)."""
    path = run_dir / RUN
    saved = read_json(path)
    missing = [k for k in mine if k not in saved and mine[k] is not None]  # None: not recorded before
    if missing:
        raise DataError(f"corrupt: no key {missing[0]!r}", path)
    diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
    if diff:
        said = ", ".join(f"{k} {saved.get(k)!r} (now {mine.get(k)!r})" for k in diff)
        hint = " (pass the same --backend and --device)" if {"backend", "device"} & set(diff) else ""
        raise ConfigError(f"{path}: the run was computed with {said}; results would differ{hint}")


def verify_finished(
    run_dir: Path, config_json: str, fingerprint: str, run_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The metrics of a finished run, if it verifies (``run_info``: also check ``run.json``).

    Raises
    ------
    ConfigError
        If it was made with another config or on other data.
    DataError
        If one of its files is corrupt (naming the file) or ``best.pt`` does not have the checksum
        recorded in ``metrics.json``.
    """
    metrics = read_metrics(run_dir)
    saved = read_config_values(run_dir)
    diff = config_differences(saved, json.loads(config_json))
    if diff:
        raise ConfigError(
            f"{run_dir / CONFIG}: the directory holds a finished run with other settings ({', '.join(diff)})"
        )
    check_same_data(run_dir, fingerprint)
    if run_info is not None:
        check_same_run_info(run_dir, run_info)
    best = run_dir / BEST
    expected = metrics["checkpoint_sha256"]
    if not best.is_file():
        raise DataError("missing: the run's best.pt is gone (delete the run directory to retrain)", best)
    if expected != file_sha256(best):
        raise DataError(
            "does not match the checksum recorded in metrics.json (corrupt or replaced); delete the "
            "run directory to retrain",
            best,
        )
    return metrics
