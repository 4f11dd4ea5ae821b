"""Fuzzing every dataset reader: each input either reads into a valid ExposureLog or raises a one-line
DataError naming the file (or the folder it lies in); no other exception escapes.

Inputs: random bytes, plausible rows with broken values (huge ids, negative or huge timestamps,
empty lists and ids, wrong labels), wrong delimiters, missing columns and truncated files. Users with
only clicks or only exposures arise from the random labels.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reinforcens.data.formats import read_log
from reinforcens.data.log import ExposureLog
from reinforcens.errors import DataError

#: Examples per reader; raise it (e.g. REINFORCENS_FUZZ_EXAMPLES=2000) for a longer hunt.
FUZZ = settings(
    max_examples=int(os.environ.get("REINFORCENS_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------------------------------
# building blocks: each strategy comes clean (valid values only, so that reads succeed often) or dirty
# (broken values mixed in), chosen once per example

ID_OK = st.one_of(
    st.integers(0, 30).map(str),
    st.sampled_from(["u1", "u2", "N12", "N13", "x_y"]),
    st.integers(10**17, 10**30).map(str),  # huge ids: kept as strings
)
ID_BAD = st.one_of(ID_OK, st.sampled_from(["-3", "007", "x y", "", " ", "é", "a|b", "a,b", '"q"']))
INT_OK = st.one_of(
    st.integers(1_500_000_000, 1_700_000_000).map(str),
    st.integers(-(10**9), 10**12).map(str),  # negative timestamps are allowed
)
INT_BAD = st.one_of(
    INT_OK,
    st.integers(10**17, 10**25).map(str),
    st.integers(-(10**25), -(10**17)).map(str),
    st.sampled_from(["", "1.5", "abc", "-", "1e3", " 7 "]),
)
FLAG_OK = st.sampled_from(["0", "1"])
FLAG_BAD = st.sampled_from(["0", "1", "2", "", "true", "x", "-1"])
NOISE_OK = st.text(alphabet="ab1 -:", max_size=8)
NOISE = st.text(alphabet="ab1,|\t \"'-\\:;\r", max_size=8)


def pick(dirty: bool, ok: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    return bad if dirty else ok


def ids_joined(sep: str, dirty: bool, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.lists(pick(dirty, ID_OK, ID_BAD), min_size=min_size, max_size=4).map(sep.join)


def lines(row: st.SearchStrategy[list[str]], sep: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Rows joined by a (usually right, sometimes wrong) delimiter."""
    return st.tuples(st.lists(row, min_size=0, max_size=12), sep).map(
        lambda rs: "".join(rs[1].join(r) + "\n" for r in rs[0])
    )


def delim(right: str, dirty: bool) -> st.SearchStrategy[str]:
    return st.sampled_from([right] * 4 + [",", "\t", ";", " "]) if dirty else st.just(right)


def mangled(text: st.SearchStrategy[str], dirty: bool) -> st.SearchStrategy[bytes]:
    """Encoded text; when dirty, sometimes truncated or with random bytes appended."""
    if not dirty:
        return text.map(str.encode)
    return st.tuples(
        text, st.integers(0, 10**6), st.sampled_from(["keep", "cut", "junk"]), st.binary(max_size=12)
    ).map(_mangle)


def _mangle(args) -> bytes:
    text, cut, how, junk = args
    data = text.encode()
    if how == "cut" and data:
        return data[: cut % len(data)]
    if how == "junk":
        return data + junk
    return data


def with_header(
    cols: list[str], body: st.SearchStrategy[str], sep: str, dirty: bool
) -> st.SearchStrategy[str]:
    """A header (when dirty, sometimes missing a column or with the wrong delimiter) and rows."""
    dropped = st.sets(st.sampled_from(cols), max_size=1) if dirty else st.just(set())
    header = st.tuples(dropped, delim(sep, dirty)).map(
        lambda t: t[1].join(c for c in cols if c not in t[0]) + "\n"
    )
    return st.tuples(header, body).map("".join)


