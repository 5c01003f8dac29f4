"""The opt-in compiled solve: ``torch.compile`` of a whole solve (spec/cem.md, CEM-44 – CEM-47).

``CompiledSolve(f, options)`` is ``impl.cem.solve(f, ·, ·, options, ...)``
traced once, as one graph, for its ``f``, its ``options`` and the shapes of
its first call (``fullgraph=True``, static shapes): the ``T`` iterations are
unrolled, and every branch of the eager code that reads no tensor value is
taken at trace time. Nothing in the graph reads a value on the host (the
LML solver runs its fixed schedule under ``torch.compile``, LML-19; ``tol``
is a mask, CEM-13), so on CUDA the same graph can be captured in a CUDA
graph (``mode="reduce-overhead"``).

What stays outside the graph, eagerly, on every call (CEM-45):

- the argument checks of CEM-22, the value checks included (on the CPU by
  default, as ``solve``'s);
- the random draws: the noise of every iteration is drawn from the caller's
  generator *before* the graph runs, iteration by iteration, exactly as the
  eager solve draws it (same source, same shapes, same order), so a
  compiled solve and an eager one from the same generator state see the same
  noise and leave the generator in the same state. The graph reads the
  noise as a ``(T, B, N, d)`` input.

A ``CompiledSolve`` keeps the graphs ``torch.compile`` made for it; a call
with other shapes, dtypes, device, grad mode or arguments given/omitted
traces (and compiles) another one. ``torch.compile``'s own limits apply:
``torch._dynamo.config.recompile_limit`` graphs per ``CompiledSolve`` (each
traces a private copy of the graph function's code), and a
cold compile with the default ``inductor`` backend takes tens of seconds to
minutes on a CPU (``benchmarks/compiled.py`` measures it, and the on-disk
cache that a second process reuses).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import torch
from torch import Tensor

from impl._checks import require_callable
from impl.cem.inputs import (
    batched_noise,
)
from impl.cem.result import DCEMResult
from impl.cem.samplers import Box, GaussianSampler, NoiseSource, PreDrawnNoise, WhiteNoise
from impl.cem.solver import check_inputs, require_noise_source, solve
from impl.cem.step import Objective
from impl.options import CEMOptions

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
"""``torch.compile``'s ``mode``; ``"reduce-overhead"`` and ``"max-autotune"``
capture CUDA graphs on CUDA (CEM-46)."""

CUDA_GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})
"""The modes whose graphs ``torch.compile`` replays as CUDA graphs on CUDA."""


@dataclass(frozen=True)
class CompileSettings:
    """How ``torch.compile`` is called (always ``fullgraph=True``, ``dynamic=False``).

    Attributes:
        backend: ``"inductor"`` (the default: generated kernels), or another
            registered backend: ``"aot_eager"`` traces forward and backward
            graphs without generating code, ``"eager"`` only traces (both
            check the tracing in seconds, CEM-44).
        mode: ``None`` (``torch.compile``'s default) or a ``CompileMode``;
            with ``"reduce-overhead"`` on CUDA the graph is replayed as a
            CUDA graph, whose outputs the next replay overwrites: results
            are then copied out of the graph's memory (CEM-46).
    """

    backend: str = "inductor"
    mode: CompileMode | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.backend, str) or not self.backend:
            raise TypeError(f"backend must be a non-empty str, got {self.backend!r}")
        if self.mode is not None and self.mode not in CompileMode.__args__:  # type: ignore[attr-defined]
            raise ValueError(
                f"mode must be None or one of {', '.join(CompileMode.__args__)}, "  # type: ignore[attr-defined]
                f"got {self.mode!r}"
            )

    @property
    def cuda_graphs(self) -> bool:
        """Whether the mode replays CUDA graphs (on CUDA inputs)."""
        return self.mode in CUDA_GRAPH_MODES

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``torch.compile(fn)`` as these settings say, on a private copy of
        ``fn``'s code: ``torch.compile`` keeps its graphs per code object, so
        each compiled function gets its own ``recompile_limit``. With
        ``inductor``, the mode's options plus ``INDUCTOR_OPTIONS``."""
        private = types.FunctionType(
            fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
        )
        if self.backend != "inductor":
            compiled: Callable[..., Any] = torch.compile(
                private, fullgraph=True, dynamic=False, backend=self.backend, mode=self.mode
            )
            return compiled
        from torch._inductor import list_mode_options

        options = {**list_mode_options(self.mode or "default", False), **INDUCTOR_OPTIONS}
        compiled = torch.compile(
            private, fullgraph=True, dynamic=False, backend="inductor", options=options
        )
        return compiled


INDUCTOR_OPTIONS: dict[str, Any] = {"inplace_buffers": False}
"""Inductor options of every compiled solve (CEM-44). ``inplace_buffers``
off: with it (inductor's default in torch 2.13), the compiled backward of a
DCEM solve of 3 or more iterations gave gradients 10 % off on the CPU (the
forward exact; ``backend="aot_eager"`` and ``"aot_eager_decomp_partition"``
exact; ``allow_buffer_reuse=False`` also avoids it), which
``tests/test_compiled.py`` checks with one inductor compile."""


def draw_noise(
    source: NoiseSource,
    options: CEMOptions,
    shape: tuple[int, int, int],
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """The noise of every iteration, ``(T, B, N, d)``, drawn as the eager solve draws it.

    Iteration ``t`` draws ``source.draw(t, (B, N_t, d), ...)`` from
    ``generator``, in order (CEM-40: the first ``N_t`` samples of
    ``noise[t]``; the rest, never read, are 0). A ``WhiteNoise`` draw of a
    full population writes into ``noise[t]`` (``normal_`` there gives the
    numbers ``torch.randn`` would, CEM-28). Shape: ``shape = (B, N, d)``.
    """
    batch, n_sample, dim = shape
    decays = any(options.population(t) < n_sample for t in range(options.n_iter))
    make = torch.zeros if decays else torch.empty
    noise = make((options.n_iter, batch, n_sample, dim), dtype=dtype, device=device)
    for iteration in range(options.n_iter):
        size = options.population(iteration)
        target = noise[iteration, :, :size]
        full = size == n_sample
        drawn = source.draw(
            iteration, (batch, size, dim), dtype, device, generator, target if full else None
        )
        if drawn is not target:
            target.copy_(drawn)
    return noise


def solve_graph(
    f: Objective,
    options: CEMOptions,
    init_mean: Tensor,
    std: Tensor,
    lower: Tensor | None,
    upper: Tensor | None,
    noise: Tensor,
    proposals: Tensor | None,
    elites: Tensor | None,
    sample_eps: Tensor | None,
) -> tuple[Tensor, ...]:
    """What the compiled graph computes: ``solve`` on pre-drawn noise (CEM-44).

    Shapes: ``init_mean, std, lower, upper (B, d)``, ``noise (T, B, N, d)``,
    ``proposals (B, P, d)``, ``elites (B, K, d)``, ``sample_eps (B, 1, d)``
    (``output="sample"``: the draw of CEM-42, from the final mean and std).
    Returns the fields of ``DCEMResult`` in order.
    """
    inner = options.replace(output="mean") if sample_eps is not None else options
    result = solve(
        f,
        init_mean,
        std,
        inner,
        lb=lower,
        ub=upper,
        noise=noise,
        proposals=proposals,
        elites=elites,
        validate=False,
    )
    x = result.x
    if sample_eps is not None:
        sampler = GaussianSampler(options.sampling)
        x = sampler(result.mean, result.std, sample_eps, Box(lower, upper))[:, 0]
    if result.elites is None:  # a solve always sets it (CEM-15)
        raise RuntimeError("impl.cem.solve returned no elites")
    return (
        x,
        result.mean,
        result.std,
        result.best_x,
        result.best_value,
        result.n_iter,
        result.converged,
        result.elites,
    )


class CompiledSolve:
    """``impl.cem.solve`` for one ``f`` and one ``CEMOptions``, compiled (CEM-44 – CEM-47).

    ``CompiledSolve(f, options)(init_mean, init_std, lb=..., generator=g)``
    returns what ``solve(f, init_mean, init_std, options, lb=..., generator=g)``
    returns, up to floating-point rounding (CEM-44), and leaves ``g`` in the
    same state. The first call with a new signature (shapes, dtype, device,
    grad mode, which optional arguments are given) traces and compiles the
    whole ``T``-iteration solve; later calls run the compiled graph.
    Differentiable as the eager solve is (forward + backward are compiled
    together when a graph is recorded, CEM-17).

    Not supported (CEM-47): a ``callback`` (there is no argument for it: it
    would run Python in every iteration; use ``solve``), and
    ``output="sample"`` with a float16/bfloat16 ``init_mean`` (a
    ``ValueError`` at the call).

    Args:
        f: candidates ``(B, M, d)`` → values ``(B, M)``; traced into the graph,
            so it must be traceable by ``torch.compile`` without graph breaks.
        options: the solve's options (CEM-22), fixed for this object.
        sampler: the noise source; default ``WhiteNoise()``. Its draws run
            eagerly, before the graph (CEM-45).
        backend, mode: ``CompileSettings``.
    """

    def __init__(
        self,
        f: Objective,
        options: CEMOptions,
        *,
        sampler: NoiseSource | None = None,
        backend: str = "inductor",
        mode: CompileMode | None = None,
    ) -> None:
        require_callable("f", f)
        if not isinstance(options, CEMOptions):
            raise TypeError(
                f"options must be an impl.options.CEMOptions, got {type(options).__name__}"
            )
        self.f = f
        self.options = options
        self.sampler = WhiteNoise() if sampler is None else require_noise_source(sampler)
        self.settings = CompileSettings(backend, mode)
        self._graph = self.settings.compile(_bind(f, options))

    def __call__(
        self,
        init_mean: Tensor,
        init_std: Tensor | float,
        *,
        lb: Tensor | float | None = None,
        ub: Tensor | float | None = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        proposals: Tensor | None = None,
        elites: Tensor | None = None,
        validate: bool | None = None,
    ) -> DCEMResult:
        """Solve as ``impl.cem.solve`` does (arguments and result as there, CEM-15).

        Shapes: ``init_mean (B, d)`` or ``(d,)``; ``init_std``, ``lb``, ``ub``
        numbers or tensors broadcastable to it; ``noise (T, B, N, d)``
        (``(T, N, d)``), replacing the sampler's draws; ``proposals (B, P, d)``,
        ``elites (B, K, d)`` (``(P, d)``, ``(K, d)`` for a single problem).
        """
        options = self.options
        inputs = check_inputs(
            init_mean, init_std, options, lb, ub, generator, proposals, elites, validate
        )
        mean, single, in_dtype = inputs.mean, inputs.single, inputs.in_dtype
        generator = inputs.generator
        if options.output == "sample" and in_dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f'output="sample" with a {in_dtype} init_mean is not supported by the compiled '
                "solve (its draw is made around the final mean in init_mean's dtype): use "
                "impl.cem.solve"
            )
        batch, dim = mean.shape
        device = mean.device
        shape = (batch, options.n_sample, dim)
        if noise is not None:
            drawn = batched_noise(noise, single, shape, options.n_iter)
        elif isinstance(self.sampler, PreDrawnNoise):
            self.sampler.check(options.n_iter, shape, device)
            drawn = self.sampler.noise
        else:
            self.sampler.check(options.n_iter, shape, device)
            drawn = draw_noise(self.sampler, options, shape, mean.dtype, device, generator)
        sample_eps = None
        if options.output == "sample":  # after the iterations' draws, as solve draws it
            sample_eps = torch.randn(
                (batch, 1, dim), generator=generator, dtype=mean.dtype, device=device
            )
        batched = init_mean.unsqueeze(0) if single else init_mean
        if self.settings.cuda_graphs and device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]
        arguments = (
            batched,
            inputs.std,
            inputs.lower,
            inputs.upper,
            drawn,
            inputs.proposals,
            inputs.elites,
            sample_eps,
        )
        try:
            fields = self._graph(*arguments)
        except torch._dynamo.exc.TorchDynamoException as error:
            raise_traced_error(error, lambda: solve_graph(self.f, options, *arguments))
        if self.settings.cuda_graphs and device.type == "cuda":
            fields = tuple(field.clone() for field in fields)  # out of the graph's memory
        result = DCEMResult(*fields)
        return result.squeezed() if single else result


