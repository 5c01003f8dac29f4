"""The compiled path (spec/cem.md CEM-44 – CEM-47, spec/control.md CTL-24).

``torch.compile`` with the default ``inductor`` backend takes tens of
seconds per graph on the project's CPU, so most tests trace with
``backend="eager"`` (Dynamo's whole-solve trace with ``fullgraph=True``: a
graph break, e.g. a host read of a tensor value, is an error) or
``"aot_eager"`` (also the AOTAutograd forward and backward graphs), and one
test compiles a tiny solve with ``inductor``. Each test resets Dynamo's
caches so that no graph of one test is reused by another.
"""

from __future__ import annotations

import contextlib
import importlib
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from impl.cem import ColoredNoise, PreDrawnNoise, solve
from impl.cem.compiled import CompiledSolve, CompileSettings, draw_noise
from impl.cem.result import DCEMResult
from impl.cem.samplers import WhiteNoise
from impl.control import MPC, PLANNER_SOLVER, Pendulum, PlannerConfig, plan
from impl.control.compiled import CompiledMPC, ObservedCost, observed_rollout_cost
from impl.options import CEMOptions

ref_cem = importlib.import_module("reference.cem")

FIELDS = ("x", "mean", "std", "best_x", "best_value", "n_iter", "converged", "elites")


pytestmark = pytest.mark.usefixtures("fresh_dynamo")


def quadratic(x: Tensor) -> Tensor:
    """``f(x) = Σ (x − 0.3)²`` per candidate, ``(B, M, d)`` → ``(B, M)``."""
    return (x - 0.3).square().sum(-1)


def assert_same_result(got: DCEMResult, want: DCEMResult, atol: float) -> None:
    for name in FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        assert a is not None and b is not None, name
        assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape)
        if a.dtype.is_floating_point:
            torch.testing.assert_close(a, b, rtol=0, atol=atol, equal_nan=True, msg=name)
        else:
            assert torch.equal(a, b), name


N, K, T, D, B = 12, 3, 3, 2, 2

OPTION_SETS: dict[str, CEMOptions] = {
    "dcem": CEMOptions(n_sample=N, n_elite=K, n_iter=T, tau=0.5),
    "hard-tol-best": CEMOptions(
        n_sample=N, n_elite=K, n_iter=T, tau=None, tol=0.05, smoothing=0.2, output="best"
    ),
    "icem": CEMOptions(
        n_sample=N,
        n_elite=K,
        n_iter=T,
        tau=None,
        keep_elites=0.7,
        population_decay=1.6,
        mean_candidate=True,
        sampling="truncated",
    ),
    "weighted-constrained-sample": CEMOptions(
        n_sample=N,
        n_elite=K,
        n_iter=T,
        tau=None,
        elite_temperature=0.5,
        sampling="variance_constrained",
        std_max=0.8,
        output="sample",
        normalize=False,
    ),
    "dcem-tol-checkpoint": CEMOptions(
        n_sample=N, n_elite=K, n_iter=T, tau=2.0, tol=1e-2, checkpoint=True, std_min=0.0
    ),
}


CASES = [
    ("dcem", torch.float32),
    ("hard-tol-best", torch.float64),
    ("icem", torch.float32),
    ("weighted-constrained-sample", torch.float64),
    ("dcem-tol-checkpoint", torch.float32),
]


