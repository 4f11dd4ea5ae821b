from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reinforcens.data.formats import available_formats, read_log
from reinforcens.data.log import ExposureLog
from reinforcens.errors import DataError


def write(tmp_path, text: str, name: str = "log.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_string_ids_are_mapped_and_kept(tmp_path):
    p = write(tmp_path, "user,item,session,timestamp,clicked\nbob,x,1,10,1\nann,y,1,10,0\nbob,y,2,20,0\n")
    log = read_log(p)
    assert log.n_users == 2 and log.n_items == 2
    assert list(log.user_ids[log.user]) == ["bob", "ann", "bob"]
    assert list(log.item_ids[log.item]) == ["x", "y", "y"]
    assert log.clicked.tolist() == [True, False, False]
    assert log.to_frame(raw_ids=True)["user"].tolist() == ["bob", "ann", "bob"]


def test_custom_columns_tsv_and_parquet(tmp_path):
    p = write(tmp_path, "uid\tiid\tsid\tts\tclick\n1\t5\t1\t3\ttrue\n2\t5\t1\t4\tfalse\n", "log.tsv")
    log = read_log(p, user_col="uid", item_col="iid", session_col="sid", timestamp_col="ts",
                   clicked_col="click")
    assert log.clicked.tolist() == [True, False]
    frame = pd.DataFrame({"user": [1, 2], "item": [3, 3], "session": [1, 1], "timestamp": [0, 1],
                          "clicked": [1, 0]})
    frame.to_parquet(tmp_path / "log.parquet")
    log2 = read_log(tmp_path / "log.parquet")
    assert len(log2) == 2 and log2.n_items == 1


@pytest.mark.parametrize(
    ("text", "needle", "line"),
    [
        ("user,item,session,timestamp,clicked\n1,2,1,5,1\n1,3,x,5,0\n", "session is not an integer", 3),
        ("user,item,session,timestamp,clicked\n1,2,1,5,1\n1,3,1,5,2\n", "clicked must be 0 or 1", 3),
        ("user,item,session,timestamp,clicked\n1,2,1,5,1\n,3,1,5,0\n", "missing user id", 3),
        ("user,item,session,timestamp,clicked\n1,2,1,5,1\n1,,1,5,0\n", "missing item id", 3),
        ("user,item,session,timestamp,clicked\n1,2,1.5,5,1\n", "session is not an integer", 2),
        ("user,item,session,timestamp,clicked\n1,2,1,abc,1\n", "timestamp is not an integer", 2),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, text, needle, line):
    p = write(tmp_path, text)
    with pytest.raises(DataError) as err:
        read_log(p)
    assert needle in str(err.value)
    assert f"{p}:{line}" in str(err.value)


def test_missing_column_empty_file_and_unknown_format(tmp_path):
    p = write(tmp_path, "user,item,clicked\n1,2,1\n")
    with pytest.raises(DataError, match="missing column.*'session'"):
        read_log(p)
    with pytest.raises(DataError, match="empty"):
        read_log(write(tmp_path, "", "empty.csv"))
    with pytest.raises(DataError, match="no rows"):
        read_log(write(tmp_path, "user,item,session,timestamp,clicked\n", "header.csv"))
    with pytest.raises(DataError, match="unknown format"):
        read_log(p, "nope")
    with pytest.raises(DataError, match="no such file"):
        read_log(tmp_path / "absent.csv")
    assert "table" in available_formats()


def test_from_frame_without_timestamp_orders_by_session():
    frame = pd.DataFrame({"user": [1, 1], "item": [1, 2], "session": [2, 1], "clicked": [0, 1]})
    log = ExposureLog.from_frame(frame)
    assert np.array_equal(log.timestamp, [0, 0])
