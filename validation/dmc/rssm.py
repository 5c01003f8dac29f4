"""The proprioceptive recurrent state-space model (App. E; Hafner et al. 2018).

PlaNet's RSSM without a pixel decoder:

- deterministic path  ``h_t = GRU(h_{t−1}, MLP([s_{t−1}, a_{t−1}]))`` (200 units);
- stochastic state    prior ``p(s_t | h_t)``, posterior ``q(s_t | h_t, e(o_t))``,
  diagonal Gaussians with a predicted mean and std (floored at ``min_std``);
- observation model   ``p(ô_t | h_t, s_t) = N(μ, I)`` on the standardized
  observation ``ô_t = (o_t − m) / d`` (``m``, ``d`` from the seed episodes,
  ``ModelConfig.normalize_obs``; ``m = 0, d = 1`` without it); the encoder
  reads ``ô_t`` too;
- reward model        ``p(r_{t−1} | h_t, s_t) = N(μ, 1)`` (the reward of the
  action that led into state ``t``);
- every other function a 2-layer 200-unit ReLU MLP (App. E).

Trained on the multi-step variational bound (PlaNet eq. 6) with free nats
and the reward NLL weighted by ``reward_scale`` (PlaNet: 10).
Planning imagines with the prior means, one batched call per horizon step
for all candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from validation.dmc.config import ModelConfig


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """Two ReLU layers of ``hidden`` units and a linear output (App. E)."""
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_out),
    )


@dataclass(frozen=True)
class Belief:
    """The filter's state: deterministic ``h (B, deter)`` and stochastic ``s (B, stoch)``."""

    h: Tensor
    s: Tensor


@dataclass(frozen=True)
class Losses:
    """One evaluation of the bound (means over batch and time)."""

    total: Tensor
    observation: Tensor
    reward: Tensor
    kl: Tensor
    states: Belief
    """Posterior states ``h (B, T, deter)``, ``s (B, T, stoch)`` (for Alg. 2's initial states)."""


