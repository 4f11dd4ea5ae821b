"""Where the runs of an experiment execute: one :class:`Engine` class per backend behind
:func:`make_engine`.

``"local"`` (:class:`LocalEngine`) runs them in this process (``jobs=1``) or in up to ``jobs`` spawned
worker processes of this machine; ``"ray"`` (:class:`RayEngine`) runs each as one Ray task, on a local
Ray or on a cluster. Both share :meth:`Engine.run`: a run starts once the run it is pretrained from (its
:attr:`~reinforcens.experiments.runner.RunSpec.pretrain`) is done, each result goes to a callback as it
arrives, SIGTERM raises :class:`~reinforcens.errors.Terminated`, and the first failure or interrupt
cancels the runs still going (the finished ones are kept; an interrupted one resumes at its last epoch).
Every run is :func:`reinforcens.experiments.runner.execute`, so every engine writes the same run
directories and gives the same results.

The callback may return more runs, which join the queue (a tune asks a study's next trials when its
last ones are told, without waiting for the other studies' runs).

Ray is imported by :class:`RayEngine` only (``pip install 'reinforcens[ray]'``).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import Any, ClassVar

from reinforcens.errors import ConfigError, Terminated
from reinforcens.experiments.runner import RunSpec, execute, run_status

#: the engine names :func:`make_engine` knows
NAMES = ("local", "ray")

#: what a run's result is passed to as it arrives (``{"status", "run_dir", "metrics"}``); it may return
#: more runs to execute
Finished = Callable[[dict[str, Any]], "Sequence[RunSpec] | None"]


def make_engine(name: str, jobs: int = 1, address: str | None = None) -> Engine:
    """The engine ``name`` (``"local"`` or ``"ray"``): the one place that maps an engine's name to its
    class.

    Parameters
    ----------
    name
        ``"local"`` or ``"ray"``.
    jobs
        Local: parallel worker processes (1: this process). Ray: the CPUs of the local Ray it starts
        (ignored with ``address``, or when Ray is already initialised).
    address
        Ray only: the cluster to connect to (``"auto"``, or ``host:port``); ``None`` starts a local Ray.

    Raises
    ------
    ConfigError
        If ``name`` is not an engine, ``address`` is given for the local engine, or Ray is not
        installed.
    """
    if name == "local":
        if address is not None:
            raise ConfigError("--address is for --engine ray")
        return LocalEngine(jobs)
    if name == "ray":
        return RayEngine(jobs, address)
    raise ConfigError(f"--engine must be one of {', '.join(NAMES)}, got {name!r}")


@dataclass(eq=False)
class _Done:
    """The handle of a run executed in this process: its result, already there."""

    result: dict[str, Any]


class Engine(ABC):
    """Executes the runs of an experiment; a backend implements how one run is started, waited for,
    collected and cancelled, and :meth:`run` schedules them (the same for every backend)."""

    #: the engine's name (``--engine``)
    name: ClassVar[str]

    def run(self, specs: Sequence[RunSpec], data_path: str, finished: Finished, more: bool = False) -> None:
        """Execute ``specs``, each once the run it is pretrained from is done.

        Parameters
        ----------
        specs
            The runs, without duplicates, those that others wait for first; a run whose ``pretrain`` is
            not among them starts at once (it is finished already).
        data_path
            The prepared dataset directory (absolute, seen at that path where the runs execute).
        finished
            Called with each run's result (``{"status", "run_dir", "metrics"}``) as it arrives; the runs
            it returns (if any) are queued behind those waiting, and scheduled as they are.
        more
            Whether ``finished`` may return runs (the session is then set up for runs to come even if
            every run of ``specs`` is finished already).

        Raises
        ------
        Terminated
            On SIGTERM (in the main thread), after the runs still going are stopped.
        ConfigError
            If runs wait for each other (a cycle, which :func:`~reinforcens.experiments.runner.plan`
            never makes), or ``finished`` returns a run already planned.

        Notes
        -----
        The first failing run stops the others (queued ones are cancelled, running ones stopped) and its
        error is raised; runs that finished stay finished.
        """
        waiting = list(specs)
        planned = {s.run_dir for s in waiting}
        done: set[str] = set()

        def ready(s: RunSpec) -> bool:
            return s.pretrain is None or s.pretrain not in planned or s.pretrain in done

        with self._session(waiting, more), _sigterm_raises():
            running: dict[Any, RunSpec] = {}
            try:
                while waiting or running:
                    startable = [s for s in waiting if ready(s)]
                    free = self._free_slots(len(running))
                    for s in startable if free is None else startable[: max(free, 0)]:
                        waiting.remove(s)
                        running[self._submit(s, data_path)] = s
                    if not running:
                        raise ConfigError("runs wait for a pretraining run that is not planned")
                    for handle in self._wait(list(running)):
                        running.pop(handle)
                        result = self._result(handle)
                        done.add(result["run_dir"])
                        for more in finished(result) or ():
                            if more.run_dir in planned:
                                raise ConfigError(f"run {more.run_dir} was planned twice")
                            planned.add(more.run_dir)
                            waiting.append(more)
            except BaseException:
                # interrupted or failed: stop the rest now (their runs resume from their last epoch)
                self._cancel(list(running))
                raise

    def _session(self, specs: Sequence[RunSpec], more: bool = False) -> Any:
        """A context manager around :meth:`run`'s scheduling (e.g. a process pool); ``specs``: the runs
        it will execute, ``more``: whether others may follow."""
        return nullcontext()

    @abstractmethod
    def _free_slots(self, running: int) -> int | None:
        """How many more runs may start while ``running`` run (``None``: any number)."""

    @abstractmethod
    def _submit(self, spec: RunSpec, data_path: str) -> Any:
        """Start one run; its handle (hashable)."""

    @abstractmethod
    def _wait(self, handles: list[Any]) -> list[Any]:
        """Block until one or more of ``handles`` are finished; those (at least one)."""

    @abstractmethod
    def _result(self, handle: Any) -> dict[str, Any]:
        """A finished run's result; raises its error if it failed."""

    @abstractmethod
    def _cancel(self, handles: list[Any]) -> None:
        """Stop the runs of ``handles`` (queued or running); never raises."""