def clean_or_dirty(make: Callable[[bool], st.SearchStrategy]) -> st.SearchStrategy:
    return st.booleans().flatmap(make)


def check(root: Path, target: Path, fmt: str, **options) -> ExposureLog | None:
    """Read ``target``; a success must be a valid log, a failure a DataError naming a path."""
    try:
        log = read_log(target, fmt, **options)
    except DataError as exc:
        message = str(exc)
        assert exc.path is not None, message
        assert exc.path.startswith(str(root)), message
        assert message.startswith(exc.path), message
        assert "\n" not in message, message
        return None
    n = len(log)
    assert n > 0
    for arr in (log.user, log.item, log.session, log.timestamp, log.clicked):
        assert arr.shape == (n,)
    assert log.user.dtype == np.int64 and log.item.dtype == np.int64
    assert log.clicked.dtype == bool
    assert 0 <= log.user.min() and log.user.max() < log.n_users
    assert 0 <= log.item.min() and log.item.max() < log.n_items
    assert len(np.unique(log.user)) == log.n_users
    return log


def run(files: dict[str, bytes], fmt: str, target: str = "", **options) -> ExposureLog | None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, data in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return check(root, root / target if target else root, fmt, **options)


RANDOM = st.binary(max_size=400)

# --------------------------------------------------------------------------------------------------
# zhihu


def zhihu_text(dirty: bool) -> st.SearchStrategy[bytes]:
    row = st.tuples(
        pick(dirty, ID_OK, ID_BAD),
        ids_joined("|", dirty, min_size=0 if dirty else 1),
        pick(dirty, NOISE_OK, NOISE),
        pick(
            dirty,
            st.sampled_from(["event_click", "list_show"]),
            st.sampled_from(["event_click", "list_show", "show", ""]),
        ),
        pick(dirty, INT_OK, INT_BAD),
    ).map(list)
    return mangled(lines(row, delim(",", dirty)), dirty)


@FUZZ
@given(data=st.one_of(RANDOM, clean_or_dirty(zhihu_text)))
def test_fuzz_zhihu(data):
    run({"log.csv": data}, "zhihu", "log.csv")


# --------------------------------------------------------------------------------------------------
# MIND

TIME_OK = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)).map(
    lambda d: d.strftime("%m/%d/%Y %I:%M:%S %p")
)
TIME_BAD = st.one_of(TIME_OK, st.sampled_from(["", "11/15/2019", "13/40/2019 10:00:00 AM", "yesterday"]))


def mind_text(dirty: bool) -> st.SearchStrategy[bytes]:
    token = st.tuples(pick(dirty, ID_OK, ID_BAD), pick(dirty, FLAG_OK, FLAG_BAD))
    impressions = st.lists(token.map(lambda t: f"{t[0]}-{t[1]}"), min_size=0 if dirty else 1, max_size=4).map(
        " ".join
    )
    row = st.tuples(
        pick(dirty, INT_OK, INT_BAD),
        pick(dirty, ID_OK, ID_BAD),
        pick(dirty, TIME_OK, TIME_BAD),
        ids_joined(" ", dirty),
        impressions,
    ).map(list)
    return mangled(lines(row, delim("\t", dirty)), dirty)


@FUZZ
@given(
    train=st.one_of(RANDOM, clean_or_dirty(mind_text)),
    dev=st.none() | mind_text(False),
    history=st.sampled_from(["session", "none"]),
)
def test_fuzz_mind(train, dev, history):
    files = {"train/behaviors.tsv": train}
    if dev is not None:
        files["dev/behaviors.tsv"] = dev
    run(files, "mind", history=history)


# --------------------------------------------------------------------------------------------------
# KuaiRand

