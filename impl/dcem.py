"""CEM and the differentiable cross-entropy method (DCEM), batched (spec/cem.md).

``dcem(f, init_mean, init_std, ...)`` runs Algorithm 1 on ``B`` independent
problems at once. Each iteration samples ``X = clip(μ + σ ⊙ ε, lb, ub)``
(CEM-2), evaluates ``f``, selects elites with a hard top-k (CEM-4, plain CEM)
or the soft LML top-k (CEM-5, DCEM), and refits the diagonal Gaussian
(CEM-6, Props. 1 and 3). With ``tau > 0`` every output is differentiable in
``f``'s parameters, ``init_mean`` and ``init_std`` (CEM-17).

Backward memory is bounded by ``checkpoint=True`` (each iteration is
recomputed during the backward pass: the exact gradient, CEM-26) or by
``grad_iters=K`` (only the last ``K`` iterations are recorded: the truncated
gradient, CEM-27). Without a recorded graph and without a callback, the
iteration reuses its ``(B, N, d)`` work buffers instead of allocating them
afresh (CEM-28).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _recompute

from impl._checks import (
    require_broadcastable,
    require_finite_real,
    require_floating_tensor,
    require_int,
    require_real,
)
from impl.selection import Selection, exponential_elite_weights, soft_weights

DEFAULT_STD_MIN = 1e-6
"""Default σ floor (CEM-11): below it a float32 sample of magnitude up to 8
(ulp 9.5e-7) no longer moves, so the distribution has collapsed anyway."""

MATMUL_MIN_ELEMENTS = 1 << 15
"""Below this many sample entries ``B·N·d`` the update sums products instead of
calling ``bmm``: small ``bmm`` calls still enter a parallel region, whose
barrier costs a whole scheduler slice (~16 ms measured) when another process
holds a core; larger ones are 5–8× faster than the sum of products."""

Objective = Callable[[Tensor], Tensor]
"""``f``: candidates ``(B, N, d)`` → values ``(B, N)``, lower is better."""


@dataclass(frozen=True)
class DCEMResult:
    """What ``dcem`` returns (CEM-15). Shapes for a batch of ``B`` problems;
    a single problem given as ``(d,)`` drops the batch dimension.

    Attributes:
        x: ``(B, d)`` the returned point, ``mean`` or ``best_x`` (CEM-16).
        mean: ``(B, d)`` the final mean ``μ_{T+1}``.
        std: ``(B, d)`` the final standard deviation ``σ_{T+1}``.
        best_x: ``(B, d)`` the lowest-valued sample seen.
        best_value: ``(B,)`` its value (``+∞`` if no finite value was seen).
        n_iter: ``(B,)`` int64, iterations run per problem (CEM-13).
        converged: ``(B,)`` bool, whether the problem met ``tol`` (CEM-13).
    """

    x: Tensor
    mean: Tensor
    std: Tensor
    best_x: Tensor
    best_value: Tensor
    n_iter: Tensor
    converged: Tensor


@dataclass(frozen=True)
class DCEMStep:
    """One iteration as seen by the ``callback`` (CEM-21); always batched.

    Attributes:
        iteration: the iteration index, from 0.
        samples: ``(B, N, d)`` the candidates ``X_t`` (after clipping).
        values: ``(B, N)`` their values ``f(X_t)``.
        weights: ``(B, N)`` the elite weights ``I_t`` the update used; zero
            for a problem not updated in this iteration.
        mean: ``(B, d)`` the mean after this iteration's update.
        std: ``(B, d)`` the standard deviation after the update.
        active: ``(B,)`` bool, the problems that ran this iteration.
    """

    iteration: int
    samples: Tensor
    values: Tensor
    weights: Tensor
    mean: Tensor
    std: Tensor
    active: Tensor


@dataclass(frozen=True)
class _Settings:
    """The validated scalar options of one call."""

    n_sample: int
    n_elite: int
    n_iter: int
    tau: float | None  # None: hard selection
    normalize: bool
    std_min: float
    tol: float | None
    output: Literal["mean", "best"]
    checkpoint: bool
    grad_iters: int | None  # None: every iteration is differentiated
    smoothing: float  # α of CEM-29; 0: the plain update of CEM-6
    elite_temperature: float | None  # λ of CEM-30; None: uniform elite weights


def dcem(
    f: Objective,
    init_mean: Tensor,
    init_std: Tensor | float,
    *,
    n_sample: int = 100,
    n_elite: int = 10,
    n_iter: int = 10,
    tau: float | None = 1.0,
    lb: Tensor | float | None = None,
    ub: Tensor | float | None = None,
    normalize: bool = True,
    std_min: float = DEFAULT_STD_MIN,
    tol: float | None = None,
    output: Literal["mean", "best"] = "mean",
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    callback: Callable[[DCEMStep], None] | None = None,
    validate: bool | None = None,
    checkpoint: bool = False,
    grad_iters: int | None = None,
    smoothing: float = 0.0,
    elite_temperature: float | None = None,
) -> DCEMResult:
    """Minimize ``f`` with DCEM (``tau > 0``) or CEM (``tau`` None or 0).

    Args:
        f: candidates ``(B, N, d)`` → values ``(B, N)``; lower is better.
            Non-finite values rank worst (CEM-12). When no graph is recorded
            and no callback is given, the candidates are a buffer reused by
            the next iteration (CEM-28): ``f`` must not keep a reference to
            its input beyond its return.
        init_mean: ``μ_0``, ``(B, d)`` or ``(d,)`` for a single problem.
        init_std: ``σ_0``, a number or a tensor broadcastable to ``init_mean``.
        n_sample: ``N``, candidates per iteration.
        n_elite: ``k``, elites per iteration, ``0 < k < N``.
        n_iter: ``T``, iterations, ``≥ 1``.
        tau: LML temperature; ``None`` or ``0`` is plain CEM (hard top-k).
        lb, ub: box bounds (number or tensor broadcastable to ``init_mean``);
            samples are clipped to them (CEM-10).
        normalize: standardize values per problem and iteration (CEM-3).
        std_min: the σ floor (CEM-11).
        tol: per-problem convergence threshold (CEM-13); ``None`` runs all
            ``T`` iterations.
        output: ``"mean"`` returns the final mean, ``"best"`` the best sample.
        generator: source of the sampling noise.
        noise: pre-drawn standard-normal noise ``(T, B, N, d)`` (``(T, N, d)``
            for a single problem); overrides ``generator``.
        callback: called with a ``DCEMStep`` after every iteration (CEM-21).
        validate: check tensor values (``init_std ≥ 0``, finite inputs,
            ``lb < ub``); ``None`` checks only on the CPU, where it costs no
            device synchronization (CEM-22).
        checkpoint: recompute each iteration during the backward pass
            instead of keeping its intermediate tensors (CEM-26): the same
            values and the exact gradient, with the backward memory of one
            iteration plus ``O(T·B·d)``, for about one more forward pass of
            compute (``f`` included). ``f`` must be deterministic given its
            input and the global random state.
        grad_iters: ``K ≥ 1``: record the autograd graph of the last ``K``
            iterations only (CEM-27). The earlier iterations run without
            autograd, so the gradient is the truncated one: it treats the
            distribution (and the best sample) entering iteration ``T − K``
            as constants, and ``init_mean``/``init_std`` get no gradient when
            ``K < T``. ``None`` (default) differentiates every iteration.
        smoothing: ``α ∈ [0, 1)``: each update keeps a fraction ``α`` of the
            previous distribution, ``μ_{t+1} = α μ_t + (1 − α) μ̂_{t+1}`` and
            the same for ``σ`` (CEM-29; mbrl-lib's ``alpha``, TD-MPC's
            momentum). 0 (default) is the paper's update.
        elite_temperature: ``λ > 0`` weights the hard elites by
            ``exp(−ṽ/λ)`` (normalized to sum to ``k``) instead of equally: the
            elite weighting of MPPI-style planners (TD-MPC2, TorchRL's
            ``MPPIPlanner``), CEM-30. Needs hard selection (``tau`` None or
            0). ``None`` (default): equal weights, CEM-4.

    Returns:
        A ``DCEMResult`` (CEM-15).
    """
    settings = _settings(
        n_sample,
        n_elite,
        n_iter,
        tau,
        normalize,
        std_min,
        tol,
        output,
        checkpoint,
        grad_iters,
        smoothing,
        elite_temperature,
    )
    require_floating_tensor("init_mean", init_mean)
    if init_mean.dim() not in (1, 2) or init_mean.shape[-1] == 0:
        raise ValueError(
            f"init_mean must have shape (B, d) or (d,) with d >= 1, got {tuple(init_mean.shape)}"
        )
    single = init_mean.dim() == 1
    device, in_dtype = init_mean.device, init_mean.dtype
    dtype = torch.promote_types(in_dtype, torch.float32)  # half inputs: float32 state
    mean = (init_mean.unsqueeze(0) if single else init_mean).to(dtype)
    batch, dim = mean.shape
    std = _broadcast_operand("init_std", init_std, init_mean.shape, mean, dtype)
    lower = None if lb is None else _broadcast_operand("lb", lb, init_mean.shape, mean, dtype)
    upper = None if ub is None else _broadcast_operand("ub", ub, init_mean.shape, mean, dtype)
    if isinstance(lb, (int, float)) and isinstance(ub, (int, float)) and not lb < ub:
        raise ValueError(f"the bounds must satisfy lb < ub; got lb={lb}, ub={ub}")
    draws = _check_noise(noise, settings, single, batch, dim, device)
    _check_generator(generator, device)
    if validate or (validate is None and device.type == "cpu"):
        _validate_values(mean, std, lower, upper)

    shape = (batch, settings.n_sample, dim)
    problem = _Problem(f, settings, lower, upper, in_dtype, torch.arange(batch, device=device))
    best_x = _clip(mean, lower, upper)
    best_value = torch.full((batch,), torch.inf, dtype=dtype, device=device)
    active = torch.ones(batch, dtype=torch.bool, device=device)
    converged = torch.zeros(batch, dtype=torch.bool, device=device)
    used = torch.zeros(batch, dtype=torch.int64, device=device)
    # Work buffers, used only while no autograd graph can hold them (CEM-28).
    reuse = callback is None and not settings.checkpoint
    buffers: _Buffers | None = None
    first_recorded = 0 if settings.grad_iters is None else settings.n_iter - settings.grad_iters
    for iteration in range(settings.n_iter):
        recorded = iteration >= first_recorded
        with contextlib.nullcontext() if recorded else torch.no_grad():
            graph = torch.is_grad_enabled()
            if reuse and graph and (mean.requires_grad or std.requires_grad):
                reuse = False  # the backward pass would need the samples
            if reuse and buffers is None:
                buffers = _Buffers.allocate(shape, dtype, device)
            work = buffers if reuse else None
            eps = None if draws is None else draws[iteration]
            if settings.checkpoint and graph:
                step = _checkpointed_step(
                    problem, eps, generator, shape, mean, std, best_x, best_value, active
                )
            else:
                if eps is None:
                    eps = _draw(shape, generator, dtype, device, work)
                step = _step(problem, eps, mean, std, best_x, best_value, active, work)
            if reuse and graph and step.values.requires_grad:
                reuse = False  # f's parameters require grad: the graph holds the buffers now
        mean, std, best_x, best_value = step.mean, step.std, step.best_x, step.best_value
        used = used + active.to(torch.int64)
        if callback is not None:
            callback(
                DCEMStep(
                    iteration,
                    step.samples,
                    step.values,
                    step.weights * step.applied.unsqueeze(-1),
                    mean,
                    std,
                    active,
                )
            )
        if step.newly_converged is not None:
            converged = converged | step.newly_converged
            active = active & ~step.newly_converged

    point = mean if settings.output == "mean" else best_x
    fields = (point, mean, std, best_x)
    x, mean_out, std_out, best_out = (t.to(in_dtype) for t in fields)
    result = DCEMResult(x, mean_out, std_out, best_out, best_value.to(in_dtype), used, converged)
    return _squeeze(result) if single else result


@dataclass(frozen=True)
class _Problem:
    """What every iteration of one call shares."""

    f: Objective
    settings: _Settings
    lower: Tensor | None  # (B, d)
    upper: Tensor | None  # (B, d)
    in_dtype: torch.dtype  # the dtype f sees
    rows: Tensor  # (B,) int64, 0 … B−1


@dataclass(frozen=True)
class _Buffers:
    """Work buffers of one call, each ``(B, N, d)`` (CEM-28)."""

    noise: Tensor
    samples: Tensor
    scratch: Tensor

    @staticmethod
    def allocate(shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device) -> _Buffers:
        return _Buffers(*(torch.empty(shape, dtype=dtype, device=device) for _ in range(3)))


class _Step(NamedTuple):
    """One iteration's outcome (the state after its update)."""

    samples: Tensor  # (B, N, d)
    values: Tensor  # (B, N)
    weights: Tensor  # (B, N), as selected (not masked by ``applied``)
    applied: Tensor  # (B,) bool
    mean: Tensor  # (B, d)
    std: Tensor  # (B, d)
    best_x: Tensor  # (B, d)
    best_value: Tensor  # (B,)
    newly_converged: Tensor | None  # (B,) bool; None without ``tol``


