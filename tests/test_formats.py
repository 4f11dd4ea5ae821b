"""Each dataset reader on its hand-made fixture (tests/fixtures/formats), and on broken variants."""

from __future__ import annotations

import csv
import gzip
import importlib
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reinforcens.data.formats import available_formats, read_log
from reinforcens.errors import DataError

FIX = Path(__file__).parent / "fixtures" / "formats"

FIXTURES = {
    "zhihu": ("zhihu", {}),
    "mind": ("mind", {}),
    "kuairand": ("kuairand", {}),
    "zhihurec": ("zhihurec", {}),
    "ebnerd": ("ebnerd", {}),
    "trivago": ("trivago", {}),
    "contentwise": ("contentwise", {}),
    "contentwise-csv": ("contentwise", {}),
    "recbole/toy": ("recbole", {"threshold": 4}),
    "movielens": ("movielens", {}),
    "ratings/coat": ("ratings", {}),
    "ratings/yahoo": ("ratings", {}),
}


def rows(path: Path | str, fmt: str, **options) -> pd.DataFrame:
    """The log as a frame with raw ids."""
    return read_log(path, fmt, **options).to_frame(raw_ids=True)


def raw(path: Path | str, fmt: str, **options) -> pd.DataFrame:
    """The reader's own frame (with the ``line`` column), ids as raw values."""
    module = importlib.import_module(f"reinforcens.data.formats.{fmt}")
    frame = getattr(module, f"read_{fmt}")(Path(path), **options)
    return frame.assign(user=frame["user"].astype(object), item=frame["item"].astype(object))


def unix(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


def raises_at(path: Path, line: int | None, match: str):
    """pytest.raises for a DataError naming ``path`` (and ``line``)."""
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    return pytest.raises(DataError, match=_escape(where) + ".*" + match)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


# --------------------------------------------------------------------------------------------------
# shared properties


def test_all_formats_registered():
    assert {
        "zhihu",
        "mind",
        "kuairand",
        "zhihurec",
        "ebnerd",
        "trivago",
        "contentwise",
        "recbole",
        "movielens",
        "ratings",
    } <= set(available_formats())


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_is_big_enough_for_end_to_end_use(name):
    fmt, options = FIXTURES[name]
    log = read_log(FIX / name, fmt, **options)
    df = log.to_frame()
    sessions = df.groupby("user")["session"].nunique()
    assert (sessions >= 4).sum() >= 6
    users_per_item = df.groupby("item")["user"].nunique()
    assert (users_per_item >= 2).sum() >= 3
    assert df["clicked"].any() and (~df["clicked"]).any()
    # session ids are global and increase with time within each user
    assert df.groupby("session")["user"].nunique().max() == 1
    firsts = df.groupby(["user", "session"])["timestamp"].min().reset_index()
    for _, g in firsts.groupby("user"):
        order = g.sort_values("session")["timestamp"].to_numpy()
        assert np.all(np.diff(order) >= 0)


# --------------------------------------------------------------------------------------------------
# zhihu


def _zhihu_oracle(path: Path):
    clicks, shown = [], []
    for line_no, rec in enumerate(csv.reader(path.read_text().splitlines()), 1):
        user, items, _, event, session = rec
        for it in items.split("|"):
            (clicks if event == "event_click" else shown).append((user, it, int(session), line_no))
    return clicks, shown


def test_zhihu_rows():
    path = FIX / "zhihu" / "zhihu.csv"
    df = rows(path, "zhihu")
    clicks, shown = _zhihu_oracle(path)
    assert len(df) == len(clicks) + len(shown)
    assert int(df["clicked"].sum()) == len(clicks)
    assert (df["timestamp"] == df["session"]).all()
    first = df.iloc[0]
    assert (first["user"], first["item"], first["session"], bool(first["clicked"])) == (
        "z1",
        "q99",
        10,
        True,
    )
    got = sorted(map(tuple, df.loc[~df.clicked, ["user", "item", "session"]].itertuples(index=False)))
    assert got == sorted((u, i, s) for u, i, s, _ in shown)
    # the folder works too
    assert len(rows(FIX / "zhihu", "zhihu")) == len(df)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("z9,q1,0,event_click\n", "expected 5 fields"),
        ("z9,q1,0,event_click,1,2\n", "expected 5 fields"),
        ("z9,q1,0,impression,4\n", "unknown event type 'impression'"),
        ("z9,q1,0,event_click,4.5\n", "session is not an integer"),
        ("z9,,0,list_show,4\n", "empty item"),
        ("z9,q1||q2,0,list_show,4\n", "empty item"),
        (",q1,0,list_show,4\n", "empty user id"),
        ("z9;q1;0;list_show;4\n", "expected 5 fields"),
    ],
)
def test_zhihu_malformed(tmp_path, bad, match):
    path = tmp_path / "log.csv"
    path.write_text("z1,q1,0,list_show,1\nz1,q1,0,event_click,1\n" + bad)
    with raises_at(path, 3, match):
        read_log(path, "zhihu")


