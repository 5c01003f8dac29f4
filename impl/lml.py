"""The temperature-scaled LML projection: DCEM's soft top-k (spec/lml.md).

``lml(x, k, tau)`` maps each row of scores ``x ∈ Rⁿ`` to the point of the LML
polytope ``{0 ≤ y ≤ 1, 1ᵀy = k}`` that solves eq. 4,

    Π_L(x/τ) = argmin_{0<y<1} −xᵀy − τ H_b(y)  s.t.  1ᵀy = k,

whose KKT solution is ``y_i = σ((x_i − t)/τ)`` for a scalar threshold ``t``
(LML-2). The forward pass finds ``t`` with a fixed schedule of safeguarded
Newton steps (LML-19); the backward pass uses the implicit-function formula
(LML-12) and saves nothing but the output.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from impl._checks import require_finite_real, require_floating_tensor, require_int

NEWTON_STEPS = 6
"""Safeguarded Newton steps with plain sums (LML-19, step 3)."""

POLISH_STEPS = {torch.float32: 3, torch.float64: 4}
"""Newton steps with the exactly rounded residual (LML-19, step 4), per compute dtype.

The defaults were chosen by measurement: over 1,200 randomized adversarial
rows (clusters, ties, k from 1 to n−1, |x|/τ up to 1e4) the float32 schedule
6 + 3 had a worst error of 1.8e-7 against the float64 reference (5 + 2 gave
1.2e-4), and the float64 schedule 6 + 4 had 5.4e-13 (6 + 3 gave 5.5e-11).
"""

SUM_ERROR_FACTOR = 4.0
"""Safety factor on the rounding bound ``ε (1 + log2 n) k`` of a float sum of
``n`` sigmoids totalling about ``k``: a plain-sum residual smaller than this
bound does not narrow the bracket (LML-19, step 3)."""

_NATIVE_DTYPES = (torch.float32, torch.float64)
"""Dtypes computed as they are; every other floating dtype is computed in float32."""


def lml(
    x: Tensor,
    k: int,
    tau: float = 1.0,
    *,
    newton_steps: int = NEWTON_STEPS,
    polish_steps: int | None = None,
) -> Tensor:
    """Soft top-k: project each row of ``x / tau`` onto the LML polytope (eq. 4).

    Args:
        x: scores, shape ``(..., n)``; every leading dimension is a batch
            dimension (LML-5). Floating dtype; dtypes narrower than float32
            (float16, bfloat16) are computed in float32 (LML-16).
        k: the number of entries selected, ``0 < k < n`` (LML-17).
        tau: the temperature ``τ > 0``; ``τ → 0⁺`` gives the hard top-k
            indicator (Prop. 2, LML-11).
        newton_steps: plain-sum Newton steps of the solver (LML-19).
        polish_steps: exact-residual Newton steps of the solver (LML-19), ≥ 1;
            ``None`` takes ``POLISH_STEPS`` of the compute dtype.

    Returns:
        ``y`` of the shape, dtype and device of ``x``, with ``0 ≤ y ≤ 1`` and
        rows summing to ``k`` (LML-3). ``−∞`` scores get exactly 0 and ``+∞``
        exactly 1; rows with NaN, or with too few finite scores, are NaN
        (LML-15).
    """
    require_floating_tensor("x", x)
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (the n scores of a problem)")
    n = x.shape[-1]
    k = require_int("k", k)
    if not 0 < k < n:
        raise ValueError(f"k must satisfy 0 < k < n; got k={k} with n={n}")
    tau = require_finite_real("tau", tau, minimum=0.0, strict=True)
    compute = x if x.dtype in _NATIVE_DTYPES else x.float()
    newton_steps = require_int("newton_steps", newton_steps)
    if polish_steps is None:
        polish_steps = POLISH_STEPS[compute.dtype]
    polish_steps = require_int("polish_steps", polish_steps)
    if newton_steps < 0 or polish_steps < 1:
        raise ValueError(
            "the solver needs newton_steps >= 0 and polish_steps >= 1; "
            f"got newton_steps={newton_steps}, polish_steps={polish_steps}"
        )
    y: Tensor = _LMLFunction.apply(  # type: ignore[no-untyped-call]
        compute, k, tau, newton_steps, polish_steps
    )
    return y.to(x.dtype)


class _LMLFunction(torch.autograd.Function):
    """Forward: the solver of LML-19. Backward: the VJP of LML-12."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, k: int, tau: float, newton_steps: int, polish_steps: int
    ) -> Tensor:
        with torch.no_grad():
            y = solve_lml(x, k, tau, newton_steps, polish_steps)
        ctx.save_for_backward(y)
        ctx.tau = tau
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None]:
        (y,) = ctx.saved_tensors
        return lml_vjp(y, grad, ctx.tau), None, None, None, None