def _draw(
    shape: tuple[int, int, int],
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device,
    work: _Buffers | None,
) -> Tensor:
    """Standard-normal noise ``(B, N, d)``, into the work buffer when given.

    ``normal_`` on a buffer draws the same numbers as ``torch.randn`` of the
    same shape from the same generator state.
    """
    if work is None:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return work.noise.normal_(generator=generator)


def _step(
    problem: _Problem,
    eps: Tensor,
    mean: Tensor,
    std: Tensor,
    best_x: Tensor,
    best_value: Tensor,
    active: Tensor,
    work: _Buffers | None,
) -> _Step:
    """One iteration: sample (CEM-2), evaluate, select (CEM-4/5), update (CEM-6).

    Shapes: ``eps (B, N, d)``, ``mean, std, best_x (B, d)``,
    ``best_value, active (B,)``. With ``work``, the samples and the
    centred samples are written into its buffers (no graph may hold them).
    """
    settings = problem.settings
    batch, n_sample, _ = eps.shape
    if work is None:
        samples = torch.addcmul(mean.unsqueeze(1), std.unsqueeze(1), eps)
        samples = _clip(samples, problem.lower, problem.upper)
    else:
        samples = torch.addcmul(mean.unsqueeze(1), std.unsqueeze(1), eps, out=work.samples)
        if problem.lower is not None or problem.upper is not None:
            lower, upper = _bounds_of_samples(problem.lower, problem.upper)
            torch.clamp(samples, min=lower, max=upper, out=samples)
    values = _evaluate(
        f=problem.f, candidates=samples.to(problem.in_dtype), shape=(batch, n_sample)
    )
    values = values.to(samples.dtype)
    # Non-finite values rank after every finite one (CEM-12), in one pass.
    ranked = torch.nan_to_num(values, nan=torch.inf, posinf=torch.inf, neginf=torch.inf)
    selection = _select(values, ranked, settings)
    scratch = None if work is None or (torch.is_grad_enabled() and values.requires_grad) else work
    new_mean, new_std = _fit(
        samples, selection.weights, settings.n_elite, settings.std_min, scratch
    )
    if settings.smoothing > 0:  # CEM-29
        new_mean = torch.lerp(new_mean, mean, settings.smoothing)
        new_std = torch.lerp(new_std, std, settings.smoothing).clamp_min(settings.std_min)
    applied = active & selection.valid

    lowest, index = ranked.min(-1)
    better = active & (lowest < best_value)
    best_value = torch.where(better, lowest, best_value)
    best_x = torch.where(better.unsqueeze(-1), samples[problem.rows, index], best_x)

    newly_converged = None
    if settings.tol is not None:
        moved = torch.maximum((new_mean - mean).abs().amax(-1), (new_std - std).abs().amax(-1))
        newly_converged = applied & (moved <= settings.tol)
    mean = torch.where(applied.unsqueeze(-1), new_mean, mean)
    std = torch.where(applied.unsqueeze(-1), new_std, std)
    return _Step(
        samples, values, selection.weights, applied, mean, std, best_x, best_value, newly_converged
    )


