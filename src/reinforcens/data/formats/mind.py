"""MIND (Microsoft News Dataset) ``behaviors.tsv``.

Each line is one impression log, tab-separated and headerless::

    impression_id  user_id  time                     history        impressions
    91             U397059  11/15/2019 10:22:32 AM   N106403 N7    N129416-0 N26703-1 N120089-1

Mapping:

- every impression line is one session at ``time``; each ``news-label`` token of ``impressions`` is a
  row, clicked when the label is 1;
- ``history`` (news the user clicked before the logging period, undated) becomes clicked rows in one
  earlier pseudo-session per user, dated one second before the user's first impression. History
  items are de-duplicated per user across lines (and across files).

Given a folder, every ``behaviors.tsv`` below it is read (e.g. ``MINDsmall_train`` and
``MINDsmall_dev``, which cover consecutive days); the test split of MIND-large has no labels and is
refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from reinforcens.data.formats import _common as c
from reinforcens.data.formats import register_reader
from reinforcens.errors import DataError

TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
LAYOUT = "impression_id<TAB>user<TAB>time<TAB>history<TAB>impressions"


@register_reader("mind")
def read_mind(path: Path, history: str = "session") -> pd.DataFrame:
    """Read MIND ``behaviors.tsv`` file(s).

    Parameters
    ----------
    path
        A ``behaviors.tsv`` file, or a folder (all ``behaviors.tsv`` files below it are read).
    history
        ``"session"`` (default): the history column becomes one clicked pseudo-session per user,
        before the user's first impression; ``"none"``: the history column is ignored.

    Returns
    -------
    pandas.DataFrame
        Columns ``user, item, session, timestamp, clicked, line``; timestamps are Unix seconds;
        session ids are numbered by start time.

    Raises
    ------
    DataError
        Naming the file and line, for a wrong number of fields, an unparsable time, or an
        impression token that is not ``NEWS-0``/``NEWS-1`` (such as the unlabelled test split).
    """
    if history not in ("session", "none"):
        raise DataError(f"history must be 'session' or 'none', not {history!r}", path)
    files = c.find_files(path, ["behaviors.tsv", "behaviors.tsv.gz"], "MIND behaviors.tsv")
    users, times, lines_all, rows = [], [], [], 0
    imp_users, imp_items, imp_clicked, imp_rows, imp_lines = [], [], [], [], []
    his_users, his_items, his_rows, his_lines = [], [], [], []
    for file in files:
        cols, lines = c.read_delimited(
            file,
            ["impression_id", "user", "time", "history", "impressions"],
            sep="\t",
            header=False,
            quoted=False,
            layout=LAYOUT,
        )
        c.require_rows(lines, file)
        user = cols["user"]
        c.fail_if(pc.equal(user, ""), lines, file, "empty user id")
        ts = c.parse_datetimes(cols["time"], TIME_FORMAT, "time", file, lines)

        tokens, parent = c.explode(c.split_list(cols["impressions"], None))
        clicked = pc.ends_with(tokens, "-1")
        ok = pc.and_(pc.or_(clicked, pc.ends_with(tokens, "-0")), pc.greater(pc.utf8_length(tokens), 2))
        bad = c.first_bad(pc.invert(ok))
        if bad is not None:
            raise DataError(
                f"impression {tokens[bad].as_py()!r} is not NEWS-0 or NEWS-1 "
                f"(the MIND test split has no labels; use the train and dev splits)",
                file,
                int(lines[parent[bad]]),
            )
        empty = np.bincount(parent, minlength=len(lines)) == 0
        c.fail_if(empty, lines, file, "empty impression list")
        imp_users.append(c.take(user, parent))
        imp_items.append(pc.utf8_slice_codeunits(tokens, 0, -2))
        imp_clicked.append(np.asarray(clicked.to_numpy(False), dtype=bool))
        imp_rows.append(parent + rows)
        imp_lines.append(lines[parent])

        if history == "session":
            h_items, h_parent = c.explode(c.split_list(cols["history"], None))
            his_users.append(c.take(user, h_parent))
            his_items.append(h_items)
            his_rows.append(h_parent + rows)
            his_lines.append(lines[h_parent])

        users.append(user)
        times.append(ts)
        lines_all.append(lines)
        rows += len(lines)

    source = files[0] if len(files) == 1 else path
    line_time = np.concatenate(times)
    n_imp = sum(len(a) for a in imp_users)
    user_raw = c.concat_ids([*imp_users, *his_users], "user", source)
    item_raw = c.concat_ids([*imp_items, *his_items], "item", source)
    row_of = np.concatenate([*imp_rows, *his_rows]).astype(np.int64)
    row_lines = np.concatenate([*imp_lines, *his_lines]).astype(np.int64)
    user = c.ids(user_raw, "user", source, row_lines)
    item = c.ids(item_raw, "item", source, row_lines)
    ucode = np.asarray(user.codes, dtype=np.int64)
    clicked = np.concatenate([*imp_clicked, np.ones(len(row_of) - n_imp, dtype=bool)])
    timestamp = line_time[row_of]
    key = row_of.copy()
    is_hist = np.zeros(len(row_of), dtype=bool)
    is_hist[n_imp:] = True
    if is_hist.any():
        first = pd.Series(timestamp[:n_imp]).groupby(ucode[:n_imp]).min()
        first_of_user = first.reindex(np.arange(len(user.categories))).to_numpy()
        hist_user = ucode[is_hist]
        has_first = ~np.isnan(first_of_user[hist_user])
        # history of a user without any impression (cannot happen in MIND) is dropped
        keep = np.ones(len(row_of), dtype=bool)
        keep[np.flatnonzero(is_hist)[~has_first]] = False
        timestamp = timestamp.copy()
        timestamp[is_hist] = np.where(
            has_first, np.nan_to_num(first_of_user[hist_user]).astype(np.int64) - 1, 0
        )
        key[is_hist] = -1
        # one history row per (user, item)
        keep &= ~c.repeated_pairs(ucode, np.asarray(item.codes), is_hist)
        user, item = user[keep], item[keep]
        ucode, key, timestamp = ucode[keep], key[keep], timestamp[keep]
        clicked, row_lines = clicked[keep], row_lines[keep]
    session = c.number_sessions(ucode, key, timestamp)
    return c.frame(user, item, session, timestamp, clicked, row_lines)
