"""The prepared-dataset directory that every command after ``prepare`` reads.

Layout of ``PREP/``:

``meta.json``
    Format version, sizes, the content fingerprint (:mod:`reinforcens.data.integrity`, checked on
    every load), the SHA-256 of every other file (``files``: a listed file that is missing, or an extra
    file such as the ground truth that the fingerprint does not cover and whose bytes changed, is
    refused by name; when the content does not match the fingerprint, they say which file changed),
    the options used (``min_sessions``, ``list_length``, ``seed``), the Table-1 statistics and what
    each preprocessing step removed.
``train.npz``
    ``click_indptr, click_indices`` and ``exposure_indptr, exposure_indices``: per-user CSR of
    training clicks and of training exposed-but-unclicked items (never containing a training click).
``valid.npz``, ``test.npz``
    ``users, items, kind``: the fixed evaluation lists (see :mod:`reinforcens.data.split`).
``user_ids.parquet``, ``item_ids.parquet``
    The raw id of each internal id (column ``raw_id``).
``ground_truth.npz``
    Only for simulated data: the simulator's ground truth, keyed by raw ids.

The directory is written to a temporary sibling first and renamed into place, so an interrupted
``prepare`` never leaves a half-written dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reinforcens.data.integrity import (
    check_prepared_arrays,
    file_sha256,
    fingerprint,
    ids_fingerprint,
    one_line,
)
from reinforcens.data.interactions import UserItems
from reinforcens.data.log import ExposureLog
from reinforcens.data.preprocess import Events, preprocess
from reinforcens.data.protocols import get_protocol
from reinforcens.data.split import EvalLists
from reinforcens.errors import DataError

#: 2: valid.npz/test.npz hold every click of the held-out sessions (click_indptr, click_indices), and
#: test lists never hold a validation click as a negative
FORMAT_VERSION = 2

#: the arrays of ``train.npz``
TRAIN_ARRAYS = ("click_indptr", "click_indices", "exposure_indptr", "exposure_indices")
#: the arrays of ``valid.npz`` and ``test.npz``: the lists, and every click of the held-out sessions
LIST_ARRAYS = ("users", "items", "kind", "click_indptr", "click_indices")

#: the files whose content the fingerprint covers (``meta.json`` holds it, other files are extras)
CONTENT_FILES = ("train.npz", "valid.npz", "test.npz", "user_ids.parquet", "item_ids.parquet")

#: the keys of ``meta.json`` that every reader relies on, with their types
META_KEYS: dict[str, type] = {"n_users": int, "n_items": int, "stats": dict, "report": dict, "options": dict}


@dataclass(frozen=True)
class PreparedDataset:
    """A preprocessed, split dataset with its evaluation lists.

    Attributes
    ----------
    n_users, n_items : int
    train_clicks : UserItems
        The positives of training.
    train_exposures : UserItems
        Items shown to the user in training sessions and never clicked by them in training.
    valid, test : EvalLists
        The stored evaluation lists.
    meta : dict
        The contents of ``meta.json``.
    user_ids, item_ids : numpy.ndarray
        Raw ids of internal ids.
    path : pathlib.Path or None
    """

    n_users: int
    n_items: int
    train_clicks: UserItems
    train_exposures: UserItems
    valid: EvalLists
    test: EvalLists
    meta: dict[str, Any]
    user_ids: np.ndarray
    item_ids: np.ndarray
    path: Path | None = field(default=None)

    def stats(self) -> dict[str, int]:
        """The paper's Table-1 row and one more count.

        ``users``, ``items``; ``train``, ``valid``, ``test``: clicks in each split; ``exposures``: unclicked
        exposures (one per user, item and session) kept after preprocessing, in all splits, as the
        paper's Exposure# column; ``train_exposure_pairs``: the distinct (user, item) pairs of training
        exposures that exposure-aware samplers draw from.
        """
        return dict(self.meta["stats"])

    def item_popularity(self) -> np.ndarray:
        """Training click count of each item."""
        return np.bincount(self.train_clicks.indices, minlength=self.n_items)

    @property
    def fingerprint(self) -> str:
        """The SHA-256 of the dataset's content (:func:`reinforcens.data.integrity.fingerprint`): the
        same for a copied or moved dataset, different for any other split or data."""
        return str(self.meta["fingerprint"])

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the fingerprint covers, by their names in ``train.npz``/``valid.npz``/``test.npz``."""
        tc, te = self.train_clicks, self.train_exposures
        out = {
            "click_indptr": tc.indptr,
            "click_indices": tc.indices,
            "exposure_indptr": te.indptr,
            "exposure_indices": te.indices,
        }
        for name, lists in (("valid", self.valid), ("test", self.test)):
            out |= {f"{name}.users": lists.users, f"{name}.items": lists.items, f"{name}.kind": lists.kind}
            if lists.clicks is not None:
                out[f"{name}.click_indptr"] = lists.clicks.indptr
                out[f"{name}.click_indices"] = lists.clicks.indices
        return out

    def describe(self) -> dict[str, Any]:
        """What a run records of its data: the fingerprint, the absolute path, sizes and statistics."""
        return {
            "fingerprint": self.fingerprint,
            "ids_fingerprint": ids_fingerprint(self.user_ids, self.item_ids),
            "path": str(self.path.resolve()) if self.path else None,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "stats": self.stats(),
        }

    @property
    def ground_truth_path(self) -> Path | None:
        if self.path is None:
            return None
        p = self.path / "ground_truth.npz"
        return p if p.exists() else None


