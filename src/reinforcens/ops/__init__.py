"""Compute backends of training: one :class:`Ops` class per backend behind :func:`make_ops`.

``"numba"`` (:class:`reinforcens.ops.numba_ops.NumbaOps`) runs the operations in the compiled kernels
of :mod:`reinforcens.kernels`, on the CPU only; ``"torch"``
(:class:`reinforcens.ops.torch_ops.TorchOps`) in torch operations on any device. A run resolves its
backend once (:func:`reinforcens.backend.resolve_backend`, then :func:`make_ops`); the training data,
samplers, optimizer and scorer call the operations of the :class:`Ops` they hold.
"""

from __future__ import annotations

from reinforcens.ops.base import Ops, SoftmaxChoice, check_rows

#: the backend names :func:`make_ops` knows
NAMES = ("torch", "numba")


def make_ops(backend: str | Ops) -> Ops:
    """The operations of ``backend`` (``"torch"`` or ``"numba"``): the one place that maps a backend's
    name to its class. An :class:`Ops` is returned as it is (so a component can be given the operations
    of its run, e.g. those of one rank of a data-parallel run).

    Raises
    ------
    ValueError
        If ``backend`` is not a known backend.
    """
    if isinstance(backend, Ops):
        return backend
    if backend == "torch":
        from reinforcens.ops.torch_ops import TorchOps

        return TorchOps()
    if backend == "numba":
        from reinforcens.ops.numba_ops import NumbaOps  # imports numba

        return NumbaOps()
    raise ValueError(f"backend must be 'torch' or 'numba', got {backend!r}")


__all__ = ["NAMES", "Ops", "SoftmaxChoice", "check_rows", "make_ops"]
