"""Model-predictive control with CEM/DCEM (spec/control.md).

- ``impl.control.systems``: differentiable, batched cartpole and pendulum.
- ``impl.control.planner``: eq. 7 solved by CEM/DCEM over action sequences,
  and a receding-horizon controller with explicit, resettable state.
- ``impl.control.embedding``: learned latent action spaces (eq. 8, Alg. 2).
- ``impl.control.noise``: colored (temporally correlated) sampling noise, iCEM-style.
"""

from impl.control.embedding import ActionDecoder, LatentPlan, LatentPlannerConfig, latent_plan
from impl.control.noise import colored_noise
from impl.control.planner import (
    MPC,
    PAPER_PLANNER_SOLVER,
    PLANNER_SOLVER,
    MPCState,
    Plan,
    PlannerConfig,
    plan,
    rollout,
    rollout_cost,
)
from impl.control.systems import Cartpole, Pendulum

__all__ = [
    "MPC",
    "PAPER_PLANNER_SOLVER",
    "PLANNER_SOLVER",
    "ActionDecoder",
    "Cartpole",
    "LatentPlan",
    "LatentPlannerConfig",
    "MPCState",
    "Pendulum",
    "Plan",
    "PlannerConfig",
    "colored_noise",
    "latent_plan",
    "plan",
    "rollout",
    "rollout_cost",
]
