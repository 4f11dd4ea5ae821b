"""The benchmark command (smoke tests on ``tiny``) and the pieces of the fast training path, each checked
against the plain autograd / torch.optim computation it replaces."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_sampler_contract import build, model_for, sampler_for

import reinforcens.bench
from reinforcens.backend import resolve_backend
from reinforcens.bench import format_table, ratios, run_timing
from reinforcens.cli import main
from reinforcens.losses import bpr_loss, bpr_with_grads, l2_penalty
from reinforcens.mmd import gaussian_kernel, mmd_reward
from reinforcens.models.gmf import GMF
from reinforcens.optim import GMFOptimizer
from reinforcens.samplers.base import Negatives
from reinforcens.training_data import SortedKeys

# ------------------------------------------------------------------------------------------------
# the bench command
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-cache")


def test_bench_command_on_tiny(bench_cache, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--preset",
            "tiny",
            "--cache",
            str(bench_cache),
            "--repeats",
            "1",
            "--warmup-batches",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["preset"] == "tiny" and result["mode"] == "timing"
    for name in ("bpr", "dns", "rns30", "rns100", "rns30fast", "eval_lists"):
        t = result["times"][name]
        assert len(t["runs"]) == 1 and t["median"] > 0
    assert result["ratios"]["rns30_vs_bpr"] > 0
    if "implicit" in result["times"]:
        assert {"bpr_vs_implicit", "rns30_vs_implicit"} <= set(result["ratios"])
    else:
        assert "implicit" in result["skipped"]
    assert "| bpr |" in capsys.readouterr().out
    assert "targets" not in result and not _verdicts(result)
    # the preset is cached: a second run prepares nothing
    prep = bench_cache / "tiny-seed0" / "prep" / "meta.json"
    mtime = prep.stat().st_mtime
    again = run_timing("tiny", bench_cache, repeats=1, methods=("bpr",), warmup_batches=1, quiet=True)
    assert prep.stat().st_mtime == mtime
    assert set(again["times"]) == {"bpr"}
    assert "| bpr |" in format_table(again)


def _verdicts(obj, where="result"):
    """The places of a pass/fail verdict in a result (keys ``targets``, ``target`` or ``met``)."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("targets", "target", "met"):
                found.append(f"{where}[{key!r}]")
            found += _verdicts(value, f"{where}[{key!r}]")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found += _verdicts(value, f"{where}[{i}]")
    return found


@pytest.mark.parametrize("backend", [None, "torch", "numba"])
def test_bench_memory_mode_on_tiny(bench_cache, tmp_path, backend):
    if backend == "numba":
        pytest.importorskip("numba")
    out = tmp_path / "mem.json"
    args = [
        "bench",
        "--memory",
        "--preset",
        "tiny",
        "--cache",
        str(bench_cache),
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args + (["--backend", backend] if backend else [])) == 0
    result = json.loads(out.read_text())
    assert {"prepare", "train"} <= set(result["steps"])  # the simulation is cached by the test above
    assert all(s["returncode"] == 0 and s["peak_rss_mb"] > 10 for s in result["steps"].values())
    assert result["peak_rss_mb"] == max(result["steps"][k]["peak_rss_mb"] for k in ("prepare", "train"))
    # the training child trained with the backend asked for (auto: what it resolves to on the CPU)
    want = backend or resolve_backend("auto", torch.device("cpu"))
    train = result["steps"]["train"]
    assert train["backend"] == want and result["machine"]["backend"] == want
    assert f"--backend {backend or 'auto'}" in train["command"]
    assert set(train["methods"]) == {"bpr", "rns30"}
    assert all(0.0 <= m["auc"] <= 1.0 and m["seconds"] > 0 for m in train["methods"].values())
    assert not _verdicts(result)


def test_ratios_are_every_method_over_implicit_and_over_bpr():
    med = {"implicit": 1.0, "bpr": 2.0, "dns": 4.0, "rns30": 8.0, "rns100": 16.0, "eval_lists": 0.5}
    r = ratios(med)
    assert r == {
        "bpr_vs_implicit": 2.0,
        "dns_vs_implicit": 4.0,
        "rns30_vs_implicit": 8.0,
        "rns100_vs_implicit": 16.0,
        "eval_lists_vs_implicit": 0.5,
        "dns_vs_bpr": 2.0,
        "rns30_vs_bpr": 4.0,
        "rns100_vs_bpr": 8.0,
    }
    # without implicit (not installed), only the ratios to our BPR; a zero base gives none
    assert ratios({"bpr": 2.0, "rns30": 5.0}) == {"rns30_vs_bpr": 2.5}
    assert ratios({"bpr": 0.0, "rns30": 5.0}) == {}


