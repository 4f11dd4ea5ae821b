"""Several uniform draws per row: the exact gap-key draw against rejection tested on a per-row bitmap.

Usage::

    python benchmarks/uniform_draws.py [--preset zhihu] [--rows 1024] [--draws 50] [--threads 1,2]

Uses the preset cached by ``reinforcens bench``. Times, in one process and interleaved, the compiled
kernels :func:`reinforcens.kernels.sample_uniform` without a hash set (every draw the exact gap-key
draw, a binary search in the row's clicks) and :func:`reinforcens.kernels.sample_uniform_bitmap`
(a uniform item tested against a bitmap of the row's clicks), on ``--rows`` users drawn as a BPR
batch draws them (one per training click), plus the random numbers alone (the counter hash and a
modulo) as a floor. Prints the median milliseconds per call over 200 calls, one row per thread count.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit, prange

from reinforcens import kernels
from reinforcens.backend import set_threads
from reinforcens.bench.cache import default_cache, ensure_prepared
from reinforcens.data.prepared import load_prepared
from reinforcens.training_data import TrainingData


@njit(parallel=True, cache=True)
def _random_only(b_count, n, n_items, seed):  # pragma: no cover - compiled
    out = np.empty((b_count, n), np.int64)
    for b in prange(b_count):
        for c in range(n):
            out[b, c] = kernels._below(seed, 64 * (b * n + c), n_items)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="zhihu")
    p.add_argument("--rows", type=int, default=1024)
    p.add_argument("--draws", type=int, default=50)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--calls", type=int, default=200)
    a = p.parse_args()
    data = load_prepared(ensure_prepared(a.preset, default_cache(), 0, True))
    td = TrainingData.from_prepared(data, "cpu", "numba")
    arr = td._arrays
    rng = np.random.default_rng(0)
    click_users = np.repeat(np.arange(len(arr["click_indptr"]) - 1), np.diff(arr["click_indptr"]))
    users = np.ascontiguousarray(rng.choice(click_users, a.rows))
    n_items = td.n_items
    args = (users, a.draws, arr["click_gaps"], arr["click_indptr"], arr["click_free"])
    no_table = np.zeros(0, np.int64)
    calls = {
        "gap draws": lambda s: kernels.sample_uniform(*args, n_items, no_table, 0, s),
        "bitmap rejection": lambda s: kernels.sample_uniform_bitmap(*args, n_items, s),
        "random numbers only": lambda s: _random_only(a.rows, a.draws, n_items, s),
    }
    print(f"{a.preset}: {a.rows} rows x {a.draws} draws, {n_items} items; median ms per call")
    print("| threads | " + " | ".join(calls) + " |")
    print("|---:|" + "---:|" * len(calls))
    for threads in map(int, a.threads.split(",")):
        set_threads(threads)
        times: dict[str, list[float]] = {k: [] for k in calls}
        for seed in range(a.calls + 10):
            for name, call in calls.items():
                t = time.perf_counter()
                call(seed)
                if seed >= 10:  # the first calls compile
                    times[name].append(time.perf_counter() - t)
        print(f"| {threads} | " + " | ".join(f"{1e3 * np.median(v):.3f}" for v in times.values()) + " |")


if __name__ == "__main__":
    main()
