"""Learned latent action spaces: eq. 8 solved by DCEM, trained by Alg. 2 (spec/control.md).

An ``ActionDecoder`` maps a latent ``z`` to a whole action sequence
``u_{1:H} = f^dec_θ(z)`` inside the action bounds. ``latent_plan`` solves

    ẑ = argmin_{z ∈ [−b, b]^m}  C(f^dec_θ(z))                          (eq. 8)

with ``impl.dcem`` and returns the decoded plan and its cost. Alg. 2 is then
one line: ``latent_plan(...).cost.mean().backward()`` followed by an optimizer
step on θ; with ``tau > 0`` the gradient flows through the DCEM iterations
(CTL-9, CTL-10). With ``tau`` None (plain CEM) the solver runs without a
graph and ``ẑ`` is a constant: the gradient is that of ``C(f^dec_θ(ẑ))`` at
fixed ``ẑ`` ("min-differentiation", the paper's τ = 0 ablation).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from impl._checks import (
    require_callable,
    require_finite_real,
    require_floating_tensor,
    require_int,
    require_positive_int,
)
from impl.cem import DCEMStep, solve
from impl.control.planner import ActionCost, check_costs, require_options, vector
from impl.options import CEMOptions

DECODER_HIDDEN = 256
"""Hidden width of the cartpole decoder (spec/paper.md §2, App. C)."""

DECODER_LAYERS = 3
"""Hidden layers of the cartpole decoder (spec/paper.md §2, App. C)."""

DECODER_INIT_GAIN = 2.0
"""Decoder weights ~ N(0, std = DECODER_INIT_GAIN / √(fan_in + fan_out)) (spec/paper.md §2)."""


class ActionDecoder(nn.Module):
    """``f^dec_θ``: latent ``z (..., m)`` → actions ``(..., H, n_u)`` in ``[lb, ub]`` (CTL-8).

    An MLP with ``n_hidden`` ELU layers of width ``hidden``; weights drawn
    from ``N(0, (2/√(fan_in + fan_out))²)``, biases zero; the output ``o`` is
    squashed as ``lb + (ub − lb) σ(o)`` (computed by ``torch.lerp``), so every
    decoded action lies in the bounds, which are stored in float32.
    """

    action_lb: Tensor
    action_ub: Tensor

    def __init__(
        self,
        latent_dim: int,
        horizon: int,
        action_dim: int,
        action_lb: Tensor | float,
        action_ub: Tensor | float,
        hidden: int = DECODER_HIDDEN,
        n_hidden: int = DECODER_LAYERS,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        sizes = {
            "latent_dim": latent_dim,
            "horizon": horizon,
            "action_dim": action_dim,
            "hidden": hidden,
        }
        for name, value in sizes.items():
            require_positive_int(name, value)
        if require_int("n_hidden", n_hidden) < 0:
            raise ValueError(f"n_hidden must be >= 0, got {n_hidden}")
        self.latent_dim = latent_dim
        self.horizon = horizon
        self.action_dim = action_dim
        lower = vector("action_lb", action_lb, action_dim, torch.device("cpu"), torch.float32)
        upper = vector("action_ub", action_ub, action_dim, torch.device("cpu"), torch.float32)
        if not bool((lower < upper).all()):
            raise ValueError(
                f"action bounds must satisfy lb < ub; got lb={lower.tolist()}, ub={upper.tolist()}"
            )
        self.register_buffer("action_lb", lower)
        self.register_buffer("action_ub", upper)
        widths = [latent_dim] + [hidden] * n_hidden + [horizon * action_dim]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            linear = nn.Linear(fan_in, fan_out)
            with torch.no_grad():
                std = DECODER_INIT_GAIN / math.sqrt(fan_in + fan_out)
                linear.weight.normal_(0.0, std, generator=generator)
                linear.bias.zero_()
            layers.append(linear)
            if i < n_hidden:
                layers.append(nn.ELU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """``(..., m) -> (..., H, n_u)``."""
        if z.dim() == 0 or z.shape[-1] != self.latent_dim:
            raise ValueError(
                f"the decoder takes latents of size {self.latent_dim}, got shape {tuple(z.shape)}"
            )
        out = self.net(z).unflatten(-1, (self.horizon, self.action_dim))
        # lerp, not lb + (ub − lb)·σ: its two-sided formula keeps the rounded
        # result inside [lb, ub] (the one-sided form overshoots ub by an ulp).
        return torch.lerp(self.action_lb, self.action_ub, torch.sigmoid(out))


LATENT_SOLVER = CEMOptions()
"""``LatentPlannerConfig``'s default solver options, the paper's latent DCEM
(spec/paper.md §2): N=100, k=10, T=10, τ=1 (``impl.dcem.dcem``'s defaults)."""


@dataclass(frozen=True)
class LatentPlannerConfig:
    """DCEM over the latent box (spec/paper.md §2: N=100, k=10, T=10, τ=1, σ₀=0.5, box [−1, 1]).

    Attributes:
        latent_dim: ``m``.
        init_std: ``σ_0`` of every solve.
        latent_bound: ``b``, the box ``[−b, b]^m`` the samples are clipped to.
        solver: every scalar option of the solve, passed whole to
            ``impl.dcem.dcem`` (CTL-16); default ``LATENT_SOLVER``. Hard
            selection (``tau`` None or 0) is plain CEM with
            min-differentiation (see the module docstring).
    """

    latent_dim: int
    init_std: float = 0.5
    latent_bound: float = 1.0
    solver: CEMOptions = LATENT_SOLVER

    def __post_init__(self) -> None:
        require_options(self.solver)


@dataclass(frozen=True)
class LatentPlan:
    """A solution of eq. 8 for ``B`` problems.

    Attributes:
        latent: ``(B, m)`` ``ẑ``.
        actions: ``(B, H, n_u)`` ``f^dec_θ(ẑ)``.
        cost: ``(B,)`` the cost of the decoded plan (differentiable in θ).
        first_action: ``(B, n_u)``.
        mean, std: ``(B, m)`` the final latent distribution.
        n_iter: ``(B,)`` solver iterations used.
    """

    latent: Tensor
    actions: Tensor
    cost: Tensor
    first_action: Tensor
    mean: Tensor
    std: Tensor
    n_iter: Tensor


def latent_plan(
    cost_fn: ActionCost,
    decoder: Callable[[Tensor], Tensor],
    config: LatentPlannerConfig,
    batch: int,
    *,
    init_mean: Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    callback: Callable[[DCEMStep], None] | None = None,
) -> LatentPlan:
    """Solve eq. 8 by DCEM over ``z`` and decode (CTL-9).

    Args:
        cost_fn: action sequences ``(B, N, H, n_u)`` → costs ``(B, N)``.
        decoder: ``z (..., m)`` → actions ``(..., H, n_u)``, e.g. an
            ``ActionDecoder``.
        config: the latent planner's settings.
        batch: ``B``.
        init_mean: ``(B, m)``; default the box's centre, 0.
        device, dtype: where to plan (taken from ``init_mean`` when given).
        generator, noise, callback: as in ``impl.dcem.dcem`` (``noise`` has
            shape ``(T, B, N, m)``).
    """
    m = require_positive_int("latent_dim", config.latent_dim)
    bound = require_finite_real("latent_bound", config.latent_bound, minimum=0.0, strict=True)
    require_positive_int("batch", batch)
    require_callable("cost_fn", cost_fn)
    require_callable("decoder", decoder)
    if init_mean is not None:
        require_floating_tensor("init_mean", init_mean)
        if tuple(init_mean.shape) != (batch, m):
            raise ValueError(f"init_mean has shape {tuple(init_mean.shape)}, expected {(batch, m)}")
        device, dtype = init_mean.device, init_mean.dtype
    else:
        init_mean = torch.zeros(batch, m, device=device, dtype=dtype)
    hard = config.solver.hard

    def latent_cost(z: Tensor) -> Tensor:
        values = cost_fn(decoder(z))
        check_costs(values, (batch, z.shape[1]))
        return values

    with torch.set_grad_enabled(torch.is_grad_enabled() and not hard):
        result = solve(
            latent_cost,
            init_mean,
            config.init_std,
            config.solver,
            lb=-bound,
            ub=bound,
            generator=generator,
            noise=noise,
            callback=callback,
        )
    latent = result.x
    actions = decoder(latent)
    cost = latent_cost(latent.unsqueeze(1))[:, 0]
    return LatentPlan(
        latent=latent,
        actions=actions,
        cost=cost,
        first_action=actions[:, 0],
        mean=result.mean,
        std=result.std,
        n_iter=result.n_iter,
    )
