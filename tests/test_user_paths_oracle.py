"""Paths users take that the other tests did not compare with
the oracle (``reference/``) or an independent derivation.

- the recipes of CEM-37 … CEM-42 on every differentiation path (checkpoint,
  ``grad_iters``, reused buffers, a graph, a callback), with tensor bounds,
  weighted elites, a tensor ``τ`` and non-finite values, against
  ``reference.cem`` (the recipe test runs them on number bounds without
  these paths);
- the checkpointed gradient with the recipes and colored noise (CEM-26, CEM-33);
- ``MPC`` with the default iCEM recipe over several control steps, against
  ``reference.cem`` with the warm start and kept elites shifted by hand
  (CTL-5, CTL-6, CTL-22);
- ``lml`` on rows with infinite entries and one ``τ`` per row, against
  ``reference.lml.lml_bisect`` (LML-4, LML-15, LML-22);
- two defects (tests that failed before their fixes): the plan's cost when the solver never
  saw a finite value (CTL-2), and half-precision candidates rounded out of
  the box (CEM-10, CEM-24).
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from impl.cem import ColoredNoise, DCEMStep, solve
from impl.control import MPC, PlannerConfig, plan
from impl.control.planner import PLANNER_SOLVER
from impl.dcem import dcem
from impl.lml import lml
from impl.options import CEMOptions, Output, Sampling
from tests.oracle import reference_run

ref_cem = importlib.import_module("reference.cem")
ref_lml = importlib.import_module("reference.lml")


def f_torch(x: Tensor) -> Tensor:
    """Smooth and multimodal, with NaN and +inf patches (CEM-12)."""
    q = ((x - 0.3) ** 2).sum(-1) + 0.5 * torch.cos(3.0 * x).sum(-1)
    wave = torch.sin(7 * x[..., 0])
    nan, inf = torch.full_like(q, math.nan), torch.full_like(q, math.inf)
    return torch.where(wave > 0.8, nan, torch.where(wave < -0.9, inf, q))


def f_numpy(x: np.ndarray) -> np.ndarray:
    q = ((x - 0.3) ** 2).sum(-1) + 0.5 * np.cos(3.0 * x).sum(-1)
    wave = np.sin(7 * x[..., 0])
    return np.asarray(np.where(wave > 0.8, np.nan, np.where(wave < -0.9, np.inf, q)))


PATHS = ("plain", "callback", "graph", "checkpoint", "grad_iters", "reuse")
OUTPUTS: tuple[Output, ...] = ("mean", "best", "sample")
SAMPLINGS: tuple[Sampling, ...] = ("clip", "truncated", "variance_constrained")


@pytest.mark.spec("CEM-35", "CEM-30", "CEM-36", "CEM-37", "CEM-38", "CEM-39", "CEM-40", "CEM-41")
@settings(max_examples=36, deadline=None)
@given(path=st.sampled_from(PATHS), seed=st.integers(0, 2**32 - 1))
def test_recipes_on_every_path_match_the_reference(path: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 30))
    k = int(rng.integers(1, n // 2 + 1))
    t = int(rng.integers(1, 5))
    batch, d = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    graph = path in ("graph", "checkpoint", "grad_iters")
    tau: float | None = [None, 0.0, 0.5][int(rng.integers(3))]
    tau_option: float | Tensor | None = tau
    if tau and rng.integers(2):
        tau_option = torch.tensor(tau, dtype=torch.float64, requires_grad=graph)
    hard = not tau
    options = CEMOptions(
        n_sample=n,
        n_elite=k,
        n_iter=t,
        tau=tau_option,
        normalize=bool(rng.integers(2)),
        std_min=[0.0, 1e-3][int(rng.integers(2))],
        tol=[None, 1e-2][int(rng.integers(2))],
        output=OUTPUTS[int(rng.integers(3))],
        smoothing=[0.0, 0.2][int(rng.integers(2))],
        elite_temperature=[None, 0.5][int(rng.integers(2))] if hard else None,
        sampling=SAMPLINGS[int(rng.integers(3))],
        std_max=[None, 0.4, 5.0][int(rng.integers(3))],
        keep_elites=[0.0, 0.3, 1.0][int(rng.integers(3))],
        population_decay=[1.0, 1.3, 3.0][int(rng.integers(3))],
        mean_candidate=bool(rng.integers(2)),
        checkpoint=path == "checkpoint",
        grad_iters=int(rng.integers(1, t + 1)) if path == "grad_iters" else None,
        reuse_buffers=path == "reuse",
    )
    mean0 = rng.uniform(-1.5, 1.5, (batch, d))
    std0 = rng.uniform(0.2, 2.0, (batch, d))
    tensor_bounds = bool(rng.integers(2))
    lb: np.ndarray | float = -2.0
    ub: np.ndarray | float = 2.5
    if tensor_bounds:
        lb, ub = rng.uniform(-2.5, -1.6, (batch, d)), rng.uniform(1.6, 2.5, (batch, d))
    noise = rng.standard_normal((t, batch, n, d))
    n_elites0, n_proposals = [0, 1, 3][int(rng.integers(3))], [0, 2][int(rng.integers(2))]
    elites0 = rng.uniform(-3, 3, (batch, n_elites0, d)) if n_elites0 else None
    proposals = rng.uniform(-3, 3, (batch, n_proposals, d)) if n_proposals else None
    sample_noise = torch.randn(
        (batch, 1, d), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )

    def tensor(a: np.ndarray | float) -> Tensor | float:
        return torch.from_numpy(a) if isinstance(a, np.ndarray) else a

    init = torch.from_numpy(mean0).requires_grad_(graph)
    seen: list[DCEMStep] = []
    with torch.set_grad_enabled(graph):
        result = solve(
            f_torch,
            init,
            torch.from_numpy(std0),
            options,
            lb=tensor(lb),
            ub=tensor(ub),
            noise=torch.from_numpy(noise),
            generator=torch.Generator().manual_seed(seed),
            proposals=None if proposals is None else torch.from_numpy(proposals),
            elites=None if elites0 is None else torch.from_numpy(elites0),
            callback=seen.append if path == "callback" else None,
        )
    if graph and result.x.requires_grad:
        (grad,) = torch.autograd.grad(result.x.sum() + result.std.sum(), init, allow_unused=True)
        assert grad is None or bool(torch.isfinite(grad).all())
    for b in range(batch):
        trace = reference_run(
            f_numpy, options, b, mean0, std0, noise, tau=tau, lb=lb, ub=ub,
            proposals=proposals, elites=elites0, sample_noise=sample_noise[:, 0].numpy(),
        )  # fmt: skip
        np.testing.assert_allclose(result.mean[b].detach().numpy(), trace.mean, 1e-9, 1e-9)
        np.testing.assert_allclose(result.std[b].detach().numpy(), trace.std, 1e-9, 1e-9)
        assert int(result.n_iter[b]) == trace.n_iter
        assert bool(result.converged[b]) == trace.converged
        best = result.best_value[b].item()
        assert best == trace.best_value or math.isclose(best, trace.best_value, rel_tol=1e-9)
        assert result.elites is not None
        kept = result.elites[b].detach().numpy()
        finite_kept = np.isfinite(f_numpy(trace.kept)) if trace.kept.size else np.zeros(0, bool)
        # among non-finite values the order is unspecified (CEM-4): compare the finite ones
        np.testing.assert_allclose(kept[finite_kept], trace.kept[finite_kept], 1e-9, 1e-9)
        point = {"mean": trace.mean, "best": trace.best_x, "sample": trace.sample}[options.output]
        np.testing.assert_allclose(result.x[b].detach().numpy(), point, 1e-9, 1e-9)
        if path == "callback":
            for step in seen[: trace.n_iter]:
                np.testing.assert_allclose(
                    step.mean[b].numpy(), trace.means[step.iteration + 1], 1e-9, 1e-9
                )


@pytest.mark.spec("CEM-26", "CEM-33")
@pytest.mark.parametrize("seed", range(12))
def test_checkpointed_gradient_with_recipes_and_colored_noise(seed: int) -> None:
    """Checkpointing gives the plain run's outputs, generator state and gradients,
    also with kept elites, proposals, population decay, the mean candidate, the
    executed sample and colored noise replayed from a generator."""
    rng = np.random.default_rng(seed)
    batch, horizon, n_u = 2, 3, 2
    d = horizon * n_u
    tau: float | Tensor | None = [None, 0.5, "tensor"][seed % 3]  # type: ignore[assignment]
    if tau == "tensor":
        tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    base = dict(
        n_sample=12,
        n_elite=3,
        n_iter=3,
        tau=tau,
        output=["mean", "best", "sample"][seed % 3],
        smoothing=0.2,
        sampling=["clip", "truncated", "variance_constrained"][(seed // 3) % 3],
        std_max=0.5 if seed % 2 else None,
        keep_elites=0.7,
        population_decay=1.5 if seed % 4 < 2 else 1.0,
        mean_candidate=bool(seed % 2),
        tol=1e-2 if seed % 5 == 0 else None,
    )
    target = torch.tensor(rng.uniform(-0.5, 0.5, d), requires_grad=True)

    def f(x: Tensor) -> Tensor:
        return ((x - target) ** 2).sum(-1) + 0.3 * torch.cos(3 * x).sum(-1)

    mean0 = torch.tensor(rng.uniform(-1, 1, (batch, d)), requires_grad=True)
    std0 = torch.tensor(rng.uniform(0.3, 1, (batch, d)), requires_grad=True)
    elites = torch.tensor(rng.uniform(-1, 1, (batch, 2, d)), requires_grad=True)
    proposals = torch.tensor(rng.uniform(-1, 1, (batch, 2, d)), requires_grad=True)
    leaves = [mean0, std0, target, elites, proposals]
    if isinstance(tau, Tensor):
        leaves.append(tau)
    runs = []
    for checkpoint in (False, True):
        generator = torch.Generator().manual_seed(seed)
        result = solve(
            f,
            mean0,
            std0,
            CEMOptions(**base, checkpoint=checkpoint),  # type: ignore[arg-type]
            lb=-1.5,
            ub=1.5,
            generator=generator,
            sampler=ColoredNoise(1.5, horizon, n_u),
            proposals=proposals,
            elites=elites,
        )
        loss = result.x.sum() + result.mean.square().sum() + result.std.sum()
        loss = loss + result.best_value.sum()
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        runs.append((result, grads, generator.get_state()))
    (plain, plain_grads, plain_rng), (ckpt, ckpt_grads, ckpt_rng) = runs
    for name in ("x", "mean", "std", "best_x", "best_value", "elites"):
        assert torch.equal(getattr(plain, name), getattr(ckpt, name)), name
    assert torch.equal(plain_rng, ckpt_rng)
    for a, b in zip(plain_grads, ckpt_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)


@pytest.mark.spec("CTL-5", "CTL-6", "CTL-22", "CTL-23")
def test_mpc_with_the_icem_recipe_is_the_reference_over_steps() -> None:
    """Three control steps of ``MPC`` with ``PLANNER_SOLVER``'s recipe for three
    environments, against ``reference.cem`` from the warm start and kept elites
    shifted by hand (``[u_2, …, u_H, midpoint]``), on the controller's noise."""
    batch, horizon, n_u = 3, 4, 2
    d = horizon * n_u
    lb, ub = np.array([-1.0, -2.0]), np.array([1.5, 2.0])
    solver = PLANNER_SOLVER.replace(n_sample=20, n_elite=5, n_iter=3)
    config = PlannerConfig(
        horizon=horizon,
        action_lb=torch.from_numpy(lb),
        action_ub=torch.from_numpy(ub),
        action_dim=n_u,
        solver=solver,
    )
    target = np.random.default_rng(0).uniform(-1, 1, (batch, horizon, n_u))

    def cost(u: Tensor) -> Tensor:
        diff = u - torch.from_numpy(target).to(u)[:, None]
        return (diff**2).flatten(2).sum(-1) + 0.3 * torch.cos(3 * u).flatten(2).sum(-1)

    mpc = MPC(config, batch, dtype=torch.float64, seed=5)
    mid = 0.5 * (lb + ub)
    warm = np.broadcast_to(mid, (batch, horizon, n_u)).copy()
    elites: list[np.ndarray | None] = [None] * batch
    lb_flat, ub_flat = np.tile(lb, horizon), np.tile(ub, horizon)
    for _ in range(3):
        generator = torch.Generator()
        generator.set_state(mpc.state.rng)
        noise = torch.stack(
            [
                torch.randn((batch, solver.n_sample, d), generator=generator, dtype=torch.float64)
                for _ in range(solver.n_iter)
            ]
        ).numpy()
        result = mpc.act(cost)
        for b in range(batch):

            def cost_b(x: np.ndarray, b: int = b) -> np.ndarray:
                diff = x.reshape(-1, horizon, n_u) - target[b]
                return np.asarray(
                    (diff**2).reshape(len(x), -1).sum(-1) + 0.3 * np.cos(3 * x).sum(-1)
                )

            trace = ref_cem.cem(
                cost_b,
                warm[b].reshape(-1),
                np.tile(0.5 * (ub - lb), horizon),
                noise[:, b],
                n_elite=solver.n_elite,
                tau=None,
                lb=lb_flat,
                ub=ub_flat,
                smoothing=solver.smoothing,
                keep_elites=solver.keep_elites,
                mean_candidate=True,
                elites=elites[b],
            )
            actions = trace.best_x.reshape(horizon, n_u)
            np.testing.assert_allclose(result.actions[b].numpy(), actions, rtol=0, atol=1e-12)
            assert result.cost[b].item() == pytest.approx(trace.best_value, rel=1e-12)
            warm[b] = np.concatenate([actions[1:], mid[None]])
            kept = trace.kept.reshape(-1, horizon, n_u)
            shifted = np.concatenate([kept[:, 1:], np.broadcast_to(mid, (len(kept), 1, n_u))], 1)
            elites[b] = shifted.reshape(len(kept), d)
        np.testing.assert_allclose(mpc.state.warm_start.numpy(), warm, rtol=0, atol=1e-12)
        assert mpc.state.elites is not None
        for b in range(batch):
            got = mpc.state.elites[b].numpy().reshape(-1, d)
            expected = elites[b]
            assert expected is not None  # set for every problem by the step above
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.spec("LML-4", "LML-15", "LML-22", "LML-23", "LML-24")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("tau_kind", ["float", "scalar", "per_row"])
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_lml_with_infinite_entries_and_tensor_temperatures(
    dtype: torch.dtype, tau_kind: str, seed: int
) -> None:
    """Rows with ±∞ entries and ties, one row (LML-24) or several (LML-23),
    a number τ, a 0-dim τ or one τ per row, against the float64 bisection."""
    rng = np.random.default_rng(seed)
    n, batch = int(rng.integers(2, 40)), int(rng.integers(1, 4))
    k = int(rng.integers(1, n))
    x = rng.standard_normal((batch, n)) * 10 ** rng.uniform(-2, 2)
    if rng.integers(3) == 0:
        x = np.round(x)  # ties
    for b in range(batch):
        for _ in range(int(rng.integers(0, 3))):
            x[b, rng.integers(n)] = [np.inf, -np.inf][int(rng.integers(2))]
    x = torch.from_numpy(x).to(dtype).double().numpy()  # the values as the dtype holds them
    taus = 10 ** rng.uniform(-2, 1, batch)
    tau: float | Tensor
    if tau_kind == "float":
        tau = float(taus[0])
        row_taus = [float(torch.tensor(tau, dtype=torch.float64).to(dtype))] * batch
    elif tau_kind == "scalar":
        tau = torch.tensor(taus[0], dtype=torch.float64)
        row_taus = [float(tau.to(dtype))] * batch
    else:
        tau = torch.from_numpy(taus).reshape(batch, 1)
        row_taus = [float(torch.tensor(t).to(dtype)) for t in taus]
    y = lml(torch.from_numpy(x).to(dtype), k, tau).double().numpy()
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    for b in range(batch):
        row = x[b]
        ordered = np.sort(row)[::-1]
        if not (np.isfinite(ordered[k - 1]) and np.isfinite(ordered[k])):
            assert np.isnan(y[b]).all()  # LML-15
            continue
        assert (y[b][row == np.inf] == 1).all() and (y[b][row == -np.inf] == 0).all()
        if np.abs(row[np.isfinite(row)]).max() / row_taus[b] > 1e4:
            continue  # outside LML-4's range
        expected = ref_lml.lml_bisect(row, k, row_taus[b])
        assert np.abs(y[b] - expected).max() <= tolerance