# ------------------------------------------------------------------------------------------------
# the bench package: no acceptance targets, public training API only
# ------------------------------------------------------------------------------------------------


def _bench_modules() -> list[str]:
    names = ["reinforcens.bench", "reinforcens.cli.bench"]
    names += [f"reinforcens.bench.{m.name}" for m in pkgutil.iter_modules(reinforcens.bench.__path__)]
    return names


def test_bench_holds_no_acceptance_targets(bench_cache):
    for name in _bench_modules():
        module = importlib.import_module(name)
        assert not [a for a in vars(module) if "target" in a.lower()], name
    result = run_timing("tiny", bench_cache, repeats=1, methods=("bpr", "dns"), warmup_batches=1, quiet=True)
    assert "targets" not in result and not _verdicts(result)
    table = format_table(result)
    assert "target" not in table.lower() and "met" not in table.split()


def _private_uses(path: Path, module: str) -> list[str]:
    """Private names of other reinforcens modules that a source file uses: ``from reinforcens.x import
    _y``, a private module of another package, and ``obj._name`` on anything but ``self`` (the stdlib's
    ``argparse._SubParsersAction`` excepted); and attributes of other objects it assigns (a hot swap; the
    exit code of a child process the bench reaped itself, ``proc.returncode``, excepted)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.rsplit(".", 1)[0]
    found = []

    def private(part: str) -> bool:
        return part.startswith("_") and not part.startswith("__")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reinforcens"):
            mod = node.module or ""
            if any(private(p) for p in mod.split(".")) and mod.rsplit(".", 1)[0] != package:
                found.append(f"line {node.lineno}: from {mod}")
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if private(a.name)]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("reinforcens") and any(private(p) for p in a.name.split(".")):
                    found.append(f"line {node.lineno}: import {a.name}")
        elif isinstance(node, ast.Attribute) and private(node.attr):
            owner = ast.unparse(node.value)
            if owner != "self" and f"{owner}.{node.attr}" != "argparse._SubParsersAction":
                found.append(f"line {node.lineno}: {owner}.{node.attr}")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                owner = ast.unparse(t.value) if isinstance(t, ast.Attribute) else "self"
                if owner != "self" and ast.unparse(t) != "proc.returncode":
                    found.append(f"line {node.lineno}: assigns {ast.unparse(t)}")
    return found


def test_bench_uses_only_public_names_of_other_modules():
    root = Path(reinforcens.bench.__file__).parent
    files = {f"reinforcens.bench.{p.stem}": p for p in root.glob("*.py")}
    files["reinforcens.cli.bench"] = root.parent / "cli" / "bench.py"
    assert len(files) >= 6
    for module, path in files.items():
        assert not _private_uses(path, module), (module, _private_uses(path, module))


def test_the_private_use_check_catches_what_it_should(tmp_path):
    src = tmp_path / "x.py"
    src.write_text(
        "from reinforcens.train import _generators\n"
        "from reinforcens.cli._common import seed\n"
        "def f(trainer):\n"
        "    trainer._new_model(1)\n"
        "    trainer.train_data = None\n"
        "    self._ok = 1\n"
    )
    found = _private_uses(src, "reinforcens.bench.x")
    assert len(found) == 4, found
    assert not [f for f in _private_uses(src, "reinforcens.cli.x") if "_common" in f]


# ------------------------------------------------------------------------------------------------
# hand-computed gradients and the row-wise optimizer
# ------------------------------------------------------------------------------------------------


def _twin_models(n_users=30, n_items=40, dim=6):
    a = GMF(n_users, n_items, dim, generator=torch.Generator().manual_seed(1)).double()
    b = GMF(n_users, n_items, dim, generator=torch.Generator().manual_seed(1)).double()
    return a, b


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_bpr_with_grads_equals_autograd(l2):
    g = torch.Generator().manual_seed(0)
    m, _ = _twin_models()
    u = torch.randint(0, 30, (50,), generator=g)
    i, j = torch.randint(0, 40, (50,), generator=g), torch.randint(0, 40, (50,), generator=g)
    pu, qi, qj = m.user(u), m.item(i), m.item(j)
    loss = bpr_loss((pu * qi) @ m.h, (pu * qj) @ m.h) + l2 * l2_penalty(pu, qi, qj)
    gpu, gqi, gqj, gh = torch.autograd.grad(loss, [pu, qi, qj, m.h])
    with torch.no_grad():
        q = torch.cat([m.item.weight[i], m.item.weight[j]])
        loss2, grad_pu, grad_q, grad_h, neg = bpr_with_grads(m.user.weight[u], q, m.h, l2)
    assert float(loss2) == pytest.approx(float(loss.detach()), rel=1e-12)
    torch.testing.assert_close(grad_pu, gpu)
    torch.testing.assert_close(grad_q, torch.cat([gqi, gqj]))
    torch.testing.assert_close(grad_h, gh)
    torch.testing.assert_close(neg, ((pu * qj) @ m.h).detach())


@pytest.mark.parametrize("merge", ["sort", "buffer"])
def test_rowwise_adam_equals_sparse_adam(merge):
    """Repeated rows, several steps: the same trajectory as torch's SparseAdam (tables) + Adam (h)."""
    g = torch.Generator().manual_seed(0)
    ref, fast = _twin_models()
    sparse = torch.optim.SparseAdam([ref.user.weight, ref.item.weight], lr=0.05)
    dense = torch.optim.Adam([ref.h], lr=0.05)
    opt = GMFOptimizer(fast, 0.05)
    opt.user.merge = opt.item.merge = merge
    for _ in range(6):
        u = torch.randint(0, 30, (64,), generator=g)  # 64 draws of 30 rows: many repeats
        i, j = torch.randint(0, 40, (64,), generator=g), torch.randint(0, 40, (64,), generator=g)
        pu, qi, qj = ref.user(u), ref.item(i), ref.item(j)
        loss = bpr_loss((pu * qi) @ ref.h, (pu * qj) @ ref.h) + 0.1 * l2_penalty(pu, qi, qj)
        sparse.zero_grad()
        dense.zero_grad()
        loss.backward()
        sparse.step()
        dense.step()
        items = torch.cat([i, j])
        with torch.no_grad():
            _, gpu, gq, gh, _ = bpr_with_grads(fast.user.weight[u], fast.item.weight[items], fast.h, 0.1)
        opt.step_rows(u, gpu, items, gq, gh)
    for a, b in zip(ref.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    st = sparse.state_dict()["state"]
    torch.testing.assert_close(opt.item.exp_avg_sq, st[1]["exp_avg_sq"])
    # the autograd path of the optimizer (sparse .grad) takes the same step
    other = GMFOptimizer(ref, 0.05)
    other.load_state_dict({"sparse": sparse.state_dict(), "dense": dense.state_dict()})
    assert other.steps == 6
    torch.testing.assert_close(other.user.exp_avg, opt.user.exp_avg)
    u = torch.arange(30)
    for model, o in ((ref, other), (fast, opt)):
        o.zero_grad()
        (model(u, u % 40) ** 2).sum().backward()
        o.step()
    for a, b in zip(ref.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_optimizer_state_round_trip():
    m, m2 = _twin_models()
    opt = GMFOptimizer(m, 0.01)
    u = torch.arange(10)
    opt.step_rows(
        u, torch.randn(10, 6, dtype=torch.float64), u, torch.randn(10, 6, dtype=torch.float64), None
    )
    state = opt.state_dict()
    again = GMFOptimizer(m2, 0.5)
    again.load_state_dict(state)
    assert again.steps == 1 and again.lr == 0.01
    torch.testing.assert_close(again.item.exp_avg, opt.item.exp_avg)


@pytest.mark.parametrize("name", ["rns", "kbgan", "irgan"])
def test_learned_sampler_update_equals_autograd(name):
    """The REINFORCE step from the kept rows equals the same step through autograd."""
    _, td = build(5)
    users, pos = td.pos_users[:120], td.pos_items[:120]
    fast, ref = sampler_for(name, td, seed=3), sampler_for(name, td, seed=3)
    rec = model_for(td)
    neg = fast.sample(users, pos, rec)
    neg_ref = ref.sample(users, pos, rec)
    assert torch.equal(neg.items, neg_ref.items)
    cands, choice = neg_ref.candidates, neg_ref.policy.choice
    logits = ref.model(users, cands) / ref.config.temperature
    log_probs = torch.log_softmax(logits, 1).gather(1, choice).squeeze(1)
    torch.testing.assert_close(log_probs.detach(), neg.log_probs)
    scores = rec(users, neg.items).detach()
    fast.update(users, pos, neg, rec, scores)
    ref.update(users, pos, Negatives(neg.items, log_probs, candidates=cands), rec, scores)
    for a, b in zip(fast.model.parameters(), ref.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fast._sums[:6], ref._sums[:6])
    # the policy's entropy, summed over the batch (scipy's entropy of each row's softmax); the
    # autograd caller gave no distribution, so it adds none
    from scipy.stats import entropy

    probs = torch.softmax(logits.detach().double(), 1).numpy()
    assert float(fast._sums[6]) == pytest.approx(entropy(probs, axis=1).sum(), rel=1e-5)
    assert float(ref._sums[6]) == 0.0 and float(ref._sums[7]) == 0.0
    assert float(fast._sums[7]) == users.numel()


# ------------------------------------------------------------------------------------------------
# MMD, sampling and search
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.01, 0.5, 30.0])
def test_mmd_reward_equals_kernel_definition(scale):
    """Small features take the polynomial path, large ones the exp path: both match the kernel."""
    g = torch.Generator().manual_seed(0)
    gen = torch.randn(40, 8, generator=g, dtype=torch.float64) * scale
    exp = (torch.randn(25, 8, generator=g, dtype=torch.float64) + 0.5) * scale
    want = 2 * gaussian_kernel(exp, gen).mean(0) - 2 * gaussian_kernel(gen, gen).mean(0)
    got = mmd_reward(gen, exp)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-13)


