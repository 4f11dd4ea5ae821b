"""The split protocols ``prepare --split`` offers, each with the facts the rest of the code needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reinforcens.data.leave_one_out import split_leave_one_out
from reinforcens.data.preprocess import Events
from reinforcens.data.split import Split, split_sessions
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
    requirement
        What a user needs to be kept, for messages.
    dropped_key
        The report key counting the users it dropped.
    summary
        One line for ``--help``.
    """

    name: str
    split: Callable[[Events, int | None, int], tuple[Split, Events]]
    needs_time: bool
    requirement: str
    dropped_key: str
    summary: str


PROTOCOLS: dict[str, SplitProtocol] = {
    p.name: p
    for p in (
        SplitProtocol(
            "session",
            lambda events, length, seed: split_sessions(events, list_length=length, seed=seed),
            needs_time=False,
            requirement="3 sessions with a click",
            dropped_key="users_with_fewer_than_3_click_sessions_dropped",
            summary="the paper's: the latest session with a click is test, the one before validation",
        ),
        SplitProtocol(
            "leave-one-out",
            split_leave_one_out,
            needs_time=True,
            requirement="3 clicks",
            dropped_key="users_with_fewer_than_3_clicks_dropped",
            summary="each user's last click is test, the one before validation",
        ),
    )
}


def get_protocol(name: str) -> SplitProtocol:
    """The protocol called ``name``; a :class:`ConfigError` listing the known ones otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown split {name!r}; known: {', '.join(PROTOCOLS)}") from None
