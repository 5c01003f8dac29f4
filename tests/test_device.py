"""impl on the tensors of one device against the reference (issue 14).

Every test here takes the ``device`` fixture (``pytest --device cuda``; the
default is ``cpu``): the inputs are made on that device, impl runs there,
and the results come back to the host to be compared with ``reference``
(float64 NumPy) or with an evaluation of their own on the CPU. The last
tests run every entry point of ``benchmarks.gpu_sync`` on ``meta`` tensors,
where any read of a value on the host raises: the CPU's stand-in for the
CUDA sync check.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from benchmarks.gpu_sync import ENTRY_POINTS, EntryPoint, check_one
from impl.control import (
    MPC,
    ActionDecoder,
    Cartpole,
    LatentPlannerConfig,
    PlannerConfig,
    latent_plan,
    plan,
    rollout,
    rollout_cost,
)
from impl.control.planner import shift_warm_start
from impl.dcem import DCEMResult, dcem
from impl.lml import lml
from impl.options import CEMOptions
from reference.lml import lml_bisect, lml_vjp
from tests.strategies import LMLProblem, lml_problems
from tests.test_dcem import Config, Recorder, boundary_tie, configs, run_reference

ref_cem = importlib.import_module("reference.cem")  # the module; reference.cem is also a function

ACCURACY = {torch.float32: 1e-6, torch.float64: 1e-12}  # LML-4
DTYPES = [torch.float32, torch.float64]
F64 = torch.float64


def _host(tensor: Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", F64).numpy()


# -- lml ---------------------------------------------------------------------------------------


@pytest.mark.spec("LML-4", "LML-16")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems())
def test_lml_matches_the_reference_on_the_device(
    device: torch.device, dtype: torch.dtype, problem: LMLProblem
) -> None:
    x = torch.from_numpy(problem.x).to(device=device, dtype=dtype)
    y = lml(x, problem.k, problem.tau)
    assert y.device == x.device and y.dtype == dtype
    error = np.abs(_host(y) - lml_bisect(problem.x, problem.k, problem.tau)).max()
    assert error <= ACCURACY[dtype], f"max error {error:.3e} on {device}"


@pytest.mark.spec("LML-4", "LML-19")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems(max_n=600, max_batch=1, min_n=200))
def test_lml_long_rows_on_the_device(
    device: torch.device, dtype: torch.dtype, problem: LMLProblem
) -> None:
    x = torch.from_numpy(problem.x).to(device=device, dtype=dtype)
    expected = lml_bisect(problem.x, problem.k, problem.tau)
    error = np.abs(_host(lml(x, problem.k, problem.tau)) - expected).max()
    assert error <= ACCURACY[dtype], f"max error {error:.3e} on {device}"


@pytest.mark.spec("LML-4", "LML-5")
@pytest.mark.parametrize("k", [10, 90])  # the minority side and its complement (LML-10)
def test_lml_large_batch_on_the_device(device: torch.device, k: int) -> None:
    rng = np.random.default_rng(k)
    x = rng.standard_normal((512, 100)).astype(np.float32).astype(np.float64)
    y = lml(torch.from_numpy(x).to(device=device, dtype=torch.float32), k, 0.5)
    assert np.abs(_host(y) - lml_bisect(x, k, 0.5)).max() <= ACCURACY[torch.float32]


@pytest.mark.spec("LML-12", "LML-16")
@given(problem=lml_problems(max_scaled=50.0), seed=st.integers(0, 2**16))
def test_lml_backward_matches_the_reference_on_the_device(
    device: torch.device, problem: LMLProblem, seed: int
) -> None:
    x = torch.from_numpy(problem.x).to(device).requires_grad_()
    g = np.random.default_rng(seed).standard_normal(problem.x.shape)
    (grad,) = torch.autograd.grad(lml(x, problem.k, problem.tau), x, torch.from_numpy(g).to(device))
    assert grad.device == x.device
    expected = lml_vjp(lml_bisect(problem.x, problem.k, problem.tau), g, problem.tau)
    assert np.abs(_host(grad) - expected).max() <= 1e-10 * np.abs(g).max() / problem.tau


# -- dcem --------------------------------------------------------------------------------------


def _run_on(
    device: torch.device, config: Config, recorder: Recorder | None, **options: object
) -> DCEMResult:
    def f(x: Tensor) -> Tensor:
        return config.objective.torch(x)

    kwargs = config.kwargs() | options
    return dcem(
        f,
        torch.from_numpy(config.mean0).to(device),
        torch.from_numpy(config.std0).to(device),
        noise=torch.from_numpy(config.noise).to(device),
        callback=recorder,
        **kwargs,  # type: ignore[arg-type]
    )


def _assert_matches_reference(config: Config, result: DCEMResult, recorder: Recorder) -> None:
    """Every iterate of every problem against ``reference.cem`` (CEM-25's tolerances)."""
    hard = config.tau is None or config.tau == 0
    for b in range(config.mean0.shape[0]):
        trace = run_reference(config, b)
        scale = 1 + np.abs(trace.means).max() + np.abs(trace.stds).max()
        for t in range(trace.n_iter):
            step = recorder.steps[t]
            assert np.abs(_host(step.samples[b]) - trace.samples[t]).max() <= 1e-12 * scale
            if hard and boundary_tie(trace.values[t], config.n_elite):
                break  # both runs are right from here on; they may differ (CEM-4)
            assert np.abs(_host(step.mean[b]) - trace.means[t + 1]).max() <= 1e-9 * scale
            assert np.abs(_host(step.std[b]) - trace.stds[t + 1]).max() <= 1e-9 * scale
        else:
            assert int(result.n_iter[b]) == trace.n_iter
            assert bool(result.converged[b]) == trace.converged
            assert np.abs(_host(result.mean[b]) - trace.means[trace.n_iter]).max() <= 1e-9 * scale
            best = float(result.best_value[b].detach())
            assert best == pytest.approx(trace.best_value, rel=1e-12, abs=1e-12)


@pytest.mark.spec("CEM-25", "CEM-24", "CEM-29", "CEM-30")
@given(config=configs(weighted_elites=True))
def test_dcem_matches_the_reference_on_the_device(device: torch.device, config: Config) -> None:
    recorder = Recorder()
    result = _run_on(device, config, recorder)
    assert result.mean.device.type == device.type and result.mean.dtype == F64
    _assert_matches_reference(config, result, recorder)


@pytest.mark.spec("CEM-25", "CEM-26", "CEM-27")
@given(config=configs(), memory=st.sampled_from(["checkpoint", "grad_iters"]))
def test_dcem_memory_options_keep_the_reference_values_on_the_device(
    device: torch.device, config: Config, memory: str
) -> None:
    # A recorded graph (init_mean requires grad) is what checkpoint and grad_iters act on.
    recorder = Recorder()
    option: dict[str, object] = (
        {"checkpoint": True} if memory == "checkpoint" else {"grad_iters": 1}
    )

    def f(x: Tensor) -> Tensor:
        return config.objective.torch(x)

    mean0 = torch.from_numpy(config.mean0).to(device).requires_grad_()
    result = dcem(
        f,
        mean0,
        torch.from_numpy(config.std0).to(device),
        noise=torch.from_numpy(config.noise).to(device),
        callback=recorder,
        **(config.kwargs() | option),  # type: ignore[arg-type]
    )
    _assert_matches_reference(config, result, recorder)


def _reference_final(
    mean0: np.ndarray, std0: float, noise: np.ndarray, center: np.ndarray
) -> float:
    """``Σ μ_T + Σ σ_T`` of ``reference.cem`` on ``‖x − c_b‖²``, summed over the problems."""
    total = 0.0
    for b in range(mean0.shape[0]):
        trace = ref_cem.cem(
            lambda x, c=center[b]: ((x - c) ** 2).sum(-1), mean0[b], std0, noise[:, b],
            n_elite=3, tau=1.0,
        )  # fmt: skip
        total += trace.means[trace.n_iter].sum() + trace.stds[trace.n_iter].sum()
    return float(total)


@pytest.mark.spec("CEM-17", "CEM-26")
@pytest.mark.parametrize("checkpoint", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_dcem_gradient_matches_finite_differences_of_the_reference(
    device: torch.device, checkpoint: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    mean0, center = rng.uniform(-1, 1, (2, 2)), rng.uniform(-1, 1, (2, 2))
    noise = rng.standard_normal((3, 2, 12, 2))
    c = torch.from_numpy(center).to(device)
    x0 = torch.from_numpy(mean0).to(device).requires_grad_()
    result = dcem(
        lambda x: (x - c.unsqueeze(1)).square().sum(-1), x0, 0.7, n_sample=12, n_elite=3,
        n_iter=3, tau=1.0, noise=torch.from_numpy(noise).to(device), checkpoint=checkpoint,
    )  # fmt: skip
    (grad,) = torch.autograd.grad(result.mean.sum() + result.std.sum(), x0)
    step = 1e-6
    numeric = np.empty_like(mean0)
    for index in np.ndindex(mean0.shape):
        e = np.zeros_like(mean0)
        e[index] = step
        upper = _reference_final(mean0 + e, 0.7, noise, center)
        lower = _reference_final(mean0 - e, 0.7, noise, center)
        numeric[index] = (upper - lower) / (2 * step)
    assert np.abs(_host(grad) - numeric).max() <= 1e-5 * (1 + np.abs(numeric).max())


@pytest.mark.spec("CEM-20")
@pytest.mark.parametrize("tau", [None, 1.0])
def test_dcem_generator_on_the_device_is_reproducible(
    device: torch.device, tau: float | None
) -> None:
    center = torch.linspace(-1, 1, 5, device=device)

    def solve() -> DCEMResult:
        generator = torch.Generator(device=device).manual_seed(7)
        return dcem(
            lambda x: (x - center).square().sum(-1), torch.zeros(3, 5, device=device), 1.0,
            n_sample=40, n_elite=5, n_iter=4, tau=tau, generator=generator,
        )  # fmt: skip

    first, second = solve(), solve()
    assert torch.equal(first.mean, second.mean) and torch.equal(first.best_x, second.best_x)
    # And the solve did its job: the mean moved towards the centre.
    assert float((first.mean - center).abs().max()) < 1.0


# -- planners ----------------------------------------------------------------------------------

HORIZON, N_SAMPLE, N_ELITE, N_ITER, BATCH = 4, 20, 4, 3, 2


def _cpu_cost(system: Cartpole, x0: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The rollout cost of one problem on the CPU in float64: ``(N, H·n_u)`` → ``(N,)``."""
    state = torch.from_numpy(x0).unsqueeze(0)

    def cost(flat: np.ndarray) -> np.ndarray:
        actions = torch.from_numpy(np.array(flat)).reshape(1, flat.shape[0], HORIZON, 1)
        return rollout(system.step, system.cost, state, actions)[0][0].numpy()

    return cost


@pytest.mark.spec("CTL-2", "CTL-14")
@given(seed=st.integers(0, 2**16))
def test_plan_matches_the_reference_on_the_device(device: torch.device, seed: int) -> None:
    system = Cartpole()
    x0 = system.sample_initial(BATCH, torch.Generator().manual_seed(seed), dtype=F64)
    noise = torch.randn(N_ITER, BATCH, N_SAMPLE, HORIZON, generator=torch.Generator()
                        .manual_seed(seed), dtype=F64)  # fmt: skip
    solver = CEMOptions(n_sample=N_SAMPLE, n_elite=N_ELITE, n_iter=N_ITER, tau=1.0)
    config = PlannerConfig(horizon=HORIZON, action_lb=-100.0, action_ub=100.0, solver=solver)
    cost = rollout_cost(system.step, system.cost, x0.to(device))
    result = plan(cost, config, BATCH, device=device, dtype=F64, noise=noise.to(device))
    assert result.actions.device.type == device.type and result.actions.shape == (BATCH, HORIZON, 1)
    for b in range(BATCH):
        f = _cpu_cost(system, x0[b].numpy())
        trace = ref_cem.cem(
            f, np.zeros(HORIZON), 100.0, noise[:, b].numpy(), n_elite=N_ELITE, tau=1.0,
            lb=-100.0, ub=100.0,
        )  # fmt: skip
        final = trace.means[trace.n_iter]
        assert np.abs(_host(result.actions[b]).ravel() - final).max() <= 1e-9 * 100
        assert float(result.cost[b]) == pytest.approx(float(f(final[None])[0]), rel=1e-9, abs=1e-9)


@pytest.mark.spec("CTL-5", "CTL-14")
def test_mpc_act_on_the_device(device: torch.device) -> None:
    system = Cartpole()
    x0 = system.sample_initial(BATCH, torch.Generator().manual_seed(3), dtype=F64)
    solver = CEMOptions(n_sample=N_SAMPLE, n_elite=N_ELITE, n_iter=N_ITER, tau=1.0)
    config = PlannerConfig(horizon=HORIZON, action_lb=-100.0, action_ub=100.0, solver=solver)
    mpc = MPC(config, BATCH, device=device, dtype=F64, seed=3)
    cost = rollout_cost(system.step, system.cost, x0.to(device))
    for _ in range(2):
        result = mpc.act(cost)
        actions = _host(result.actions)
        assert np.all(np.abs(actions) <= 100.0)
        for b in range(BATCH):  # the cost it reports is that of its actions, evaluated here
            expected = _cpu_cost(system, x0[b].numpy())(actions[b].reshape(1, HORIZON))[0]
            assert float(result.cost[b]) == pytest.approx(float(expected), rel=1e-9, abs=1e-9)
        shifted = shift_warm_start(result.actions.detach().cpu(), torch.zeros(1, dtype=F64))
        assert np.array_equal(_host(mpc.state.warm_start), shifted.numpy())


def _latent_reference_cost(
    decoder: ActionDecoder, x0: Tensor, noise: np.ndarray, config: LatentPlannerConfig
) -> float:
    """``Σ_b C(f^dec(ẑ_b))`` with ``ẑ_b`` from ``reference.cem`` (CPU, float64)."""
    system = Cartpole()
    total = 0.0
    for b in range(x0.shape[0]):
        f = _cpu_cost(system, x0[b].numpy())

        def latent_cost(z: np.ndarray, f: Callable[[np.ndarray], np.ndarray] = f) -> np.ndarray:
            with torch.no_grad():
                actions = decoder(torch.from_numpy(np.array(z))).reshape(z.shape[0], -1)
                return np.asarray(f(actions.numpy()), dtype=np.float64)

        trace = ref_cem.cem(
            latent_cost, np.zeros(config.latent_dim), config.init_std, noise[:, b],
            n_elite=config.solver.n_elite, tau=config.solver.tau, lb=-1.0, ub=1.0,
        )  # fmt: skip
        total += float(latent_cost(trace.means[trace.n_iter][None])[0])
    return total


@pytest.mark.spec("CTL-9", "CTL-10", "CTL-14")
@pytest.mark.parametrize("seed", [0, 1])
def test_latent_plan_and_its_gradient_match_the_reference_on_the_device(
    device: torch.device, seed: int
) -> None:
    system = Cartpole()
    x0 = system.sample_initial(BATCH, torch.Generator().manual_seed(seed), dtype=F64)
    solver = CEMOptions(n_sample=N_SAMPLE, n_elite=N_ELITE, n_iter=N_ITER)
    config = LatentPlannerConfig(latent_dim=2, solver=solver)
    noise = np.random.default_rng(seed).standard_normal((N_ITER, BATCH, N_SAMPLE, 2))
    decoder = ActionDecoder(2, HORIZON, 1, -100.0, 100.0, hidden=16,
                            generator=torch.Generator().manual_seed(seed)).to(F64)  # fmt: skip
    on_device = copy.deepcopy(decoder).to(device)
    result = latent_plan(
        rollout_cost(system.step, system.cost, x0.to(device)), on_device, config, BATCH,
        device=device, dtype=F64, noise=torch.from_numpy(noise).to(device),
    )  # fmt: skip
    result.cost.sum().backward()  # type: ignore[no-untyped-call]
    expected = _latent_reference_cost(decoder, x0, noise, config)
    assert float(result.cost.detach().sum()) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # Alg. 2's gradient along one random direction of θ, against central differences.
    rng = np.random.default_rng(seed + 100)
    directions = [torch.from_numpy(rng.standard_normal(p.shape)) for p in decoder.parameters()]
    analytic = 0.0
    for p, v in zip(on_device.parameters(), directions, strict=True):
        assert p.grad is not None
        analytic += float((p.grad.cpu() * v).sum())
    step = 1e-6
    shifted = []
    for sign in (1.0, -1.0):
        moved = copy.deepcopy(decoder)
        with torch.no_grad():
            for p, v in zip(moved.parameters(), directions, strict=True):
                p.add_(sign * step * v)
        shifted.append(_latent_reference_cost(moved, x0, noise, config))
    numeric = (shifted[0] - shifted[1]) / (2 * step)
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-4)


# -- meta: no host reads -----------------------------------------------------------------------

META_ENTRIES = [entry for entry in ENTRY_POINTS if entry.on_meta]


@pytest.mark.spec("LML-18", "CEM-23", "CTL-14")
@pytest.mark.parametrize("entry", META_ENTRIES, ids=[entry.name for entry in META_ENTRIES])
def test_entry_point_reads_no_values_on_meta(entry: EntryPoint) -> None:
    record = check_one(entry, torch.device("meta"), contextlib.nullcontext)
    expected = "sync" if entry.expect_sync else "clean"
    assert record.status == expected, record.message
    assert not record.unexpected
