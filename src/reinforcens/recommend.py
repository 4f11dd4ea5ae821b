"""Recommendations and embeddings out of a finished run (``reinforcens recommend`` and ``export``).

:meth:`TrainedRecommender.load` reads a finished run directory (its config, the best state and the
prepared dataset it was trained on, through :func:`reinforcens.rundir.data_for`) and answers in raw
ids, the ids of the log:

- :meth:`~TrainedRecommender.recommend`: the top ``k`` items of each user by the ranking model's score
  (the recommender; IRGAN's generator), the user's training clicks excluded unless asked otherwise;
  ties are broken by the lower internal item id, so the output is deterministic;
- :meth:`~TrainedRecommender.similar_items`: the ``k`` items closest to each item by the cosine of their
  vectors in user space, ``h * Q_i`` (every model scores ``P_u . (h * Q_i)`` with its effective tables,
  :meth:`reinforcens.models.Recommender.tables`; ``h`` is all ones but for GMF);
- :meth:`~TrainedRecommender.export`: the effective tables with their raw ids and the model's config.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from reinforcens import rundir
from reinforcens.atomic import atomic_open, atomic_write_json
from reinforcens.config import TrainConfig
from reinforcens.data.prepared import PreparedDataset
from reinforcens.errors import ConfigError
from reinforcens.models.base import Recommender, top_k


def _positions(raw: np.ndarray, wanted: Iterable[Any], what: str) -> np.ndarray:
    """Internal ids of the raw ids ``wanted`` (compared as text, so ``42`` finds ``"42"``).

    Raises
    ------
    ConfigError
        Naming how many ids are unknown and the first of them.
    """
    index = {str(r): i for i, r in enumerate(raw.tolist())}
    wanted = [str(w) for w in wanted]
    unknown = [w for w in wanted if w not in index]
    if unknown:
        raise ConfigError(
            f"{len(unknown)} unknown {what} id(s) (not in the run's data), first: {unknown[0]!r}"
        )
    return np.asarray([index[w] for w in wanted], dtype=np.int64)


@dataclass
class TrainedRecommender:
    """A finished run's ranking model with the id maps and training clicks of its data."""

    config: TrainConfig
    model: Recommender
    data: PreparedDataset
    run_dir: Path

    @classmethod
    def load(
        cls, run_dir: str | Path, data: str | Path | None = None, device: str = "cpu"
    ) -> TrainedRecommender:
        """Load a finished run (``metrics.json`` present); ``data`` overrides the recorded dataset,
        which must then index the same users and items."""
        from reinforcens.train import load_run

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ConfigError(f"--run {run_dir}: no such run directory")
        rundir.read_metrics(run_dir)  # an unfinished run has no selected model
        prepared = rundir.data_for(run_dir, data)
        cfg, model, _ = load_run(run_dir, device, data=prepared)
        return cls(cfg, model.eval(), prepared, run_dir)

    def user_index(self, raw_user_ids: Iterable[Any]) -> np.ndarray:
        return _positions(self.data.user_ids, raw_user_ids, "user")

    def item_index(self, raw_item_ids: Iterable[Any]) -> np.ndarray:
        return _positions(self.data.item_ids, raw_item_ids, "item")

    def recommend(
        self,
        raw_user_ids: Iterable[Any] | None = None,
        k: int = 20,
        exclude_seen: bool = True,
        chunk: int = 1024,
    ) -> pd.DataFrame:
        """The top ``k`` items of each user (all users when ``raw_user_ids`` is None).

        Returns
        -------
        pandas.DataFrame
            Columns ``user, item`` (raw ids), ``score`` and ``rank`` (1 = best), users in the order
            given; a user who has clicked all but a few items in training gets fewer rows.
        """
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        users = np.arange(self.data.n_users) if raw_user_ids is None else self.user_index(raw_user_ids)
        seen = self.data.train_clicks.to_csr() if exclude_seen else None
        frames = []
        for start in range(0, users.size, chunk):
            u = users[start : start + chunk]
            items, scores = self.model.recommend(u, k, None if seen is None else seen[u])
            r, c = np.nonzero(items >= 0)
            picked = items[r, c]
            frames.append(
                pd.DataFrame(
                    {
                        "user": self.data.user_ids[u[r]],
                        "item": self.data.item_ids[picked],
                        "score": scores[r, c],
                        "rank": c + 1,
                    }
                )
            )
        return pd.concat(frames, ignore_index=True) if frames else _empty("user", "item")

    def item_vectors(self) -> torch.Tensor:
        """Each item in user space: ``h * Q_i`` (a user's score is the dot product with ``P_u``)."""
        t = self.model.tables()
        return (t.item * t.h).double().cpu()

    def similar_items(self, raw_item_ids: Iterable[Any], k: int = 10) -> pd.DataFrame:
        """The ``k`` most similar other items of each item by cosine of :meth:`item_vectors`.

        Returns
        -------
        pandas.DataFrame
            Columns ``item, similar`` (raw ids), ``score`` (the cosine) and ``rank``.
        """
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        items = self.item_index(raw_item_ids)
        vec = self.item_vectors()
        unit = vec / vec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cos = (unit[items] @ unit.T).numpy()
        cos[np.arange(items.size), items] = -np.inf  # not itself
        best = top_k(cos, min(k, cos.shape[1]))
        r, c = np.nonzero(best >= 0)
        picked = best[r, c]
        if not r.size:
            return _empty("item", "similar")
        return pd.DataFrame(
            {
                "item": self.data.item_ids[items[r]],
                "similar": self.data.item_ids[picked],
                "score": cos[r, picked],
                "rank": c + 1,
            }
        )

    def export(self, out: str | Path) -> list[Path]:
        """Write the model for use elsewhere; returns the files written.

        ``out/`` gets ``user_factors.npy`` and ``item_factors.npy`` (float32, row ``i`` is internal id
        ``i``: the effective tables, for LightGCN its propagated embeddings), ``h.npy`` (ones but for
        GMF), ``user_ids.parquet`` and ``item_ids.parquet`` (column ``raw_id``, in row
        order), and ``model.json`` (the score formula, sizes, the run and its config). Every file is
        written atomically.
        """
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        m = self.model
        t = m.tables()
        arrays = {"user_factors.npy": t.user, "item_factors.npy": t.item, "h.npy": t.h}
        written = []
        for name, tensor in arrays.items():
            with atomic_open(out / name, "wb") as f:
                np.save(f, tensor.detach().float().cpu().numpy())
            written.append(out / name)
        for name, ids in (("user_ids.parquet", self.data.user_ids), ("item_ids.parquet", self.data.item_ids)):
            with atomic_open(out / name, "wb") as f:
                pd.DataFrame({"raw_id": ids}).to_parquet(f, index=False)
            written.append(out / name)
        atomic_write_json(
            out / "model.json",
            {
                "model": m.kind,
                "score": "h . (user_factors[u] * item_factors[i])",
                "factors": "propagated embeddings" if not m.dot_product else "embedding tables",
                "n_users": m.n_users,
                "n_items": m.n_items,
                "dim": int(t.h.numel()),
                "ranking_model": "generator" if self.config.sampler == "irgan" else "recommender",
                "run": str(self.run_dir.resolve()),
                "config": json.loads(self.config.to_json()),
            },
        )
        written.append(out / "model.json")
        return written


def _empty(a: str, b: str) -> pd.DataFrame:
    return pd.DataFrame({a: [], b: [], "score": [], "rank": []})
