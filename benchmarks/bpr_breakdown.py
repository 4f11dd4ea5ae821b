"""Where a BPR epoch goes, step by step, for each update rule: the batch draw (shuffled positives), the
negative draw and the fused BPR step, timed call by call over the batches of one epoch.

Usage::

    python benchmarks/bpr_breakdown.py [--preset zhihu] [--threads 2] [--optimizers adam,sgd] [--model gmf]

Uses the preset cached by ``reinforcens bench``. Prints milliseconds per batch of each step and the
epoch they add up to, one row per optimizer; one invocation is one comparison.
"""

from __future__ import annotations

import argparse
import time

import torch

from reinforcens.backend import set_threads
from reinforcens.bench.cache import default_cache, ensure_prepared
from reinforcens.config import TrainConfig
from reinforcens.data.prepared import load_prepared
from reinforcens.models import ModelSpec, make_model
from reinforcens.samplers import make_sampler
from reinforcens.training_data import TrainingData


def breakdown(data, optimizer: str, model_kind: str, warmup: int = 30) -> dict[str, float]:
    cfg = TrainConfig.build(optimizer=optimizer, model=model_kind, lr=1e-3 if optimizer == "adam" else 0.05)
    td = TrainingData.from_prepared(data, "cpu", "numba")
    model = make_model(ModelSpec.of(cfg, data), generator=torch.Generator().manual_seed(0))
    opt = model.make_optimizer(cfg.lr, td.ops, cfg.optimizer)
    sampler = make_sampler("uniform", td, torch.Generator().manual_seed(1))
    parts = {"batch draw": 0.0, "negative draw": 0.0, "BPR step": 0.0}
    batches = td.batches(cfg.batch_size, torch.Generator().manual_seed(2), 1)
    n = 0
    while True:
        t0 = time.perf_counter()
        try:
            users, pos = next(batches)
        except StopIteration:
            break
        t1 = time.perf_counter()
        neg = sampler.sample(users, pos, model)
        t2 = time.perf_counter()
        opt.bpr_step(users, pos, neg.items, cfg.l2)
        t3 = time.perf_counter()
        n += 1
        if n > warmup:
            parts["batch draw"] += t1 - t0
            parts["negative draw"] += t2 - t1
            parts["BPR step"] += t3 - t2
    timed = max(n - warmup, 1)
    out = {k: 1000 * v / timed for k, v in parts.items()}
    out["epoch (s)"] = sum(parts.values()) / timed * n
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="zhihu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--optimizers", default="adam,sgd")
    p.add_argument("--model", default="gmf")
    a = p.parse_args()
    set_threads(a.threads)
    data = load_prepared(ensure_prepared(a.preset, default_cache(), 0, True))
    rows = {o: breakdown(data, o, a.model) for o in a.optimizers.split(",")}
    keys = list(next(iter(rows.values())))
    print("| optimizer | " + " | ".join(f"{k} (ms/batch)" if k != "epoch (s)" else k for k in keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for o, r in rows.items():
        print(f"| {o} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
