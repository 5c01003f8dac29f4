"""The TorchRL and mbrl-lib adapters (spec/control.md CTL-18, CTL-19).

Each test skips (``pytest.importorskip``) when its library's extra is not
installed: ``pip install -e .[torchrl]`` for TorchRL; ``pip install -e .[mbrl]``
then ``pip install --no-deps mbrl==0.2.0`` for mbrl-lib.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from impl.control import MPC, Cartpole, Plan, PlannerConfig, plan, rollout_cost
from impl.dcem import DCEMStep
from impl.options import CEMOptions

HORIZON = 8
SOLVER = CEMOptions(n_sample=30, n_elite=3, n_iter=4, tau=None)
"""A small budget: the tests compare planners, not reach the optimum."""


def _zero_action_cost(starts: Tensor, steps: int) -> float:
    """The mean episode cost of applying no force: the floor every planner must beat."""
    system, x, total = Cartpole(), starts.clone(), torch.zeros(starts.shape[0])
    for _ in range(steps):
        u = torch.zeros(x.shape[0], 1)
        total += system.cost(x, u)
        x = system.step(x, u)
    return float(total.mean())


# -- TorchRL (CTL-18) --------------------------------------------------------------------------


def cartpole_model_env(nan_above: float | None = None) -> Any:
    """Cartpole (CTL-11) as a TorchRL ``ModelBasedEnvBase``: the world model maps
    ``(observation, action)`` to the next observation and the reward ``−C(x, u)``
    (NaN where the force exceeds ``nan_above``, if given)."""
    pytest.importorskip("torchrl")
    from tensordict import TensorDict  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from tensordict.nn import TensorDictModule  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from torchrl.data import Bounded, Composite, Unbounded  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from torchrl.envs.model_based import ModelBasedEnvBase  # type: ignore[import-untyped, import-not-found, unused-ignore]

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.system = Cartpole()

        def forward(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
            reward = -self.system.cost(obs, action).unsqueeze(-1)
            if nan_above is not None:
                reward = torch.where(action > nan_above, math.nan, reward)
            return self.system.step(obs, action), reward

    class CartpoleModelEnv(ModelBasedEnvBase):  # type: ignore[misc, unused-ignore]
        def __init__(self) -> None:
            model = TensorDictModule(
                Model(), in_keys=["observation", "action"], out_keys=["observation", "reward"]
            )
            super().__init__(model, batch_size=torch.Size([]))
            self.observation_spec = Composite(observation=Unbounded((5,)))
            self.state_spec = Composite(observation=Unbounded((5,)))
            self.action_spec = Bounded(-100.0, 100.0, (1,))
            self.reward_spec = Unbounded((1,))

        def _reset(self, tensordict: Any, **kwargs: Any) -> Any:
            shape = tensordict.batch_size if tensordict is not None else self.batch_size
            obs = Cartpole().sample_initial(max(shape.numel(), 1)).reshape(*shape, 5)
            return TensorDict({"observation": obs}, batch_size=shape)

    return CartpoleModelEnv()


def _observations(x: Tensor, **extra: Tensor) -> Any:
    from tensordict import TensorDict

    return TensorDict({"observation": x, **extra}, batch_size=[x.shape[0]])


@pytest.mark.spec("CTL-18")
def test_torchrl_planner_acts_as_mpc() -> None:
    """Scored through the environment's rollout, the planner's actions are
    ``MPC``'s on the same objective and seed, step after step (warm start kept)."""
    env = cartpole_model_env()
    from impl.adapters.torchrl_planner import DCEMPlanner

    system = Cartpole()
    x = system.sample_initial(3, torch.Generator().manual_seed(0))
    planner = DCEMPlanner(env, HORIZON, SOLVER, seed=4)
    config = PlannerConfig(horizon=HORIZON, action_lb=-100.0, action_ub=100.0, solver=SOLVER)
    mpc = MPC(config, 3, seed=4)
    for _ in range(3):
        action = planner(_observations(x))["action"]
        expected = mpc.act(rollout_cost(system.step, system.cost, x)).first_action
        assert torch.equal(action, expected)
        assert planner.state is not None
        assert torch.equal(planner.state.warm_start, mpc.state.warm_start)
        x = system.step(x, expected)