@pytest.mark.spec("CEM-44", "CEM-45")
@pytest.mark.parametrize(("name", "dtype"), CASES, ids=[f"{n}-{str(d)[-2:]}" for n, d in CASES])
def test_compiled_solve_matches_the_eager_solve(name: str, dtype: torch.dtype) -> None:
    """Same generator state in, same result (to rounding) and generator state out; a
    second call with new values and a new generator runs the same graph."""
    options = OPTION_SETS[name]
    solver = CompiledSolve(quadratic, options, backend="eager")
    for seed in (0, 1):
        gen = torch.Generator().manual_seed(seed)
        mean = torch.randn(B, D, generator=gen, dtype=dtype)
        extra: dict[str, Any] = {"proposals": torch.randn(B, 2, D, generator=gen, dtype=dtype)}
        if name == "icem":  # initial elites of CEM-39
            extra["elites"] = torch.randn(B, 2, D, generator=gen, dtype=dtype)
        g_compiled = torch.Generator().manual_seed(10 + seed)
        g_eager = torch.Generator().manual_seed(10 + seed)
        with torch.compiler.set_stance("fail_on_recompile") if seed else contextlib.nullcontext():
            got = solver(mean, 0.7, lb=-1.0, ub=torch.ones(D, dtype=dtype), generator=g_compiled,
                         **extra)  # fmt: skip
        want = solve(quadratic, mean, 0.7, options, lb=-1.0, ub=torch.ones(D, dtype=dtype),
                     generator=g_eager, **extra)  # fmt: skip
        # DCEM: the traced LML runs the fixed schedule of LML-19, the eager one LML-23.
        assert_same_result(got, want, atol=1e-5 if dtype == torch.float32 else 1e-10)
        assert torch.equal(g_compiled.get_state(), g_eager.get_state())


@pytest.mark.spec("CEM-44", "CEM-45")
def test_single_problem_sampler_and_predrawn_noise() -> None:
    """A ``(d,)`` problem, a colored-noise sampler, and pre-drawn noise (as
    ``noise=`` and as ``PreDrawnNoise``) give ``solve``'s results."""
    options = CEMOptions(n_sample=N, n_elite=K, n_iter=2, tau=None, keep_elites=0.5)
    colored = ColoredNoise(beta=2.0, horizon=2, action_dim=2)
    solver = CompiledSolve(quadratic, options, sampler=colored, backend="eager")
    mean = torch.tensor([0.5, -0.2, 0.1, 0.9])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got = solver(mean, 1.0, generator=g1)
    want = solve(quadratic, mean, 1.0, options, sampler=colored, generator=g2)
    assert got.x.shape == (4,) and got.elites is not None and got.elites.shape == (1, 4)
    assert_same_result(got, want, atol=1e-5)
    assert torch.equal(g1.get_state(), g2.get_state())
    noise = torch.randn(2, N, 4, generator=torch.Generator().manual_seed(4))
    predrawn = CompiledSolve(quadratic, options, sampler=PreDrawnNoise(noise.unsqueeze(1)),
                             backend="eager")  # fmt: skip
    want = solve(quadratic, mean, 1.0, options, noise=noise)
    assert_same_result(solver(mean, 1.0, noise=noise), want, atol=1e-5)
    assert_same_result(predrawn(mean, 1.0), want, atol=1e-5)


@pytest.mark.spec("CEM-45")
@pytest.mark.parametrize("decay", [1.0, 1.5])
def test_the_noise_is_drawn_as_the_eager_solve_draws_it(decay: float) -> None:
    """``draw_noise``: iteration ``t`` is ``torch.randn((B, N_t, d))`` from the
    generator, in order (an independent derivation of the eager draws)."""
    options = CEMOptions(n_sample=N, n_elite=K, n_iter=4, population_decay=decay)
    gen = torch.Generator().manual_seed(5)
    noise = draw_noise(WhiteNoise(), options, (B, N, D), torch.float64, torch.device("cpu"), gen)
    again = torch.Generator().manual_seed(5)
    for t in range(4):
        size = options.population(t)
        drawn = torch.randn((B, size, D), generator=again, dtype=torch.float64)
        assert torch.equal(noise[t, :, :size], drawn)
        assert not noise[t, :, size:].any()
    assert torch.equal(gen.get_state(), again.get_state())