def test_uniform_sampling_covers_exactly_the_allowed_items():
    _, td = build(6)
    gen = torch.Generator().manual_seed(0)
    for exclude in (False, True):
        for user in range(td.n_users):
            items = td.sample_uniform(torch.tensor([user]), 4000, gen, exclude_exposed=exclude)[0]
            every = torch.arange(td.n_items)
            u = torch.full_like(every, user)
            allowed = ~td.is_clicked(u, every)
            if exclude and bool((allowed & ~td.is_exposed(u, every)).any()):
                allowed &= ~td.is_exposed(u, every)
            counts = torch.bincount(items, minlength=td.n_items)
            assert torch.equal(counts > 0, allowed), (user, exclude)
            # uniform: every allowed item about 4000 / n_allowed times
            expected = 4000 / int(allowed.sum())
            assert counts[allowed].min() > 0.5 * expected and counts[allowed].max() < 1.5 * expected


@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 1000])
def test_sorted_keys_search_equals_searchsorted(n):
    g = torch.Generator().manual_seed(n)
    keys = torch.unique(torch.randint(0, 5 * n + 5, (n,), generator=g))
    sk = SortedKeys(keys, block=8 if n < 100 else 32)
    query = torch.randint(-2, 5 * n + 8, (7, 13), generator=g)
    assert torch.equal(sk.keys, keys)
    assert torch.equal(sk.count_le(query), torch.searchsorted(keys, query, right=True))
    assert torch.equal(sk.contains(query), torch.from_numpy(np.isin(query.numpy(), keys.numpy())))


