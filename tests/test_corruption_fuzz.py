"""Every command that reads a prepared dataset or a run directory, on copies with one file corrupted.

The contract: a corrupted file is either refused with a one-line error that names it, or the command
gives exactly the result it gives on the intact files (a legitimately recoverable corruption, e.g. a
deleted ``metrics.json`` that ``train --resume`` computes again). Never a traceback, a segfault, another
exit code, or exit code 0 with other numbers (a result silently reused or computed from a damaged file).

Each case copies the pristine files (built once per module), corrupts one file in one way (truncated to
half or to nothing, deleted, a block of bytes in the middle XOR-ed with a fixed-seed random block; JSON
files also replaced by valid JSON of the wrong shape or with a key removed) and runs every command that
reads it, in-process through :func:`reinforcens.cli.main`. A few cases run in a subprocess as well, to
catch a crash of compiled code (a negative return code) that no in-process check could report.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from reinforcens import cli
from reinforcens.train import Trainer

SEED = 20240531
#: metrics that measure time, not results
TIMING = ("seconds", "train_seconds_per_epoch")

PREP_FILES = (
    "meta.json",
    "train.npz",
    "valid.npz",
    "test.npz",
    "user_ids.parquet",
    "item_ids.parquet",
    "ground_truth.npz",
)
RUN_FILES = (
    "config.json",
    "data.json",
    "run.json",
    "epochs.jsonl",
    "last.pt",
    "best.pt",
    "negatives.npz",
    "metrics.json",
    "pretrain/last.pt",
    "pretrain/best.pt",
    "pretrain/epochs.jsonl",
    "pretrain/negatives.npz",
    "pretrain/done.json",
)
BYTES = ("truncate-half", "truncate-0", "delete", "garble")
#: valid JSON of the wrong shape, and a JSON object without one of its keys
JSON = ("json-list", "json-object")
DROP = {
    "meta.json": ("n_users", "fingerprint"),
    "config.json": ("sampler",),
    "data.json": ("fingerprint",),
    "run.json": ("backend",),
    "metrics.json": ("checkpoint_sha256", "best_epoch"),
    "pretrain/done.json": ("best_epoch",),
}


def _cases(files: tuple[str, ...], extra: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
    out = []
    for name in files:
        out += [(name, how) for how in BYTES]
        if name.endswith(".json"):
            out += [(name, how) for how in JSON]
            out += [(name, f"drop:{key}") for key in DROP.get(name, ())]
    return out + list(extra)


#: valid files with other content: meta.json with a wrong size (the file at fault is meta.json, not the
#: id tables), a list with two items swapped, the id table with two ids swapped
PREP_CASES = _cases(
    PREP_FILES,
    (("meta.json", "off-by-one:n_users"), ("valid.npz", "rewrite"), ("user_ids.parquet", "rewrite")),
)
#: a lock file's content is only its owner's pid: deleting or garbling it is harmless
RUN_CASES = _cases(RUN_FILES, ((".lock", "delete"), (".lock", "garble")))

#: corruptions that the named commands recover from, exactly (they must exit 0): a finished run without
#: metrics.json is evaluated again from its best state (last.pt says the stage stopped); an unfinished
#: run without last.pt trains its main stage again from the pretrained state; the lock is made anew
RECOVERABLE = {
    ("metrics.json", "delete"): ("train --resume (finished)",),
    ("last.pt", "delete"): ("train --resume (unfinished)",),
    (".lock", "delete"): (
        "evaluate --run",
        "train --resume (finished)",
        "analyze",
        "train --resume (unfinished)",
    ),
}


def corrupt(path: Path, how: str) -> None:
    """Corrupt ``path`` in place (see the module docstring); the result always differs from the file."""
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
        return
    if how == "truncate-half":
        new = data[: len(data) // 2]
    elif how == "truncate-0":
        new = b""
    elif how == "garble":
        rng = np.random.default_rng([SEED, zlib.crc32(path.name.encode())])
        n = max(1, min(64, len(data) // 4))
        start = (len(data) - n) // 2
        block = np.frombuffer(data[start : start + n], np.uint8) ^ rng.integers(1, 256, n, dtype=np.uint8)
        new = data[:start] + block.tobytes() + data[start + n :]
    elif how == "json-list":
        new = b"[]\n"
    elif how == "json-object":
        new = b'{"x": 1}\n'
    elif how.startswith("drop:"):
        obj = json.loads(data)
        del obj[how.split(":", 1)[1]]
        new = json.dumps(obj, indent=2).encode()
    elif how == "rewrite":
        _rewrite(path)
        assert path.read_bytes() != data, f"{how} leaves {path.name} as it is: not a case"
        return
    elif how.startswith("off-by-one:"):
        obj = json.loads(data)
        obj[how.split(":", 1)[1]] -= 1
        new = json.dumps(obj, indent=2).encode()
    else:  # pragma: no cover
        raise ValueError(how)
    assert new != data, f"{how} leaves {path.name} as it is: not a case"
    path.write_bytes(new)


def _rewrite(path: Path) -> None:
    """Write ``path`` again as a valid file of its kind with two values swapped (other content, every
    value still in range)."""
    if path.suffix == ".npz":
        with np.load(path) as z:
            arrays = dict(z)
        items = arrays["items"]
        row = int(np.flatnonzero((items[:, 0] >= 0) & (items[:, 1] >= 0) & (items[:, 0] != items[:, 1]))[0])
        items[row, [0, 1]] = items[row, [1, 0]]
        np.savez(path, **arrays)
    else:
        frame = pd.read_parquet(path)
        frame.loc[[0, 1], "raw_id"] = frame["raw_id"].to_numpy()[[1, 0]]
        frame.to_parquet(path, index=False)


# ----------------------------------------------------------------------------- running and judging
@dataclass
class Outcome:
    code: int | None
    out: str
    err: str


def run_cli(capsys, argv: list[str]) -> Outcome:
    """``reinforcens ARGV`` in-process; an exception that escapes ``main`` is a traceback."""
    capsys.readouterr()
    try:
        code: int | None = cli.main([str(a) for a in argv])
    except Exception:  # anything escaping main is a traceback on the command line
        out, err = capsys.readouterr()
        return Outcome(None, out, err + traceback.format_exc())
    out, err = capsys.readouterr()
    return Outcome(code, out, err)


def judge(res: Outcome, names: list[str], exact: Callable[[Outcome], str | None]) -> str | None:
    """``None`` if the outcome keeps the contract, else what is wrong.

    ``names``: paths of which the error must name one; ``exact``: on exit code 0, ``None`` if the result
    is the intact files' result, else how it differs.
    """
    if "Traceback" in res.out + res.err or res.code is None:
        return "traceback:\n" + res.err[-3000:]
    if res.code == 2:
        lines = res.err.splitlines()
        if len(lines) != 1 or not lines[0].strip() or not lines[0].startswith("reinforcens "):
            return f"not a one-line error: {res.err!r}"
        if not any(n in lines[0] for n in names):
            return f"the error does not name {names[0]}: {lines[0]}"
        return None
    if res.code == 0:
        try:
            return exact(res)
        except Exception as exc:  # e.g. no metrics.json after a successful train
            return f"exit code 0 without a readable result ({type(exc).__name__}: {exc})"
    return f"exit code {res.code}: {res.err!r}"


def results(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def differs(what: str, got, expected) -> str | None:
    if got == expected:
        return None
    if isinstance(got, dict) and isinstance(expected, dict):
        keys = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
        return f"exit code 0 with another {what}: differs in {keys}"
    return f"exit code 0 with another {what}: {got!r} != {expected!r}"


def epochs_of(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "epochs.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


def negatives_of(run: Path) -> dict[str, list]:
    with np.load(run / "negatives.npz") as z:
        return {k: z[k].tolist() for k in z.files}


def recommender_of(run: Path) -> dict[str, list]:
    st = torch.load(run / "best.pt", weights_only=True)
    return {k: v.tolist() for k, v in st["recommender"].items()}


# ----------------------------------------------------------------------------- the pristine files
#: the learned sampler with pretraining: ``pretrain/`` and ``negatives.npz`` exist
TRAIN_ARGS = ["--sampler", "rns", "--epochs", "2", "--pretrain-epochs", "2", "--batch-size", "512",
              "--quiet"]  # fmt: skip
ANALYZE_ARGS = ["--points", "30"]


class Interrupted(Exception):
    """Stands for a kill right after the files of an epoch are written (see test_run_lifecycle)."""


@dataclass
class Built:
    """The pristine dataset and runs, and what every command gives on them."""

    root: Path
    prep: Path
    finished: Path
    unfinished: Path
    expected: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def built(tiny_prepared, tmp_path_factory) -> Built:
    root = tmp_path_factory.mktemp("corruption")
    prep = root / "prep"
    shutil.copytree(tiny_prepared.path, prep)
    b = Built(root, prep, root / "finished", root / "unfinished")
    assert cli.main(["train", "--data", str(prep), "--out", str(b.finished), *TRAIN_ARGS]) == 0
    original = Trainer._save_epoch

    def save(self, stage_dir, *args, **kw):
        original(self, stage_dir, *args, **kw)
        if stage_dir.name != "pretrain" and args[4] == 1:  # the main stage's epoch 1
            raise Interrupted

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_save_epoch", save)
        with pytest.raises(Interrupted):
            cli.main(["train", "--data", str(prep), "--out", str(b.unfinished), *TRAIN_ARGS])
    assert (b.unfinished / "last.pt").is_file() and not (b.unfinished / "metrics.json").exists()
    assert (b.unfinished / "pretrain" / "done.json").is_file()
    b.expected["metrics"] = results(json.loads((b.finished / "metrics.json").read_text()))
    b.expected["epochs"] = epochs_of(b.finished)
    b.expected["negatives"] = negatives_of(b.finished)
    b.expected["recommender"] = recommender_of(b.finished)
    for key, argv in _pristine_commands(b).items():
        b.expected[key] = _json_stdout(argv)
    b.expected["train_new"] = results(json.loads((root / "pristine-new" / "metrics.json").read_text()))
    b.expected["analyze"] = _analysis(root / "pristine-analysis")
    return b


def _json_stdout(argv: list) -> object:
    """The JSON an in-process command prints (``None`` for text), for the module fixture (capsys is
    function-scoped)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([str(a) for a in argv])
    assert code == 0, argv
    return json.loads(out.getvalue()) if out.getvalue().lstrip().startswith(("{", "[")) else None


