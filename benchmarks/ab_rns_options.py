"""Per-batch time of RNS (N_s = 30) with and without its approximations, interleaved in one process.

    python benchmarks/ab_rns_options.py --preset zhihu --threads 2
    python benchmarks/ab_rns_options.py --mmd-only --threads 1   # the MMD reward alone, B = 1024

With ``--mmd-only`` it times the exact MMD reward (compiled) against the random-feature one with 32 to
256 features on random features of a batch (1,024 generated, 1,000 exposed, K = 32, the five default
bandwidths), 30 calls each, twice.

Uses the preset cached by ``reinforcens bench``. Each variant trains its own
:meth:`reinforcens.train.Trainer` from the bench's public building blocks; after 10 warm-up batches the
variants take turns, ``--batches`` batches each, ``--rounds`` times, and the median round is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

from reinforcens.backend import set_threads
from reinforcens.bench import OUR_METHODS, build_method, default_cache, ensure_prepared
from reinforcens.config import TrainConfig
from reinforcens.data.prepared import load_prepared
from reinforcens.train import Trainer

VARIANTS = {
    "bpr": ("uniform", {}),
    "rns30": ("rns", {"n_candidates": 30}),
    "rns30 --mmd rff": ("rns", {"n_candidates": 30, "mmd": "rff"}),
    "rns30 --policy-gradient sampled": ("rns", {"n_candidates": 30, "policy_gradient": "sampled"}),
    "rns30 both": ("rns", {"n_candidates": 30, "mmd": "rff", "policy_gradient": "sampled"}),
}


def time_mmd() -> None:
    import torch

    from reinforcens.mmd import DEFAULT_BANDWIDTHS, mmd_reward, rff_mmd_reward

    g = torch.Generator().manual_seed(0)
    gen, exp = torch.randn(1024, 32, generator=g) * 0.1, torch.randn(1000, 32, generator=g) * 0.1
    calls = {"exact (compiled)": lambda: mmd_reward(gen, exp, DEFAULT_BANDWIDTHS, compiled=True)}
    for d in (32, 64, 128, 256):
        calls[f"rff {d}"] = lambda d=d: rff_mmd_reward(gen, exp, DEFAULT_BANDWIDTHS, d, g)
    for _ in range(2):
        for name, f in calls.items():
            f()
            t0 = time.perf_counter()
            for _ in range(30):
                f()
            print(f"{name}: {(time.perf_counter() - t0) / 30 * 1e3:.2f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="zhihu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mmd-only", action="store_true", help="time the MMD reward alone")
    args = p.parse_args()
    set_threads(args.threads)
    if args.mmd_only:
        time_mmd()
        return
    data = load_prepared(ensure_prepared(args.preset, default_cache()))
    methods = {}
    for name, spec in VARIANTS.items():
        OUR_METHODS[name] = spec
        trainer = Trainer(data, TrainConfig.build(), None, progress=False)
        methods[name] = build_method(trainer, name, 0)
        methods[name].train_batches(10)
    times: dict[str, list[float]] = {n: [] for n in VARIANTS}
    for _ in range(args.rounds):
        for name, method in methods.items():
            t0 = time.perf_counter()
            method.train_batches(args.batches)
            times[name].append((time.perf_counter() - t0) / args.batches * 1e3)
    base = statistics.median(times["rns30"])
    print("| variant | ms/batch (median) | rounds | vs rns30 |\n|---|---:|---|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.2f} | {', '.join(f'{t:.2f}' for t in ts)} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
