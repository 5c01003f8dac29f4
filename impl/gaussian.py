"""The (weighted) maximum-likelihood fit of a diagonal Gaussian: Props. 1 and 3."""

from __future__ import annotations

import torch
from torch import Tensor


def weighted_gaussian_fit(
    samples: Tensor, weights: Tensor, k: int, std_min: float
) -> tuple[Tensor, Tensor]:
    """Fit ``N(μ, diag σ²)`` to weighted samples (CEM-6).

    With weights ``I`` summing to ``k`` over the samples,

        μ  = (1/k) Σ_i I_i X_i
        σ² = (1/k) Σ_i I_i (X_i − μ)²,   σ = sqrt(max(σ², σ_min²)),

    the maximizer of ``Σ_i I_i log N(X_i; μ, diag σ²)`` (Prop. 3; Prop. 1 for
    0/1 weights). The floor is applied to the variance, before the square
    root, so gradients stay finite when the weighted variance is 0 (CEM-11).

    Args:
        samples: ``X``, shape ``(B, N, d)``.
        weights: ``I``, shape ``(B, N)``.
        k: the weights' row sum.
        std_min: the floor ``σ_min ≥ 0``.

    Returns:
        ``(μ, σ)``, each of shape ``(B, d)``.
    """
    scaled = (weights / k).unsqueeze(-1)
    mean = (scaled * samples).sum(-2)
    centred = samples - mean.unsqueeze(-2)
    variance = (scaled * centred * centred).sum(-2)
    return mean, torch.sqrt(variance.clamp_min(std_min * std_min))