def lml_vjp(y: Tensor, grad: Tensor, tau: float) -> Tensor:
    """The vector-Jacobian product of LML-12, from the output alone.

    ``vjp(g) = (1/τ) h ⊙ (g − (hᵀg) / 1ᵀh)`` with ``h = y ⊙ (1 − y)``; the
    Jacobian ``(1/τ)[diag(h) − h hᵀ/1ᵀh]`` is never formed. Rows where
    ``1ᵀh`` underflows to 0 get a zero product. Shapes: ``y, grad (..., n)``.
    Written with differentiable operations on ``y`` so that double backward
    is exact (LML-14).
    """
    h = y * (1 - y)
    h_sum = h.sum(-1, keepdim=True)
    h_dot_g = (h * grad).sum(-1, keepdim=True)
    tiny = torch.finfo(y.dtype).tiny
    return h * (grad - h_dot_g / h_sum.clamp_min(tiny)) / tau


def solve_lml(x: Tensor, k: int, tau: float, newton_steps: int, polish_steps: int) -> Tensor:
    """The forward solver of LML-19 (no autograd), for ``x (..., n)``.

    Rows with ``k > n/2`` are solved as the complement ``1 − Π(−x, n − k)``
    (LML-10), so that the selected side never holds more than half of the
    row: the scores are negated inside the scaling (``z = −(x − c)/τ``) and
    the complement is read off as ``σ(u − z) = 1 − σ(z − u)``, without extra
    passes. Three buffers of ``x``'s size are allocated; the steps allocate
    nothing of that size.
    """
    n = x.shape[-1]
    flip = 2 * k > n
    m = n - k if flip else k  # the minority side: m ≤ n/2 entries near 1
    sign = -1.0 if flip else 1.0
    top = torch.topk(x, m + 1, dim=-1, largest=not flip, sorted=True).values
    inner, outer = top[..., m - 1 : m], top[..., m : m + 1]  # x_(m), x_(m+1) of sign·x
    # Re-centre between the m-th and (m+1)-th entries: the entries near the
    # threshold then have small, exactly represented offsets.
    centre = 0.5 * inner + 0.5 * outer
    z = torch.sub(x, centre).div_(sign * tau)
    big = torch.finfo(x.dtype).max / 4
    lo = (sign * (outer - centre) / tau - math.log(m)).clamp(min=-big)
    hi = (sign * (inner - centre) / tau + math.log(n - m)).clamp(max=big)
    # NaN (for the whole row) when the m-th or (m+1)-th entry is not finite.
    poison = (inner - inner) + (outer - outer)
    u = torch.zeros_like(lo)
    a = torch.empty_like(z)
    scratch = torch.empty_like(z)
    tolerance = SUM_ERROR_FACTOR * torch.finfo(x.dtype).eps * (1 + math.log2(n)) * m
    for _ in range(newton_steps):
        torch.sub(z, u, out=a)
        s = a.sigmoid_()
        total = s.sum(-1, keepdim=True)
        residual = total - m
        slope = total - torch.mul(s, s, out=scratch).sum(-1, keepdim=True)  # Σ s(1−s)
        lo = torch.where(residual > tolerance, u, lo)
        hi = torch.where(residual < -tolerance, u, hi)
        u = _newton_or_bisect(u, residual, slope, lo, hi)
    residual = torch.zeros_like(u)  # rebound by every polish step; polish_steps >= 1
    for _ in range(polish_steps):
        torch.sub(z, u, out=a)
        signs = torch.sign(a, out=scratch)
        count = 0.5 * (n + signs.sum(-1, keepdim=True))  # #{a > 0} + #{a = 0}/2
        e = a.abs_().neg_().sigmoid_()  # σ(−|a|): both tails to full precision
        tails = signs.mul_(e).sum(-1, keepdim=True)  # Σ_{a>0} σ(−|a|) − Σ_{a<0} σ(−|a|)
        residual = count - m - tails
        slope = e.sum(-1, keepdim=True) - torch.mul(e, e, out=scratch).sum(-1, keepdim=True)
        above = residual > 0
        lo = torch.where(above, u, lo)
        hi = torch.where(above, hi, u)
        u = _newton_or_bisect(u, residual, slope, lo, hi)
    # A NaN score makes every residual NaN: carry it into the whole row.
    u = u + poison + (residual - residual)
    if flip:
        return torch.sub(u, z, out=a).sigmoid_()  # 1 − σ(z − u)
    return torch.sub(z, u, out=a).sigmoid_()


def _newton_or_bisect(u: Tensor, residual: Tensor, slope: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """One safeguarded step on ``g(u) = Σσ(z − u) − k`` (decreasing in ``u``).

    Newton's point ``u + g/|g'|`` when it lies in ``[lo, hi]``, else the
    bracket's midpoint (also when the slope is 0 or NaN). Shapes ``(..., 1)``.
    """
    newton = u + residual / slope
    inside = (newton >= lo) & (newton <= hi)
    return torch.where(inside, newton, 0.5 * lo + 0.5 * hi)
