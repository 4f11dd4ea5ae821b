"""The compute backend of training: compiled CPU kernels (numba) or plain torch operations.

``"numba"`` runs the training hot path (negative draws, candidate scoring, BPR and REINFORCE
gradients, the row-wise Adam update) in the compiled kernels of :mod:`reinforcens.kernels`, on the CPU
only. ``"torch"`` runs the same computations as vectorized torch operations on any device (the only
choice on a GPU). ``"auto"`` picks numba on the CPU when it is installed and torch otherwise. Both
compute the same updates up to floating-point summation order; their random draws differ, so a run is
reproducible from its seed for a given backend.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch

from reinforcens.errors import ConfigError

BACKENDS = ("auto", "numba", "torch")


def numba_available() -> bool:
    """Whether numba can be imported."""
    return importlib.util.find_spec("numba") is not None


def resolve_backend(name: str, device: torch.device) -> str:
    """``"numba"`` or ``"torch"`` for the config value ``name`` on ``device``.

    Raises
    ------
    ConfigError
        If numba is asked for on a non-CPU device or is not installed, or ``name`` is unknown.
    """
    if name not in BACKENDS:
        raise ConfigError(f"config key 'backend': must be one of {', '.join(BACKENDS)}, got {name!r}")
    cpu = device.type == "cpu"
    if name == "auto":
        return "numba" if cpu and numba_available() else "torch"
    if name == "numba":
        if not cpu:
            raise ConfigError(f"config key 'backend': numba runs on the CPU only, not on {device}")
        if not numba_available():
            raise ConfigError("config key 'backend': numba is not installed (pip install numba)")
    return name


def draw_seed(generator: torch.Generator) -> int:
    """A 32-bit seed for one kernel call, drawn from ``generator`` (so runs are reproducible)."""
    return int(torch.randint(0, 2**32, (1,), generator=generator, device=generator.device))


def np_view(t: torch.Tensor) -> np.ndarray:
    """The numpy array sharing ``t``'s memory (a CPU tensor, contiguous)."""
    return t.detach().numpy()


def kernel_parts() -> int:
    """How many workers the parallel kernels split a batch's table rows into: numba's thread count
    (:func:`set_threads`). Results do not depend on it (see :func:`reinforcens.kernels.bpr_adam_step`)."""
    import numba

    return int(numba.get_num_threads())


def available_cpus() -> int:
    """The number of CPUs this process may use (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch and, when installed, in the compiled kernels."""
    torch.set_num_threads(n)
    if numba_available():
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
