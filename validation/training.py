"""The one resumable loop of the reproductions (VAL-2).

``run_units`` runs units of work until all are done, each after a ``Budget``
check (``stop_after``) and followed by the progress bar, a checkpoint when due
and its log lines; a checkpoint holds all the next unit depends on, so a killed
and resumed run equals an uninterrupted one bit for bit. ``train`` runs the
gradient updates of a ``Trainer`` (an experiment's modules, optimizers, plateau
schedulers, generator, loss and validation) on it; dmc its episodes.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from validation.harness import JobContext, progress


@dataclass(frozen=True)
class Schedule:
    """When things happen in a run of ``updates`` updates.

    Attributes:
        updates: gradient updates in all.
        validate_every: validate (and step the schedulers) after every this
            many updates, and after the last.
        checkpoint_every: write a checkpoint after every this many updates
            (a kill loses at most that many).
        clip_norm: each module's gradient norm is clipped to this.
    """

    updates: int
    validate_every: int
    checkpoint_every: int
    clip_norm: float


class Trainer(ABC):
    """The parts of a training run that an experiment supplies.

    ``modules[i]`` is stepped by ``optimizers[i]`` (its gradient clipped on
    its own); ``schedulers[j]`` (ReduceLROnPlateau) steps on the ``j``-th
    metric of ``validate``; ``generator`` is the run's noise (saved in
    checkpoints).
    """

    modules: Sequence[nn.Module]
    optimizers: Sequence[torch.optim.Optimizer]
    schedulers: Sequence[torch.optim.lr_scheduler.ReduceLROnPlateau]
    generator: torch.Generator

    def use_adam(self, lr: float, patience: int, factor: float) -> None:
        """Set ``optimizers``: Adam at ``lr`` for each module; ``schedulers``: a
        ReduceLROnPlateau (``mode="min"``, ``patience``, ``factor``) for each optimizer."""
        self.optimizers = [torch.optim.Adam(module.parameters(), lr=lr) for module in self.modules]
        self.schedulers = [
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", patience=patience, factor=factor
            )
            for opt in self.optimizers
        ]

    def start(self) -> None:  # noqa: B027 - optional hook
        """Work before the first update of a fresh run (not of a resumed one)."""

    @abstractmethod
    def loss(self, step: int) -> Tensor:
        """The losses ``(S,)`` of update ``step + 1``; their sum is back-propagated."""

    @abstractmethod
    def validate(self, step: int) -> list[float]:
        """The metrics (lower is better) that the schedulers step on, after ``step`` updates."""

    def after_validation(self, step: int, metrics: Sequence[float]) -> dict[str, str]:
        """Record a validation (after the schedulers stepped); the progress bar's postfix."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """The experiment's own state for checkpoints (``weights_only``-loadable)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what ``extra_state`` saved."""

    def state_dict(self, step: int, seconds: float) -> dict[str, Any]:
        return {
            "step": step,
            "seconds": seconds,
            "modules": [module.state_dict() for module in self.modules],
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "schedulers": [sched.state_dict() for sched in self.schedulers],
            "generator": self.generator.get_state(),
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> tuple[int, float]:
        """Restore a checkpoint of ``state_dict``; its ``(step, seconds)``."""
        for module, saved in zip(self.modules, state["modules"], strict=True):
            module.load_state_dict(saved)
        for opt, saved in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(saved)
        for sched, saved in zip(self.schedulers, state["schedulers"], strict=True):
            sched.load_state_dict(saved)
        self.generator.set_state(state["generator"])
        self.load_extra_state(state["extra"])
        return int(state["step"]), float(state["seconds"])


def apply_update(trainer: Trainer, losses: Tensor, clip_norm: float) -> None:
    """One gradient step: back-propagate ``losses.sum()``, clip each module's
    gradient norm to ``clip_norm``, step each optimizer."""
    for opt in trainer.optimizers:
        opt.zero_grad(set_to_none=True)
    losses.sum().backward()  # type: ignore[no-untyped-call]
    for module, opt in zip(trainer.modules, trainer.optimizers, strict=True):
        nn.utils.clip_grad_norm_(module.parameters(), clip_norm)
        opt.step()


@dataclass
class Budget:
    """Units this session may still run (``None``: no limit): a job's ``ctx.stop_after``."""

    remaining: int | None = None

    def take(self) -> bool:
        """Count one more unit; ``False`` when none was left."""
        if self.remaining is not None:
            self.remaining -= 1
        return self.remaining is None or self.remaining >= 0


@dataclass(frozen=True)
class Unit:
    """What one unit of work did: its ``advance`` of the progress bar, the bar's
    new ``postfix`` (``None``: as it was), whether a ``checkpoint`` is due, and
    its ``log`` lines for ``progress.log`` (written after the checkpoint)."""

    advance: int = 1
    postfix: dict[str, str] | None = None
    checkpoint: bool = True
    log: tuple[str, ...] = ()


@dataclass(frozen=True)
class Loop:
    """Resumable work (VAL-2): ``units`` yields the units still to run, lazily (the
    next is chosen after the last ran); ``state()`` is the checkpoint of ``job``; the
    progress bar counts ``done`` of ``total`` steps of ``description``."""

    job: str
    units: Iterable[Callable[[], Unit]]
    state: Callable[[], Mapping[str, Any]]
    total: int
    done: int
    description: str


def run_units(loop: Loop, ctx: JobContext, budget: Budget) -> bool:
    """Run ``loop``'s units until all are done (``True``) or ``budget`` is spent
    before one (``False``, as a kill would: nothing saved beyond the last checkpoint)."""
    with progress(loop.total, loop.description, initial=loop.done, position=ctx.position) as bar:
        for work in loop.units:
            if not budget.take():
                return False
            unit = work()
            bar.update(unit.advance)
            if unit.postfix is not None:
                bar.set_postfix(unit.postfix)
            if unit.checkpoint:
                ctx.save_checkpoint(loop.job, loop.state())
            for line in unit.log:
                ctx.log(line)
    return True


def train(trainer: Trainer, schedule: Schedule, ctx: JobContext, job: str) -> float | None:
    """Run (or resume from ``job``'s checkpoint in ``ctx``) to ``schedule.updates``.

    A unit of ``run_units`` is one update, then a validation (and scheduler
    steps) when due; a checkpoint follows every ``checkpoint_every``-th but the
    last. Returns the seconds spent training over all sessions, or ``None``
    when the run reached ``ctx.stop_after`` updates first.
    """
    saved = ctx.load_checkpoint(job)
    if saved is None:
        trainer.start()
        step, seconds = 0, 0.0
    else:
        step, seconds = trainer.load_state_dict(saved)
    origin = time.perf_counter() - seconds  # the clock of all sessions

    def update() -> Unit:
        nonlocal step
        apply_update(trainer, trainer.loss(step), schedule.clip_norm)
        step += 1
        postfix = None
        if step % schedule.validate_every == 0 or step == schedule.updates:
            metrics = trainer.validate(step)
            for scheduler, metric in zip(trainer.schedulers, metrics, strict=True):
                scheduler.step(metric)
            postfix = trainer.after_validation(step, metrics)
        due = step % schedule.checkpoint_every == 0 and step < schedule.updates
        return Unit(postfix=postfix, checkpoint=due)

    def state() -> dict[str, Any]:
        return trainer.state_dict(step, time.perf_counter() - origin)

    updates = (update for _ in range(step, schedule.updates))
    loop = Loop(job, updates, state, schedule.updates, step, job)
    budget = Budget(None if ctx.stop_after is None else ctx.stop_after - step)
    return time.perf_counter() - origin if run_units(loop, ctx, budget) else None
