"""The three phases of App. E as resumable loops over episodes.

Phase 1: PlaNet online — seed episodes of random actions, then episodes with
full-space CEM plus exploration noise, model updates interleaved with the
control steps (Alg. 3).
Phase 2: the same online loop with latent DCEM acting; the model keeps
training and the decoder learns by Alg. 2 from the model batch's posterior
states (the gradient flows through DCEM).
Phase 3: PPO through the latent-DCEM controller; no likelihood fitting.

A ``Session`` holds everything a run depends on; ``state_dict`` is a
``weights_only``-loadable checkpoint (models, optimizers, the replay buffer
as tensors, counters, metrics, every generator and both environments'
random states; ``validation.dmc.run`` writes one after every episode).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from impl.control import ActionDecoder
from validation.dmc.agent import (
    Controller,
    Episode,
    FullCEM,
    LatentDCEM,
    latent_solve,
    run_episode,
)
from validation.dmc.buffer import EpisodeBuffer
from validation.dmc.config import PAPER_CEM, DMCConfig
from validation.dmc.diagnostics import episode_diagnostics, held_out_diagnostics
from validation.dmc.envs import DMCEnv
from validation.dmc.ppo import ValueNet, ppo_update, tuned_parameters
from validation.dmc.rssm import RSSM, Belief
from validation.dmc.state import expand
from validation.harness import load_state, timed

EVAL_SEED_OFFSET = 10_000
"""The evaluation environment's seed is the run's seed plus this (its own episode stream)."""

CONTROLLERS = ("full_cem", "full_cem_paper", "latent_dcem")
"""Names of the controllers on the learned model: full CEM at the run's size
and at the paper's (``PAPER_CEM``), and latent DCEM."""

REINIT_SEED_OFFSET = 3
"""The model re-initialized at phase 2 (``latent.reinit_model``) draws its
weights from ``torch.manual_seed(seed + this)``."""

Row = dict[str, float | int | str]


OPEN_LOOP_STEPS = 12
"""The k-step open-loop reward error is measured for k = 1 … this (= App. E's H)."""


def warmed_up_lr(lr: float, warmup: int, update: int) -> float:
    """The learning rate of the ``update``-th update (from 0): ``lr · min(1, (update + 1) /
    warmup)``, PlaNet's linear warm-up; ``lr`` when ``warmup`` is 0."""
    if warmup <= 0:
        return lr
    return lr * min(1.0, (update + 1) / warmup)


def updates_due(step: int, n_updates: int, length: int) -> int:
    """Updates to run after control step ``step`` so that ``n_updates`` are
    spread evenly over an episode of ``length`` steps (Alg. 3's interleaving)."""
    return (step + 1) * n_updates // length - step * n_updates // length


@dataclass
class Counters:
    """Progress of the run; ``phase_*`` restart at each phase."""

    phase: int = 1
    episodes: int = 0
    env_steps: int = 0
    phase_episodes: int = 0
    phase_env_steps: int = 0
    phase_seconds: float = 0.0
    ppo_iterations: int = 0
    train_seconds: float = 0.0
    """Wall time of the phase's training loop (set when it ends; evaluations excluded)."""
    evals: dict[str, list[float]] = field(default_factory=dict)
    model_updates: int = 0
    """Model updates since the model's initialization (the learning-rate warm-up's clock)."""


