"""Every path users run, against the float64 oracle ``reference.cem`` (CEM-25, CEM-35).

One Hypothesis property draws a problem, options and a *path* through the
solver, runs ``impl`` on it and ``reference.cem`` on the same noise (cast to
the state's dtype, as CEM-24 says), and compares the results:

- paths: ``dcem`` with no graph and no callback (the default), with a
  callback, with a graph (``init_mean`` requires grad), ``checkpoint=True``,
  ``grad_iters=K``, and ``impl.cem.solve`` with ``reuse_buffers=True``;
- sizes on both sides of ``MATMUL_MIN_ELEMENTS`` (``B·N·d = 1·4096·8``);
- float32 and float64 states, noise of the other dtype;
- tensor bounds, noise and proposals that require grad;
- ``std_min`` down to 0; hard, soft (``τ`` a number or a tensor that may
  require grad) and weighted elites; smoothing; ``tol``.

On a graph path the backward pass runs too, and every gradient is finite
(CEM-17).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from torch import Tensor

from impl.cem import solve
from impl.dcem import MATMUL_MIN_ELEMENTS, DCEMResult, DCEMStep, dcem
from impl.options import CEMOptions
from tests.objectives import Objective, objectives

ref_cem = importlib.import_module("reference.cem")

PATHS = ("default", "callback", "graph", "checkpoint", "grad_iters", "reuse")
FIELDS = ("x", "mean", "std", "best_x", "best_value", "n_iter", "converged")


@dataclass(frozen=True)
class Case:
    """One solve: the problem, the options and the path through the solver."""

    path: str
    objective: Objective
    dtype: torch.dtype  # the state's (init_mean's) dtype
    noise_dtype: torch.dtype
    mean0: np.ndarray  # (B, d)
    std0: np.ndarray  # (B, d)
    noise: np.ndarray  # (T, B, N, d), float64
    lb: np.ndarray | float | None  # (B, d) when an array
    ub: np.ndarray | float | None
    tensor_bounds_grad: bool
    noise_grad: bool
    proposals: np.ndarray | None  # (B, P, d)
    options: CEMOptions

    @property
    def large(self) -> bool:
        return bool(self.noise[0].size >= MATMUL_MIN_ELEMENTS)


@st.composite
def cases(draw: st.DrawFn, path: str, dtype: torch.dtype, large: bool) -> Case:
    if large:  # past MATMUL_MIN_ELEMENTS, kept cheap: one problem, two iterations at most
        batch, n, d, t = 1, 4096, 8, draw(st.integers(1, 2))
    else:
        batch, n, d = draw(st.integers(1, 3)), draw(st.integers(4, 40)), draw(st.integers(1, 4))
        t = draw(st.integers(1, 4 if dtype == torch.float64 else 2))
    k = draw(st.integers(1, min(n - 1, 60)))
    # float32 runs differ from the float64 oracle by rounding; keep the objectives
    # smooth there (a NaN patch's edge could fall between the two).
    kinds = ("quadratic", "rastrigin", "holes") if dtype == torch.float64 else ("quadratic",)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    soft_taus = [0.05, 0.3, 1.0, 3.0] if dtype == torch.float64 else [0.3, 1.0, 3.0]
    tau: float | Tensor | None = draw(st.sampled_from([None, 0.0, *soft_taus]))
    hard = tau is None or tau == 0
    graph = path in ("graph", "checkpoint", "grad_iters")
    if not hard and draw(st.booleans()):  # a tensor τ (CEM-36), learnable on graph paths
        tau = torch.tensor(tau, dtype=torch.float64, requires_grad=graph)
    bounds = draw(st.sampled_from(["none", "numbers", "tensors"]))
    lb: np.ndarray | float | None = None
    ub: np.ndarray | float | None = None
    if bounds == "numbers":
        lb, ub = -1.5, draw(st.sampled_from([0.5, 2.0]))
    elif bounds == "tensors":
        lb = rng.uniform(-2.0, -0.5, (batch, d))
        ub = rng.uniform(0.2, 2.0, (batch, d))
    proposals = None
    if draw(st.booleans()):
        proposals = rng.uniform(-1.5, 1.5, (batch, draw(st.integers(1, 3)), d))
    grad_iters = draw(st.integers(1, t)) if path == "grad_iters" else None
    options = CEMOptions(
        n_sample=n,
        n_elite=k,
        n_iter=t,
        tau=tau,
        normalize=draw(st.booleans()),
        std_min=draw(st.sampled_from([0.0, 1e-6, 1e-2])),
        tol=draw(st.sampled_from([None, 1e-3])),
        smoothing=draw(st.sampled_from([0.0, 0.5])),
        elite_temperature=draw(st.sampled_from([None, 0.3, 3.0])) if hard else None,
        checkpoint=path == "checkpoint",
        grad_iters=grad_iters,
        reuse_buffers=path == "reuse",
    )
    return Case(
        path=path,
        objective=draw(objectives(d, kinds)),
        dtype=dtype,
        noise_dtype=draw(st.sampled_from([torch.float32, torch.float64])),
        mean0=rng.uniform(-1, 1, (batch, d)),
        std0=rng.uniform(0.2, 2.0, (batch, d)),
        noise=rng.standard_normal((t, batch, n, d)),
        lb=lb,
        ub=ub,
        tensor_bounds_grad=bounds == "tensors" and draw(st.booleans()),
        noise_grad=draw(st.booleans()),
        proposals=proposals,
        options=options,
    )


@dataclass
class Inputs:
    """The torch inputs of one case (leaves that may require grad)."""

    mean0: Tensor
    std0: Tensor
    noise: Tensor
    lb: Tensor | float | None
    ub: Tensor | float | None
    proposals: Tensor | None

    tau: float | Tensor | None

    def leaves(self) -> list[Tensor]:
        found = [self.mean0, self.noise, self.lb, self.ub, self.proposals, self.tau]
        return [t for t in found if isinstance(t, Tensor) and t.requires_grad]


def inputs_of(case: Case) -> Inputs:
    graph = case.path in ("graph", "checkpoint", "grad_iters")

    def bound(value: np.ndarray | float | None) -> Tensor | float | None:
        if isinstance(value, np.ndarray):
            tensor = torch.from_numpy(value).to(case.dtype)
            return tensor.requires_grad_(case.tensor_bounds_grad)
        return value

    proposals = None
    if case.proposals is not None:
        proposals = torch.from_numpy(case.proposals).to(case.dtype).requires_grad_(graph)
    return Inputs(
        mean0=torch.from_numpy(case.mean0).to(case.dtype).requires_grad_(graph),
        std0=torch.from_numpy(case.std0).to(case.dtype),
        noise=torch.from_numpy(case.noise).to(case.noise_dtype).requires_grad_(case.noise_grad),
        lb=bound(case.lb),
        ub=bound(case.ub),
        proposals=proposals,
        tau=case.options.tau,
    )


def run_impl(case: Case, inputs: Inputs) -> tuple[DCEMResult, list[DCEMStep]]:
    steps: list[DCEMStep] = []
    if case.path == "reuse" or case.proposals is not None:
        result = solve(
            case.objective.torch,
            inputs.mean0,
            inputs.std0,
            case.options,
            lb=inputs.lb,
            ub=inputs.ub,
            noise=inputs.noise,
            proposals=inputs.proposals,
            callback=steps.append if case.path == "callback" else None,
        )
        return result, steps
    kwargs: dict[str, Any] = case.options.as_kwargs()
    result = dcem(
        case.objective.torch,
        inputs.mean0,
        inputs.std0,
        lb=inputs.lb,
        ub=inputs.ub,
        noise=inputs.noise,
        callback=steps.append if case.path == "callback" else None,
        **kwargs,
    )
    return result, steps


def run_reference(case: Case, b: int) -> Any:
    """The oracle on problem ``b``, from the inputs as the state's dtype rounds them."""

    def rounded(array: np.ndarray) -> np.ndarray:
        through = torch.from_numpy(array).to(case.noise_dtype) if array is case.noise else None
        tensor = through if through is not None else torch.from_numpy(array)
        return tensor.to(case.dtype).double().numpy()

    def bound(value: np.ndarray | float | None) -> np.ndarray | float | None:
        return rounded(value)[b] if isinstance(value, np.ndarray) else value

    opts = case.options
    tau = opts.tau
    if isinstance(tau, Tensor):  # rounded to the compute dtype, as lml does (LML-22)
        tau = float(tau.detach().to(case.dtype))
    return ref_cem.cem(
        case.objective.numpy,
        rounded(case.mean0)[b],
        rounded(case.std0)[b],
        rounded(case.noise)[:, b],
        n_elite=opts.n_elite,
        tau=tau,
        lb=bound(case.lb),
        ub=bound(case.ub),
        normalize=opts.normalize,
        std_min=opts.std_min,
        tol=opts.tol,
        smoothing=opts.smoothing,
        elite_temperature=opts.elite_temperature,
        proposals=None if case.proposals is None else rounded(case.proposals)[b],
    )


