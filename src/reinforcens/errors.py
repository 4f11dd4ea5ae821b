"""Exceptions raised for user errors.

Every error that a user can cause (bad input file, wrong option, missing run directory) is raised as a
:class:`ReinforcensError` subclass with a one-line message that names the file, line or key at fault.
The command line turns these into a message and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class ReinforcensError(Exception):
    """Base class of all user-facing errors."""


class DataError(ReinforcensError):
    """Malformed or unusable input data.

    Parameters
    ----------
    message
        What is wrong.
    path
        The file at fault, if any.
    line
        The 1-based line (or row) number at fault, if known.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(ReinforcensError):
    """An invalid configuration value or an unknown configuration key."""


class RunStopped(ReinforcensError):
    """A run's ``on_validate`` hook stopped it (e.g. a tuner's pruner): the epoch is saved and the run
    stays unfinished, so a later resume continues it. :func:`reinforcens.experiments.runner.execute`
    returns such a run with the status ``"stopped"`` instead of failing its experiment."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while an experiment ran (:func:`reinforcens.experiments.runner.run_specs`).

    It is an interrupt like Ctrl-C's :class:`KeyboardInterrupt` (which it subclasses, so code that
    cleans up after an interrupt does so after it too): the workers are stopped, the finished runs stay
    cached and an interrupted run resumes at its last epoch next time. The command line exits with 143.
    """