@pytest.mark.spec("CTL-18")
def test_torchrl_planner_restarts_marked_episodes() -> None:
    env = cartpole_model_env()
    from impl.adapters.torchrl_planner import DCEMPlanner

    x = Cartpole().sample_initial(3, torch.Generator().manual_seed(1))
    planner = DCEMPlanner(env, HORIZON, SOLVER, seed=0)
    planner(_observations(x))
    assert planner.state is not None and planner.controller is not None
    before = planner.state.warm_start.clone()
    seen: list[Tensor] = []
    controller = planner.controller
    act = controller.act

    def spy(
        cost_fn: Callable[[Tensor], Tensor],
        callback: Callable[[DCEMStep], None] | None = None,
        *,
        proposals: Tensor | None = None,
    ) -> Plan:
        seen.append(controller.state.warm_start.clone())
        return act(cost_fn, callback, proposals=proposals)

    controller.act = spy  # type: ignore[method-assign]
    is_init = torch.tensor([[True], [False], [False]])
    done = torch.tensor([[False], [False], [True]])
    planner(_observations(x, is_init=is_init, done=done))
    fresh = planner.controller.fresh_warm_start()
    assert torch.equal(seen[0][0], fresh[0]) and torch.equal(seen[0][2], fresh[2])
    assert torch.equal(seen[0][1], before[1])
    assert not torch.equal(before[0], fresh[0])  # the restart is visible


@pytest.mark.spec("CTL-18")
def test_torchrl_planner_beats_cem_planner_on_the_model_env() -> None:
    """Same budget (N=30, k=3, T=4, H=8), 4 swing-up starts, 12 steps, 2 seeds.
    TorchRL's CEMPlanner samples N(0, 1) newtons and keeps no warm start; ours
    samples σ₀ = 0.5 (ub − lb). Measured (seeds 0 / 1): ours −8.76 / −8.60,
    CEMPlanner −4.22 / −4.18, no force −2.87."""
    env = cartpole_model_env()
    from torchrl.modules.planners import CEMPlanner  # type: ignore[import-untyped, import-not-found, unused-ignore]

    from impl.adapters.torchrl_planner import DCEMPlanner

    starts = Cartpole().sample_initial(4, torch.Generator().manual_seed(2))
    floor = _zero_action_cost(starts, 12)

    def episode_cost(policy: Any) -> float:
        with torch.no_grad():
            trajectory = env.rollout(12, policy, auto_reset=False, tensordict=_observations(starts))
        return float(-trajectory.get(("next", "reward")).sum(-2).mean())

    for seed in range(2):
        ours = episode_cost(DCEMPlanner(env, HORIZON, SOLVER, seed=seed))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            native = episode_cost(CEMPlanner(env, HORIZON, 4, 30, 3))
        assert ours < floor - 3.0
        assert ours < native - 3.0


@pytest.mark.spec("CTL-18")
def test_torchrl_planner_ranks_nan_rewards_worst() -> None:
    """Rewards are NaN where the force exceeds 20 N: no elite has such a step, so
    the planned force stays at or below 20 N (TorchRL's ``topk`` ranks NaN first)."""
    env = cartpole_model_env(nan_above=20.0)
    from impl.adapters.torchrl_planner import DCEMPlanner

    x = Cartpole().sample_initial(4, torch.Generator().manual_seed(5))
    planner = DCEMPlanner(env, HORIZON, SOLVER, seed=1)
    for _ in range(3):
        force = planner(_observations(x))["action"]
        assert bool(torch.isfinite(force).all()) and bool((force <= 20.0).all())
        assert planner.state is not None
        assert bool((planner.state.warm_start <= 20.0).all())
        x = Cartpole().step(x, force)


