"""How the processes of one training run share it: one process, or data-parallel ranks under torchrun.

``torchrun --nproc-per-node N -m reinforcens train ...`` starts N ranks of one run (``RANK``,
``WORLD_SIZE`` and the rendezvous in their environment); :func:`make_parallel` joins them in a
``torch.distributed`` process group (gloo on the CPU, NCCL on CUDA) and returns a
:class:`TorchDistributed`; a plain process gets :class:`SingleProcess`, whose operations do nothing.

What the trainer does with it (:class:`reinforcens.train.Trainer`):

* every rank draws the same shuffled global batches of ``N * B`` (user, positive) pairs from the shared
  data-order stream and keeps its contiguous share (:meth:`Parallel.shard`), so the union of the ranks'
  batches is the one-process batch of ``N * B``;
* each rank draws the negatives (and a learned sampler's candidates) of its share from its own random
  stream: this is the work that is split;
* the updates are synchronised by gathering their inputs
  (:class:`reinforcens.ops.distributed.DistributedOps`): the fused BPR, row-wise Adam and REINFORCE
  steps run on the concatenated batch on every rank, and autograd gradients (LightGCN) are summed
  across ranks, so every rank takes the step one process takes at batch ``N * B``;
* rank 0 validates, decides when to stop, and alone reads and writes the run directory; the others get
  what they need (a resumed state, the pretrained state, the stop decision) by broadcast.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch


class Parallel(ABC):
    """The ranks of one training run (see the module docstring).

    Attributes
    ----------
    rank : int
        This process's rank, ``0 <= rank < world``.
    world : int
        The number of ranks.
    """

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that validates and owns the run directory."""
        return self.rank == 0

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This rank's contiguous share of each (equally long) tensor: ``torch.tensor_split`` into
        ``world`` parts (lengths differ by at most one; a share may be empty), part ``rank``."""
        if self.world == 1:
            return tensors
        return tuple(torch.tensor_split(t, self.world)[self.rank] for t in tensors)

    @abstractmethod
    def gather(self, *tensors: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], int]:
        """Every rank's tensors concatenated along dim 0 in rank order, and where this rank's rows
        start in them.

        All tensors of one call have the same length on a rank (lengths may differ between ranks),
        and the same trailing shape and dtype on every rank.
        """

    @abstractmethod
    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of ``tensor`` over the ranks (a new tensor)."""

    @abstractmethod
    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable; tensors come back on this rank's device)."""

    def realign(self, components: Sequence[Any]) -> bool:
        """Give every rank rank 0's state of ``components`` (objects with ``state_dict`` and
        ``load_state_dict``) if any rank's differs from it; whether one did.

        The ranks run the same steps on the same inputs and stay identical where those steps are
        deterministic (the CPU); on CUDA, atomic additions may round differently on each rank, and this
        puts them back in step. Only a digest of each state travels unless they differ.
        """
        if self.world == 1:
            return False
        mine = torch.tensor([[_digest(c.state_dict()) for c in components]], dtype=torch.float64)
        (every,), _ = self.gather(mine.reshape(1, -1))
        if bool((every == every[0]).all()):
            return False
        states = self.broadcast([c.state_dict() for c in components] if self.is_main else None)
        if not self.is_main:
            for c, st in zip(components, states, strict=True):
                c.load_state_dict(st)
        return True

    @abstractmethod
    def close(self) -> None:
        """Leave the process group (nothing for one process)."""


class SingleProcess(Parallel):
    """One process: every operation is the identity."""

    def close(self) -> None:
        return None

    def gather(self, *tensors: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], int]:
        return tensors, 0

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def broadcast(self, obj: Any) -> Any:
        return obj