KUAI_COLS = ["user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "tab"]


def kuairand_text(dirty: bool) -> st.SearchStrategy[bytes]:
    row = st.tuples(
        pick(dirty, ID_OK, ID_BAD),
        pick(dirty, ID_OK, ID_BAD),
        pick(
            dirty,
            st.sampled_from(["20220408", "20220409", "19691231"]),
            st.one_of(st.sampled_from(["20220408", "20220431", "0", ""]), INT_BAD),
        ),
        pick(dirty, st.sampled_from(["0900", "2359", "5"]), st.sampled_from(["0900", "2460", "x"])),
        pick(dirty, INT_OK, INT_BAD),
        pick(dirty, FLAG_OK, FLAG_BAD),
        pick(dirty, NOISE_OK, NOISE),
    ).map(list)
    return mangled(with_header(KUAI_COLS, lines(row, delim(",", dirty)), ",", dirty), dirty)


@FUZZ
@given(data=st.one_of(RANDOM, clean_or_dirty(kuairand_text)), gap=st.sampled_from([None, 0, 60.0]))
def test_fuzz_kuairand(data, gap):
    run({"data/log_standard_x.csv": data}, "kuairand", session_gap=gap)


# --------------------------------------------------------------------------------------------------
# ZhihuRec


def zhihurec_text(dirty: bool) -> st.SearchStrategy[bytes]:
    row = st.tuples(
        pick(dirty, ID_OK, ID_BAD),
        pick(dirty, ID_OK, ID_BAD),
        pick(dirty, INT_OK, INT_BAD),
        st.one_of(st.just("0"), pick(dirty, INT_OK, INT_BAD)),
    ).map(list)
    return mangled(lines(row, delim(",", dirty)), dirty)


@FUZZ
@given(data=st.one_of(RANDOM, clean_or_dirty(zhihurec_text)), gap=st.sampled_from([None, 1800.0]))
def test_fuzz_zhihurec(data, gap):
    run({"inter_impression.csv": data}, "zhihurec", session_gap=gap)


# --------------------------------------------------------------------------------------------------
# Trivago

TRIVAGO_COLS = ["user_id", "session_id", "timestamp", "action_type", "reference", "impressions"]


def trivago_text(dirty: bool) -> st.SearchStrategy[bytes]:
    row = st.tuples(
        pick(dirty, ID_OK, ID_BAD),
        pick(dirty, ID_OK, ID_BAD),
        pick(dirty, INT_OK, INT_BAD),
        st.sampled_from(["clickout item", "clickout item", "interaction item image"]),
        pick(dirty, ID_OK, st.one_of(ID_BAD, st.just('"Berlin, Germany"'))),
        ids_joined("|", dirty),
    ).map(list)
    return mangled(with_header(TRIVAGO_COLS, lines(row, delim(",", dirty)), ",", dirty), dirty)


@FUZZ
@given(
    data=st.one_of(RANDOM, clean_or_dirty(trivago_text)),
    session=st.sampled_from(["session_id", "clickout"]),
)
def test_fuzz_trivago(data, session):
    run({"train.csv": data}, "trivago", session=session)


# --------------------------------------------------------------------------------------------------
# RecBole

RECBOLE_COLS = ["user_id:token", "item_id:token", "rating:float", "timestamp:float", "label:float"]


def recbole_text(dirty: bool) -> st.SearchStrategy[bytes]:
    row = st.tuples(
        pick(dirty, ID_OK, ID_BAD),
        pick(dirty, ID_OK, ID_BAD),
        pick(dirty, st.sampled_from(["1", "4.5", "5"]), st.sampled_from(["1", "4.5", "x", ""])),
        pick(dirty, INT_OK, st.one_of(INT_BAD, st.just("1e400"))),
        pick(dirty, FLAG_OK, FLAG_BAD),
    ).map(list)
    return mangled(with_header(RECBOLE_COLS, lines(row, delim("\t", dirty)), "\t", dirty), dirty)


@FUZZ
@given(
    data=st.one_of(RANDOM, clean_or_dirty(recbole_text)),
    threshold=st.sampled_from([None, 4.0]),
)
def test_fuzz_recbole(data, threshold):
    run({"x.inter": data}, "recbole", threshold=threshold)


# --------------------------------------------------------------------------------------------------
# ratings

RATING_OK = st.sampled_from(["1", "2", "3", "4", "5", "2.5"])
RATING_BAD = st.sampled_from(["0", "1", "4", "-1", "x", "1e999"])


def ratings_text(dirty: bool) -> st.SearchStrategy[bytes]:
    rating = pick(dirty, RATING_OK, RATING_BAD)
    triplets = lines(
        st.tuples(pick(dirty, ID_OK, ID_BAD), pick(dirty, ID_OK, ID_BAD), rating).map(list),
        delim("\t", dirty),
    )
    width = st.integers(5, 7) if not dirty else st.integers(1, 6)
    matrix = width.flatmap(
        lambda w: lines(
            st.lists(st.sampled_from(["0", "0"]) | rating, min_size=w, max_size=w if not dirty else 7),
            delim(" ", dirty),
        )
    )
    return mangled(st.one_of(triplets, matrix), dirty)


@FUZZ
@given(
    train=st.one_of(RANDOM, clean_or_dirty(ratings_text)),
    test=clean_or_dirty(ratings_text),
    sessions=st.sampled_from([1, 3, 5]),
)
def test_fuzz_ratings(train, test, sessions):
    run({"train.txt": train, "test.txt": test}, "ratings", train_sessions=sessions)


# --------------------------------------------------------------------------------------------------
# ContentWise (CSV version)

CW_INTER_COLS = ["utc_ts_milliseconds", "user_id", "series_id", "recommendation_id"]
CW_DIRECT_COLS = ["recommendation_id", "recommended_series_list"]


def contentwise_inter(dirty: bool) -> st.SearchStrategy[bytes]:
    row = st.tuples(
        pick(dirty, INT_OK, INT_BAD),
        pick(dirty, ID_OK, ID_BAD),
        pick(dirty, st.integers(0, 9).map(str), ID_BAD),
        st.sampled_from(["-1", "1", "2", "3"]) if not dirty else st.sampled_from(["-1", "1", "x"]),
    ).map(list)
    return mangled(with_header(CW_INTER_COLS, lines(row, delim(",", dirty)), ",", dirty), dirty)


def contentwise_direct(dirty: bool) -> st.SearchStrategy[bytes]:
    series = st.lists(st.integers(0, 9) if not dirty else st.integers(-5, 10**20), max_size=4).map(
        lambda xs: '"[' + " ".join(map(str, xs)) + ']"'
    )
    row = st.tuples(
        st.sampled_from(["1", "2", "3"]) if not dirty else st.sampled_from(["1", "-1", "x"]),
        series if not dirty else series | NOISE,
    ).map(list)
    return mangled(with_header(CW_DIRECT_COLS, lines(row, delim(",", dirty)), ",", dirty), dirty)


@FUZZ
@given(
    inter=st.one_of(RANDOM, clean_or_dirty(contentwise_inter)),
    direct=clean_or_dirty(contentwise_direct),
    non_direct=st.booleans(),
)
def test_fuzz_contentwise(inter, direct, non_direct):
    files = {"interactions.csv": inter, "impressions-direct-link.csv": direct}
    if non_direct:
        files["impressions-non-direct-link.csv"] = direct.replace(b"recommendation_id", b"user_id", 1)
    run(files, "contentwise", non_direct=non_direct)


# --------------------------------------------------------------------------------------------------
# EB-NeRD (Parquet)


def eb_rows(dirty: bool) -> st.SearchStrategy[list[dict]]:
    articles = st.lists(st.integers(0, 50), max_size=4)
    if dirty:
        articles = st.none() | st.lists(st.integers(0, 2**31 - 1) | st.none(), max_size=4)
    when = st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2100, 1, 1))
    row = st.fixed_dictionaries(
        {
            "user_id": st.integers(0, 5) if not dirty else st.integers(0, 2**32 - 1) | st.none(),
            "impression_time": when if not dirty else when | st.none(),
            "article_ids_inview": articles,
            "article_ids_clicked": articles,
            "session_id": st.integers(0, 2**32 - 1),
        }
    )
    return st.lists(row, max_size=8)


