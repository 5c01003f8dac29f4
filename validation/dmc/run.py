"""Running the phases with checkpoints, and opening a phase from a previous one."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from validation.dmc.config import DMCConfig
from validation.dmc.train import Session
from validation.harness import RunDirectory, progress

PHASE_CONTROLLERS = {
    1: ("full_cem",),
    2: ("full_cem", "latent_dcem", "full_cem_paper"),
    3: ("latent_dcem",),
}
"""The noise-free evaluations at the end of each phase (Fig. 4 compares them), all on
the phase's final model; ``full_cem_paper`` is full CEM at the paper's size."""


def eval_episodes(config: DMCConfig, name: str) -> int:
    """Final evaluation episodes of controller ``name``."""
    return config.paper_cem_eval_episodes if name == "full_cem_paper" else config.eval_episodes


@dataclass
class EpisodeBudget:
    """Episodes this session may still run (None: no limit); ``--stop-after-episodes``."""

    remaining: int | None = None

    def take(self) -> bool:
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


def open_session(
    run: RunDirectory,
    config: DMCConfig,
    device: torch.device,
    phase: int,
    from_checkpoint: Path | None,
) -> Session:
    """The session of ``phase``: its own checkpoint if there is one (``--resume``),
    else the previous phase's final state (or ``from_checkpoint``)."""
    session = Session(config, device)
    state = run.load_checkpoint(f"phase{phase}")
    if state is not None:
        session.load_state_dict(state)
        return session
    if phase > 1:
        source = from_checkpoint or run.checkpoint_path(f"phase{phase - 1}_final")
        if not source.exists():
            raise SystemExit(
                f"phase {phase} starts from phase {phase - 1}'s final checkpoint, and {source} "
                f"does not exist: run --phase {phase - 1} first, or pass --from-checkpoint"
            )
        previous = torch.load(source, map_location="cpu", weights_only=True)
        if previous.get("compact", False):
            session.load_compact(previous)
        else:
            session.load_state_dict(previous)
    session.start_phase(phase)
    return session


def run_phase(session: Session, run: RunDirectory, phase: int, budget: EpisodeBudget) -> bool:
    """Train, evaluate and record ``phase``; False if the budget stopped it first.

    A checkpoint is written after every training and evaluation episode; at
    the end the final state goes to ``checkpoints/phase<p>_final.pt`` (the
    next phase's start) and the result to ``jobs/phase<p>.json``.
    """
    config, c = session.config, session.counters
    job = f"phase{phase}"
    if phase == 3:
        per_iteration = config.ppo.episodes_per_iteration
        total = config.ppo.iterations * per_iteration
        done = c.ppo_iterations * per_iteration + len(session.rollout)
        bar = progress(total, f"{config.task} phase 3 (PPO episodes)", initial=done)
    else:
        steps = config.phase1_env_steps if phase == 1 else config.phase2_env_steps
        bar = progress(
            steps, f"{config.task} phase {phase} (env steps)", initial=min(steps, c.phase_env_steps)
        )

    def finished_training() -> bool:
        if phase == 3:
            return c.ppo_iterations >= config.ppo.iterations
        return c.phase_env_steps >= steps

    with bar:
        while not finished_training():
            if not budget.take():
                return False
            before, logged = c.phase_env_steps, len(session.metrics)
            row = session.train_episode(phase) if phase < 3 else session.ppo_episode()
            session.metrics.append(row)
            session.tick()
            if finished_training():
                c.train_seconds = c.phase_seconds
            run.save_checkpoint(job, session.state_dict())
            bar.update(1 if phase == 3 else c.phase_env_steps - before)
            bar.set_postfix(_shown(row))
            for new in session.metrics[logged:]:  # the training row, then an evaluation's
                run.log(
                    f"{config.task} phase {phase} {new['kind']} episode {new['episode']} "
                    f"({c.phase_env_steps} env steps, {c.phase_seconds:.0f} s): "
                    + " ".join(f"{k}={v}" for k, v in _shown(new).items())
                )
    for name in PHASE_CONTROLLERS[phase]:
        wanted = eval_episodes(config, name)
        if wanted == 0:
            continue
        rewards = c.evals.setdefault(name, [])
        while len(rewards) < wanted:
            if not budget.take():
                return False
            controller = session.controller(name)
            controller.reset()
            rewards.append(session.play(controller, noise=0.0, evaluation=True).total_reward)
            session.tick()
            run.save_checkpoint(job, session.state_dict())
            run.log(
                f"{config.task} phase {phase} final eval {name} "
                f"{len(rewards)}/{wanted}: reward={rewards[-1]:.3g}"
            )
    speed = session.speed() if phase == 2 else {}
    session.tick()
    result: dict[str, Any] = {
        "phase": phase,
        "env_steps": c.phase_env_steps,
        "total_env_steps": c.env_steps,
        "episodes": c.phase_episodes,
        "train_seconds": c.train_seconds,
        "seconds": c.phase_seconds,
        "env_steps_per_second": c.phase_env_steps / max(c.train_seconds, 1e-9),
        "evals": c.evals,
        "eval_median": {k: statistics.median(v) for k, v in c.evals.items() if v},
        "speed_ms": speed,
        "metrics": session.metrics,
    }
    run.save_checkpoint(f"phase{phase}_final", session.state_dict())
    run.save_result(job, result)
    return True


def _shown(row: dict[str, float | int | str]) -> dict[str, str]:
    """The figures of a metrics row that the progress bar and log show."""
    return {
        k: f"{v:.3g}"
        for k, v in row.items()
        if k in ("reward", "model_loss", "kl", "decoder_cost", "policy_loss")
        and isinstance(v, float)
    }
