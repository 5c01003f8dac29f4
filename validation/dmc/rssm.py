"""The proprioceptive recurrent state-space model (App. E; Hafner et al. 2018).

PlaNet's RSSM without a pixel decoder:

- deterministic path  ``h_t = GRU(h_{t−1}, MLP([s_{t−1}, a_{t−1}]))`` (200 units);
- stochastic state    prior ``p(s_t | h_t)``, posterior ``q(s_t | h_t, e(o_t))``,
  diagonal Gaussians with a predicted mean and std (floored at ``min_std``);
- observation model   ``p(o_t | h_t, s_t) = N(μ, I)``;
- reward model        ``p(r_{t−1} | h_t, s_t) = N(μ, 1)`` (the reward of the
  action that led into state ``t``);
- every other function a 2-layer 200-unit ReLU MLP (App. E).

Trained on the multi-step variational bound (PlaNet eq. 6) with free nats.
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
    """Proprioceptive RSSM (App. E) for ``obs_dim`` observations and ``action_dim`` actions."""

    def __init__(self, obs_dim: int, action_dim: int, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encoder = mlp(obs_dim, c.hidden, c.embed)
        self.pre_gru = nn.Sequential(nn.Linear(c.stoch + action_dim, c.hidden), nn.ReLU())
        self.gru = nn.GRUCell(c.hidden, c.deter)
        self.prior_net = mlp(c.deter, c.hidden, 2 * c.stoch)
        self.posterior_net = mlp(c.deter + c.embed, c.hidden, 2 * c.stoch)
        self.observation_model = mlp(c.deter + c.stoch, c.hidden, obs_dim)
        self.reward_model = mlp(c.deter + c.stoch, c.hidden, 1)

    # -- pieces ------------------------------------------------------------

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
        """Predicted reward of the step that led into ``belief``: ``(…)``."""
        out: Tensor = self.reward_model(torch.cat((belief.h, belief.s), -1))
        return out.squeeze(-1)

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
            ``Losses`` with ``total = obs NLL + reward NLL + max(KL, free_nats)``,
            each term summed over its dimensions and averaged over batch and time.
        """
        batch, length, _ = observations.shape
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
        predicted = self.reward_model(features[:, 1:]).squeeze(-1)
        reward_nll = 0.5 * ((predicted - rewards[:, :-1]) ** 2).mean()
        kl_term = torch.stack(kls, 1).clamp(min=self.config.free_nats).mean()
        return Losses(obs_nll + reward_nll + kl_term, obs_nll, reward_nll, kl_term, states)

    # -- filtering and planning ----------------------------------------------

    def observe(self, belief: Belief | None, action: Tensor | None, observation: Tensor) -> Belief:
        """One filter step with the posterior mean: ``(h, s)`` after ``a_{t−1}`` and ``o_t``.

        ``belief``/``action`` None starts an episode (``h_0 = 0``); ``observation (B, obs_dim)``.
        """
        if belief is None or action is None:
            h = self.initial(observation.shape[0], observation.device).h
        else:
            h = self.transition(belief, action)
        mean, _ = self.posterior(h, self.encoder(observation))
        return Belief(h, mean)

    def imagine_return(self, belief: Belief, actions: Tensor) -> Tensor:
        """Predicted return of candidate action sequences from ``belief`` ``(B, ·)``.

        ``actions (B, N, H, n_u)`` → ``(B, N)`` the sum of predicted rewards
        over ``H`` steps under the prior means; one batched model call over
        all ``B·N`` candidates per horizon step.
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
            total = total + self.reward(state)
        return total