@pytest.mark.spec("CTL-18")
def test_torchrl_planner_batch_shapes() -> None:
    """Any batch shape is flattened to ``B`` problems; a new ``B`` gets a new controller."""
    env = cartpole_model_env()
    from tensordict import TensorDict

    from impl.adapters.torchrl_planner import DCEMPlanner

    x = Cartpole().sample_initial(6, torch.Generator().manual_seed(3))
    planner = DCEMPlanner(env, HORIZON, SOLVER, seed=0)
    single = planner(TensorDict({"observation": x[0]}, batch_size=[]))["action"]
    assert single.shape == (1,) and planner.controller is not None
    assert planner.controller.batch == 1
    grid = planner(TensorDict({"observation": x.reshape(2, 3, 5)}, batch_size=[2, 3]))["action"]
    assert grid.shape == (2, 3, 1) and planner.controller.batch == 6
    assert bool((grid.abs() <= 100.0).all())


@pytest.mark.spec("CTL-18")
def test_masked_return_drops_rewards_after_the_first_done() -> None:
    pytest.importorskip("torchrl")
    from impl.adapters.torchrl_planner import masked_return

    generator = torch.Generator().manual_seed(0)
    reward = torch.randn(2, 3, 5, 1, generator=generator, dtype=torch.float64)
    reward[1, 2, 4] = math.nan  # after a done: must not count
    done = torch.rand(2, 3, 5, 1, generator=generator) < 0.3
    done[1, 2, 1] = True
    got = masked_return(reward, done)
    for b in range(2):
        for n in range(3):
            expected = 0.0
            for t in range(5):
                expected += float(reward[b, n, t, 0])
                if done[b, n, t, 0]:
                    break
            assert math.isclose(float(got[b, n]), expected, rel_tol=1e-12, abs_tol=1e-12)
    torch.testing.assert_close(masked_return(reward[:1, :2], None), reward[:1, :2].sum((2, 3)))


@pytest.mark.spec("CTL-18")
def test_torchrl_planner_rejects_unbounded_actions() -> None:
    env = cartpole_model_env()
    from torchrl.data import Unbounded

    from impl.adapters.torchrl_planner import DCEMPlanner

    env.action_spec = Unbounded((1,))
    with pytest.raises(ValueError, match="bounded action spec"):
        DCEMPlanner(env, HORIZON)


@pytest.mark.spec("CTL-18")
def test_torchrl_planner_rejects_a_matrix_of_actions() -> None:
    env = cartpole_model_env()
    from torchrl.data import Bounded

    from impl.adapters.torchrl_planner import DCEMPlanner

    env.action_spec = Bounded(-1.0, 1.0, (2, 3))
    with pytest.raises(ValueError, match=r"1-D action spec \(n_u,\), got \(2, 3\)"):
        DCEMPlanner(env, HORIZON)


@pytest.mark.spec("CTL-18")
def test_torchrl_planner_reset_restarts_the_warm_starts() -> None:
    # reset before any plan is a no-op; after one, reset(mask) restarts the masked
    # problems and reset() all of them, as MPC.reset does (CTL-7).
    env = cartpole_model_env()
    from impl.adapters.torchrl_planner import DCEMPlanner

    x = Cartpole().sample_initial(3, torch.Generator().manual_seed(6))
    planner = DCEMPlanner(env, HORIZON, SOLVER, seed=2)
    planner.reset()
    assert planner.state is None
    planner(_observations(x))
    assert planner.state is not None and planner.controller is not None
    planned = planner.state.warm_start.clone()
    fresh = planner.controller.fresh_warm_start()
    planner.reset(torch.tensor([False, True, False]))
    assert torch.equal(planner.state.warm_start[1], fresh[1])
    assert torch.equal(planner.state.warm_start[0], planned[0])
    assert torch.equal(planner.state.warm_start[2], planned[2])
    planner.reset()
    assert torch.equal(planner.state.warm_start, fresh)


# -- mbrl-lib (CTL-19) -------------------------------------------------------------------------


def trajectory_optimizer(target: str, **fields: Any) -> Any:
    """``mbrl.planning.TrajectoryOptimizer`` over cartpole forces, from an OmegaConf config."""
    pytest.importorskip("mbrl.planning")
    import omegaconf
    from mbrl.planning import TrajectoryOptimizer  # type: ignore[import-untyped, import-not-found, unused-ignore]

    config = omegaconf.OmegaConf.create({"_target_": target, "device": "cpu", **fields})
    return TrajectoryOptimizer(config, np.array([-100.0]), np.array([100.0]), HORIZON)


