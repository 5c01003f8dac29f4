"""The temperature-scaled LML projection: DCEM's soft top-k (spec/lml.md).

``lml(x, k, tau)`` maps each row of scores ``x ∈ Rⁿ`` to the point of the LML
polytope ``{0 ≤ y ≤ 1, 1ᵀy = k}`` that solves eq. 4,

    Π_L(x/τ) = argmin_{0<y<1} −xᵀy − τ H_b(y)  s.t.  1ᵀy = k,

whose KKT solution is ``y_i = σ((x_i − t)/τ)`` for a scalar threshold ``t``
(LML-2). The forward pass finds ``t`` with safeguarded Newton steps on the
log-ratio of the two sides of the row (LML-19); the backward pass uses the
implicit-function formula (LML-12) and saves nothing but the output.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch._functorch.utils import unwrap_dead_wrappers

from impl._checks import (
    require_broadcastable,
    require_finite_real,
    require_floating_tensor,
    require_int,
)

FAST_STEPS = {torch.float32: 3, torch.float64: 4}
"""Unguarded Newton steps of the fast path (LML-23), per compute dtype."""

MAX_STEPS = {torch.float32: 6, torch.float64: 8}
"""Newton steps of the solver (LML-19), per compute dtype: all of them run on
devices where stopping early would need a host synchronization (CUDA), under
``torch.compile`` and on meta tensors; on the CPU the solver stops as soon as
every row has converged.

