"""The batched CEM/DCEM solver: a fold of ``step`` over the iterations (spec/cem.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor

from impl.cem.differentiation import records, run_checkpointed
from impl.cem.inputs import (
    batched_mean,
    batched_noise,
    batched_proposals,
    broadcast_operand,
    check_generator,
    validate_values,
)
from impl.cem.memory import BufferPolicy, WorkBuffers
from impl.cem.result import DCEMResult, DCEMStep
from impl.cem.samplers import Box, NoiseSource, PreDrawnNoise, WhiteNoise
from impl.cem.selectors import selector_for
from impl.cem.state import CEMState, initial_state
from impl.cem.step import Objective, Problem, StepOutcome, step
from impl.cem.updates import GaussianUpdate
from impl.options import CEMOptions


def solve(
    f: Objective,
    init_mean: Tensor,
    init_std: Tensor | float,
    options: CEMOptions,
    *,
    lb: Tensor | float | None = None,
    ub: Tensor | float | None = None,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    sampler: NoiseSource | None = None,
    proposals: Tensor | None = None,
    callback: Callable[[DCEMStep], None] | None = None,
    validate: bool | None = None,
) -> DCEMResult:
    """Minimize ``f`` with CEM/DCEM as ``options`` say (spec/cem.md).

    ``impl.dcem.dcem`` is this function with its keyword arguments gathered
    into a ``CEMOptions``.

    Args:
        f: candidates ``(B, M, d)`` → values ``(B, M)``, lower is better;
            ``M = N + P`` with ``P`` proposals (CEM-1, CEM-34). With
            ``options.reuse_buffers`` the candidates may be a buffer the next
            iteration overwrites (CEM-28).
        init_mean: ``μ_0``, ``(B, d)``, or ``(d,)`` for a single problem.
        init_std: ``σ_0``, a number or a tensor broadcastable to ``init_mean``.
        options: the scalar settings, a ``CEMOptions``.
        lb, ub: box bounds, numbers or tensors broadcastable to ``init_mean``
            (CEM-10); tensors may require grad.
        generator: the random source of ``WhiteNoise`` and ``ColoredNoise``.
        noise: pre-drawn standard-normal noise ``(T, B, N, d)`` (``(T, N, d)``
            for a single problem), cast to the state's dtype; may require grad.
            Shorthand for ``sampler=PreDrawnNoise(noise)``.
        sampler: the noise source (``impl.cem.samplers``): ``WhiteNoise()``
            (default), ``PreDrawnNoise``, ``ColoredNoise`` (CEM-33).
        proposals: ``(B, P, d)`` (``(P, d)`` for a single problem) candidates
            that join the ``N`` Gaussian ones at every iteration, clipped to
            the box and ranked with them (CEM-34); may require grad.
        callback: called with a ``DCEMStep`` after every iteration (CEM-21).
        validate: value checks of CEM-22; ``None`` checks on the CPU only.

    Returns:
        A ``DCEMResult`` (CEM-15).

    Raises:
        TypeError, ValueError: bad arguments, before ``f`` is called (CEM-22).
    """
    if not isinstance(options, CEMOptions):
        raise TypeError(f"options must be an impl.options.CEMOptions, got {type(options).__name__}")
    mean, single, in_dtype = batched_mean(init_mean)
    batch, dim = mean.shape
    device = mean.device
    shape = (batch, options.n_sample, dim)
    target = init_mean.shape
    std = broadcast_operand("init_std", init_std, target, mean)
    lower = None if lb is None else broadcast_operand("lb", lb, target, mean)
    upper = None if ub is None else broadcast_operand("ub", ub, target, mean)
    if isinstance(lb, (int, float)) and isinstance(ub, (int, float)) and not lb < ub:
        raise ValueError(f"the bounds must satisfy lb < ub; got lb={lb}, ub={ub}")
    box = Box(lower, upper)
    source = _noise_source(noise, sampler, single, shape, options.n_iter)
    source.check(options.n_iter, shape, device)
    extra = None
    if proposals is not None:
        extra = box.clip(batched_proposals(proposals, single, batch, dim, device).to(mean.dtype))
    generator = check_generator(generator, device)
    if isinstance(options.tau, Tensor) and options.tau.device != device:
        raise ValueError(f"tau is on {options.tau.device}, init_mean on {device}")
    if options.reuse_buffers and callback is not None:
        raise ValueError(
            "reuse_buffers=True hands f buffers that the next iteration overwrites; the "
            "callback would see them overwritten too: pass callback=None or reuse_buffers=False"
        )
    if validate or (validate is None and device.type == "cpu"):
        validate_values(mean, std, lower, upper)

    problem = Problem(
        f=f,
        noise=source,
        selector=selector_for(options),
        update=GaussianUpdate(options.n_elite, options.std_min, options.smoothing),
        box=box,
        proposals=extra,
        tol=options.tol,
        shape=shape,
        in_dtype=in_dtype,
        rows=torch.arange(batch, device=device),
    )
    tau_grad = isinstance(options.tau, Tensor) and options.tau.requires_grad
    grad_inputs = tau_grad or box.requires_grad or (extra is not None and extra.requires_grad)
    if isinstance(source, PreDrawnNoise):
        grad_inputs = grad_inputs or source.noise.requires_grad
    policy = BufferPolicy(options.reuse_buffers, shape, mean.dtype, device, grad_inputs)

    state = initial_state(mean, std, box)
    for iteration in range(options.n_iter):
        with contextlib.nullcontext() if records(options, iteration) else torch.no_grad():
            work = policy.buffers(state.mean, state.std)
            outcome = _iterate(problem, state, iteration, generator, work, options.checkpoint)
            policy.after(outcome.values)
        if callback is not None:
            callback(
                DCEMStep(
                    iteration,
                    outcome.samples,
                    outcome.values,
                    outcome.weights * outcome.applied.unsqueeze(-1),
                    outcome.state.mean,
                    outcome.state.std,
                    state.active,
                )
            )
        state = outcome.state
    result = _result(state, options, in_dtype)
    return result.squeezed() if single else result


def _noise_source(
    noise: Tensor | None,
    sampler: NoiseSource | None,
    single: bool,
    shape: tuple[int, int, int],
    n_iter: int,
) -> NoiseSource:
    """``noise`` (as ``PreDrawnNoise``), else ``sampler``, else ``WhiteNoise()``."""
    if noise is not None and sampler is not None:
        raise ValueError("pass either noise or sampler, not both (noise is a PreDrawnNoise)")
    if noise is not None:
        return PreDrawnNoise(batched_noise(noise, single, shape, n_iter))
    return WhiteNoise() if sampler is None else sampler


def _iterate(
    problem: Problem,
    state: CEMState,
    iteration: int,
    generator: torch.Generator | None,
    work: WorkBuffers | None,
    checkpoint: bool,
) -> StepOutcome:
    """Draw iteration ``iteration``'s noise and step, checkpointed when asked
    and a graph is recorded (CEM-26; a recomputed iteration uses no buffer)."""
    checkpointed = checkpoint and torch.is_grad_enabled()
    buffers = None if checkpointed else work

    def iterate(state: CEMState, source: torch.Generator | None) -> StepOutcome:
        eps = problem.noise.draw(
            iteration,
            problem.shape,
            state.mean.dtype,
            state.mean.device,
            source,
            None if buffers is None else buffers.noise,
        )
        return step(problem, state, eps, buffers)

    if checkpointed:
        return run_checkpointed(iterate, state, generator, problem.noise.uses_generator)
    return iterate(state, generator)


def _result(state: CEMState, options: CEMOptions, in_dtype: torch.dtype) -> DCEMResult:
    """The final state as a ``DCEMResult`` in ``init_mean``'s dtype (CEM-15, CEM-24)."""
    point = state.mean if options.output == "mean" else state.best_x
    x, mean, std, best_x, best_value = (
        t.to(in_dtype) for t in (point, state.mean, state.std, state.best_x, state.best_value)
    )
    return DCEMResult(x, mean, std, best_x, best_value, state.n_iter, state.converged)