def mbrl_objective(cost: Any) -> Any:
    """mbrl-lib maximizes: population ``(N, H, n_u)`` → ``−cost`` ``(N,)`` for one problem."""
    return lambda population: -cost(population.unsqueeze(0))[0]


DCEM_TARGET = "impl.adapters.mbrl_optimizer.DCEMOptimizer"
SOLVER_CONFIG = {"n_sample": 30, "n_elite": 3, "n_iter": 4, "tau": None}


@pytest.mark.spec("CTL-19")
@pytest.mark.parametrize("nested_target", [False, True])
def test_mbrl_optimizer_is_plan_under_trajectory_optimizer(nested_target: bool) -> None:
    """Two calls of ``TrajectoryOptimizer`` (the second from the shifted
    solution) give ``plan``'s actions for the same objective and seed; the
    callback sees the population and the maximized values."""
    solver: dict[str, Any] = dict(SOLVER_CONFIG)
    if nested_target:
        solver["_target_"] = "impl.options.CEMOptions"
    optimizer = trajectory_optimizer(DCEM_TARGET, solver=solver, seed=3)
    assert optimizer.optimizer.solver == SOLVER
    system = Cartpole()
    x = system.sample_initial(1, torch.Generator().manual_seed(0))
    config = PlannerConfig(horizon=HORIZON, action_lb=-100.0, action_ub=100.0, solver=SOLVER)
    generator = torch.Generator().manual_seed(3)
    warm = None
    for _ in range(2):
        cost = rollout_cost(system.step, system.cost, x)
        seen: list[tuple[Tensor, Tensor, int]] = []
        steps: list[DCEMStep] = []
        solution = optimizer.optimize(
            mbrl_objective(cost),
            callback=lambda p, v, i, seen=seen: seen.append((p.clone(), v.clone(), i)),
        )
        expected = plan(cost, config, 1, init_mean=warm, generator=generator, callback=steps.append)
        assert np.array_equal(solution, expected.actions[0].numpy())
        assert [i for _, _, i in seen] == list(range(SOLVER.n_iter))
        for (population, values, _), step in zip(seen, steps, strict=True):
            assert torch.equal(population, step.samples[0].reshape(30, HORIZON, 1))
            assert torch.equal(values, -step.values[0])
        warm = torch.cat((expected.actions[:, 1:], torch.zeros(1, 1, 1)), dim=1)
        x = system.step(x, expected.first_action)


@pytest.mark.spec("CTL-19")
def test_mbrl_optimizer_matches_cem_optimizer_on_the_model() -> None:
    """MPC episodes driven by ``TrajectoryOptimizer``, same budget (N=30, k=3,
    T=4, H=8), 4 swing-up starts, 12 steps, 2 seeds, ours with mbrl-lib's
    α = 0.1 and the best sample returned. Measured (seeds 0 / 1): ours −8.76 /
    −8.91, CEMOptimizer (truncated normal) −8.95 / −9.00, no force −2.87."""
    system = Cartpole()
    starts = system.sample_initial(4, torch.Generator().manual_seed(2))
    floor = _zero_action_cost(starts, 12)

    def episode_cost(optimizer: Any) -> float:
        total = 0.0
        for i in range(starts.shape[0]):
            optimizer.reset()
            x = starts[i : i + 1]
            for _ in range(12):
                cost = rollout_cost(system.step, system.cost, x)
                solution = optimizer.optimize(mbrl_objective(cost))
                u = torch.as_tensor(solution[:1])
                total += float(system.cost(x, u))
                x = system.step(x, u)
        return total / starts.shape[0]

    mbrl_like = dict(SOLVER_CONFIG, smoothing=0.1, output="best")
    for seed in range(2):
        ours = episode_cost(trajectory_optimizer(DCEM_TARGET, solver=mbrl_like, seed=seed))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            native = episode_cost(
                trajectory_optimizer(
                    "mbrl.planning.CEMOptimizer",
                    num_iterations=4,
                    elite_ratio=0.1,
                    population_size=30,
                    alpha=0.1,
                    lower_bound="???",
                    upper_bound="???",
                )
            )
        assert ours < floor - 3.0
        assert ours < native + 0.15 * abs(native)