def test_zhihu_empty_and_binary(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with raises_at(empty, None, "empty"):
        read_log(empty, "zhihu")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"z1,q1,0,list_show,1\n\xff\xfe\x00garbage\n")
    with raises_at(binary, 2, "not UTF-8"):
        read_log(binary, "zhihu")


# --------------------------------------------------------------------------------------------------
# MIND


def _mind_lines(folder: Path):
    out = []
    for split in ("MINDsmall_train", "MINDsmall_dev"):
        for line in (folder / split / "behaviors.tsv").read_text().splitlines():
            out.append(line.split("\t"))
    return out


def test_mind_rows():
    df = rows(FIX / "mind", "mind")
    lines = _mind_lines(FIX / "mind")
    tokens = [t for rec in lines for t in rec[4].split()]
    histories = {}
    for rec in lines:
        histories.setdefault(rec[1], set()).update(rec[3].split())
    assert len(df) == len(tokens) + sum(map(len, histories.values()))
    assert int(df.clicked.sum()) == sum(t.endswith("-1") for t in tokens) + sum(map(len, histories.values()))
    # the first impression: U1, 11/09/2019 9:07:01 AM, N1023 clicked, N1005 not
    first = df[(df.user == "U1") & (df.timestamp == unix(2019, 11, 9, 9, 7, 1))]
    assert set(first.loc[first.clicked, "item"]) == {"N1023"}
    assert "N1005" in set(first.loc[~first.clicked, "item"])
    # history: one clicked pseudo-session per user, one second before the first impression
    u1 = df[df.user == "U1"]
    hist = u1[u1.session == u1.session.min()]
    assert hist.clicked.all()
    assert set(hist["item"]) == set(lines[0][3].split())
    assert len(hist) == 3  # repeated on every line, kept once
    assert (hist.timestamp == unix(2019, 11, 9, 9, 7, 1) - 1).all()
    # U3 has no history: its sessions are its impressions (4 train + 1 dev)
    assert df[df.user == "U3"].session.nunique() == 5
    assert df[df.user == "U1"].session.nunique() == 6


def test_mind_single_file_and_no_history():
    path = FIX / "mind" / "MINDsmall_train" / "behaviors.tsv"
    df = rows(path, "mind", history="none")
    n_tokens = sum(len(line.split("\t")[4].split()) for line in path.read_text().splitlines())
    assert len(df) == n_tokens
    assert df.groupby("user").session.nunique().eq(4).all()


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("9\tU9\t11/20/2019 9:00:00 AM\t\tN1 N2\n", "not NEWS-0 or NEWS-1.*test split"),
        ("9\tU9\t11/20/2019 9:00:00 AM\t\tN1-2\n", "'N1-2' is not NEWS-0 or NEWS-1"),
        ("9\tU9\t2019-11-20 09:00\t\tN1-1\n", "time is not a date-time"),
        ("9\tU9\t11/20/2019 9:00:00 AM\tN1-1\n", "expected 5 fields"),
        ("9\tU9\t11/20/2019 9:00:00 AM\t\t\n", "empty impression list"),
        ("9\t\t11/20/2019 9:00:00 AM\t\tN1-1\n", "empty user id"),
    ],
)
def test_mind_malformed(tmp_path, bad, match):
    path = tmp_path / "behaviors.tsv"
    path.write_text("1\tU1\t11/15/2019 10:22:32 AM\tN7\tN1-0 N2-1\n" + bad)
    with raises_at(path, 2, match):
        read_log(tmp_path, "mind")


