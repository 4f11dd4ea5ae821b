"""Maximum mean discrepancy with a sum of Gaussian kernels (the paper's feature matching)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch

DEFAULT_BANDWIDTHS = (19.0, 20.0, 21.0, 22.0, 23.0)


def gaussian_kernel(
    x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS
) -> torch.Tensor:
    """``k(x_a, y_b) = sum_s exp(-||x_a - y_b||^2 / (2 s^2))`` for all pairs: shape (len(x), len(y))."""
    d2 = (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * x @ y.T).clamp_(min=0)
    out = torch.zeros_like(d2)
    for s in bandwidths:
        out += torch.exp(-d2 / (2.0 * s * s))
    return out


def mmd_reward(
    generated: torch.Tensor,
    exposed: torch.Tensor,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
    compiled: bool = False,
) -> torch.Tensor:
    """Per-instance feature-matching reward of generated negatives (the paper's equation 6).

    ``reward_b = 2 * mean_e k(e, g_b) - 2 * mean_g' k(g', g_b)``: the terms of the (biased) squared MMD
    between the generated set ``G_s`` and the exposed set ``E_s`` that involve ``g_b``, with the sign
    that makes a *larger* reward mean a *smaller* MMD. Equation (6) writes the same with sums scaled by
    ``2 / L^2``; the means here equal ``L`` times it when both sets have ``L`` elements.

    The kernel is summed as ``sum_s expm1(-d^2 / (2 s^2))``, i.e. ``k - len(bandwidths)``: the constant
    cancels between the two means, and leaving it out keeps the small differences that make up the
    reward from drowning in float32 rounding of values near ``len(bandwidths)``. When every scaled
    distance ``d^2 / (2 s^2)`` is small (bounded from the feature norms), the sum is evaluated as one
    polynomial in ``d^2`` whose truncation error is below float32 resolution (see
    :func:`_kernel_sum_minus_one`), which costs a few multiply-adds per pair instead of one ``exp`` per
    pair and bandwidth.

    Parameters
    ----------
    generated
        Features of the generated negatives, shape (B, K).
    exposed
        Features of exposed items, shape (M, K); ``M = 0`` gives a zero reward.
    compiled
        Reduce the distances with the compiled kernel :func:`reinforcens.kernels.mmd_reduce` (CPU
        float32 inputs, numba installed): one pass instead of one per polynomial term.
    """
    m, b = exposed.shape[0], generated.shape[0]
    if m == 0 or b == 0:
        return torch.zeros(b, device=generated.device, dtype=generated.dtype)
    x = torch.cat([exposed, generated])
    sq_x = torch.linalg.vecdot(x, x)
    if compiled:
        return _mmd_reward_compiled(x, generated, sq_x, m, bandwidths)
    # squared distances of every exposed and generated point (rows) to every generated point
    d2 = torch.addmm(sq_x[m:].unsqueeze(0), x, generated.T, alpha=-2.0)
    d2.add_(sq_x.unsqueeze(1)).clamp_(min=0)
    bound = 4.0 * float(sq_x.max())  # (|x| + |y|)^2 <= 4 max |.|^2 bounds every d2
    k = _kernel_sum_minus_one(d2, bandwidths, bound)
    k_eg = k[:m].mean(0)
    k_gg = k[m:].mean(0)
    return k_eg.sub_(k_gg).mul_(2.0)


#: relative truncation error allowed in the polynomial evaluation of the kernel sum
_POLY_TOL = 2.0**-26
_POLY_MAX_DEGREE = 12


def _poly_coefficients(bandwidths: Sequence[float], bound: float) -> list[float] | None:
    """Coefficients ``a_0..a_P`` of the polynomial that replaces ``sum_s expm1(-d2 * c_s)`` for
    ``d2 <= bound`` (see :func:`_kernel_sum_minus_one`), or ``None`` when no degree ``<= 12`` suffices."""
    cs = [1.0 / (2.0 * s * s) for s in bandwidths]
    y = max(cs) * bound
    if y >= 1.0:
        return None
    term = 1.0
    for p in range(1, _POLY_MAX_DEGREE + 1):
        term *= y / (p + 1)  # y^p / (p + 1)!
        if term <= _POLY_TOL:
            return [sum(c**n for c in cs) / math.factorial(n) * (-1) ** n for n in range(p + 1)]
    return None


def _mmd_reward_compiled(
    x: torch.Tensor, generated: torch.Tensor, sq_x: torch.Tensor, m: int, bandwidths: Sequence[float]
) -> torch.Tensor:
    """:func:`mmd_reward` with the products from one matrix product and the rest in one compiled pass."""
    import numpy as np

    from reinforcens.kernels import mmd_reduce

    dots = torch.mm(x, generated.T)
    bound = 4.0 * float(sq_x.max())
    coef = _poly_coefficients(bandwidths, bound)
    coef_arr = np.asarray(coef if coef is not None else [0.0], dtype=np.float32)
    cs = np.asarray([1.0 / (2.0 * s * s) for s in bandwidths], dtype=np.float64)
    out = torch.empty(generated.shape[0], dtype=generated.dtype)
    sq = sq_x.numpy()
    mmd_reduce(dots.numpy(), sq, sq[m:], m, coef_arr, cs, out.numpy())
    return out


def _kernel_sum_minus_one(d2: torch.Tensor, bandwidths: Sequence[float], bound: float) -> torch.Tensor:
    """``sum_s expm1(-d2 * c_s)`` with ``c_s = 1 / (2 s^2)``, elementwise; ``bound >= max(d2)``.

    With ``y = c_max * bound``, if the alternating Taylor series ``sum_n a_n d2^n``,
    ``a_n = (-1)^n sum_s c_s^n / n!``, truncated after degree ``P`` has a relative error of at most
    ``y^P / (P + 1)! <= 2^-26`` for some ``P <= 12`` (so ``y`` below about 1.4), it is evaluated by
    Horner's rule; otherwise each ``expm1`` is computed.
    """
    cs = [1.0 / (2.0 * s * s) for s in bandwidths]
    coef = _poly_coefficients(bandwidths, bound)
    if coef is None:
        out = torch.special.expm1(d2 * -cs[0])
        for c in cs[1:]:
            out += torch.special.expm1(d2 * -c)
        return out
    degree = len(coef) - 1
    r = d2 * coef[degree]
    for n in range(degree - 1, 0, -1):
        r.add_(coef[n]).mul_(d2)
    return r


def median_bandwidths(
    x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS, sample: int = 256
) -> tuple[float, ...]:
    """``bandwidths`` rescaled so that their median is the median distance between ``x`` and ``y``
    (the median heuristic; distances of the first ``sample`` rows of each), keeping their ratios.

    The paper's bandwidths (19-23) are far wider than the distances between GMF features of norm
    about 0.4: every kernel value is then within 0.003 of its maximum and the reward is close to zero.
    Returns ``bandwidths`` unchanged when either set is empty or the median distance is 0.
    """
    if x.shape[0] == 0 or y.shape[0] == 0:
        return tuple(bandwidths)
    med = float(torch.cdist(x[:sample].double(), y[:sample].double()).median())
    if not med > 0:
        return tuple(bandwidths)
    ref = statistics.median(bandwidths)
    return tuple(float(b) * med / ref for b in bandwidths)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS) -> float:
    """Biased squared MMD between two samples (the paper's equation 4), as a float."""
    if x.shape[0] == 0 or y.shape[0] == 0:
        return float("nan")
    return float(
        gaussian_kernel(x, x, bandwidths).mean()
        - 2.0 * gaussian_kernel(x, y, bandwidths).mean()
        + gaussian_kernel(y, y, bandwidths).mean()
    )


def rff_mmd_reward(
    generated: torch.Tensor,
    exposed: torch.Tensor,
    bandwidths: Sequence[float],
    n_features: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """:func:`mmd_reward` from random Fourier features: an approximation linear in the two sets.

    For one Gaussian kernel ``k_s(x, y) = exp(-||x - y||^2 / (2 s^2))`` and frequencies
    ``w_1..w_D ~ N(0, I / s^2)`` (Rahimi and Recht, 2007), the features
    ``phi_s(x) = [cos(w_d . x), sin(w_d . x)]_d / sqrt(D)`` give
    ``phi_s(x) . phi_s(y) = mean_d cos(w_d . (x - y))``, whose expectation is ``k_s(x, y)``. The kernel
    sum over the bandwidths is the product of the concatenated features ``phi = [phi_s]_s``, so

    ``reward_b = 2 * (mean_e phi(e) - mean_g' phi(g')) . phi(g_b)``,

    an unbiased estimate of :func:`mmd_reward`'s ``2 * mean_e k(e, g_b) - 2 * mean_g' k(g', g_b)`` at a
    cost of ``(M + B) * K * n_features`` multiply-adds instead of ``(M + B) * B * K``. The frequencies
    are drawn from ``generator`` at every call, so their error is independent from one batch to the
    next.

    Wide bandwidths put every ``cos`` within a hair of 1, whose differences float32 could lose; so
    with ``t = w_d . x``, ``cos t = 1 + c(t)`` with ``c(t) = -2 sin^2(t / 2)`` and
    ``sin t = 2 sin(t / 2) cos(t / 2)``, and the reward is summed as
    ``2 / D * (sum_d dc_d + sum_d c_bd dc_d + sum_d sin_bd ds_d)``, ``dc`` and ``ds`` the differences
    of the two sets' means of ``c`` and ``sin``: every term keeps its relative precision.

    Parameters
    ----------
    generated, exposed
        Features, shapes (B, K) and (M, K); ``M = 0`` gives a zero reward.
    bandwidths
        The kernels' bandwidths ``s``.
    n_features
        Frequencies in all, shared evenly among the bandwidths (at least one each).
    generator
        The random stream of the frequencies (on the features' device).
    """
    m, b = exposed.shape[0], generated.shape[0]
    if m == 0 or b == 0:
        return torch.zeros(b, device=generated.device, dtype=generated.dtype)
    per = max(1, n_features // len(bandwidths))
    k = generated.shape[1]
    dev, dtype = generated.device, generated.dtype
    w = torch.randn(k, len(bandwidths) * per, generator=generator, device=dev, dtype=dtype)
    half_inv_s = torch.tensor([0.5 / float(s) for s in bandwidths], device=dev, dtype=dtype)
    w = w.mul_(half_inv_s.repeat_interleave(per))  # frequencies over 2: the half angles below
    half = torch.cat([exposed, generated]) @ w
    s_h = torch.sin(half)
    sin = torch.cos(half).mul_(s_h).mul_(2.0)  # sin t
    c = s_h.square_().mul_(-2.0)  # cos t - 1
    dc = c[:m].mean(0) - c[m:].mean(0)
    ds = sin[:m].mean(0) - sin[m:].mean(0)
    out = torch.addmv(dc.sum().expand(b), c[m:], dc)
    return out.addmv_(sin[m:], ds).mul_(2.0 / per)
