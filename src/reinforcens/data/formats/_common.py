"""Parsing helpers shared by the dataset readers.

Everything here is vectorized with pyarrow compute or numpy: a reader never loops over rows in Python.
Every malformed input raises :class:`~reinforcens.errors.DataError` naming the file and, where the
format has lines, the line (for Parquet, the 1-based row).

The raw frame a reader returns has the columns ``user, item, session, timestamp, clicked, line``;
:func:`frame` builds it. Ids are returned as :class:`pandas.Categorical` (sorted categories, integer
categories when every raw id is a plain integer), which keeps memory small on logs of hundreds of
millions of rows.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from reinforcens.errors import DataError

#: Integers that fit comfortably in int64 (at most 18 digits).
_INT_RE = r"^[+-]?[0-9]{1,18}$"
_FLOAT_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_SKIP_DIRS = {"__MACOSX"}
DAY = 86_400


# --------------------------------------------------------------------------------------------------
# locating files


def find_files(path: Path, patterns: Sequence[str], what: str) -> list[Path]:
    """The files a reader should read: ``path`` itself, or the matches of ``patterns`` below it.

    Parameters
    ----------
    path
        A file (returned as is) or a folder, searched recursively (hidden files and macOS archive
        debris are skipped).
    patterns
        Glob patterns such as ``"behaviors.tsv"`` or ``"log_*.csv"``.
    what
        Named in the error when nothing matches.

    Returns
    -------
    list of pathlib.Path
        Sorted, at least one.
    """
    if path.is_file():
        return [path]
    found: set[Path] = set()
    for pattern in patterns:
        for p in path.rglob(pattern):
            rel = p.relative_to(path).parts
            if any(part.startswith(".") or part in _SKIP_DIRS for part in rel):
                continue
            if p.is_file() or (p.is_dir() and any(p.glob("*.parquet"))):
                found.add(p)
    if not found:
        raise DataError(f"no {what} found in this folder (looked for {', '.join(patterns)})", path)
    return sorted(found)


def find_one(path: Path, patterns: Sequence[str], what: str) -> Path:
    """Like :func:`find_files`, but exactly one match is required."""
    files = find_files(path, patterns, what)
    if len(files) > 1:
        names = ", ".join(str(f.relative_to(path)) for f in files[:5])
        raise DataError(f"several {what} found ({names}); point --input at one of them", path)
    return files[0]


# --------------------------------------------------------------------------------------------------
# delimited text


def _open_binary(path: Path):
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_bytes(path: Path) -> bytes:
    """The whole content of a (possibly gzipped) file; DataError if it cannot be read or is empty."""
    try:
        with _open_binary(path) as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read the file ({exc})", path) from None
    if not data.strip():
        raise DataError("the file is empty", path)
    return data


def decode(data: bytes, path: Path) -> str:
    """Decode UTF-8 (a BOM is dropped), naming the line of the first invalid byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError("not UTF-8 text (is this the right file and format?)", path, line) from None


def _first_line(path: Path) -> str:
    try:
        with _open_binary(path) as f:
            raw = f.readline(1 << 20)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read the file ({exc})", path) from None
    try:
        return raw.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text (is this the right file and format?)", path, 1) from None


def read_header(path: Path, sep: str, quoted: bool = True) -> list[str]:
    """The column names on the first line of a delimited file."""
    line = _first_line(path)
    if not line.strip():
        raise DataError("the first line (the header) is empty", path, 1)
    if quoted:
        try:
            return [c.strip() for c in next(csv.reader([line], delimiter=sep))]
        except csv.Error as exc:
            raise DataError(f"unreadable header ({exc})", path, 1) from None
    return [c.strip() for c in line.split(sep)]