def _checkpointed_step(
    problem: _Problem,
    eps: Tensor | None,
    generator: torch.Generator | None,
    shape: tuple[int, int, int],
    mean: Tensor,
    std: Tensor,
    best_x: Tensor,
    best_value: Tensor,
    active: Tensor,
) -> _Step:
    """``_step`` under activation checkpointing (CEM-26).

    The backward pass re-runs the iteration on the same noise: pre-drawn
    noise is an input; noise of the global generator is replayed by the
    checkpoint's own RNG-state stash; a ``generator``'s state is taken before
    the draw, the draw is made from a private copy of it, and the generator
    is then advanced to where the draw left it (as if it had drawn itself).
    """
    state = None if eps is not None or generator is None else generator.get_state()
    after: list[Tensor] = []

    def run(mean: Tensor, std: Tensor, best_x: Tensor, best_value: Tensor) -> _Step:
        noise = eps
        if noise is None:
            source = None
            if state is not None:
                source = torch.Generator(device=mean.device)
                source.set_state(state)
            noise = torch.randn(shape, generator=source, dtype=mean.dtype, device=mean.device)
            if source is not None:
                after[:] = [source.get_state()]
        return _step(problem, noise, mean, std, best_x, best_value, active, None)

    step: _Step = _recompute(
        run, mean, std, best_x, best_value, use_reentrant=False, preserve_rng_state=True
    )
    if generator is not None and after:
        generator.set_state(after[0])
    return step