Chosen by measurement (``python -m benchmarks.lml_accuracy``, results in
``benchmarks/results/lml_accuracy.json``) over 2,400 randomized adversarial
rows (Gaussian, Cauchy, clustered, tied and wide-range scores, n from 2 to
1000, k from 1 to n−1, |x|/τ up to 1e4): every row converged within 4 steps in float32 and 5 in
float64, with worst errors against the float64 reference of 1.2e-7 and
1.8e-13 (LML-4 asks for 1e-6 and 1e-12). The defaults leave two steps (three
in float64) of margin.
"""

STEP_TOLERANCE = {torch.float32: 2.0**-12, torch.float64: 2.0**-26}
"""A row has converged when a Newton step moved its threshold by at most
``√ε`` of its dtype (in units of τ): Newton's error is then about the square
of the step, ``ε``, and no later step changes the row (LML-19)."""

_NATIVE_DTYPES = (torch.float32, torch.float64)
"""Dtypes computed as they are; every other floating dtype is computed in float32."""

_NUMPY_DTYPES: dict[torch.dtype, type[np.floating[Any]]] = {
    torch.float32: np.float32,
    torch.float64: np.float64,
}
"""The NumPy dtype the single-row path (LML-24) rounds its output to."""


Temperature = float | Tensor
"""A temperature: a Python number, or a tensor τ (0-dim, or one τ per row, LML-22)."""

_FLOAT32_TRUE_MIN = 2.0**-149
"""The smallest positive float32 (subnormal). A number ``τ ≤ 2⁻¹⁵⁰`` rounds to 0
in float32; such a τ is computed as this value instead (LML-17)."""


def lml(x: Tensor, k: int, tau: Temperature = 1.0, *, max_steps: int | None = None) -> Tensor:
    """Soft top-k: project each row of ``x / tau`` onto the LML polytope (eq. 4).

    Args:
        x: scores, shape ``(..., n)``; every leading dimension is a batch
            dimension (LML-5). Floating dtype; dtypes narrower than float32
            (float16, bfloat16) are computed in float32 (LML-16).
        k: the number of entries selected, ``0 < k < n`` (LML-17).
        tau: the temperature ``τ > 0``; ``τ → 0⁺`` gives the hard top-k
            indicator (Prop. 2, LML-11). A Python number, or a floating
            tensor whose shape broadcasts to ``x.shape[:-1] + (1,)`` (a 0-dim
            τ, or one τ per row), which may require grad (LML-20, LML-22).
            A tensor's values are not checked (that would synchronize):
            rows whose τ is not a positive finite number are NaN.
        max_steps: Newton steps of the solver (LML-19), ≥ 1; ``None`` takes
            ``MAX_STEPS`` of the compute dtype.

    Returns:
        ``y`` of the shape, dtype and device of ``x``, with ``0 ≤ y ≤ 1`` and
        rows summing to ``k`` (LML-3). ``−∞`` scores get exactly 0 and ``+∞``
        exactly 1; rows with NaN, or with too few finite scores, are NaN
        (LML-15). Differentiable in ``x`` and a tensor ``tau``, under autograd
        and the ``torch.func`` transforms (LML-21).
    """
    require_floating_tensor("x", x)
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (the n scores of a problem)")
    n = x.shape[-1]
    k = require_int("k", k)
    if not 0 < k < n:
        raise ValueError(f"k must satisfy 0 < k < n; got k={k} with n={n}")
    compute = x if x.dtype in _NATIVE_DTYPES else x.float()
    temperature = _check_temperature(tau, compute)
    if max_steps is None:
        max_steps = MAX_STEPS[compute.dtype]
    max_steps = require_int("max_steps", max_steps)
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1; got max_steps={max_steps}")
    if _untracked(compute, temperature):  # (not compiling, so the CPU may stop early)
        y = _solve(compute, temperature, k, max_steps, compute.device.type == "cpu")
    else:
        y = _apply(compute, temperature, k, max_steps)
    return y if y.dtype == x.dtype else y.to(x.dtype)


def _untracked(x: Tensor, tau: Temperature) -> bool:
    """Whether no derivative, transform or trace can observe this call.

    Then ``lml`` calls the solver directly: the autograd.Function would give
    the same output, but its ``apply`` costs several times a small solve on
    the CPU. Checked: ``torch.compile`` tracing, ``torch.func`` transforms,
    an open forward-AD level, and whether autograd would record a graph (if
    not, the solver's operations record nothing either).
    """
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    if torch.autograd.forward_ad._current_level >= 0:  # dual tensors may be about
        return False
    tracked = x.requires_grad or (isinstance(tau, Tensor) and tau.requires_grad)
    return not (torch.is_grad_enabled() and tracked)


def _solve(x: Tensor, tau: Temperature, k: int, max_steps: int, early: bool) -> Tensor:
    """The forward of ``lml`` (no autograd): LML-23 where ``early`` (``can_stop_early``),
    else LML-19."""
    if early:
        return solve_lml_with_fast_path(x, k, tau, max_steps)
    return solve_lml(x, k, tau, max_steps, early_exit=False)


def _check_temperature(tau: object, x: Tensor) -> Temperature:
    """``tau`` as a float checked for ``τ > 0`` finite, or as a tensor in ``x``'s dtype.

    A positive number that float32 holds only as 0 (``τ ≤ 2⁻¹⁵⁰``) becomes
    float32's smallest positive value when ``x`` is computed in float32: the
    τ → 0⁺ limit (LML-11), where τ = 0 would make ties and every derivative
    0/0 (LML-17)."""
    if not isinstance(tau, Tensor):
        number = require_finite_real("tau", tau, minimum=0.0, strict=True)
        if x.dtype == torch.float32 and number <= _FLOAT32_TRUE_MIN / 2:
            return _FLOAT32_TRUE_MIN
        return number
    if not tau.dtype.is_floating_point:
        raise TypeError(f"tau must have a floating-point dtype, got {tau.dtype}")
    require_broadcastable("tau", tau.shape, torch.Size((*x.shape[:-1], 1)))
    if tau.device != x.device and not (tau.dim() == 0 and tau.device.type == "cpu"):
        raise ValueError(
            f"tau is on {tau.device}, x on {x.device}: a tensor tau must be on x's device "
            "(or be a 0-dim CPU tensor)"
        )
    return tau.to(x.dtype)


class _LMLFunction(torch.autograd.Function):
    """Forward: the solver of LML-19. Backward: the VJPs of LML-12 and LML-20;
    ``vmap``: one batched call (LML-21). Forward mode is added by
    ``_LMLForwardFunction`` (Dynamo cannot trace a custom ``jvp``, so
    ``torch.compile`` traces this class)."""

    @staticmethod
    def forward(x: Tensor, tau: Temperature, k: int, max_steps: int) -> Tensor:
        with torch.no_grad():
            return _solve(x, tau, k, max_steps, can_stop_early(x))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        tau = inputs[1]
        if isinstance(tau, Tensor):
            ctx.save_for_backward(output, tau)
            ctx.save_for_forward(output, tau)
        else:
            ctx.save_for_backward(output)
            ctx.save_for_forward(output)
            ctx.tau = tau

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        y, tau = _saved(ctx)
        grad_x = lml_vjp(y, grad, tau) if ctx.needs_input_grad[0] else None
        grad_tau = None
        if isinstance(tau, Tensor) and ctx.needs_input_grad[1]:
            grad_tau = lml_tau_vjp(y, grad, tau).sum_to_size(tau.shape)
        return grad_x, grad_tau, None, None

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[int | None, ...], x: Tensor, tau: Temperature, k: int, steps: int
    ) -> tuple[Tensor, int]:
        # Every leading dimension of x is a batch dimension already: move the
        # mapped one to the front (a per-sample τ becomes one τ per row).
        x_dim, tau_dim = in_dims[0], in_dims[1]
        x = x.expand(info.batch_size, *x.shape) if x_dim is None else x.movedim(x_dim, 0)
        if isinstance(tau, Tensor) and tau_dim is not None:
            tau = tau.movedim(tau_dim, 0)
            ones = (1,) * (x.dim() - tau.dim())
            tau = tau.reshape(info.batch_size, *ones, *tau.shape[1:])
        return _apply(x, tau, k, steps), 0


class _LMLForwardFunction(_LMLFunction):
    """``_LMLFunction`` with forward-mode AD: ``ẏ = J ẋ + (∂y/∂τ) τ̇`` (LML-21)."""

    @staticmethod
    def jvp(ctx: Any, x_dot: Tensor | None, tau_dot: Tensor | None, *_: None) -> Tensor:
        y, tau = _saved(ctx)
        out = lml_vjp(y, x_dot, tau) if x_dot is not None else torch.zeros_like(y)
        if tau_dot is not None:
            out = out + lml_tau_jvp(y, tau_dot, tau)
        return out


def _apply(x: Tensor, tau: Temperature, k: int, max_steps: int) -> Tensor:
    """The autograd.Function of ``lml``: with forward mode, except under ``torch.compile``.

    Outside ``torch.compile`` and the ``torch.func`` transforms this calls the
    C++ ``apply`` that ``Function.apply`` ends in: ``Function.apply`` first
    binds the arguments to ``forward``'s signature with ``inspect`` (because
    ``setup_context`` is defined), which changes nothing here (positional
    arguments, no defaults) and costs more than a small solve on the CPU.
    """
    if torch.compiler.is_compiling():
        y: Tensor = _LMLFunction.apply(x, tau, k, max_steps)  # type: ignore[no-untyped-call]
    elif torch._C._are_functorch_transforms_active():
        y = _LMLForwardFunction.apply(x, tau, k, max_steps)  # type: ignore[no-untyped-call]
    else:
        args = unwrap_dead_wrappers((x, tau, k, max_steps))
        y = super(torch.autograd.Function, _LMLForwardFunction).apply(*args)  # type: ignore[no-untyped-call]
    return y


def _saved(ctx: Any) -> tuple[Tensor, Temperature]:
    saved = ctx.saved_tensors
    return (saved[0], saved[1]) if len(saved) == 2 else (saved[0], ctx.tau)


def can_stop_early(x: Tensor) -> bool:
    """Whether the solver may read its convergence flags on the host.

    Only for CPU tensors outside ``torch.compile``: there the read costs no
    synchronization. On CUDA it would stall the stream, on meta tensors there
    is nothing to read, and a traced graph must not depend on values.
    """
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def lml_vjp(y: Tensor, grad: Tensor, tau: Temperature) -> Tensor:
    """The vector-Jacobian product of LML-12, from the output alone.

    ``vjp(g) = (1/τ) h ⊙ (g − (hᵀg) / 1ᵀh)`` with ``h = y ⊙ (1 − y)``; the
    Jacobian ``(1/τ)[diag(h) − h hᵀ/1ᵀh]`` is never formed. It is symmetric,
    so this is also the Jacobian-vector product. Rows where ``1ᵀh``
    underflows to 0 get a zero product. Shapes: ``y, grad (..., n)``, ``tau``
    a number or a tensor broadcasting to ``(..., 1)``. Written with
    differentiable operations on ``y`` so that double backward is exact
    (LML-14); the last two steps run in place when no graph is recorded.
    """
    h = torch.addcmul(y, y, y, value=-1)
    h_sum = h.sum(-1, keepdim=True).clamp_min_(torch.finfo(y.dtype).tiny)
    h_dot_g = (h * grad).sum(-1, keepdim=True)
    centred = grad - h_dot_g / h_sum
    if torch.is_grad_enabled() or isinstance(tau, Tensor):  # a graph may be recorded
        return centred * h / tau
    return centred.mul_(h).div_(tau)


def _h_and_hs(y: Tensor) -> tuple[Tensor, Tensor]:
    """``h = y(1 − y)`` and ``h ⊙ s`` with ``s = logit(y) = (x − t)/τ`` (LML-20).

    ``h s = (1 − y)·y log y − y·(1 − y) log(1 − y)`` is finite for every
    ``y ∈ [0, 1]`` (0 at both ends, where ``s`` is infinite) and has an error
    of a few ε per entry whatever the rounding of ``y`` near 0 or 1. Its
    derivatives are finite there too: ``v log v`` is taken as ``v log v̂`` with
    ``v̂ = 1`` where ``v = 0``, whose derivative there is 0, not ``log 0 + 1 =
    −∞`` (``xlogy``'s); every path to ``y`` at 0 or 1 has the factor
    ``h = 0``, so the product is the limit, 0 (LML-20, double backward).
    """
    one_minus = 1 - y
    h = y * one_minus
    hs = one_minus * _v_log_v(y) - y * _v_log_v(one_minus)
    return h, hs


def _v_log_v(v: Tensor) -> Tensor:
    """``v log v`` for ``v ≥ 0``, 0 at ``v = 0`` with derivative 0 there (see ``_h_and_hs``)."""
    return v * torch.where(v > 0, v, 1).log()


def lml_tau_vjp(y: Tensor, grad: Tensor, tau: Tensor) -> Tensor:
    """``gᵀ ∂y/∂τ`` per row, shape ``(..., 1)``, from the output alone (LML-20).

    ``∂y/∂τ = −(1/τ)[h ⊙ s − h (hᵀs)/1ᵀh]`` with ``s = logit(y)``, so
    ``gᵀ ∂y/∂τ = −(1/τ) Σ_i (g_i − ḡ) h_i s_i`` with ``ḡ = hᵀg / 1ᵀh``.
    """
    h, hs = _h_and_hs(y)
    h_sum = h.sum(-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)
    g_bar = (h * grad).sum(-1, keepdim=True) / h_sum
    return -((grad - g_bar) * hs).sum(-1, keepdim=True) / tau


def lml_tau_jvp(y: Tensor, tau_dot: Tensor, tau: Temperature) -> Tensor:
    """``∂y/∂τ · τ̇`` of LML-20, shape ``(..., n)``; ``tau_dot`` broadcasts to ``(..., 1)``."""
    h, hs = _h_and_hs(y)
    h_sum = h.sum(-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)
    s_bar = hs.sum(-1, keepdim=True) / h_sum
    return (hs - h * s_bar) * (-tau_dot / tau)


def solve_lml_with_fast_path(x: Tensor, k: int, tau: Temperature, max_steps: int) -> Tensor:
    """The CPU forward of LML-23: the fast path, then LML-19 for the rows it left.

    Reads on the host whether the fast path accepted every row (free on the
    CPU) and solves only the others with the guarded solver, whose
    ``max_steps`` this is. Shapes: ``x (..., n)`` to ``y (..., n)``.
    """
    n = x.shape[-1]
    rows = x if x.dim() == 2 else x.reshape(-1, n)
    if rows.shape[0] == 0:  # no rows: nothing to project (LML-5)
        return torch.empty_like(x)
    if rows.shape[0] == 1 and (not isinstance(tau, Tensor) or tau.numel() == 1):
        y = _solve_single_row(rows, k, float(tau), max_steps)
        return y if x.dim() == 2 else y.view(x.shape)
    if isinstance(tau, Tensor) and tau.dim() > 0:  # one τ per row of ``rows``
        tau = tau.expand(*x.shape[:-1], 1).reshape(-1, 1)
    y, change = newton_from_midpoint(rows, k, tau, FAST_STEPS[x.dtype])
    tolerance = STEP_TOLERANCE[x.dtype]
    if not float(change.max()) <= tolerance:  # also when NaN
        redo = ~(change <= tolerance).squeeze(1)
        if isinstance(tau, Tensor) and tau.dim() > 0:
            tau = tau[redo]
        y[redo] = solve_lml(rows[redo], k, tau, max_steps, early_exit=True)
    return y if x.dim() == 2 else y.view(x.shape)


def _solve_single_row(x: Tensor, k: int, tau: float, max_steps: int) -> Tensor:
    """LML-24 for ``x (1, n)`` with ``τ`` read on the host, then LML-19 if not accepted.

    A ``τ`` that is not positive and finite (read from a tensor, LML-22) gives NaN.
    """
    if not 0.0 < tau < math.inf:
        return torch.full_like(x, math.nan)
    y, accepted = newton_single_row(x, k, tau, FAST_STEPS[x.dtype])
    return y if accepted else solve_lml(x, k, tau, max_steps, early_exit=True)


def newton_single_row(x: Tensor, k: int, tau: float, steps: int) -> tuple[Tensor, bool]:
    """The one-row fast path of LML-24 (CPU, no autograd): ``x (1, n)`` → ``(y (1, n), accepted)``.

    The iteration of LML-23 for a single row, computed in float64 with NumPy
    on the host, which shares the CPU tensor's memory: no torch operation is
    dispatched between the input's view and the output's. The row is sorted
    with the ``m`` entries of ``P`` first (decreasing; increasing for the
    complement, LML-10), re-centred at ``c``, the midpoint of its m-th and
    (m+1)-th entries, and with the side signs ``s = (−1, …, −1, +1, …, +1)``
    (``−1`` on ``P``) each step takes the small sides and the two sums over
    ``P`` (the first ``m``) and ``Q`` (the rest) directly,

        a = σ(zs − s u),  zs = s ⊙ (x_sorted − c)/τ,   h = a(1 − a),
        T = Σ_P a,  R = Σ_Q a,  H_T = Σ_P h,  H_R = Σ_Q h,
        u ← u + (log R − log T) / (H_R/R + H_T/T),

    from ``u = 0`` (the sums add pairwise, in float64). The row is accepted
    at the first step that moved ``u`` by at most ``STEP_TOLERANCE`` of
    ``x``'s dtype (the loop then ends); it is not accepted when a sum is not
    positive (saturated rows, NaN), when ``c`` is not finite, or after
    ``steps`` steps. ``τ`` is first rounded to ``x``'s dtype, so a Python
    ``τ`` and a 0-dim tensor of its rounding give the same bits (LML-22).
    The output ``σ((x − c)/τ ∓ u)`` (``+u`` for the complement) is computed
    in float64 and rounded once to ``x``'s dtype.
    """
    n = x.shape[1]
    flip = 2 * k > n
    m = n - k if flip else k
    with np.errstate(over="ignore"):  # a τ past float32's range is ∞ there, as a tensor τ is
        tau = float(_NUMPY_DTYPES[x.dtype](tau))  # rounded to x's dtype (LML-22)
    row = x.detach().numpy().reshape(n)
    ordered = np.sort(row)  # increasing: the complement's P comes first
    if not flip:
        ordered = ordered[::-1]
    centre = 0.5 * float(ordered[m - 1]) + 0.5 * float(ordered[m])  # x_(m), x_(m+1) of ±x
    if not math.isfinite(centre):  # an infinite or NaN m-th or (m+1)-th entry
        return x, False
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # e = exp(s u − zs) at u = 0, so that a = σ(zs − s u) = 1/(1 + e·exp(s u)).
        e = (
            np.subtract(centre, ordered, dtype=np.float64)
            if flip
            else np.subtract(ordered, centre, dtype=np.float64)
        )
        e[m:] *= -1.0
        np.exp(e / tau if tau != 1.0 else e, out=e)
        work = np.empty((2, n))  # [a; h]
        small, spread = work
        sides = np.zeros((n, 2))  # the indicator columns of P and Q
        sides[:m, 0] = 1.0
        sides[m:, 1] = 1.0
        tolerance = STEP_TOLERANCE[x.dtype]
        u, accepted = 0.0, False
        for _ in range(steps):
            if u == 0.0:
                np.add(e, 1.0, out=small)
            else:
                grow = math.exp(u)
                np.multiply(e[:m], 1.0 / grow, out=small[:m])
                np.multiply(e[m:], grow, out=small[m:])
                small += 1.0
            np.reciprocal(small, out=small)  # a
            np.subtract(1.0, small, out=spread)
            spread *= small  # h = a(1 − a)
            (t, r), (h_t, h_r) = (work @ sides).tolist()
            if not (r > 0.0 and t > 0.0 and h_t + h_r > 0.0):  # saturated or NaN
                break
            step = (math.log(r) - math.log(t)) / (h_r / r + h_t / t)
            u += step
            if abs(step) <= tolerance:
                accepted = True
                break
        if not accepted:
            return x, False
        # σ((x − c)/τ ∓ u) = 1/(1 + exp((c − x)/τ ± u)), in float64; u is added
        # after the division so that none of its bits are lost to c's magnitude.
        y = np.subtract(centre, row, dtype=np.float64)
        if tau != 1.0:
            y /= tau
        y += -u if flip else u
        np.exp(y, out=y)
        y += 1.0
        np.reciprocal(y, out=y)
    return torch.from_numpy(y.astype(_NUMPY_DTYPES[x.dtype])).view(1, n), True


def newton_from_midpoint(x: Tensor, k: int, tau: Temperature, steps: int) -> tuple[Tensor, Tensor]:
    """The fast path of LML-23 (no autograd) for ``x (B, n)``: ``(y (B, n), change (B, 1))``.

    With ``m``, ``P``, ``Q``, the centre ``c``, ``z = (x − c)/τ`` and the
    log-ratio ``h(u) = log R(u) − log T(u)`` of LML-19: ``steps`` Newton
    steps on ``h`` from the midpoint ``u = 0``, with no bracket and no branch
    on values,

        u ← u + log(R/T) / (H_R/R + H_T/T),   H_R = Σ_Q a(1 − a),  H_T = Σ_P a(1 − a),

    for the small sides ``a`` (``−h′ = H_R/R + H_T/T``). ``change`` is the
    size of the last step: a row is accepted when it is at most
    ``STEP_TOLERANCE`` (the criterion of LML-19, step 4); rows with NaN,
    saturated rows (the sums underflow) and rows still far from the root
    are not.

    The small sides live in one buffer ``[z with P masked to −∞ | −z_P]`` as
    in LML-19; the four sums are reductions in the compute dtype (they add
    pairwise), written in place into one ``(2, B, 2)`` buffer each step.
    """
    n = x.shape[1]
    flip = 2 * k > n
    m = n - k if flip else k
    top, top_index = torch.topk(x, m + 1, dim=1, largest=not flip, sorted=True)
    centre = torch.lerp(top[:, m - 1 : m], top[:, m : m + 1], 0.5)
    if isinstance(tau, Tensor):  # a τ that is not positive and finite: NaN, not accepted
        centre = centre + torch.where((tau > 0) & (tau < math.inf), 0.0, math.nan)
    scale = -tau if flip else tau
    zs = torch.cat([x, top[:, :m]], dim=1).sub_(centre).div_(scale)
    z = zs[:, :n].clone()
    zs[:, n:].neg_()
    zs.scatter_(1, top_index[:, :m], -math.inf)
    # Constants made by fill (a Python scalar assigned by indexing is first
    # copied into a tensor, which costs several times more on the CPU).
    side = x.new_ones(n + m)
    side[n:].fill_(-1.0)  # +1 on Q, −1 on P
    difference = side[n - 1 : n + 1].unsqueeze(1)  # (1, −1)ᵀ
    ones = side.new_ones(2, 1)
    # [a; a(1 − a)], its two sides, and the four sums each step writes in place.
    work = x.new_empty((2, x.shape[0], n + m))
    small, spread = work.unbind(0)
    of_q, of_p = work[:, :, :n], work[:, :, n:]
    both = x.new_empty((2, x.shape[0], 2))  # [[R, T]; [H_R, H_T]]
    sum_q, sum_p = both.unbind(-1)
    sums, spreads = both.unbind(0)
    u = step = centre  # (replaced by the first step)
    for i in range(steps):
        if i == 0:
            torch.sigmoid(zs, out=small)
        else:
            torch.addcmul(zs, side, u, value=-1, out=small).sigmoid_()
        torch.addcmul(small, small, small, value=-1, out=spread)
        torch.sum(of_q, -1, out=sum_q)
        torch.sum(of_p, -1, out=sum_p)
        numerator = torch.mm(sums.log(), difference)  # log R − log T
        slope = torch.mm(spreads.div_(sums), ones)  # H_R/R + H_T/T
        if i == 0:
            u = step = numerator.div_(slope)
        elif i < steps - 1:
            u = torch.addcdiv(u, numerator, slope)
        else:
            step = numerator.div_(slope)
            u = u + step
    if flip:
        return torch.sub(u, z, out=z).sigmoid_(), step.abs()  # 1 − σ(z − u)
    return torch.sub(z, u, out=z).sigmoid_(), step.abs()


def solve_lml(x: Tensor, k: int, tau: Temperature, max_steps: int, *, early_exit: bool) -> Tensor:
    """The forward solver of LML-19 (no autograd), for ``x (..., n)``.

    Let ``m = min(k, n − k)`` be the minority side (rows with ``k > n/2`` are
    solved as the complement ``1 − Π(−x, n − k)``, LML-10) and split the row
    into the ``m`` top entries ``P`` (found by ``topk``) and the rest ``Q``.
    In the scaled, centred coordinates ``z`` and ``u = (t − c)/τ`` the root of
    ``g(u) = Σ_i σ(z_i − u) − m`` is the root of

        h(u) = log R(u) − log T(u),   R = Σ_{i∈Q} σ(z_i − u),   T = Σ_{j∈P} σ(u − z_j),

    because ``g = R − T``. Both sums are made of the small side of each
    sigmoid, so they are exact to rounding and never cancel; ``h`` is nearly
    linear wherever the entries sit in the sigmoid's exponential tails, where
    Newton on ``g`` itself would crawl. ``h′ = −(2 − R₂/R − T₂/T)`` with
    ``R₂, T₂`` the sums of squares. The steps are safeguarded by the bracket
    of LML-19 (bisection when Newton leaves it). A row stops moving once a
    Newton step moved it by at most ``STEP_TOLERANCE``, or once both sums are
    below ``ε/n`` (every output is then 0 or 1 to rounding); with
    ``early_exit`` the loop ends when every row has stopped, which changes no
    output. The entries of ``P`` are stored negated after those of ``Q`` in
    one buffer, so one sigmoid pass per step evaluates both sums.
    """
    n = x.shape[-1]
    flip = 2 * k > n
    m = n - k if flip else k
    top, top_index = torch.topk(x, m + 1, dim=-1, largest=not flip, sorted=True)
    inner, outer = top[..., m - 1 : m], top[..., m : m + 1]  # x_(m), x_(m+1) of ±x
    # Re-centre between the m-th and (m+1)-th entries: the entries near the
    # threshold then have small, exactly represented offsets.
    centre = 0.5 * inner + 0.5 * outer
    scale = -tau if flip else tau
    z = torch.sub(x, centre).div_(scale)
    # zs = [z with P masked to −∞ | −z_P]: σ(zs − side·u) gives the terms of R, then of T.
    zs = torch.cat([z, top[..., :m]], dim=-1)
    zs[..., n:].sub_(centre).div_(-scale)
    in_p = top_index[..., :m]
    minus_inf = zs.new_full((), -math.inf).expand(in_p.shape)  # faster than a scalar source
    zs.scatter_(-1, in_p, minus_inf)
    side = torch.ones(n + m, dtype=x.dtype, device=x.device)
    side[n:] = -1.0
    big = torch.finfo(x.dtype).max / 4
    lo = ((outer - centre) / scale - math.log(m)).clamp_(min=-big)
    hi = ((inner - centre) / scale + math.log(n - m)).clamp_(max=big)
    # NaN (for the whole row) when the m-th or (m+1)-th entry is not finite.
    poison = (inner - inner) + (outer - outer)
    if isinstance(tau, Tensor):  # NaN rows for a τ that is not positive and finite (LML-22)
        poison = poison + torch.where((tau > 0) & (tau < math.inf), 0.0, math.nan)

    def constant(value: float) -> Tensor:  # 0-dim: cheaper in operations than a Python float
        return torch.full((), value, dtype=x.dtype, device=x.device)

    two, step_tol = constant(2.0), constant(STEP_TOLERANCE[x.dtype])
    tail_tol = constant(torch.finfo(x.dtype).eps / n)  # LML-19, step 4
    u = torch.zeros_like(lo)
    stopped = torch.zeros_like(lo, dtype=torch.bool)
    work = x.new_empty((2, *x.shape[:-1], n + m))  # [σ; σ²] of every term
    terms, squares = work.unbind(0)
    for _ in range(max_steps):
        torch.addcmul(zs, side, u, value=-1, out=terms).sigmoid_()
        torch.mul(terms, terms, out=squares)
        r, r2 = work[..., :n].sum(-1, keepdim=True).unbind(0)
        t, t2 = work[..., n:].sum(-1, keepdim=True).unbind(0)
        above = r > t  # g(u) > 0: the root lies above u
        lo = torch.where(above, u, lo)
        hi = torch.where(above, hi, u)
        step = torch.div(r, t).log_().div_(torch.sub(two, torch.div(r2, r)).sub_(torch.div(t2, t)))
        newton = u + step
        inside = (newton >= lo) & (newton <= hi)
        total = torch.add(r, t)
        # Saturated rows (and NaN rows, which are poisoned below) stop here.
        hold = stopped | ~(total > tail_tol)
        u = torch.where(hold, u, torch.where(inside, newton, torch.lerp(lo, hi, 0.5)))
        stopped = hold | (inside & (step.abs() <= step_tol))
        if early_exit and bool(stopped.all()):
            break
    # A NaN score makes the sums NaN (they are finite otherwise): carry it into the row.
    u = u + poison + (total - total)
    if flip:
        return torch.sub(u, z, out=z).sigmoid_()  # 1 − σ(z − u)
    return torch.sub(z, u, out=z).sigmoid_()
