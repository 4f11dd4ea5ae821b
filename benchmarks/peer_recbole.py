"""Peer check against RecBole 1.2.1: BPR, BPR-DNS and LightGCN on one prepared split, one metric for all.

An optional, rerunnable comparison, never run in CI. It exports a reinforcens prepared dataset to
RecBole's benchmark atomic files, trains RecBole's ``BPR`` with uniform and with dynamic negative
sampling and RecBole's ``LightGCN`` with uniform negatives in a separate virtual environment, and
scores the best model of each RecBole run and of each finished reinforcens run (``reinforcens
compare`` output) with one metric function written here. The reinforcens runs compared are GMF runs
with the ``uniform`` or ``dns`` sampler (peers: RecBole BPR and DNS) and LightGCN runs (config
``"model": "lightgcn"``, with ``"layers"``) with the ``uniform`` sampler (peer: RecBole LightGCN);
they are loaded with ``reinforcens.train.load_run`` and scored with the models' ``TorchScorer``
(``score_all``), whatever the model.

Usage
-----
::

    python3 -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install torch==2.13.0
    /tmp/recbole-venv/bin/pip install 'numpy<2' 'pandas<2.3' recbole==1.2.1
    # with the reinforcens venv:
    nice -n 10 python benchmarks/peer_recbole.py --data /tmp/ml/loo \\
        --ours /tmp/ml/cmp10_0.1 --ours /tmp/ml/cmp10_xavier \\
        --recbole-python /tmp/recbole-venv/bin/python --seeds 10 --work /tmp/peer/work
    # RecBole's LightGCN (--methods takes any of bpr, dns, lightgcn; default bpr,dns):
    nice -n 10 python benchmarks/peer_recbole.py --data /tmp/ml/loo --methods lightgcn --seeds 5 \\
        --recbole-python /tmp/recbole-venv/bin/python --work /tmp/peer/work

The same file runs in two modes. Without ``--worker`` (the reinforcens venv) it exports the data,
starts one RecBole worker per method and seed, evaluates every score matrix and prints the table.
With ``--worker`` (the RecBole venv's python) it imports only numpy, torch and recbole, never
reinforcens: it trains one RecBole run and writes its score matrix. A RecBole run whose
``result.json`` exists with the same settings is reused (``--redo`` retrains), so an interrupted
check resumes where it stopped.

Exported files (in ``WORK/<dataset>/``)
    ``<dataset>.train.inter``, ``<dataset>.valid.inter``, ``<dataset>.test.inter``: columns
    ``user_id:token item_id:token`` (reinforcens internal ids as tokens) holding the training clicks,
    every validation held-out click and every test held-out click; ``<dataset>.user`` and
    ``<dataset>.item`` list every internal user and item id, so that RecBole's id space (and its
    negative sampling) covers the same items as reinforcens', including items never clicked.

RecBole configuration (the worker's; everything else is RecBole 1.2.1's default)
    ``model: BPR`` (dot-product MF, ``xavier_normal_`` init, no weight decay),
    ``benchmark_filename: [train, valid, test]``, ``eval_args: {split: {RS: [0.8, 0.1, 0.1]},
    group_by: user, order: RO, mode: full}`` (with benchmark files RecBole neither splits nor
    filters; ``split``/``order`` are required keys only), ``embedding_size: 32``,
    ``learning_rate: 0.001``, ``metrics: [Recall, NDCG]``, ``topk: [20]``, ``valid_metric: NDCG@20``,
    ``seed: s``, ``reproducibility: True``; defaults: ``epochs: 300``, ``train_batch_size: 2048``,
    ``learner: adam``, ``weight_decay: 0.0``, ``eval_step: 1``, ``stopping_step: 10`` (stop after 11
    validations in a row without a new best; a tie counts as a new best), ``eval_batch_size: 4096``,
    ``shuffle: True``. The uniform method uses ``train_neg_sample_args: {distribution: uniform,
    sample_num: 1, dynamic: False}``; DNS uses ``{distribution: uniform, sample_num: 1, dynamic:
    True, candidate_num: 50}``. In RecBole 1.2.1
    (``recbole/data/dataloader/abstract_dataloader.py``, ``_neg_sampling``) dynamic sampling draws
    ``sample_num * candidate_num`` uniform items per training pair outside the user's training
    positives, scores them with the current model (``model.predict``, in eval mode) and keeps the
    best-scored one per pair: the same rule as reinforcens' DNS with 50 candidates. After
    ``fit``, ``trainer.evaluate(test, load_best_model=True)`` reloads the checkpoint of the best
    validation NDCG@20; that model's ``full_sort_predict`` gives the saved score matrix, rows and
    columns mapped back to reinforcens ids with ``dataset.field2id_token``.

    ``lightgcn`` (``model: LightGCN``): every setting above (shared with BPR: ``learning_rate:
    0.001``, ``valid_metric: NDCG@20``, ``topk: [20]``, ``stopping_step: 10``, ``epochs: 300``,
    ``train_batch_size: 2048``, ``learner: adam``, ``weight_decay: 0.0``, uniform negatives
    ``sample_num: 1, dynamic: False``), except ``embedding_size``, which with the model's own keys is
    RecBole 1.2.1's own LightGCN default (``recbole/properties/model/LightGCN.yaml``, and
    ``require_pow`` from ``properties/overall.yaml``), set explicitly (``LIGHTGCN_PARAMS``):
    ``embedding_size: 64``, ``n_layers: 2``, ``reg_weight: 1e-05``, ``require_pow: False`` (``--dim``
    applies to BPR only). Each run's result.json records the installed package's own defaults of
    these keys (``recbole_model_defaults``) and whether the run used them all
    (``uses_recbole_model_defaults``). RecBole's LightGCN initialises both tables with
    ``xavier_uniform_``, propagates ``n_layers`` times over the symmetrically normalised user-item
    graph of the training clicks (``D^-1/2 A D^-1/2``, no self-loops), averages the ``n_layers + 1``
    layer outputs, trains on the BPR loss plus ``reg_weight`` times ``EmbLoss`` of the batch's
    layer-0 rows (``require_pow: False``: the Frobenius norms, not squared, of the batch's user,
    positive and negative row matrices, summed and divided by the batch size), and scores by the
    dot product of the propagated embeddings. Before scoring, the worker clears LightGCN's cached
    propagated embeddings (``restore_user_e``, ``restore_item_e``) so that the saved scores are
    propagated from the loaded best checkpoint.

Seconds per epoch
    The worker wraps ``trainer._train_epoch`` and times each call (training only: validation runs
    outside it), with ``torch.set_num_threads(1)`` and ``OMP_NUM_THREADS=MKL_NUM_THREADS=1``;
    ``train_seconds_per_epoch`` in result.json is their mean and ``epochs`` their count.

Runtime patches in the worker
    RecBole 1.2.1 uses numpy aliases removed in numpy 1.24 (``np.float``, ``np.int``, ``np.bool``,
    ``np.complex``, ``np.object``, ``np.str``, ``np.long``, ``np.unicode``): they are set before
    recbole is imported (RecBole's ``Config`` sets them again itself). torch >= 2.6 defaults to
    ``torch.load(weights_only=True)``, which refuses RecBole's checkpoints (they pickle the
    ``Config``): ``torch.load`` is wrapped to default to ``weights_only=False``.
    ``recbole.quick_start`` is not imported (it imports ray, whose ``pkg_resources`` import fails:
    setuptools 84, which the venv has, no longer ships it); the worker repeats its steps. pandas is
    kept below 2.3 (2.2.3): pip's default, pandas 3, turns on Copy-on-Write, under which RecBole's
    ``feat[field].fillna(value=0, inplace=True)`` (``Dataset._fill_nan``) silently does nothing.
    LightGCN's ``get_norm_adj_mat`` fills a ``scipy.sparse.dok_matrix`` with the private
    ``_update``, which scipy removed (the venv has scipy 1.17.1): where it is missing it is set to the
    public ``dok_matrix.update`` (the same dict update, plus a check of the keys' range).

Metric (one function, :func:`full_ranking`, for both libraries)
    The definitions of ``reinforcens.metrics.full_ranking_per_user`` and
    ``reinforcens.evaluation.evaluate_full_ranking``, re-implemented independently: for each user of
    the test lists, the truth is every test held-out click; training clicks and every validation
    click get score ``-inf`` (never a hit). Items are ranked by descending score, ties broken
    pessimistically (items outside the truth first). Recall@K = hits in the top K /
    ``min(K, |truth|)``; NDCG@K = ``sum over hits of 1 / log2(rank + 1)`` divided by the DCG of
    ``min(K, |truth|)`` hits at ranks ``1..min(K, |truth|)``; both averaged over users with a truth
    item. For every reinforcens run the script asserts that this reproduces ``metrics.json``'s
    ``test.recall@20`` and ``test.ndcg@20`` to 1e-6. (RecBole's own Recall divides by ``|truth|``,
    not ``min(K, |truth|)``; with leave-one-out ``|truth| = 1`` and both agree. Its own test numbers
    are saved beside ours for reference.)

Output (in ``WORK/``)
    ``recbole/<method>/seed<s>/``: ``scores.npy`` (float32, ``n_users x n_items``),
    ``result.json`` (RecBole's test and best validation metrics, epochs, seconds per epoch),
    ``worker.log``; ``results.json`` and ``results.csv``: every run's metrics and the summary table.

The RecBole venv (``pip freeze`` of ``/tmp/recbole-venv``, Python 3.11.7)::

    absl-py==2.5.1 aiosignal==1.4.0 attrs==26.1.0 certifi==2026.10.19.post1
    charset-normalizer==3.5.3 click==8.5.1 cloudpickle==3.1.3 colorama==0.4.4 colorlog==4.7.2
    filelock==4.3.1 frozenlist==1.8.0 fsspec==2026.9.0 grpcio==1.85.3 idna==3.20 Jinja2==3.1.6
    joblib==1.6.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 Markdown==3.11.3
    MarkupSafe==3.0.4 mpmath==1.3.0 msgpack==1.2.4 narwhals==2.29.0 networkx==3.6.1
    numpy==1.26.4 packaging==26.4 pandas==2.2.3 pillow==13.0.0 plotly==7.1.0 protobuf==7.36.2
    psutil==7.2.2 python-dateutil==4.0.0 PyYAML==6.0.4 ray==2.6.3 recbole==1.2.1
    referencing==0.37.0 requests==2.34.2 rpds-py==2026.9.1 scikit-learn==1.9.1 scipy==1.17.1
    sympy==1.14.0 tabulate==0.10.0 tensorboard==2.21.0 tensorboard-data-server==0.7.2
    texttable==1.7.2 thop==0.1.1.post2209072238 threadpoolctl==3.8.0 torch==2.13.0+cpu
    tqdm==4.70.1 typing_extensions==4.16.0 tzdata==2026.6 urllib3==2.8.0 Werkzeug==3.1.9
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: the exported dataset's name (not a name RecBole ships properties for, such as ``ml-100k``)
DATASET = "reinforcens_export"
#: RecBole methods: BPR with uniform negatives, BPR with dynamic negative sampling, LightGCN with
#: uniform negatives (see recbole_config); also the order of the table's rows
RECBOLE_METHODS = ("bpr", "dns", "lightgcn")
#: RecBole method -> RecBole model class name
RECBOLE_MODEL = {"bpr": "BPR", "dns": "BPR", "lightgcn": "LightGCN"}
#: LightGCN's hyper-parameters: RecBole 1.2.1's own defaults, ``recbole/properties/model/LightGCN.yaml``
#: (``embedding_size``, ``n_layers``, ``reg_weight``) and ``recbole/properties/overall.yaml``
#: (``require_pow``); the worker records the installed package's values beside them in result.json
LIGHTGCN_PARAMS: dict[str, Any] = {
    "embedding_size": 64, "n_layers": 2, "reg_weight": 1e-05, "require_pow": False,
}  # fmt: skip
#: (reinforcens model, sampler) -> RecBole method it is compared with; other runs are skipped
PAIRS = {("gmf", "uniform"): "bpr", ("gmf", "dns"): "dns", ("lightgcn", "uniform"): "lightgcn"}
OURS_LABEL = {"bpr": "reinforcens BPR-GMF", "dns": "reinforcens DNS", "lightgcn": "reinforcens LightGCN"}
RECBOLE_LABEL = {"bpr": "RecBole BPR", "dns": "RecBole DNS", "lightgcn": "RecBole LightGCN"}
#: settings of the final RecBole config recorded in each run's result.json (and, per model, its own)
EFFECTIVE_KEYS = (
    "model", "embedding_size", "learner", "learning_rate", "weight_decay", "train_batch_size", "epochs",
    "eval_step", "stopping_step", "train_neg_sample_args", "eval_args", "metrics", "topk", "valid_metric",
    "valid_metric_bigger", "eval_batch_size", "shuffle", "seed", "reproducibility", "device",
)  # fmt: skip
MODEL_KEYS = {"BPR": (), "LightGCN": ("n_layers", "reg_weight", "require_pow")}
#: tolerance of the cross-check against each reinforcens run's metrics.json
TOLERANCE = 1e-6


# ----------------------------------------------------------------------------------------------
# RecBole worker (RecBole venv; imports numpy, torch and recbole only)
# ----------------------------------------------------------------------------------------------


def recbole_config(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The ``config_dict`` of one RecBole run (only plain values, so it can be stored as JSON)."""
    neg: dict[str, Any] = {"distribution": "uniform", "sample_num": 1, "dynamic": False, "candidate_num": 0}
    if method == "dns":
        neg = {**neg, "dynamic": True, "candidate_num": args.candidates}
    # BPR's embedding size is --dim; LightGCN keeps RecBole's own defaults (LIGHTGCN_PARAMS)
    model_params = dict(LIGHTGCN_PARAMS) if method == "lightgcn" else {"embedding_size": args.dim}
    return {
        "model": RECBOLE_MODEL[method],
        "dataset": DATASET,
        "load_col": {"inter": ["user_id", "item_id"], "user": ["user_id"], "item": ["item_id"]},
        "benchmark_filename": ["train", "valid", "test"],
        "eval_args": {
            "split": {"RS": [0.8, 0.1, 0.1]},
            "group_by": "user",
            "order": "RO",
            "mode": "full",
        },
        "train_neg_sample_args": neg,
        **model_params,
        "learning_rate": args.lr,
        "train_batch_size": args.batch_size,
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "metrics": ["Recall", "NDCG"],
        "topk": [args.k],
        "valid_metric": f"NDCG@{args.k}",
        "seed": seed,
        "reproducibility": True,
        "use_gpu": False,
        "show_progress": False,
        "state": "INFO",
    }