def test_a_stale_cached_simulation_is_regenerated(tmp_path):
    # regression: the cache was keyed by preset name and seed only
    import json

    from reinforcens.bench import ensure_prepared, preset_paths
    from reinforcens.data.simulate import PRESETS

    prep = ensure_prepared("tiny", tmp_path, seed=0, quiet=True)
    sim_dir, _ = preset_paths("tiny", tmp_path, 0)
    meta_path = sim_dir / "simulation.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["n_users"] += 1  # as if made by an older preset definition
    meta_path.write_text(json.dumps(meta))
    assert ensure_prepared("tiny", tmp_path, seed=0, quiet=True) == prep
    assert json.loads(meta_path.read_text())["config"] == PRESETS["tiny"].model_dump(mode="json")
    assert (prep / "meta.json").is_file()


@pytest.mark.parametrize(("name", "kind"), [("adam", "rowwise-adam"), ("sgd", "rowwise-sgd")])
def test_bench_times_the_optimizer_asked_for(tiny_prepared, name, kind):
    """``bench --optimizer`` reaches the recommender's optimizer of every timed method."""
    from reinforcens.bench.timing import build_method
    from reinforcens.config import TrainConfig
    from reinforcens.train import Trainer

    trainer = Trainer(tiny_prepared, TrainConfig.build(optimizer=name, backend="torch"), None, progress=False)
    method = build_method(trainer, "bpr", 0)
    assert method.optimizer.state_dict()["kind"] == kind
