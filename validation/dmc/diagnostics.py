"""Per-episode diagnostics of the model and the controllers (issue 13, item 3).

Every function here is deterministic (no generator is drawn from), so adding
a diagnostic never changes a run's trajectory. The quantities, per episode
of ``L`` control steps with real rewards ``r_t`` and filtered beliefs ``b_t``:

- ``model_return``: ``Σ_{t=1}^{L} r̂(b_t)``, the reward head on the beliefs the
  filter reached after each action (the model's return along the real
  episode; compare with ``reward``).
- ``planned_return``: ``Σ_t R̂_t / H``, where ``R̂_t`` is the return the
  controller's plan at step ``t`` was predicted to earn over its ``H`` steps:
  the per-step reward the planner expected, summed over the episode (an
  exploited model shows ``planned_return ≫ reward``).
- ``mean_abs_action``: mean ``|a|`` of the controller's outputs (before noise).
- ``decoder_spread``: how much decoded plans differ over the latent box: the
  standard deviation over ``z`` (a fixed grid-free set of ``SPREAD_SAMPLES``
  points, uniform on ``[−b, b]^m`` from a private seeded generator) of
  ``f^dec(z)``, averaged over the ``H × n_u`` entries. Near 0: the decoder
  has collapsed to one plan; the action range's std (≈ 0.58 on [−1, 1]):
  plans as varied as uniform noise.
- ``open_loop_err_k`` (held-out episodes only): mean ``|r̂ − r_{t+k−1}|`` over
  all ``t`` with ``t + k ≤ L``, where ``r̂`` is the reward of the ``k``-th
  action predicted open loop from ``b_t`` (the belief before ``a_t``) with
  the real actions ``a_t … a_{t+k−1}`` under the prior means, as planning
  sums it; ``r_{t+k−1}`` is the real reward of ``a_{t+k−1}``; ``k = 1 … K``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from impl.control import ActionDecoder
from validation.dmc.agent import Episode
from validation.dmc.rssm import RSSM, Belief

SPREAD_SAMPLES = 256
"""Latent points of ``decoder_spread``."""

SPREAD_SEED = 0
"""Seed of the private generator that draws them (the same points every episode)."""


def model_return(model: RSSM, episode: Episode) -> float:
    """``Σ_{t=1}^{L} r̂(b_t)`` with ``b_t`` the filter's belief after ``a_{t−1}``
    and ``o_t`` (the first belief, before any action, carries no reward)."""
    beliefs = episode.beliefs
    device = model.obs_mean.device
    with torch.no_grad():
        last = model.observe(
            Belief(beliefs.h[-1:].to(device), beliefs.s[-1:].to(device)),
            episode.actions[-1:].to(device),
            episode.observations[-1:].to(device),
        )
        after = Belief(
            torch.cat((beliefs.h[1:].to(device), last.h)),
            torch.cat((beliefs.s[1:].to(device), last.s)),
        )
        return float(model.reward(after).sum())


def decoder_spread(decoder: ActionDecoder, bound: float) -> float:
    """Std over ``SPREAD_SAMPLES`` latents uniform on ``[−bound, bound]^m`` of the
    decoded plans ``(H, n_u)``, averaged over the entries."""
    generator = torch.Generator().manual_seed(SPREAD_SEED)
    z = (2 * torch.rand(SPREAD_SAMPLES, decoder.latent_dim, generator=generator) - 1) * bound
    device = decoder.action_lb.device
    with torch.no_grad():
        plans = decoder(z.to(device))
    return float(plans.std(0).mean())


def episode_diagnostics(
    model: RSSM, decoder: ActionDecoder, episode: Episode, bound: float = 1.0
) -> dict[str, float]:
    """``model_return``, ``planned_return``, ``mean_abs_action``, ``decoder_spread``
    of one episode (see the module docstring); ``H`` is the decoder's horizon."""
    return {
        "model_return": model_return(model, episode),
        "planned_return": float(episode.planned.sum()) / decoder.horizon,
        "mean_abs_action": float(episode.means.abs().mean()),
        "decoder_spread": decoder_spread(decoder, bound),
    }


def open_loop_errors(model: RSSM, episode: Episode, max_k: int) -> Tensor:
    """``(max_k,)``: entry ``k − 1`` the mean absolute error of the reward
    predicted ``k`` steps open loop (see the module docstring); NaN where the
    episode is shorter than ``k``."""
    beliefs, actions, rewards = episode.beliefs, episode.actions, episode.rewards
    length = actions.shape[0]
    device = model.obs_mean.device
    errors = torch.full((max_k,), float("nan"))
    if length == 0:
        return errors
    # every start t = 0 … L−1 at once, K actions ahead (past the end: the last
    # action repeated, and those entries are left out below)
    t = torch.arange(length)
    index = (t.unsqueeze(1) + torch.arange(max_k)).clamp(max=length - 1)  # (L, K)
    with torch.no_grad():
        predicted = model.open_loop_rewards(
            Belief(beliefs.h.to(device), beliefs.s.to(device)), actions[index].to(device)
        ).cpu()  # (L, K): entry (t, k−1) the predicted reward of a_{t+k−1} from b_t
    real = rewards[index]
    valid = (t.unsqueeze(1) + torch.arange(max_k)) < length
    diff = (predicted - real).abs()
    for k in range(max_k):
        rows = valid[:, k]
        if bool(rows.any()):
            errors[k] = diff[rows, k].mean()
    return errors


def held_out_diagnostics(model: RSSM, episode: Episode, max_k: int) -> dict[str, float]:
    """``open_loop_err_1 … open_loop_err_K`` of an episode the model was not trained on."""
    errors = open_loop_errors(model, episode, max_k)
    return {f"open_loop_err_{k + 1}": float(errors[k]) for k in range(max_k)}
