"""Regression tests for hostile-input defects of the generic ``table`` reader.

Each test goes through the path a user takes (``read_log(path, "table")`` or ``reinforcens prepare``)
and checks the result against an oracle computed from the raw values with plain Python.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reinforcens.cli import main
from reinforcens.data.formats import read_log
from reinforcens.data.log import ExposureLog
from reinforcens.errors import DataError

HEADER = ["user", "item", "session", "timestamp", "clicked"]
BIG = [2**53 + 1, 2**53 + 2, 2**53 + 3, 2**53 + 4]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """Write a CSV file byte for byte (no quoting), so ids keep NULs and blanks as given."""
    lines = [",".join(header), *(",".join(r) for r in rows)]
    path.write_bytes(("\n".join(lines) + "\n").encode())
    return path


def prepare_fails(capsys, path: Path, tmp_path: Path, *extra: str) -> str:
    """Run ``reinforcens prepare`` on ``path``: it must exit 2 with a one-line error; return it."""
    out = tmp_path / "prepared"
    code = main(["prepare", "--input", str(path), "--format", "table", "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert str(path) in err
    assert not out.exists()
    return err


# --------------------------------------------------------------------------------------------------
# 1. duplicated header columns


def _dup_csv(tmp_path: Path) -> tuple[Path, list[str], str]:
    rows = [["1", "2", "3", "4", "1", "0"], ["1", "3", "3", "4", "0", "1"]]
    return write_csv(tmp_path / "dup.csv", [*HEADER, "clicked"], rows), [], "clicked"


def _renamed_csv(tmp_path: Path) -> tuple[Path, list[str], str]:
    rows = [["u1", "x1", "i1", "3", "4", "1"], ["u2", "x2", "i2", "3", "4", "0"]]
    path = write_csv(tmp_path / "renamed.csv", ["u", *HEADER], rows)
    return path, ["--user-col", "u"], "user"


def _renamed_parquet(tmp_path: Path) -> tuple[Path, list[str], str]:
    table = pa.table(
        {
            "u": ["u1", "u2"],
            "user": ["x1", "x2"],
            "item": ["i1", "i2"],
            "session": [3, 3],
            "timestamp": [4, 4],
            "clicked": [True, False],
        }
    )
    path = tmp_path / "renamed.parquet"
    pq.write_table(table, path)
    return path, ["--user-col", "u"], "user"


def _dup_parquet(tmp_path: Path) -> tuple[Path, list[str], str]:
    columns = [["u1", "u2"], ["i1", "i2"], [3, 3], [4, 4], [True, False], [False, True]]
    table = pa.table([pa.array(c) for c in columns], names=[*HEADER, "clicked"])
    path = tmp_path / "dup.parquet"
    pq.write_table(table, path)
    return path, [], "clicked"


@pytest.mark.parametrize("make", [_dup_csv, _renamed_csv, _dup_parquet, _renamed_parquet])
def test_duplicated_header_column_is_refused(tmp_path, capsys, make):
    path, extra, column = make(tmp_path)
    err = prepare_fails(capsys, path, tmp_path, *extra)
    assert "more than once" in err and repr(column) in err
    options = {"user_col": extra[1]} if extra else {}
    with pytest.raises(DataError, match="more than once") as info:
        read_log(path, "table", **options)
    assert info.value.path == str(path)


# --------------------------------------------------------------------------------------------------
# 2. whitespace-only ids and ids with a NUL byte


def _rows_with(column: str, value: str) -> list[list[str]]:
    """Three rows; the third (line 4 of the file) has ``value`` in ``column``."""
    rows = [["u1", "i1", "1", "10", "1"], ["u1", "i2", "1", "10", "0"], ["u2", "i1", "2", "20", "1"]]
    rows[2][HEADER.index(column)] = value
    return rows


def _parquet_with(path: Path, column: str, value: str, string_type: pa.DataType) -> Path:
    """The rows of :func:`_rows_with` as Parquet: ids as ``string_type``, times and clicks as ints."""
    rows = _rows_with(column, value)
    columns = {}
    for k, name in enumerate(HEADER):
        raw = [r[k] for r in rows]
        if name in ("timestamp", "clicked"):
            columns[name] = pa.array([int(v) for v in raw], pa.int64())
        else:
            columns[name] = pa.array(raw, string_type)
    pq.write_table(pa.table(columns), path)
    return path


def _check_refused(path: Path, column: str, line: int) -> None:
    with pytest.raises(DataError) as info:
        read_log(path, "table")
    err = info.value
    assert err.path == str(path) and err.line == line, str(err)
    assert column in str(err) and "\n" not in str(err)


BLANKS = ["   ", "\t", " \t "]


@pytest.mark.parametrize("blank", BLANKS)
@pytest.mark.parametrize("column", ["user", "item", "session"])
def test_whitespace_only_id_is_refused_for_string_dtype(tmp_path, capsys, column, blank):
    csv_path = write_csv(tmp_path / "log.csv", HEADER, _rows_with(column, f'"{blank}"'))
    _check_refused(csv_path, column, 4)
    prepare_fails(capsys, csv_path, tmp_path)
    for string_type in (pa.string(), pa.large_string()):
        pq_path = _parquet_with(tmp_path / f"log_{string_type}.parquet", column, blank, string_type)
        _check_refused(pq_path, column, 3)


@pytest.mark.parametrize("dtype", [object, "str", "string[python]", "string[pyarrow]"])
@pytest.mark.parametrize("column", ["user", "item"])
def test_whitespace_only_id_is_refused_for_every_string_dtype_of_a_frame(column, dtype):
    frame = pd.DataFrame(
        {
            "user": ["u1", "u1", "u2"],
            "item": ["i1", "i2", "i1"],
            "session": [1, 1, 2],
            "timestamp": [10, 10, 20],
            "clicked": [1, 0, 1],
            "line": [2, 3, 4],
        }
    )
    frame[column] = pd.Series(["a", "b", "  "], dtype=dtype)
    assert frame[column].dtype == pd.Series(["a"], dtype=dtype).dtype
    with pytest.raises(DataError) as info:
        ExposureLog.from_frame(frame, source="mem.csv")
    assert info.value.line == 4 and column in str(info.value)


@pytest.mark.parametrize("nul", ["a\x00b", "\x00", "7\x00"])
@pytest.mark.parametrize("column", ["user", "item", "session"])
def test_nul_byte_id_is_refused(tmp_path, capsys, column, nul):
    csv_path = write_csv(tmp_path / "log.csv", HEADER, _rows_with(column, nul))
    _check_refused(csv_path, column, 4)
    assert "NUL" in prepare_fails(capsys, csv_path, tmp_path)
    for string_type in (pa.string(), pa.large_string()):
        pq_path = _parquet_with(tmp_path / f"log_{string_type}.parquet", column, nul, string_type)
        _check_refused(pq_path, column, 3)


# --------------------------------------------------------------------------------------------------
# 3. integer ids above 2**53


def _big_rows(column: str) -> list[list[str]]:
    """One row per value of BIG in ``column``; the other columns small and fixed."""
    rows = []
    for k, value in enumerate(BIG):
        row = {"user": "7", "item": str(k), "session": str(k), "timestamp": str(k), "clicked": "1"}
        row[column] = str(value)
        rows.append([row[c] for c in HEADER])
    return rows


def _raw_values(log: ExposureLog, column: str) -> list[int]:
    if column == "user":
        return [int(v) for v in log.user_ids[log.user]]
    if column == "item":
        return [int(v) for v in log.item_ids[log.item]]
    return [int(v) for v in getattr(log, column)]


@pytest.mark.parametrize("column", ["session", "timestamp"])
def test_session_ids_above_2_53_stay_distinct(tmp_path, column):
    csv_path = write_csv(tmp_path / "log.csv", HEADER, _big_rows(column))
    text = pa.table({c: [r[k] for r in _big_rows(column)] for k, c in enumerate(HEADER)})
    pq_path = tmp_path / "text.parquet"
    pq.write_table(text, pq_path)  # every column a string column, as some exports write them
    for path in (csv_path, pq_path):
        log = read_log(path, "table")
        assert _raw_values(log, column) == BIG, path
        assert len(set(_raw_values(log, column))) == len(set(BIG))


@pytest.mark.parametrize("int_type", [pa.int64(), pa.uint64()])
@pytest.mark.parametrize("column", ["user", "item", "session", "timestamp"])
def test_integer_parquet_ids_above_2_53_stay_exact(tmp_path, column, int_type):
    rows = _big_rows(column)
    table = pa.table({c: pa.array([int(r[k]) for r in rows], int_type) for k, c in enumerate(HEADER)})
    path = tmp_path / "ints.parquet"
    pq.write_table(table, path)
    log = read_log(path, "table")
    assert _raw_values(log, column) == BIG


@pytest.mark.parametrize("column", ["user", "item"])
def test_integer_text_ids_above_2_53_stay_distinct(tmp_path, column):
    log = read_log(write_csv(tmp_path / "log.csv", HEADER, _big_rows(column)), "table")
    assert _raw_values(log, column) == BIG
    assert (log.n_users if column == "user" else log.n_items) == len(set(BIG))


# ---------------------------------------------------------------------------------- line numbers
def test_error_after_blank_lines_names_the_right_line(tmp_path, capsys):
    """read_csv skips blank lines, and the line column was the row index + 2: an error after a blank
    line named a line before the bad one."""
    from reinforcens.cli import main

    path = tmp_path / "log.csv"
    path.write_text("\nuser,item,session,timestamp,clicked\r\n1,2,1,5,1\n\n  \n1,3,1,5,7\n")
    assert main(["prepare", "--input", str(path), "--out", str(tmp_path / "p")]) == 2
    assert f"{path}:6: clicked" in capsys.readouterr().err


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(st.sampled_from(["1,2,1,5,1", "", " ", "\t", "\r", " \t\r", "3,4,1,5,0"]), max_size=30),
    chunk=st.integers(1, 7),
    sep=st.sampled_from([",", "\t"]),
)
def test_data_line_numbers_match_a_line_by_line_count(tmp_path_factory, lines, chunk, sep):
    from reinforcens.data.formats.table import _data_lines

    path = tmp_path_factory.mktemp("lines") / "log.csv"
    body = ["user,item,session,timestamp,clicked", *lines]
    path.write_bytes("\n".join(body).encode())
    # oracle: a line is skipped if it holds only whitespace other than the separator
    kept = [n for n, text in enumerate(body, 1) if text.replace(sep, "x").strip(" \t\r")]
    got = _data_lines(path, sep, len(kept) - 1, chunk=chunk)
    assert got.tolist() == kept[1:]


def test_uint64_session_ids_from_2_63_are_refused_not_wrapped(tmp_path, capsys):
    """A Parquet uint64 session id of 2**63 or more became a negative int64 (sessions without a
    timestamp are ordered by their id, so the order of a user's sessions flipped without a word)."""
    path = tmp_path / "log.parquet"
    table = pa.table({
        "user": ["a", "a", "a"], "item": ["x", "y", "z"],
        "session": pa.array([5, 2**63, 2**63 + 1], type=pa.uint64()), "clicked": [1, 1, 1],
    })  # fmt: skip
    pq.write_table(table, path)
    assert main(["prepare", "--input", str(path), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: session is out of range" in err


def test_one_column_for_two_roles_is_refused_by_name(tmp_path, capsys):
    """--user-col x --item-col x said "missing column 'x'" of a file that has it."""
    path = tmp_path / "log.csv"
    path.write_text("x,session,timestamp,clicked\n1,1,5,1\n")
    argv = ["prepare", "--input", str(path), "--out", str(tmp_path / "p"),
            "--user-col", "x", "--item-col", "x"]  # fmt: skip
    assert main(argv) == 2
    assert "column 'x' is given as the user and item column" in capsys.readouterr().err
