"""The split protocols ``prepare --split`` offers, each with the facts the rest of the code needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from reinforcens.data.leave_one_out import split_leave_one_out
from reinforcens.data.preprocess import Events
from reinforcens.data.split import Split, split_sessions
from reinforcens.data.temporal import DROPPED_KEY as TEMPORAL_DROPPED_KEY
from reinforcens.data.temporal import split_temporal
from reinforcens.errors import ConfigError


@dataclass(frozen=True)
class SplitProtocol:
    """A way to hold out validation and test data.

    Attributes
    ----------
    name
        The ``--split`` value.
    split
        ``split(events, list_length, seed) -> (Split, kept events)``.
    needs_time
        Whether it orders events by their timestamps (``preprocess(keep_time=True)``).
    lacking
        What a dropped user lacks, for messages ("users with ...").
    dropped_key
        The report key counting the users it dropped.
    summary
        One line for ``--help``.
    """

    name: str
    split: Callable[[Events, int | None, int], tuple[Split, Events]]
    needs_time: bool
    lacking: str
    dropped_key: str
    summary: str


def _temporal(events: Events, length: int | None, seed: int, per_user: bool) -> tuple[Split, Events]:
    return split_temporal(events, length, seed, per_user=per_user)


PROTOCOLS: dict[str, SplitProtocol] = {
    p.name: p
    for p in (
        SplitProtocol(
            "session",
            lambda events, length, seed: split_sessions(events, list_length=length, seed=seed),
            needs_time=False,
            lacking="fewer than 3 sessions with a click",
            dropped_key="users_with_fewer_than_3_click_sessions_dropped",
            summary="the paper's: the latest session with a click is test, the one before validation",
        ),
        SplitProtocol(
            "leave-one-out",
            split_leave_one_out,
            needs_time=True,
            lacking="fewer than 3 clicks",
            dropped_key="users_with_fewer_than_3_clicks_dropped",
            summary="each user's last click is test, the one before validation",
        ),
        *(
            SplitProtocol(
                name,
                partial(_temporal, per_user=per_user),
                needs_time=True,
                lacking="no training click or no held-out click",
                dropped_key=TEMPORAL_DROPPED_KEY,
                summary=f"{rows} first 80% of rows by time are training, the next 10% validation, the last "
                "10% test",
            )
            for name, per_user, rows in (
                ("temporal", True, "each user's"),
                ("temporal-global", False, "the whole log's"),
            )
        ),
    )
}


def get_protocol(name: str) -> SplitProtocol:
    """The protocol called ``name``; a :class:`ConfigError` listing the known ones otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown split {name!r}; known: {', '.join(PROTOCOLS)}") from None
