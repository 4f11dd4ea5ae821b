"""Maximum mean discrepancy with a sum of Gaussian kernels (the paper's feature matching)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_BANDWIDTHS = (19.0, 20.0, 21.0, 22.0, 23.0)


def gaussian_kernel(
    x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS
) -> torch.Tensor:
    """``k(x_a, y_b) = sum_s exp(-||x_a - y_b||^2 / (2 s^2))`` for all pairs: shape (len(x), len(y))."""
    d2 = (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * x @ y.T).clamp_(
        min=0
    )
    out = torch.zeros_like(d2)
    for s in bandwidths:
        out += torch.exp(-d2 / (2.0 * s * s))
    return out


def mmd_reward(
    generated: torch.Tensor,
    exposed: torch.Tensor,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
) -> torch.Tensor:
    """Per-instance feature-matching reward of generated negatives (the paper's equation 6).

    ``reward_b = 2 * mean_e k(e, g_b) - 2 * mean_g' k(g', g_b)``: the terms of the (biased) squared MMD
    between the generated set ``G_s`` and the exposed set ``E_s`` that involve ``g_b``, with the sign
    that makes a *larger* reward mean a *smaller* MMD. Equation (6) writes the same with sums scaled by
    ``2 / L^2``; the means here equal ``L`` times it when both sets have ``L`` elements.

    Parameters
    ----------
    generated
        Features of the generated negatives, shape (B, K).
    exposed
        Features of exposed items, shape (M, K); ``M = 0`` gives a zero reward.
    """
    if exposed.shape[0] == 0 or generated.shape[0] == 0:
        return torch.zeros(generated.shape[0], device=generated.device, dtype=generated.dtype)
    k_eg = gaussian_kernel(exposed, generated, bandwidths).mean(0)
    k_gg = gaussian_kernel(generated, generated, bandwidths).mean(0)
    return 2.0 * k_eg - 2.0 * k_gg


def mmd2(
    x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS
) -> float:
    """Biased squared MMD between two samples (the paper's equation 4), as a float."""
    if x.shape[0] == 0 or y.shape[0] == 0:
        return float("nan")
    return float(
        gaussian_kernel(x, x, bandwidths).mean()
        - 2.0 * gaussian_kernel(x, y, bandwidths).mean()
        + gaussian_kernel(y, y, bandwidths).mean()
    )
