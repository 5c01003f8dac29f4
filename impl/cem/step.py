"""One CEM/DCEM iteration as a function of the state (spec/cem.md, CEM-2–CEM-16, CEM-31).

``step(problem, state, eps)`` samples (CEM-2, CEM-10, CEM-34), evaluates
``f``, selects (CEM-4, CEM-5, CEM-30), updates the distribution (CEM-6,
CEM-29) and the bookkeeping (best sample CEM-16, convergence CEM-13), and
returns the next ``CEMState``. It reads nothing else and changes nothing
else, except the work buffers it is handed (CEM-28).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from impl.cem.memory import WorkBuffers
from impl.cem.samplers import Box, GaussianSampler, NoiseSource, Shape3, join_proposals
from impl.cem.selectors import Selector
from impl.cem.state import CEMState
from impl.cem.updates import GaussianUpdate

Objective = Callable[[Tensor], Tensor]
"""``f``: candidates ``(B, M, d)`` → values ``(B, M)``, lower is better."""


@dataclass(frozen=True)
class Problem:
    """What every iteration of one solve shares.

    Attributes:
        f: the objective.
        noise: the noise source of the Gaussian samples.
        selector: the elite selection.
        update: the distribution update.
        box: the bounds (CEM-10).
        proposals: ``(B, P, d)`` injected candidates, clipped to the box, in
            the state's dtype; or ``None`` (CEM-34).
        tol: the convergence threshold (CEM-13), or ``None``.
        shape: ``(B, N, d)`` of the largest Gaussian draw (CEM-40).
        in_dtype: the dtype ``f`` sees (``init_mean``'s, CEM-24).
        rows: ``(B,)`` int64, ``0 … B−1``.
        sampler: how the Gaussian candidates meet the box (CEM-37).
        n_kept: ``⌊ρ k⌋``, the elites kept into the next iteration (CEM-39).
    """

    f: Objective
    noise: NoiseSource
    selector: Selector
    update: GaussianUpdate
    box: Box
    proposals: Tensor | None
    tol: float | None
    shape: Shape3
    in_dtype: torch.dtype
    rows: Tensor
    sampler: GaussianSampler = field(default_factory=GaussianSampler)
    n_kept: int = 0


class StepOutcome(NamedTuple):
    """One iteration's state after the update, and what the callback sees."""

    state: CEMState
    samples: Tensor  # (B, M, d)
    values: Tensor  # (B, M), in the state's dtype
    weights: Tensor  # (B, M), as selected (not masked by ``applied``)
    applied: Tensor  # (B,) bool, the rows whose update was applied


def evaluate(f: Objective, candidates: Tensor, shape: tuple[int, int]) -> Tensor:
    """Call ``f`` and check its output (CEM-1, CEM-22)."""
    values = f(candidates)
    if not isinstance(values, Tensor):
        raise TypeError(f"f must return a torch.Tensor of values, got {type(values).__name__}")
    if tuple(values.shape) != shape:
        raise ValueError(
            f"f returned values of shape {tuple(values.shape)}; expected {shape} "
            f"(one value per candidate of the {tuple(candidates.shape)} input)"
        )
    if not values.dtype.is_floating_point:
        raise TypeError(f"f must return floating-point values, got {values.dtype}")
    if values.device != candidates.device:
        raise ValueError(
            f"f returned values on {values.device}, candidates are on {candidates.device}"
        )
    return values


def narrow_values(values: Tensor, dtype: torch.dtype) -> Tensor:
    """``f``'s values ``(B, N)`` in the state's ``dtype`` (CEM-24): a finite value past
    that dtype's range saturates at its largest finite magnitude, so that it still
    ranks as a finite value (CEM-12) and is not turned into ``±∞`` by the cast."""
    if values.dtype == dtype or torch.finfo(values.dtype).max <= torch.finfo(dtype).max:
        return values.to(dtype)
    largest = torch.finfo(dtype).max
    return torch.where(values.isfinite(), values.clamp(-largest, largest), values).to(dtype)


def step(
    problem: Problem,
    state: CEMState,
    eps: Tensor,
    work: WorkBuffers | None = None,
    add_mean: bool = False,
) -> StepOutcome:
    """One iteration from ``state`` on the noise ``eps (B, N_t, d)`` (state dtype).

    1. ``X = [clip(μ + σ ⊙ ε, lb, ub), proposals, kept, μ]``  (CEM-2, CEM-10, CEM-34,
       CEM-37, CEM-39, CEM-41): the Gaussian candidates as ``problem.sampler``
       draws them, the proposals, the elites kept from the previous iteration
       (if any), and the clipped mean when ``add_mean``
    2. ``v = f(X)``; non-finite values rank worst        (CEM-12)
    3. ``I = selector(v)``                               (CEM-3–5, CEM-30)
    4. ``(μ', σ') = update(X, I, μ, σ)`` where the row is active and valid,
       else ``(μ, σ)``; ``μ'`` clipped to the box       (CEM-6, CEM-12, CEM-29, CEM-10)
    5. ``best_x``, ``best_value``: the lowest finite value of an active row,
       if lower than the best so far                    (CEM-16);
       ``kept``: the ``n_kept`` lowest-ranked candidates, lowest first (CEM-39)
    6. a row converges when its applied update moved no coordinate of ``μ``
       or ``σ`` by more than ``tol``                     (CEM-13)

    With ``work``, the noise was drawn into its buffer, the centred samples
    of the fit are formed in its scratch buffer (while ``f``'s output records
    no graph), and the samples in its samples buffer when it has one.
    """
    mean, std, active = state.mean, state.std, state.active
    gaussian = problem.sampler(
        mean,
        std,
        eps,
        problem.box,
        out=None if work is None else work.samples,
        noise_is_scratch=work is not None and eps is work.noise,
    )
    samples = join_proposals(gaussian, problem.proposals)
    if state.kept is not None:
        samples = torch.cat((samples, state.kept), dim=1)
    if add_mean:
        samples = torch.cat((samples, problem.box.clip(mean).unsqueeze(1)), dim=1)
    batch, count, _ = samples.shape
    values = evaluate(problem.f, samples.to(problem.in_dtype), (batch, count))
    values = narrow_values(values, samples.dtype)
    # Non-finite values rank after every finite one (CEM-12), in one pass.
    ranked = torch.nan_to_num(values, nan=torch.inf, posinf=torch.inf, neginf=torch.inf)
    selection = problem.selector(values, ranked)
    graph = torch.is_grad_enabled() and selection.weights.requires_grad  # the fit saves X − μ
    plain = samples is gaussian  # the fit may use the (B, N, d) scratch buffer
    scratch = work.scratch if work is not None and plain and not graph else None
    new_mean, new_std = problem.update(samples, selection.weights, mean, std, scratch)
    new_mean = problem.box.clip(new_mean)  # μ' in the box, also after rounding (CEM-10)
    lowest, index = ranked.min(-1)
    better = lowest < state.best_value
    applied = selection.valid
    if problem.tol is not None:  # else every problem is active throughout (CEM-13)
        better = better & active
        applied = applied & active
    best_value = torch.where(better, lowest, state.best_value)
    best_x = torch.where(better.unsqueeze(-1), samples[problem.rows, index], state.best_x)

    converged, still = state.converged, active
    if problem.tol is not None:
        moved = torch.maximum((new_mean - mean).abs().amax(-1), (new_std - std).abs().amax(-1))
        newly = applied & (moved <= problem.tol)
        converged = converged | newly
        still = active & ~newly
    kept = None  # initial elites join the first iteration only (CEM-39)
    if problem.n_kept > 0:
        order = ranked.topk(problem.n_kept, dim=-1, largest=False, sorted=True).indices
        kept = samples.gather(1, order.unsqueeze(-1).expand(-1, -1, samples.shape[-1]))
        old = state.kept
        if problem.tol is not None and old is not None and old.shape == kept.shape:
            kept = torch.where(active.view(-1, 1, 1), kept, old)  # a converged row keeps its own
    if problem.tol is None and selection.all_valid:  # every row applied (CEM-43)
        next_mean, next_std = new_mean, new_std
    else:
        keep = applied.unsqueeze(-1)
        next_mean = torch.where(keep, new_mean, mean)
        next_std = torch.where(keep, new_std, std)
    next_state = CEMState(
        mean=next_mean,
        std=next_std,
        best_x=best_x,
        best_value=best_value,
        n_iter=state.n_iter + active,  # int64 + bool: int64
        converged=converged,
        active=still,
        kept=kept,
    )
    return StepOutcome(next_state, samples, values, selection.weights, applied)