def prepare(
    log: ExposureLog,
    min_sessions: int = 4,
    list_length: int | None = 40,
    seed: int = 0,
    split: str = "session",
) -> PreparedDataset:
    """Preprocess, split and build evaluation lists in memory.

    Parameters
    ----------
    log
        The exposure log.
    min_sessions
        Session filter threshold for users and items (4 Beibei-like, 6 Zhihu-like).
    list_length
        Evaluation list length ``L`` (40 Beibei-like, 160 Zhihu-like); ``None`` keeps sessions as they
        are, for randomly exposed test sets.
    seed
        Seeds the list sampling (the lists are built once and stored).
    split
        The split protocol (:data:`reinforcens.data.protocols.PROTOCOLS`): ``"session"`` (the
        paper's) or ``"leave-one-out"``.

    Raises
    ------
    DataError
        If nothing is left after filtering or splitting; the message says how many users each step
        dropped and which options would keep more.
    """
    _check_options(min_sessions, list_length)
    events = preprocess(log, min_sessions=min_sessions, keep_time=get_protocol(split).needs_time)
    return prepare_events(
        events, log.source, log.n_users, log.n_items, min_sessions, list_length, seed, split
    )


def _check_options(min_sessions: int, list_length: int | None) -> None:
    if min_sessions < 1:
        raise DataError(f"min_sessions must be >= 1, got {min_sessions}")
    if list_length is not None and list_length < 2:
        raise DataError(f"list_length must be >= 2 or None, got {list_length}")


def prepare_events(
    events: Events,
    source: str,
    log_users: int,
    log_items: int,
    min_sessions: int,
    list_length: int | None,
    seed: int,
    split: str = "session",
) -> PreparedDataset:
    """:func:`prepare` after :func:`~reinforcens.data.preprocess.preprocess`: split and build the lists.

    For callers that free the log before splitting (the log of a large dataset is as big as everything
    built from it); ``source``, ``log_users`` and ``log_items`` describe the log in messages.
    """
    _check_options(min_sessions, list_length)
    if events.n_users == 0:
        raise DataError(
            f"no user has {min_sessions} sessions after filtering users and items with fewer than "
            f"{min_sessions} sessions ({log_users} users, {log_items} items in the log); "
            "try a smaller --min-sessions",
            source,
        )
    protocol = get_protocol(split)
    held_out, events = protocol.split(events, list_length, seed)
    report = events.report | held_out.report
    if events.n_users == 0:
        raise DataError(
            f"no user is left: the {protocol.name} split drops users with {protocol.lacking}, and "
            f"{report[protocol.dropped_key]} of {report['users_kept']} users are such; try a smaller "
            "--min-sessions, another --split, or a reader option that splits the log into more "
            "sessions (e.g. by time gap)",
            source,
        )
    stats = {
        "users": events.n_users,
        "items": events.n_items,
        "train": held_out.train_clicks.nnz,
        "valid": held_out.valid_clicks,
        "test": held_out.test_clicks,
        "exposures": int((~events.clicked).sum()),
        "train_exposure_pairs": held_out.train_exposures.nnz,
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "n_users": events.n_users,
        "n_items": events.n_items,
        "options": {"min_sessions": min_sessions, "list_length": list_length, "seed": seed, "split": split},
        "stats": stats,
        "report": {k: int(v) for k, v in report.items()},
    }
    data = PreparedDataset(
        n_users=events.n_users,
        n_items=events.n_items,
        train_clicks=held_out.train_clicks,
        train_exposures=held_out.train_exposures,
        valid=held_out.valid,
        test=held_out.test,
        meta=meta,
        user_ids=events.user_ids,
        item_ids=events.item_ids,
    )
    meta["fingerprint"] = _fingerprint_of(data)
    return data


