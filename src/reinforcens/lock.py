"""One writer per directory: an advisory lock file that a second process is refused on.

A run directory (or an experiment directory) is written by one process at a time. The lock is a
``.lock`` file in the directory held with ``fcntl.flock``: the operating system releases it when the
process ends, however it ends (``kill -9`` included), so a crashed run never leaves a stale lock behind.
The file holds the owner's process id, so the message can say who holds it. Within one process the lock
is re-entrant (an experiment that holds its directory may run a step that takes the same lock).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from reinforcens.errors import ReinforcensError

#: the lock file's name inside a locked directory
LOCK_FILE = ".lock"

#: directories this process holds, with how many ``with`` blocks hold each
_HELD: dict[Path, int] = {}


class LockedError(ReinforcensError):
    """Another process holds the directory's lock."""


class DirectoryLock:
    """Hold ``directory/.lock`` exclusively while the ``with`` block runs (the directory is created).

    Parameters
    ----------
    directory
        The directory to own.
    what
        What the directory is, for the message (``"run"``, ``"experiment"``).

    Raises
    ------
    LockedError
        On entry, if another process holds the lock.
    """

    def __init__(self, directory: str | Path, what: str = "run"):
        self.directory = Path(directory)
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> DirectoryLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.directory.resolve()
        if key in _HELD:
            _HELD[key] += 1
            return self
        path = self.directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{self.directory}: this {self.what} is in use by another process (pid {owner}); "
                "wait for it to finish or stop it"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        _HELD[key] = 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        key = self.directory.resolve()
        _HELD[key] -= 1
        if _HELD[key] == 0:
            del _HELD[key]
        if self._fd is not None and key not in _HELD:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
