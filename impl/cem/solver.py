"""The batched CEM/DCEM solver: a fold of ``step`` over the iterations (spec/cem.md)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from impl._checks import number_in_dtype, require_callable, require_optional_bool
from impl.cem.differentiation import records, run_checkpointed
from impl.cem.inputs import (
    batched_mean,
    batched_noise,
    batched_proposals,
    bound_inward,
    broadcast_operand,
    check_generator,
    validate_values,
)
from impl.cem.memory import BufferPolicy, WorkBuffers
from impl.cem.result import DCEMResult, DCEMStep
from impl.cem.samplers import Box, GaussianSampler, NoiseSource, PreDrawnNoise, WhiteNoise
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
    elites: Tensor | None = None,
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
        elites: ``(B, K, d)`` (``(K, d)`` for a single problem) candidates
            that join the first iteration only, clipped to the box: the kept
            elites of a previous solve, e.g. shifted by a controller (CEM-39).
        callback: called with a ``DCEMStep`` after every iteration (CEM-21).
        validate: value checks of CEM-22; ``None`` checks on the CPU only.

    Returns:
        A ``DCEMResult`` (CEM-15).

    Raises:
        TypeError, ValueError: bad arguments, before ``f`` is called (CEM-22).
    """
    require_callable("f", f)
    require_callable("callback", callback, optional=True)
    inputs = check_inputs(
        init_mean, init_std, options, lb, ub, generator, proposals, elites, validate
    )
    mean, single, in_dtype, box = inputs.mean, inputs.single, inputs.in_dtype, inputs.box
    std, extra, first_kept = inputs.std, inputs.proposals, inputs.elites
    generator = inputs.generator
    batch, dim = mean.shape
    device = mean.device
    shape = (batch, options.n_sample, dim)
    source = _noise_source(noise, sampler, single, shape, options.n_iter)
    source.check(options.n_iter, shape, device)
    if options.reuse_buffers and callback is not None:
        raise ValueError(
            "reuse_buffers=True hands f buffers that the next iteration overwrites; the "
            "callback would see them overwritten too: pass callback=None or reuse_buffers=False"
        )

    problem = Problem(
        f=f,
        noise=source,
        selector=selector_for(options),
        update=GaussianUpdate(options.n_elite, options.std_min, options.smoothing, options.std_max),
        box=box,
        proposals=extra,
        tol=options.tol,
        shape=shape,
        in_dtype=in_dtype,
        rows=torch.arange(batch, device=device),
        sampler=GaussianSampler(options.sampling),
        n_kept=options.n_kept,
    )
    tau_grad = isinstance(options.tau, Tensor) and options.tau.requires_grad
    grad_inputs = tau_grad or box.requires_grad
    grad_inputs = grad_inputs or any(t is not None and t.requires_grad for t in (extra, first_kept))
    if isinstance(source, PreDrawnNoise):
        grad_inputs = grad_inputs or source.noise.requires_grad
    policy = BufferPolicy(options.reuse_buffers, shape, mean.dtype, device, grad_inputs)

    state = initial_state(mean, std, box, first_kept)
    last = options.n_iter - 1
    for iteration in range(options.n_iter):
        with contextlib.nullcontext() if records(options, iteration) else torch.no_grad():
            size = options.population(iteration)  # N_t (CEM-40)
            # a decayed population does not fill the (B, N, d) buffers: none this iteration
            work = policy.buffers(state.mean, state.std) if size == options.n_sample else None
            add_mean = options.mean_candidate and iteration == last  # CEM-41
            outcome = _iterate(
                problem, state, iteration, (batch, size, dim), generator, work, options, add_mean
            )
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
    sample = None
    if options.output == "sample":  # CEM-42: one more draw, from the generator
        eps = torch.randn((batch, 1, dim), generator=generator, dtype=mean.dtype, device=device)
        sample = problem.sampler(state.mean, state.std, eps, box)[:, 0]
    result = _result(state, options, in_dtype, sample)
    return result.squeezed() if single else result


