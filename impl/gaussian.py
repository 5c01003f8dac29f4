"""The (weighted) maximum-likelihood fit of a diagonal Gaussian: Props. 1 and 3.

``weighted_gaussian_fit`` is the one implementation of the update of CEM-6:
the solver (``impl.cem.updates``) calls it, and the tests of Props. 1 and 3
check it.
"""

from __future__ import annotations

import torch
from torch import Tensor

MATMUL_MIN_ELEMENTS = 1 << 15
"""From this many sample entries ``B·N·d`` on, the fit's two sums are batched
matrix products; below it, sums of products. *Informative*: small ``bmm``
calls still enter a parallel region, whose barrier costs a whole scheduler
slice (~16 ms measured) when another process holds a core; larger ones are
5–8× faster than the sum of products. Both give the values of CEM-6 up to
rounding."""


def floored_std(variance: Tensor, std_min: float) -> Tensor:
    """``σ = sqrt(max(σ̂², σ_min²)) = max(σ̂, σ_min)`` elementwise, with finite gradients (CEM-11).

    The floor is applied to the variance, before the square root, wherever
    ``σ_min²`` is a normal number of the dtype: the square root's argument is
    then positive. With ``σ_min = 0`` a zero variance (collapsed elites) gets
    the subgradient 0 instead of ``∞·0 = NaN``: ``d sqrt(v)/dv`` is taken as 0
    at ``v = 0``; the same zero-safe root is taken, then floored at ``σ_min``,
    when ``σ_min > 0`` is so small that its square underflows the dtype. When
    ``σ_min²`` overflows the dtype, no ``σ̂`` reaches the floor: ``σ = σ_min``,
    a constant (gradient 0). ``σ_min`` is taken as rounded to the dtype.

    Args:
        variance: ``σ̂²``, any shape, ``≥ 0``.
        std_min: ``σ_min ≥ 0``, at most the dtype's largest number.

    Raises:
        ValueError: ``std_min`` overflows ``variance``'s dtype.
    """
    info = torch.finfo(variance.dtype)
    square = std_min * std_min
    if square >= info.tiny:
        if square <= info.max:
            return torch.sqrt(variance.clamp_min(square))
        if std_min > info.max:
            raise ValueError(f"std_min={std_min} overflows {variance.dtype} (largest {info.max:g})")
        # σ_min everywhere, still a function of σ̂² (gradient 0) for autograd
        return variance.clamp(info.max, info.max).mul(0).add(std_min)
    floored = variance.clamp_min(square)
    positive = floored > 0
    root = torch.where(positive, torch.sqrt(torch.where(positive, floored, 1)), 0)
    return root if std_min == 0 else root.clamp_min(std_min)


def weighted_gaussian_fit(
    samples: Tensor,
    weights: Tensor,
    k: int,
    std_min: float,
    *,
    scratch: Tensor | None = None,
    matmul_min_elements: int = MATMUL_MIN_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Fit ``N(μ, diag σ²)`` to weighted samples (CEM-6).

    With weights ``I`` summing to ``k`` over the samples,

        μ  = (1/k) Σ_i I_i X_i
        σ² = (1/k) Σ_i I_i (X_i − μ)²,   σ = sqrt(max(σ², σ_min²)),

    the maximizer of ``Σ_i I_i log N(X_i; μ, diag σ²)`` (Prop. 3; Prop. 1 for
    0/1 weights). The floor is applied to the variance, before the square
    root, so gradients stay finite when the weighted variance is 0 (CEM-11,
    ``floored_std``).

    From ``matmul_min_elements`` sample entries on, both sums are batched
    matrix products ``(B, 1, N) @ (B, N, d)`` (no ``(B, N, d)`` product of
    weights and samples is formed); ``X − μ`` is then formed in ``scratch``
    when given (a ``(B, N, d)`` buffer no autograd graph may hold).

    Args:
        samples: ``X``, shape ``(B, N, d)``.
        weights: ``I``, shape ``(B, N)``.
        k: the weights' row sum.
        std_min: the floor ``σ_min ≥ 0``.
        scratch: optional ``(B, N, d)`` work buffer (CEM-28).
        matmul_min_elements: the size from which the sums are matrix products.

    Returns:
        ``(μ, σ)``, each of shape ``(B, d)``.
    """
    scaled = weights / k  # (B, N)
    if samples.numel() < matmul_min_elements:
        column = scaled.unsqueeze(-1)  # (B, N, 1)
        mean = (column * samples).sum(-2)
        centred = samples - mean.unsqueeze(-2)
        variance = (column * centred * centred).sum(-2)
        return mean, floored_std(variance, std_min)
    row = scaled.unsqueeze(1)  # (B, 1, N)
    mean3 = torch.bmm(row, samples)  # (B, 1, d)
    if scratch is None:
        squares = (samples - mean3).square()
    else:
        squares = torch.sub(samples, mean3, out=scratch).square_()
    variance = torch.bmm(row, squares).squeeze(1)
    return mean3.squeeze(1), floored_std(variance, std_min)
