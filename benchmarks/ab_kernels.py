"""The compiled draw and choice kernels of two versions of the package, alternated in one process, on the
batches of an epoch (cold caches, as in training).

Usage::

    python benchmarks/ab_kernels.py [--preset zhihu] [--threads 1] [--batches 300]
        [--before reinforcens_before]

``--before`` is an importable copy of an older ``src/reinforcens`` with its imports renamed, under
``$AB_PATH`` (default ``/tmp/before``), as for ``benchmarks/ab_versions.py``. Uses the preset cached by
``reinforcens bench`` and GMF tables of its size (dimension 32, normal with std 0.1).

Draw kernels, each version on the arrays its own ``TrainingData`` builds: ``sample_uniform`` (one draw
per row against the hash set of the clicks: BPR's negatives), ``sample_uniform_bitmap`` (50 per row:
DNS's candidates) and ``candidates`` (30 per row, 10 of them exposed: RNS's). Two versions may draw
other items for the same seed (their distribution is checked by the tests, not here).

Choice kernels, both versions on the same candidates (drawn once per batch): ``best_candidate`` (DNS,
50), ``score_and_choose`` (RNS, 30), ``top_n_choice`` (DNS(M,N), N 200, M 5), ``loss_softmax_choice``
(Softmax(rho,N), N 200), ``softmax_subset`` (RNS-ES's subset, 30 keeping 10) and ``variance_choice``
(SRNS, 72 candidates with 5 recorded scores each). Those that draw no integer below ``n`` are checked to
return the same result in both versions first; ``top_n_choice`` draws its rank with ``_below``, so two
versions whose ``_below`` differ pick other ranks.

Every call runs on a different BPR batch of 1,024 users, the versions in alternating order, and a 32 MB
array is rewritten before every call so that no call finds the previous one's rows in the caches.
Prints the median milliseconds per call and the ratio after / before.
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

DIM = 32


def _draw_calls(k, td) -> dict:
    """The draw kernels of one version (module ``k``) on its own training arrays ``td``."""
    arr = td._arrays
    uni = (arr["click_gaps"], arr["click_indptr"], arr["click_free"], td.n_items)
    table, shift = td._click_hash
    cand = (
        arr["blocked_gaps"], arr["blocked_indptr"], arr["blocked_free"], arr["blocked_has_exposure"],
        arr["exposure_keys"], arr["exp_indptr"], td.n_items, True,
    )  # fmt: skip
    return {
        "sample_uniform x1 (BPR)": lambda u, s, c: k.sample_uniform(u, 1, *uni, table, shift, s),
        "sample_uniform_bitmap x50 (DNS)": lambda u, s, c: k.sample_uniform_bitmap(u, 50, *uni, s),
        "candidates 30 (RNS)": lambda u, s, c: k.candidates(u, 30, 10, *cand, s),
    }


def _choice_calls(k, tables, hist) -> dict:
    """The choice kernels of one version on the candidates ``c`` of a batch (a dict of arrays)."""
    uw, iw, h = tables
    cand_hist, pos_hist = hist
    return {
        "best_candidate 50 (DNS)": lambda u, s, c: k.best_candidate(u, c[50], uw, iw, h),
        "score_and_choose 30 (RNS)": lambda u, s, c: k.score_and_choose(
            u, c[30], uw, iw, h, np.float32(1.0), s
        ),
        "top_n_choice 200, 5 (DNS(M,N))": lambda u, s, c: k.top_n_choice(u, c[200], uw, iw, h, 5, s),
        "loss_softmax_choice 200 (Softmax)": lambda u, s, c: k.loss_softmax_choice(
            u, c["pos"], c[200], uw, iw, h, 1.0, s
        ),
        "softmax_subset 30, 10 (RNS-ES)": lambda u, s, c: k.softmax_subset(u, c[30], uw, iw, h, 10, 1.0, s),
        "variance_choice 72 (SRNS)": lambda u, s, c: k.variance_choice(
            u, c["pos"], c[72], cand_hist, pos_hist, uw, iw, h, 1.0
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="zhihu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--before", default="reinforcens_before")
    a = p.parse_args()
    sys.path.insert(0, os.environ.get("AB_PATH", "/tmp/before"))
    old = import_module(a.before + ".kernels")
    old_data = import_module(a.before + ".training_data").TrainingData
    set_threads(a.threads)
    data = load_prepared(ensure_prepared(a.preset, default_cache(), 0, True))
    td = TrainingData.from_prepared(data, "cpu", "numba")
    rng = np.random.default_rng(0)
    tables = (
        rng.normal(0, 0.1, (td.n_users, DIM)).astype(np.float32),
        rng.normal(0, 0.1, (td.n_items, DIM)).astype(np.float32),
        rng.normal(0, 0.1, DIM).astype(np.float32),
    )
    hist = (
        rng.normal(0, 1, (1024, 72, 5)).astype(np.float32),
        rng.normal(0, 1, (1024, 5)).astype(np.float32),
    )
    gen = torch.Generator().manual_seed(1)
    batches = []
    for users, pos in td.batches(1024, gen):
        if len(batches) == a.batches or users.numel() < 1024:
            break
        u = np_view(users.contiguous())
        cands = {
            n: kernels.sample_uniform_bitmap(u, n, *_uniform_args(td), 7 * len(batches) + n)
            for n in (30, 50, 72, 200)
        }
        cands["pos"] = np_view(pos.contiguous())
        batches.append((u, cands))
    calls = {}
    for name, k, version_td in (
        ("before", old, old_data.from_prepared(data, "cpu", "numba")),
        ("after", kernels, td),
    ):
        for key, call in {**_draw_calls(k, version_td), **_choice_calls(k, tables, hist)}.items():
            calls[(key, name)] = call
    u0, c0 = batches[0]
    for key in _choice_calls(kernels, tables, hist):  # the choices must not change
        if key.startswith("top_n_choice"):
            continue
        x, y = (calls[(key, v)](u0, 3, c0) for v in ("before", "after"))
        for xa, ya in zip(*((o if isinstance(o, tuple) else (o,)) for o in (x, y)), strict=True):
            np.testing.assert_array_equal(xa, ya)
    junk = np.zeros(4_000_000)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in calls}
    order = list(calls)
    for r, (u, c) in enumerate(batches):
        for key in order if r % 2 else order[::-1]:
            junk += 1.0  # evicts the caches between calls, as the rest of a training step does
            t = time.perf_counter()
            calls[key](u, r, c)
            times[key].append(time.perf_counter() - t)
    print(f"{a.preset}, {a.threads} thread(s): median ms per call over {len(batches)} batches of 1,024")
    print("| kernel | before (ms) | after (ms) | after / before |")
    print("|---|---:|---:|---:|")
    for key in dict.fromkeys(k for k, _ in calls):
        before, after = (1e3 * float(np.median(times[(key, v)])) for v in ("before", "after"))
        print(f"| {key} | {before:.3f} | {after:.3f} | {after / before:.2f} |")


def _uniform_args(td) -> tuple:
    arr = td._arrays
    return arr["click_gaps"], arr["click_indptr"], arr["click_free"], td.n_items


if __name__ == "__main__":
    main()
