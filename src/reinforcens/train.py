"""The trainer: a recommender R (a :class:`reinforcens.models.Recommender`, BPR loss) and a negative
sampler S, with early stopping.

``Trainer(data, config, out_dir).fit()`` runs, in ``out_dir``:

- an optional pretraining stage (BPR of the run's model with uniform negatives, early stopped on
  validation AUC) that initialises R and, for learned samplers, S (``pretrain/``);
- the main stage: per minibatch, S samples one negative per positive, R takes a BPR step, then S takes
  its own update; validation AUC/NDCG every ``eval_every`` epochs; the best state is kept and training
  stops after ``patience`` evaluations without improvement, but never before the stage has taken
  ``min_steps`` optimizer steps (so the same rule holds for a log of one batch per epoch and one of
  thousands);
- test evaluation of the best state (list AUC/NDCG, full-ranking Recall/NDCG@k and, on simulated data,
  the ground-truth AUC), written to ``metrics.json``.

Every epoch writes ``last.pt`` (all state, random streams included) atomically, so an interrupted run
resumes where it stopped and gives the same result as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from reinforcens import rundir
from reinforcens.atomic import atomic_open, atomic_write_json, atomic_write_text, is_temporary, json_line
from reinforcens.backend import resolve_backend
from reinforcens.checkpoint import load_checkpoint, save_checkpoint
from reinforcens.config import TrainConfig
from reinforcens.data.prepared import PreparedDataset
from reinforcens.errors import ConfigError, DataError
from reinforcens.evaluation import evaluate, evaluate_lists
from reinforcens.lock import LOCK_FILE, DirectoryLock
from reinforcens.models import MODELS, ModelSpec, Recommender, TorchScorer, make_model
from reinforcens.ops import make_ops
from reinforcens.ops.distributed import DistributedOps
from reinforcens.parallel import Parallel, SingleProcess, run_device
from reinforcens.samplers import Negatives, NegativeSampler, SamplerContext, make_sampler
from reinforcens.training_data import TrainingData


def computed_as(
    config: TrainConfig, backend: str | None = None, device: torch.device | None = None
) -> dict[str, Any]:
    """How a one-process run of ``config`` is computed here (its ``run.json``): the resolved backend,
    the device type and the pretrained checkpoint's SHA-256 (``None`` without one); ``backend`` and
    ``device``: already resolved (else resolved from the config as :class:`Trainer` does)."""
    if device is None:
        device = run_device(resolve_device(config.device))
    if backend is None:
        backend = resolve_backend(config.backend, device)
    pre = config.pretrained
    return {
        "backend": backend,
        "device": device.type,
        "pretrained_sha256": rundir.file_sha256(Path(pre)) if pre and Path(pre).is_file() else None,
    }


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, with a clear error if CUDA is asked for and absent."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"config key 'device': {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'device': CUDA is not available on this machine")
    return device


def _generators(seed: int, device: torch.device, n: int) -> list[torch.Generator]:
    """Independent random streams derived from one seed (numpy SeedSequence)."""
    seeds = np.random.SeedSequence(seed).generate_state(n, dtype=np.uint64)
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s) & ((1 << 63) - 1))
        gens.append(g)
    return gens


@dataclass
class StageResult:
    best_state: dict[str, Any]
    best_epoch: int
    best_valid: dict[str, float]
    epochs: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    last_negatives: np.ndarray | None = None


def bpr_step(
    optimizer: Any, users: torch.Tensor, pos: torch.Tensor, neg: Negatives, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One BPR step of a recommender's optimizer on a batch and its sampled negatives: the optimizer's
    ``bpr_step`` (the fused row-wise step of GMF and MF, an autograd step otherwise), or its
    ``mixture_step`` when the negatives are synthetic (:class:`reinforcens.samplers.base.Mixture`).
    Returns the summed batch loss and the pre-step scores of the negatives."""
    if neg.mixture is None:
        return optimizer.bpr_step(users, pos, neg.items, l2)
    return optimizer.mixture_step(users, pos, neg.mixture, l2)


