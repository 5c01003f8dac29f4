"""Controllers on the learned model and the episode loop (Alg. 3).

Both controllers go through ``impl``: full-space CEM is ``impl.control.MPC``
(hard top-k, warm-started), latent DCEM is ``impl.control.latent_plan`` over
an ``ActionDecoder``. Their objective is the model's negative imagined
return from the filter's current belief; each horizon step evaluates all
candidates in one batched model call (``RSSM.imagine_return``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from impl.control import MPC, ActionDecoder, LatentPlannerConfig, PlannerConfig, latent_plan
from validation.dmc.config import CEMConfig, LatentConfig
from validation.dmc.envs import DMCEnv
from validation.dmc.rssm import RSSM, Belief

Act = Callable[[Belief], Tensor]
"""A controller: the filter's belief ``(1, ·)`` → an action ``(1, n_u)``."""


def planning_cost(model: RSSM, belief: Belief) -> Callable[[Tensor], Tensor]:
    """Eq. 7 on the learned model: action sequences ``(B, N, H, n_u)`` → ``−return (B, N)``."""

    def cost(actions: Tensor) -> Tensor:
        return -model.imagine_return(belief, actions)

    return cost


class FullCEM:
    """Receding-horizon CEM over the full ``H × n_u`` action space (App. E).

    ``reset()`` at every episode start; ``act(belief)`` plans without a graph.
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
        planner = PlannerConfig(
            horizon=config.horizon,
            action_lb=env.action_lb,
            action_ub=env.action_ub,
            action_dim=env.action_dim,
            n_sample=config.n_sample,
            n_elite=config.n_elite,
            n_iter=config.n_iter,
            tau=None,
        )
        self.mpc = MPC(planner, 1, device=device, generator=generator)

    def reset(self) -> None:
        self.mpc.reset()

    def act(self, belief: Belief) -> Tensor:
        with torch.no_grad():
            return self.mpc.act(planning_cost(self.model, belief)).first_action


def latent_config(config: LatentConfig) -> LatentPlannerConfig:
    return LatentPlannerConfig(
        latent_dim=config.latent_dim,
        n_sample=config.n_sample,
        n_elite=config.n_elite,
        n_iter=config.n_iter,
        tau=config.tau,
        init_std=config.init_std,
        latent_bound=config.latent_bound,
    )


def make_decoder(
    config: LatentConfig, horizon: int, env: DMCEnv, generator: torch.Generator
) -> ActionDecoder:
    """``f^dec_θ``: ``z (…, latent_dim)`` → ``(…, H, n_u)`` (spec/paper.md §2 architecture)."""
    return ActionDecoder(
        config.latent_dim,
        horizon,
        env.action_dim,
        env.action_lb,
        env.action_ub,
        hidden=config.hidden,
        n_hidden=config.n_hidden,
        generator=generator,
    )


def latent_action(
    model: RSSM,
    decoder: ActionDecoder,
    config: LatentConfig,
    belief: Belief,
    generator: torch.Generator,
) -> Tensor:
    """Latent DCEM's first action ``(B, n_u)`` for beliefs ``(B, ·)``; differentiable
    in the decoder and the model when grad is enabled (τ > 0)."""
    device = belief.h.device
    return latent_plan(
        planning_cost(model, belief),
        decoder,
        latent_config(config),
        belief.h.shape[0],
        device=device,
        generator=generator,
    ).first_action


class LatentDCEM:
    """Latent DCEM (App. E: N=100, k=10, T=10, τ=1) as a controller; no graph."""

    def __init__(
        self,
        model: RSSM,
        decoder: ActionDecoder,
        config: LatentConfig,
        generator: torch.Generator,
    ) -> None:
        self.model = model
        self.decoder = decoder
        self.config = config
        self.generator = generator

    def reset(self) -> None:
        """Latent DCEM starts every solve at the box's centre: nothing to reset."""

    def act(self, belief: Belief) -> Tensor:
        with torch.no_grad():
            return latent_action(self.model, self.decoder, self.config, belief, self.generator)


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
    """

    observations: Tensor
    actions: Tensor
    raw_actions: Tensor
    rewards: Tensor
    beliefs: Belief
    means: Tensor
    plan_seconds: float

    @property
    def total_reward(self) -> float:
        return float(self.rewards.sum())


def run_episode(
    env: DMCEnv,
    model: RSSM,
    act: Act | None,
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
        act: the controller; None takes uniform random actions (seed episodes).
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
    plan_seconds = 0.0
    with torch.no_grad():
        belief = model.observe(None, None, observation.unsqueeze(0).to(device))
    done, step = False, 0
    while not done:
        hs.append(belief.h[0].cpu())
        ss.append(belief.s[0].cpu())
        if act is None:
            mean = torch.zeros(env.action_dim)
            action = lb + (ub - lb) * torch.rand(env.action_dim, generator=generator)
        else:
            start = time.perf_counter()
            mean = act(belief)[0].detach().cpu()
            plan_seconds += time.perf_counter() - start
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
    )