def _patch_for_recbole() -> None:
    """numpy aliases removed in numpy 1.24, ``torch.load`` of pickled checkpoints (torch >= 2.6), and
    ``scipy.sparse.dok_matrix._update`` (removed in scipy 1.12; LightGCN's ``get_norm_adj_mat``)."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    if not hasattr(sp.dok_matrix, "_update"):
        # the old private method was a plain dict update; the public one also checks the keys
        sp.dok_matrix._update = sp.dok_matrix.update  # type: ignore[attr-defined]

    aliases = {
        "float": float,
        "int": int,
        "bool": bool,
        "complex": complex,
        "object": object,
        "str": str,
        "long": int,
        "unicode": str,
    }
    for name, value in aliases.items():
        if name not in np.__dict__:
            setattr(np, name, value)
    original = torch.load

    def load(*a: Any, **kw: Any) -> Any:
        kw.setdefault("weights_only", False)
        return original(*a, **kw)

    torch.load = load  # type: ignore[assignment]


def _model_defaults(model: str) -> dict[str, Any]:
    """The installed RecBole's own defaults of ``model``'s keys (its properties/model/<model>.yaml, and
    the MODEL_KEYS it leaves to properties/overall.yaml), read with RecBole's own YAML loader."""
    import yaml
    from recbole.config import Config

    root = Path(sys.modules["recbole"].__file__).parent / "properties"
    loader = Config._build_yaml_loader(None)  # type: ignore[arg-type]  # does not use self
    overall = yaml.load((root / "overall.yaml").read_text(), Loader=loader) or {}
    path = root / "model" / f"{model}.yaml"
    own = (yaml.load(path.read_text(), Loader=loader) or {}) if path.is_file() else {}
    return {**{k: overall[k] for k in MODEL_KEYS[model] if k in overall}, **own}


