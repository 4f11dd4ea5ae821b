"""Per-batch time of two versions of the package, alternated in one process (used for the before/after
table of BENCHMARKS.md).

    python benchmarks/ab_versions.py THREADS PREP METHODS BATCHES PKG_A,PKG_B
    python benchmarks/ab_versions.py 1 ~/.cache/reinforcens/bench/zhihu-seed0/prep bpr,dns,rns30,rns100 40 \
        reinforcens_before,reinforcens

METHODS: bpr, bpr-sgd (BPR with plain SGD), dns, rns30, rns100, mixgcf16 (MixGCF, N 16), recns50 (RecNS,
C 50, K 10): the settings tuned on `small` in EXPERIMENTS.md section 15.

PKG_A is an importable copy of an older src/reinforcens with its imports renamed (e.g. the tree of commit
33899c7 copied to /tmp/before/reinforcens_before with ``reinforcens.`` replaced by ``reinforcens_before.``).
"""

import dataclasses
import statistics
import sys
import time
from importlib import import_module

import torch

threads = int(sys.argv[1])
prep = sys.argv[2]
names = sys.argv[3].split(",")
nb = int(sys.argv[4])
pkgs = sys.argv[5].split(",")
torch.set_num_threads(threads)
sys.path.insert(0, __import__("os").environ.get("AB_PATH", "/tmp/before"))
OPTS = {
    "bpr": ("uniform", {}),
    "bpr-sgd": ("uniform", {}),  # with --optimizer sgd
    "dns": ("dns", {}),
    "rns30": ("rns", {"n_candidates": 30}),
    "rns100": ("rns", {"n_candidates": 100}),
    "mixgcf16": ("mixgcf", {"n_candidates": 16}),
    "recns50": ("recns", {"n_candidates": 50, "n_negs": 10}),
}
setups = {}
for pkg in pkgs:
    T = import_module(pkg + ".train")
    P = import_module(pkg + ".data.prepared")
    C = import_module(pkg + ".config")
    S = import_module(pkg + ".samplers")
    optim = import_module(pkg + ".optim")
    data = P.load_prepared(prep)
    tr = T.Trainer(data, C.TrainConfig.build(), None, progress=False)
    full = tr.train_data
    for name in names:
        sname, opts = OPTS[name]
        gens = T._generators(0, tr.device, 3)
        model = tr._new_model(gens[0])
        if name.endswith("-sgd"):
            opt = model.make_optimizer(1e-3, tr.backend, "sgd")
        elif hasattr(model, "make_optimizer"):  # the versions with a Recommender interface
            opt = model.make_optimizer(1e-3, tr.backend)
        else:
            opt = optim.GMFOptimizer(model, 1e-3, backend=tr.backend)
        smp = S.make_sampler(sname, full, gens[2], opts, S.SamplerContext())
        setups[(pkg, name)] = (tr, full, model, opt, smp, gens[1])


def run(key, n):
    tr, full, model, opt, smp, bg = setups[key]
    tr.train_data = dataclasses.replace(
        full, pos_users=full.pos_users[: n * 1024], pos_items=full.pos_items[: n * 1024]
    )
    t0 = time.perf_counter()
    st = tr.train_epoch(model, opt, smp, bg, 1, "x")
    return time.perf_counter() - t0, st


for key in setups:
    run(key, 10)
res = {k: [] for k in setups}
for _r in range(3):
    for key in setups:
        t, st = run(key, nb)
        res[key].append(t / nb * 1e3)
for key, v in res.items():
    print(key, f"median {statistics.median(v):.3f} ms/batch", [round(x, 3) for x in v])
