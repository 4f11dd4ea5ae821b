"""What a prepared dataset is, and whether its files still say so: content fingerprints and checks.

:func:`fingerprint` is a SHA-256 over the dataset's content (sizes, the training CSR arrays, the
evaluation lists and the raw ids), not over its path: a copied or moved dataset keeps its fingerprint,
and a dataset prepared with another split, other options or from another log never shares it. Runs
record the fingerprint of the data they were trained on, so results are never reused for other data.

:func:`check_prepared_arrays` validates the loaded arrays (shapes, dtypes, every index inside its
table), so that nothing later reads out of range: the compiled kernels trust their inputs.

:func:`file_sha256` and :func:`one_line` serve the checks of every file reinforcens reads back: byte
checksums recorded when a file is written, and exceptions of a reader summarised on one line, so that a
message about a corrupt file is always one line naming it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from reinforcens.errors import DataError

#: the slot kinds an evaluation list may hold (see :mod:`reinforcens.data.split`)
LIST_KINDS = (-1, 0, 1, 2)


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception on one line (readers' messages may hold newlines), shortened
    to about ``limit`` characters."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def fingerprint(
    n_users: int,
    n_items: int,
    arrays: Mapping[str, np.ndarray],
    user_ids: np.ndarray,
    item_ids: np.ndarray,
) -> str:
    """The hex SHA-256 of a dataset's content.

    Parameters
    ----------
    n_users, n_items
        The table sizes.
    arrays
        Named arrays (the CSR arrays and the lists), hashed by name, dtype, shape and bytes.
    user_ids, item_ids
        The raw ids of the internal ids (any dtype; strings are hashed by value).
    """
    h = hashlib.sha256()
    h.update(f"reinforcens-prepared:{int(n_users)}:{int(n_items)}".encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"|{name}:{a.dtype.str}:{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    h.update(ids_fingerprint(user_ids, item_ids).encode())
    return h.hexdigest()


def ids_fingerprint(user_ids: np.ndarray, item_ids: np.ndarray) -> str:
    """The hex SHA-256 of the id maps alone (raw id of each internal user and item id): two datasets
    that share it index the same users and items, so a model trained on one can be scored on the other."""
    h = hashlib.sha256()
    for name, ids in (("user_ids", user_ids), ("item_ids", item_ids)):
        values = pd.util.hash_array(np.asarray(ids).astype(str).astype(object), categorize=False)
        h.update(f"|{name}:{values.size}|".encode())
        h.update(values.tobytes())
    return h.hexdigest()


def check_prepared_arrays(
    path: Path,
    n_users: int,
    n_items: int,
    train: Mapping[str, np.ndarray],
    lists: Mapping[str, Mapping[str, np.ndarray]],
    n_user_ids: int,
    n_item_ids: int,
) -> None:
    """Raise :class:`DataError` naming the file if any array is malformed or indexes out of range.

    Parameters
    ----------
    path
        The dataset directory.
    n_users, n_items
        The sizes in ``meta.json``.
    train
        ``click_indptr, click_indices, exposure_indptr, exposure_indices`` of ``train.npz``.
    lists
        ``{"valid": {"users", "items", "kind", "click_indptr", "click_indices"}, "test": {...}}``: the
        lists and every click of the held-out sessions.
    n_user_ids, n_item_ids
        Rows of ``user_ids.parquet`` and ``item_ids.parquet``.
    """
    if n_users < 1 or n_items < 1:
        raise DataError(f"n_users and n_items must be positive, got {n_users}, {n_items}", path / "meta.json")
    if (n_user_ids, n_item_ids) != (n_users, n_items):
        raise DataError(
            f"{n_user_ids} user ids and {n_item_ids} item ids for {n_users} users and {n_items} items",
            path / "user_ids.parquet" if n_user_ids != n_users else path / "item_ids.parquet",
        )
    for kind in ("click", "exposure"):
        _check_csr(train, kind, n_users, n_items, path / "train.npz")
    for split, arrays in lists.items():
        where = path / f"{split}.npz"
        _check_csr(arrays, "click", n_users, n_items, where)
        users, items, kind = arrays["users"], arrays["items"], arrays["kind"]
        _integer(users, "users", where, ndim=1)
        _integer(items, "items", where, ndim=2)
        _integer(kind, "kind", where, ndim=2)
        if items.shape != kind.shape or items.shape[0] != users.shape[0]:
            raise DataError(
                f"users {users.shape}, items {items.shape} and kind {kind.shape} do not match", where
            )
        _in_range(users, 0, n_users, "users", where)
        if not np.isin(kind, LIST_KINDS).all():
            raise DataError(f"kind holds values other than {LIST_KINDS}", where)
        empty = kind == -1
        if (items[empty] != -1).any():
            raise DataError("items of empty slots (kind -1) must be -1", where)
        _in_range(items[~empty], 0, n_items, "items", where)


def _check_csr(arrays: Mapping[str, np.ndarray], kind: str, n_users: int, n_items: int, where: Path) -> None:
    """``{kind}_indptr`` and ``{kind}_indices`` must be a per-user CSR of items in range."""
    indptr, indices = arrays[f"{kind}_indptr"], arrays[f"{kind}_indices"]
    _integer(indptr, f"{kind}_indptr", where, ndim=1)
    _integer(indices, f"{kind}_indices", where, ndim=1)
    if indptr.shape[0] != n_users + 1 or indptr[0] != 0 or indptr[-1] != indices.shape[0]:
        raise DataError(f"{kind}_indptr does not describe {n_users} users", where)
    if (np.diff(indptr) < 0).any():
        raise DataError(f"{kind}_indptr decreases", where)
    _in_range(indices, 0, n_items, f"{kind}_indices (items)", where)


def _integer(a: np.ndarray, name: str, where: Path, ndim: int) -> None:
    if a.ndim != ndim or not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{name} must be a {ndim}-d integer array, got {a.dtype} of shape {a.shape}", where)


def _in_range(a: np.ndarray, lo: int, hi: int, name: str, where: Path) -> None:
    if a.size and (int(a.min()) < lo or int(a.max()) >= hi):
        raise DataError(
            f"{name} out of range: values {int(a.min())}..{int(a.max())}, expected {lo}..{hi - 1}",
            where,
        )