# -- defects -------------------------------------------------------------------------------------


@pytest.mark.spec("CTL-2")
def test_plan_cost_is_the_cost_of_the_returned_actions_when_no_value_was_finite() -> None:
    # Failed before the fix: with output="best", plan() returned result.best_value as the
    # cost. When the solver never saw a finite value, best_value is +inf and the actions
    # are init_mean (CEM-16), but CTL-2 says cost = cost_fn(actions): here 0, returned inf.
    def cost(u: Tensor) -> Tensor:  # a hard constraint: +inf unless every |u| <= 1e-3
        feasible = (u.abs() <= 1e-3).flatten(2).all(-1)
        return torch.where(feasible, (u**2).flatten(2).sum(-1), math.inf)

    solver = CEMOptions(n_sample=20, n_elite=4, n_iter=2, tau=None, output="best")
    config = PlannerConfig(horizon=3, action_lb=-1.0, action_ub=1.0, solver=solver)
    result = plan(cost, config, 2, generator=torch.Generator().manual_seed(0))
    expected = cost(result.actions.unsqueeze(1))[:, 0]  # the cost of what plan returned
    assert torch.equal(expected, torch.zeros(2))
    assert torch.equal(result.cost, expected)


@pytest.mark.spec("CEM-10", "CEM-24")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_candidates_and_results_lie_in_the_box(dtype: torch.dtype) -> None:
    # Failed before the fix: for a float16/bfloat16 init_mean the state is float32
    # (CEM-24) and the candidates were clipped to [lb, ub] there, then rounded to
    # init_mean's dtype for f and for the result: a sample clipped to ub = 0.3 became
    # 0.30005 (float16) or 0.30078 (bfloat16), outside the box that CEM-10 says every
    # X_t, mean and best_x lie in. Now the bounds move inward to the dtype's nearest
    # values (CEM-24), and the candidates reach exactly those.
    lower, upper = -0.3, 0.3
    seen: list[Tensor] = []

    def f(x: Tensor) -> Tensor:
        seen.append(x.detach().double())
        return -x.float().sum(-1)  # pushes every coordinate to ub

    result = dcem(
        f,
        torch.zeros(2, 3, dtype=dtype),
        1.0,
        lb=lower,
        ub=upper,
        n_sample=20,
        n_elite=4,
        n_iter=3,
        tau=None,
        output="best",
        generator=torch.Generator().manual_seed(0),
    )
    for candidates in seen:
        assert bool(((candidates >= lower) & (candidates <= upper)).all())
    for field in (result.x, result.mean, result.best_x):
        assert bool(((field.double() >= lower) & (field.double() <= upper)).all())
    # the largest value of the dtype <= 0.3, found by stepping down from its rounding
    top = torch.tensor(upper, dtype=dtype)
    while float(top) > upper:
        top = torch.nextafter(top, torch.tensor(-1.0, dtype=dtype))
    assert float(torch.cat(seen).max()) == float(top)  # reached: the box is not shrunk further
    assert float(torch.cat(seen).min()) >= lower


@pytest.mark.spec("CEM-22", "CEM-24")
def test_half_bounds_with_no_value_of_the_dtype_between_them_are_a_named_error() -> None:
    # bfloat16 holds 0.30078125 and 0.298828125, nothing in [0.299, 0.3]
    with pytest.raises(ValueError, match=r"0\.299"):
        dcem(
            lambda x: x.float().sum(-1), torch.zeros(3, dtype=torch.bfloat16), 1.0,
            lb=0.299, ub=0.3, n_sample=10, n_elite=2, n_iter=1,
        )  # fmt: skip
