"""One job of the dmc experiment: a (task, seed) run through its phases, resumable.

The job's checkpoint ``checkpoints/<job>.pt`` (through its ``JobContext``)
holds the results of its finished phases and the ``Session`` of the phase in
progress (``None`` between phases). It is written after every training and
evaluation episode, so a killed job continues exactly where it stopped. A
finished phase also leaves its final state in ``checkpoints/<job>.phase<p>_final.pt``
(a ``Session.state_dict``): the next phase starts from it, and the tools of
``checkpoint_tool`` measure it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from validation.dmc.config import DMCConfig
from validation.dmc.train import Session
from validation.harness import JobContext, JobOutput
from validation.training import Budget, Loop, Unit, run_units

PHASE_CONTROLLERS = {
    1: ("full_cem",),
    2: ("full_cem", "latent_dcem", "full_cem_paper"),
    3: ("latent_dcem",),
}
"""The noise-free evaluations at the end of each phase (Fig. 4 compares them), all on
the phase's final model; ``full_cem_paper`` is full CEM at the paper's size."""


@dataclass(frozen=True)
class Job:
    """One run of ``config`` (its task and seed) through ``phases``; the first of
    them starts from ``from_checkpoint`` when given (a ``phase<p-1>_final`` state)."""

    config: DMCConfig
    phases: tuple[int, ...]
    from_checkpoint: str | None
    device: str

    @property
    def name(self) -> str:
        return job_name(self.config.task, self.config.seed)


def job_name(task: str, seed: int) -> str:
    return f"{task}-seed{seed}"


def final_name(job: str, phase: int) -> str:
    """The checkpoint name of ``job``'s state at the end of ``phase``."""
    return f"{job}.phase{phase}_final"


def eval_episodes(config: DMCConfig, name: str) -> int:
    """Final evaluation episodes of controller ``name``."""
    return config.paper_cem_eval_episodes if name == "full_cem_paper" else config.eval_episodes


def run_job(job: Job, ctx: JobContext) -> JobOutput | None:
    """Run (or resume) ``job``'s phases; ``None`` when ``ctx.stop_after``
    episodes of this session ended it first. The result: ``{"task", "seed",
    "phases": [one result per phase, see run_phase]}``."""
    saved = ctx.load_checkpoint(job.name)
    results: list[dict[str, Any]] = [] if saved is None else list(saved["results"])
    current = None if saved is None else saved["session"]
    budget = Budget(ctx.stop_after)
    for phase in job.phases:
        if any(result["phase"] == phase for result in results):
            continue
        session = open_session(job, ctx, phase, current)
        current = None
        result = run_phase(session, ctx, job.name, phase, budget, results)
        if result is None:
            return None
        results.append(result)
        ctx.save_checkpoint(final_name(job.name, phase), session.state_dict())
        ctx.save_checkpoint(job.name, {"results": results, "session": None})
    return JobOutput({"task": job.config.task, "seed": job.config.seed, "phases": results})


def open_session(job: Job, ctx: JobContext, phase: int, current: dict[str, Any] | None) -> Session:
    """The session of ``phase``: ``current`` (its state in the job's checkpoint)
    if given, else the previous phase's final state (or ``job.from_checkpoint``)."""
    device = torch.device(job.device)
    if current is not None:
        session = Session(job.config, device)
        session.load_state_dict(current)
        return session
    if phase == 1:
        session = Session(job.config, device)
    else:
        source = ctx.checkpoint_path(final_name(job.name, phase - 1))
        if phase == job.phases[0] and job.from_checkpoint is not None:
            source = Path(job.from_checkpoint)
        session = Session.load(job.config, device, source)
    session.start_phase(phase)
    return session


def run_phase(
    session: Session,
    ctx: JobContext,
    job: str,
    phase: int,
    budget: Budget,
    results: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """Train and evaluate ``phase``; its result, or None if the budget stopped it first.

    A loop of ``training.run_units`` (VAL-2) whose units are episodes: those
    of training (phase 3: PPO), then the final evaluations; after each, the job's
    checkpoint gets ``{"results": results, "session": session.state_dict()}``.
    """
    config, c = session.config, session.counters
    prefix = f"{config.task} phase {phase}"
    if phase == 3:
        per_iteration = config.ppo.episodes_per_iteration
        total, unit = config.ppo.iterations * per_iteration, "PPO episodes"
        done = c.ppo_iterations * per_iteration + len(session.rollout)
    else:
        steps = config.phase1_env_steps if phase == 1 else config.phase2_env_steps
        total, unit, done = steps, "env steps", min(steps, c.phase_env_steps)
    wanted = {name: eval_episodes(config, name) for name in PHASE_CONTROLLERS[phase]}

    def training() -> bool:
        if phase == 3:
            return c.ppo_iterations < config.ppo.iterations
        return c.phase_env_steps < steps

    def train_episode() -> Unit:
        before, logged = c.phase_env_steps, len(session.metrics)
        row = session.train_episode(phase) if phase < 3 else session.ppo_episode()
        session.metrics.append(row)
        session.tick()
        if not training():
            c.train_seconds = c.phase_seconds
        lines = tuple(  # the training row, then an evaluation's
            f"{prefix} {new['kind']} episode {new['episode']} "
            f"({c.phase_env_steps} env steps, {c.phase_seconds:.0f} s): "
            + " ".join(f"{k}={v}" for k, v in _shown(new).items())
            for new in session.metrics[logged:]
        )
        return Unit(1 if phase == 3 else c.phase_env_steps - before, _shown(row), log=lines)

    def final_evaluation(name: str) -> Unit:
        rewards = c.evals.setdefault(name, [])
        rewards.append(session.evaluate(name).total_reward)
        session.tick()
        line = f"{prefix} final eval {name} {len(rewards)}/{wanted[name]}: reward={rewards[-1]:.3g}"
        return Unit(0, log=(line,))

    def units() -> Iterator[Callable[[], Unit]]:
        while training():
            yield train_episode
        for name, n in wanted.items():
            while len(c.evals.get(name, [])) < n:
                yield partial(final_evaluation, name)

    def state() -> dict[str, Any]:
        return {"results": results, "session": session.state_dict()}

    loop = Loop(job, units(), state, total, done, f"{job} phase {phase} ({unit})")
    if not run_units(loop, ctx, budget):
        return None
    speed = session.speed() if phase == 2 else {}
    session.tick()
    return {
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


def _shown(row: dict[str, float | int | str]) -> dict[str, str]:
    """The figures of a metrics row that the progress bar and log show."""
    return {
        k: f"{v:.3g}"
        for k, v in row.items()
        if k in ("reward", "model_loss", "kl", "decoder_cost", "policy_loss")
        and isinstance(v, float)
    }