def _pristine_commands(b: Built) -> dict[str, list]:
    return {
        "stats": ["stats", b.prep, "--json"],
        "itempop": ["evaluate", "--data", b.prep, "--model", "itempop", "--json"],
        "evaluate_run": ["evaluate", "--run", b.finished, "--json"],
        "diagnose": ["diagnose", "--data", b.prep, "--json"],
        "train_new": ["train", "--data", b.prep, "--sampler", "uniform", "--epochs", "1", "--quiet",
                      "--json", "--out", b.root / "pristine-new"],  # fmt: skip
        "analyze": ["analyze", "--run", b.finished, "--out", b.root / "pristine-analysis",
                    *ANALYZE_ARGS],  # fmt: skip
    }


def _analysis(out: Path) -> list[dict]:
    """The numbers of ``analysis.json`` (not where the runs and figures are)."""
    runs = json.loads((out / "analysis.json").read_text())["runs"]
    return [{k: v for k, v in r.items() if k != "run_dir"} for r in runs]


# ----------------------------------------------------------------------------- the commands
def prepared_commands(b: Built, prep: Path, tmp: Path) -> dict[str, tuple[list, Callable[[Outcome], object]]]:
    """The commands that read a prepared dataset, each with what it must give when it succeeds."""
    new = tmp / "new"
    return {
        "stats": (
            ["stats", prep, "--json"],
            lambda r: differs("stats", json.loads(r.out), b.expected["stats"]),
        ),
        "evaluate --model itempop": (
            ["evaluate", "--data", prep, "--model", "itempop", "--json"],
            lambda r: differs("evaluation", json.loads(r.out), b.expected["itempop"]),
        ),
        "train": (
            ["train", "--data", prep, "--sampler", "uniform", "--epochs", "1", "--quiet", "--out", new],
            lambda r: differs("result", results(json.loads((new / "metrics.json").read_text())),
                              b.expected["train_new"]),  # fmt: skip
        ),
        "evaluate --run --data": (
            ["evaluate", "--run", b.finished, "--data", prep, "--json"],
            lambda r: differs("evaluation", json.loads(r.out), b.expected["evaluate_run"]),
        ),
        "diagnose": (
            ["diagnose", "--data", prep, "--json"],
            lambda r: differs("diagnosis", json.loads(r.out), b.expected["diagnose"]),
        ),
    }