def run_worker(args: argparse.Namespace) -> None:
    """Train one RecBole run (``args.method``, ``args.seed``) and write its scores and metrics."""
    _patch_for_recbole()
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.interaction import Interaction
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    work = Path(args.work).resolve()
    out = work / "recbole" / args.method / f"seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # RecBole writes log/ and log_tensorboard/ in the working directory
    export = json.loads((work / DATASET / "export.json").read_text())
    cfg = recbole_config(args.method, args.seed, args)
    config = Config(
        model=cfg["model"],
        dataset=DATASET,
        # a copy: Config fills defaults into the nested dicts it is given
        config_dict={**copy.deepcopy(cfg), "data_path": str(work), "checkpoint_dir": str(out / "saved")},
    )
    keys = EFFECTIVE_KEYS + MODEL_KEYS[cfg["model"]]
    effective = json.loads(json.dumps({key: config[key] for key in keys}, default=str))
    package_defaults = _model_defaults(cfg["model"])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    epoch_seconds: list[float] = []
    train_epoch = trainer._train_epoch

    def timed_epoch(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        res = train_epoch(*a, **kw)
        epoch_seconds.append(time.perf_counter() - t0)
        return res

    trainer._train_epoch = timed_epoch
    valid_scores: list[float] = []
    t0 = time.perf_counter()
    best_valid, best_valid_result = trainer.fit(
        train_data,
        valid_data,
        saved=True,
        show_progress=False,
        callback_fn=lambda epoch, score: valid_scores.append(float(score)),
    )
    fit_seconds = time.perf_counter() - t0
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    best_epoch = int(torch.load(trainer.saved_model_file, map_location="cpu")["epoch"])

    # score matrix of the best model, in reinforcens' id order
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    user_tokens = dataset.field2id_token[uid_field]
    item_tokens = dataset.field2id_token[iid_field]
    n_users, n_items = int(export["n_users"]), int(export["n_items"])
    if len(user_tokens) != n_users + 1 or len(item_tokens) != n_items + 1:
        raise SystemExit(
            f"RecBole has {len(user_tokens) - 1} users and {len(item_tokens) - 1} items, "
            f"the export {n_users} and {n_items}"
        )
    row_ours = np.array([int(t) for t in user_tokens[1:]], dtype=np.int64)  # RecBole id 0 is [PAD]
    col_ours = np.array([int(t) for t in item_tokens[1:]], dtype=np.int64)
    model.eval()
    if hasattr(model, "restore_user_e"):  # LightGCN: propagate the loaded best model afresh
        model.restore_user_e, model.restore_item_e = None, None
    scores = np.full((n_users, n_items), np.nan, dtype=np.float32)
    with torch.no_grad():
        for start in range(1, n_users + 1, 1024):
            rb_users = torch.arange(start, min(start + 1024, n_users + 1))
            s = model.full_sort_predict(Interaction({uid_field: rb_users})).view(rb_users.numel(), -1)
            s = s.cpu().numpy()[:, 1:]  # drop the padding item's column
            block = np.empty_like(s)
            block[:, col_ours] = s
            scores[row_ours[rb_users.numpy() - 1]] = block
    if not np.isfinite(scores).all():
        raise SystemExit("the score matrix has missing or non-finite entries")
    np.save(out / "scores.npy", scores)

    result = {
        "method": args.method,
        "seed": args.seed,
        "config": cfg,
        "effective_config": effective,
        # the installed RecBole's own defaults of the model's keys, and whether the run used them all
        "recbole_model_defaults": package_defaults,
        "uses_recbole_model_defaults": all(effective.get(k) == v for k, v in package_defaults.items()),
        "recbole_test": {k: float(v) for k, v in test_result.items()},
        "recbole_best_valid": {k: float(v) for k, v in (best_valid_result or {}).items()},
        "best_valid_score": float(best_valid),
        "best_epoch": best_epoch + 1,  # 1-based, like reinforcens
        "epochs": len(epoch_seconds),
        "valid_scores": valid_scores,
        "train_seconds_per_epoch": float(np.mean(epoch_seconds)),
        "fit_seconds": fit_seconds,
        "n_users": n_users,
        "n_items": n_items,
        "fingerprint": export["fingerprint"],
    }
    # the checkpoint is not needed once the scores are saved
    Path(trainer.saved_model_file).unlink(missing_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# Driver (reinforcens venv)
# ----------------------------------------------------------------------------------------------


def export_dataset(data: Any, work: Path) -> Path:
    """Write the prepared split as RecBole benchmark atomic files in ``work/DATASET/``."""
    import numpy as np

    out = work / DATASET
    out.mkdir(parents=True, exist_ok=True)

    def pairs(items: Any) -> tuple[Any, Any]:
        csr = items.to_csr().tocoo()
        order = np.lexsort((csr.col, csr.row))
        return csr.row[order], csr.col[order]

    parts = {"train": data.train_clicks, "valid": data.valid.clicks, "test": data.test.clicks}
    counts = {}
    for name, items in parts.items():
        u, i = pairs(items)
        counts[name] = int(u.size)
        lines = ["user_id:token\titem_id:token"] + [f"{a}\t{b}" for a, b in zip(u, i, strict=True)]
        (out / f"{DATASET}.{name}.inter").write_text("\n".join(lines) + "\n")
    (out / f"{DATASET}.user").write_text(
        "\n".join(["user_id:token"] + [str(x) for x in range(data.n_users)]) + "\n"
    )
    (out / f"{DATASET}.item").write_text(
        "\n".join(["item_id:token"] + [str(x) for x in range(data.n_items)]) + "\n"
    )
    meta = {
        "n_users": data.n_users,
        "n_items": data.n_items,
        "fingerprint": data.fingerprint,
        "path": str(Path(data.path).resolve()) if data.path else None,
        "interactions": counts,
    }
    (out / "export.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def full_ranking(scores: Any, truth: Any, exclude: Any, users: Any, k: int = 20) -> dict[str, float]:
    """Recall@k and NDCG@k of ``users`` (see the module docstring for the definitions).

    Parameters
    ----------
    scores
        ``(n_users, n_items)`` scores of every user (any float dtype, computed in float64).
    truth, exclude
        ``scipy.sparse`` 0/1 matrices ``(n_users, n_items)``: held-out clicks, and items removed from
        the ranking.
    users
        The users evaluated; those without a truth item are skipped.
    k
        Cut-off.

    Returns
    -------
    dict
        ``recall``, ``ndcg`` (means over evaluated users with a truth item) and ``users`` (their count).
    """
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)[users].copy()
    t = truth[users].toarray() != 0
    x = exclude[users].toarray() != 0
    s[x] = -np.inf
    t_ranked = t & ~x  # an excluded item is never a hit
    n_truth = t.sum(axis=1)
    has = n_truth > 0
    # descending score; within a tie, items outside the truth first (pessimistic)
    order = np.lexsort((t_ranked, -s), axis=1)[:, :k]
    hit = np.take_along_axis(t_ranked, order, axis=1) & np.isfinite(np.take_along_axis(s, order, axis=1))
    discount = 1.0 / np.log2(np.arange(2, order.shape[1] + 2))
    ideal_n = np.minimum(n_truth, k)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])[ideal_n]
    recall = hit.sum(axis=1)[has] / ideal_n[has]
    ndcg = (hit * discount).sum(axis=1)[has] / ideal[has]
    return {"recall": float(recall.mean()), "ndcg": float(ndcg.mean()), "users": int(has.sum())}


