"""Where a BPR epoch goes, step by step, for each update rule and sampler: the batch draw (shuffled
positives), the negative draw and the fused BPR step, timed call by call over the batches of one epoch.

Usage::

    python benchmarks/bpr_breakdown.py [--preset zhihu] [--threads 2] [--optimizers adam,sgd]
        [--samplers uniform,dns] [--model gmf]

Uses the preset cached by ``reinforcens bench``. Prints milliseconds per batch of each step and the
epoch they add up to, one row per sampler and optimizer; one invocation is one comparison. For DNS
(50 candidates) the negative draw is the two calls of ``DNSSampler.sample``, timed apart: drawing the
uniform candidates (``TrainingData.sample_uniform``) and scoring them for the best
(``Ops.best_candidate`` and the gather).
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

PARTS = ("batch draw", "negative draw", "of it: candidate draw", "of it: scoring", "BPR step")


def breakdown(data, optimizer: str, model_kind: str, sampler_name: str = "uniform", warmup: int = 30) -> dict:
    cfg = TrainConfig.build(optimizer=optimizer, model=model_kind, lr=1e-3 if optimizer == "adam" else 0.05)
    td = TrainingData.from_prepared(data, "cpu", "numba")
    model = make_model(ModelSpec.of(cfg, data), generator=torch.Generator().manual_seed(0))
    opt = model.make_optimizer(cfg.lr, td.ops, cfg.optimizer)
    sampler = make_sampler(sampler_name, td, torch.Generator().manual_seed(1))
    dns = sampler_name == "dns"
    parts = dict.fromkeys(PARTS, 0.0)
    batches = td.batches(cfg.batch_size, torch.Generator().manual_seed(2), 1)
    n = 0
    while True:
        t0 = time.perf_counter()
        try:
            users, pos = next(batches)
        except StopIteration:
            break
        t1 = time.perf_counter()
        if dns:  # DNSSampler.sample, its two calls timed apart
            cands = td.sample_uniform(users, sampler.config.dns_candidates, sampler.generator)
            tc = time.perf_counter()
            best = td.ops.best_candidate(model.tables(), users, cands)
            negatives = cands.gather(1, best).squeeze(1)
        else:
            negatives = sampler.sample(users, pos, model).items
            tc = time.perf_counter()
        t2 = time.perf_counter()
        opt.bpr_step(users, pos, negatives, cfg.l2)
        t3 = time.perf_counter()
        n += 1
        if n > warmup:
            parts["batch draw"] += t1 - t0
            parts["negative draw"] += t2 - t1
            parts["of it: candidate draw"] += (tc - t1) if dns else 0.0
            parts["of it: scoring"] += (t2 - tc) if dns else 0.0
            parts["BPR step"] += t3 - t2
    timed = max(n - warmup, 1)
    out = {k: 1000 * v / timed for k, v in parts.items()}
    out["epoch (s)"] = (parts["batch draw"] + parts["negative draw"] + parts["BPR step"]) / timed * n
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="zhihu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--optimizers", default="adam,sgd")
    p.add_argument("--samplers", default="uniform")
    p.add_argument("--model", default="gmf")
    a = p.parse_args()
    set_threads(a.threads)
    data = load_prepared(ensure_prepared(a.preset, default_cache(), 0, True))
    rows = {
        (s, o): breakdown(data, o, a.model, s) for s in a.samplers.split(",") for o in a.optimizers.split(",")
    }
    keys = list(next(iter(rows.values())))
    heads = [f"{k} (ms/batch)" if k != "epoch (s)" else k for k in keys]
    print("| sampler | optimizer | " + " | ".join(heads) + " |")
    print("|---|---|" + "---:|" * len(keys))
    for (s, o), r in rows.items():
        print(f"| {s} | {o} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