class Trainer:
    """Train a recommender (the config's ``model``) with a negative sampler on a prepared dataset.

    Parameters
    ----------
    data
        The prepared dataset.
    config
        The run's configuration.
    out_dir
        Run directory; ``None`` trains in memory without checkpoints.
    progress
        Show a progress bar per epoch.
    resume
        Continue from ``out_dir/last.pt`` if present (the saved config must match).
    parallel
        The ranks of a data-parallel run (:func:`reinforcens.parallel.make_parallel`, under torchrun):
        each rank trains its share of every batch of ``ranks * batch_size`` pairs, the updates are
        synchronised, and rank 0 alone validates and owns ``out_dir`` (:mod:`reinforcens.parallel`).
        Default: one process.
    on_validate
        Called as ``on_validate(epoch, {"auc", "ndcg", "final"})`` after each validation of the main stage
        (``final``: 1.0 when the stage ends at that epoch), once that epoch is saved (so an exception it
        raises, e.g. a tuner's pruning, stops the run where a later ``resume`` continues it).
    """

    def __init__(
        self,
        data: PreparedDataset,
        config: TrainConfig,
        out_dir: str | Path | None = None,
        progress: bool = True,
        resume: bool = False,
        on_validate: Callable[[int, dict[str, float]], None] | None = None,
        parallel: Parallel | None = None,
    ):
        self.data = data
        self.on_validate = on_validate
        self.config = config
        self.parallel = parallel or SingleProcess()
        main = self.parallel.is_main
        # the other ranks of a data-parallel run get what they need from rank 0, never from out_dir
        self.out = Path(out_dir) if out_dir is not None and main else None
        self.progress = progress and main
        self.resume = resume
        self.device = run_device(resolve_device(config.device))
        self.backend = resolve_backend(config.backend, self.device)
        ops = make_ops(self.backend)
        if self.parallel.world > 1:
            ops = DistributedOps(ops, self.parallel)
        self.train_data = TrainingData.from_prepared(data, self.device, ops)
        self._popular: torch.Tensor | None = None  # the most clicked tenth of items (a trace)

    # ------------------------------------------------------------------ set-up
    def run_info(self) -> dict[str, Any]:
        """How this run is computed (``run.json``): resolved backend, device type, pretrained checkpoint."""
        info = computed_as(self.config, self.backend, self.device)
        if self.parallel.world > 1:  # results depend on the number of ranks (the global batch)
            info["ranks"] = self.parallel.world
        return info

    def _started(self) -> bool:
        """Whether ``out`` holds a started run (its ``config.json``, written last at set-up); raise if it
        holds anything that is not a run."""
        assert self.out is not None
        if not self.out.exists():
            return False
        if not self.out.is_dir():
            raise ConfigError(f"{self.out} exists and is not a directory")
        ours = {LOCK_FILE, rundir.DATA, rundir.RUN}  # what set-up writes before config.json
        names = [p.name for p in self.out.iterdir() if not is_temporary(p.name)]
        if rundir.CONFIG in names:
            return True
        if any(n in _TRAINED_FILES for n in names):  # a run's results without the config that made them
            raise DataError(
                "missing: the directory holds a run's files but not its config; delete the run "
                "directory to retrain",
                self.out / rundir.CONFIG,
            )
        if any(n not in ours for n in names):
            raise ConfigError(f"{self.out} exists and is not a run directory")
        return False

    def _prepare_out(self) -> None:
        """Check a started run against this one (under the run's lock), or set up a new one."""
        out = self.out
        assert out is not None
        if self._started():
            if not self.resume:
                if (out / rundir.METRICS).is_file():
                    raise ConfigError(f"{out} holds a finished run; choose another --out or delete it")
                raise ConfigError(f"{out} holds an unfinished run; pass --resume to continue it")
            saved = rundir.read_config_values(out)
            diff = rundir.config_differences(saved, json.loads(self.config.to_json()))
            if diff:
                raise ConfigError(
                    f"{out / rundir.CONFIG}: cannot resume the run: its config differs in {', '.join(diff)}"
                )
            rundir.check_same_data(out, self.data.fingerprint)
            rundir.check_same_run_info(out, self.run_info())
            return
        atomic_write_json(out / rundir.DATA, self.data.describe())
        atomic_write_json(out / rundir.RUN, self.run_info())
        atomic_write_text(out / rundir.CONFIG, self.config.to_json() + "\n")

    def _new_model(self, gen: torch.Generator) -> Recommender:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
        cpu = torch.Generator().manual_seed(seed)
        return make_model(ModelSpec.of(self.config, self.data), generator=cpu).to(self.device)

    # ------------------------------------------------------------------ one epoch
    def train_epoch(
        self,
        model: Recommender,
        optimizer: Any,
        sampler: NegativeSampler,
        batch_gen: torch.Generator,
        repeat: int,
        desc: str,
        record: list[torch.Tensor] | None = None,
        train_recommender: bool = True,
    ) -> dict[str, float]:
        """One pass over the training positives; returns the mean BPR loss and sampler stats.

        With ``train_recommender=False`` (a learned sampler's warm-up) the recommender only scores the
        negatives for the sampler's rewards: no BPR step, and the loss is the BPR loss of the unchanged
        model without its L2 term.
        """
        cfg = self.config
        batch = self._global_batch()
        n_batches = math.ceil(self.train_data.n_positives * repeat / batch)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        kept = 0
        shard = self.parallel.shard
        bar = tqdm(
            (shard(users, pos) for users, pos in self.train_data.batches(batch, batch_gen, repeat)),
            total=n_batches,
            desc=desc,
            leave=False,
            disable=not self.progress,
            unit="batch",
        )
        for users, pos in bar:
            neg = sampler.sample(users, pos, model)
            if train_recommender:
                neg_s = self._bpr_step(model, optimizer, users, pos, neg, cfg.l2, total)
            else:
                with torch.no_grad():
                    pos_s = model(users, pos)
                    if neg.mixture is None:
                        neg_s = model(users, neg.items)
                    else:
                        neg_s = model.mixture_scores(users, neg.mixture)
                    total.add_(torch.nn.functional.softplus(neg_s - pos_s).sum().double())
            sampler.update(users, pos, neg, model, neg_s)
            if record is not None and kept < cfg.record_negatives:
                take = min(cfg.record_negatives - kept, users.numel())
                record.append(torch.stack([users[:take], neg.items[:take]]).cpu())
                kept += take
        if not train_recommender:  # each rank summed its share (a BPR step returns the whole batch's)
            total = self.train_data.ops.all_sum(total)
        stats = {"loss": float(total) / max(self.train_data.n_positives * repeat, 1)}
        if record:
            stats.update(self._negative_shares(torch.cat(record, dim=1)))
        stats.update(sampler.epoch_end())
        return stats

    def _global_batch(self) -> int:
        """The pairs of one step: ``batch_size`` on every rank."""
        return self.config.batch_size * self.parallel.world

    def _negative_shares(self, pairs: torch.Tensor) -> dict[str, float]:
        """What the epoch's recorded negatives were (``pairs``: users over items, 2 x n): the share
        exposed to their user without a click, and the share among the most clicked tenth of items
        (ties at the cut included), the share uniform sampling gives being about 0.1."""
        if self._popular is None:
            counts = self.train_data.item_clicks.cpu().numpy()
            cut = np.quantile(counts, 0.9) if counts.size else 0
            self._popular = torch.from_numpy(counts >= max(cut, 1))
        users, items = pairs[0].to(self.device), pairs[1].to(self.device)
        exposed = self.train_data.is_exposed(users, items)
        return {
            "neg_exposed_share": float(exposed.double().mean()),
            "neg_popular_share": float(self._popular[pairs[1]].double().mean()),
        }

    @staticmethod
    def _bpr_step(
        model: Recommender,
        optimizer: Any,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: Negatives,
        l2: float,
        total: torch.Tensor,
    ) -> torch.Tensor:
        """One BPR step of the recommender (:func:`bpr_step`); adds the batch loss to ``total`` and
        returns the pre-step negative scores."""
        loss, neg_s = bpr_step(optimizer, users, pos, neg, l2)
        total.add_(loss)
        return neg_s

    def validate(self, model: Recommender) -> dict[str, float]:
        scorer = TorchScorer(model, self.backend)
        return evaluate_lists(scorer, self.data.valid)

    # ------------------------------------------------------------------ a stage
    def _run_stage(
        self,
        name: str,
        stage_dir: Path | None,
        model: Recommender,
        sampler: NegativeSampler,
        gens: list[torch.Generator],
        max_epochs: int,
        patience: int,
        repeat: int,
        floor: float | None = None,
    ) -> StageResult:
        cfg = self.config
        optimizer = model.make_optimizer(cfg.lr, self.train_data.ops, cfg.optimizer)
        rank_model = sampler.ranking_model(model)
        main, several = self.parallel.is_main, self.parallel.world > 1
        start_epoch, best_epoch, bad, seconds = 1, 0, 0, 0.0
        history: list[dict[str, Any]] = []
        best_valid: dict[str, float] = {"auc": -math.inf, "ndcg": -math.inf}
        best_state: dict[str, Any] | None = None
        last_path = stage_dir / "last.pt" if stage_dir else None
        records: dict[int, np.ndarray] = {}

        last_epoch = 0
        st = None
        if last_path is not None and last_path.is_file():
            st = load_checkpoint(last_path, self.device, require=_LAST_KEYS)
        if several:  # rank 0 reads the run directory
            st = self.parallel.broadcast(st)
        if st is not None:
            try:
                model.load_state_dict(st["recommender"])
                optimizer.load_state_dict(st["optimizer"])
                sampler.load_state_dict(st["sampler"])
                streams = list(st["generators"])
                if several:  # each rank's own negatives stream
                    streams[2] = st["rank_generators"][self.parallel.rank]
                for g, s in zip(gens, streams, strict=True):
                    g.set_state(s.cpu().clone() if g.device.type == "cpu" else s.clone())
                last_epoch = int(st["epoch"])
                best_epoch, bad, seconds = int(st["best_epoch"]), int(st["bad"]), float(st["seconds"])
                best_valid = {k: float(v) for k, v in st["best_valid"].items()}
            except (KeyError, RuntimeError, TypeError, ValueError) as exc:
                what = f"not the state of this run ({type(exc).__name__}: {exc})"
                raise DataError(what, last_path) from None
            start_epoch = last_epoch + 1
            if st.get("stopped", False):  # the stage had finished: nothing left to train
                start_epoch = max_epochs + 1
            if stage_dir is None:  # another rank of a data-parallel run: rank 0 keeps the rest
                pass
            elif best_epoch > 0 or floor is not None:  # else no evaluation has happened yet
                best_state = load_checkpoint(stage_dir / rundir.BEST, self.device, require=_STATE_KEYS)
                # best.pt may be one epoch ahead when a run was stopped between the two writes: that
                # epoch is trained again, identically, and writes it again
                if int(best_state["epoch"]) not in (best_epoch, last_epoch + 1):
                    raise DataError(
                        f"holds epoch {best_state['epoch']}, last.pt says the best epoch is {best_epoch}",
                        stage_dir / rundir.BEST,
                    )
            if stage_dir is not None:
                history = self._resumed_history(stage_dir, last_epoch, floor is not None)
                records = self._resumed_negatives(stage_dir, last_epoch)
        elif floor is not None and main:
            # epoch 0: the pretrained state is a candidate too
            v = self.validate(rank_model)
            best_valid, best_state = v, self._state(model, sampler, 0, v)
            history.append({"epoch": 0, "stage": name, "valid_auc": v["auc"], "valid_ndcg": v["ndcg"]})
            if stage_dir is not None:  # so a resumed run that never beats it still has a best state
                save_checkpoint(stage_dir / rundir.BEST, best_state)

        # the stop rules wait for min_steps optimizer steps (an epoch's steps are fixed for a stage)
        steps_per_epoch = math.ceil(self.train_data.n_positives * repeat / self._global_batch())
        warm = sampler.warmup_epochs  # epochs in which R does not train: not evaluated, not counted
        epoch = last_epoch
        for epoch in range(start_epoch, max_epochs + 1):
            t0 = time.perf_counter()
            rec: list[torch.Tensor] = []
            stats = self.train_epoch(
                model,
                optimizer,
                sampler,
                gens[1],
                repeat,
                desc=f"{name} epoch {epoch}",
                record=rec if cfg.record_negatives and main else None,
                train_recommender=epoch > warm,
            )
            train_s = time.perf_counter() - t0
            if rec:
                records[epoch] = torch.cat(rec, dim=1).numpy()
            row: dict[str, Any] = {"epoch": epoch, "stage": name, "train_seconds": train_s} | stats
            improved = False
            if main and epoch > warm and ((epoch - warm) % cfg.eval_every == 0 or epoch == max_epochs):
                v = self.validate(rank_model)
                row["valid_auc"], row["valid_ndcg"] = v["auc"], v["ndcg"]
                if v["auc"] > best_valid["auc"]:
                    best_valid, best_epoch, bad, improved = v, epoch, 0, True
                    best_state = self._state(model, sampler, epoch, v)
                else:
                    bad += 1
            seconds += time.perf_counter() - t0
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            trained = epoch - warm  # epochs in which R trained
            stop = trained * steps_per_epoch >= cfg.min_steps and (
                bad >= patience
                or (
                    floor is not None
                    and cfg.below_pretrained_stop
                    and trained >= cfg.below_pretrained_stop
                    and best_epoch == 0
                )
            )
            if several:  # rank 0 decides, and saves every rank's stream
                if self.parallel.realign([model, optimizer, sampler]):
                    row["ranks_realigned"] = True
                stop = self.parallel.broadcast(bool(stop))
                rank_streams = self.parallel.gather(gens[2].get_state().unsqueeze(0))[0][0]
            if stage_dir is not None:
                self._save_epoch(
                    stage_dir,
                    model,
                    optimizer,
                    sampler,
                    gens,
                    epoch,
                    best_epoch,
                    bad,
                    seconds,
                    best_valid,
                    best_state if improved else None,
                    history,
                    records,
                    stopped=bool(stop) or epoch == max_epochs,
                    # each row its own tensor: a generator state must not be a view into a larger one
                    rank_streams=[r.clone() for r in rank_streams.cpu()] if several else None,
                )
            if self.on_validate is not None and name == "train" and "valid_auc" in row:
                final = float(bool(stop) or epoch == max_epochs)  # 1.0: the stage ends here
                scores = {"auc": row["valid_auc"], "ndcg": row["valid_ndcg"], "final": final}
                self.on_validate(epoch, scores)
            if self.progress:
                msg = f"{name} epoch {epoch}: loss {stats['loss']:.4f}"
                if "valid_auc" in row:
                    msg += f"  valid auc {row['valid_auc']:.4f} ndcg {row['valid_ndcg']:.4f}"
                tqdm.write(msg)
            if stop:
                break
        if best_state is None and main:  # no evaluation happened (epochs=0)
            v = self.validate(rank_model)
            best_valid, best_state = v, self._state(model, sampler, epoch, v)
        res = StageResult(best_state, best_epoch, best_valid, epoch, seconds, history)
        res.last_negatives = records.get(epoch)
        return res

    @staticmethod
    def _resumed_history(stage_dir: Path, last_epoch: int, epoch_zero: bool) -> list[dict[str, Any]]:
        """The rows of ``epochs.jsonl`` up to ``last_epoch``, one per epoch (and the pretrained state's
        epoch 0 with ``epoch_zero``), as the interrupted run wrote them.

        Raises
        ------
        DataError
            Naming ``epochs.jsonl`` if a row is missing, repeated or out of order: a resumed run that
            continued from it would not be the uninterrupted run.
        """
        path = stage_dir / rundir.EPOCHS
        history = [h for h in rundir.read_json_lines(path) if h["epoch"] <= last_epoch]
        expected = [*([0] if epoch_zero else []), *range(1, last_epoch + 1)]
        if [h["epoch"] for h in history] != expected:
            raise DataError(
                f"corrupt: holds epochs {[h['epoch'] for h in history]}, last.pt is at epoch {last_epoch}",
                path,
            )
        return history

    def _resumed_negatives(self, stage_dir: Path, last_epoch: int) -> dict[int, np.ndarray]:
        """The negatives recorded up to ``last_epoch`` (``negatives.npz``), one record per epoch.

        Raises
        ------
        DataError
            Naming ``negatives.npz`` if it is missing, corrupt, holds ids out of range or lacks an
            epoch the interrupted run recorded.
        """
        path = stage_dir / rundir.NEGATIVES
        if not self.config.record_negatives or last_epoch == 0 or self.train_data.n_positives == 0:
            return rundir.read_negatives(path, last_epoch) if path.is_file() else {}
        if not path.is_file():
            raise DataError(f"missing: the negatives recorded up to epoch {last_epoch} are gone", path)
        records = rundir.read_negatives(path, last_epoch, self.data.n_users, self.data.n_items)
        if sorted(records) != list(range(1, last_epoch + 1)):
            raise DataError(
                f"corrupt: holds epochs {sorted(records)}, last.pt is at epoch {last_epoch}", path
            )
        return records

    def _state(self, model: Recommender, sampler: NegativeSampler, epoch: int, valid: dict) -> dict[str, Any]:
        return {
            "recommender": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "sampler": _clone(sampler.model_state_dict()),
            "epoch": epoch,
            "valid": {k: float(v) for k, v in valid.items()},
            "config": self.config.to_json(),
            "n_users": self.data.n_users,
            "n_items": self.data.n_items,
            "data_fingerprint": self.data.fingerprint,
        }

    def _save_epoch(
        self,
        stage_dir,
        model,
        optimizer,
        sampler,
        gens,
        epoch,
        best_epoch,
        bad,
        seconds,
        best_valid,
        new_best,
        history,
        records,
        stopped: bool = False,
        rank_streams: list[torch.Tensor] | None = None,
    ) -> None:
        if new_best is not None:
            save_checkpoint(stage_dir / rundir.BEST, new_best)
        if records:
            with atomic_open(stage_dir / rundir.NEGATIVES, "wb") as f:
                np.savez(f, **{f"e{k}": v for k, v in records.items()})
        atomic_write_text(stage_dir / rundir.EPOCHS, "".join(json_line(h) for h in history))
        save_checkpoint(
            stage_dir / rundir.LAST,
            {
                "recommender": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "sampler": sampler.state_dict(),
                "generators": [g.get_state() for g in gens],
                "epoch": epoch,
                "best_epoch": best_epoch,
                "bad": bad,
                "seconds": seconds,
                "best_valid": best_valid,
                "stopped": stopped,
                **({"rank_generators": rank_streams} if rank_streams is not None else {}),
            },
        )

    # ------------------------------------------------------------------ the whole run
    def _pretrain(self) -> tuple[dict[str, Any], float | None]:
        cfg = self.config
        if cfg.pretrained:
            st = load_checkpoint(cfg.pretrained, self.device, require=_STATE_KEYS)
            other = st.get("data_fingerprint", self.data.fingerprint) != self.data.fingerprint
            if other or st["n_users"] != self.data.n_users or st["n_items"] != self.data.n_items:
                raise DataError(
                    "pretrained checkpoint was trained on other data "
                    f"({st['n_users']} users, {st['n_items']} items)",
                    cfg.pretrained,
                )
            _check_pretrained_model(st, cfg, cfg.pretrained)
            return st, st.get("valid", {}).get("auc")
        stage_dir = self.out / "pretrain" if self.out else None
        several = self.parallel.world > 1
        done = bool(stage_dir and (stage_dir / "done.json").is_file())
        if several:
            done = self.parallel.broadcast(done)
        if done:
            st = None
            if stage_dir is not None:
                st = load_checkpoint(stage_dir / rundir.BEST, self.device, require=_STATE_KEYS)
            if several:
                st = self.parallel.broadcast(st)
            return st, float(st["valid"]["auc"])
        gens = self._streams(cfg.seed + 1_000_003)
        model = self._new_model(gens[0])
        uniform = make_sampler("uniform", self.train_data, gens[2])
        self._own_sampler_stream(gens, cfg.seed + 1_000_003)
        res = self._run_stage(
            "pretrain",
            stage_dir,
            model,
            uniform,
            gens,
            cfg.pretrain_epochs,
            cfg.pretrain_patience,
            cfg.pretrain_negatives,
        )
        if stage_dir:
            save_checkpoint(stage_dir / rundir.BEST, res.best_state)
            atomic_write_json(stage_dir / "done.json", {"best_epoch": res.best_epoch})
        best = self.parallel.broadcast(res.best_state) if several else res.best_state
        return best, float(best["valid"]["auc"])

    def fit(self) -> dict[str, Any]:
        """Train, select the best validation state, evaluate it; returns the metrics dict.

        With a run directory, the process holds its lock throughout (a second writer is refused), and a
        finished run is returned as it is (``resume``) only if it verifies
        (:func:`reinforcens.rundir.verify_finished`).
        """
        if not self.parallel.is_main:  # rank 0 checks the run directory and says whether it is finished
            done = self.parallel.broadcast(None)
            return done if done is not None else self._fit()
        if self.out is None:
            if self.parallel.world > 1:
                self.parallel.broadcast(None)
            return self._fit()
        self._started()  # refuse a foreign directory before writing a lock file into it
        with DirectoryLock(self.out, "run"):
            self._prepare_out()
            done = None
            if self.resume and (self.out / rundir.METRICS).is_file():
                done = rundir.verify_finished(
                    self.out, self.config.to_json(), self.data.fingerprint, self.run_info()
                )
            if self.parallel.world > 1:
                self.parallel.broadcast(done)
            return done if done is not None else self._fit()

    def _fit(self) -> dict[str, Any]:
        cfg = self.config
        t_start = time.perf_counter()
        gens = self._streams(cfg.seed)
        model = self._new_model(gens[0])
        ctx = SamplerContext(
            dim=cfg.dim, lr=cfg.lr, l2=cfg.l2, init_std=cfg.init_std, model=cfg.resolved_sampler_model()
        )
        sampler = make_sampler(cfg.sampler, self.train_data, gens[2], cfg.sampler_options, ctx)
        self._own_sampler_stream(gens, cfg.seed)
        floor = None
        pre_epochs = 0
        if cfg.resolved_init() == "pretrained":
            pre, floor = self._pretrain()
            model.load_state_dict(pre["recommender"])
            sampler.init_from_pretrained(model.dot_state())
            pre_epochs = int(pre.get("epoch", 0))
            if floor is None:
                floor = -math.inf
        res = self._run_stage(
            "train",
            self.out,
            model,
            sampler,
            gens,
            cfg.epochs,
            cfg.patience,
            cfg.negatives_per_positive,
            floor=floor,
        )
        if not self.parallel.is_main:  # rank 0 evaluates and writes; every rank returns its metrics
            self.model, self.sampler, self.history = model, sampler, res.history
            return self.parallel.broadcast(None)
        model.load_state_dict(res.best_state["recommender"])
        if res.best_state["sampler"]:
            sampler.load_state_dict(res.best_state["sampler"])
        scorer = TorchScorer(sampler.ranking_model(model), self.backend)
        results = evaluate(scorer, self.data, full_k=cfg.full_k)
        metrics: dict[str, Any] = {
            "sampler": cfg.sampler,
            "seed": cfg.seed,
            "best_epoch": res.best_epoch,
            "epochs": res.epochs,
            "pretrain_best_epoch": pre_epochs,
            "seconds": time.perf_counter() - t_start,
            "train_seconds_per_epoch": float(
                np.mean([h["train_seconds"] for h in res.history if "train_seconds" in h] or [0])
            ),
        }
        for split, vals in results.items():
            for k, v in vals.items():
                metrics[f"{split}.{k}"] = v
        if res.last_negatives is not None and self.data.ground_truth_path is not None:
            from reinforcens.quality import negative_quality

            users, items = res.last_negatives
            for k, v in negative_quality(self.data, users, items).items():
                metrics[f"negatives.{k}"] = v
        self.model, self.sampler, self.history = model, sampler, res.history
        if self.out is not None:
            save_checkpoint(self.out / rundir.BEST, res.best_state)
            metrics["checkpoint_sha256"] = rundir.file_sha256(self.out / rundir.BEST)
            atomic_write_json(self.out / rundir.METRICS, metrics)
        if self.parallel.world > 1:
            self.parallel.broadcast(metrics)
        return metrics

    def _streams(self, seed: int) -> list[torch.Generator]:
        """The random streams of a stage from its seed: model initialisation, data order and the
        sampler's, the same on every rank (see :meth:`_own_sampler_stream`)."""
        return _generators(seed, self.device, 3)

    def _own_sampler_stream(self, gens: list[torch.Generator], seed: int) -> None:
        """Give rank ``r > 0`` of a data-parallel run its own sampler stream (``gens[2]``, reseeded in
        place from ``SeedSequence(seed, spawn_key=(r,))``) once the sampler is built: what the sampler
        draws at construction (a learned policy's initial weights) is the same on every rank, its
        negatives are not. Rank 0 keeps the stream of a one-process run."""
        if self.parallel.rank > 0:
            state = np.random.SeedSequence(seed, spawn_key=(self.parallel.rank,)).generate_state(1, np.uint64)
            gens[2].manual_seed(int(state[0]) & ((1 << 63) - 1))


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    return obj