# ---------------------------------------------------------------------- local: this machine
#: seconds between a worker's checks that the process that started it is still its parent
WATCHDOG_INTERVAL = 0.5

#: the exit status of a worker that outlived its parent
ORPHANED_EXIT = 1

#: ``prctl`` option (``<linux/prctl.h>``): the signal this process gets when its parent ends
_PR_SET_PDEATHSIG = 1

#: the torch thread count of a worker process (local and Ray), as of one run per CPU
WORKER_THREADS = 1


class LocalEngine(Engine):
    """This machine: the runs execute in this process (``jobs=1``) or in up to ``jobs`` spawned worker
    processes, each with one torch thread.

    The workers die with the process that started them (however it ends, ``kill -9`` included: see
    :func:`_die_with_parent`), and ignore Ctrl-C, which the parent gets too and stops them on.

    Parameters
    ----------
    jobs
        Parallel worker processes; 1 runs everything in this process.
    """

    name = "local"

    def __init__(self, jobs: int = 1):
        self.jobs = max(int(jobs), 1)
        self._pool: ProcessPoolExecutor | None = None

    @contextmanager
    def _session(self, specs: Sequence[RunSpec], more: bool = False) -> Iterator[None]:
        if self.jobs <= 1:
            yield
            return
        ctx = multiprocessing.get_context("spawn")
        init = (os.getpid(),)
        with ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=_init_worker, initargs=init) as pool:
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    def _free_slots(self, running: int) -> int:
        return self.jobs - running

    def _submit(self, spec: RunSpec, data_path: str) -> Future | _Done:
        if self._pool is None:  # in this process: the run is done when this returns
            return _Done(execute(spec, data_path))
        return self._pool.submit(execute, spec, data_path, threads=WORKER_THREADS)

    def _wait(self, handles: list[Any]) -> list[Any]:
        done = [h for h in handles if isinstance(h, _Done)]
        if done:
            return done
        finished_now, _ = wait(handles, return_when=FIRST_COMPLETED)
        return list(finished_now)

    def _result(self, handle: Future | _Done) -> dict[str, Any]:
        return handle.result if isinstance(handle, _Done) else handle.result()

    def _cancel(self, handles: list[Any]) -> None:
        for h in handles:
            if isinstance(h, Future):
                h.cancel()
        if self._pool is not None:
            _terminate_workers(self._pool)