def _resumed_exactly(b: Built, run: Path, whole: bool) -> str | None:
    """A resumed run's result is the uninterrupted one's (``whole``: its per-epoch files too)."""
    got = {"metrics": results(json.loads((run / "metrics.json").read_text()))}
    if whole:
        got |= {"epochs": epochs_of(run), "negatives": negatives_of(run), "recommender": recommender_of(run)}
    for key, value in got.items():
        if (d := differs(f"resumed run ({key})", value, b.expected[key])) is not None:
            return d
    return None


def run_commands(b: Built, fin: Path, unf: Path | None, tmp: Path) -> dict[str, tuple[Path, list, Callable]]:
    """The commands that read a run directory: (the run they read, argv, what success must give)."""
    cmds = {
        "evaluate --run": (
            fin,
            ["evaluate", "--run", fin, "--json"],
            lambda r: differs("evaluation", json.loads(r.out), b.expected["evaluate_run"]),
        ),
        "train --resume (finished)": (
            fin,
            ["train", "--data", b.prep, "--out", fin, *TRAIN_ARGS, "--resume"],
            lambda r: _resumed_exactly(b, fin, whole=False),
        ),
        "analyze": (
            fin,
            ["analyze", "--run", fin, "--out", tmp / "analysis", *ANALYZE_ARGS],
            lambda r: differs("analysis", _analysis(tmp / "analysis"), b.expected["analyze"]),
        ),
    }
    if unf is not None:
        cmds["train --resume (unfinished)"] = (
            unf,
            ["train", "--data", b.prep, "--out", unf, *TRAIN_ARGS, "--resume"],
            lambda r: _resumed_exactly(b, unf, whole=True),
        )
    return cmds


