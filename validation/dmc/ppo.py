"""Phase 3: PPO through the latent-DCEM controller (sect. 5.2.2, App. E).

The policy is ``π_θ(a | b) = N(μ_θ(b), σ²)`` with ``μ_θ(b)`` the first action
of latent DCEM from belief ``b`` and ``σ`` fixed at 0.1 (or a learned
state-independent log-std). ``θ`` is the decoder and the reward model (and,
as an option, the transition); the clipped surrogate's gradient flows back
through DCEM's iterations into them. No likelihood fitting happens here.

``μ_θ`` is random (DCEM samples), so each minibatch draws a seed once and
every evaluation of it (the old log-probabilities before the first pass,
and every pass) uses common random numbers: the ratio is exactly 1 before
the first update and a deterministic function of ``θ``.
Advantages: GAE(γ, λ) with a small value network on the observations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from impl.control import ActionDecoder
from validation.dmc.agent import Episode, latent_solve
from validation.dmc.config import LatentConfig, PPOConfig
from validation.dmc.rssm import RSSM, Belief

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

SEED_RANGE = 2**62
"""Per-minibatch DCEM seeds are drawn uniformly below this."""

LOG_RATIO_LIMIT = 20.0
"""``log π_new − log π_old`` is clamped to ``±`` this before the ratio is taken
(VAL-10). The policy's mean is a DCEM solve, which a small parameter step
can move by a large fraction of the action box: with σ = 0.1 the measured
log-ratios reached 354 in the second pass of the cheetah run's first PPO
step, ``exp`` overflowed float32 and its backward (``0 · ∞``) made every
tuned parameter NaN. ``e^20`` is far outside the clip range ``1 ± clip``;
the clamp changes only the gradient of samples beyond it (to zero): those
with a positive advantage are clipped anyway, those with a negative one
would otherwise carry a gradient ``e^20`` or more times the rest."""


class ValueNet(nn.Module):
    """``V(o)``: observation ``(…, obs_dim)`` → ``(…)``; a 2-layer tanh MLP (PPO baseline)."""

    def __init__(self, obs_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 1),
        )

    def forward(self, observation: Tensor) -> Tensor:
        out: Tensor = self.net(observation).squeeze(-1)
        return out


def tuned_parameters(
    model: RSSM, decoder: ActionDecoder, log_std: nn.Parameter, config: PPOConfig
) -> list[nn.Parameter]:
    """The parameters PPO fine-tunes (App. E: decoder and reward; transition and
    the policy's log-std optional)."""
    params: list[nn.Parameter] = []
    if config.tune_decoder:
        params += list(decoder.parameters())
    if config.tune_reward:  # every head of a reward ensemble
        params += list(model.reward_model.parameters())
        params += list(model.extra_reward_models.parameters())
    if config.tune_transition:
        for module in (model.pre_gru, model.gru, model.prior_net):
            params += list(module.parameters())
    if not params:
        raise ValueError("PPO must fine-tune at least one of decoder, reward, transition")
    return [*params, log_std] if config.learn_std else params


def gae(rewards: Tensor, values: Tensor, gamma: float, lam: float) -> Tensor:
    """GAE(γ, λ) advantages ``(L,)`` of one episode; ``values (L+1,)`` (the last
    bootstraps: dm_control episodes end at a time limit, not a terminal state)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(())
    for t in range(rewards.shape[0] - 1, -1, -1):
        delta = rewards[t] + gamma * values[t + 1] - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages


@dataclass(frozen=True)
class Batch:
    """Flattened PPO data: observations ``(n, obs_dim)``, beliefs ``(n, ·)``,
    actions ``(n, n_u)``, advantages and returns ``(n,)``."""

    observations: Tensor
    beliefs: Belief
    actions: Tensor
    advantages: Tensor
    returns: Tensor

    def take(self, index: Tensor) -> Batch:
        return Batch(
            self.observations[index],
            Belief(self.beliefs.h[index], self.beliefs.s[index]),
            self.actions[index],
            self.advantages[index],
            self.returns[index],
        )


def make_batch(episodes: list[Episode], value: ValueNet, config: PPOConfig) -> Batch:
    """Advantages (normalized) and value targets of the collected episodes."""
    observations, hs, ss, actions, advantages, returns = [], [], [], [], [], []
    for episode in episodes:
        with torch.no_grad():
            values = value(episode.observations)
        adv = gae(episode.rewards, values, config.gamma, config.lam)
        observations.append(episode.observations[:-1])
        hs.append(episode.beliefs.h)
        ss.append(episode.beliefs.s)
        actions.append(episode.raw_actions)
        advantages.append(adv)
        returns.append(adv + values[:-1])
    adv_all = torch.cat(advantages)
    adv_all = (adv_all - adv_all.mean()) / (adv_all.std() + 1e-8)
    return Batch(
        torch.cat(observations),
        Belief(torch.cat(hs), torch.cat(ss)),
        torch.cat(actions),
        adv_all,
        torch.cat(returns),
    )


def ppo_update(
    model: RSSM,
    decoder: ActionDecoder,
    value: ValueNet,
    log_std: nn.Parameter,
    optimizer: torch.optim.Optimizer,
    value_optimizer: torch.optim.Optimizer,
    episodes: list[Episode],
    ppo: PPOConfig,
    latent: LatentConfig,
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, float]:
    """One PPO step on the collected ``episodes`` (clipped surrogate, ``passes`` epochs).

    Returns the mean policy loss, value loss, approximate KL and clip
    fraction; ``max_log_ratio``, the largest ``log π_new − log π_old`` of
    any state before the clamp of ``LOG_RATIO_LIMIT`` (float32's ``exp``
    overflows above 88.7); and
    ``skipped_steps``, policy steps not taken because the gradient was not
    finite (VAL-10: a NaN or infinite gradient never reaches the parameters).
    """
    data = make_batch(episodes, value, ppo)
    n = data.actions.shape[0]
    if 0 < ppo.states_per_iteration < n:
        data = data.take(torch.randperm(n, generator=generator)[: ppo.states_per_iteration])
        n = ppo.states_per_iteration
    order = torch.randperm(n, generator=generator)
    chunks = [order[start : start + ppo.minibatch] for start in range(0, n, ppo.minibatch)]
    seeds = [int(torch.randint(SEED_RANGE, (), generator=generator)) for _ in chunks]
    params = tuned_parameters(model, decoder, log_std, ppo)

    def log_prob(part: Batch, seed: int) -> Tensor:
        dcem_generator = torch.Generator(device=device).manual_seed(seed)
        belief = Belief(part.beliefs.h.to(device), part.beliefs.s.to(device))
        # latent DCEM's first action, differentiable in the decoder and the model (τ > 0)
        actions, _ = latent_solve(model, decoder, latent, belief, dcem_generator)
        mean = actions[:, 0].cpu()
        std = log_std.exp().cpu()
        logp = -0.5 * ((part.actions - mean) / std) ** 2 - torch.log(std) - HALF_LOG_2PI
        return logp.sum(-1)

    with torch.no_grad():
        old = [log_prob(data.take(index), seed) for index, seed in zip(chunks, seeds, strict=True)]
    keys = ("policy_loss", "value_loss", "approx_kl", "clip_fraction")
    stats: dict[str, list[float]] = {key: [] for key in keys}
    skipped, max_log_ratio = 0, -math.inf
    for _ in range(ppo.passes):
        for index, seed, old_logp in zip(chunks, seeds, old, strict=True):
            part = data.take(index)
            logp = log_prob(part, seed)
            log_ratio = logp - old_logp
            max_log_ratio = max(max_log_ratio, float(log_ratio.detach().max()))
            ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
            surrogate = torch.min(
                ratio * part.advantages,
                ratio.clamp(1 - ppo.clip, 1 + ppo.clip) * part.advantages,
            )
            policy_loss = -surrogate.mean()
            grads = torch.autograd.grad(policy_loss, params, allow_unused=True)
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
            norm = nn.utils.clip_grad_norm_(params, ppo.grad_clip)
            if bool(torch.isfinite(norm)):  # once per PPO step, not in a solver's loop
                optimizer.step()
            else:
                skipped += 1
            optimizer.zero_grad(set_to_none=True)
            value_loss = 0.5 * ((value(part.observations) - part.returns) ** 2).mean()
            value_optimizer.zero_grad(set_to_none=True)
            value_loss.backward()
            nn.utils.clip_grad_norm_(value.parameters(), ppo.grad_clip)
            value_optimizer.step()
            stats["policy_loss"].append(float(policy_loss.detach()))
            stats["value_loss"].append(float(value_loss.detach()))
            stats["approx_kl"].append(float((old_logp - logp).detach().mean()))
            stats["clip_fraction"].append(float(((ratio - 1).abs() > ppo.clip).float().mean()))
    means = {key: sum(values) / len(values) for key, values in stats.items()}
    return {**means, "max_log_ratio": max_log_ratio, "skipped_steps": float(skipped)}