def _fit(
    samples: Tensor, weights: Tensor, k: int, std_min: float, work: _Buffers | None
) -> tuple[Tensor, Tensor]:
    """The update of CEM-6 (``impl.gaussian.weighted_gaussian_fit``) with
    ``X − μ`` formed once: ``μ = Σ_i (I_i/k) X_i``, ``σ̂² = Σ_i (I_i/k) (X_i − μ)²``.

    Shapes: ``samples (B, N, d)``, ``weights (B, N)`` → ``(B, d)``, ``(B, d)``.
    From ``MATMUL_MIN_ELEMENTS`` sample entries on, both sums are batched
    matrix products (no ``(B, N, d)`` product is formed). With ``work`` (no
    graph recorded), ``(X − μ)²`` is formed in its scratch buffer.
    """
    scaled = weights / k  # (B, N)
    if samples.numel() < MATMUL_MIN_ELEMENTS:
        column = scaled.unsqueeze(-1)  # (B, N, 1)
        mean = (column * samples).sum(-2)
        centred = samples - mean.unsqueeze(-2)
        variance = (column * centred * centred).sum(-2)
        return mean, torch.sqrt(variance.clamp_min(std_min * std_min))
    row = scaled.unsqueeze(1)  # (B, 1, N)
    mean = torch.bmm(row, samples)  # (B, 1, d)
    if work is None:
        squares = (samples - mean).square()
    else:
        squares = torch.sub(samples, mean, out=work.scratch).square_()
    variance = torch.bmm(row, squares).squeeze(1)
    return mean.squeeze(1), torch.sqrt(variance.clamp_min(std_min * std_min))


