"""Replay buffer of whole episodes with sequence sampling (App. E, PlaNet).

Episodes are kept as one concatenated tensor per field, so the buffer is its
own checkpoint: ``state_dict`` gives tensors only.
Conventions: an episode of ``L`` control steps has observations
``o_0 … o_L`` ``(L+1, obs_dim)``, actions ``a_0 … a_{L−1}`` ``(L, n_u)`` and
rewards ``r_0 … r_{L−1}`` ``(L,)``, where ``r_t`` follows ``a_t`` taken at ``o_t``.
"""

from __future__ import annotations

import torch
from torch import Tensor

FIELDS = ("observations", "actions", "rewards", "lengths")
"""The buffer's tensors, its ``state_dict`` in this order."""


class EpisodeBuffer:
    """Whole episodes; samples ``batch`` sequences of ``length`` consecutive steps."""

    def __init__(self, obs_dim: int, action_dim: int) -> None:
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.observations = torch.zeros(0, obs_dim)
        self.actions = torch.zeros(0, action_dim)
        self.rewards = torch.zeros(0)
        self.lengths = torch.zeros(0, dtype=torch.int64)

    @property
    def episodes(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def steps(self) -> int:
        """Control steps stored."""
        return int(self.lengths.sum())

    def add(self, observations: Tensor, actions: Tensor, rewards: Tensor) -> None:
        """Append one episode: ``(L+1, obs_dim)``, ``(L, n_u)``, ``(L,)``."""
        length = actions.shape[0]
        if observations.shape != (length + 1, self.obs_dim) or rewards.shape != (length,):
            raise ValueError(
                f"episode shapes {tuple(observations.shape)}, {tuple(actions.shape)}, "
                f"{tuple(rewards.shape)} do not fit obs_dim={self.obs_dim}, "
                f"action_dim={self.action_dim}"
            )
        self.observations = torch.cat((self.observations, observations.float()))
        self.actions = torch.cat((self.actions, actions.float()))
        self.rewards = torch.cat((self.rewards, rewards.float()))
        self.lengths = torch.cat((self.lengths, torch.tensor([length])))

    def _offsets(self) -> tuple[Tensor, Tensor]:
        """Each episode's index of its first action/reward and of its first
        observation ``(episodes,)`` (an episode has ``L + 1`` observations)."""
        step_offset = torch.cumsum(self.lengths, 0) - self.lengths
        return step_offset, step_offset + torch.arange(self.episodes)

    def sample(
        self, batch: int, length: int, generator: torch.Generator, first_episode: int = 0
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``batch`` random windows: observations ``(B, T, obs_dim)``, actions
        ``(B, T, n_u)``, rewards ``(B, T)`` with ``T = length`` (window starts
        uniform over all valid positions of the episodes from ``first_episode`` on)."""
        valid = (self.lengths - length + 1).clamp(min=0)
        valid[:first_episode] = 0
        if int(valid.sum()) == 0:
            raise ValueError(f"no stored episode has {length} steps")
        episode = torch.multinomial(valid.double(), batch, replacement=True, generator=generator)
        start = (
            torch.rand(batch, generator=generator, dtype=torch.float64) * valid[episode].double()
        ).long()
        step_offset, obs_offset = self._offsets()
        window = torch.arange(length)
        step_index = (step_offset[episode] + start).unsqueeze(1) + window
        obs_index = (obs_offset[episode] + start).unsqueeze(1) + window
        return self.observations[obs_index], self.actions[step_index], self.rewards[step_index]

    def sample_steps(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``batch`` control steps drawn uniformly over all stored steps: episode
        indices ``(B,)`` and the step ``t`` within each ``(B,)`` (``0 ≤ t < L``)."""
        if self.steps == 0:
            raise ValueError("the buffer holds no steps")
        flat = torch.randint(self.steps, (batch,), generator=generator)
        ends = torch.cumsum(self.lengths, 0)
        episode = torch.searchsorted(ends, flat, right=True)
        return episode, flat - (ends[episode] - self.lengths[episode])

    def prefixes(self, episodes: Tensor, steps: Tensor) -> tuple[Tensor, Tensor]:
        """The starts of episodes ``(B,)`` up to steps ``(B,)``: observations
        ``(B, T + 1, obs_dim)`` ``o_0 … o_T`` and actions ``(B, T, n_u)``
        ``a_0 … a_{T−1}`` with ``T = max(steps)``; a row past its own step repeats
        its last entry (the caller reads row ``b`` at index ``steps[b]`` only)."""
        length = int(steps.max())
        step_offset, obs_offset = self._offsets()
        window = torch.arange(length + 1)
        obs_index = obs_offset[episodes].unsqueeze(1) + torch.minimum(window, steps.unsqueeze(1))
        last_action = (steps - 1).clamp(min=0).unsqueeze(1)
        step_index = step_offset[episodes].unsqueeze(1) + torch.minimum(
            window[:length], last_action
        )
        return self.observations[obs_index], self.actions[step_index]

    def state_dict(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in FIELDS}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name in FIELDS:
            setattr(self, name, state[name])