def read_delimited(
    path: Path,
    columns: Sequence[str],
    *,
    sep: str = ",",
    header: bool = True,
    optional: Sequence[str] = (),
    quoted: bool = True,
    newlines_in_values: bool = False,
    layout: str = "",
    keep: Callable[[dict[str, pa.Array]], pa.Array] | None = None,
) -> tuple[dict[str, pa.Array], np.ndarray]:
    """Read some columns of a delimited file as strings.

    Parameters
    ----------
    path
        The file (``.gz`` is decompressed on the fly).
    columns
        With ``header=True``, the required column names; with ``header=False``, the names of all
        fields of each line, in order.
    sep
        The one-character delimiter.
    header
        Whether the first line names the columns.
    optional
        Further columns read when present (header files only).
    quoted
        Whether ``"`` quotes fields.
    newlines_in_values
        Whether quoted fields may hold line breaks (line numbers then count records, not lines).
    layout
        Shown in field-count errors, e.g. ``"user,item,<unused>,event,session"``.
    keep
        Optional filter applied to each block, returning a boolean mask of rows to keep (saves
        memory on big files of which only some rows matter).

    Returns
    -------
    columns : dict of str to pyarrow.Array
        Whitespace-trimmed strings, one entry per column found. Blank lines are dropped.
    lines : numpy.ndarray of int64
        The 1-based line of each row.
    """
    if not path.is_file():
        raise DataError("expected a file", path)
    first = _first_line(path)
    if not first.strip() and header:
        raise DataError("the first line (the header) is empty", path, 1)
    if header:
        names = read_header(path, sep, quoted)
        dupes = sorted({c for c in names if names.count(c) > 1 and c in (*columns, *optional)})
        if dupes:
            raise DataError(f"column(s) {', '.join(dupes)} appear more than once", path, 1)
        missing = [c for c in columns if c not in names]
        if missing:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise DataError(
                f"missing column(s) {', '.join(missing)} (found: {shown}); "
                f"is this the right file and format?",
                path,
                1,
            )
        wanted = [*columns, *(c for c in optional if c in names and c not in columns)]
        read_options = pcsv.ReadOptions(block_size=1 << 24)
        offset = 2
    else:
        names = list(columns)
        wanted = names
        read_options = pcsv.ReadOptions(column_names=names, block_size=1 << 24)
        offset = 1
    parse_options = pcsv.ParseOptions(
        delimiter=sep,
        quote_char='"' if quoted else False,
        newlines_in_values=newlines_in_values,
        ignore_empty_lines=False,
    )
    convert_options = pcsv.ConvertOptions(
        include_columns=wanted,
        column_types={c: pa.large_string() for c in wanted},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    parts: dict[str, list[pa.Array]] = {c: [] for c in wanted}
    line_parts: list[np.ndarray] = []
    seen = 0
    try:
        with pcsv.open_csv(
            path,
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        ) as reader:
            for batch in reader:
                n = batch.num_rows
                cols = {c: pc.utf8_trim_whitespace(batch.column(c)) for c in wanted}
                lines = np.arange(seen + offset, seen + offset + n, dtype=np.int64)
                seen += n
                blank = None
                for arr in cols.values():
                    empty = pc.equal(arr, "")
                    blank = empty if blank is None else pc.and_(blank, empty)
                mask = pc.invert(blank)
                if keep is not None:
                    mask = pc.and_(mask, pc.fill_null(keep(cols), False))
                if n and not pc.all(mask).as_py():
                    cols = {c: a.filter(mask) for c, a in cols.items()}
                    lines = lines[np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)]
                for c in wanted:
                    parts[c].append(cols[c])
                line_parts.append(lines)
    except (pa.ArrowInvalid, pa.ArrowKeyError, pa.ArrowNotImplementedError, OSError) as exc:
        _raise_csv_error(path, exc, read_options, parse_options, layout, names[0])
    except StopIteration:  # pragma: no cover - an empty stream
        pass
    out = {c: pa.concat_arrays(parts[c]) if parts[c] else pa.array([], pa.large_string()) for c in wanted}
    lines = np.concatenate(line_parts) if line_parts else np.zeros(0, dtype=np.int64)
    return out, lines


