"""Controllers on the learned model and the episode loop (Alg. 3).

Both controllers solve with ``impl.cem.solve`` and pass the run's
``CEMOptions`` to it whole, so every solver option of the configuration
(``normalize``, ``std_min``, ``output``, ``smoothing``, ``elite_temperature``,
``grad_iters``, …) reaches the solve.
Full-space CEM is a receding-horizon planner over ``H × n_u`` with the warm
start of ``impl.control`` (``shift_warm_start``, CTL-5); latent DCEM solves
eq. 8 over the latent box with an ``impl.control.ActionDecoder``. Their
objective is the model's negative imagined return from the filter's
current belief; each horizon step evaluates all candidates in one batched
model call (``RSSM.imagine_return``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from impl.cem import solve
from impl.control import ActionDecoder
from impl.control.planner import INIT_STD_SCALE, shift_warm_start
from validation.dmc.config import CEMConfig, LatentConfig
from validation.dmc.envs import DMCEnv
from validation.dmc.rssm import RSSM, Belief


class Controller(Protocol):
    """A planner on the model, one per episode: ``act`` maps the filter's belief
    ``(1, ·)`` to an action ``(1, n_u)``; ``last_cost`` ``(1,)`` is the model cost
    (the negative predicted ``H``-step return) of the plan behind the last action."""

    last_cost: Tensor

    def act(self, belief: Belief) -> Tensor: ...


def planning_cost(model: RSSM, belief: Belief) -> Callable[[Tensor], Tensor]:
    """Eq. 7 on the learned model: action sequences ``(B, N, H, n_u)`` → ``−return (B, N)``."""

    def cost(actions: Tensor) -> Tensor:
        return -model.imagine_return(belief, actions)

    return cost


def latent_planning_cost(
    model: RSSM, belief: Belief, config: LatentConfig
) -> Callable[[Tensor], Tensor]:
    """Latent DCEM's objective on decoded plans ``(B, N, H, n_u)`` → ``(B, N)``:
    ``−Σ_t (mean_t − β std_t) + λ · mean(a²)`` with ``β = pessimism`` over the
    reward heads and ``λ = action_penalty`` (both 0 by default: ``planning_cost``)."""

    def cost(actions: Tensor) -> Tensor:
        value = -model.imagine_return(belief, actions, config.pessimism)
        if config.action_penalty > 0:
            value = value + config.action_penalty * actions.pow(2).mean((-2, -1))
        return value

    return cost


class FullCEM:
    """Receding-horizon CEM over the full ``H × n_u`` action space (App. E), fresh
    for each episode.

    ``act(belief)`` plans without a graph, from the previous plan shifted by one
    step (its tail at the bounds' midpoint, CTL-5); ``last_cost`` is the model
    cost of the last plan ``(1,)``.
    """

    def __init__(
        self,
        model: RSSM,
        config: CEMConfig,
        env: DMCEnv,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        self.model = model
        self.config = config
        self.lb = env.action_lb.to(device)
        self.ub = env.action_ub.to(device)
        self.generator = generator
        self.midpoint = 0.5 * (self.lb + self.ub)
        self.warm_start = self.midpoint.expand(1, config.horizon, env.action_dim).clone()
        self.last_cost = torch.zeros(1)

    def act(self, belief: Belief) -> Tensor:
        """Eq. 7 over ``(H, n_u)`` from the warm start ``(1, H, n_u)``:
        ``impl.cem.solve`` with ``config.solver`` whole, ``σ₀ = INIT_STD_SCALE ·
        (ub − lb)`` (the paper's expert), samples clipped to the bounds ``(n_u,)``."""
        batch, horizon, n_u = self.warm_start.shape
        cost_fn = planning_cost(self.model, belief)

        def flat_cost(flat: Tensor) -> Tensor:
            return cost_fn(flat.reshape(batch, flat.shape[1], horizon, n_u))

        with torch.no_grad():
            flat_lb = self.lb.expand(horizon, n_u).reshape(1, horizon * n_u)
            flat_ub = self.ub.expand(horizon, n_u).reshape(1, horizon * n_u)
            result = solve(
                flat_cost,
                self.warm_start.reshape(batch, horizon * n_u),
                (INIT_STD_SCALE * (flat_ub - flat_lb)),
                self.config.solver,
                lb=flat_lb,
                ub=flat_ub,
                generator=self.generator,
            )
            best = self.config.solver.output == "best"
            cost = result.best_value if best else flat_cost(result.x[:, None])
        actions = result.x.reshape(batch, horizon, n_u)
        self.warm_start = shift_warm_start(actions, self.midpoint)
        self.last_cost = cost.reshape(batch)
        return actions[:, 0]


def latent_solve(
    model: RSSM,
    decoder: ActionDecoder,
    config: LatentConfig,
    belief: Belief,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Eq. 8 for beliefs ``(B, ·)``: ``impl.cem.solve`` over the latent box
    ``[−b, b]^m`` from its centre with ``σ₀ = init_std`` and ``config.solver``
    whole; returns the decoded plan ``(B, H, n_u)`` and its model cost ``(B,)``.
    With ``τ > 0`` and grad enabled the cost is differentiable in the decoder
    and the model through the solve (Alg. 2, CTL-9); with hard selection the
    solve records no graph and ``ẑ`` is a constant (min-differentiation, as
    ``impl.control.latent_plan``)."""
    batch = belief.h.shape[0]
    cost_fn = latent_planning_cost(model, belief, config)

    def latent_cost(z: Tensor) -> Tensor:
        return cost_fn(decoder(z))

    init = torch.zeros(batch, config.latent_dim, device=belief.h.device)
    bound = config.latent_bound
    with torch.set_grad_enabled(torch.is_grad_enabled() and not config.solver.hard):
        result = solve(
            latent_cost,
            init,
            config.init_std,
            config.solver,
            lb=-bound,
            ub=bound,
            generator=generator,
        )
    actions = decoder(result.x)
    return actions, cost_fn(actions[:, None])[:, 0]


class LatentDCEM:
    """Latent DCEM (App. E: N=100, k=10, T=10, τ=1) as a controller; no graph."""

    def __init__(
        self, model: RSSM, decoder: ActionDecoder, config: LatentConfig, generator: torch.Generator
    ) -> None:
        self.model = model
        self.decoder = decoder
        self.config = config
        self.generator = generator
        self.last_cost = torch.zeros(1)

    def act(self, belief: Belief) -> Tensor:
        with torch.no_grad():
            actions, self.last_cost = latent_solve(
                self.model, self.decoder, self.config, belief, self.generator
            )
        return actions[:, 0]


@dataclass(frozen=True)
class Episode:
    """One collected episode of ``L`` control steps.

    Attributes:
        observations: ``(L+1, obs_dim)``.
        actions: ``(L, n_u)`` the actions applied (after noise and clipping).
        raw_actions: ``(L, n_u)`` the actions drawn (after noise, before clipping;
            PPO's log-probabilities are of these).
        rewards: ``(L,)``.
        beliefs: the filter's beliefs before each action, ``h (L, deter)``, ``s (L, stoch)``.
        means: ``(L, n_u)`` the controller's outputs (before noise); zeros for random actions.
        plan_seconds: total planning time.
        planned: ``(L,)`` the return the model predicted for each step's plan
            over its ``H`` steps (minus its cost); zeros for random actions.
    """

    observations: Tensor
    actions: Tensor
    raw_actions: Tensor
    rewards: Tensor
    beliefs: Belief
    means: Tensor
    plan_seconds: float
    planned: Tensor

    @property
    def total_reward(self) -> float:
        return float(self.rewards.sum())


def run_episode(
    env: DMCEnv,
    model: RSSM,
    controller: Controller | None,
    *,
    noise: float,
    generator: torch.Generator,
    device: torch.device,
    after_step: Callable[[int], None] | None = None,
) -> Episode:
    """Play one episode (Alg. 3's inner loop).

    Args:
        env: the environment (its random state decides the initial state).
        model: filters the observations into beliefs.
        controller: plans each action; None takes uniform random actions (seed episodes).
        noise: std of the Gaussian exploration noise added to the controller's
            action (then clipped to the bounds).
        generator: CPU generator of the random actions and the noise.
        device: where the model lives.
        after_step: called with the control step index after each step (the
            interleaved model/decoder updates of Alg. 3).
    """
    lb, ub = env.action_lb, env.action_ub
    observation = torch.as_tensor(env.reset())
    observations, actions, raws, rewards, hs, ss, means = [observation], [], [], [], [], [], []
    planned: list[Tensor] = []
    plan_seconds = 0.0
    with torch.no_grad():
        belief = model.observe(None, None, observation.unsqueeze(0).to(device))
    done, step = False, 0
    while not done:
        hs.append(belief.h[0].cpu())
        ss.append(belief.s[0].cpu())
        if controller is None:
            mean = torch.zeros(env.action_dim)
            planned.append(torch.zeros(()))
            action = lb + (ub - lb) * torch.rand(env.action_dim, generator=generator)
        else:
            start = time.perf_counter()
            mean = controller.act(belief)[0].detach().cpu()
            plan_seconds += time.perf_counter() - start
            planned.append(-controller.last_cost.detach()[0].cpu())
            action = mean + noise * torch.randn(env.action_dim, generator=generator)
        raws.append(action)
        action = torch.maximum(torch.minimum(action, ub), lb)
        result = env.step(action.double().numpy())
        observation = torch.as_tensor(result.observation)
        observations.append(observation)
        actions.append(action)
        rewards.append(result.reward)
        means.append(mean)
        done = result.done
        if after_step is not None:
            after_step(step)
        with torch.no_grad():
            belief = model.observe(
                belief, action.unsqueeze(0).to(device), observation.unsqueeze(0).to(device)
            )
        step += 1
    return Episode(
        torch.stack(observations),
        torch.stack(actions),
        torch.stack(raws),
        torch.tensor(rewards, dtype=torch.float32),
        Belief(torch.stack(hs), torch.stack(ss)),
        torch.stack(means),
        plan_seconds,
        torch.stack(planned),
    )