def test_mind_unknown_history_option():
    with pytest.raises(DataError, match="history must be"):
        read_log(FIX / "mind", "mind", history="all")


# --------------------------------------------------------------------------------------------------
# KuaiRand


def test_kuairand_rows():
    df = rows(FIX / "kuairand", "kuairand")
    std = pd.read_csv(FIX / "kuairand" / "data" / "log_standard_4_08_to_4_21_pure.csv")
    rnd = pd.read_csv(FIX / "kuairand" / "data" / "log_random_4_22_to_5_08_pure.csv")
    assert len(df) == len(std) + len(rnd)
    assert int(df.clicked.sum()) == int(std.is_click.sum() + rnd.is_click.sum())
    first = df[(df.user == 0) & (df.item == 503)].iloc[0]
    assert first.timestamp == 1649379600  # time_ms // 1000
    assert bool(first.clicked) is False
    # one session per user and date: 5 standard days + 1 random day
    assert df.groupby("user").session.nunique().eq(6).all()
    no_random = rows(FIX / "kuairand", "kuairand", include_random=False)
    assert len(no_random) == len(std)
    # every row is 5 minutes apart within a day: a 60 s gap splits them, a 600 s gap does not
    assert rows(FIX / "kuairand", "kuairand", session_gap=60).groupby("user").session.nunique().eq(24).all()
    assert rows(FIX / "kuairand", "kuairand", session_gap=600).groupby("user").session.nunique().eq(6).all()


def test_kuairand_without_time_ms(tmp_path):
    std = pd.read_csv(FIX / "kuairand" / "data" / "log_standard_4_08_to_4_21_pure.csv", dtype=str)
    path = tmp_path / "log_standard_x.csv"
    std.drop(columns=["time_ms"]).to_csv(path, index=False)
    df = rows(path, "kuairand")
    full = rows(FIX / "kuairand" / "data" / "log_standard_4_08_to_4_21_pure.csv", "kuairand")
    assert np.array_equal(df.timestamp.to_numpy(), full.timestamp.to_numpy())
    assert df.groupby("user").session.nunique().eq(5).all()


@pytest.mark.parametrize(
    ("edit", "line", "match"),
    [
        (lambda d: d.assign(is_click=d.is_click.where(d.index != 3, "2")), 5, "is_click must be 0"),
        (lambda d: d.assign(time_ms=d.time_ms.where(d.index != 0, "soon")), 2, "not an integer"),
        (lambda d: d.drop(columns=["video_id"]), 1, "missing column.*video_id"),
        (lambda d: d.assign(user_id=d.user_id.where(d.index != 1, "")), 3, "empty user id"),
    ],
)
def test_kuairand_malformed(tmp_path, edit, line, match):
    std = pd.read_csv(FIX / "kuairand" / "data" / "log_standard_4_08_to_4_21_pure.csv", dtype=str)
    path = tmp_path / "log_standard_bad.csv"
    edit(std).to_csv(path, index=False)
    with raises_at(path, line, match):
        read_log(path, "kuairand")


# --------------------------------------------------------------------------------------------------
# ZhihuRec


