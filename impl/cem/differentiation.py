"""Differentiation policies of a solve (spec/cem.md, CEM-17, CEM-26, CEM-27).

- full (default): every iteration records its autograd graph;
- truncated (``grad_iters=K``): the first ``T − K`` iterations run under
  ``torch.no_grad`` (``records``);
- checkpointed (``checkpoint=True``): each recorded iteration runs under
  activation checkpointing and is recomputed, on the same noise, in the
  backward pass (``run_checkpointed``).

The two compose: ``checkpoint=True, grad_iters=K`` checkpoints the last ``K``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint as _recompute

from impl.cem.state import CEMState
from impl.cem.step import StepOutcome
from impl.options import CEMOptions

Iteration = Callable[[CEMState, torch.Generator | None], StepOutcome]
"""One iteration: draws its noise from the given generator, then steps."""


def records(options: CEMOptions, iteration: int) -> bool:
    """Whether ``iteration`` (from 0) records a graph: ``iteration ≥ T − K`` (CEM-27)."""
    return iteration >= options.first_recorded


def run_checkpointed(
    iterate: Iteration,
    state: CEMState,
    generator: torch.Generator | None,
    uses_generator: bool,
) -> StepOutcome:
    """``iterate(state, generator)`` under activation checkpointing (CEM-26).

    The backward pass re-runs the iteration on the same noise: pre-drawn noise
    is read again; noise of the global generator is replayed by the
    checkpoint's own RNG-state stash; a ``generator``'s state is taken before
    the draw, the draw is made from a private copy of it, and the generator
    is then advanced to where the draw left it (as if it had drawn itself).
    """
    saved = generator.get_state() if generator is not None and uses_generator else None
    after: list[torch.Tensor] = []

    def run(
        mean: torch.Tensor,
        std: torch.Tensor,
        best_x: torch.Tensor,
        best_value: torch.Tensor,
        kept: torch.Tensor | None,
    ) -> StepOutcome:
        source = generator
        if saved is not None:
            source = torch.Generator(device=mean.device)
            source.set_state(saved)
        inputs = CEMState(
            mean, std, best_x, best_value, state.n_iter, state.converged, state.active, kept
        )
        outcome = iterate(inputs, source)
        if saved is not None and source is not None:
            after[:] = [source.get_state()]
        return outcome

    outcome: StepOutcome = _recompute(
        run,
        state.mean,
        state.std,
        state.best_x,
        state.best_value,
        state.kept,
        use_reentrant=False,
        preserve_rng_state=True,
    )
    if generator is not None and after:
        generator.set_state(after[0])
    return outcome