def _settings(
    n_sample: object,
    n_elite: object,
    n_iter: object,
    tau: object,
    normalize: object,
    std_min: object,
    tol: object,
    output: object,
    checkpoint: object = False,
    grad_iters: object = None,
    smoothing: object = 0.0,
    elite_temperature: object = None,
) -> _Settings:
    """Validate the scalar options (CEM-22)."""
    n_sample = require_int("n_sample", n_sample)
    n_elite = require_int("n_elite", n_elite)
    n_iter = require_int("n_iter", n_iter)
    if not 0 < n_elite < n_sample:
        raise ValueError(
            "n_elite must satisfy 0 < n_elite < n_sample; "
            f"got n_elite={n_elite}, n_sample={n_sample}"
        )
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    temperature = None if tau is None else require_finite_real("tau", tau, minimum=0, strict=False)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {normalize!r}")
    floor = require_finite_real("std_min", std_min, minimum=0, strict=False)
    threshold = None if tol is None else require_finite_real("tol", tol, minimum=0, strict=False)
    if output not in ("mean", "best"):
        raise ValueError(f'output must be "mean" or "best", got {output!r}')
    if not isinstance(checkpoint, bool):
        raise TypeError(f"checkpoint must be a bool, got {checkpoint!r}")
    last = None if grad_iters is None else require_int("grad_iters", grad_iters)
    if last is not None and last < 1:
        raise ValueError(f"grad_iters must be None or >= 1, got {last}")
    alpha = require_finite_real("smoothing", smoothing, minimum=0, strict=False)
    if alpha >= 1:
        raise ValueError(f"smoothing must satisfy 0 <= smoothing < 1, got smoothing={alpha}")
    lam = None
    if elite_temperature is not None:
        lam = require_finite_real("elite_temperature", elite_temperature, minimum=0, strict=True)
        if temperature:
            raise ValueError(
                "elite_temperature weights the elites of hard selection: it needs tau=None "
                f"or tau=0, got tau={temperature}"
            )
    return _Settings(
        n_sample=n_sample,
        n_elite=n_elite,
        n_iter=n_iter,
        tau=temperature or None,  # tau == 0 is plain CEM
        normalize=normalize,
        std_min=floor,
        tol=threshold,
        output="mean" if output == "mean" else "best",
        checkpoint=checkpoint,
        grad_iters=None if last is None or last >= n_iter else last,
        smoothing=alpha,
        elite_temperature=lam,
    )