def _init_worker(parent: int) -> None:
    """Worker-process set-up.

    Parameters
    ----------
    parent
        The process id of the process that runs the experiment: the worker dies with it
        (:func:`_die_with_parent`).

    Notes
    -----
    Ctrl-C (SIGINT, sent to the whole process group by a terminal) is ignored: the parent gets it too
    and stops the workers itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """End this process when the process ``parent`` ends, however it ends (``kill -9`` included).

    On Linux the kernel sends SIGKILL (``prctl(PR_SET_PDEATHSIG)``); everywhere, a daemon thread exits
    the process (``os._exit``) once it is re-parented, i.e. ``os.getppid()`` is no longer ``parent``.
    """
    _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the signal was armed
        os._exit(ORPHANED_EXIT)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watchdog", daemon=True).start()


def _set_parent_death_signal(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent ends; whether it was armed
    (``False`` off Linux, where this does nothing)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        zero = ctypes.c_ulong(0)
        return libc.prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(int(sig)), zero, zero, zero) == 0
    except (OSError, AttributeError):  # no libc or no prctl: the watchdog remains
        return False


def _watch_parent(parent: int, interval: float = WATCHDOG_INTERVAL) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(ORPHANED_EXIT)


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


#: set when SIGTERM arrived during :func:`_sigterm_raises` (:func:`_as_terminated` reads it)
_SIGTERM_SEEN = threading.Event()


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` in the main thread; the previous handler
    is restored after. Outside the main thread, where no handler can be installed, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _SIGTERM_SEEN.clear()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    _SIGTERM_SEEN.set()
    raise Terminated(f"stopped by {signal.Signals(signum).name}")


@contextmanager
def _as_terminated() -> Iterator[None]:
    """Around a blocking call that turns any exception of a signal handler into a plain
    :class:`KeyboardInterrupt` (as Ray's waits do): raise :class:`Terminated` instead if it was
    SIGTERM's."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if _SIGTERM_SEEN.is_set() and not isinstance(exc, Terminated):
            raise Terminated("stopped by SIGTERM") from exc
        raise


# ---------------------------------------------------------------------- ray: one task per run
#: how many times Ray reruns a task whose worker process died (the run resumes at its last epoch)
MAX_RETRIES = 3

#: seconds between the checks for finished tasks (Ctrl-C and SIGTERM are handled in between)
POLL_INTERVAL = 1.0

#: seconds to wait for cancelled tasks to end (their workers are killed) before raising
CANCEL_TIMEOUT = 10.0

#: the address of a local Ray: this machine's loopback interface only
LOCALHOST = "127.0.0.1"

#: ``0`` makes Ray give a local instance the loopback address (read when ``ray`` is first imported)
_RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

#: the one-line message when Ray is missing
RAY_MISSING = "--engine ray needs Ray, which is not installed: pip install 'reinforcens[ray]'"


def _import_ray(local: bool) -> ModuleType:
    """The ``ray`` module, imported; ``local``: a local Ray will be started, bound to :data:`LOCALHOST`
    (unless the variable Ray reads for it is set, or ``ray`` was imported before)."""
    if local and "ray" not in sys.modules:
        os.environ.setdefault(_RAY_LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def _ray_execute(spec: RunSpec, data_path: str) -> dict[str, Any]:
    """The body of a run's Ray task: :func:`reinforcens.experiments.runner.execute` with
    :data:`WORKER_THREADS` torch threads."""
    return execute(spec, data_path, threads=WORKER_THREADS)


class RayEngine(Engine):
    """Ray: every run is one task (one CPU, one torch thread) calling
    :func:`reinforcens.experiments.runner.execute`, which writes the run's directory: the prepared data
    and the experiment directory must be at the same paths on every node (a shared file system).

    A task whose worker dies is retried (:data:`MAX_RETRIES` times) and its run resumes from its last
    epoch checkpoint; a run that is finished already (it verifies) is checked in this process and never
    sent to Ray, so a rerun of a finished experiment neither starts Ray nor trains anything.

    Parameters
    ----------
    jobs
        The CPUs of the local Ray this engine starts (``ray.init(num_cpus=jobs)``); ignored with
        ``address`` or when Ray is already initialised.
    address
        The cluster (``"auto"``, or ``host:port`` of its head); ``None``: a local Ray on
        :data:`LOCALHOST`, without dashboard.

    Raises
    ------
    ConfigError
        If Ray is not installed.

    Notes
    -----
    If Ray is initialised already (``ray.init`` called by the user or a test), it is used as it is.
    Otherwise this engine initialises it when a run first needs it, and leaves it initialised for the
    rest of the process (so the many calls of a tuning share it); Ray shuts it down at exit.
    """

    name = "ray"

    def __init__(self, jobs: int = 1, address: str | None = None):
        self.jobs = max(int(jobs), 1)
        self.address = address
        self._ray = _import_ray(local=address is None)
        self._task: Any = None

    def _session(self, specs: Sequence[RunSpec], more: bool = False) -> Any:
        # connect first, so that Ray's own SIGTERM handler is the one restored after the runs (a
        # connection made while they run would put Ray's handler in place of Terminated's)
        if more or any(run_status(s.run_dir) != "cached" for s in specs):
            self._connect()
        return nullcontext()

    def _connect(self) -> None:
        """Initialise Ray unless it is; define the task."""
        ray = self._ray
        if not ray.is_initialized():
            if self.address is not None:
                try:
                    ray.init(address=self.address, logging_level=logging.WARNING)
                except ConnectionError as exc:
                    raise ConfigError(f"--address {self.address}: {_reason(exc)}") from None
            else:
                ray.init(
                    address="local",
                    num_cpus=self.jobs,
                    include_dashboard=False,
                    _node_ip_address=LOCALHOST,
                    logging_level=logging.ERROR,
                )
        if self._task is None:
            self._task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(_ray_execute)

    def _free_slots(self, running: int) -> None:
        return None  # Ray queues the tasks for the cluster's CPUs

    def _submit(self, spec: RunSpec, data_path: str) -> Any:
        if run_status(spec.run_dir) == "cached":  # verified here: never rerun, no task
            return _Done(execute(spec, data_path))
        self._connect()
        return self._task.remote(spec, data_path)

    def _wait(self, handles: list[Any]) -> list[Any]:
        done = [h for h in handles if isinstance(h, _Done)]
        if done:
            return done
        while True:  # in short waits: a signal's handler runs in between
            with _as_terminated():
                ready, _ = self._ray.wait(handles, num_returns=1, timeout=POLL_INTERVAL)
            if ready:
                return ready

    def _result(self, handle: Any) -> dict[str, Any]:
        if isinstance(handle, _Done):
            return handle.result
        from ray.exceptions import RayTaskError

        try:
            with _as_terminated():
                return self._ray.get(handle)
        except RayTaskError as err:  # the run's own error (a one-line ConfigError, ...), not Ray's wrapper
            cause = getattr(err, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from err
            raise

    def _cancel(self, handles: list[Any]) -> None:
        refs = [h for h in handles if not isinstance(h, _Done)]
        if not refs:
            return
        for ref in refs:
            with suppress(Exception):
                self._ray.cancel(ref, force=True)  # kills the worker: its run lock goes with it
        with suppress(Exception):
            self._ray.wait(refs, num_returns=len(refs), timeout=CANCEL_TIMEOUT)


def _reason(exc: BaseException) -> str:
    """One line of why Ray did not connect: its message, and the last line of the error it ends on
    (e.g. a refused authentication token) where that says more."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    inner = exc
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
    last = str(inner).strip().splitlines()
    if inner is not exc and last and last[-1] != lines[0]:
        return f"{lines[0]} ({last[-1].strip()})"
    return lines[0]