class RSSM(nn.Module):
    """Proprioceptive RSSM (App. E) for ``obs_dim`` observations and ``action_dim`` actions.

    ``obs_mean``/``obs_scale`` ``(obs_dim,)`` standardize the observations
    (buffers: saved with the weights; 0 and 1 until ``set_normalization``).
    """

    obs_mean: Tensor
    obs_scale: Tensor

    def __init__(self, obs_dim: int, action_dim: int, config: ModelConfig) -> None:
        super().__init__()
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_scale", torch.ones(obs_dim))
        self.config = config
        c = config
        self.encoder = mlp(obs_dim, c.hidden, c.embed)
        self.pre_gru = nn.Sequential(nn.Linear(c.stoch + action_dim, c.hidden), nn.ReLU())
        self.gru = nn.GRUCell(c.hidden, c.deter)
        self.prior_net = mlp(c.deter, c.hidden, 2 * c.stoch)
        self.posterior_net = mlp(c.deter + c.embed, c.hidden, 2 * c.stoch)
        self.observation_model = mlp(c.deter + c.stoch, c.hidden, obs_dim)
        self.reward_model = mlp(c.deter + c.stoch, c.hidden, 1)
        self.extra_reward_models = nn.ModuleList(
            mlp(c.deter + c.stoch, c.hidden, 1) for _ in range(c.reward_heads - 1)
        )
        """The other heads of the reward ensemble (``reward_heads > 1``; none by default)."""

    # -- pieces ------------------------------------------------------------

    def set_normalization(self, observations: Tensor) -> None:
        """Standardize with the mean and std of ``observations (n, obs_dim)``,
        the std floored at ``config.obs_std_floor``."""
        with torch.no_grad():
            self.obs_mean.copy_(observations.mean(0))
            self.obs_scale.copy_(observations.std(0).clamp(min=self.config.obs_std_floor))

    def standardize(self, observations: Tensor) -> Tensor:
        """``ô = (o − m) / d`` for ``(…, obs_dim)``."""
        return (observations - self.obs_mean) / self.obs_scale

    def _gaussian(self, out: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = out.chunk(2, dim=-1)
        return mean, F.softplus(raw) + self.config.min_std

    def transition(self, belief: Belief, action: Tensor) -> Tensor:
        """``h_t`` from ``h_{t−1}, s_{t−1}`` ``(…, ·)`` and ``a_{t−1} (…, n_u)``."""
        lead = belief.h.shape[:-1]
        x = self.pre_gru(torch.cat((belief.s, action), -1)).reshape(-1, self.config.hidden)
        h: Tensor = self.gru(x, belief.h.reshape(-1, self.config.deter))
        return h.reshape(*lead, self.config.deter)

    def prior(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self._gaussian(self.prior_net(h))

    def posterior(self, h: Tensor, embed: Tensor) -> tuple[Tensor, Tensor]:
        return self._gaussian(self.posterior_net(torch.cat((h, embed), -1)))

    def reward(self, belief: Belief) -> Tensor:
        """Predicted reward of the step that led into ``belief``: ``(…)`` (the
        ensemble's mean with ``reward_heads > 1``)."""
        return self.reward_heads(belief).mean(0)

    def reward_heads(self, belief: Belief) -> Tensor:
        """Every head's predicted reward: ``(reward_heads, …)``."""
        features = torch.cat((belief.h, belief.s), -1)
        heads = [self.reward_model, *self.extra_reward_models]
        return torch.stack([head(features).squeeze(-1) for head in heads])

    def pessimistic_reward(self, belief: Belief, pessimism: float) -> Tensor:
        """``mean − pessimism · std`` over the reward heads ``(…)``; the mean
        alone (``reward``) with one head or ``pessimism`` 0."""
        if pessimism == 0 or len(self.extra_reward_models) == 0:
            return self.reward(belief)
        heads = self.reward_heads(belief)
        return heads.mean(0) - pessimism * heads.std(0)

    def initial(self, batch: int, device: torch.device) -> Belief:
        return Belief(
            torch.zeros(batch, self.config.deter, device=device),
            torch.zeros(batch, self.config.stoch, device=device),
        )

    # -- training ----------------------------------------------------------

    def loss(
        self, observations: Tensor, actions: Tensor, rewards: Tensor, generator: torch.Generator
    ) -> Losses:
        """The negative multi-step variational bound (PlaNet eq. 6) with free nats.

        Args:
            observations: ``(B, T, obs_dim)`` ``o_0 … o_{T−1}``.
            actions: ``(B, T, n_u)``; ``a_t`` is taken at ``o_t`` (the last is unused).
            rewards: ``(B, T)``; ``r_t`` follows ``a_t`` (the last is unused).
            generator: the posterior samples' noise.

        Returns:
            ``Losses`` with ``total = obs NLL + reward_scale · reward NLL +
            max(KL, free_nats)``, each term summed over its dimensions and
            averaged over batch and time (the NLL of the standardized
            observations; ``Losses.reward`` is the unweighted reward NLL).
        """
        batch, length, _ = observations.shape
        observations = self.standardize(observations)
        embed = self.encoder(observations)
        belief = self.initial(batch, observations.device)
        hs, ss, kls = [], [], []
        for t in range(length):
            h = belief.h if t == 0 else self.transition(belief, actions[:, t - 1])
            prior_mean, prior_std = self.prior(h)
            post_mean, post_std = self.posterior(h, embed[:, t])
            noise = torch.randn(post_mean.shape, generator=generator, device=h.device)
            s = post_mean + post_std * noise
            kl = (
                torch.log(prior_std / post_std)
                + (post_std**2 + (post_mean - prior_mean) ** 2) / (2 * prior_std**2)
                - 0.5
            ).sum(-1)
            kls.append(kl)
            hs.append(h)
            ss.append(s)
            belief = Belief(h, s)
        states = Belief(torch.stack(hs, 1), torch.stack(ss, 1))
        features = torch.cat((states.h, states.s), -1)
        obs_nll = 0.5 * ((self.observation_model(features) - observations) ** 2).sum(-1).mean()
        heads = self.reward_heads(Belief(states.h[:, 1:], states.s[:, 1:]))
        reward_nll = 0.5 * ((heads - rewards[:, :-1]) ** 2).mean()  # each head on its own NLL
        kl_term = torch.stack(kls, 1).clamp(min=self.config.free_nats).mean()
        total = obs_nll + self.config.reward_scale * reward_nll + kl_term
        return Losses(total, obs_nll, reward_nll, kl_term, states)

    # -- filtering and planning ----------------------------------------------

    def observe(self, belief: Belief | None, action: Tensor | None, observation: Tensor) -> Belief:
        """One filter step with the posterior mean: ``(h, s)`` after ``a_{t−1}`` and ``o_t``.

        ``belief``/``action`` None starts an episode (``h_0 = 0``); ``observation (B, obs_dim)``.
        """
        if belief is None or action is None:
            h = self.initial(observation.shape[0], observation.device).h
        else:
            h = self.transition(belief, action)
        mean, _ = self.posterior(h, self.encoder(self.standardize(observation)))
        return Belief(h, mean)

    def filter(self, observations: Tensor, actions: Tensor) -> Belief:
        """The controller's beliefs along whole sequences: ``observe`` from a
        fresh start over ``observations (B, T, obs_dim)`` and ``actions
        (B, T − 1, n_u)``; returns ``h (B, T, deter)``, ``s (B, T, stoch)``,
        the belief after observing ``o_t`` at index ``t``."""
        belief = self.observe(None, None, observations[:, 0])
        hs, ss = [belief.h], [belief.s]
        for t in range(1, observations.shape[1]):
            belief = self.observe(belief, actions[:, t - 1], observations[:, t])
            hs.append(belief.h)
            ss.append(belief.s)
        return Belief(torch.stack(hs, 1), torch.stack(ss, 1))

    def open_loop_rewards(self, belief: Belief, actions: Tensor) -> Tensor:
        """Predicted rewards of the real actions ``(B, K, n_u)`` from ``belief
        (B, ·)``, open loop under the prior means: ``(B, K)``, entry ``k`` the
        reward of the ``k+1``-th action (what ``imagine_return`` sums)."""
        state, out = belief, []
        for k in range(actions.shape[1]):
            h = self.transition(state, actions[:, k])
            s, _ = self.prior(h)
            state = Belief(h, s)
            out.append(self.reward(state))
        return torch.stack(out, 1)

    def imagine_return(self, belief: Belief, actions: Tensor, pessimism: float = 0.0) -> Tensor:
        """Predicted return of candidate action sequences from ``belief`` ``(B, ·)``.

        ``actions (B, N, H, n_u)`` → ``(B, N)`` the sum of predicted rewards
        over ``H`` steps under the prior means; one batched model call over
        all ``B·N`` candidates per horizon step. ``pessimism`` ``β``: each
        step's reward is ``mean − β · std`` over the reward heads.
        """
        batch, n_cand, horizon, _ = actions.shape
        state = Belief(
            belief.h.unsqueeze(1).expand(batch, n_cand, belief.h.shape[-1]),
            belief.s.unsqueeze(1).expand(batch, n_cand, belief.s.shape[-1]),
        )
        total = actions.new_zeros(batch, n_cand)
        for t in range(horizon):
            h = self.transition(state, actions[:, :, t])
            s, _ = self.prior(h)
            state = Belief(h, s)
            total = total + self.pessimistic_reward(state, pessimism)
        return total