def _broadcast_operand(
    name: str, value: Tensor | float, target: torch.Size, mean: Tensor, dtype: torch.dtype
) -> Tensor:
    """A number or tensor broadcastable to ``init_mean``'s shape, as ``(B, d)``."""
    if isinstance(value, Tensor):
        require_floating_tensor(name, value)
        require_broadcastable(name, value.shape, target)
        if value.device != mean.device:
            raise ValueError(f"{name} is on {value.device}, init_mean on {mean.device}")
        tensor = value.to(dtype)
    else:
        number = require_real(name, value)
        # A fill, not torch.tensor: no host-to-device copy (CEM-23).
        tensor = torch.full((), number, dtype=dtype, device=mean.device)
    return tensor.expand(target).reshape(mean.shape)


def _check_noise(
    noise: Tensor | None,
    settings: _Settings,
    single: bool,
    batch: int,
    dim: int,
    device: torch.device,
) -> Tensor | None:
    """``noise`` must be ``(T, B, N, d)``, or ``(T, N, d)`` for a single problem."""
    if noise is None:
        return None
    require_floating_tensor("noise", noise)
    expected = (settings.n_iter, batch, settings.n_sample, dim)
    given = (noise.shape[0], 1, *noise.shape[1:]) if single and noise.dim() == 3 else noise.shape
    if tuple(given) != expected:
        wanted = (settings.n_iter, settings.n_sample, dim) if single else expected
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {wanted}")
    if noise.device != device:
        raise ValueError(f"noise is on {noise.device}, init_mean on {device}")
    return noise.reshape(expected)


