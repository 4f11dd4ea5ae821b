"""``reinforcens demo``: the README's main job on the embedded simulator data.

simulate (``small`` preset) -> prepare -> stats -> evaluate ItemPop -> train BPR-GMF (uniform) and RNS
-> print the test results side by side. Every step writes under ``--out`` and is reused when run again.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from reinforcens.cli._common import fmt, seed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulate, prepare, train BPR-GMF and RNS, compare (the README demo)")
    p.add_argument("--out", default="demo", help="working directory (default ./demo)")
    p.add_argument("--preset", default="small", help="simulator preset (default small)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument(
        "--epochs", type=int, default=20, help="maximum epochs of each training stage (default 20)"
    )
    p.add_argument(
        "--lr",
        type=float,
        default=0.01,
        help="learning rate of the demo (default 0.01, for a quick demo; the library's default is the "
        "paper's 0.001, which needs many more epochs)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reinforcens.config import TrainConfig
    from reinforcens.data.formats import read_log
    from reinforcens.data.prepared import (
        is_current_prepared_dir,
        is_prepared_dir,
        load_prepared,
        prepare,
        save_prepared,
    )
    from reinforcens.data.simulate import write_simulation
    from reinforcens.evaluation import ItemPop, evaluate
    from reinforcens.train import Trainer

    out = Path(args.out)
    sim, prep = out / "sim", out / "prep"
    if not (sim / "log.parquet").is_file():
        print(f"[1/5] simulating the {args.preset!r} preset into {sim}")
        write_simulation(sim, args.preset, args.seed)
    if is_prepared_dir(prep) and not is_current_prepared_dir(prep):
        print(f"[2/5] {prep} was prepared by an earlier version: preparing it again (and retraining)")
        shutil.rmtree(prep)
        shutil.rmtree(out / "runs", ignore_errors=True)  # they belong to the old dataset
    if not is_prepared_dir(prep):
        print(f"[2/5] preparing {prep}")
        log = read_log(sim / "log.parquet", "table")
        data = prepare(log, min_sessions=4, list_length=40, seed=args.seed)
        save_prepared(data, prep, extra_files={"ground_truth.npz": sim / "ground_truth.npz"})
    data = load_prepared(prep)
    s = data.stats()
    print(
        f"[3/5] {s['users']:,} users, {s['items']:,} items, train {s['train']:,} / valid {s['valid']:,} / "
        f"test {s['test']:,} clicks, {s['exposures']:,} exposures"
    )
    rows = {"ItemPop": evaluate(ItemPop.fit(data), data)["test"]}
    extra = {"epochs": args.epochs, "pretrain_epochs": args.epochs, "lr": args.lr}
    print(
        f"demo settings: learning rate {args.lr}, at most {args.epochs} epochs per stage "
        "(pass --lr/--epochs to change them); every other setting is the library default"
    )
    uniform_dir = out / "runs" / "bpr-gmf"
    for step, (label, sampler, run_dir) in enumerate(
        (("BPR-GMF", "uniform", uniform_dir), ("RNS", "rns", out / "runs" / "rns")), start=4
    ):
        print(f"[{step}/5] training {label} ({sampler} sampler) in {run_dir}")
        values = dict(sampler=sampler, seed=args.seed, **extra)
        if sampler == "rns":  # start from the BPR-GMF run, as the paper does
            values |= {"init": "pretrained", "pretrained": str(uniform_dir / "best.pt")}
        cfg = TrainConfig.build(**values)
        # a finished run is returned as it is, after it verifies; an interrupted one resumes
        metrics = Trainer(data, cfg, run_dir, progress=not args.quiet, resume=True).fit()
        rows[label] = {k.split(".", 1)[1]: v for k, v in metrics.items() if k.startswith("test.")}
    cols = ["auc", "ndcg", "recall@20", "ndcg@20", "true_auc"]
    print(
        "\ntest results (list AUC/NDCG as in the paper; Recall/NDCG@20 over all items; true AUC from the"
        " simulator's ground truth)"
    )
    print(f"{'method':10s}" + "".join(f"{c:>11s}" for c in cols))
    for label, res in rows.items():
        print(f"{label:10s}" + "".join(f"{fmt(res.get(c, float('nan'))):>11s}" for c in cols))
    return 0