def _raise_csv_error(
    path: Path,
    exc: Exception,
    read_options: pcsv.ReadOptions,
    parse_options: pcsv.ParseOptions,
    layout: str,
    first_column: str,
) -> None:
    message = str(exc)
    decode(read_bytes(path), path)  # invalid UTF-8 or an empty file: named first
    if "UTF8" in message or "utf8" in message.lower():
        raise DataError("not UTF-8 text", path) from None
    bad: list[pcsv.InvalidRow] = []

    def handler(row: pcsv.InvalidRow) -> str:
        bad.append(row)
        return "error"

    opts = pcsv.ParseOptions(
        delimiter=parse_options.delimiter,
        quote_char=parse_options.quote_char,
        newlines_in_values=parse_options.newlines_in_values,
        ignore_empty_lines=False,
        invalid_row_handler=handler,
    )
    ro = pcsv.ReadOptions(
        column_names=read_options.column_names or None,
        use_threads=False,
        block_size=read_options.block_size,
    )
    try:
        pcsv.read_csv(
            path,
            read_options=ro,
            parse_options=opts,
            convert_options=pcsv.ConvertOptions(
                include_columns=[first_column],
                column_types={first_column: pa.large_string()},
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError, pa.ArrowNotImplementedError, OSError):
        pass
    if bad:
        row = bad[0]
        what = f" ({layout})" if layout else ""
        raise DataError(
            f"expected {row.expected_columns} fields{what}, found {row.actual_columns}; "
            f"wrong delimiter or a broken line?",
            path,
            row.number,
        ) from None
    first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    if len(first) > 200:
        first = first[:200] + "..."
    raise DataError(f"unreadable delimited text ({first})", path) from None


def require_rows(lines: np.ndarray, path: Path, what: str = "data rows") -> None:
    """Raise if a file yielded no rows."""
    if len(lines) == 0:
        raise DataError(f"the file has no {what}", path)


def read_lines(path: Path) -> tuple[pa.Array, np.ndarray]:
    """All non-blank lines of a text file (trailing ``\\r`` removed) and their 1-based numbers."""
    text = decode(read_bytes(path), path)
    lines = pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n"))
    lines = pc.utf8_rtrim(lines, characters="\r")
    keep = np.asarray(pc.not_equal(pc.utf8_trim_whitespace(lines), "").to_numpy(False))
    numbers = np.flatnonzero(keep).astype(np.int64) + 1
    return lines.filter(pa.array(keep)), numbers


# --------------------------------------------------------------------------------------------------
# values


def first_bad(mask: np.ndarray | pa.Array) -> int | None:
    """Index of the first ``True`` in ``mask``, or None."""
    if isinstance(mask, pa.Array | pa.ChunkedArray):
        mask = np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


def fail_if(mask, lines: np.ndarray, path: Path, message: Callable[[int], str] | str) -> None:
    """Raise a DataError at the first row where ``mask`` is true."""
    i = first_bad(mask)
    if i is not None:
        msg = message(i) if callable(message) else message
        raise DataError(msg, path, int(lines[i]) if len(lines) else None)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_text(values: pa.Array, what: str, path: Path) -> pa.Array:
    """A column as trimmed ``large_string`` (numbers are formatted); DataError for nested types."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    try:
        text = values.cast(pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise DataError(f"{what} has an unsupported type {values.type}", path) from None
    return pc.utf8_trim_whitespace(text)


def to_int(values: pa.Array, what: str, path: Path, lines: np.ndarray) -> np.ndarray:
    """Parse trimmed strings as int64 (``|x| < 2**62``), naming the line of the first bad value."""
    if pa.types.is_integer(values.type):
        fail_if(pc.is_null(values), lines, path, f"missing {what}")
        if pa.types.is_uint64(values.type):
            big = pc.greater(values, pa.scalar(2**62, pa.uint64()))
            fail_if(pc.fill_null(big, False), lines, path, f"{what} is out of range")
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = as_text(values, what, path)
    out = None
    if not values.null_count and len(values):
        # the fast path, for plain integers; the slow one below names the culprit
        digits = pc.utf8_ltrim(values, characters="+-")
        plain = pc.and_(
            pc.ascii_is_decimal(digits),
            pc.less_equal(pc.subtract(pc.utf8_length(values), pc.utf8_length(digits)), 1),
        )
        if pc.all(plain).as_py() and pc.max(pc.utf8_length(digits)).as_py() <= 18:
            out = np.asarray(pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    if out is None:
        ok = pc.fill_null(pc.match_substring_regex(values, _INT_RE), False)
        fail_if(
            pc.invert(ok),
            lines,
            path,
            lambda i: f"{what} is not an integer: {_shown(values[i].as_py())}",
        )
        out = np.asarray(pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    fail_if(np.abs(out) >= 2**62, lines, path, f"{what} is out of range")
    return out


def to_float(values: pa.Array, what: str, path: Path, lines: np.ndarray) -> np.ndarray:
    """Parse trimmed strings as finite float64, naming the line of the first bad value."""
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        fail_if(pc.is_null(values), lines, path, f"missing {what}")
        out = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
    else:
        values = as_text(values, what, path)
        try:  # the fast path; the regex below names the culprit
            if values.null_count:
                raise pa.ArrowInvalid("nulls")
            out = np.asarray(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            ok = pc.fill_null(pc.match_substring_regex(values, _FLOAT_RE), False)
            fail_if(
                pc.invert(ok),
                lines,
                path,
                lambda i: f"{what} is not a number: {_shown(values[i].as_py())}",
            )
            try:
                out = np.asarray(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False))
            except pa.ArrowInvalid:
                raise DataError(f"{what} is not a number", path) from None
    fail_if(~np.isfinite(out), lines, path, f"{what} is not a finite number")
    return out


def to_seconds(values: np.ndarray, what: str, path: Path, lines: np.ndarray) -> np.ndarray:
    """Floor float times to int64 seconds, refusing values out of the int64 range."""
    fail_if(np.abs(values) >= 2.0**62, lines, path, f"{what} is out of range")
    return np.floor(values).astype(np.int64)


def to_flag(values: pa.Array, what: str, path: Path, lines: np.ndarray) -> np.ndarray:
    """Parse 0/1 flags (also ``true``/``false`` and ``1.0``/``0.0``)."""
    if pa.types.is_boolean(values.type):
        fail_if(pc.is_null(values), lines, path, f"missing {what}")
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        arr = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
        fail_if(~np.isin(arr, (0.0, 1.0)), lines, path, f"{what} must be 0 or 1")
        return arr == 1.0
    text = pc.utf8_lower(as_text(values, what, path))
    true = pc.is_in(text, pa.array(["1", "1.0", "true"], pa.large_string()))
    false = pc.is_in(text, pa.array(["0", "0.0", "false"], pa.large_string()))
    fail_if(
        pc.invert(pc.or_(true, false)),
        lines,
        path,
        lambda i: f"{what} must be 0 or 1, found {_shown(text[i].as_py())}",
    )
    return np.asarray(true.to_numpy(zero_copy_only=False), dtype=bool)


def parse_datetimes(
    values: pa.Array, fmt: str | None, what: str, path: Path, lines: np.ndarray
) -> np.ndarray:
    """Parse date-time strings (each distinct string once) to int64 Unix seconds (UTC)."""
    encoded = pc.dictionary_encode(as_text(values, what, path))
    dictionary = encoded.dictionary.to_numpy(zero_copy_only=False)
    parsed = pd.to_datetime(pd.Series(dictionary, dtype=object), format=fmt, errors="coerce")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    bad_dict = parsed.isna().to_numpy()
    idx = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    example = f" (expected like {fmt})" if fmt else ""
    fail_if(
        bad_dict[idx],
        lines,
        path,
        lambda i: f"{what} is not a date-time: {_shown(dictionary[idx[i]])}{example}",
    )
    seconds = parsed.to_numpy(dtype="datetime64[s]").astype(np.int64)
    return seconds[idx]


def timestamps_from_arrow(values: pa.Array, what: str, path: Path, lines: np.ndarray) -> np.ndarray:
    """int64 Unix seconds from an Arrow timestamp, date, integer, float or string column."""
    t = values.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        fail_if(pc.is_null(values), lines, path, f"missing {what}")
        if pa.types.is_date32(t):
            days = np.asarray(values.cast(pa.int32()).to_numpy(zero_copy_only=False), np.int64)
            return days * DAY
        if pa.types.is_date64(t):
            raw = np.asarray(values.cast(pa.int64()).to_numpy(zero_copy_only=False), np.int64)
            return np.floor_divide(raw, 1000)
        raw = np.asarray(values.cast(pa.int64()).to_numpy(zero_copy_only=False), np.int64)
        per_second = {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}[t.unit]
        return np.floor_divide(raw, per_second)
    if pa.types.is_integer(t):
        return to_int(values, what, path, lines)
    if pa.types.is_floating(t):
        return to_seconds(to_float(values, what, path, lines), what, path, lines)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return parse_datetimes(values, None, what, path, lines)
    raise DataError(f"{what} has an unsupported type {t}", path)


def ids(values: pa.Array | np.ndarray, what: str, path: Path, lines: np.ndarray) -> pd.Categorical:
    """Map raw ids to a :class:`pandas.Categorical` with sorted categories.

    String ids that are all canonical integers (no sign, no leading zeros) become integer
    categories, so they sort numerically; others stay strings. Empty or missing ids raise.
    """
    if isinstance(values, np.ndarray):
        values = pa.array(values)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    fail_if(pc.is_null(values), lines, path, f"missing {what} id")
    if pa.types.is_integer(values.type) and not pa.types.is_uint64(values.type):
        return _int_categorical(np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64))
    values = as_text(values, f"{what} id", path)
    fail_if(pc.equal(values, ""), lines, path, f"empty {what} id")
    as_int = _canonical_ints(values)
    if as_int is not None:
        return _int_categorical(as_int)
    encoded = pc.dictionary_encode(values)
    cats = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    return _sorted_categorical(codes, cats)


def _canonical_ints(values: pa.Array) -> np.ndarray | None:
    """The ids as int64 if every one is a plain non-negative integer without leading zeros."""
    if not len(values) or not pc.all(pc.ascii_is_decimal(values)).as_py():
        return None
    leading_zero = pc.and_(pc.starts_with(values, "0"), pc.not_equal(values, "0"))
    if pc.any(leading_zero).as_py() or pc.max(pc.utf8_length(values)).as_py() > 18:
        return None
    return np.asarray(pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _int_categorical(arr: np.ndarray) -> pd.Categorical:
    codes, uniques = pd.factorize(arr)
    return _sorted_categorical(np.asarray(codes, dtype=np.int64), np.asarray(uniques))


def _sorted_categorical(codes: np.ndarray, cats: np.ndarray) -> pd.Categorical:
    order = np.argsort(cats, kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return pd.Categorical.from_codes(rank[codes], categories=pd.Index(cats[order]))


def check_ids(values: pa.Array, what: str, path: Path, lines: np.ndarray) -> None:
    """Raise at the first missing or empty id of one file (before files are combined)."""
    fail_if(pc.is_null(values), lines, path, f"missing {what} id")
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        fail_if(pc.equal(pc.utf8_trim_whitespace(values), ""), lines, path, f"empty {what} id")


def concat_ids(parts: Sequence[pa.Array], what: str, path: Path) -> pa.Array:
    """Concatenate id columns read from several files (mixed types become strings)."""
    if not parts:
        return pa.array([], pa.large_string())
    if all(pa.types.is_integer(p.type) and not pa.types.is_uint64(p.type) for p in parts):
        return pa.concat_arrays([p.cast(pa.int64()) for p in parts])
    return pa.concat_arrays([as_text(p, f"{what} id", path) for p in parts])


def explode(lists: pa.Array, empty_ok: bool = True) -> tuple[pa.Array, np.ndarray]:
    """Flatten a list column, returning the values and the row each came from.

    Null lists count as empty; empty string tokens (from stray separators) are dropped unless
    ``empty_ok`` is False, in which case the caller checks them.
    """
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    values = pc.list_flatten(lists)
    parents = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), np.int64)
    if empty_ok and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = pc.utf8_trim_whitespace(values)
        keep = pc.not_equal(values, "")
        if not pc.all(keep).as_py() and len(values):
            mask = np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)
            values = values.filter(pa.array(mask))
            parents = parents[mask]
    return values, parents


def split_list(values: pa.Array, sep: str | None) -> pa.Array:
    """Split a string column into lists on ``sep`` (``None``: any whitespace)."""
    values = values.cast(pa.large_string())
    if sep is None:
        return pc.utf8_split_whitespace(values)
    return pc.split_pattern(values, sep)


def int_lists_from_text(values: pa.Array) -> pa.Array:
    """Lists of integers written as text, e.g. ``"[1, 2, 3]"`` or ``"[1 2\\n 3]"``."""
    return pc.split_pattern_regex(values.cast(pa.large_string()), r"[^0-9-]+")


# --------------------------------------------------------------------------------------------------
# Parquet


def read_parquet(
    path: Path, columns: Sequence[str], optional: Sequence[str] = ()
) -> tuple[dict[str, pa.Array], np.ndarray]:
    """Read some columns of a Parquet file (or a folder of Parquet parts).

    Returns the columns (combined into single arrays) and the 1-based row numbers.
    """
    try:
        if path.is_dir():
            schema = pq.ParquetDataset(path).schema
        else:
            schema = pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"not a readable Parquet file ({_short(exc)})", path) from None
    names = list(schema.names)
    missing = [c for c in columns if c not in names]
    if missing:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise DataError(
            f"missing column(s) {', '.join(missing)} (found: {shown}); is this the right file and format?",
            path,
        )
    wanted = [*columns, *(c for c in optional if c in names and c not in columns)]
    try:
        table = pq.read_table(path, columns=wanted)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"not a readable Parquet file ({_short(exc)})", path) from None
    out = {c: table.column(c).combine_chunks() for c in wanted}
    return out, np.arange(1, table.num_rows + 1, dtype=np.int64)


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 200 else first[:200] + "..."


def is_parquet(path: Path) -> bool:
    """Whether ``path`` is a Parquet file or a folder of Parquet parts."""
    if path.is_dir():
        return any(path.glob("*.parquet"))
    return path.suffix.lower() in (".parquet", ".pq")


# --------------------------------------------------------------------------------------------------
# sessions


def day_keys(timestamp: np.ndarray, utc_offset_hours: float = 0.0) -> np.ndarray:
    """Calendar day of each Unix time, in a time zone ``utc_offset_hours`` east of UTC."""
    shifted = timestamp + np.int64(round(utc_offset_hours * 3600))
    return np.floor_divide(shifted, DAY)


def gap_keys(user: np.ndarray, timestamp: np.ndarray, gap: float) -> np.ndarray:
    """Session keys that start a new session when a user is idle for more than ``gap`` seconds."""
    order = np.lexsort((timestamp, user))
    u, t = user[order], timestamp[order]
    new = np.ones(order.size, dtype=bool)
    if order.size > 1:
        new[1:] = (u[1:] != u[:-1]) | ((t[1:] - t[:-1]) > gap)
    keys = np.empty(order.size, dtype=np.int64)
    keys[order] = np.cumsum(new) - 1
    return keys


def time_keys(
    user: np.ndarray,
    timestamp: np.ndarray,
    session_gap: float | None,
    utc_offset_hours: float,
    path: Path,
) -> np.ndarray:
    """Per-day keys (``session_gap=None``) or time-gap keys (``session_gap`` in seconds)."""
    if session_gap is None:
        return day_keys(timestamp, utc_offset_hours)
    if not np.isfinite(session_gap) or session_gap < 0:
        raise DataError(f"session_gap must be a non-negative number of seconds, not {session_gap}")
    return gap_keys(user, timestamp, session_gap)


def number_sessions(
    user: np.ndarray, key: np.ndarray, timestamp: np.ndarray, kind: np.ndarray | None = None
) -> np.ndarray:
    """Global session ids for the groups ``(user, kind, key)``.

    Sessions are numbered ``0, 1, ...`` by their earliest timestamp (then user, kind and key), so the
    ids are unique across users and increase with time within a user. ``kind`` keeps keys of
    different origins (e.g. history pseudo-sessions and logged sessions) apart.
    """
    n = user.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if kind is None:
        kind = np.zeros(n, dtype=np.int8)
    key_codes, key_uniques = pd.factorize(key)
    n_kinds = int(kind.max()) + 1 if kind.min() >= 0 else None
    span = (int(user.max()) + 1) * (n_kinds or 0) * max(len(key_uniques), 1)
    if user.min() >= 0 and n_kinds is not None and span < 2**62:
        combined = (user.astype(np.int64) * n_kinds + kind) * len(key_uniques) + key_codes
        order = np.argsort(combined)
        sorted_combined = combined[order]
        new = np.ones(n, dtype=bool)
        new[1:] = sorted_combined[1:] != sorted_combined[:-1]
    else:
        order = np.lexsort((key, kind, user))
        u0, c0, k0 = user[order], kind[order], key[order]
        new = np.ones(n, dtype=bool)
        new[1:] = (u0[1:] != u0[:-1]) | (c0[1:] != c0[:-1]) | (k0[1:] != k0[:-1])
    u, c, k = user[order], kind[order], key[order]
    firsts = np.flatnonzero(new)
    starts = np.minimum.reduceat(timestamp[order], firsts)
    rank_order = np.lexsort((k[firsts], c[firsts], u[firsts], starts))
    rank = np.empty(firsts.size, dtype=np.int64)
    rank[rank_order] = np.arange(firsts.size)
    out = np.empty(n, dtype=np.int64)
    out[order] = rank[np.cumsum(new) - 1]
    return out


def repeated_pairs(a: np.ndarray, b: np.ndarray, among: np.ndarray) -> np.ndarray:
    """Rows in ``among`` whose non-negative code pair ``(a, b)`` repeats an earlier such row."""
    idx = np.flatnonzero(among)
    out = np.zeros(len(among), dtype=bool)
    if idx.size < 2:
        return out
    a_i, b_i = a[idx].astype(np.int64), b[idx].astype(np.int64)
    width = int(b_i.max()) + 1
    if (int(a_i.max()) + 1) * width < 2**62:
        dup = pd.Series(a_i * width + b_i).duplicated().to_numpy()
    else:  # pragma: no cover - needs billions of ids
        dup = pd.DataFrame({"a": a_i, "b": b_i}).duplicated().to_numpy()
    out[idx[dup]] = True
    return out


def drop_exposures_of_clicks(table: pd.DataFrame) -> pd.DataFrame:
    """Within each session, drop unclicked rows of an item the user clicked in that session."""
    clicked = table.loc[table["clicked"], ["user", "item", "session"]].drop_duplicates()
    if clicked.empty:
        return table
    marked = table.merge(clicked.assign(_hit=True), on=["user", "item", "session"], how="left")
    drop = marked["_hit"].fillna(False).to_numpy(dtype=bool) & ~table["clicked"].to_numpy()
    return table.loc[~drop].reset_index(drop=True)


def timed_frame(
    user: pa.Array,
    item: pa.Array,
    timestamp: np.ndarray,
    clicked: np.ndarray,
    lines: np.ndarray,
    path: Path,
    session_gap: float | None,
    utc_offset_hours: float,
    item_name: str = "item",
) -> pd.DataFrame:
    """The raw frame of a log whose sessions come from time: a user's UTC day (``session_gap`` None)
    or runs separated by more than ``session_gap`` seconds (see :func:`time_keys`)."""
    user_ids = ids(user, "user", path, lines)
    item_ids = ids(item, item_name, path, lines)
    ucode = np.asarray(user_ids.codes, dtype=np.int64)
    key = time_keys(ucode, timestamp, session_gap, utc_offset_hours, path)
    return frame(user_ids, item_ids, number_sessions(ucode, key, timestamp), timestamp, clicked, lines)


def frame(
    user: pd.Categorical,
    item: pd.Categorical,
    session: np.ndarray,
    timestamp: np.ndarray,
    clicked: np.ndarray,
    line: np.ndarray,
) -> pd.DataFrame:
    """The raw frame a reader returns."""
    return pd.DataFrame(
        {
            "user": user,
            "item": item,
            "session": np.asarray(session, dtype=np.int64),
            "timestamp": np.asarray(timestamp, dtype=np.int64),
            "clicked": np.asarray(clicked, dtype=bool),
            "line": np.asarray(line, dtype=np.int64),
        }
    )


def take(arr: pa.Array, indices: np.ndarray) -> pa.Array:
    """``arr[indices]`` for an Arrow array."""
    return arr.take(pa.array(indices, pa.int64()))


__all__ = [
    "DAY",
    "check_ids",
    "concat_ids",
    "day_keys",
    "decode",
    "drop_exposures_of_clicks",
    "explode",
    "fail_if",
    "find_files",
    "find_one",
    "frame",
    "gap_keys",
    "ids",
    "int_lists_from_text",
    "is_parquet",
    "number_sessions",
    "parse_datetimes",
    "as_text",
    "read_bytes",
    "read_delimited",
    "read_header",
    "read_lines",
    "read_parquet",
    "repeated_pairs",
    "require_rows",
    "split_list",
    "take",
    "time_keys",
    "timestamps_from_arrow",
    "to_flag",
    "to_float",
    "to_int",
    "to_seconds",
]
