"""CEM and the differentiable cross-entropy method (DCEM), batched (spec/cem.md).

``dcem(f, init_mean, init_std, ...)`` runs Algorithm 1 on ``B`` independent
problems at once. Each iteration samples ``X = clip(μ + σ ⊙ ε, lb, ub)``
(CEM-2), evaluates ``f``, selects elites with a hard top-k (CEM-4, plain CEM)
or the soft LML top-k (CEM-5, DCEM), and refits the diagonal Gaussian
(CEM-6, Props. 1 and 3). With ``tau > 0`` every output is differentiable in
``f``'s parameters, ``init_mean`` and ``init_std`` (CEM-17).

``dcem`` is a thin wrapper: it gathers its keyword arguments into one
``impl.options.CEMOptions`` and calls ``impl.cem.solve``, the composable
solver (explicit state, samplers, selectors, updates, differentiation
policies). Backward memory is bounded by ``checkpoint=True`` (CEM-26) or
``grad_iters=K`` (CEM-27).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from impl.cem.result import DCEMResult, DCEMStep
from impl.cem.solver import solve
from impl.cem.step import Objective
from impl.gaussian import MATMUL_MIN_ELEMENTS
from impl.options import DEFAULT_STD_MIN, CEMOptions, Output
from impl.selection import hard_selection

__all__ = [
    "DEFAULT_STD_MIN",
    "MATMUL_MIN_ELEMENTS",
    "DCEMResult",
    "DCEMStep",
    "Objective",
    "dcem",
    "hard_selection",
]


def dcem(
    f: Objective,
    init_mean: Tensor,
    init_std: Tensor | float,
    *,
    n_sample: int = 100,
    n_elite: int = 10,
    n_iter: int = 10,
    tau: float | Tensor | None = 1.0,
    lb: Tensor | float | None = None,
    ub: Tensor | float | None = None,
    normalize: bool = True,
    std_min: float = DEFAULT_STD_MIN,
    tol: float | None = None,
    output: Output = "mean",
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    callback: Callable[[DCEMStep], None] | None = None,
    validate: bool | None = None,
    checkpoint: bool = False,
    grad_iters: int | None = None,
    smoothing: float = 0.0,
    elite_temperature: float | None = None,
) -> DCEMResult:
    """Minimize ``f`` with DCEM (``tau > 0``) or CEM (``tau`` None or 0).

    Args:
        f: candidates ``(B, N, d)`` → values ``(B, N)``; lower is better.
            Non-finite values rank worst (CEM-12).
        init_mean: ``μ_0``, ``(B, d)`` or ``(d,)`` for a single problem.
        init_std: ``σ_0``, a number or a tensor broadcastable to ``init_mean``.
        n_sample: ``N``, candidates per iteration.
        n_elite: ``k``, elites per iteration, ``0 < k < N``.
        n_iter: ``T``, iterations, ``≥ 1``.
        tau: LML temperature; ``None`` or ``0`` is plain CEM (hard top-k).
            A 0-dim floating tensor (which may require grad: the result is
            then differentiable in it, CEM-36) is DCEM.
        lb, ub: box bounds (number or tensor broadcastable to ``init_mean``);
            samples are clipped to them (CEM-10).
        normalize: standardize values per problem and iteration (CEM-3).
        std_min: the σ floor (CEM-11).
        tol: per-problem convergence threshold (CEM-13); ``None`` runs all
            ``T`` iterations.
        output: ``"mean"`` returns the final mean, ``"best"`` the best sample,
            ``"sample"`` a draw of the final distribution (CEM-42).
        generator: source of the sampling noise.
        noise: pre-drawn standard-normal noise ``(T, B, N, d)`` (``(T, N, d)``
            for a single problem), cast to the state's dtype (CEM-24);
            overrides ``generator``. It may require grad.
        callback: called with a ``DCEMStep`` after every iteration (CEM-21).
        validate: check tensor values (``init_std ≥ 0``, finite inputs,
            ``lb < ub``); ``None`` checks only on the CPU, where it costs no
            device synchronization (CEM-22).
        checkpoint: recompute each iteration during the backward pass
            instead of keeping its intermediate tensors (CEM-26): the same
            values and the exact gradient, with the backward memory of one
            iteration plus ``O(T·B·d)``, for about one more forward pass of
            compute (``f`` included). ``f`` must be deterministic given its
            input and the global random state.
        grad_iters: ``K ≥ 1``: record the autograd graph of the last ``K``
            iterations only (CEM-27). The earlier iterations run without
            autograd, so the gradient is the truncated one: it treats the
            distribution (and the best sample) entering iteration ``T − K``
            as constants, and ``init_mean``/``init_std`` get no gradient when
            ``K < T``. ``None`` (default) differentiates every iteration.
        smoothing: ``α ∈ [0, 1)``: each update keeps a fraction ``α`` of the
            previous distribution, ``μ_{t+1} = α μ_t + (1 − α) μ̂_{t+1}`` and
            the same for ``σ`` (CEM-29; mbrl-lib's ``alpha``, TD-MPC's
            momentum). 0 (default) is the paper's update.
        elite_temperature: ``λ > 0`` weights the hard elites by
            ``exp(−ṽ/λ)`` (normalized to sum to ``k``) instead of equally: the
            elite weighting of MPPI-style planners (TD-MPC2, TorchRL's
            ``MPPIPlanner``), CEM-30. Needs hard selection (``tau`` None or
            0). ``None`` (default): equal weights, CEM-4.

    Returns:
        A ``DCEMResult`` (CEM-15).
    """
    options = CEMOptions(
        n_sample=n_sample,
        n_elite=n_elite,
        n_iter=n_iter,
        tau=tau,
        normalize=normalize,
        std_min=std_min,
        tol=tol,
        output=output,
        checkpoint=checkpoint,
        grad_iters=grad_iters,
        smoothing=smoothing,
        elite_temperature=elite_temperature,
    )
    return solve(
        f,
        init_mean,
        init_std,
        options,
        lb=lb,
        ub=ub,
        generator=generator,
        noise=noise,
        callback=callback,
        validate=validate,
    )
