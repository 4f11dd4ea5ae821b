"""Data-parallel training: ranks under torchrun (gloo on 127.0.0.1) against one process.

Two levels:

* the synchronised steps, exactly: two gloo processes (spawned here, rendezvous through a file) each take
  half of a fixed batch through :class:`reinforcens.ops.distributed.DistributedOps`, and the model they
  end with is the one a single process gets from the undistributed step on the whole batch (bit for bit
  for the fused steps, which run on the gathered batch; to float rounding for autograd, whose gradients
  are summed over the ranks);
* whole runs with ``torchrun --nproc-per-node 2 -m reinforcens train``: the metrics of 2 ranks at batch B
  are those of one process at batch 2B within the tolerance below (the ranks draw other negatives), only
  rank 0 writes the run directory, and a run killed mid-way resumes to exactly the uninterrupted result.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from reinforcens.models import ModelSpec, make_model
from reinforcens.ops import make_ops
from reinforcens.ops.base import SoftmaxChoice
from reinforcens.optim import GMFOptimizer

#: |valid AUC of 2 ranks at batch B - valid AUC of one process at batch 2B| allowed on ``tiny``. The two
#: runs share the initialisation and the data order and differ in the negatives drawn; over seeds 0-7 of
#: uniform sampling (20 epochs, lr 0.01) the differences measured were at most 0.017, and the valid AUC
#: of one process varies by 0.009 (standard deviation) from seed to seed.
AUC_TOLERANCE = 0.03

N_USERS, N_ITEMS, DIM = 12, 20, 4


def _batch(seed: int = 0, n: int = 9) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(0, N_USERS, (n,), generator=g)
    users[1] = users[0]  # a repeated row across the two halves
    return {
        "users": users,
        "pos": torch.randint(0, N_ITEMS, (n,), generator=g),
        "neg": torch.randint(0, N_ITEMS, (n,), generator=g),
        "cands": torch.randint(0, N_ITEMS, (n, 5), generator=g),
        "rewards": torch.randn(n, generator=g),
    }


def _model(kind: str):
    """A model with fixed initial weights (LightGCN on a fixed random click graph)."""
    g = torch.Generator().manual_seed(11)
    clicks = torch.randint(0, N_USERS * N_ITEMS, (40,), generator=g).unique()
    users, items = (clicks // N_ITEMS).numpy(), (clicks % N_ITEMS).numpy()
    spec = ModelSpec(kind, N_USERS, N_ITEMS, DIM, layers=2, click_users=users, click_items=items)
    return make_model(spec, generator=torch.Generator().manual_seed(3))


def _steps(kind: str, backend: str, ops, batch, shard, optimizer: str = "adam") -> dict:
    """Two BPR steps (with ``optimizer``), then (GMF/MF) two REINFORCE steps of a policy, on this rank's
    share; the final state and the loss of each BPR step."""
    model = _model(kind)
    opt = model.make_optimizer(0.05, ops, optimizer)
    users, pos, neg = shard(batch["users"], batch["pos"], batch["neg"])
    losses = [float(opt.bpr_step(users, pos, neg, 1e-3)[0]) for _ in range(2)]
    out = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    out["losses"] = torch.tensor(losses, dtype=torch.float64)
    if kind in ("gmf", "mf"):
        policy = _model(kind)
        popt = GMFOptimizer(policy, 0.05, backend=ops)
        full = make_ops(backend).softmax_choice(
            policy.tables(), batch["users"], batch["cands"], 1.0, torch.Generator().manual_seed(5)
        )  # one draw of the whole batch, shared so that both sides step on the same draw
        for _ in range(2):
            fields = [full.log_softmax, full.choice]
            rows = [r for r in (full.user_rows, full.item_rows) if r is not None]
            u, c, r, ls, ch, *kept = shard(batch["users"], batch["cands"], batch["rewards"], *fields, *rows)
            drawn = SoftmaxChoice(ls, ch, *(kept if kept else (None, None)))
            ops.reinforce_step(popt, u, c, drawn, r, 1e-3, 1.0)
        out.update({f"policy.{k}": v.clone() for k, v in policy.state_dict().items()})
    return out


def shard_of(parallel, batch):
    return parallel.shard(batch["users"], batch["pos"], batch["neg"])


def _rank_main(rank: int, store: str, result: str, kind: str, backend: str, optimizer: str) -> None:
    import torch.distributed as dist

    from reinforcens.backend import set_threads
    from reinforcens.ops.distributed import DistributedOps
    from reinforcens.parallel import TorchDistributed

    set_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        parallel = TorchDistributed(torch.device("cpu"))
        ops = DistributedOps(make_ops(backend), parallel)
        out = _steps(kind, backend, ops, _batch(), parallel.shard, optimizer)
        # gather and all_sum with uneven and empty shares
        n = (3, 0)[rank]
        (a, b), start = parallel.gather(torch.arange(n) + 10 * rank, torch.ones((n, 2, 3)) * rank)
        out["gathered"] = a
        out["gathered_rows"] = torch.tensor([b.shape[0], start])
        out["summed"] = parallel.all_sum(torch.tensor([1.0, rank]))
        # realign: a rank whose state drifted (here: rank 1's, by one rounding step) gets rank 0's back
        model = _model(kind)
        opt = model.make_optimizer(0.05, ops)
        opt.bpr_step(*shard_of(parallel, _batch()), 1e-3)
        if rank == 1:
            with torch.no_grad():
                w = next(p for p in model.parameters() if p.dim() == 2)
                w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(float("inf")))
        out["realigned"] = torch.tensor([parallel.realign([model, opt]), parallel.realign([model, opt])])
        out["after_realign"] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        torch.save(out, f"{result}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("kind", "backend", "optimizer"),
    [("gmf", "torch", "adam"), ("gmf", "numba", "adam"), ("mf", "torch", "adam"),
     ("lightgcn", "torch", "adam"), ("gmf", "torch", "sgd"), ("gmf", "numba", "sgd"),
     ("lightgcn", "torch", "sgd")],
)  # fmt: skip
def test_two_ranks_take_the_one_process_step_of_the_whole_batch(tmp_path, kind, backend, optimizer):
    mp.start_processes(
        _rank_main,
        args=(str(tmp_path / "store"), str(tmp_path / "out"), kind, backend, optimizer),
        nprocs=2,
        start_method="spawn",
    )
    ranks = [torch.load(tmp_path / f"out.{r}") for r in range(2)]
    one = _steps(kind, backend, make_ops(backend), _batch(), lambda *t: t, optimizer)
    for key, value in one.items():
        for r in range(2):
            if kind == "lightgcn":  # the ranks' gradients are summed: float rounding apart
                torch.testing.assert_close(ranks[r][key], value, rtol=1e-5, atol=1e-6)
            else:  # the fused steps run on the gathered batch: the same arithmetic
                assert torch.equal(ranks[r][key], value), (key, r)
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # the ranks stay identical
    # Parallel.gather: rank order, uneven (3 and 0 rows), this rank's start; all_sum: elementwise
    for r in range(2):
        assert ranks[r]["gathered"].tolist() == [0, 1, 2]
        assert ranks[r]["gathered_rows"].tolist() == [3, (0, 3)[r]]
        assert ranks[r]["summed"].tolist() == [2.0, 1.0]
        assert ranks[r]["realigned"].tolist() == [True, False]  # drift found, then none left
    assert torch.equal(ranks[0]["after_realign"], ranks[1]["after_realign"])


# ---------------------------------------------------------------------- whole runs under torchrun
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(args: list[str]) -> list[str]:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    port = _free_port()
    return [torchrun, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(port),
            "-m", "reinforcens", "train", *args]  # fmt: skip


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _train_args(data: Path, out: Path, sampler: str, batch: int, *extra: str) -> list[str]:
    return ["--data", str(data), "--sampler", sampler, "--out", str(out), "--backend", "torch",
            "--batch-size", str(batch), "--lr", "0.01", "--quiet", "--json", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dir(tiny_prepared):
    return Path(tiny_prepared.path)


def test_two_gloo_ranks_train_tiny_as_one_process_at_the_doubled_batch(tiny_dir, tmp_path):
    from conftest import chance_threshold

    from reinforcens.data.prepared import load_prepared

    common = ("--epochs", "20", "--pretrain-epochs", "10", "--seed", "0")
    two = subprocess.run(
        _torchrun(_train_args(tiny_dir, tmp_path / "two", "uniform", 64, *common)),
        capture_output=True, text=True, env=_env(), timeout=300, check=False,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "reinforcens", "--threads", "1", "train",
         *_train_args(tiny_dir, tmp_path / "one", "uniform", 128, *common)],
        capture_output=True, text=True, env=_env(), timeout=300, check=True,
    )  # fmt: skip
    m2, m1 = json.loads(two.stdout), json.loads(one.stdout)  # rank 1 prints nothing: one JSON document
    floor = chance_threshold(load_prepared(tiny_dir))
    assert m1["valid.auc"] > floor and m2["valid.auc"] > floor
    assert abs(m2["valid.auc"] - m1["valid.auc"]) <= AUC_TOLERANCE
    assert abs(m2["test.auc"] - m1["test.auc"]) <= AUC_TOLERANCE
    assert m2["epochs"] == m1["epochs"]
    # rank 0 alone wrote the run: one run directory, which says how many ranks computed it
    assert json.loads((tmp_path / "two" / "run.json").read_text())["ranks"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["test.auc"] == m2["test.auc"]


def test_a_learned_sampler_starts_alike_on_every_rank(tiny_dir, tmp_path):
    """RNS from scratch (no pretrained policy): its policy's initial weights are drawn before the ranks'
    sampler streams part, so the ranks never differ (on the CPU no epoch needs realigning). They once
    drew them from their own streams, and every rank's epoch 1 ran another policy."""
    out = tmp_path / "run"
    extra = ("--init", "scratch", "--sampler-init", "scratch", "--epochs", "2", "--eval-every", "1")
    done = subprocess.run(
        _torchrun(_train_args(tiny_dir, out, "rns", 64, *extra)),
        capture_output=True, text=True, env=_env(), timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert not any(r.get("ranks_realigned") for r in rows)


def test_a_killed_data_parallel_run_resumes_to_the_uninterrupted_result(tiny_dir, tmp_path):
    """RNS on 2 ranks, killed (SIGKILL to torchrun and both ranks) after a few epochs, then resumed:
    the resumed run ends with the metrics of the run that was never interrupted, so every rank's state
    and random stream came back."""
    common = ("--epochs", "12", "--pretrain-epochs", "4", "--eval-every", "1", "--patience", "50")
    full = subprocess.run(
        _torchrun(_train_args(tiny_dir, tmp_path / "full", "rns", 64, *common)),
        capture_output=True, text=True, env=_env(), timeout=300, check=False,
    )  # fmt: skip
    assert full.returncode == 0, full.stderr[-3000:]
    part = tmp_path / "part"
    proc = subprocess.Popen(
        _torchrun(_train_args(tiny_dir, part, "rns", 64, *common)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True,
    )  # fmt: skip
    epochs = part / "epochs.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if epochs.is_file() and len(epochs.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    tree = _descendants(proc.pid)  # torchrun starts its ranks in sessions of their own
    for pid in [proc.pid, *tree]:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)
    while any(Path(f"/proc/{pid}").exists() and _state(pid) != "Z" for pid in tree):
        time.sleep(0.05)
    assert not (part / "metrics.json").exists()
    resumed = subprocess.run(
        _torchrun(_train_args(tiny_dir, part, "rns", 64, *common, "--resume")),
        capture_output=True, text=True, env=_env(), timeout=300, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = json.loads(full.stdout), json.loads(resumed.stdout)
    assert {k: v for k, v in a.items() if k.startswith(("valid.", "test."))} == {
        k: v for k, v in b.items() if k.startswith(("valid.", "test."))
    }
    # the run was computed by 2 ranks: one process may not continue it
    one = subprocess.run(
        [sys.executable, "-m", "reinforcens", "train", *_train_args(tiny_dir, part, "rns", 64, *common,
                                                                      "--resume")],
        capture_output=True, text=True, env=_env(), timeout=300, check=False,
    )  # fmt: skip
    assert one.returncode != 0 and "ranks" in one.stderr


def test_ranks_of_one_machine_share_its_cpus(monkeypatch):
    """Under torchrun each rank gets the CPUs over the ranks of its machine (the thread pools of two
    ranks with all the CPUs each contended: with the compiled backend, 2 ranks ran uniform sampling at
    0.11x and DNS at 0.36x the speed of one process, benchmarks/scaling.py)."""
    from reinforcens.backend import available_cpus
    from reinforcens.parallel import rank_threads

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert rank_threads() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert rank_threads() == max(available_cpus() // 2, 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(10 * available_cpus()))
    assert rank_threads() == 1
