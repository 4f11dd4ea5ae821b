"""A description of the machine a benchmark result was measured on."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`; may be empty)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def machine_info(threads: int, device: torch.device) -> dict[str, Any]:
    """Cores, CPU model, load, library versions and the device, for a results file.

    Parameters
    ----------
    threads
        The threads of torch and the compiled kernels.
    device
        The torch device of our methods.

    Returns
    -------
    dict
        ``cpu``, ``cores``, ``python``, ``torch``, ``numpy``, ``torch_threads``, ``device``,
        ``load_average`` (where the system has one), the versions of ``implicit`` and ``numba``
        (``None`` when not installed) and, on CUDA, ``gpu``.
    """
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": threads,
        "device": str(device),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    for name in ("implicit", "numba"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