#: files that only a started run writes (their presence without config.json: a corrupt run)
_TRAINED_FILES = frozenset(
    {rundir.EPOCHS, rundir.LAST, rundir.BEST, rundir.NEGATIVES, rundir.METRICS, "pretrain"}
)

#: keys of every saved model state (best.pt) and of the resumable state (last.pt)
_STATE_KEYS = ("recommender", "sampler", "epoch", "valid", "n_users", "n_items")
_LAST_KEYS = ("recommender", "optimizer", "sampler", "generators", "epoch", "best_epoch", "bad",
              "seconds", "best_valid")  # fmt: skip


def _check_pretrained_model(st: dict[str, Any], cfg: TrainConfig, path: str | Path) -> None:
    """Raise :class:`ConfigError` unless the checkpoint ``st`` holds a model of the run's kind (and
    layers): a GMF's trained ``h`` must not become an MF's fixed one, nor a LightGCN start from a GMF."""
    try:
        theirs = json.loads(st["config"]) if isinstance(st.get("config"), str) else {}
    except json.JSONDecodeError:
        theirs = {}
    kind, layers = theirs.get("model", "gmf"), theirs.get("layers", 3)
    if kind != cfg.model or (kind == "lightgcn" and layers != cfg.layers):
        what = f"{kind} with {layers} layers" if kind == "lightgcn" else kind
        raise ConfigError(
            f"{path}: the pretrained checkpoint is a {what} model, this run trains --model {cfg.model}"
        )