def ambiguous(trace: Any, k: int, rtol: float) -> bool:
    """Whether a hard selection of the oracle's run had a (near) tie at its
    boundary between *different* candidates: both choices are right (CEM-4),
    and the runs may part there."""
    for t in range(trace.n_iter):
        values, samples = trace.values[t], trace.samples[t]
        finite = np.isfinite(values)
        if finite.sum() <= k:
            continue
        order = np.argsort(np.where(finite, values, np.inf), kind="stable")
        kth, nxt = values[order[k - 1]], values[order[k]]
        scale = 1 + np.abs(values[finite]).max()
        if nxt - kth <= rtol * scale and not np.array_equal(
            samples[order[k - 1]], samples[order[k]]
        ):
            return True
    return False


assert settings.default is not None  # the profile conftest.py loads
EXAMPLES = max(4, settings.default.max_examples // 6)
"""Examples per (path, dtype, size): 5 in the ``ci`` profile, 166 in ``thorough``."""


@pytest.mark.spec(
    "CEM-35", "CEM-25", "CEM-2", "CEM-10", "CEM-11", "CEM-24", "CEM-28", "CEM-34", "CEM-36"
)
@pytest.mark.parametrize("large", [False, True], ids=["small", "matmul"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_every_path_matches_the_reference(
    path: str, dtype: torch.dtype, large: bool, data: st.DataObject
) -> None:
    case = data.draw(cases(path, dtype, large))
    assert case.large == large
    inputs = inputs_of(case)
    result, steps = run_impl(case, inputs)
    opts = case.options
    float64 = case.dtype == torch.float64
    atol = 1e-9 if float64 else 3e-5
    hard = opts.hard
    for b in range(case.mean0.shape[0]):
        trace = run_reference(case, b)
        scale = 1 + np.abs(trace.means).max() + np.abs(trace.stds).max()
        if hard and ambiguous(trace, opts.n_elite, 0.0 if float64 else 1e-5):
            event("a boundary tie between different candidates: not compared")
            continue
        event(f"compared over {trace.n_iter} iterations")
        for t, step in enumerate(steps[: trace.n_iter]):
            np.testing.assert_allclose(
                step.mean[b].detach().double().numpy(), trace.means[t + 1],
                rtol=0, atol=atol * scale,
            )  # fmt: skip
        final = trace.means[trace.n_iter]
        np.testing.assert_allclose(
            result.mean[b].detach().double().numpy(), final, rtol=0, atol=atol * scale
        )
        np.testing.assert_allclose(
            result.std[b].detach().double().numpy(),
            trace.stds[trace.n_iter],
            rtol=0,
            atol=atol * scale,
        )
        assert int(result.n_iter[b]) == trace.n_iter
        assert bool(result.converged[b]) == trace.converged
        best = float(result.best_value[b].detach())
        if float64:
            assert best == pytest.approx(trace.best_value, rel=1e-9, abs=1e-9 * scale)
            np.testing.assert_allclose(
                result.best_x[b].detach().numpy(), trace.best_x, rtol=0, atol=1e-9 * scale
            )
        else:
            assert best == pytest.approx(trace.best_value, rel=1e-4, abs=1e-4)
    leaves = inputs.leaves()
    loss = result.mean.sum() + result.std.sum() + result.best_x.sum()
    if leaves and loss.requires_grad:
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        for grad in grads:
            assert grad is None or bool(torch.isfinite(grad).all())
