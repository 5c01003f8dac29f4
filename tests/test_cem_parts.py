"""The composable solver's parts: state and step (CEM-31), options (CEM-32),
noise sources (CEM-33) and injected proposals (CEM-34)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from impl.cem import (
    Box,
    CEMOptions,
    ColoredNoise,
    DCEMResult,
    DCEMStep,
    GaussianUpdate,
    PreDrawnNoise,
    Problem,
    WhiteNoise,
    initial_state,
    selector_for,
    solve,
    step,
)
from impl.control.noise import colored_noise
from impl.dcem import dcem
from tests.objectives import objectives

ref_cem = importlib.import_module("reference.cem")

FIELDS = ("x", "mean", "std", "best_x", "best_value", "n_iter", "converged")
STATE_FIELDS = ("mean", "std", "best_x", "best_value", "n_iter", "converged", "active")


def assert_same(a: DCEMResult, b: DCEMResult) -> None:
    for name in FIELDS:
        assert torch.equal(getattr(a, name).detach(), getattr(b, name).detach()), name


@st.composite
def option_sets(draw: st.DrawFn) -> CEMOptions:
    n = draw(st.integers(4, 30))
    tau = draw(st.sampled_from([None, 0.0, 0.1, 1.0]))
    hard = tau is None or tau == 0
    return CEMOptions(
        n_sample=n,
        n_elite=draw(st.integers(1, n - 1)),
        n_iter=draw(st.integers(1, 5)),
        tau=tau,
        normalize=draw(st.booleans()),
        std_min=draw(st.sampled_from([0.0, 1e-6, 1e-2])),
        tol=draw(st.sampled_from([None, 1e-3])),
        output=draw(st.sampled_from(["mean", "best"])),
        smoothing=draw(st.sampled_from([0.0, 0.5])),
        elite_temperature=draw(st.sampled_from([None, 0.5])) if hard else None,
    )


# --------------------------------------------------------------------------
# CEM-31: a solve is a fold of one step over an explicit state


@pytest.mark.spec("CEM-31")
@given(options=option_sets(), seed=st.integers(0, 2**16), data=st.data())
def test_solve_is_a_fold_of_step(options: CEMOptions, seed: int, data: st.DataObject) -> None:
    batch, d = 2, 3
    objective = data.draw(objectives(d))
    rng = np.random.default_rng(seed)
    mean0 = torch.from_numpy(rng.uniform(-1, 1, (batch, d)))
    std0 = torch.from_numpy(rng.uniform(0.2, 2, (batch, d)))
    noise = torch.from_numpy(rng.standard_normal((options.n_iter, batch, options.n_sample, d)))
    box = Box(torch.full((batch, d), -1.5, dtype=torch.float64), None)
    result = solve(objective.torch, mean0, std0, options, lb=-1.5, noise=noise)

    problem = Problem(
        f=objective.torch,
        noise=PreDrawnNoise(noise),
        selector=selector_for(options),
        update=GaussianUpdate(options.n_elite, options.std_min, options.smoothing),
        box=box,
        proposals=None,
        tol=options.tol,
        shape=(batch, options.n_sample, d),
        in_dtype=torch.float64,
        rows=torch.arange(batch),
    )
    state = initial_state(mean0, std0, box)
    for t in range(options.n_iter):
        before = [getattr(state, name).clone() for name in STATE_FIELDS]
        following = step(problem, state, noise[t]).state
        for name, kept in zip(STATE_FIELDS, before, strict=True):  # step changes no input
            assert torch.equal(getattr(state, name), kept), name
        state = following
    point = state.mean if options.output == "mean" else state.best_x
    folded = DCEMResult(
        point, state.mean, state.std, state.best_x, state.best_value, state.n_iter,
        state.converged, state.mean.unsqueeze(1)[:, :0],
    )  # fmt: skip
    assert_same(result, folded)
    assert torch.equal(state.active, ~state.converged)


@pytest.mark.spec("CEM-31", "CEM-32")
@given(options=option_sets(), seed=st.integers(0, 2**16))
def test_dcem_is_solve_with_its_options(options: CEMOptions, seed: int) -> None:
    def f(x: Tensor) -> Tensor:
        return ((x - 0.4) ** 2).sum(-1) + torch.cos(3 * x).sum(-1)

    mean0 = torch.zeros(3, 2, dtype=torch.float64)
    a = dcem(f, mean0, 1.0, ub=1.0, generator=torch.Generator().manual_seed(seed),
             **options.as_kwargs())  # fmt: skip
    b = solve(f, mean0, 1.0, options, ub=1.0, generator=torch.Generator().manual_seed(seed))
    assert_same(a, b)


@pytest.mark.spec("CEM-31", "CEM-6")
@pytest.mark.parametrize("soft", [False, True])
def test_the_solver_update_is_the_one_gaussian_fit(soft: bool) -> None:
    # The update the solver applies is impl.gaussian.weighted_gaussian_fit (the
    # function Props. 1 and 3 are tested on) on the callback's samples and weights.
    from impl.gaussian import weighted_gaussian_fit

    steps: list[DCEMStep] = []
    dcem(lambda x: (x * x).sum(-1), torch.ones(2, 3, dtype=torch.float64), 1.0,
         n_iter=3, tau=1.0 if soft else None, std_min=1e-3, callback=steps.append,
         generator=torch.Generator().manual_seed(0))  # fmt: skip
    for s in steps:
        mean, std = weighted_gaussian_fit(s.samples, s.weights, 10, 1e-3)
        assert torch.equal(mean, s.mean) and torch.equal(std, s.std)


# --------------------------------------------------------------------------
# CEM-32: one options type; invalid combinations raise at construction


BAD_OPTIONS = [
    (dict(elite_temperature=0.5, tau=1.0), ValueError, "tau=1.0"),
    (dict(reuse_buffers=True, checkpoint=True), ValueError, "checkpoint"),
    (dict(reuse_buffers="yes"), TypeError, "reuse_buffers"),
    (dict(n_elite=5, n_sample=5), ValueError, "n_elite=5"),
    (dict(std_min=-1e-9), ValueError, "std_min"),
]


@pytest.mark.spec("CEM-32", "CEM-22")
@pytest.mark.parametrize(("changes", "error", "words"), BAD_OPTIONS)
def test_invalid_options_cannot_be_constructed(
    changes: dict[str, object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        CEMOptions(**changes)  # type: ignore[arg-type]


@pytest.mark.spec("CEM-32", "CEM-22")
def test_solve_checks_its_arguments_before_f_runs() -> None:
    calls: list[int] = []

    def f(x: Tensor) -> Tensor:
        calls.append(1)
        return x.sum(-1)

    with pytest.raises(TypeError, match="CEMOptions"):
        solve(f, torch.zeros(2), 1.0, {"n_iter": 3})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise or sampler"):
        solve(f, torch.zeros(2), 1.0, CEMOptions(n_iter=1), noise=torch.zeros(1, 100, 2),
              sampler=WhiteNoise())  # fmt: skip
    assert not calls
    assert CEMOptions().replace(n_iter=3).n_iter == 3
    assert set(CEMOptions().as_kwargs()) <= set(dcem.__code__.co_varnames)


# --------------------------------------------------------------------------
# CEM-33: noise sources


def _colored_draws(
    seed: int, n_iter: int, batch: int, n: int, horizon: int, n_u: int, beta: float
) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            colored_noise(1, batch, n, horizon, n_u, beta, generator=generator,
                          dtype=torch.float64)[0]
            for _ in range(n_iter)
        ]
    )  # fmt: skip


@pytest.mark.spec("CEM-33")
@pytest.mark.parametrize("beta", [0.0, 2.0])
@pytest.mark.parametrize("checkpoint", [False, True])
def test_colored_noise_source_draws_colored_noise_per_iteration(
    beta: float, checkpoint: bool
) -> None:
    horizon, n_u, batch, n, n_iter = 6, 2, 2, 20, 3
    centre = torch.linspace(-0.5, 0.5, horizon * n_u, dtype=torch.float64, requires_grad=True)

    def f(x: Tensor) -> Tensor:
        return ((x - centre) ** 2).sum(-1)

    options = CEMOptions(n_sample=n, n_elite=4, n_iter=n_iter, checkpoint=checkpoint)
    mean0 = torch.zeros(batch, horizon * n_u, dtype=torch.float64)
    generator = torch.Generator().manual_seed(5)
    colored = solve(f, mean0, 0.8, options, generator=generator,
                    sampler=ColoredNoise(beta, horizon, n_u))  # fmt: skip
    drawn = _colored_draws(5, n_iter, batch, n, horizon, n_u, beta)
    expected = solve(f, mean0, 0.8, options.replace(checkpoint=False), noise=drawn)
    assert_same(colored, expected)
    after = torch.Generator().manual_seed(5)
    for _ in range(n_iter):
        colored_noise(1, batch, n, horizon, n_u, beta, generator=after, dtype=torch.float64)
    assert torch.equal(generator.get_state(), after.get_state())
    (g_colored,) = torch.autograd.grad(colored.mean.sum(), centre)
    (g_expected,) = torch.autograd.grad(expected.mean.sum(), centre)
    torch.testing.assert_close(g_colored, g_expected, rtol=1e-9, atol=1e-12)


@pytest.mark.spec("CEM-33", "CEM-22")
def test_noise_sources_check_their_sizes() -> None:
    with pytest.raises(ValueError, match="d=5"):
        solve(lambda x: x.sum(-1), torch.zeros(5), 1.0, CEMOptions(n_iter=1),
              sampler=ColoredNoise(2.0, 3, 2))  # fmt: skip
    with pytest.raises(ValueError, match="beta"):
        ColoredNoise(-1.0, 3, 2)
    with pytest.raises(ValueError, match="horizon"):
        ColoredNoise(1.0, 0, 2)
    white = solve(lambda x: (x * x).sum(-1), torch.zeros(2, 3), 1.0, CEMOptions(n_iter=2),
                  sampler=WhiteNoise(), generator=torch.Generator().manual_seed(1))  # fmt: skip
    twin = torch.Generator().manual_seed(1)
    noise = torch.stack([torch.randn(2, 100, 3, generator=twin) for _ in range(2)])
    assert_same(white, solve(lambda x: (x * x).sum(-1), torch.zeros(2, 3), 1.0,
                             CEMOptions(n_iter=2), noise=noise))  # fmt: skip


# --------------------------------------------------------------------------
# CEM-34: injected proposals


@pytest.mark.spec("CEM-34", "CEM-16", "CEM-17")
@pytest.mark.parametrize("tau", [None, 1.0])
def test_a_proposal_at_the_optimum_is_selected_and_carries_the_gradient(
    tau: float | None,
) -> None:
    target = torch.tensor([[0.7, -0.2], [1.4, 0.3]], dtype=torch.float64)

    def f(x: Tensor) -> Tensor:
        return ((x - target.unsqueeze(1)) ** 2).sum(-1)

    proposals = target.unsqueeze(1).clone().requires_grad_(True)  # (B, 1, d)
    steps: list[DCEMStep] = []
    options = CEMOptions(n_sample=30, n_elite=1, n_iter=1, tau=tau)
    result = solve(f, torch.zeros(2, 2, dtype=torch.float64), 1.0, options, ub=1.0,
                   proposals=proposals, callback=steps.append,
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    clipped = target.clamp(max=1.0)
    assert steps[0].samples.shape == (2, 31, 2) and steps[0].weights.shape == (2, 31)
    assert torch.equal(steps[0].samples[:, 30], clipped)
    assert torch.equal(result.best_x, clipped)  # value 0 (or the clipped optimum): the best
    if tau is None:
        assert torch.equal(result.mean, clipped)  # the one elite
        (grad,) = torch.autograd.grad(result.mean.sum(), proposals)
        expected = (target < 1.0).to(torch.float64).unsqueeze(1)  # clipping cuts the gradient
        torch.testing.assert_close(grad, expected, rtol=0, atol=0)
    else:
        (grad,) = torch.autograd.grad(result.mean.sum(), proposals)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.spec("CEM-34")
@given(seed=st.integers(0, 2**16), n_prop=st.integers(1, 4), tau=st.sampled_from([None, 0.5]))
def test_proposals_match_the_reference(seed: int, n_prop: int, tau: float | None) -> None:
    rng = np.random.default_rng(seed)
    d, n, t = 3, 16, 3
    noise = rng.standard_normal((t, n, d))
    proposals = rng.uniform(-2, 2, (n_prop, d))

    def f_np(x: np.ndarray) -> np.ndarray:
        return np.asarray(((x - 0.5) ** 2).sum(-1) + np.sin(4 * x).sum(-1))

    def f(x: Tensor) -> Tensor:
        return ((x - 0.5) ** 2).sum(-1) + torch.sin(4 * x).sum(-1)

    steps: list[DCEMStep] = []
    result = solve(f, torch.zeros(d, dtype=torch.float64), 1.0,
                   CEMOptions(n_sample=n, n_elite=4, n_iter=t, tau=tau), lb=-1.0,
                   noise=torch.from_numpy(noise), proposals=torch.from_numpy(proposals),
                   callback=steps.append)  # fmt: skip
    trace = ref_cem.cem(f_np, np.zeros(d), 1.0, noise, n_elite=4, tau=tau, lb=-1.0,
                        proposals=proposals)  # fmt: skip
    for i, s in enumerate(steps):
        np.testing.assert_allclose(s.samples[0].numpy(), trace.samples[i], atol=1e-12)
        np.testing.assert_allclose(s.mean[0].numpy(), trace.means[i + 1], atol=1e-9)
    np.testing.assert_allclose(result.best_x.numpy(), trace.best_x, atol=1e-12)


PROPOSAL_ERRORS = [
    (torch.zeros(2, 3, 5), ValueError, "proposals"),  # wrong d
    (torch.zeros(3, 1, 2), ValueError, "proposals"),  # wrong B
    (torch.zeros(2, 0, 2), ValueError, "P >= 1"),
    (torch.zeros(2, 1, 2, dtype=torch.int64), TypeError, "proposals"),
    ([[0.0, 0.0]], TypeError, "proposals"),
    (torch.zeros(2, 1, 2, device="meta"), ValueError, "proposals is on meta, init_mean on cpu"),
]


@pytest.mark.spec("CEM-34", "CEM-22")
@pytest.mark.parametrize(("proposals", "error", "words"), PROPOSAL_ERRORS)
def test_bad_proposals_raise(proposals: object, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        solve(lambda x: x.sum(-1), torch.zeros(2, 2), 1.0, CEMOptions(n_iter=1),
              proposals=proposals)  # type: ignore[arg-type]  # fmt: skip


# --------------------------------------------------------------------------
# CEM-36: a tensor temperature, learnable


def _tau_problem(tau: float | Tensor, **options: object) -> DCEMResult:
    noise = torch.randn(
        4, 2, 30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    centre = torch.tensor([[0.4, -0.3]], dtype=torch.float64)
    return dcem(lambda x: ((x - centre) ** 2).sum(-1) + 0.3 * torch.sin(5 * x).sum(-1),
                torch.zeros(2, 2, dtype=torch.float64), 0.9, n_sample=30, n_elite=5, n_iter=4,
                tau=tau, noise=noise, **options)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.spec("CEM-36")
@pytest.mark.parametrize("value", [0.05, 0.5, 2.0])
def test_a_tensor_tau_gives_the_float_result_and_its_derivative(value: float) -> None:
    tau = torch.tensor(value, dtype=torch.float64, requires_grad=True)
    result = _tau_problem(tau)
    assert_same(result, _tau_problem(value))

    def loss(r: DCEMResult) -> Tensor:
        return (r.mean * torch.tensor([1.0, -2.0], dtype=torch.float64)).sum() + r.std.sum()

    (grad,) = torch.autograd.grad(loss(result), tau)
    h = 1e-6 * value
    numeric = (loss(_tau_problem(value + h)) - loss(_tau_problem(value - h))) / (2 * h)
    assert float(grad) == pytest.approx(float(numeric), rel=1e-5, abs=1e-8)
    for options in ({"checkpoint": True}, {"grad_iters": 4}):
        (again,) = torch.autograd.grad(loss(_tau_problem(tau, **options)), tau)
        torch.testing.assert_close(again, grad, rtol=1e-9, atol=1e-12)
    (last,) = torch.autograd.grad(loss(_tau_problem(tau, grad_iters=1)), tau)
    assert torch.isfinite(last) and float(last) != float(grad)  # the truncated gradient


@pytest.mark.spec("CEM-36", "CEM-28")
def test_a_tau_that_requires_grad_turns_the_candidate_buffer_off() -> None:
    tau = torch.tensor(0.7, requires_grad=True)

    def go(reuse: bool) -> Tensor:
        result = solve(lambda x: (x * x).sum(-1), torch.ones(64, 6), 1.0,
                       CEMOptions(tau=tau, n_iter=3, reuse_buffers=reuse),
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
        (grad,) = torch.autograd.grad(result.mean.sum(), tau)
        return grad

    torch.testing.assert_close(go(True), go(False), rtol=0, atol=0)


@pytest.mark.spec("CEM-36", "CEM-22")
def test_bad_tensor_taus_raise() -> None:
    with pytest.raises(ValueError, match="tau"):
        CEMOptions(tau=torch.ones(2))
    with pytest.raises(ValueError, match="tau"):
        CEMOptions(tau=torch.tensor(1))
    with pytest.raises(ValueError, match="tau is on"):
        solve(lambda x: x.sum(-1), torch.zeros(2), 1.0,
              CEMOptions(tau=torch.tensor(1.0, device="meta")))  # fmt: skip