def test_zhihurec_rows():
    path = FIX / "zhihurec" / "inter_impression.csv"
    raw = pd.read_csv(path, header=None, names=["u", "a", "shown", "click"])
    df = rows(FIX / "zhihurec", "zhihurec")
    assert len(df) == len(raw)
    assert np.array_equal(df.clicked.to_numpy(), (raw.click != 0).to_numpy())
    assert np.array_equal(df.timestamp.to_numpy(), raw.shown.to_numpy())
    assert df.groupby("user").session.nunique().eq(5).all()  # one per Beijing day
    assert rows(path, "zhihurec", session_gap=20).groupby("user").session.nunique().eq(20).all()


def test_zhihurec_header_is_tolerated(tmp_path):
    path = tmp_path / "inter_impression.csv"
    text = (FIX / "zhihurec" / "inter_impression.csv").read_text()
    path.write_text("user_id,answer_id,impression_time,click_time\n" + text)
    df = raw(path, "zhihurec")
    assert len(df) == len(text.splitlines())
    assert df.line.min() == 2


@pytest.mark.parametrize(
    ("bad", "match"),
    [("7,100,1524189600\n", "expected 4 fields"), ("7,100,later,0\n", "impression time is not")],
)
def test_zhihurec_malformed(tmp_path, bad, match):
    path = tmp_path / "inter_impression.csv"
    path.write_text("1,100,1524189600,0\n" + bad)
    with raises_at(path, 2, match):
        read_log(tmp_path, "zhihurec")


# --------------------------------------------------------------------------------------------------
# EB-NeRD


def _ebnerd_tables(split: str):
    folder = FIX / "ebnerd" / split
    return pq.read_table(folder / "behaviors.parquet").to_pandas(), pq.read_table(
        folder / "history.parquet"
    ).to_pandas()


def test_ebnerd_rows():
    df = raw(FIX / "ebnerd", "ebnerd")
    train, train_hist = _ebnerd_tables("train")
    valid, _ = _ebnerd_tables("validation")
    behaviors = pd.concat([train, valid])
    n_shown = sum(len(x) for x in behaviors.article_ids_inview)
    n_clicked = sum(len(x) for x in behaviors.article_ids_clicked)
    n_hist = sum(len(set(x)) for x in train_hist.article_id_fixed)  # validation history: too late
    assert int(df.clicked.sum()) == n_clicked + n_hist
    # a shown article clicked in the same session counts once, as a click
    clicked_in_session = {
        (u, s, a)
        for u, s, arts in zip(
            behaviors.user_id, behaviors.session_id, behaviors.article_ids_clicked, strict=True
        )
        for a in arts
    }
    n_shown_only = sum(
        (u, s, a) not in clicked_in_session
        for u, s, arts in zip(
            behaviors.user_id, behaviors.session_id, behaviors.article_ids_inview, strict=True
        )
        for a in arts
    )
    assert n_shown > n_shown_only
    assert len(df) == n_hist + n_clicked + n_shown_only
    u10 = df[df.user == 10]
    # impression 1's click on 9999 is kept though 9999 was not in view
    assert u10[(u10["item"] == 9999)].clicked.all()
    # history: a pseudo-session before the first impression, 3001 once
    hist = u10[u10.session == u10.session.min()]
    first_impression = int(train.impression_time.min().replace(tzinfo=UTC).timestamp())
    assert hist.clicked.all() and (hist.timestamp == first_impression - 1).all()
    assert (hist["item"] == 3001).sum() == 1
    # the two impressions of day 0 share a session_id
    day0 = u10[u10.timestamp.between(first_impression, first_impression + 3600)]
    assert day0.session.nunique() == 1 and day0.line.nunique() == 2


def test_ebnerd_options():
    by_impression = rows(FIX / "ebnerd", "ebnerd", session="impression", history="none")
    assert by_impression.groupby("user").session.nunique().eq(6).all()
    by_day = rows(FIX / "ebnerd", "ebnerd", history="day")
    hist = by_day[(by_day.user == 10) & (by_day.timestamp < unix(2023, 5, 18))]
    assert hist.session.nunique() >= 1 and hist.clicked.all()
    with pytest.raises(DataError, match="history must be"):
        read_log(FIX / "ebnerd", "ebnerd", history="week")


