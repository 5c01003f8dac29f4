"""A TorchRL planner that solves each control step with ``impl.control.MPC`` (CTL-18).

``DCEMPlanner(env, horizon, solver)`` is a ``torchrl.modules.planners.MPCPlannerBase``:
TorchRL calls ``planning(td)`` with a batch of observations, and the planner
returns the first action ``(*batch, n_u)`` of eq. 7's plan. Candidate action
sequences ``(B, N, H, n_u)`` are scored by the model environment's own
``rollout`` (one batched rollout of all ``B·N`` candidates per iteration;
rewards after a candidate's first ``done`` do not count, as in TorchRL's
planners), so any batch-unlocked ``EnvBase``, e.g. a ``ModelBasedEnvBase``,
can be planned on. Unlike TorchRL's ``CEMPlanner`` the planner keeps a warm
start between calls (``impl.control.MPC``: the last plan shifted by one
step, CTL-5) and restarts it where the input marks an episode start (an
``"is_init"`` entry, as ``torchrl.envs.InitTracker`` writes it, or a ``"done"``
entry), its initial σ comes from the action bounds (CTL-2), and non-finite
rewards rank worst (CEM-12).

Needs the ``torchrl`` extra (``torchrl``, ``tensordict``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchrl.data import Bounded  # type: ignore[import-untyped, import-not-found, unused-ignore]
from torchrl.modules.planners import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
    MPCPlannerBase,
)

from impl._checks import require_positive_int
from impl.control.planner import (
    MPC,
    PLANNER_SOLVER,
    ActionCost,
    MPCState,
    PlannerConfig,
)
from impl.options import CEMOptions

EPISODE_START_KEYS = ("is_init", "done")
"""Input entries that restart an environment's warm start where they are true."""


class DCEMPlanner(MPCPlannerBase):  # type: ignore[misc, unused-ignore]
    """CEM/DCEM model-predictive control as a TorchRL ``MPCPlannerBase`` (CTL-18).

    Args:
        env: a batch-unlocked TorchRL environment (e.g. a ``ModelBasedEnvBase``)
            with a bounded 1-D action spec ``(n_u,)``.
        horizon: ``H``, the planning horizon.
        solver: the solver's options (default ``PLANNER_SOLVER``: hard CEM with iCEM's recipe,
            N=100, k=10, T=10).
        init_std: ``σ_0``, a number or ``(n_u,)`` tensor; None takes
            ``INIT_STD_SCALE · (ub − lb)``.
        seed: of the controller's noise (CTL-17); None draws one from
            PyTorch's global generator.
        reward_key: where the rollout stores the reward.
        action_key: where the planner writes the action (and feeds candidates).
    """

    def __init__(
        self,
        env: Any,
        horizon: int,
        solver: CEMOptions = PLANNER_SOLVER,
        *,
        init_std: Tensor | float | None = None,
        seed: int | None = None,
        reward_key: Any = ("next", "reward"),
        action_key: Any = "action",
    ) -> None:
        super().__init__(env=env, action_key=action_key)
        spec = env.action_spec
        if not isinstance(spec, Bounded):
            raise ValueError(
                f"DCEMPlanner needs a bounded action spec (torchrl.data.Bounded), got {spec!r}"
            )
        if len(spec.shape) != 1:
            raise ValueError(f"DCEMPlanner needs a 1-D action spec (n_u,), got {tuple(spec.shape)}")
        self.config = PlannerConfig(
            horizon=require_positive_int("horizon", horizon),
            action_lb=spec.space.low.detach().clone(),
            action_ub=spec.space.high.detach().clone(),
            action_dim=spec.shape[0],
            init_std=init_std,
            solver=solver,
        )
        self.seed = seed
        self.reward_key = reward_key
        self.action_key = action_key
        self.controller: MPC | None = None

    @property
    def state(self) -> MPCState | None:
        """The controller's whole state (CTL-7), None before the first call."""
        return None if self.controller is None else self.controller.state

    def reset(self, mask: Tensor | None = None) -> None:
        """Restart all warm starts, or those where ``mask (B,)`` is true."""
        if self.controller is not None:
            self.controller.reset(mask)

    def planning(self, tensordict: Any) -> Tensor:
        """The first planned action ``(*batch, n_u)`` for ``tensordict`` ``(*batch)``."""
        batch_shape = tuple(tensordict.batch_size)
        flat = tensordict.reshape(-1) if batch_shape else tensordict.unsqueeze(0)
        controller = self._controller(flat)
        starts = episode_starts(flat)
        if starts is not None:
            controller.reset(starts)
        with torch.no_grad():
            result = controller.act(self.rollout_cost(flat))
        return result.first_action.reshape(*batch_shape, self.config.action_dim)

    def rollout_cost(self, flat: Any) -> ActionCost:
        """Eq. 7's objective through ``env.rollout`` from ``flat`` ``(B)``: candidates
        ``(B, N, H, n_u)`` → ``−Σ_t r_t`` ``(B, N)``, rewards after the first done dropped."""
        keys = list(self.env.full_observation_spec.keys(True, True))
        keys += list(self.env.full_state_spec.keys(True, True))
        start = flat.select(*keys, strict=False)

        def cost(actions: Tensor) -> Tensor:
            batch, n_cand, horizon = actions.shape[:3]
            candidates = start.unsqueeze(1).expand(batch, n_cand).clone()
            trajectory = self.env.rollout(
                max_steps=horizon,
                policy=_ActionSequence(actions, self.action_key),
                auto_reset=False,
                tensordict=candidates,
                break_when_any_done=False,
            )
            reward = trajectory.get(self.reward_key)
            done = trajectory.get(("next", "done"), None)
            return -masked_return(reward, done)

        return cost

    def _controller(self, flat: Any) -> MPC:
        batch = flat.batch_size[0]
        if self.controller is None or self.controller.batch != batch:
            device = flat.device if flat.device is not None else self.env.device
            self.controller = MPC(
                self.config, batch, device=device, dtype=self.action_spec.dtype, seed=self.seed
            )
        return self.controller


def masked_return(reward: Tensor, done: Tensor | None) -> Tensor:
    """``Σ_t r_t`` over the steps up to and including the first done.

    ``reward (B, N, H, …)``, ``done`` broadcastable to it or None → ``(B, N)``.
    """
    if done is not None:
        done = done.expand_as(reward).to(torch.int64)
        after_done = done.cumsum(dim=2) > done
        reward = torch.where(after_done, torch.zeros_like(reward), reward)
    return reward.flatten(2).sum(-1)


def episode_starts(flat: Any) -> Tensor | None:
    """``(B,)`` bool where the input marks a new episode (``EPISODE_START_KEYS``), or None."""
    mask: Tensor | None = None
    for key in EPISODE_START_KEYS:
        flag = flat.get(key, None)
        if flag is not None:
            flag = flag.reshape(flag.shape[0], -1).any(-1)
            mask = flag if mask is None else mask | flag
    return mask


class _ActionSequence:
    """A TorchRL policy that writes ``actions[:, :, t]`` at its ``t``-th call."""

    def __init__(self, actions: Tensor, action_key: Any) -> None:
        self.actions = actions
        self.action_key = action_key
        self.step = 0

    def __call__(self, tensordict: Any) -> Any:
        if self.step >= self.actions.shape[2]:
            raise ValueError(f"the rollout asked for step {self.step} of {self.actions.shape[2]}")
        tensordict.set(self.action_key, self.actions[:, :, self.step])
        self.step += 1
        return tensordict