@dataclass(frozen=True)
class SolveInputs:
    """A solve's arguments in batched form, checked (CEM-22); shapes for ``B``
    problems of dimension ``d``.

    Attributes:
        mean: ``μ_0 (B, d)`` in the state's dtype (float32 for half precision).
        single: whether ``init_mean`` was one problem ``(d,)``.
        in_dtype: ``init_mean``'s dtype, in which ``f`` sees candidates (CEM-24).
        std: ``σ_0 (B, d)``.
        lower, upper: the bounds ``(B, d)`` as given, broadcast (``None``: unbounded).
        box: the bounds the solve clips to: ``lower``/``upper`` moved inward to
            values of ``in_dtype`` (CEM-24).
        proposals, elites: ``(B, P, d)``, ``(B, K, d)`` in the state's dtype,
            clipped to ``box`` (CEM-34, CEM-39).
        generator: the checked generator.
    """

    mean: Tensor
    single: bool
    in_dtype: torch.dtype
    std: Tensor
    lower: Tensor | None
    upper: Tensor | None
    box: Box
    proposals: Tensor | None
    elites: Tensor | None
    generator: torch.Generator | None


def check_inputs(
    init_mean: Tensor,
    init_std: Tensor | float,
    options: CEMOptions,
    lb: Tensor | float | None,
    ub: Tensor | float | None,
    generator: torch.Generator | None,
    proposals: Tensor | None,
    elites: Tensor | None,
    validate: bool | None,
) -> SolveInputs:
    """The checks of CEM-22 that ``solve`` and ``CompiledSolve`` share, and the
    batched inputs they give (arguments as ``solve``'s). Raises ``TypeError`` or
    ``ValueError`` naming the bad argument; the value checks (non-finite
    values, ``lb < ub``) run when ``validate`` is true, or is ``None`` on the CPU."""
    if not isinstance(options, CEMOptions):
        raise TypeError(f"options must be an impl.options.CEMOptions, got {type(options).__name__}")
    require_optional_bool("validate", validate)
    mean, single, in_dtype = batched_mean(init_mean)
    batch, dim = mean.shape
    if options.std_min > torch.finfo(mean.dtype).max:
        raise ValueError(
            f"std_min={options.std_min} overflows the solver's {mean.dtype} "
            f"(largest {torch.finfo(mean.dtype).max:g})"
        )
    device = mean.device
    target = init_mean.shape
    std = broadcast_operand("init_std", init_std, target, mean)
    lower = None if lb is None else broadcast_operand("lb", lb, target, mean)
    upper = None if ub is None else broadcast_operand("ub", ub, target, mean)
    # Numbers are checked here, on the host; a missing bound is ∓∞ (CEM-10): so a NaN
    # bound, lb = +∞ or ub = −∞ leaves no point in the box.
    low = lb if isinstance(lb, (int, float)) else -math.inf if lb is None else None
    high = ub if isinstance(ub, (int, float)) else math.inf if ub is None else None
    if low is not None and high is not None and not low < high:
        raise ValueError(f"the bounds must satisfy lb < ub; got lb={lb}, ub={ub}")
    inward_lower, inward_upper = lower, upper
    if in_dtype != mean.dtype:  # f sees a narrower dtype than the state's (CEM-24)
        if lower is not None:
            inward_lower = bound_inward(lower, in_dtype, upper=False)
        if upper is not None:
            inward_upper = bound_inward(upper, in_dtype, upper=True)
        if isinstance(lb, (int, float)) and isinstance(ub, (int, float)):
            _require_a_value_between(lb, ub, mean.dtype, in_dtype)
    box = Box(inward_lower, inward_upper)
    extra = None
    if proposals is not None:
        extra = box.clip(batched_proposals(proposals, single, batch, dim, device).to(mean.dtype))
    first_kept = None
    if elites is not None:
        given = batched_proposals(elites, single, batch, dim, device, name="elites")
        first_kept = box.clip(given.to(mean.dtype))
    generator = check_generator(generator, device)
    if isinstance(options.tau, Tensor) and options.tau.device != device:
        raise ValueError(f"tau is on {options.tau.device}, init_mean on {device}")
    if validate or (validate is None and device.type == "cpu"):
        candidates = {"proposals": extra, "elites": first_kept}
        validate_values(mean, std, inward_lower, inward_upper, candidates)
    return SolveInputs(mean, single, in_dtype, std, lower, upper, box, extra, first_kept, generator)


