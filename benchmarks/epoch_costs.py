"""Seconds per training epoch of each method of a tuned comparison at its tuned setting, the methods
alternating in one process, so that their ratios to uniform sampling share the machine's load.

Usage::

    python benchmarks/epoch_costs.py PREP TUNED [--threads 1] [--repeats 3] [--methods uniform,dns,...]

``PREP`` is the prepared dataset the comparison ran on; ``TUNED`` its ``tune/tuned.json`` (written by
``reinforcens compare --tune``): the common training values (``base``: the model and its options) and
each method's best setting. Each method trains one warm-up epoch, then ``--repeats`` timed epochs,
the methods taking turns (the order reversed every other round); a learned sampler starts from the
recommender's initial tables (``init_from_pretrained``), as after pretraining. Prints the median
seconds per epoch and the ratio to uniform sampling's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib import import_module

import torch

from reinforcens.backend import set_threads
from reinforcens.data.prepared import load_prepared


def epoch_closure(pkg: str, data, train_values: dict, method: str, options: dict):
    """One training epoch of ``method`` with ``options`` on ``data``, built by package ``pkg``'s public
    API (``reinforcens``, or an older copy under another name): the model and the sampler seeded, a
    learned sampler started from the model's initial tables."""
    train = import_module(pkg + ".train")
    config_mod = import_module(pkg + ".config")
    models = import_module(pkg + ".models")
    samplers = import_module(pkg + ".samplers")
    cfg = config_mod.TrainConfig.build(**train_values)
    trainer = train.Trainer(data, cfg, None, progress=False)
    model = models.make_model(models.ModelSpec.of(cfg, data), generator=torch.Generator().manual_seed(0))
    ctx = samplers.SamplerContext(
        dim=cfg.dim, lr=cfg.lr, l2=cfg.l2, init_std=cfg.init_std, model=cfg.resolved_sampler_model()
    )
    gen = torch.Generator().manual_seed(1)
    sampler = samplers.make_sampler(method, trainer.train_data, gen, dict(options), ctx)
    if hasattr(sampler, "init_from_pretrained"):
        sampler.init_from_pretrained(model.dot_state())
    opt = model.make_optimizer(cfg.lr, trainer.train_data.ops, cfg.optimizer)
    order = torch.Generator().manual_seed(2)
    return lambda: trainer.train_epoch(model, opt, sampler, order, 1, "epoch")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("prep")
    p.add_argument("tuned")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default=None, help="comma-separated; default: every tuned method")
    a = p.parse_args()
    set_threads(a.threads)
    with open(a.tuned) as f:
        tuned = json.load(f)
    names = a.methods.split(",") if a.methods else list(tuned["methods"])
    data = load_prepared(a.prep)
    epochs = {}
    for m in names:
        values = tuned["methods"][m]["values"]
        train_values = {**tuned["base"], "lr": values["lr"], "l2": values["l2"]}
        epochs[m] = epoch_closure("reinforcens", data, train_values, m, values.get("sampler_options", {}))
    for epoch in epochs.values():  # warm-up: compilation and caches
        epoch()
    times: dict[str, list[float]] = {m: [] for m in names}
    for r in range(a.repeats):
        for m in names if r % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            epochs[m]()
            times[m].append(time.perf_counter() - t)
    med = {m: statistics.median(v) for m, v in times.items()}
    ref = med.get("uniform")
    print(f"{a.prep}, {tuned['base']}, {a.threads} thread(s): median seconds per epoch of {a.repeats}")
    print("| method | s per epoch | / uniform |")
    print("|---|---:|---:|")
    for m in names:
        ratio = f"{med[m] / ref:.1f}" if ref else "-"
        print(f"| {m} | {med[m]:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
