"""More user paths that no other test compared with the oracle (``reference/``)
or an independent derivation, found by an audit of the public API.

- a float16/bfloat16 solve (state in float32, CEM-24), hard, soft (number or
  tensor ``τ``) and weighted elites, every sampling mode, below and above
  ``MATMUL_MIN_ELEMENTS``: each iteration the callback reports is re-derived
  with ``reference.cem`` (sampling from the noise, weights from ``f`` at the
  candidates rounded to the half dtype, the Gaussian fit), and the result is
  the callback's last state rounded to the half dtype;
- one-sided bounds (only ``lb`` or only ``ub``, a number or a tensor) with
  every sampling mode (CEM-10, CEM-37), against ``reference.cem``;
- the mbrl-lib adapter ``DCEMOptimizer`` with its default iCEM recipe, an
  ``x0``, a number ``init_std`` and its callback, against ``reference.cem`` on
  the noise of its seeded generator (CTL-19);
- ``lml`` with two leading dimensions and a tensor ``τ`` of every shape that
  broadcasts to ``(..., 1)``: the output against the bisection and the
  gradient in ``τ`` against central differences of the reference (LML-5,
  LML-20, LML-22);
- bad inputs on the solver's public paths: each raises a ``TypeError`` or
  ``ValueError`` naming the bad value, before ``f`` runs.
- defects (tests that failed before their fixes): a NaN or empty
  one-sided bound (``lb = nan`` or ``+∞`` without ``ub``, ``ub = nan`` or
  ``−∞`` without ``lb``) was accepted and returned ``init_mean`` as if
  solved (CEM-10, CEM-22); a non-callable ``f`` or ``callback`` raised
  Python's bare "'int' object is not callable", the callback's only after
  ``f`` had run (CEM-22); the planners and the mbrl-lib adapter did not name
  non-callable or non-tensor arguments (CTL-13, CTL-19); a finite float64
  value past the float32 state's range became ``−∞`` and ranked last
  (CEM-24, CEM-12); ``validate="no"`` meant ``True``; a non-floating planner
  ``dtype``, non-numeric adapter bounds and a negative adapter seed were not
  named or not rejected.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from impl.cem import DCEMStep, solve
from impl.dcem import MATMUL_MIN_ELEMENTS, dcem
from impl.lml import lml
from impl.options import CEMOptions, Sampling

ref_cem = importlib.import_module("reference.cem")
ref_lml = importlib.import_module("reference.lml")

SAMPLINGS: tuple[Sampling, ...] = ("clip", "truncated", "variance_constrained")


def wavy_torch(x: Tensor) -> Tensor:
    """A smooth multimodal objective, evaluated in float32 at least."""
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    return ((x - 0.3) ** 2).sum(-1) + 0.5 * torch.cos(3.0 * x).sum(-1)


def wavy_numpy(x: np.ndarray) -> np.ndarray:
    return np.asarray(((x - 0.3) ** 2).sum(-1) + 0.5 * np.cos(3.0 * x).sum(-1))


def reference_noise(eps: np.ndarray, sampling: str) -> np.ndarray:
    return eps if sampling == "clip" else np.asarray(ref_cem.truncated_noise(eps))


def reference_weights(values: np.ndarray, options: CEMOptions, tau: float | None) -> np.ndarray:
    k = options.n_elite
    if tau is None:
        if options.elite_temperature is not None:
            return np.asarray(
                ref_cem.exponential_elite_weights(
                    values, k, options.elite_temperature, options.normalize
                )
            )
        return np.asarray(ref_cem.hard_weights(values, k))
    return np.asarray(ref_cem.soft_weights(values, k, tau, options.normalize))


def boundary_tie(values: np.ndarray, k: int, rtol: float) -> bool:
    """Whether the k-th and (k+1)-th lowest values are (nearly) tied: a hard
    selection may then go either way (CEM-4)."""
    ordered = np.sort(values)
    return bool(ordered[k] - ordered[k - 1] <= rtol * (1 + np.abs(ordered).max()))


# -- half precision (CEM-24) --------------------------------------------------------------------


@pytest.mark.spec("CEM-24", "CEM-2", "CEM-5", "CEM-6", "CEM-21", "CEM-28", "CEM-37", "CEM-43")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), large=st.booleans())
def test_half_precision_solve_is_the_reference_iteration_by_iteration(
    dtype: torch.dtype, seed: int, large: bool
) -> None:
    rng = np.random.default_rng(seed)
    if large:  # past MATMUL_MIN_ELEMENTS: the fit's sums are matrix products
        batch, n, d = 2, 2048, 8
    else:
        batch, n, d = int(rng.integers(1, 4)), int(rng.integers(6, 40)), int(rng.integers(1, 4))
    t, k = int(rng.integers(1, 3)), int(rng.integers(1, n // 3 + 1))
    kind = ["hard", "weighted", "soft", "tensor"][int(rng.integers(4))]
    tau: float | None = None if kind in ("hard", "weighted") else [0.3, 1.0][int(rng.integers(2))]
    sampling = SAMPLINGS[int(rng.integers(3))]
    options = CEMOptions(
        n_sample=n,
        n_elite=k,
        n_iter=t,
        tau=torch.tensor(tau) if kind == "tensor" else tau,
        normalize=bool(rng.integers(2)),
        std_min=[0.0, 1e-3][int(rng.integers(2))],
        elite_temperature=0.5 if kind == "weighted" else None,
        sampling=sampling,
    )
    assert (batch * n * d >= MATMUL_MIN_ELEMENTS) == large
    # values the half dtype holds exactly, so that the reference starts where impl does
    mean0 = torch.from_numpy(rng.uniform(-1, 1, (batch, d))).to(dtype)
    std0 = torch.from_numpy(rng.uniform(0.2, 1.0, (batch, d))).to(dtype)
    lb, ub = -1.5, 1.25  # both held exactly by float16 and bfloat16: not moved (CEM-24)
    noise = torch.from_numpy(rng.standard_normal((t, batch, n, d))).float()
    seen: list[DCEMStep] = []
    inputs: list[Tensor] = []
    outputs: list[Tensor] = []

    def f(x: Tensor) -> Tensor:
        inputs.append(x.clone())
        outputs.append(wavy_torch(x).to(x.dtype))
        return outputs[-1]

    result = solve(f, mean0, std0, options, lb=lb, ub=ub, noise=noise, callback=seen.append)
    assert [x.dtype for x in inputs] == [dtype] * t  # f sees init_mean's dtype (CEM-24)
    mean, std = mean0.double().numpy(), std0.double().numpy()
    for step in seen:
        samples = step.samples.double().numpy()  # the state's float32 candidates
        assert step.samples.dtype == torch.float32
        for b in range(batch):
            eps = reference_noise(noise[step.iteration, b].double().numpy(), sampling)
            sigma = std[b]
            if sampling == "variance_constrained":
                sigma = ref_cem.constrained_std(mean[b], sigma, lb, ub)
            expected = np.clip(mean[b] + sigma * eps, lb, ub)
            np.testing.assert_allclose(samples[b], expected, rtol=0, atol=1e-5)
            # f saw the candidates rounded to its dtype; its values are ranked
            seen_by_f = inputs[step.iteration][b].double().numpy()
            np.testing.assert_array_equal(seen_by_f, step.samples[b].to(dtype).double().numpy())
            values = outputs[step.iteration][b].double().numpy()
            np.testing.assert_array_equal(step.values[b].double().numpy(), values)
            rounding = float(torch.finfo(dtype).eps)  # f returns values in its dtype
            np.testing.assert_allclose(values, wavy_numpy(seen_by_f), rtol=rounding, atol=rounding)
            if tau is None and boundary_tie(values, k, 0.0):
                continue  # either elite is right (CEM-4)
            weights = reference_weights(values, options, tau)
            np.testing.assert_allclose(step.weights[b].double().numpy(), weights, atol=2e-5)
            fit_mean, fit_std = ref_cem.gaussian_fit(samples[b], weights, k, options.std_min)
            scale = 1 + np.abs(samples[b]).max()
            np.testing.assert_allclose(
                step.mean[b].double().numpy(), np.clip(fit_mean, lb, ub), rtol=0, atol=3e-5 * scale
            )
            np.testing.assert_allclose(
                step.std[b].double().numpy(), fit_std, rtol=0, atol=3e-5 * scale
            )
        mean, std = step.mean.double().numpy(), step.std.double().numpy()
    # the result is the last state, in init_mean's dtype (CEM-15, CEM-24)
    assert result.mean.dtype == dtype and result.std.dtype == dtype
    assert torch.equal(result.mean, seen[-1].mean.to(dtype))
    assert torch.equal(result.std, seen[-1].std.to(dtype))
    # the same solve without a callback gives the same result (CEM-21)
    again = solve(f, mean0, std0, options, lb=lb, ub=ub, noise=noise)
    for name in ("x", "mean", "std", "best_x", "best_value"):
        assert torch.equal(getattr(again, name), getattr(result, name)), name


# -- one-sided bounds (CEM-10, CEM-37) ----------------------------------------------------------


@pytest.mark.spec("CEM-10", "CEM-37", "CEM-35")
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_one_sided_bounds_match_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch, n, d, t = int(rng.integers(1, 4)), int(rng.integers(5, 25)), int(rng.integers(1, 4)), 3
    k = int(rng.integers(1, n))
    side = ["lb", "ub"][int(rng.integers(2))]
    sampling = SAMPLINGS[int(rng.integers(3))]
    tau = [None, 0.5][int(rng.integers(2))]
    options = CEMOptions(
        n_sample=n, n_elite=k, n_iter=t, tau=tau, sampling=sampling, smoothing=0.1
    )  # fmt: skip
    bound: np.ndarray | float = 0.2
    if rng.integers(2):
        bound = rng.uniform(-0.5, 0.5, (batch, d))
    mean0 = rng.uniform(-1, 1, (batch, d))
    # the mean inside the half-space (variance_constrained samples around it)
    mean0 = np.maximum(mean0, bound + 0.01) if side == "lb" else np.minimum(mean0, bound - 0.01)
    std0 = rng.uniform(0.2, 1.0, (batch, d))
    noise = rng.standard_normal((t, batch, n, d))
    given_bound: Any = torch.from_numpy(bound) if isinstance(bound, np.ndarray) else bound
    result = solve(
        wavy_torch, torch.from_numpy(mean0), torch.from_numpy(std0), options,
        noise=torch.from_numpy(noise), **{side: given_bound},
    )  # fmt: skip
    for b in range(batch):
        row = bound[b] if isinstance(bound, np.ndarray) else bound
        trace = ref_cem.cem(
            wavy_numpy, mean0[b], std0[b], noise[:, b], n_elite=k, tau=tau,
            sampling=sampling, smoothing=0.1, **{side: row},
        )  # fmt: skip
        if tau is None and any(boundary_tie(v, k, 0.0) for v in trace.values):
            continue
        np.testing.assert_allclose(result.mean[b].numpy(), trace.mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(result.std[b].numpy(), trace.std, rtol=1e-9, atol=1e-9)
        inside = trace.mean >= row if side == "lb" else trace.mean <= row
        assert inside.all()


# -- the mbrl-lib adapter (CTL-19) --------------------------------------------------------------


@pytest.mark.spec("CTL-19", "CTL-23", "CEM-29", "CEM-39", "CEM-41", "CEM-16")
@pytest.mark.parametrize("with_callback", [False, True], ids=["plain", "callback"])
@pytest.mark.parametrize("seed", range(3))
def test_mbrl_optimizer_is_the_reference(with_callback: bool, seed: int) -> None:
    pytest.importorskip("mbrl")
    from impl.adapters.mbrl_optimizer import DCEMOptimizer
    from impl.control.planner import PLANNER_SOLVER

    rng = np.random.default_rng(seed)
    horizon, n_u = 3, 2
    lower = rng.uniform(-2.0, -0.5, (horizon, n_u)).astype(np.float32)
    upper = rng.uniform(0.5, 2.0, (horizon, n_u)).astype(np.float32)
    solver = PLANNER_SOLVER.replace(n_sample=16, n_elite=4, n_iter=3)
    if seed == 2:
        solver = solver.replace(tau=0.5, output="mean")
    optimizer = DCEMOptimizer(
        lower.tolist(), upper.tolist(), solver=solver, init_std=0.7, seed=seed
    )  # fmt: skip
    target = rng.uniform(-0.5, 0.5, (horizon, n_u))
    x0 = torch.from_numpy(rng.uniform(-0.5, 0.5, (horizon, n_u))).float()

    def reward(population: Tensor) -> Tensor:  # maximized
        diff = population.double() - torch.from_numpy(target)
        return -((diff**2).flatten(1).sum(-1) + 0.3 * torch.cos(3 * population).flatten(1).sum(-1))

    def cost_numpy(x: np.ndarray) -> np.ndarray:
        diff = x.reshape(len(x), horizon, n_u) - target
        return np.asarray((diff**2).reshape(len(x), -1).sum(-1) + 0.3 * np.cos(3 * x).sum(-1))

    reports: list[tuple[Tensor, Tensor, int]] = []

    def callback(population: Tensor, values: Tensor, iteration: int) -> None:
        reports.append((population.clone(), values.clone(), iteration))

    d = horizon * n_u
    generator = torch.Generator().manual_seed(seed)
    noise = torch.stack(
        [torch.randn((1, solver.n_sample, d), generator=generator) for _ in range(solver.n_iter)]
    )
    x = optimizer.optimize(reward, x0=x0, callback=callback if with_callback else None)
    trace = ref_cem.cem(
        cost_numpy,
        x0.double().numpy().reshape(-1),
        np.full(d, np.float32(0.7), dtype=np.float64),
        noise[:, 0].double().numpy(),
        n_elite=solver.n_elite,
        tau=solver.tau,
        lb=lower.reshape(-1).astype(np.float64),
        ub=upper.reshape(-1).astype(np.float64),
        normalize=solver.normalize,
        std_min=solver.std_min,
        smoothing=solver.smoothing,
        keep_elites=solver.keep_elites,
        mean_candidate=solver.mean_candidate,
    )
    if solver.tau is None and any(boundary_tie(v[np.isfinite(v)], 4, 1e-5) for v in trace.values):
        pytest.fail("a near tie in the reference run: choose another seed")
    point = trace.best_x if solver.output == "best" else trace.mean
    assert x.shape == (horizon, n_u) and x.dtype == torch.float32
    np.testing.assert_allclose(x.double().numpy().reshape(-1), point, rtol=0, atol=3e-5)
    if with_callback:
        assert [r[2] for r in reports] == list(range(solver.n_iter))
        for population, values, iteration in reports:
            assert population.shape[1:] == (horizon, n_u)
            m = population.shape[0]
            np.testing.assert_allclose(
                population.double().numpy().reshape(m, -1),
                trace.samples[iteration][:m], rtol=0, atol=3e-5,
            )  # fmt: skip
            np.testing.assert_allclose(
                values.double().numpy(), -trace.values[iteration][:m], rtol=1e-5, atol=1e-5
            )
    else:
        assert reports == []


# -- lml with a tensor temperature over two leading dimensions (LML-20, LML-22) -----------------


@pytest.mark.spec("LML-5", "LML-20", "LML-22", "LML-23")
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    tau_shape=st.sampled_from([(2, 3, 1), (3, 1), (2, 1, 1), (1, 1), (1,), ()]),
    x_grad=st.booleans(),
)
def test_lml_tau_of_every_broadcast_shape_over_two_leading_dimensions(
    seed: int, tau_shape: tuple[int, ...], x_grad: bool
) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    k = int(rng.integers(1, n))
    x = rng.standard_normal((2, 3, n)) * 10 ** rng.uniform(-1, 1)
    taus = np.asarray(10 ** rng.uniform(-1, 0.5, tau_shape))
    tau = torch.from_numpy(taus).requires_grad_()
    y = lml(torch.from_numpy(x).requires_grad_(x_grad), k, tau)
    cotangent = rng.standard_normal((2, 3, n))
    (grad,) = torch.autograd.grad((y * torch.from_numpy(cotangent)).sum(), tau)
    assert grad.shape == tau.shape
    per_row = np.broadcast_to(taus, (2, 3, 1))[..., 0]
    expected = np.zeros((2, 3))
    for i in range(2):
        for j in range(3):
            t0 = float(per_row[i, j])
            exact = ref_lml.lml_bisect(x[i, j], k, t0)
            assert np.abs(y[i, j].detach().numpy() - exact).max() <= 1e-12
            h = 1e-6 * t0
            plus, minus = (ref_lml.lml_bisect(x[i, j], k, t0 + s) for s in (h, -h))
            expected[i, j] = cotangent[i, j] @ ((plus - minus) / (2 * h))
    # summed to τ's shape: the gradient of the broadcast
    summed = np.broadcast_to(expected[..., None], (2, 3, 1)).copy()
    while summed.ndim > len(tau_shape):
        summed = summed.sum(0)
    for axis, size in enumerate(tau_shape):
        if size == 1:
            summed = summed.sum(axis, keepdims=True)
    summed = summed.reshape(tau_shape)
    np.testing.assert_allclose(grad.numpy(), summed, rtol=1e-6, atol=1e-6)


# -- bad inputs (CEM-22) ------------------------------------------------------------------------


def _never(x: Tensor) -> Tensor:
    raise AssertionError("f ran before the arguments were checked")


SMALL: dict[str, Any] = dict(n_sample=10, n_elite=3, n_iter=2)

BAD_SOLVES: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("lb nan alone", dict(lb=math.nan), ValueError, "lb"),
    ("ub nan alone", dict(ub=math.nan), ValueError, "ub"),
    ("lb +inf alone", dict(lb=math.inf), ValueError, "lb"),
    ("ub -inf alone", dict(ub=-math.inf), ValueError, "ub"),
    ("lb nan with ub", dict(lb=math.nan, ub=1.0), ValueError, "lb"),
    ("lb tensor nan alone", dict(lb=torch.tensor([0.0, math.nan, 0.0])), ValueError, "lb"),
    ("lb tensor +inf alone", dict(lb=torch.tensor([0.0, math.inf, 0.0])), ValueError, "lb"),
    ("ub tensor -inf alone", dict(ub=torch.tensor([-math.inf, 0.0, 0.0])), ValueError, "ub"),
    ("ub tensor nan alone", dict(ub=torch.tensor([math.nan, 0.0, 0.0])), ValueError, "ub"),
    ("lb list", dict(lb=[0.0, 0.0, 0.0]), TypeError, "lb"),
    ("init_std list", dict(init_std=[1.0, 1.0, 1.0]), TypeError, "init_std"),
    ("init_std nan", dict(init_std=math.nan), ValueError, "init_std"),
    ("init_std complex", dict(init_std=torch.ones(3, dtype=torch.cfloat)), TypeError, "init_std"),
    ("init_mean int", dict(init_mean=torch.zeros(3, dtype=torch.int64)), TypeError, "init_mean"),
    ("init_mean 3-D", dict(init_mean=torch.zeros(1, 2, 3)), ValueError, "init_mean"),
    ("noise shape", dict(noise=torch.zeros(2, 10, 4)), ValueError, "noise"),
    ("noise int", dict(noise=torch.zeros(2, 10, 3, dtype=torch.int64)), TypeError, "noise"),
    ("generator", dict(generator=1), TypeError, "generator"),
    ("proposals shape", dict(proposals=torch.zeros(2, 4)), ValueError, "proposals"),
    ("proposals nan", dict(proposals=torch.full((2, 3), math.nan)), ValueError, "proposals"),
    ("elites list", dict(elites=[[0.0, 0.0, 0.0]]), TypeError, "elites"),
    ("callback", dict(callback=1), TypeError, "callback"),
    ("f", dict(f=1), TypeError, "f must be callable"),
    ("f None", dict(f=None), TypeError, "f must be callable, got NoneType"),
    ("tau vector", dict(tau=torch.tensor([0.5])), ValueError, "tau"),
    ("tau int tensor", dict(tau=torch.tensor(1)), ValueError, "tau"),
    ("tau complex", dict(tau=1j), TypeError, "tau"),
    ("tau nan", dict(tau=math.nan), ValueError, "tau"),
    ("std_min nan", dict(std_min=math.nan), ValueError, "std_min"),
    ("tol -1", dict(tol=-1.0), ValueError, "tol"),
    ("output", dict(output="median"), ValueError, "median"),
    ("n_sample float", dict(n_sample=10.0), TypeError, "n_sample"),
    ("grad_iters bool", dict(grad_iters=True), TypeError, "grad_iters"),
    ("elite_temperature nan", dict(tau=None, elite_temperature=math.nan), ValueError, "elite_t"),
]


@pytest.mark.spec("CEM-22", "CEM-10", "CEM-36")
@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [case[1:] for case in BAD_SOLVES],
    ids=[case[0] for case in BAD_SOLVES],
)
def test_bad_inputs_are_named_errors_before_f_runs(
    changes: dict[str, Any], error: type[Exception], words: str
) -> None:
    arguments: dict[str, Any] = dict(f=_never, init_mean=torch.zeros(3), init_std=1.0, **SMALL)
    arguments.update(changes)
    if "proposals" in changes:  # (solve only)
        options = CEMOptions(**SMALL)
        with pytest.raises(error, match=words):
            solve(_never, torch.zeros(3), 1.0, options, proposals=changes["proposals"])
        return
    with pytest.raises(error, match=words):
        dcem(**arguments)


@pytest.mark.spec("CEM-22", "CEM-10")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_a_one_sided_box_that_is_empty_or_nan_is_an_error_on_every_entry(
    dtype: torch.dtype,
) -> None:
    # Failed before the fix: with one bound missing, lb = nan or +inf (ub = nan or
    # -inf) was not checked: every candidate was clipped to NaN or +-inf, f never saw a
    # finite value, and the solve returned init_mean as its answer, with no error.
    init = torch.zeros(2, 3, dtype=dtype)
    for bounds in (dict(lb=math.nan), dict(lb=math.inf), dict(ub=math.nan), dict(ub=-math.inf)):
        with pytest.raises(ValueError, match="lb < ub"):
            dcem(_never, init, 1.0, **bounds, **SMALL)  # type: ignore[arg-type]
        ((name, value),) = bounds.items()
        row = torch.zeros(2, 3, dtype=dtype)
        row[1, 2] = value
        with pytest.raises(ValueError, match="lb < ub"):
            dcem(_never, init, 1.0, **{name: row}, **SMALL)  # type: ignore[arg-type]
    # the open ends are fine: lb = -inf alone, ub = +inf alone
    for bounds in (dict(lb=-math.inf), dict(ub=math.inf)):
        result = dcem(lambda x: (x.float() ** 2).sum(-1), init, 1.0, **bounds, **SMALL)  # type: ignore[arg-type]
        assert bool(torch.isfinite(result.x).all())


@pytest.mark.spec("CEM-22")
def test_a_callback_that_is_not_callable_is_named_before_f_runs() -> None:
    # Failed before the fix: the callback was first called after the first iteration,
    # so f ran, then Python raised "'int' object is not callable" (no name).
    calls: list[int] = []

    def f(x: Tensor) -> Tensor:
        calls.append(1)
        return (x**2).sum(-1)

    with pytest.raises(TypeError, match="callback must be callable"):
        dcem(f, torch.zeros(3), 1.0, callback=1, **SMALL)  # type: ignore[arg-type]
    assert calls == []
    with pytest.raises(TypeError, match="f must be callable, got int"):
        dcem(1, torch.zeros(3), 1.0, **SMALL)  # type: ignore[arg-type]


def _planner_calls() -> list[tuple[str, Any, type[Exception], str]]:
    from impl.control import (
        MPC,
        ActionDecoder,
        LatentPlannerConfig,
        PlannerConfig,
        latent_plan,
        plan,
    )

    solver = CEMOptions(n_sample=10, n_elite=3, n_iter=2, tau=None)
    config = PlannerConfig(horizon=3, action_lb=-1.0, action_ub=1.0, solver=solver)
    latent = LatentPlannerConfig(latent_dim=2, solver=solver)
    decoder = ActionDecoder(2, 3, 1, -1.0, 1.0, hidden=8, n_hidden=1)

    def cost(u: Tensor) -> Tensor:
        return (u**2).flatten(2).sum(-1)

    return [
        ("plan cost", lambda: plan(1, config, 2),  # type: ignore[arg-type]
         TypeError, "cost_fn must be callable, got int"),
        ("act cost", lambda: MPC(config, 2, seed=0).act(1),  # type: ignore[arg-type]
         TypeError, "cost_fn must be callable"),
        ("plan init_mean list", lambda: plan(cost, config, 1, init_mean=[[[0.0]] * 3]),  # type: ignore[arg-type]
         TypeError, "init_mean must be a torch.Tensor, got list"),
        ("latent cost", lambda: latent_plan(1, decoder, latent, 2),  # type: ignore[arg-type]
         TypeError, "cost_fn must be"),
        ("latent decoder", lambda: latent_plan(cost, 1, latent, 2),  # type: ignore[arg-type]
         TypeError, "decoder must be"),
        ("latent init_mean list",
         lambda: latent_plan(cost, decoder, latent, 1, init_mean=[[0.0, 0.0]]),  # type: ignore[arg-type]
         TypeError, "init_mean must be a torch.Tensor"),
    ]  # fmt: skip


def _mbrl_calls() -> list[tuple[str, Any, type[Exception], str]]:
    pytest.importorskip("mbrl")
    from impl.adapters.mbrl_optimizer import DCEMOptimizer

    solver = CEMOptions(n_sample=10, n_elite=3, n_iter=2, tau=None)
    bounds = ([[-1.0]], [[1.0]])

    def objective(population: Tensor) -> Tensor:
        return -population.sum((1, 2))

    return [
        ("init_std str", lambda: DCEMOptimizer(*bounds, solver=solver, init_std="a"),  # type: ignore[arg-type]
         TypeError, "init_std must be a real number"),
        ("init_std nan", lambda: DCEMOptimizer(*bounds, solver=solver, init_std=math.nan),
         ValueError, "init_std must be finite"),
        ("seed float", lambda: DCEMOptimizer(*bounds, solver=solver, seed=1.5),  # type: ignore[arg-type]
         TypeError, "seed must be an int, got 1.5"),
        ("obj_fun", lambda: DCEMOptimizer(*bounds, solver=solver).optimize(1),  # type: ignore[arg-type]
         TypeError, "obj_fun must be callable, got int"),
        ("callback",
         lambda: DCEMOptimizer(*bounds, solver=solver).optimize(objective, callback=1),  # type: ignore[arg-type]
         TypeError, "callback must be callable or None, got int"),
    ]  # fmt: skip


@pytest.mark.spec("CTL-13", "CTL-19")
@pytest.mark.parametrize("which", ["planners", "mbrl"])
def test_planner_and_adapter_inputs_that_are_not_callables_or_tensors_are_named(
    which: str,
) -> None:
    # Failed before the fix: a non-callable cost_fn (plan, MPC.act, latent_plan), decoder,
    # obj_fun or mbrl callback raised Python's bare "'int' object is not callable" from
    # inside the solve; an init_mean list raised AttributeError ('list' has no 'device');
    # DCEMOptimizer(init_std="a") a TypeError of torch.full_like naming 'fill_value', and
    # DCEMOptimizer(seed=1.5) a RuntimeError of manual_seed.
    calls = _planner_calls() if which == "planners" else _mbrl_calls()
    for name, call, error, words in calls:
        with pytest.raises(error, match=words):
            call()
            pytest.fail(f"{name}: no error")


@pytest.mark.spec("CEM-24", "CEM-12")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
def test_values_past_the_state_range_rank_as_finite(dtype: torch.dtype) -> None:
    # Failed before the fix: f's float64 values were cast to the (float32) state's dtype,
    # so a finite -1e39 became -inf and ranked last (CEM-12), the worst candidate instead
    # of the best. The derivation: every candidate with x_0 > 0.5 has value -1e39, the
    # rest (x^2).sum() >= 0, so with hard selection the best sample seen is one of them
    # and its value is the state dtype's most negative finite number.
    def f(x: Tensor) -> Tensor:
        wide = x.double()
        return torch.where(wide[..., 0] > 0.5, -1e39, (wide**2).sum(-1))

    generator = torch.Generator().manual_seed(3)
    options = dict(n_sample=64, n_elite=4, n_iter=2, tau=None)
    result = dcem(f, torch.zeros(3, dtype=dtype), 1.0, generator=generator, **options)  # type: ignore[arg-type]
    state = torch.promote_types(dtype, torch.float32)
    assert result.best_value.dtype == dtype
    assert float(result.best_value) == float(torch.tensor(-torch.finfo(state).max).to(dtype))
    assert float(result.best_x[0]) > 0.5
    assert float(result.mean[0]) > 0.5  # the elites are those candidates too
    # a plain -inf is still non-finite and ranks last
    result = dcem(
        lambda x: torch.where(x[..., 0].double() > 0.5, -math.inf, (x.double() ** 2).sum(-1)),
        torch.zeros(3, dtype=dtype),
        1.0,
        generator=torch.Generator().manual_seed(3),
        **options,  # type: ignore[arg-type]
    )
    assert float(result.best_x[0]) <= 0.5 and math.isfinite(float(result.best_value))


@pytest.mark.spec("CEM-22", "CTL-13", "CTL-17", "CTL-19")
def test_validate_dtype_seed_and_bound_types_are_named() -> None:
    # Failed before the fix: validate="no" was truthy and silently meant True; MPC and
    # plan with dtype="float32" raised torch's promote_types error and dtype=torch.int64
    # one naming init_mean; DCEMOptimizer("ab", "cd") raised torch's own error, and
    # DCEMOptimizer accepted a negative seed that MPC rejects.
    from impl.control import MPC, PlannerConfig, plan

    with pytest.raises(TypeError, match="validate must be True, False or None, got 'no'"):
        dcem(_never, torch.zeros(3), 1.0, validate="no", **SMALL)  # type: ignore[arg-type]
    config = PlannerConfig(horizon=3, action_lb=-1.0, action_ub=1.0)

    def cost(u: Tensor) -> Tensor:
        return (u**2).flatten(2).sum(-1)

    for bad in ("float32", torch.int64):
        with pytest.raises(TypeError, match=r"dtype must be a floating-point torch\.dtype"):
            MPC(config, 1, seed=0, dtype=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"dtype must be a floating-point torch\.dtype"):
            plan(cost, config, 1, dtype=bad)  # type: ignore[arg-type]
    pytest.importorskip("mbrl")
    from impl.adapters.mbrl_optimizer import DCEMOptimizer

    with pytest.raises(TypeError, match="lower_bound must be a tensor"):
        DCEMOptimizer("ab", "cd")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="upper_bound must be a tensor"):
        DCEMOptimizer([[-1.0]], [[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match="seed must satisfy 0 <= seed"):
        DCEMOptimizer([[-1.0]], [[1.0]], seed=-1)