def require_noise_source(sampler: object) -> NoiseSource:
    """``sampler`` if it is a noise source (CEM-33), else a ``TypeError`` naming it."""
    if not all(hasattr(sampler, name) for name in ("check", "draw", "uses_generator")):
        raise TypeError(
            "sampler must be a NoiseSource (WhiteNoise, PreDrawnNoise, ColoredNoise or an "
            f"object with check, draw and uses_generator), got {type(sampler).__name__}; "
            "a noise tensor goes in noise="
        )
    return sampler  # type: ignore[return-value]


def _require_a_value_between(
    lb: float, ub: float, state_dtype: torch.dtype, in_dtype: torch.dtype
) -> None:
    """``ValueError`` when fewer than two values of ``in_dtype`` lie in the box
    of number bounds ``[lb, ub]`` as the solver holds it: cast to the state's
    dtype, then moved inward by ``bound_inward``, it must still satisfy
    ``lb < ub`` (CEM-22, CEM-24). Scalars on the CPU: no device synchronization."""
    low, high = (
        bound_inward(
            torch.tensor(number_in_dtype(value, state_dtype), dtype=state_dtype),
            in_dtype,
            upper=is_upper,
        )
        for value, is_upper in ((lb, False), (ub, True))
    )
    if not bool(low < high):
        held = "no" if bool(low > high) else f"only one ({float(low)!r})"
        raise ValueError(
            f"{held} {in_dtype} value lies in the box [lb, ub] = [{lb}, {ub}]: "
            "candidates in init_mean's dtype need lb < ub after rounding inward"
        )


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
    if sampler is None:
        return WhiteNoise()
    return require_noise_source(sampler)


def _iterate(
    problem: Problem,
    state: CEMState,
    iteration: int,
    shape: tuple[int, int, int],
    generator: torch.Generator | None,
    work: WorkBuffers | None,
    options: CEMOptions,
    add_mean: bool,
) -> StepOutcome:
    """Draw iteration ``iteration``'s noise of ``shape = (B, N_t, d)`` and step,
    checkpointed when asked and a graph is recorded (CEM-26; a recomputed
    iteration uses no buffer)."""
    checkpointed = options.checkpoint and torch.is_grad_enabled()
    buffers = None if checkpointed else work

    def iterate(state: CEMState, source: torch.Generator | None) -> StepOutcome:
        eps = problem.noise.draw(
            iteration,
            shape,
            state.mean.dtype,
            state.mean.device,
            source,
            None if buffers is None else buffers.noise,
        )
        return step(problem, state, eps, buffers, add_mean)

    if checkpointed:
        return run_checkpointed(iterate, state, generator, problem.noise.uses_generator)
    return iterate(state, generator)


def _result(
    state: CEMState, options: CEMOptions, in_dtype: torch.dtype, sample: Tensor | None
) -> DCEMResult:
    """The final state as a ``DCEMResult`` in ``init_mean``'s dtype (CEM-15,
    CEM-24); ``x`` is the mean, the best sample, or ``sample`` (CEM-16, CEM-42)."""
    point = {"mean": state.mean, "best": state.best_x}.get(options.output, sample)
    if point is None:
        raise ValueError(f"no point for output={options.output!r}")
    x, mean, std, best_x, best_value = (
        t.to(in_dtype) for t in (point, state.mean, state.std, state.best_x, state.best_value)
    )
    elites = state.kept if options.n_kept > 0 and state.kept is not None else state.mean[:, :0]
    elites = elites.reshape(state.mean.shape[0], -1, state.mean.shape[1]).to(in_dtype)
    return DCEMResult(x, mean, std, best_x, best_value, state.n_iter, state.converged, elites)
