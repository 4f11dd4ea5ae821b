"""Where the time of a training epoch goes: torch.profiler over a few hundred batches of one method.

    python benchmarks/profile_epoch.py --preset zhihu --method rns30 --batches 100 --threads 1

Uses the preset cached by ``reinforcens bench`` (generated and prepared on first use) and prints the
operators by self CPU time, plus the time of the same batches without the profiler.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

from reinforcens.backend import set_threads
from reinforcens.bench import OUR_METHODS, build_method, default_cache, ensure_prepared
from reinforcens.config import TrainConfig
from reinforcens.data.prepared import load_prepared
from reinforcens.train import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="zhihu")
    p.add_argument("--method", default="bpr", choices=sorted(OUR_METHODS))
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache", default=None)
    p.add_argument("--rows", type=int, default=25, help="operators to show")
    args = p.parse_args()

    set_threads(args.threads)
    prep = ensure_prepared(args.preset, Path(args.cache) if args.cache else default_cache())
    data = load_prepared(prep)
    trainer = Trainer(data, TrainConfig.build(device=args.device), None, progress=False)
    method = build_method(trainer, args.method, 0)
    method.train_batches(10)
    t0 = time.perf_counter()
    method.train_batches(args.batches)
    plain = time.perf_counter() - t0
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        method.train_batches(args.batches)
    n_batches = -(-trainer.train_data.n_positives // trainer.config.batch_size)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    print(
        f"{args.method}: {args.batches} batches in {plain:.3f} s without the profiler "
        f"({plain / args.batches * 1e3:.2f} ms/batch; {n_batches / args.batches * plain:.1f} s per epoch)"
    )


if __name__ == "__main__":
    main()