def test_ebnerd_malformed(tmp_path):
    behaviors = pq.read_table(FIX / "ebnerd" / "train" / "behaviors.parquet")
    no_clicks = tmp_path / "a" / "behaviors.parquet"
    no_clicks.parent.mkdir()
    pq.write_table(behaviors.drop(["article_ids_clicked"]), no_clicks)
    with raises_at(no_clicks, None, "missing column.*article_ids_clicked"):
        read_log(no_clicks.parent, "ebnerd")
    testset = tmp_path / "b" / "behaviors.parquet"
    testset.parent.mkdir()
    nulls = pa.nulls(behaviors.num_rows, pa.list_(pa.int32()))
    idx = behaviors.schema.get_field_index("article_ids_clicked")
    pq.write_table(behaviors.set_column(idx, "article_ids_clicked", nulls), testset)
    with raises_at(testset, None, "test set has no labels"):
        read_log(testset, "ebnerd")
    garbage = tmp_path / "c" / "behaviors.parquet"
    garbage.parent.mkdir()
    garbage.write_bytes(b"PAR1 not really")
    with raises_at(garbage, None, "not a readable Parquet file"):
        read_log(garbage, "ebnerd")


# --------------------------------------------------------------------------------------------------
# Trivago


def test_trivago_rows():
    path = FIX / "trivago" / "train.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    clickouts = table[table.action_type == "clickout item"]
    df = raw(FIX / "trivago", "trivago")
    assert int(df.clicked.sum()) == len(clickouts)
    assert set(df.line) == {i + 2 for i in clickouts.index}
    # T1's first clickout (line 3) clicked hotel 77, which was not in the list
    first = df[df.line == 3]
    assert set(first.loc[first.clicked, "item"]) == {77}
    assert set(first.loc[~first.clicked, "item"]) == {45, 44, 52, 66, 68}
    assert (first.timestamp == 1541030420).all()
    # two clickouts of one session_id share the session
    assert df[df.line.isin([3, 4])].session.nunique() == 1
    per_clickout = rows(path, "trivago", session="clickout")
    assert per_clickout.session.nunique() == len(clickouts)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("T9,s9,1541030999,2,clickout item,,DE,X,desktop,,41|42,1|2\n", "without a reference"),
        ("T9,s9,noon,2,clickout item,41,DE,X,desktop,,41|42,1|2\n", "timestamp is not"),
        ("T9,s9,1541030999,2,clickout item,41\n", "expected 12 fields"),
    ],
)
def test_trivago_malformed(tmp_path, bad, match):
    src = (FIX / "trivago" / "train.csv").read_text().splitlines(keepends=True)
    path = tmp_path / "train.csv"
    path.write_text("".join(src[:4]) + bad)
    with raises_at(path, 5, match):
        read_log(tmp_path, "trivago")