class Session:
    """Models, optimizers, buffer, environments and generators of one run."""

    def __init__(self, config: DMCConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.env = DMCEnv(config.task, config.seed, config.time_limit)
        self.eval_env = DMCEnv(config.task, config.seed + EVAL_SEED_OFFSET, config.time_limit)
        env = self.env
        torch.manual_seed(config.seed)
        m = config.model
        self.model = RSSM(env.obs_dim, env.action_dim, m).to(device)
        self.model_opt = torch.optim.Adam(self.model.parameters(), lr=m.lr, eps=m.eps)
        self.buffer = EpisodeBuffer(env.obs_dim, env.action_dim)
        self.cpu_gen = torch.Generator().manual_seed(config.seed)
        self.dev_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
        init_gen = torch.Generator().manual_seed(config.seed + 2)
        self.decoder = ActionDecoder(  # f^dec_θ: z (…, latent_dim) → (…, H, n_u) (spec/paper.md §2)
            config.latent.latent_dim,
            config.cem.horizon,
            env.action_dim,
            env.action_lb,
            env.action_ub,
            hidden=config.latent.hidden,
            n_hidden=config.latent.n_hidden,
            generator=init_gen,
        ).to(device)
        self.decoder_opt = torch.optim.Adam(self.decoder.parameters(), lr=config.latent.lr)
        self.value = ValueNet(env.obs_dim, config.ppo.value_hidden)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=config.ppo.value_lr)
        self.log_std = nn.Parameter(torch.tensor(math.log(config.ppo.std), device=device))
        ppo_params = tuned_parameters(self.model, self.decoder, self.log_std, config.ppo)
        self.ppo_opt = torch.optim.Adam(ppo_params, lr=config.ppo.lr)
        self.counters = Counters()
        self.metrics: list[Row] = []
        self.rollout: list[Episode] = []
        self._last_states: Belief | None = None
        self._clock = time.perf_counter()

    # -- checkpoints ---------------------------------------------------------

    def _parts(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        """The modules and optimizers of a checkpoint, by key."""
        return {
            "model": self.model,
            "model_opt": self.model_opt,
            "decoder": self.decoder,
            "decoder_opt": self.decoder_opt,
            "value": self.value,
            "value_opt": self.value_opt,
            "ppo_opt": self.ppo_opt,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            **{key: part.state_dict() for key, part in self._parts().items()},
            "log_std": self.log_std.detach().clone(),
            "buffer": self.buffer.state_dict(),
            "cpu_gen": self.cpu_gen.get_state(),
            "dev_gen": self.dev_gen.get_state(),
            "env_rng": self.env.get_rng_state(),
            "eval_env_rng": self.eval_env.get_rng_state(),
            "counters": asdict(self.counters),
            "metrics": [dict(row) for row in self.metrics],
            "rollout": [_episode_state(episode) for episode in self.rollout],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, part in self._parts().items():
            part.load_state_dict(state[key])
        with torch.no_grad():
            self.log_std.copy_(state["log_std"])
        self.buffer.load_state_dict(state["buffer"])
        self.cpu_gen.set_state(state["cpu_gen"])
        self.dev_gen.set_state(state["dev_gen"])
        self.env.set_rng_state(state["env_rng"])
        self.eval_env.set_rng_state(state["eval_env_rng"])
        self.counters = _counters(state["counters"])
        self.metrics = [dict(row) for row in state["metrics"]]
        self.rollout = [_episode_from_state(item) for item in state["rollout"]]

    @classmethod
    def load(cls, config: DMCConfig, device: torch.device, source_path: Path) -> Session:
        """A session of ``config`` on ``device`` from the state saved at ``source_path``:
        a full ``state_dict`` restores it exactly, a compact phase boundary
        (``state["compact"]``) through ``load_compact``."""
        session, state = cls(config, device), load_state(source_path)
        (session.load_compact if state.get("compact", False) else session.load_state_dict)(state)
        return session

    def load_compact(self, state: dict[str, Any]) -> None:
        """Start from a compact phase boundary (``validation.dmc.state.compact``):
        the model, decoder, buffer, counters and metrics; fresh optimizers and
        this session's own generators (not an exact resume)."""
        state = expand(state)
        self.model.load_state_dict(state["model"])
        self.decoder.load_state_dict(state["decoder"])
        self.buffer.load_state_dict(state["buffer"])
        self.counters = _counters(state["counters"])
        self.metrics = [dict(row) for row in state["metrics"]]

    def tick(self) -> None:
        """Add the wall time since the last tick to the phase's seconds."""
        now = time.perf_counter()
        self.counters.phase_seconds += now - self._clock
        self._clock = now

    def start_phase(self, phase: int) -> None:
        """Reset the per-phase counters (the models, buffer and metrics carry over);
        at phase 2 with ``latent.reinit_model``, a freshly initialized model and
        optimizer (the observation standardization and the buffer are kept)."""
        c = self.counters
        c.phase, c.phase_episodes, c.phase_env_steps, c.phase_seconds = phase, 0, 0, 0.0
        c.ppo_iterations, c.train_seconds, c.evals = 0, 0.0, {}
        self.rollout = []
        if phase == 2 and self.config.latent.reinit_model:
            m = self.config.model
            torch.manual_seed(self.config.seed + REINIT_SEED_OFFSET)
            fresh = RSSM(self.env.obs_dim, self.env.action_dim, m).to(self.device)
            with torch.no_grad():
                fresh.obs_mean.copy_(self.model.obs_mean)
                fresh.obs_scale.copy_(self.model.obs_scale)
            # the same module object keeps the PPO optimizer's parameter references valid
            self.model.load_state_dict(fresh.state_dict())
            self.model_opt = torch.optim.Adam(self.model.parameters(), lr=m.lr, eps=m.eps)
            c.model_updates = 0
        self._clock = time.perf_counter()

    # -- learning ------------------------------------------------------------

    def model_update(self) -> dict[str, float]:
        """One step on the variational bound (App. E) from a 50 × 50 batch of
        sequences, at the warmed-up learning rate ``lr · min(1, (n + 1) / lr_warmup)``
        for the ``n``-th update (PlaNet's linear warm-up)."""
        m, c = self.config.model, self.counters
        obs, actions, rewards = self._model_batch()
        d = self.device
        losses = self.model.loss(obs.to(d), actions.to(d), rewards.to(d), self.dev_gen)
        self.model_opt.zero_grad(set_to_none=True)
        losses.total.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(self.model.parameters(), m.grad_clip)
        for group in self.model_opt.param_groups:
            group["lr"] = warmed_up_lr(m.lr, m.lr_warmup, c.model_updates)
        self.model_opt.step()
        c.model_updates += 1
        self._last_states = Belief(losses.states.h.detach(), losses.states.s.detach())
        return {
            "model_loss": float(losses.total.detach()),
            "obs_loss": float(losses.observation.detach()),
            "reward_loss": float(losses.reward.detach()),
            "kl": float(losses.kl.detach()),
        }

    def _model_batch(self) -> tuple[Tensor, Tensor, Tensor]:
        """The sequences of a model update: uniform over the buffer, but in phase 2
        with ``latent.phase2_batch_share`` ``ρ > 0``, ``round(ρ · batch)`` of them
        from the episodes collected in phase 2 (once there is one)."""
        m, c = self.config.model, self.counters
        share = self.config.latent.phase2_batch_share
        recent = round(share * m.batch) if c.phase == 2 and c.phase_episodes > 0 else 0
        if recent == 0:
            return self.buffer.sample(m.batch, m.seq_len, self.cpu_gen)
        first = self.buffer.episodes - c.phase_episodes
        parts = [self.buffer.sample(recent, m.seq_len, self.cpu_gen, first_episode=first)]
        if recent < m.batch:
            parts.append(self.buffer.sample(m.batch - recent, m.seq_len, self.cpu_gen))
        obs, actions, rewards = zip(*parts, strict=True)
        return torch.cat(obs), torch.cat(actions), torch.cat(rewards)

    def decoder_update(self) -> float:
        """Alg. 2: latent DCEM from ``latent.batch`` initial states, then a
        gradient step on the decoder through DCEM; returns the mean planned cost.

        The initial states are the controller's own beliefs
        (``latent.start_states = "filtered"``, see ``filtered_starts``) or, as
        Alg. 2 is written, posterior samples of the model's last training batch.
        """
        batch = self.config.latent.batch
        if self.config.latent.start_states == "filtered":
            belief = self.filtered_starts(batch)
        else:
            belief = self._posterior_starts(batch)
        _, costs = latent_solve(self.model, self.decoder, self.config.latent, belief, self.dev_gen)
        cost = costs.mean()
        params = list(self.decoder.parameters())
        grads = torch.autograd.grad(cost, params)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        nn.utils.clip_grad_norm_(params, self.config.latent.grad_clip)
        self.decoder_opt.step()
        self.decoder_opt.zero_grad(set_to_none=True)
        return float(cost.detach())

    def filtered_starts(self, batch: int) -> Belief:
        """``batch`` beliefs ``(batch, ·)`` as the controller sees them: stored
        episodes and a step ``t`` in each drawn uniformly, the episode filtered
        from its start to ``o_t`` by ``RSSM.observe`` (posterior means) under
        the current model, no graph."""
        episodes, steps = self.buffer.sample_steps(batch, self.cpu_gen)
        obs, actions = self.buffer.prefixes(episodes, steps)
        d = self.device
        with torch.no_grad():
            beliefs = self.model.filter(obs.to(d), actions.to(d))
        index = steps.to(d)
        rows = torch.arange(batch, device=d)
        return Belief(beliefs.h[rows, index], beliefs.s[rows, index])

    def _posterior_starts(self, batch: int) -> Belief:
        """Posterior samples of the model's last training batch (Alg. 2 as written)."""
        states = self._last_states
        if states is None:
            m = self.config.model
            obs, actions, rewards = self.buffer.sample(m.batch, m.seq_len, self.cpu_gen)
            d = self.device
            with torch.no_grad():
                states = self.model.loss(
                    obs.to(d), actions.to(d), rewards.to(d), self.dev_gen
                ).states
        h = states.h.reshape(-1, states.h.shape[-1])
        s = states.s.reshape(-1, states.s.shape[-1])
        index = torch.randint(h.shape[0], (batch,), generator=self.cpu_gen).to(self.device)
        return Belief(h[index], s[index])

    # -- controllers -----------------------------------------------------------

    def controller(self, name: str) -> FullCEM | LatentDCEM:
        """The controller ``name`` (one of ``CONTROLLERS``) on the current model, fresh
        for an episode."""
        if name == "full_cem":
            return FullCEM(self.model, self.config.cem, self.env, self.device, self.dev_gen)
        if name == "full_cem_paper":
            return FullCEM(self.model, PAPER_CEM, self.env, self.device, self.dev_gen)
        if name == "latent_dcem":
            return LatentDCEM(self.model, self.decoder, self.config.latent, self.dev_gen)
        raise ValueError(f"unknown controller {name!r}")

    def play(
        self,
        controller: Controller | None,
        *,
        noise: float,
        evaluation: bool = False,
        after_step: Callable[[int], None] | None = None,
    ) -> Episode:
        env = self.eval_env if evaluation else self.env
        return run_episode(
            env,
            self.model,
            controller,
            noise=noise,
            generator=self.cpu_gen,
            device=self.device,
            after_step=after_step,
        )

    def train_episode(self, phase: int) -> Row:
        """Collect one phase-1/2 episode with interleaved updates; add it to the buffer."""
        config, c = self.config, self.counters
        length = self.env.episode_length
        logs: list[dict[str, float]] = []
        decoder_costs: list[float] = []
        self._last_states = None  # Alg. 2 takes its states from this episode's model batches
        if phase == 1 and self.buffer.episodes < config.seed_episodes:
            episode = self.play(None, noise=0.0)
        else:
            controller = self.controller("full_cem" if phase == 1 else "latent_dcem")

            def after_step(step: int) -> None:
                for _ in range(updates_due(step, config.model.updates_per_episode, length)):
                    logs.append(self.model_update())
                if phase == 2:
                    for _ in range(updates_due(step, config.latent.updates_per_episode, length)):
                        decoder_costs.append(self.decoder_update())

            episode = self.play(controller, noise=config.action_noise, after_step=after_step)
        self.buffer.add(episode.observations, episode.actions, episode.rewards)
        seeded = phase == 1 and self.buffer.episodes == config.seed_episodes
        if seeded and config.model.normalize_obs:  # the seed episodes are in: freeze it
            self.model.set_normalization(self.buffer.observations)
        self._count(episode)
        row = self._row(episode, phase, "train")
        if logs:  # the means of model_update's losses
            row.update({key: sum(log[key] for log in logs) / len(logs) for key in logs[0]})
        if decoder_costs:
            row["decoder_cost"] = sum(decoder_costs) / len(decoder_costs)
        seeding = phase == 1 and self.buffer.episodes <= config.seed_episodes
        if config.eval_every > 0 and c.phase_episodes % config.eval_every == 0 and not seeding:
            self.metrics.append(row)
            return self.eval_row(phase, "full_cem" if phase == 1 else "latent_dcem")
        return row

    def evaluate(self, name: str) -> Episode:
        """One noise-free episode of controller ``name`` on the evaluation environment."""
        return self.play(self.controller(name), noise=0.0, evaluation=True)

    def eval_row(self, phase: int, name: str) -> Row:
        """One noise-free episode of ``name`` for the learning curves."""
        episode = self.evaluate(name)
        row = self._row(episode, phase, f"eval_{name}")
        row.update(held_out_diagnostics(self.model, episode, OPEN_LOOP_STEPS))
        return row

    def _row(self, episode: Episode, phase: int, kind: str) -> Row:
        """An episode's metrics row: the counters, its reward and planning time, and
        the diagnostics of ``validation.dmc.diagnostics`` (no generator is used)."""
        row: Row = {
            "phase": phase,
            "kind": kind,
            "episode": self.counters.episodes,
            "env_steps": self.counters.env_steps,
            "reward": episode.total_reward,
            "plan_ms": 1000 * episode.plan_seconds / max(1, episode.actions.shape[0]),
        }
        bound = self.config.latent.latent_bound
        row.update(episode_diagnostics(self.model, self.decoder, episode, bound))
        return row

    def ppo_episode(self) -> Row:
        """Collect one phase-3 episode with the Gaussian policy around latent DCEM;
        after ``episodes_per_iteration`` of them, one PPO update."""
        ppo = self.config.ppo
        controller = self.controller("latent_dcem")
        episode = self.play(controller, noise=float(self.log_std.detach().exp()))
        self.rollout.append(episode)
        self._count(episode)
        row = self._row(episode, 3, "train")
        if len(self.rollout) >= ppo.episodes_per_iteration:
            stats = ppo_update(
                self.model,
                self.decoder,
                self.value,
                self.log_std,
                self.ppo_opt,
                self.value_opt,
                self.rollout,
                ppo,
                self.config.latent,
                self.cpu_gen,
                self.device,
            )
            row.update(stats)
            self.rollout = []
            self.counters.ppo_iterations += 1
            if self.config.eval_every > 0:
                self.metrics.append(row)
                return self.eval_row(3, "latent_dcem")
        return row

    def _count(self, episode: Episode) -> None:
        """Count a collected (training) episode and its environment steps."""
        c = self.counters
        steps = episode.actions.shape[0] * self.env.action_repeat
        c.episodes += 1
        c.phase_episodes += 1
        c.env_steps += steps
        c.phase_env_steps += steps

    def speed(self) -> dict[str, float]:
        """Planning time per control step (ms) of each controller on the same model,
        from the beliefs of the first stored episode."""
        obs = self.buffer.observations[: self.config.speed_steps + 1].to(self.device)
        actions = self.buffer.actions[: self.config.speed_steps].to(self.device)
        with torch.no_grad():
            beliefs = [self.model.observe(None, None, obs[:1])]
            for t in range(1, self.config.speed_steps):
                beliefs.append(self.model.observe(beliefs[-1], actions[t - 1 : t], obs[t : t + 1]))
        result = {}
        for name in CONTROLLERS:
            controller = self.controller(name)
            controller.act(beliefs[0])  # warm-up

            def steps(controller: Controller = controller) -> None:
                for b in beliefs:
                    controller.act(b)

            seconds = timed(steps, 1, warmup=0, device=self.device)
            result[f"{name}_ms"] = 1000 * seconds / len(beliefs)
        return result


def _counters(saved: dict[str, Any]) -> Counters:
    return Counters(**{**saved, "evals": {k: list(v) for k, v in saved["evals"].items()}})


def _episode_state(episode: Episode) -> dict[str, Any]:
    state = {f.name: getattr(episode, f.name) for f in fields(Episode) if f.name != "beliefs"}
    return {**state, "h": episode.beliefs.h, "s": episode.beliefs.s}


def _episode_from_state(state: dict[str, Any]) -> Episode:
    names = [f.name for f in fields(Episode) if f.name != "beliefs"]
    return Episode(beliefs=Belief(state["h"], state["s"]), **{name: state[name] for name in names})