def _check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    """The generator must draw on ``init_mean``'s device (CEM-20)."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    source = torch.device(generator.device)
    if source.type != device.type or (
        source.index is not None and device.index is not None and source.index != device.index
    ):
        raise ValueError(f"generator is on {source}, init_mean on {device}")


def _validate_values(mean: Tensor, std: Tensor, lower: Tensor | None, upper: Tensor | None) -> None:
    """Value checks of CEM-22 (each one a host synchronization on accelerators)."""
    if not bool(torch.isfinite(mean).all()):
        raise ValueError("init_mean contains non-finite values")
    if not bool(torch.isfinite(std).all()) or bool((std < 0).any()):
        raise ValueError(f"init_std must be finite and >= 0; its minimum is {std.min().item()}")
    if lower is not None and upper is not None and not bool((lower < upper).all()):
        gap = (upper - lower).min().item()
        raise ValueError(f"the bounds must satisfy lb < ub elementwise; min(ub - lb) = {gap}")


def _clip(samples: Tensor, lower: Tensor | None, upper: Tensor | None) -> Tensor:
    """Clip ``(B, N, d)`` or ``(B, d)`` samples to ``(B, d)`` bounds (CEM-10)."""
    if lower is None and upper is None:
        return samples
    if samples.dim() == 3:
        lower, upper = _bounds_of_samples(lower, upper)
    return torch.clamp(samples, min=lower, max=upper)


def _bounds_of_samples(
    lower: Tensor | None, upper: Tensor | None
) -> tuple[Tensor | None, Tensor | None]:
    """``(B, d)`` bounds as ``(B, 1, d)``, to broadcast over the samples."""
    return (
        None if lower is None else lower.unsqueeze(1),
        None if upper is None else upper.unsqueeze(1),
    )


def _evaluate(f: Objective, candidates: Tensor, shape: tuple[int, int]) -> Tensor:
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


def _select(values: Tensor, ranked: Tensor, settings: _Settings) -> Selection:
    """Hard (CEM-4, CEM-30) or soft (CEM-5) elite weights; ``ranked`` is ``values``
    with every non-finite entry replaced by ``+∞``. Shapes ``(B, N)``."""
    if settings.tau is None:
        selection = hard_selection(ranked, settings.n_elite)
        if settings.elite_temperature is None:
            return selection
        weights = exponential_elite_weights(
            values,
            selection.weights,
            settings.n_elite,
            settings.elite_temperature,
            settings.normalize,
        )
        return Selection(weights=weights, valid=selection.valid)
    return soft_weights(
        values, torch.isfinite(values), settings.n_elite, settings.tau, settings.normalize
    )


def hard_selection(ranked: Tensor, k: int) -> Selection:
    """``impl.selection.hard_weights`` in fewer passes, for ``(B, N)`` values
    whose non-finite entries are already ``+∞``: one unsorted ``topk`` and one
    ``scatter``; a row is valid when its ``k`` lowest entries are finite (it
    then has at least ``k`` finite values), read off the ``(B, k)`` top values
    instead of counting the finite entries of the row."""
    top = torch.topk(ranked, k, dim=-1, largest=False, sorted=False)
    weights = torch.zeros_like(ranked).scatter_(-1, top.indices, 1.0)
    return Selection(weights=weights, valid=torch.isfinite(top.values.amax(-1)))


def _squeeze(result: DCEMResult) -> DCEMResult:
    """Drop the batch dimension of a single problem (CEM-1)."""
    return DCEMResult(
        *(
            field.squeeze(0)
            for field in (
                result.x,
                result.mean,
                result.std,
                result.best_x,
                result.best_value,
                result.n_iter,
                result.converged,
            )
        )
    )
