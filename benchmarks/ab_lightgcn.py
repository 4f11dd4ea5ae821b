"""LightGCN training epochs of two versions of the package, alternated in one process.

Usage::

    python benchmarks/ab_lightgcn.py PREP [--threads 1] [--repeats 3] [--before reinforcens_before]
        [--samplers uniform,dns-mn,softmax]

``PREP`` is a prepared dataset (e.g. MovieLens-100k's leave-one-out split of EXPERIMENTS.md section 8);
``--before`` an importable copy of an older ``src/reinforcens`` with its imports renamed, under
``$AB_PATH`` (default ``/tmp/before``), as for ``benchmarks/ab_versions.py``. Each version trains
LightGCN at EXPERIMENTS.md section 11's setting (2 layers, dimension 64, xavier init, batch 2,048, Adam
at lr 0.001) with each sampler at the options below, one epoch after a warm-up epoch, ``--repeats``
times, the versions alternating; prints the median seconds per epoch and the ratio after / before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from importlib import import_module

from epoch_costs import epoch_closure

from reinforcens.backend import set_threads

#: sampler options: DNS(M,N) and Softmax(rho,N) at N = 300, as their tuned settings of EXPERIMENTS.md
#: section 16; MixGCF at N = 32 (the middle of its grid), RecNS at its defaults
OPTIONS = {
    "uniform": {},
    "dns": {},
    "dns-mn": {"dns_candidates": 300, "top_m": 5},
    "softmax": {"n_candidates": 300},
    "mixgcf": {"n_candidates": 32},
    "recns": {},
}


def setup(pkg: str, prep: str, sampler: str):
    """One epoch's closure of ``sampler`` with LightGCN, built by package ``pkg``'s public API."""
    data = import_module(pkg + ".data.prepared").load_prepared(prep)
    values = {"model": "lightgcn", "layers": 2, "dim": 64, "init_std": "xavier", "batch_size": 2048}
    return epoch_closure(pkg, data, values, sampler, OPTIONS[sampler])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("prep")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--before", default="reinforcens_before")
    p.add_argument("--samplers", default="uniform,dns-mn,softmax")
    a = p.parse_args()
    sys.path.insert(0, os.environ.get("AB_PATH", "/tmp/before"))
    set_threads(a.threads)
    names = a.samplers.split(",")
    epochs = {
        (s, v): setup(pkg, a.prep, s)
        for s in names
        for v, pkg in (("before", a.before), ("after", "reinforcens"))
    }
    for epoch in epochs.values():  # warm-up: compilation and caches
        epoch()
    times: dict[tuple[str, str], list[float]] = {k: [] for k in epochs}
    for r in range(a.repeats):
        for key in list(epochs) if r % 2 else list(epochs)[::-1]:
            t = time.perf_counter()
            epochs[key]()
            times[key].append(time.perf_counter() - t)
    print(f"{a.prep}, LightGCN, {a.threads} thread(s): median seconds per epoch of {a.repeats}")
    print("| sampler | before (s) | after (s) | after / before |")
    print("|---|---:|---:|---:|")
    for s in names:
        before, after = (statistics.median(times[(s, v)]) for v in ("before", "after"))
        print(f"| {s} | {before:.3f} | {after:.3f} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