class TorchDistributed(Parallel):
    """Ranks in the default ``torch.distributed`` process group.

    Parameters
    ----------
    device
        The device the collectives' tensors live on (``cuda:<local rank>`` with NCCL, the CPU with gloo).
    """

    def __init__(self, device: torch.device):
        import torch.distributed as dist

        self.dist = dist
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.device = device

    def gather(self, *tensors: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], int]:
        n = int(tensors[0].shape[0]) if tensors else 0
        sizes = torch.zeros(self.world, dtype=torch.int64, device=self.device)
        sizes[self.rank] = n
        self.dist.all_reduce(sizes)
        counts = [int(s) for s in sizes.cpu()]
        start, most = sum(counts[: self.rank]), max(counts)
        out: list[torch.Tensor | None] = [None] * len(tensors)
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, t in enumerate(tensors):
            by_dtype.setdefault(t.dtype, []).append(i)
        for dtype, idx in by_dtype.items():  # one all_gather per dtype: the tensors side by side
            widths = [_width(tensors[i]) for i in idx]
            flat = torch.zeros((most, sum(widths)), dtype=dtype, device=self.device)
            if n:
                flat[:n] = torch.cat([tensors[i].reshape(n, -1).to(self.device) for i in idx], dim=1)
            parts = [torch.empty_like(flat) for _ in range(self.world)]
            self.dist.all_gather(parts, flat)
            whole = torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])
            col = 0
            for i, w in zip(idx, widths, strict=True):
                t = tensors[i]
                piece = whole[:, col : col + w].reshape(sum(counts), *t.shape[1:])
                out[i] = piece.to(t.device).contiguous()
                col += w
        return tuple(t for t in out if t is not None), start

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.detach().to(self.device, copy=True)
        self.dist.all_reduce(out)
        return out.to(tensor.device)

    def broadcast(self, obj: Any) -> Any:
        box = [obj if self.is_main else None]
        device = self.device if self.device.type == "cuda" else None
        self.dist.broadcast_object_list(box, src=0, device=device)
        return _to_device(box[0], self.device)

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


def _digest(state: Any) -> float:
    """A float64 digest of the tensors in a (nested) state: the sum of their values and of their norms
    (computed in float64 without a copy), which a difference of rounding anywhere changes."""
    if isinstance(state, torch.Tensor):
        if state.numel() == 0 or state.is_complex():
            return 0.0
        t = state.detach() if state.is_floating_point() else state.detach().double()
        sum64 = t.sum(dtype=torch.float64)
        return float(sum64) + float(torch.linalg.vector_norm(t, dtype=torch.float64))
    if isinstance(state, dict):
        return sum(_digest(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(_digest(v) for v in state)
    if isinstance(state, int | float) and not isinstance(state, bool):
        return float(state)
    return 0.0


def _width(t: torch.Tensor) -> int:
    """Elements per row of a tensor (also of one with no rows)."""
    width = 1
    for s in t.shape[1:]:
        width *= int(s)
    return width


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def launched_ranks() -> int:
    """The ``WORLD_SIZE`` torchrun gave this process (1 when not launched by it)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def rank_threads() -> int | None:
    """The threads of each rank when torchrun started several on this machine: this process's CPUs
    over ``LOCAL_WORLD_SIZE`` (at least 1), so that the ranks' thread pools (torch's and the compiled
    kernels') do not oversubscribe the cores; ``None`` when not launched so."""
    if launched_ranks() == 1:
        return None
    from reinforcens.backend import available_cpus

    try:
        local = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    except ValueError:
        local = 1
    return max(available_cpus() // local, 1)


def run_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:<LOCAL_RANK>`` for a CUDA run under torchrun, else ``device``."""
    if device.type == "cuda" and device.index is None and launched_ranks() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def make_parallel(device: torch.device) -> Parallel:
    """The ranks of this run: :class:`SingleProcess`, or, when torchrun launched several, the process
    group they join (initialised here: gloo for a CPU run, NCCL for CUDA)."""
    if launched_ranks() == 1:
        return SingleProcess()
    import torch.distributed as dist

    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return TorchDistributed(device)