def test_trivago_missing_column(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("user_id,session_id,timestamp,action_type,reference\nT1,s1,1,clickout item,4\n")
    with raises_at(path, 1, "missing column.*impressions"):
        read_log(path, "trivago")


# --------------------------------------------------------------------------------------------------
# ContentWise


def test_contentwise_rows():
    df = rows(FIX / "contentwise", "contentwise")
    root = FIX / "contentwise" / "data" / "ContentWiseImpressions" / "CW10M"
    inter = pq.read_table(root / "interactions").to_pandas()
    assert int(df.clicked.sum()) == len(inter)
    # user 0, recommendation 1: series 7 clicked out of [5 6 7 8]; 8 is clicked the same day too
    t0 = int(inter.utc_ts_milliseconds.min()) // 1000
    first = df[(df.user == 0) & (df.timestamp == t0)]
    assert set(first.loc[first.clicked, "item"]) == {7}
    assert set(first.loc[~first.clicked, "item"]) == {5, 6}
    assert df.groupby("user").session.nunique().eq(5).all()


def test_contentwise_csv_matches_parquet(tmp_path):
    pq_rows = rows(FIX / "contentwise", "contentwise").sort_values(["user", "item", "timestamp"])
    csv_rows = rows(FIX / "contentwise-csv", "contentwise").sort_values(["user", "item", "timestamp"])
    cols = ["user", "item", "session", "timestamp", "clicked"]
    assert pq_rows[cols].reset_index(drop=True).equals(csv_rows[cols].reset_index(drop=True))
    # gzipped CSV, as the dataset ships it
    gz = tmp_path / "CW10M-CSV"
    gz.mkdir()
    for f in (FIX / "contentwise-csv" / "CW10M-CSV").iterdir():
        with open(f, "rb") as src, gzip.open(gz / (f.name + ".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    gz_rows = rows(tmp_path, "contentwise").sort_values(["user", "item", "timestamp"])
    assert gz_rows[cols].reset_index(drop=True).equals(csv_rows[cols].reset_index(drop=True))


def test_contentwise_options():
    base = rows(FIX / "contentwise", "contentwise")
    extra = rows(FIX / "contentwise", "contentwise", non_direct=True)
    added = extra[
        ~extra.set_index(["user", "item", "timestamp"]).index.isin(
            base.set_index(["user", "item", "timestamp"]).index
        )
    ]
    assert len(added) == 8 * 3 and not added.clicked.any()
    firsts = base.groupby("user").timestamp.min()
    assert (added.timestamp.to_numpy() == firsts.loc[added.user].to_numpy() - 1).all()
    views = rows(FIX / "contentwise", "contentwise", interaction_types=[0])
    assert int(views.clicked.sum()) == int(base.clicked.sum()) // 2


def test_contentwise_malformed(tmp_path):
    with raises_at(FIX / "zhihu" / "zhihu.csv", None, "point --input at the dataset folder"):
        read_log(FIX / "zhihu" / "zhihu.csv", "contentwise")
    (tmp_path / "interactions.csv").write_text(
        "utc_ts_milliseconds,user_id,series_id,recommendation_id\n1000,1,2,-1\n"
    )
    with raises_at(tmp_path, None, "no ContentWise impressions-direct-link"):
        read_log(tmp_path, "contentwise")
    (tmp_path / "impressions-direct-link.csv").write_text(
        'recommendation_id,recommended_series_list\n1,"[1 2]"\nx,"[3]"\n'
    )
    with raises_at(tmp_path / "impressions-direct-link.csv", 3, "recommendation_id is not"):
        read_log(tmp_path, "contentwise")


# --------------------------------------------------------------------------------------------------
# MovieLens


def _movielens_layouts(tmp_path: Path) -> dict[str, Path]:
    """The fixture's ratings written in every layout the reader takes."""
    src = pd.read_csv(FIX / "movielens" / "ml-100k" / "u.data", sep="\t", header=None,
                      names=["u", "i", "r", "t"])  # fmt: skip
    out = {"u.data": FIX / "movielens"}
    (tmp_path / "dat").mkdir()
    lines = "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in src.values)
    (tmp_path / "dat" / "ratings.dat").write_text(lines)
    (tmp_path / "csv").mkdir()
    csv = src.set_axis(["userId", "movieId", "rating", "timestamp"], axis=1)
    csv.to_csv(tmp_path / "csv" / "ratings.csv", index=False)
    (tmp_path / "inter").mkdir()
    src.set_axis(["user_id:token", "item_id:token", "rating:float", "timestamp:float"], axis=1).to_csv(
        tmp_path / "inter" / "ml-100k.inter", sep="\t", index=False
    )
    out |= {"ratings.dat": tmp_path / "dat", "ratings.csv": tmp_path / "csv", ".inter": tmp_path / "inter"}
    return out


def test_movielens_every_layout_reads_the_same_log(tmp_path):
    src = pd.read_csv(FIX / "movielens" / "ml-100k" / "u.data", sep="\t", header=None,
                      names=["u", "i", "r", "t"])  # fmt: skip
    frames = {k: rows(p, "movielens") for k, p in _movielens_layouts(tmp_path).items()}
    first = frames["u.data"]
    # oracle: the raw file; ratings >= 4 are clicks, one session per user and UTC day
    assert first.clicked.tolist() == (src.r >= 4).tolist()
    assert first.timestamp.tolist() == src.t.tolist()
    days = src.assign(d=src.t // 86_400).groupby("u").d.nunique()
    assert first.groupby("user").session.nunique().sort_index().tolist() == days.sort_index().tolist()
    for name, frame in frames.items():
        assert frame.drop(columns="session").equals(first.drop(columns="session")), name
        assert frame.session.tolist() == first.session.tolist(), name


def test_movielens_threshold_and_errors(tmp_path):
    df = rows(FIX / "movielens", "movielens", threshold=5)
    src = pd.read_csv(FIX / "movielens" / "ml-100k" / "u.data", sep="\t", header=None)
    assert df.clicked.tolist() == (src[2] >= 5).tolist()
    bad = tmp_path / "u.data"
    bad.write_text("1\t2\t5\t100\n1\t3\tgood\t200\n")
    with raises_at(bad, 2, "rating"):
        read_log(tmp_path, "movielens")
    (tmp_path / "u.data").unlink()
    (tmp_path / "ratings.dat").write_text("1::2::5::100\n1::2::5\n")
    with raises_at(tmp_path / "ratings.dat", 2, "expected 4 fields"):
        read_log(tmp_path, "movielens")
    with pytest.raises(DataError, match="no MovieLens ratings file"):
        read_log(FIX / "zhihu", "movielens")


# --------------------------------------------------------------------------------------------------
# RecBole


def test_recbole_rows():
    path = FIX / "recbole" / "toy" / "toy.inter"
    raw = pd.read_csv(path, sep="\t")
    implicit = rows(FIX / "recbole", "recbole")
    assert len(implicit) == len(raw) and implicit.clicked.all()
    df = rows(path, "recbole", threshold=4)
    assert np.array_equal(df.clicked.to_numpy(), (raw["rating:float"] >= 4).to_numpy())
    assert np.array_equal(df.timestamp.to_numpy(), raw["timestamp:float"].astype(int).to_numpy())
    assert df.groupby("user").session.nunique().eq(5).all()
    by_gap = rows(path, "recbole", session_gap=30)
    assert (by_gap.groupby("user").session.nunique() == 5).all()


def test_recbole_label_and_session_field(tmp_path):
    path = tmp_path / "x.inter"
    path.write_text(
        "user_id:token\titem_id:token\tlabel:float\tsession_id:token\n"
        "a\ti1\t1\ts1\na\ti2\t0\ts1\na\ti3\t1.0\ts2\nb\ti1\t0\ts3\n"
    )
    df = rows(path, "recbole", session_field="session_id")
    assert df.clicked.tolist() == [True, False, True, False]
    assert df.session.nunique() == 3
    assert df.timestamp.tolist() == [2, 3, 4, 5]  # no time field: line order


@pytest.mark.parametrize(
    ("text", "line", "match", "options"),
    [
        ("user_id:token\trating:float\ttimestamp:float\n1\t2\t3\n", 1, "missing field.*item_id", {}),
        ("user_id:token\titem_id:token\ttimestamp:float\n1\t2\tsoon\n", 2, "not a number", {}),
        (
            "user_id:token\titem_id:token\tlabel:float\ttimestamp:float\n1\t2\t2\t3\n",
            2,
            "label must be 0 or 1",
            {},
        ),
        ("user_id:token\titem_id:token\n1\t2\n", 1, "no time field", {}),
        (
            "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n",
            1,
            "threshold needs a rating",
            {"threshold": 3},
        ),
        ("user_id:token\titem_id:token\ttimestamp:float\n1\t2\n", 2, "expected 3 fields", {}),
    ],
)
def test_recbole_malformed(tmp_path, text, line, match, options):
    path = tmp_path / "bad.inter"
    path.write_text(text)
    with raises_at(path, line, match):
        read_log(tmp_path, "recbole", **options)


# --------------------------------------------------------------------------------------------------
# ratings (Coat, Yahoo! R3)


def test_ratings_coat_matrix():
    folder = FIX / "ratings" / "coat"
    train = np.loadtxt(folder / "train.ascii", dtype=int)
    test = np.loadtxt(folder / "test.ascii", dtype=int)
    df = rows(folder, "ratings")
    assert len(df) == (train > 0).sum() + (test > 0).sum()
    assert int(df.clicked.sum()) == (train >= 4).sum() + (test >= 4).sum()
    for u, g in df.groupby("user"):
        latest = g[g.session == g.session.max()]
        assert set(latest["item"]) == set(np.flatnonzero(test[u]))
        assert set(latest.loc[latest.clicked, "item"]) == set(np.flatnonzero(test[u] >= 4))
        assert g.session.nunique() == 6  # 5 train pseudo-sessions (6 ratings) + test
    assert (df.groupby("session").timestamp.nunique() == 1).all()
    # the random order is fixed by the seed
    again = rows(folder, "ratings")
    other = rows(folder, "ratings", seed=1)
    assert again.equals(df)
    assert not other.session.equals(df.session)
    assert rows(folder, "ratings", threshold=5).clicked.sum() == (train == 5).sum() + (test == 5).sum()


def test_ratings_yahoo_triplets():
    folder = FIX / "ratings" / "yahoo"
    train_file = folder / "ydata-ymusic-rating-study-v1_0-train.txt"
    test = pd.read_csv(folder / "ydata-ymusic-rating-study-v1_0-test.txt", sep="\t", header=None)
    df = rows(train_file, "ratings", train_sessions=3)  # the test file is found beside it
    latest = df[df.session.isin(df.groupby("user").session.max())]
    assert sorted(zip(latest.user, latest["item"], strict=True)) == sorted(zip(test[0], test[1], strict=True))
    assert df.groupby("user").session.nunique().eq(4).all()


def test_ratings_timestamps_and_users_without_a_test_click(tmp_path):
    (tmp_path / "train.txt").write_text(
        "1 10 5 100\n1 11 2 200\n1 12 4 300\n1 13 1 400\n2 10 5 50\n2 11 3 60\n"
    )
    (tmp_path / "test.txt").write_text("1 14 5 0\n1 15 1 0\n3 14 1 0\n")
    df = rows(tmp_path, "ratings", train_sessions=2)
    assert set(df.user) == {1}
    assert df.session.nunique() == 3
    assert df[df["item"] == 10].session.iloc[0] == df[df["item"] == 11].session.iloc[0]
    assert (df[df["item"] >= 14].timestamp == 401).all()
    kept = rows(tmp_path, "ratings", train_sessions=2, keep_all_users=True)
    assert set(kept.user) == {1, 2, 3}


@pytest.mark.parametrize(
    ("train", "test", "file", "line", "match"),
    [
        ("1 2 0\n3 4\n", "1 0 0\n", "train.ascii", 2, "matrix rows must all have 3"),
        ("1 2 x\n", "1 0 0\n", "train.ascii", 1, "rating is not a number"),
        ("1 2 4\n1 3 4 7\n", "1 9 4\n", "train.ascii", 1, "missing timestamp"),
    ],
)
def test_ratings_malformed(tmp_path, train, test, file, line, match):
    (tmp_path / "train.ascii").write_text(train)
    (tmp_path / "test.ascii").write_text(test)
    with raises_at(tmp_path / file, line, match):
        read_log(tmp_path, "ratings")


def test_ratings_missing_files(tmp_path):
    (tmp_path / "train.ascii").write_text("1 2\n")
    with raises_at(tmp_path, None, "expected one test ratings file"):
        read_log(tmp_path, "ratings")
    with raises_at(tmp_path / "test.ascii", None, "does not exist"):
        read_log(tmp_path / "train.ascii", "ratings")