def load_run(
    run_dir: str | Path,
    device: str = "cpu",
    data: PreparedDataset | None = None,
    recommender: bool = False,
) -> tuple[TrainConfig, Recommender, dict[str, Any]]:
    """Load a finished run's config and its ranking model (the best state).

    Returns the config, the model that ranks (the generator for IRGAN; with ``recommender``, the
    recommender in every case), and the checkpoint dict.
    ``data``: the run's prepared dataset, needed by graph models (LightGCN) to rebuild their graph;
    found from the run's ``data.json`` when not given (:func:`reinforcens.rundir.data_for`).

    Raises
    ------
    DataError
        Naming ``config.json`` or ``best.pt`` if it is missing, corrupt (``best.pt``: a failed CRC
        check included) or not of this kind.
    """
    run_dir = Path(run_dir)
    cfg = rundir.read_config(run_dir)
    path = run_dir / rundir.BEST
    st = load_checkpoint(path, device, require=_STATE_KEYS)
    ranks_with_sampler = cfg.sampler == "irgan" and not recommender
    kind = cfg.resolved_sampler_model() if ranks_with_sampler else cfg.model
    if not MODELS[kind].needs_graph:
        spec = ModelSpec(kind, int(st["n_users"]), int(st["n_items"]), cfg.dim)
    else:
        if data is None:
            data = rundir.data_for(run_dir)
        if data.fingerprint != rundir.read_data_info(run_dir)["fingerprint"]:
            raise ConfigError(
                f"{run_dir}: a {kind} model's graph is its training clicks, and {data.path} holds other "
                "clicks than the data it was trained on"
            )
        spec = ModelSpec.of(cfg, data, kind)
    model = make_model(spec)
    try:
        model.load_state_dict(st["sampler"]["model"] if ranks_with_sampler else st["recommender"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise DataError(f"not a {cfg.sampler} run's {kind} model of dim {cfg.dim} ({exc})", path) from None
    return cfg, model.to(device), st


def remove_run(run_dir: Path) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)