def _fingerprint_of(data: PreparedDataset) -> str:
    return fingerprint(data.n_users, data.n_items, data.arrays(), data.user_ids, data.item_ids)


def is_prepared_dir(path: Path) -> bool:
    return (path / "meta.json").is_file()


def is_current_prepared_dir(path: Path) -> bool:
    """Whether ``path`` holds a prepared dataset of this version's format (one of an earlier format
    is refused by :func:`load_prepared` and must be prepared again)."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format_version") == FORMAT_VERSION


def save_prepared(
    data: PreparedDataset, out: str | Path, force: bool = False, extra_files: dict | None = None
) -> Path:
    """Write ``data`` to ``out`` atomically (temporary directory, then rename).

    Parameters
    ----------
    out
        Target directory. It must not exist, be empty, or (with ``force``) hold a prepared dataset.
    extra_files
        ``{name: source_path}`` copied into the directory (e.g. the simulator's ground truth).

    Raises
    ------
    DataError
        If ``out`` exists and is not replaceable.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force or not is_prepared_dir(out):
            raise DataError("exists and is not empty (use --force to replace a prepared dataset)", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tc, te = data.train_clicks, data.train_exposures
        np.savez(
            tmp / "train.npz",
            click_indptr=tc.indptr,
            click_indices=tc.indices,
            exposure_indptr=te.indptr,
            exposure_indices=te.indices,
        )
        for name, lists in (("valid", data.valid), ("test", data.test)):
            if lists.clicks is None:
                raise ValueError(f"the {name} lists carry no held-out clicks (EvalLists.clicks)")
            np.savez(
                tmp / f"{name}.npz",
                users=lists.users,
                items=lists.items,
                kind=lists.kind,
                click_indptr=lists.clicks.indptr,
                click_indices=lists.clicks.indices,
            )
        _write_ids(tmp / "user_ids.parquet", data.user_ids)
        _write_ids(tmp / "item_ids.parquet", data.item_ids)
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
        meta = dict(data.meta)
        meta.setdefault("fingerprint", _fingerprint_of(data))
        meta["files"] = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_ids(path: Path, ids: np.ndarray) -> None:
    values = ids
    if ids.dtype == object:
        values = np.array([str(x) for x in ids], dtype=object)
    pd.DataFrame({"raw_id": values}).to_parquet(path, index=False)


def load_prepared(path: str | Path) -> PreparedDataset:
    """Load a prepared dataset directory written by :func:`save_prepared`.

    Raises
    ------
    DataError
        If the directory is missing, incomplete, of another format version, or a file is corrupt or
        changed since ``prepare`` wrote it; the message names the file at fault.
    """
    path = Path(path)
    if not is_prepared_dir(path):
        raise DataError("not a prepared dataset (no meta.json); run `reinforcens prepare`", path)
    meta = _read_meta(path / "meta.json")
    checksums = _check_listed_files(path, meta)
    n_users, n_items = int(meta["n_users"]), int(meta["n_items"])
    train = _load_npz(path / "train.npz", TRAIN_ARRAYS)
    raw = {name: _load_npz(path / f"{name}.npz", LIST_ARRAYS) for name in ("valid", "test")}
    user_ids = _read_ids(path / "user_ids.parquet")
    item_ids = _read_ids(path / "item_ids.parquet")
    try:
        check_prepared_arrays(path, n_users, n_items, train, raw, user_ids.size, item_ids.size)
        clicks = UserItems(train["click_indptr"], train["click_indices"], n_items)
        exposures = UserItems(train["exposure_indptr"], train["exposure_indices"], n_items)
        lists = {
            n: EvalLists(
                z["users"], z["items"], z["kind"], UserItems(z["click_indptr"], z["click_indices"], n_items)
            )
            for n, z in raw.items()
        }
        data = PreparedDataset(
            n_users=n_users,
            n_items=n_items,
            train_clicks=clicks,
            train_exposures=exposures,
            valid=lists["valid"],
            test=lists["test"],
            meta=meta,
            user_ids=user_ids,
            item_ids=item_ids,
            path=path,
        )
        actual = _fingerprint_of(data)
        if meta.setdefault("fingerprint", actual) != actual:
            raise DataError(
                "the files do not match the fingerprint in meta.json (modified or corrupted since "
                "`reinforcens prepare` wrote them); prepare it again",
                path,
            )
    except DataError as exc:
        raise _at_fault(path, checksums, exc) from None
    return data


def _read_meta(path: Path) -> dict[str, Any]:
    """``meta.json``, checked for its format version and the keys every reader uses."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"corrupt meta.json ({one_line(exc)})", path) from None
    if not isinstance(meta, dict):
        raise DataError("corrupt meta.json (not a JSON object)", path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"prepared with format version {meta.get('format_version')}, this version reads "
            f"{FORMAT_VERSION}; prepare it again",
            path,
        )
    for key, kind in META_KEYS.items():
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(f"corrupt meta.json (key {key!r} missing or not a JSON {kind.__name__})", path)
    return meta


def _check_listed_files(path: Path, meta: dict[str, Any]) -> dict[str, str]:
    """The checksums ``meta.json`` lists (none for datasets prepared before it listed them), after
    checking that every listed file is there and that the extra files (not covered by the fingerprint,
    e.g. ``ground_truth.npz``) have their recorded bytes."""
    files = meta.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise DataError("corrupt meta.json (key 'files' is not an object of checksums)", path / "meta.json")
    for name, sha in files.items():
        if Path(name).name != name or name == "meta.json":
            raise DataError(f"corrupt meta.json (lists the file {name!r})", path / "meta.json")
        if not (path / name).is_file():
            raise DataError("missing (meta.json lists it); prepare the dataset again", path / name)
        if name not in CONTENT_FILES and file_sha256(path / name) != sha:
            raise DataError(
                "does not match its checksum in meta.json (corrupt or replaced); prepare the dataset again",
                path / name,
            )
    return files


def _at_fault(path: Path, checksums: dict[str, str], exc: DataError) -> DataError:
    """The error to report for an inconsistent dataset: by the checksums in ``meta.json``, the file that
    changed since ``prepare`` wrote it, or ``meta.json`` itself if every other file is as written."""
    if not checksums:  # prepared before meta.json listed checksums: the check's own verdict
        return exc
    changed = [n for n in CONTENT_FILES if n in checksums and file_sha256(path / n) != checksums[n]]
    if changed:
        if exc.path is not None and Path(exc.path).name in changed:
            return exc
        return DataError(
            "changed since `reinforcens prepare` wrote it (its checksum in meta.json differs); "
            "prepare the dataset again",
            path / changed[0],
        )
    reason = str(exc)[len(exc.path) + 2 :] if exc.path is not None else str(exc)
    return DataError(
        f"does not describe its files, which are as `reinforcens prepare` wrote them ({reason}); "
        "prepare the dataset again",
        path / "meta.json",
    )


def _load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` file (no pickles), or a :class:`DataError` naming the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DataError(f"missing array(s) {', '.join(missing)}", path)
            return {k: z[k] for k in keys}
    except DataError:
        raise
    except Exception as exc:  # truncated, garbled, not a zip, pickled objects, ...
        raise DataError(f"corrupt or truncated ({one_line(exc)})", path) from None


def _read_ids(path: Path) -> np.ndarray:
    try:
        return pd.read_parquet(path)["raw_id"].to_numpy()
    except Exception as exc:  # missing, truncated, not Parquet, no raw_id column
        raise DataError(f"corrupt or missing id table ({one_line(exc)})", path) from None
