# ruff: noqa: E402
"""Time of ``evaluate_lists`` on all zhihu test lists, old and new package alternated in one process.

AB_PATH=/tmp/before python benchmarks/ab_eval.py   # AB_PATH holds reinforcens_before (see ab_versions.py)
"""

import statistics
import sys
import time

import torch

sys.path.insert(0, __import__("os").environ.get("AB_PATH", "/tmp/before"))
torch.set_num_threads(1)
import reinforcens_before.evaluation as EB
import reinforcens_before.models.gmf as B

import reinforcens.evaluation as EA
import reinforcens.models.gmf as A
from reinforcens.data.prepared import load_prepared

d = load_prepared(
    __import__("reinforcens.cli.bench", fromlist=["x"]).ensure_prepared(
        "zhihu", __import__("reinforcens.cli.bench", fromlist=["x"]).default_cache()
    )
)
ma = A.GMF(d.n_users, d.n_items, 32, generator=torch.Generator().manual_seed(0))
mb = B.GMF(d.n_users, d.n_items, 32, generator=torch.Generator().manual_seed(0))
sa, sb = A.TorchScorer(ma), B.TorchScorer(mb)
T = {"before": [], "after": []}
for _r in range(3):
    for k, (s, E) in {"before": (sb, EB), "after": (sa, EA)}.items():
        t0 = time.perf_counter()
        res = E.evaluate_lists(s, d.test)
        T[k].append(time.perf_counter() - t0)
        print(k, res["auc"])
print({k: round(statistics.median(v), 3) for k, v in T.items()}, T)
