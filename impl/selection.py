"""Elite selection of CEM and DCEM: value normalization, hard and soft top-k.

Shapes: values ``v`` are ``(B, N)`` (B problems, N samples each); weights
have the same shape and sum to ``k`` over each row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from impl.lml import lml

VALUE_NORM_EPS = 1e-6
"""Added to the standard deviation when normalizing values (CEM-3); the
paper's constant (sect. 3, "we usually also normalize the values")."""


@dataclass(frozen=True)
class Selection:
    """The outcome of one selection step.

    Attributes:
        weights: ``(B, N)`` elite weights, each row summing to ``k`` (for
            rows marked ``valid``).
        valid: ``(B,)`` bool, whether the row had enough finite values for
            the update to be applied (CEM-12).
    """

    weights: Tensor
    valid: Tensor
    all_valid: bool = False
    """``True`` when every row is known to be valid without reading ``valid``
    (the selection saw on the host that every value was finite, CEM-43)."""


def normalize_values(values: Tensor, finite: Tensor) -> Tensor:
    """Standardize each row over its finite entries (CEM-3).

    ``ṽ = (v − mean) / (std + VALUE_NORM_EPS)`` with the mean and the unbiased
    standard deviation of the finite entries of the row. The statistics are
    taken on ``v / m`` with ``m`` the row's largest finite magnitude, as
    ``ṽ = (u − mean(u)) / (std(u) + VALUE_NORM_EPS / m)`` with ``u = v / m``:
    the same number, without overflow for huge finite values. Non-finite
    entries come out as 0 (callers mask them). Differentiable, with finite
    gradients also when a row is constant (its standard deviation is 0).

    Args:
        values: ``(B, N)``.
        finite: ``(B, N)`` bool, ``torch.isfinite(values)``.
    """
    count = finite.sum(-1, keepdim=True).to(values.dtype)
    safe = torch.where(finite, values, 0)
    magnitude = safe.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(values.dtype).tiny)
    unit = safe / magnitude
    mean = unit.sum(-1, keepdim=True) / count.clamp_min(1)
    deviation = torch.where(finite, unit - mean, 0)
    variance = (deviation * deviation).sum(-1, keepdim=True) / (count - 1).clamp_min(1)
    # + tiny: a finite gradient when the row is constant (variance 0). No other
    # variance changes: one |u| is 1, so a row that is not constant has entries
    # near ±1 at least one ulp(1) apart, a variance ≥ ulp(1)²/(2N), far above
    # the 2·tiny/ε below which adding tiny rounds to a change.
    std = torch.sqrt(variance + torch.finfo(values.dtype).tiny)
    return deviation / (std + VALUE_NORM_EPS / magnitude)


def hard_weights(values: Tensor, finite: Tensor, k: int) -> Selection:
    """The indicator of the ``k`` lowest finite values of each row (CEM-4, eq. 2).

    Non-finite values rank after every finite one (CEM-12). One batched
    ``topk`` and one ``scatter``: no loop over the batch.
    """
    ranked = torch.where(finite, values, torch.inf)
    index = torch.topk(ranked, k, dim=-1, largest=False).indices
    weights = torch.zeros_like(values).scatter_(-1, index, 1.0)
    valid = finite.sum(-1) >= k
    return Selection(weights=weights, valid=valid)


def hard_selection(ranked: Tensor, k: int) -> Selection:
    """``hard_weights`` in fewer passes, for ``(B, N)`` values whose non-finite
    entries are already ``+∞`` (CEM-4, CEM-12): one unsorted ``topk`` and one
    ``scatter``; a row is valid when its ``k`` lowest entries are finite (it
    then has at least ``k`` finite values), read off the ``(B, k)`` top values
    instead of counting the finite entries of the row: as ``ranked`` holds no
    NaN and no ``−∞``, "finite" is "``< +∞``" (one comparison)."""
    top = torch.topk(ranked, k, dim=-1, largest=False, sorted=False)
    weights = torch.zeros_like(ranked).scatter_(-1, top.indices, 1.0)
    return Selection(weights=weights, valid=top.values.amax(-1) < torch.inf)