def find_our_runs(root: Path) -> list[Path]:
    """Finished run directories under a ``reinforcens compare`` output (``runs/<method>-<hash>/seed<s>``)."""
    found = sorted(p.parent for p in root.glob("**/metrics.json") if (p.parent / "best.pt").is_file())
    if not found:
        raise SystemExit(f"{root}: no finished run (no metrics.json beside a best.pt)")
    return found


def evaluate_ours(root: Path, data: Any, truth: Any, exclude: Any, k: int) -> list[dict[str, Any]]:
    """Score every finished run under ``root`` that has a RecBole peer (:data:`PAIRS`: GMF with uniform
    or DNS negatives, LightGCN with uniform negatives) and cross-check metrics.json."""
    import torch

    from reinforcens.models import TorchScorer
    from reinforcens.train import load_run

    rows = []
    for run_dir in find_our_runs(root):
        cfg, model, _ = load_run(run_dir)
        model_name = str(getattr(cfg, "model", "gmf"))  # runs written before the model key: GMF
        peer = PAIRS.get((model_name, cfg.sampler))
        if peer is None or cfg.pretrained:  # a run continued from a checkpoint is another method
            continue
        layers = getattr(cfg, "layers", None) if model_name == "lightgcn" else None
        described = json.loads((run_dir / "data.json").read_text())
        if described.get("fingerprint") != data.fingerprint:
            raise SystemExit(f"{run_dir}: trained on another dataset (fingerprint differs from --data)")
        recorded = json.loads((run_dir / "metrics.json").read_text())
        with torch.no_grad():
            scores = TorchScorer(model).score_all(torch.arange(data.n_users).numpy())
        res = full_ranking(scores, truth, exclude, data.test.users, k)
        for ours_key, rec_key in (("recall", f"test.recall@{k}"), ("ndcg", f"test.ndcg@{k}")):
            diff = abs(res[ours_key] - float(recorded[rec_key]))
            if diff > TOLERANCE:  # the cross-check of this script's metric (not an assert: -O drops it)
                raise SystemExit(f"{run_dir}: {ours_key} {res[ours_key]} != metrics.json {recorded[rec_key]}")
        rows.append(
            {
                "library": "reinforcens",
                "set": root.name,
                "model": model_name,
                "init": str(cfg.init_std),
                "method": cfg.sampler,
                "peer": peer,
                "dim": cfg.dim,
                "layers": layers,
                "label": (
                    f"{OURS_LABEL[peer]} ({layers} layers, dim {cfg.dim}, init {cfg.init_std})"
                    if model_name == "lightgcn"
                    else f"{OURS_LABEL[peer]} (init {cfg.init_std})"
                ),
                "seed": cfg.seed,
                "recall": res["recall"],
                "ndcg": res["ndcg"],
                "users": res["users"],
                "recorded_recall": float(recorded[f"test.recall@{k}"]),
                "recorded_ndcg": float(recorded[f"test.ndcg@{k}"]),
                "best_epoch": int(recorded["best_epoch"]),
                "epochs": int(recorded["epochs"]),
                "train_seconds_per_epoch": float(recorded["train_seconds_per_epoch"]),
                "batch_size": cfg.batch_size,
                "run_dir": str(run_dir),
            }
        )
    return rows