# ----------------------------------------------------------------------------- the tests
def test_the_pristine_files_give_the_expected_results(built, tmp_path, capsys):
    """The oracle's baseline: on intact copies every command succeeds with the recorded result, and
    the interrupted run resumes to the uninterrupted one."""
    prep, fin, unf = tmp_path / "prep", tmp_path / "finished", tmp_path / "unfinished"
    shutil.copytree(built.prep, prep)
    shutil.copytree(built.finished, fin)
    shutil.copytree(built.unfinished, unf)
    checks = [(argv, exact) for argv, exact in prepared_commands(built, prep, tmp_path).values()]
    checks += [(argv, exact) for _, argv, exact in run_commands(built, fin, unf, tmp_path).values()]
    for argv, exact in checks:
        res = run_cli(capsys, argv)
        assert res.code == 0, (argv, res.err)
        assert exact(res) is None, argv


@pytest.mark.parametrize(("name", "how"), PREP_CASES, ids=[f"{n}-{h}" for n, h in PREP_CASES])
def test_a_corrupted_prepared_dataset(built, tmp_path, capsys, name, how):
    prep = tmp_path / "prep"
    shutil.copytree(built.prep, prep)
    corrupt(prep / name, how)
    # every reader of the dataset names the file at fault, also when it was deleted: meta.json lists
    # every file with its checksum
    names = [str(prep / name)]
    if (name, how) == ("meta.json", "delete"):  # without meta.json it is no prepared dataset at all
        names.append(f"{prep}: not a prepared dataset (no meta.json)")
    failures = []
    for label, (argv, exact) in prepared_commands(built, prep, tmp_path).items():
        res = run_cli(capsys, argv)
        problem = judge(res, names, exact)
        if problem is not None:
            failures.append(f"{label}: {problem}")
    assert not failures, f"{name} {how}:\n" + "\n".join(failures)


@pytest.mark.parametrize(("name", "how"), RUN_CASES, ids=[f"{n}-{h}" for n, h in RUN_CASES])
def test_a_corrupted_run_directory(built, tmp_path, capsys, name, how):
    fin = tmp_path / "finished"
    shutil.copytree(built.finished, fin)
    corrupt(fin / name, how)
    unf = None
    if (built.unfinished / name).exists():  # metrics.json is only in the finished run
        unf = tmp_path / "unfinished"
        shutil.copytree(built.unfinished, unf)
        corrupt(unf / name, how)
    failures = []
    for label, (run, argv, exact) in run_commands(built, fin, unf, tmp_path).items():
        res = run_cli(capsys, argv)
        problem = judge(res, [str(run / name)], exact)
        if problem is None and res.code != 0 and label in RECOVERABLE.get((name, how), ()):
            problem = f"does not recover: {res.err.strip()}"
        if problem is not None:
            failures.append(f"{label}: {problem}")
    assert not failures, f"{name} {how}:\n" + "\n".join(failures)


SUBPROCESS_CASES = [
    ("prep", "valid.npz", "garble", ["evaluate", "--data", "{prep}", "--model", "itempop", "--json"]),
    ("finished", "best.pt", "truncate-half", ["evaluate", "--run", "{run}", "--json"]),
    ("unfinished", "last.pt", "garble",
     ["train", "--data", "{prep}", "--out", "{run}", *TRAIN_ARGS, "--resume"]),  # fmt: skip
]


@pytest.mark.parametrize(
    ("what", "name", "how", "argv"), SUBPROCESS_CASES, ids=[f"{c[1]}-{c[2]}" for c in SUBPROCESS_CASES]
)
def test_no_crash_in_a_subprocess(built, tmp_path, what, name, how, argv):
    """Compiled code that read a corrupted file out of range would crash the process (a negative return
    code, 139 from a shell): only a subprocess shows it."""
    src = {"prep": built.prep, "finished": built.finished, "unfinished": built.unfinished}[what]
    target = tmp_path / what
    shutil.copytree(src, target)
    corrupt(target / name, how)
    prep = target if what == "prep" else built.prep
    argv = [a.format(prep=prep, run=target) for a in argv]
    proc = subprocess.run(
        [sys.executable, "-m", "reinforcens", "--threads", "1", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert 0 <= proc.returncode != 139, f"crashed ({proc.returncode}): {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr
    if proc.returncode == 2:
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("reinforcens ") and str(target / name) in lines[0]
    else:
        assert proc.returncode == 0, proc.stderr
        if argv[0] == "train":
            assert _resumed_exactly(built, target, whole=True) is None
        else:
            key = "itempop" if what == "prep" else "evaluate_run"
            assert json.loads(proc.stdout) == built.expected[key]
