"""The compiled draw kernels of two versions of the package, alternated in one process, on the batches
of an epoch (cold caches, as in training).

Usage::

    python benchmarks/ab_draws.py [--preset zhihu] [--threads 1] [--batches 600] [--before reinforcens_before]

``--before`` is an importable copy of an older ``src/reinforcens`` with its imports renamed, under
``$AB_PATH`` (default ``/tmp/before``), as for ``benchmarks/ab_versions.py``. Uses the preset cached by
``reinforcens bench``. Times ``sample_uniform_bitmap`` (50 uniform draws per row, as DNS draws its
candidates) and ``candidates`` (30 per row, 10 of them exposed, as RNS draws them) of both versions on
``--batches`` different BPR batches of 1,024 users, the versions in alternating order and a 32 MB
array rewritten before every call so that no call finds the previous one's rows in the caches. Checks
first that both versions draw the same items, then prints the median milliseconds per call.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from importlib import import_module

import numpy as np
import torch

from reinforcens import kernels
from reinforcens.backend import np_view, set_threads
from reinforcens.bench.cache import default_cache, ensure_prepared
from reinforcens.data.prepared import load_prepared
from reinforcens.training_data import TrainingData


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="zhihu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", type=int, default=600)
    p.add_argument("--before", default="reinforcens_before")
    a = p.parse_args()
    sys.path.insert(0, os.environ.get("AB_PATH", "/tmp/before"))
    old = import_module(a.before + ".kernels")
    old_data = import_module(a.before + ".training_data").TrainingData
    set_threads(a.threads)
    data = load_prepared(ensure_prepared(a.preset, default_cache(), 0, True))
    td = TrainingData.from_prepared(data, "cpu", "numba")
    gen = torch.Generator().manual_seed(1)
    batches = []
    for users, _pos in td.batches(1024, gen):
        if len(batches) == a.batches:
            break
        batches.append(np_view(users.contiguous()))
    calls = {}
    versions = (("before", old, old_data.from_prepared(data, "cpu", "numba")), ("after", kernels, td))
    for name, k, version_td in versions:  # each version reads the arrays its own TrainingData builds
        arr = version_td._arrays
        uni = (arr["click_gaps"], arr["click_indptr"], arr["click_free"], td.n_items)
        cand = (
            arr["blocked_gaps"], arr["blocked_indptr"], arr["blocked_free"], arr["blocked_has_exposure"],
            arr["exposure_keys"], arr["exp_indptr"], td.n_items, True,
        )  # fmt: skip
        calls[f"uniform x50, {name}"] = lambda u, s, k=k, uni=uni: k.sample_uniform_bitmap(u, 50, *uni, s)
        calls[f"candidates 30, {name}"] = lambda u, s, k=k, c=cand: k.candidates(u, 30, 10, *c, s)
    for kernel in ("uniform x50", "candidates 30"):  # both versions draw the same items
        x, y = (calls[f"{kernel}, {v}"](batches[0], 3) for v in ("before", "after"))
        for xa, ya in zip(*((o if isinstance(o, tuple) else (o,)) for o in (x, y)), strict=True):
            np.testing.assert_array_equal(xa, ya)
    junk = np.zeros(4_000_000)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for r, u in enumerate(batches):
        for key in list(calls) if r % 2 else list(calls)[::-1]:
            junk += 1.0  # evicts the caches between calls, as the rest of a training step does
            t = time.perf_counter()
            calls[key](u, r)
            times[key].append(time.perf_counter() - t)
    print(f"{a.preset}, {a.threads} thread(s): median ms per call over {len(batches)} batches of 1,024")
    print("| kernel | ms per call |")
    print("|---|---:|")
    for key, v in times.items():
        print(f"| {key} | {1e3 * np.median(v):.3f} |")


if __name__ == "__main__":
    main()