@pytest.mark.spec("CTL-19")
def test_mbrl_optimizer_ranks_nan_worst_and_checks_its_input() -> None:
    """A maximum next to a region where the objective is NaN: the solution stays
    out of it (mbrl-lib's optimizers replace NaN by −1e−10, above every
    negative value)."""
    pytest.importorskip("mbrl.planning")
    from impl.adapters.mbrl_optimizer import DCEMOptimizer

    def objective(population: Tensor) -> Tensor:
        x = population[:, 0, 0]
        return torch.where(x > 1.0, torch.full_like(x, math.nan), -((x - 0.9) ** 2) - 1.0)

    optimizer = DCEMOptimizer([[-3.0]], [[3.0]], solver=CEMOptions(tau=None), seed=0)
    solution = optimizer.optimize(objective)
    assert solution.shape == (1, 1)
    assert -3.0 <= float(solution) <= 1.0 and abs(float(solution) - 0.9) < 0.1
    with pytest.raises(ValueError, match=r"x0 has shape \(2, 1\), expected \(1, 1\)"):
        optimizer.optimize(objective, torch.zeros(2, 1))
    with pytest.raises(ValueError, match="lower_bound < upper_bound"):
        DCEMOptimizer([[1.0]], [[1.0]])
    with pytest.raises(ValueError, match=r"shape \(H, n_u\)"):
        DCEMOptimizer([0.0, 0.0], [1.0, 1.0])  # type: ignore[list-item]  # (H,), not (H, n_u)
    with pytest.raises(ValueError, match=r"shape \(H, n_u\)"):
        DCEMOptimizer([[0.0, 0.0]], [[1.0], [1.0]])
    with pytest.raises(ValueError, match="n_elite"):
        DCEMOptimizer([[0.0]], [[1.0]], solver={"n_sample": 10, "n_elite": 10})


# -- README ------------------------------------------------------------------------------------

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _readme_adapter_blocks() -> list[str]:
    section = README.split("### Plugging into TorchRL and mbrl-lib", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```py\n(.*?)```", section, flags=re.DOTALL)


@pytest.mark.spec("CTL-18", "CTL-19")
def test_readme_adapter_examples_run() -> None:
    """The README's adapter lines (``py`` blocks: not run by tests/test_readme.py,
    which has no extras) run on a cartpole model environment and objective."""
    torchrl_block, mbrl_block = _readme_adapter_blocks()
    env = cartpole_model_env()
    x = Cartpole().sample_initial(1, torch.Generator().manual_seed(0))
    namespace: dict[str, Any] = {"model_env": env}
    exec(compile(torchrl_block, "README.md", "exec"), namespace)  # one env, reset by rollout
    assert namespace["trajectory"].get(("next", "reward")).shape == (5, 1)
    pytest.importorskip("mbrl.planning")
    system = Cartpole()
    namespace = {"cost": rollout_cost(system.step, system.cost, x)}
    exec(compile(mbrl_block, "README.md", "exec"), namespace)
    assert namespace["actions"].shape == (12, 1)


# -- benchmarks/planners.py --------------------------------------------------------------------


def test_planner_benchmark_quick_mode_writes_both_tables(tmp_path: Path) -> None:
    """Structure only (tiny sizes): every row of both tables is measured and written."""
    pytest.importorskip("torchrl")
    pytest.importorskip("mbrl.planning")
    from benchmarks import planners

    out = tmp_path / "planners.md"
    assert planners.main(["--quick", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    rows = [*planners.cartpole_rows(planners.QUICK_CARTPOLE), *planners.rastrigin_rows()]
    for label in rows:
        line = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        assert "nan" not in line
    assert text.count("\n|---|") == 2