def exponential_elite_weights(
    values: Tensor, elites: Tensor, k: int, temperature: float, normalize: bool
) -> Tensor:
    """Exponentially weighted elites, MPPI-style (CEM-30).

    ``w_i = k · 1{i ∈ E} exp(−s_i/λ) / Σ_{j ∈ E} exp(−s_j/λ)`` over the hard
    elite set ``E`` (``elites``, the 0/1 weights of CEM-4), with ``s`` the
    normalized values (CEM-3) or the raw ones. Rows sum to ``k``; ``λ → ∞``
    gives the indicator of CEM-4, ``λ → 0⁺`` puts all ``k`` on the best elite.
    Non-finite values never get weight when the row has ``k`` finite ones
    (their scores are masked); rows with fewer are invalid (CEM-12) and
    get finite weights only so that no NaN appears.

    Args:
        values: ``(B, N)``.
        elites: ``(B, N)`` 0/1 indicator of the ``k`` elites of each row.
        temperature: ``λ > 0``.
    """
    finite = torch.isfinite(values)
    scores = normalize_values(values, finite) if normalize else torch.where(finite, values, 0)
    chosen = elites > 0
    # Measured from the best elite's score, so the best logit is exactly 0 and
    # a tiny λ sends the others to −∞ (weight 0) instead of every logit to −∞ (NaN).
    best = torch.where(chosen, scores, torch.inf).amin(-1, keepdim=True)
    # λ below the dtype's smallest normal number would round to −0 (and 0/−0 is NaN).
    scale = -max(temperature, torch.finfo(values.dtype).tiny)
    logits = torch.where(chosen, (scores - best) / scale, -torch.inf)
    return torch.softmax(logits, dim=-1) * k


def soft_weights(
    values: Tensor, finite: Tensor, k: int, tau: float | Tensor, normalize: bool
) -> Selection:
    """The soft top-k of the lowest values, ``Π_L(−ṽ/τ)`` (CEM-5, eq. 5).

    Non-finite values enter the projection as ``−∞`` and get weight exactly 0
    (LML-15). Rows with at most ``k`` finite values cannot be projected; they
    are marked invalid and their scores replaced by zeros so that neither the
    forward nor the backward pass produces NaN (CEM-12). ``tau`` may be a
    tensor (0-dim, LML-22), which may require grad (LML-20).
    """
    scores = -(normalize_values(values, finite) if normalize else torch.where(finite, values, 0))
    valid = finite.sum(-1) > k
    scores = torch.where(finite, scores, -torch.inf)
    scores = torch.where(valid.unsqueeze(-1), scores, 0)
    return Selection(weights=lml(scores, k, tau), valid=valid)


def soft_weights_of_finite_values(
    values: Tensor, k: int, tau: float | Tensor, normalize: bool
) -> Selection:
    """``soft_weights`` for ``(B, N)`` values that are all finite, with ``N > k`` (CEM-43).

    The same projection ``Π_L(−ṽ/τ)`` of CEM-5, with the statistics of CEM-3
    taken without masks: ``u = v/m`` (``m`` the row's largest magnitude),
    ``(s², ū) = var_mean(u)`` (unbiased) and

        −ṽ = (ū − u) / (sqrt(max(s², tiny)) + VALUE_NORM_EPS/m),

    the formula of ``normalize_values`` up to rounding (a row that is not
    constant has ``s² ≫ tiny``; a constant one gets ``−ṽ = 0`` with a finite
    gradient). Every row is valid (``all_valid``).
    """
    if normalize:
        tiny = torch.finfo(values.dtype).tiny
        magnitude = values.abs().amax(-1, keepdim=True).clamp_min(tiny)
        unit = values / magnitude
        variance, mean = torch.var_mean(unit, -1, keepdim=True)
        spread = torch.add(
            variance.clamp_min(tiny).sqrt(), magnitude.reciprocal(), alpha=VALUE_NORM_EPS
        )
        scores = (mean - unit) / spread
    else:
        scores = -values
    valid = torch.ones(values.shape[:-1], dtype=torch.bool, device=values.device)
    return Selection(weights=lml(scores, k, tau), valid=valid, all_valid=True)