def raise_traced_error(error: Exception, rerun: Callable[[], object]) -> NoReturn:
    """Re-raise ``error``, a ``torch.compile`` failure, as the error the eager code raises.

    An exception that the traced code raises (a check of CEM-22 at the first
    iteration, e.g. ``f`` returning the wrong shape) reaches the caller as
    Dynamo's ``Unsupported: Observed exception``, which names neither the
    error nor its value. When ``error`` is one of those, ``rerun`` (the traced
    function, eagerly, on the same inputs: it draws nothing) raises the
    original ``ValueError``/``TypeError``, which is raised from ``error``. Any
    other failure (a graph break) is raised as it is: no silent fallback (CEM-44).
    """
    observed = False
    cause: BaseException | None = error
    while cause is not None and not observed:
        observed = isinstance(cause, torch._dynamo.exc.ObservedException)
        cause = cause.__cause__ or cause.__context__
    if not observed:
        raise error
    try:
        with torch.no_grad():
            rerun()
    except (ValueError, TypeError) as original:
        raise original from error
    raise error


def _bind(f: Objective, options: CEMOptions) -> Callable[..., tuple[Tensor, ...]]:
    """``solve_graph`` with ``f`` and ``options`` fixed: the function traced."""

    def graph(
        init_mean: Tensor,
        std: Tensor,
        lower: Tensor | None,
        upper: Tensor | None,
        noise: Tensor,
        proposals: Tensor | None,
        elites: Tensor | None,
        sample_eps: Tensor | None,
    ) -> tuple[Tensor, ...]:
        return solve_graph(
            f, options, init_mean, std, lower, upper, noise, proposals, elites, sample_eps
        )

    return graph