def worker_command(args: argparse.Namespace, method: str, seed: int) -> list[str]:
    return [
        args.recbole_python,
        str(Path(__file__).resolve()),
        "--worker",
        "--work", str(Path(args.work).resolve()),
        "--method", method,
        "--seed", str(seed),
        "--epochs", str(args.epochs),
        "--stopping-step", str(args.stopping_step),
        "--batch-size", str(args.batch_size),
        "--candidates", str(args.candidates),
        "--dim", str(args.dim),
        "--lr", str(args.lr),
        "--k", str(args.k),
    ]  # fmt: skip


def run_recbole(args: argparse.Namespace, method: str, seed: int, fingerprint: str) -> dict[str, Any]:
    """One RecBole run: reused when its ``result.json`` has the same config and data, else trained."""
    out = Path(args.work) / "recbole" / method / f"seed{seed}"
    result_path = out / "result.json"
    want = recbole_config(method, seed, args)
    if result_path.is_file() and (out / "scores.npy").is_file() and not args.redo:
        old = json.loads(result_path.read_text())
        if old.get("config") == want and old.get("fingerprint") == fingerprint:
            print(f"RecBole {method} seed {seed}: reusing {result_path}", flush=True)
            return old
    out.mkdir(parents=True, exist_ok=True)
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    t0 = time.perf_counter()
    with open(out / "worker.log", "w") as log:
        cmd = worker_command(args, method, seed)
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0 or not result_path.is_file():
        tail = (out / "worker.log").read_text()[-3000:]
        raise SystemExit(f"RecBole {method} seed {seed} failed (exit {proc.returncode}):\n{tail}")
    res = json.loads(result_path.read_text())
    print(
        f"RecBole {method} seed {seed}: {res['epochs']} epochs (best {res['best_epoch']}), "
        f"{res['train_seconds_per_epoch']:.3f} s/epoch, {time.perf_counter() - t0:.1f} s in all",
        flush=True,
    )
    return res