EB_SCHEMA = pa.schema(
    [
        ("user_id", pa.uint32()),
        ("impression_time", pa.timestamp("us")),
        ("article_ids_inview", pa.list_(pa.int32())),
        ("article_ids_clicked", pa.list_(pa.int32())),
        ("session_id", pa.uint32()),
    ]
)
HIST_ROW = st.fixed_dictionaries(
    {
        "user_id": st.integers(0, 5),
        "pairs": st.lists(
            st.tuples(
                st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2100, 1, 1)),
                st.integers(0, 50),
            ),
            max_size=3,
        ),
    }
)


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


@FUZZ
@given(
    rows=clean_or_dirty(eb_rows),
    history=st.lists(HIST_ROW, max_size=4),
    drop=st.sampled_from([None, None, "article_ids_clicked", "session_id", "user_id"]),
    mode=st.sampled_from(["session", "day", "none"]),
    corrupt=st.booleans(),
)
def test_fuzz_ebnerd(rows, history, drop, mode, corrupt):
    table = pa.Table.from_pylist(rows, schema=EB_SCHEMA)
    if drop:
        table = table.drop([drop])
    hist = pa.table(
        {
            "user_id": pa.array([h["user_id"] for h in history], pa.uint32()),
            "impression_time_fixed": pa.array(
                [[p[0].replace(tzinfo=UTC) for p in h["pairs"]] for h in history],
                pa.list_(pa.timestamp("us", tz="UTC")),
            ),
            "article_id_fixed": pa.array([[p[1] for p in h["pairs"]] for h in history], pa.list_(pa.int32())),
        }
    )
    data = _parquet(table)
    if corrupt:
        data = data[: len(data) // 2]
    run(
        {"train/behaviors.parquet": data, "train/history.parquet": _parquet(hist)},
        "ebnerd",
        history=mode,
    )


@FUZZ
@given(data=RANDOM)
def test_fuzz_parquet_bytes(data):
    run({"train/behaviors.parquet": data}, "ebnerd")
    run({"CW10M/interactions/part-0.parquet": data, "CW10M/impressions-direct-link.csv": b"x"}, "contentwise")


# --------------------------------------------------------------------------------------------------
# targeted cases the random search may miss


def _read(files: dict[str, bytes], fmt: str, **options) -> ExposureLog | None:
    return run(files, fmt, **options)


CASES: list[tuple[str, dict[str, bytes], Callable[[ExposureLog | None], bool]]] = [
    # users with only clicks, users with only exposures
    (
        "zhihu",
        {"a.csv": b"u1,i1,0,event_click,1\nu2,i1|i2,0,list_show,2\n"},
        lambda log: log is not None and log.clicked.sum() == 1,
    ),
    # huge ids stay strings, leading zeros are not merged with plain numbers
    (
        "zhihu",
        {"a.csv": b"99999999999999999999999,007,0,event_click,1\nu,7,0,list_show,2\n"},
        lambda log: log is not None and log.n_items == 2,
    ),
    # negative timestamps are fine
    (
        "zhihurec",
        {"inter_impression.csv": b"1,2,-100,0\n1,3,-50,-40\n"},
        lambda log: log is not None and log.timestamp.min() == -100,
    ),
    # timestamps too large for int64 are refused
    ("zhihurec", {"inter_impression.csv": b"1,2,9999999999999999999,0\n"}, lambda log: log is None),
    # an empty shown list is refused in the Zhihu format, skipped in MIND's history
    ("zhihu", {"a.csv": b"u1,,0,list_show,1\n"}, lambda log: log is None),
    (
        "mind",
        {"behaviors.tsv": b"1\tU1\t11/15/2019 10:22:32 AM\t\tN1-1\n"},
        lambda log: log is not None and len(log) == 1,
    ),
    # only blank lines
    ("zhihurec", {"inter_impression.csv": b"\n\n  \n"}, lambda log: log is None),
    # a header only
    (
        "trivago",
        {"train.csv": b"user_id,session_id,timestamp,action_type,reference,impressions\n"},
        lambda log: log is None,
    ),
]


def test_targeted_cases():
    for fmt, files, ok in CASES:
        assert ok(_read(files, fmt)), (fmt, files)
