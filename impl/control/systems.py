"""Differentiable, batched ground-truth systems: cartpole and pendulum (spec/control.md).

Each system is a frozen dataclass of its physical parameters (floats, or
tensors when one wants gradients with respect to them) with

- ``step(state (..., n_x), action (..., n_u)) -> next state (..., n_x)``,
- ``cost(state, action) -> (...)``, the per-step cost ``C(x_t, u_t)`` of eq. 7,
- ``sample_initial(n, generator) -> (n, n_x)``,
- ``action_lb``/``action_ub`` (the control bounds) and ``state_dim``/``action_dim``.

All operations broadcast over leading dimensions, so a planner evaluates
every candidate of every problem in one call per time step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

Scalar = float | Tensor
"""A parameter: a float, or a (differentiable) tensor broadcastable to the batch."""


def _uniform(
    n: int,
    low: float,
    high: float,
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype,
) -> Tensor:
    draw = torch.rand(n, generator=generator, device=device, dtype=dtype)
    return low + (high - low) * draw


@dataclass(frozen=True)
class Cartpole:
    """The cart-pole of Barto et al. (1983) as used in the paper (App. D, spec/paper.md §2).

    State ``(x, ẋ, cos θ, sin θ, θ̇)`` (θ = 0 is upright), action the force
    ``u ∈ [−force_max, force_max]``. One explicit Euler step of length ``dt``:

        c      = (u + m_p l θ̇² sin θ) / (m_c + m_p)
        θ̈      = (g sin θ − cos θ · c) / (l (4/3 − m_p cos² θ / (m_c + m_p)))
        ẍ      = c − m_p l θ̈ cos θ / (m_c + m_p)
        x' = x + dt ẋ,  ẋ' = ẋ + dt ẍ,  θ' = θ + dt θ̇,  θ̇' = θ̇ + dt θ̈

    Per-step reward ``cos θ − 0.1 x² − 1e-5 u²`` on the state before the
    action; the cost is its negation (CTL-11).
    """

    gravity: Scalar = 9.8
    mass_cart: Scalar = 1.0
    mass_pole: Scalar = 0.1
    length: Scalar = 0.5
    dt: Scalar = 0.05
    force_max: float = 100.0
    position_weight: Scalar = 0.1
    control_weight: Scalar = 1e-5

    state_dim = 5
    action_dim = 1

    @property
    def action_lb(self) -> Tensor:
        return torch.tensor([-self.force_max])

    @property
    def action_ub(self) -> Tensor:
        return torch.tensor([self.force_max])

    def step(self, state: Tensor, action: Tensor) -> Tensor:
        """``(..., 5), (..., 1) -> (..., 5)``; the angle is carried as (cos, sin)."""
        x, dx, cos, sin, dth = state.unbind(-1)
        u = action[..., 0]
        total = self.mass_cart + self.mass_pole
        common = (u + self.mass_pole * self.length * dth * dth * sin) / total
        th_acc = (self.gravity * sin - cos * common) / (
            self.length * (4.0 / 3.0 - self.mass_pole * cos * cos / total)
        )
        x_acc = common - self.mass_pole * self.length * th_acc * cos / total
        theta = torch.atan2(sin, cos) + self.dt * dth
        return torch.stack(
            (
                x + self.dt * dx,
                dx + self.dt * x_acc,
                torch.cos(theta),
                torch.sin(theta),
                dth + self.dt * th_acc,
            ),
            dim=-1,
        )

    def reward(self, state: Tensor, action: Tensor) -> Tensor:
        """``cos θ − 0.1 x² − 1e-5 u²``, shape ``(...)``."""
        x, cos = state[..., 0], state[..., 2]
        return cos - self.position_weight * x * x - self.control_weight * (action * action).sum(-1)

    def cost(self, state: Tensor, action: Tensor) -> Tensor:
        return -self.reward(state, action)

    def sample_initial(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``x, ẋ ~ U(−0.5, 0.5)``, ``θ ~ U(−π, π)``, ``θ̇ ~ U(−1, 1)`` (App. D)."""
        pos = _uniform(n, -0.5, 0.5, generator, device, dtype)
        vel = _uniform(n, -0.5, 0.5, generator, device, dtype)
        theta = _uniform(n, -math.pi, math.pi, generator, device, dtype)
        ang_vel = _uniform(n, -1.0, 1.0, generator, device, dtype)
        return torch.stack((pos, vel, torch.cos(theta), torch.sin(theta), ang_vel), dim=-1)


@dataclass(frozen=True)
class Pendulum:
    """The torque-limited pendulum swing-up (the equations of Gym's Pendulum-v1).

    State ``(cos θ, sin θ, θ̇)`` (θ = 0 upright), torque ``u ∈ [−2, 2]``:

        θ̇' = clip(θ̇ + dt (3g/(2l) sin θ + 3/(m l²) u), −max_speed, max_speed)
        θ'  = θ + dt θ̇'

    Per-step cost ``angle(θ)² + 0.1 θ̇² + 0.001 u²`` on the state before the
    action, with ``angle`` wrapped to ``(−π, π]`` (CTL-12).
    """

    gravity: Scalar = 10.0
    mass: Scalar = 1.0
    length: Scalar = 1.0
    dt: Scalar = 0.05
    max_speed: float = 8.0
    torque_max: float = 2.0
    velocity_weight: Scalar = 0.1
    control_weight: Scalar = 0.001

    state_dim = 3
    action_dim = 1

    @property
    def action_lb(self) -> Tensor:
        return torch.tensor([-self.torque_max])

    @property
    def action_ub(self) -> Tensor:
        return torch.tensor([self.torque_max])

    def step(self, state: Tensor, action: Tensor) -> Tensor:
        """``(..., 3), (..., 1) -> (..., 3)``."""
        cos, sin, dth = state.unbind(-1)
        u = action[..., 0]
        theta = torch.atan2(sin, cos)
        acc = (
            3.0 * self.gravity / (2.0 * self.length) * sin
            + 3.0 / (self.mass * self.length * self.length) * u
        )
        new_dth = (dth + self.dt * acc).clamp(-self.max_speed, self.max_speed)
        new_theta = theta + self.dt * new_dth
        return torch.stack((torch.cos(new_theta), torch.sin(new_theta), new_dth), dim=-1)

    def cost(self, state: Tensor, action: Tensor) -> Tensor:
        """``angle² + 0.1 θ̇² + 0.001 u²``, shape ``(...)``."""
        cos, sin, dth = state.unbind(-1)
        angle = torch.atan2(sin, cos)
        return (
            angle * angle
            + self.velocity_weight * dth * dth
            + self.control_weight * (action * action).sum(-1)
        )

    def reward(self, state: Tensor, action: Tensor) -> Tensor:
        return -self.cost(state, action)

    def sample_initial(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``θ ~ U(−π, π)``, ``θ̇ ~ U(−1, 1)`` (Pendulum-v1's reset)."""
        theta = _uniform(n, -math.pi, math.pi, generator, device, dtype)
        ang_vel = _uniform(n, -1.0, 1.0, generator, device, dtype)
        return torch.stack((torch.cos(theta), torch.sin(theta), ang_vel), dim=-1)