def summarize(values: list[float]) -> tuple[float, float]:
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def welch(a: list[float], b: list[float]) -> float:
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2:
        return math.nan
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def build_table(rows: list[dict[str, Any]], k: int) -> tuple[list[dict[str, Any]], str]:
    """The summary rows (one per method and set) and their markdown table."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    sets = list(dict.fromkeys(r["set"] for r in rows))

    def order(r: dict[str, Any]) -> tuple[int, int, int]:  # ours by their RecBole peer's place
        return sets.index(r["set"]), RECBOLE_METHODS.index(r["peer"] or r["method"]), r["seed"]

    for r in sorted(rows, key=order):
        groups.setdefault((r["label"], r["set"]), []).append(r)
    recbole = {rr[0]["method"]: rr for rr in groups.values() if rr[0]["library"] == "recbole"}
    summary = []
    for (label, set_name), rr in groups.items():
        first = rr[0]
        rec_m, rec_s = summarize([r["recall"] for r in rr])
        ndcg_m, ndcg_s = summarize([r["ndcg"] for r in rr])
        row: dict[str, Any] = {
            "method": label,
            "set": set_name,
            "library": first["library"],
            "seeds": sorted(r["seed"] for r in rr),
            "n": len(rr),
            f"recall@{k}_mean": rec_m,
            f"recall@{k}_std": rec_s,
            f"ndcg@{k}_mean": ndcg_m,
            f"ndcg@{k}_std": ndcg_s,
            "best_epoch_median": float(statistics.median(r["best_epoch"] for r in rr)),
            "best_epoch_min": min(r["best_epoch"] for r in rr),
            "best_epoch_max": max(r["best_epoch"] for r in rr),
            "train_seconds_per_epoch": summarize([r["train_seconds_per_epoch"] for r in rr])[0],
            "p_recall_vs_recbole": None,
            "p_ndcg_vs_recbole": None,
        }
        if first["library"] == "recbole":  # RecBole's own evaluator, for reference
            row[f"recbole_own_recall@{k}_mean"] = summarize([r["recorded_recall"] for r in rr])[0]
            row[f"recbole_own_ndcg@{k}_mean"] = summarize([r["recorded_ndcg"] for r in rr])[0]
            row["max_abs_diff_to_recbole_own"] = max(
                max(abs(r["recall"] - r["recorded_recall"]), abs(r["ndcg"] - r["recorded_ndcg"])) for r in rr
            )
        if first["library"] == "reinforcens" and first["peer"] in recbole:
            peer = recbole[first["peer"]]
            row["p_recall_vs_recbole"] = welch([r["recall"] for r in rr], [r["recall"] for r in peer])
            row["p_ndcg_vs_recbole"] = welch([r["ndcg"] for r in rr], [r["ndcg"] for r in peer])
        summary.append(row)

    def p(v: float | None) -> str:
        return "" if v is None or math.isnan(v) else f"{v:.2g}"

    def ms(m: float, s: float) -> str:
        return f"{m:.4f} ± {s:.4f}" if not math.isnan(s) else f"{m:.4f}"

    lines = [
        f"| Method | seeds | best epoch | Recall@{k} | NDCG@{k} | p Recall (vs RecBole) "
        f"| p NDCG (vs RecBole) | s/epoch |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in summary:
        be = f"{row['best_epoch_median']:g} ({row['best_epoch_min']}-{row['best_epoch_max']})"
        lines.append(
            f"| {row['method']} | {row['n']} | {be} "
            f"| {ms(row[f'recall@{k}_mean'], row[f'recall@{k}_std'])} "
            f"| {ms(row[f'ndcg@{k}_mean'], row[f'ndcg@{k}_std'])} "
            f"| {p(row['p_recall_vs_recbole'])} | {p(row['p_ndcg_vs_recbole'])} "
            f"| {row['train_seconds_per_epoch']:.3f} |"
        )
    return summary, "\n".join(lines)


def run_driver(args: argparse.Namespace) -> None:
    """Export, run RecBole, evaluate both libraries and write the results."""
    from reinforcens.data.prepared import load_prepared
    from reinforcens.evaluation import held_out_clicks

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = load_prepared(args.data)
    export_dataset(data, work)
    truth = held_out_clicks(data.test, data.n_users, data.n_items)
    exclude = (data.train_clicks.to_csr() + held_out_clicks(data.valid, data.n_users, data.n_items)).tocsr()

    import numpy as np

    rows: list[dict[str, Any]] = []
    for root in args.ours:
        ours = evaluate_ours(Path(root), data, truth, exclude, args.k)
        print(f"{root}: {len(ours)} runs; metrics.json reproduced to {TOLERANCE:g}", flush=True)
        rows += ours

    seeds = range(args.seed_start, args.seed_start + args.seeds)
    for method in args.methods.split(","):
        if method not in RECBOLE_METHODS:
            raise SystemExit(f"unknown RecBole method {method!r}; choose from {RECBOLE_METHODS}")
        for seed in seeds:
            res = run_recbole(args, method, seed, data.fingerprint)
            scores = np.load(Path(args.work) / "recbole" / method / f"seed{seed}" / "scores.npy")
            ev = full_ranking(scores, truth, exclude, data.test.users, args.k)
            rows.append(
                {
                    "library": "recbole",
                    "set": "recbole",
                    "model": RECBOLE_MODEL[method],
                    # BPR: xavier_normal_; LightGCN: xavier_uniform_ (each model's own init)
                    "init": "xavier_uniform" if method == "lightgcn" else "xavier_normal",
                    "method": method,
                    "peer": None,
                    "dim": res["config"]["embedding_size"],
                    "layers": res["config"].get("n_layers"),
                    "label": RECBOLE_LABEL[method],
                    "seed": seed,
                    "recall": ev["recall"],
                    "ndcg": ev["ndcg"],
                    "users": ev["users"],
                    "recorded_recall": res["recbole_test"].get(f"recall@{args.k}"),
                    "recorded_ndcg": res["recbole_test"].get(f"ndcg@{args.k}"),
                    "best_epoch": res["best_epoch"],
                    "epochs": res["epochs"],
                    "train_seconds_per_epoch": res["train_seconds_per_epoch"],
                    "batch_size": args.batch_size,
                    "run_dir": str(Path(args.work) / "recbole" / method / f"seed{seed}"),
                }
            )

    summary, table = build_table(rows, args.k)
    print()
    print(table)
    for row in summary:
        if row["library"] == "recbole":
            print(
                f"{row['method']}: RecBole's own evaluator (4 decimals): Recall@{args.k} "
                f"{row[f'recbole_own_recall@{args.k}_mean']:.4f}, NDCG@{args.k} "
                f"{row[f'recbole_own_ndcg@{args.k}_mean']:.4f} (largest per-run difference to this "
                f"script's: {row['max_abs_diff_to_recbole_own']:.1e})"
            )
    print(
        "\nRecall/NDCG: this script's metric for both libraries (test held-out clicks, training and "
        "validation clicks excluded); mean ± sample std over seeds; p: Welch's t-test against the "
        "RecBole peer (GMF uniform: BPR, GMF DNS: DNS, LightGCN uniform: LightGCN); s/epoch: mean "
        "training seconds per epoch (evaluation excluded)."
    )
    (work / "results.json").write_text(
        json.dumps({"data": str(args.data), "k": args.k, "summary": summary, "runs": rows}, indent=2) + "\n"
    )
    with open(work / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (work / "table.md").write_text(table + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="reinforcens prepared-dataset directory")
    ap.add_argument("--ours", action="append", default=[], help="a `reinforcens compare` output (repeatable)")
    ap.add_argument("--recbole-python", default="/tmp/recbole-venv/bin/python")
    ap.add_argument("--work", required=True, help="directory of the export, RecBole runs and results")
    ap.add_argument("--seeds", type=int, default=10, help="RecBole seeds per method")
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--methods", default="bpr,dns", help="RecBole methods: bpr, dns, lightgcn")
    ap.add_argument("--epochs", type=int, default=300, help="RecBole's epochs (its default)")
    ap.add_argument("--stopping-step", type=int, default=10, help="RecBole's stopping_step (its default)")
    ap.add_argument("--batch-size", type=int, default=2048, help="RecBole's train_batch_size (its default)")
    ap.add_argument("--candidates", type=int, default=50, help="DNS candidate_num")
    ap.add_argument("--dim", type=int, default=32, help="BPR's embedding_size (LightGCN: 64)")
    ap.add_argument("--lr", type=float, default=0.001, help="learning_rate")
    ap.add_argument("--k", type=int, default=20, help="metric cut-off")
    ap.add_argument("--redo", action="store_true", help="retrain RecBole runs that have results")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.worker and not args.data:
        ap.error("--data is required")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
    else:
        run_driver(args)


if __name__ == "__main__":
    sys.exit(main())
