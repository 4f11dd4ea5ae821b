"""Row-wise Adam variants on zhihu-like rows (2,048 rows per step, repeats merged): separate weight and
moment tables, one row-packed table, and torch.compile of a buffer-merged step, alternated in one process.

    python benchmarks/adam_variants.py    # needs the zhihu preset prepared by `reinforcens bench`
"""

import statistics
import time

import torch

from reinforcens.data.prepared import load_prepared

torch.set_num_threads(1)

d = load_prepared(
    str(
        __import__("reinforcens.cli.bench", fromlist=["x"]).ensure_prepared(
            "zhihu", __import__("reinforcens.cli.bench", fromlist=["x"]).default_cache()
        )
    )
)
pos = torch.as_tensor(d.train_clicks.indices)
n, K = d.n_items, 32
gen = torch.Generator().manual_seed(0)


def batch():
    p = pos[torch.randint(0, pos.numel(), (1024,), generator=gen)]
    return torch.cat([p, torch.randint(0, n, (1024,), generator=gen)])


rows_list = [batch() for _ in range(40)]
G = torch.randn(2048, K) * 1e-3
W = torch.randn(n, K)
M = torch.zeros(n, K)
V = torch.zeros(n, K)
P = torch.zeros(n, 3, K)
P[:, 0] = W
b1, b2, eps, ss = 0.9, 0.999, 1e-8, 1e-3


def merge(r):
    u, inv = torch.unique(r, return_inverse=True)
    return u, torch.zeros(u.numel(), K).index_add_(0, inv, G)


def sep(r):
    u, g = merge(r)
    m = M.index_select(0, u).lerp_(g, 1 - b1)
    v = V.index_select(0, u).mul_(b2).addcmul_(g, g, value=1 - b2)
    M[u] = m
    V[u] = v
    w = W.index_select(0, u).addcdiv_(m, v.sqrt_().add_(eps), value=-ss)
    W[u] = w


def packed(r):
    u, g = merge(r)
    p = P.index_select(0, u)
    m = p[:, 1].lerp_(g, 1 - b1)
    v = p[:, 2].mul_(b2).addcmul_(g, g, value=1 - b2)
    p[:, 0].addcdiv_(m, v.sqrt().add_(eps), value=-ss)
    P[u] = p


def only_merge(r):
    merge(r)


fs = [sep, packed, only_merge]
T = {f.__name__: [] for f in fs}
for _rep in range(7):
    for f in fs:
        t0 = time.perf_counter()
        for r in rows_list:
            f(r)
        T[f.__name__].append((time.perf_counter() - t0) / len(rows_list) * 1e6)
for k, v in T.items():
    print(k, round(statistics.median(v), 1), [round(x) for x in v])
S = torch.zeros(n, K)


def scratch_step(r, G):
    S.index_add_(0, r, G)
    g = S[r]
    S[r] = 0.0
    m = M[r].lerp(g, 1 - b1)
    v = V[r] * b2 + (1 - b2) * g * g
    M[r] = m
    V[r] = v
    W[r] = W[r] - ss * m / (v.sqrt() + eps)


t0 = time.perf_counter()
cs = torch.compile(scratch_step, dynamic=False, fullgraph=True)
cs(rows_list[0], G)
print("compile", time.perf_counter() - t0)


def compiled(r):
    cs(r, G)


def eager_scratch(r):
    scratch_step(r, G)


fs = [sep, compiled, eager_scratch]
T = {f.__name__: [] for f in fs}
for _rep in range(7):
    for f in fs:
        t0 = time.perf_counter()
        for r in rows_list:
            f(r)
        T[f.__name__].append((time.perf_counter() - t0) / len(rows_list) * 1e6)
for k, v in T.items():
    print(k, round(statistics.median(v), 1), [round(x) for x in v])