@pytest.mark.spec("CEM-44", "CEM-45", "CEM-42")
def test_compiled_solve_matches_the_reference() -> None:
    """float64, against ``reference.cem`` on the noise the generator gives
    (redrawn here: ``T`` draws ``(B, N, d)``, then ``(B, 1, d)`` for the sample)."""
    options = CEMOptions(n_sample=N, n_elite=K, n_iter=T, tau=0.7, tol=1e-3, output="sample")
    solver = CompiledSolve(quadratic, options, backend="eager")
    mean = torch.tensor([[0.4, -0.6], [1.5, 0.2]], dtype=torch.float64)
    result = solver(mean, 0.8, lb=-1.0, ub=1.2, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    noise = torch.stack([torch.randn((B, N, D), generator=gen, dtype=torch.float64)
                         for _ in range(T)])  # fmt: skip
    sample_noise = torch.randn((B, 1, D), generator=gen, dtype=torch.float64)
    for b in range(B):
        trace = ref_cem.cem(
            lambda x: ((np.asarray(x) - 0.3) ** 2).sum(-1),
            mean[b].numpy(),
            0.8,
            noise[:, b].numpy(),
            n_elite=K,
            tau=0.7,
            lb=-1.0,
            ub=1.2,
            tol=1e-3,
            sample_noise=sample_noise[b, 0].numpy(),
        )
        final = trace.means[trace.n_iter]
        np.testing.assert_allclose(result.mean[b].numpy(), final, rtol=0, atol=1e-9)
        np.testing.assert_allclose(result.std[b].numpy(), trace.stds[trace.n_iter], atol=1e-9)
        np.testing.assert_allclose(result.x[b].numpy(), trace.sample, rtol=0, atol=1e-9)
        np.testing.assert_allclose(float(result.best_value[b]), trace.best_value, atol=1e-9)
        assert int(result.n_iter[b]) == trace.n_iter
        assert bool(result.converged[b]) == trace.converged


@pytest.mark.spec("CEM-44")
def test_compiled_forward_and_backward_match_the_eager_gradients() -> None:
    """``aot_eager``: AOTAutograd's joint graph; the gradients in ``init_mean``,
    the bounds, ``f``'s parameter and a tensor ``τ`` equal the eager ones."""
    centre = torch.tensor([0.2, -0.1], requires_grad=True)
    tau = torch.tensor(0.8, requires_grad=True)

    def f(x: Tensor) -> Tensor:
        return (x - centre).square().sum(-1) + 0.1 * x.sin().sum(-1)

    options = CEMOptions(n_sample=N, n_elite=K, n_iter=2, tau=tau)
    solver = CompiledSolve(f, options, backend="aot_eager")
    grads = []

    def eager(mean: Tensor, std: float, **kwargs: Any) -> DCEMResult:
        return solve(f, mean, std, options, **kwargs)

    for call in (solver, eager):
        mean = torch.tensor([[0.5, 0.4], [-0.3, 0.8]], requires_grad=True)
        upper = torch.full((B, D), 1.5, requires_grad=True)
        result = call(mean, 0.6, lb=-1.0, ub=upper, generator=torch.Generator().manual_seed(2))
        loss = (result.mean * torch.tensor([1.0, -2.0])).sum() + result.std.sum()
        grads.append(torch.autograd.grad(loss, (mean, upper, centre, tau)))
    for got, want in zip(*grads, strict=True):
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.spec("CEM-46")
def test_the_whole_solve_traces_on_meta_tensors() -> None:
    """On ``meta`` tensors no value exists: a trace that read one (a host
    synchronization on CUDA) would fail. Shapes and dtypes as the eager solve's."""
    options = CEMOptions(n_sample=N, n_elite=K, n_iter=2, tau=1.0, tol=1e-3, keep_elites=0.5)
    solver = CompiledSolve(quadratic, options, backend="eager")
    mean = torch.zeros(B, D, device="meta", requires_grad=True)
    result = solver(mean, 1.0, lb=-1.0, ub=1.0)
    want = solve(quadratic, mean, 1.0, options, lb=-1.0, ub=1.0)
    for name in FIELDS:
        got, expected = getattr(result, name), getattr(want, name)
        assert got.device.type == "meta" and got.shape == expected.shape, name
        assert got.dtype == expected.dtype, name
    (grad,) = torch.autograd.grad(result.mean.sum(), mean)
    assert grad.device.type == "meta" and grad.shape == (B, D)


@pytest.mark.spec("CEM-44")
def test_one_inductor_compile_matches_the_eager_forward_and_backward() -> None:
    """The default backend, generated code included, forward and backward of a
    small DCEM solve. Three iterations: with inductor's ``inplace_buffers``
    (off in ``INDUCTOR_OPTIONS``) this gradient came out 10 % off."""
    options = CEMOptions(n_sample=20, n_elite=4, n_iter=3, tau=1.0)
    centre = torch.tensor([[0.3, -0.2, 0.1]], requires_grad=True)

    def f(x: Tensor) -> Tensor:
        return (x - centre.unsqueeze(1)).square().sum(-1)

    solver = CompiledSolve(f, options)
    outcomes = []
    for call in (solver, partial(solve, f, options=options)):
        result = call(torch.zeros(1, 3), 1.0, generator=torch.Generator().manual_seed(0))
        (grad,) = torch.autograd.grad(result.mean.sum(), centre)
        outcomes.append((result.mean, grad))
    (mean, grad), (want_mean, want_grad) = outcomes
    torch.testing.assert_close(mean, want_mean, rtol=0, atol=1e-5)
    assert want_grad.abs().min() > 0.1
    torch.testing.assert_close(grad, want_grad, rtol=0, atol=1e-5)


@pytest.mark.spec("CEM-44")
def test_each_compiled_solve_keeps_its_own_graphs() -> None:
    """More objects than ``recompile_limit`` (8 graphs per traced code object),
    each with its own ``f``, all trace (a shared code object would fail the ninth)."""
    options = CEMOptions(n_sample=4, n_elite=2, n_iter=1, tau=None)
    mean = torch.zeros(1, 2)
    noise = torch.randn(1, 1, 4, 2, generator=torch.Generator().manual_seed(0))
    limit = torch._dynamo.config.recompile_limit
    for shift in range(limit + 2):

        def f(x: Tensor, shift: float = shift / 10) -> Tensor:
            return (x - shift).abs().sum(-1)

        got = CompiledSolve(f, options, backend="eager")(mean, 1.0, noise=noise)
        want = solve(f, mean, 1.0, options, noise=noise)
        assert_same_result(got, want, atol=0)


@pytest.mark.spec("CEM-47", "CEM-22")
def test_bad_arguments_are_rejected_before_tracing() -> None:
    options = CEMOptions(n_sample=N, n_elite=K, n_iter=T)
    with pytest.raises(TypeError, match="f must be callable"):
        CompiledSolve("f", options)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CEMOptions"):
        CompiledSolve(quadratic, {"n_sample": N})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be"):
        CompiledSolve(quadratic, options, mode="fastest")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backend must be"):
        CompileSettings(backend=3)  # type: ignore[arg-type]
    solver = CompiledSolve(quadratic, options, backend="eager")
    mean = torch.zeros(B, D)
    with pytest.raises(ValueError, match="lb < ub"):
        solver(mean, 1.0, lb=1.0, ub=0.0)
    with pytest.raises(ValueError, match="init_std must be finite"):
        solver(mean, -1.0)
    with pytest.raises(ValueError, match="noise has shape"):
        solver(mean, 1.0, noise=torch.zeros(T, B, N + 1, D))
    with pytest.raises(ValueError, match="proposals has shape"):
        solver(mean, 1.0, proposals=torch.zeros(B + 1, 2, D))
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        solver(mean, 1.0, generator=0)  # type: ignore[arg-type]
    sample = CompiledSolve(quadratic, options.replace(output="sample"), backend="eager")
    with pytest.raises(ValueError, match='output="sample"'):
        sample(mean.half(), 1.0)
    assert not CompileSettings().cuda_graphs and CompileSettings(mode="reduce-overhead").cuda_graphs


def pendulum_cost() -> ObservedCost:
    system = Pendulum()
    return observed_rollout_cost(system.step, system.cost)


MPC_SOLVERS = {
    "planner-default": PLANNER_SOLVER.replace(n_sample=N, n_elite=K, n_iter=2),
    "dcem-mean-colored": CEMOptions(n_sample=N, n_elite=K, n_iter=2, tau=1.0, keep_elites=0.4),
}


@pytest.mark.spec("CTL-24")
@pytest.mark.parametrize("name", list(MPC_SOLVERS))
def test_compiled_mpc_step_matches_mpc_act(name: str) -> None:
    """Seeded alike and given the same observations, ``CompiledMPC`` and ``MPC``
    return the same plans and carry the same state (warm start, kept elites,
    random state) over steps and a masked reset; after the first two steps no
    new graph is traced."""
    beta = 2.0 if "colored" in name else 0.0
    config = PlannerConfig(horizon=3, action_lb=-2.0, action_ub=2.0,
                           solver=MPC_SOLVERS[name], noise_beta=beta)  # fmt: skip
    cost = pendulum_cost()
    compiled = CompiledMPC(config, 2, cost, seed=4, backend="eager")
    eager = MPC(config, 2, seed=4)
    system = Pendulum()
    x = system.sample_initial(2, torch.Generator().manual_seed(1))
    for step in range(4):
        if step == 2:
            compiled.reset(torch.tensor([True, False]))
            eager.reset(torch.tensor([True, False]))
        stance = (
            torch.compiler.set_stance("fail_on_recompile")
            if step >= 2
            else contextlib.nullcontext()
        )
        with stance:
            got = compiled.act(x)
        want = eager.act(partial(cost, x))
        for field in ("actions", "cost", "first_action", "mean", "std", "n_iter", "elites"):
            torch.testing.assert_close(getattr(got, field), getattr(want, field), rtol=0,
                                       atol=1e-5, msg=field)  # fmt: skip
        assert torch.equal(compiled.state.rng, eager.state.rng)
        torch.testing.assert_close(compiled.state.warm_start, eager.state.warm_start)
        assert compiled.state.elites is not None and eager.state.elites is not None
        torch.testing.assert_close(compiled.state.elites, eager.state.elites)
        x = system.step(x, got.first_action)


@pytest.mark.spec("CTL-24")
def test_compiled_mpc_with_proposals_on_meta_and_bad_input() -> None:
    """Proposals join the candidates as in ``plan``; the step traces on ``meta``;
    bad observations and proposals are errors before tracing."""
    options = CEMOptions(n_sample=N, n_elite=K, n_iter=2, tau=None, output="best")
    config = PlannerConfig(horizon=3, action_lb=-2.0, action_ub=2.0, solver=options)
    cost = pendulum_cost()
    compiled = CompiledMPC(config, 2, cost, seed=0, backend="eager")
    x = Pendulum().sample_initial(2, torch.Generator().manual_seed(2))
    proposals = torch.full((2, 1, 3, 1), 1.9)
    warm = compiled.state.warm_start.clone()
    rng = compiled.state.rng.clone()
    got = compiled.act(x, proposals=proposals)
    gen = torch.Generator().set_state(rng)
    noise = torch.stack([torch.randn(2, N, 3, generator=gen) for _ in range(2)])
    want = plan(lambda u: cost(x, u), config, 2, init_mean=warm, noise=noise, proposals=proposals)
    torch.testing.assert_close(got.actions, want.actions, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.cost, want.cost, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="observation must have shape"):
        compiled.act(x[:1])
    with pytest.raises(ValueError, match="proposals has shape"):
        compiled.act(x, proposals=proposals[:, :, :2])
    with pytest.raises(TypeError, match="cost must be callable"):
        CompiledMPC(config, 2, None)  # type: ignore[arg-type]
    meta = CompiledMPC(config, 2, cost, device="meta", seed=0, backend="eager")
    result = meta.act(torch.zeros(2, 3, device="meta"))
    assert result.actions.shape == (2, 3, 1) and result.actions.device.type == "meta"
    assert meta.state.warm_start.shape == (2, 3, 1)
