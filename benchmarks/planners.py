"""Our planners against mbrl-lib's and TorchRL's (issue 15): ``python -m benchmarks.planners``.

Two tables, written to ``benchmarks/results/planners.md`` (``--out``):

1. **Cartpole MPC** (CTL-11's cartpole and cost): ``H = 20``, ``T = 10``,
   ``k = N/10``, ``σ₀ = 50 N`` (a quarter of the force range), 50-step
   episodes from 8 swing-up starts × 2 seeds, at ``N = 100`` and ``N = 500``.
   Our planners and TorchRL's plan the 8 starts of a seed as one batch;
   mbrl-lib's interface takes one problem per call, so it runs them one by
   one. "ms per env step" is the median wall time of a planning call divided
   by the number of environments it plans for. Mean cost = the mean over
   episodes of the summed step cost (lower is better).
2. **Shifted Rastrigin**: 64 problems ``f(x) = 10 d + Σ_i (y_i² − 10 cos 2π y_i)``,
   ``y = x − s``, ``d = 10``, shifts ``s ~ U(−2, 2)^d``, box ``[−5, 5]``,
   ``N = 500``, ``k = 50``, ``T = 20``, ``σ₀ = 2.5``, 7 seeds; the median of
   ``f`` at the returned point, the share solved (``f < 0.5``) and the wall
   time per batch of 64 (mbrl-lib: 64 calls).

Our rows: ``MPC`` with its defaults (``PLANNER_SOLVER``, CTL-23) and single
changes to them (colored noise, truncated sampling, population decay,
TD-MPC2's sampled execution with a σ cap), the paper's solver
(``PAPER_PLANNER_SOLVER``) with and without smoothing, and the hand-kept
colored-noise ``plan()`` of before CTL-20; on Rastrigin the three
``sampling`` modes (CEM-37) and the caller-drawn truncated noise of before.
Two interleaved measurements follow, so that the machine's load hits the
compared rows alike: the Rastrigin solve of each ``sampling`` mode (9
repeats), and ``MPC``'s defaults against mbrl-lib's iCEM in chunks of 10
control steps (3 repeats); the "Targets" lines report their ratios.

The peers' planners are driven as peers.md describes: mbrl-lib's
``CEMOptimizer`` and ``ICEMOptimizer`` under its ``TrajectoryOptimizer``
(warm start by shifting; iCEM's kept elites cleared between episodes);
TorchRL's ``CEMPlanner`` and ``MPPIPlanner`` on a stateless ``EnvBase`` whose
action is the force divided by 50 (their initial distribution is a
hard-coded ``N(0, 1)``, so this sets ``σ₀ = 50 N``); MPPI's advantage is the
reward-to-go, temperature 1. Peers draw from PyTorch's global generator,
seeded per episode. One thread (``torch.set_num_threads(1)``).

Needs the ``torchrl`` and ``mbrl`` extras. ``--quick`` runs tiny sizes (for a
structural check, not for figures).
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from impl.cem import solve
from impl.control import MPC, Cartpole, PlannerConfig, colored_noise, plan, rollout_cost
from impl.control.planner import PAPER_PLANNER_SOLVER, PLANNER_SOLVER, shift_warm_start
from impl.dcem import dcem
from impl.options import CEMOptions, Sampling

RESULTS = Path(__file__).resolve().parent / "results" / "planners.md"

FORCE = 100.0
"""Cartpole force bound (CTL-11)."""

SIGMA0 = 50.0
"""σ₀ of every cartpole planner, in newtons."""


@dataclass(frozen=True)
class CartpoleSetup:
    """The MPC comparison's sizes."""

    horizon: int = 20
    n_iter: int = 10
    steps: int = 50
    starts: int = 8
    seeds: int = 2
    samples: tuple[int, ...] = (100, 500)


@dataclass(frozen=True)
class RastriginSetup:
    """The Rastrigin comparison's sizes."""

    problems: int = 64
    dim: int = 10
    bound: float = 5.0
    shift: float = 2.0
    n_sample: int = 500
    n_elite: int = 50
    n_iter: int = 20
    sigma0: float = 2.5
    seeds: int = 7
    solved: float = 0.5


QUICK_CARTPOLE = CartpoleSetup(horizon=5, n_iter=2, steps=3, starts=2, seeds=1, samples=(20,))
QUICK_RASTRIGIN = RastriginSetup(problems=4, dim=3, n_sample=20, n_elite=4, n_iter=2, seeds=1)


class Controller(Protocol):
    """A planner for ``B`` environments: ``reset()`` at an episode start,
    ``act(x (B, 5)) → u (B, 1)``."""

    def reset(self) -> None: ...

    def act(self, state: Tensor) -> Tensor: ...


SYSTEM = Cartpole()


# -- our planners ------------------------------------------------------------------------------


class OurMPC:
    """``impl.control.MPC`` with a given solver (warm start, σ reset, seeded state)."""

    def __init__(
        self, setup: CartpoleSetup, solver: CEMOptions, seed: int, noise_beta: float = 0.0
    ) -> None:
        config = PlannerConfig(
            horizon=setup.horizon,
            action_lb=-FORCE,
            action_ub=FORCE,
            init_std=SIGMA0,
            solver=solver,
            noise_beta=noise_beta,
        )
        self.config, self.seed = config, seed
        self.mpc: MPC | None = None

    def reset(self) -> None:
        self.mpc = None

    def _controller(self, batch: int) -> MPC:
        if self.mpc is None:
            self.mpc = MPC(self.config, batch, seed=self.seed)
        return self.mpc

    def act(self, state: Tensor) -> Tensor:
        mpc = self._controller(state.shape[0])
        return mpc.act(rollout_cost(SYSTEM.step, SYSTEM.cost, state)).first_action


class OurColoredPlan:
    """``plan()`` fed iCEM's colored noise (β), the warm start kept by hand."""

    def __init__(self, setup: CartpoleSetup, solver: CEMOptions, seed: int, beta: float) -> None:
        self.setup, self.solver, self.beta = setup, solver, beta
        self.config = PlannerConfig(
            horizon=setup.horizon,
            action_lb=-FORCE,
            action_ub=FORCE,
            init_std=SIGMA0,
            solver=solver,
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.warm: Tensor | None = None

    def reset(self) -> None:
        self.warm = None

    def act(self, state: Tensor) -> Tensor:
        batch = state.shape[0]
        noise = colored_noise(
            self.solver.n_iter,
            batch,
            self.solver.n_sample,
            self.setup.horizon,
            1,
            self.beta,
            generator=self.generator,
        )
        cost = rollout_cost(SYSTEM.step, SYSTEM.cost, state)
        result = plan(cost, self.config, batch, init_mean=self.warm, noise=noise)
        self.warm = shift_warm_start(result.actions, torch.zeros(1))
        return result.first_action


# -- mbrl-lib ----------------------------------------------------------------------------------


class MbrlController:
    """An mbrl-lib optimizer under ``TrajectoryOptimizer`` (one problem per call, maximizes)."""

    def __init__(self, setup: CartpoleSetup, fields: dict[str, Any]) -> None:
        import omegaconf
        from mbrl.planning import TrajectoryOptimizer  # type: ignore[import-untyped, import-not-found, unused-ignore]

        config = omegaconf.OmegaConf.create(
            {"device": "cpu", "lower_bound": "???", "upper_bound": "???", **fields}
        )
        bound = np.array([FORCE])
        self.optimizer = TrajectoryOptimizer(config, -bound, bound, setup.horizon)

    def reset(self) -> None:
        self.optimizer.reset()
        if hasattr(self.optimizer.optimizer, "elite"):
            self.optimizer.optimizer.elite = None  # iCEM's elites of the last episode

    def act(self, state: Tensor) -> Tensor:
        cost = rollout_cost(SYSTEM.step, SYSTEM.cost, state)
        solution = self.optimizer.optimize(lambda p: -cost(p.unsqueeze(0))[0])
        return torch.as_tensor(solution[:1], dtype=torch.float32)


def mbrl_cem(setup: CartpoleSetup, n: int) -> dict[str, Any]:
    return {
        "_target_": "mbrl.planning.CEMOptimizer",
        "num_iterations": setup.n_iter,
        "elite_ratio": 0.1,
        "population_size": n,
        "alpha": 0.1,
    }


def mbrl_icem(setup: CartpoleSetup, n: int) -> dict[str, Any]:
    return {
        "_target_": "mbrl.planning.ICEMOptimizer",
        "num_iterations": setup.n_iter,
        "elite_ratio": 0.1,
        "population_size": n,
        "population_decay_factor": 1.0,
        "colored_noise_exponent": 2.0,
        "keep_elite_frac": 0.3,
        "alpha": 0.1,
    }


# -- TorchRL -----------------------------------------------------------------------------------


def torchrl_cartpole_env() -> Any:
    """A stateless, batch-unlocked TorchRL cartpole; action = force / ``SIGMA0``."""
    from tensordict import TensorDict  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from torchrl.data import Bounded, Composite, Unbounded  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from torchrl.envs import EnvBase  # type: ignore[import-untyped, import-not-found, unused-ignore]

    class ScaledCartpole(EnvBase):  # type: ignore[misc, unused-ignore]
        batch_locked = False

        def __init__(self) -> None:
            super().__init__(batch_size=torch.Size([]))
            self.observation_spec = Composite(observation=Unbounded((5,)))
            self.action_spec = Bounded(-FORCE / SIGMA0, FORCE / SIGMA0, (1,))
            self.reward_spec = Unbounded((1,))

        def _reset(self, tensordict: Any, **kwargs: Any) -> Any:
            shape = tensordict.batch_size if tensordict is not None else self.batch_size
            obs = SYSTEM.sample_initial(max(shape.numel(), 1)).reshape(*shape, 5)
            return TensorDict({"observation": obs}, batch_size=shape)

        def _step(self, tensordict: Any) -> Any:
            state = tensordict.get("observation")
            force = SIGMA0 * tensordict.get("action")
            reward = -SYSTEM.cost(state, force).unsqueeze(-1)
            done = torch.zeros(reward.shape, dtype=torch.bool)
            return TensorDict(
                {
                    "observation": SYSTEM.step(state, force),
                    "reward": reward,
                    "done": done,
                    "terminated": done.clone(),
                },
                batch_size=tensordict.batch_size,
            )

        def _set_seed(self, seed: int | None) -> None:
            """Stateless: nothing to seed."""

    return ScaledCartpole()


class RewardToGo(torch.nn.Module):
    """MPPI's advantage: the reward-to-go ``Σ_{t' ≥ t} r_{t'}`` (no value function)."""

    def forward(self, tensordict: Any) -> Any:
        reward = tensordict.get(("next", "reward"))
        tensordict.set("advantage", reward.flip(-2).cumsum(-2).flip(-2))
        return tensordict


class TorchRLController:
    """TorchRL's ``CEMPlanner`` or ``MPPIPlanner`` (no warm start between calls)."""

    def __init__(self, setup: CartpoleSetup, n: int, kind: str) -> None:
        from torchrl.modules.planners import CEMPlanner, MPPIPlanner  # type: ignore[import-untyped, import-not-found, unused-ignore]

        env = torchrl_cartpole_env()
        top_k = max(n // 10, 1)
        self.planner: Any
        if kind == "cem":
            self.planner = CEMPlanner(env, setup.horizon, setup.n_iter, n, top_k)
        else:
            self.planner = MPPIPlanner(
                env, RewardToGo(), 1.0, setup.horizon, setup.n_iter, n, top_k
            )

    def reset(self) -> None:
        """No state between calls."""

    def act(self, state: Tensor) -> Tensor:
        from tensordict import TensorDict  # type: ignore[import-untyped, import-not-found, unused-ignore]

        td = TensorDict({"observation": state}, batch_size=[state.shape[0]])
        action: Tensor = self.planner(td)["action"]
        return SIGMA0 * action


# -- the cartpole table ------------------------------------------------------------------------


def episode(controller: Controller, starts: Tensor, steps: int) -> tuple[list[float], list[float]]:
    """The summed costs ``(B,)`` of ``steps`` control steps from ``starts (B, 5)``, and
    each call's milliseconds divided by ``B`` (ms per env step)."""
    controller.reset()
    state, total, times = starts, torch.zeros(starts.shape[0]), []
    with torch.no_grad():
        for _ in range(steps):
            began = time.perf_counter()
            force = controller.act(state)
            times.append(1e3 * (time.perf_counter() - began) / starts.shape[0])
            total += SYSTEM.cost(state, force)
            state = SYSTEM.step(state, force)
    return total.tolist(), times


@dataclass(frozen=True)
class Row:
    """One planner's measurements: episode costs and per-call milliseconds."""

    costs: list[float]
    times: list[float]

    @property
    def mean_cost(self) -> float:
        return statistics.fmean(self.costs)

    @property
    def worst_cost(self) -> float:
        return max(self.costs)

    @property
    def ms(self) -> float:
        return statistics.median(self.times)


DEFAULTS = "this project, `MPC` defaults (hard CEM with iCEM's recipe, CTL-23)"
MBRL_CEM = "mbrl-lib CEM (α=0.1, truncated normal, returns the best)"
MBRL_ICEM = "mbrl-lib iCEM (β=2, keep 0.3, decay 1)"
ONE_PROBLEM_PER_CALL = (MBRL_CEM, MBRL_ICEM)
"""Rows whose interface takes one problem per call (mbrl-lib's ``Optimizer``)."""

CartpoleFactory = Callable[[int, int], Controller]
"""``(N, seed) → controller``."""


def cartpole_rows(setup: CartpoleSetup) -> dict[str, CartpoleFactory]:
    """The planners of table 1, by label."""

    def ours(base: CEMOptions, noise_beta: float = 0.0, **options: Any) -> CartpoleFactory:
        def make(n: int, seed: int) -> Controller:
            sizes = {"n_sample": n, "n_elite": max(n // 10, 1), "n_iter": setup.n_iter}
            return OurMPC(setup, base.replace(**sizes, **options), seed, noise_beta)

        return make

    def colored(n: int, seed: int) -> Controller:
        solver = CEMOptions(n_sample=n, n_elite=max(n // 10, 1), n_iter=setup.n_iter, tau=None)
        return OurColoredPlan(setup, solver, seed, beta=2.0)

    return {
        DEFAULTS: ours(PLANNER_SOLVER),
        "… `noise_beta=1` (colored noise)": ours(PLANNER_SOLVER, noise_beta=1.0),
        '… `sampling="truncated"`': ours(PLANNER_SOLVER, sampling="truncated"),
        "… `population_decay=1.25`": ours(PLANNER_SOLVER, population_decay=1.25),
        '… `output="sample"`, `std_max=25` (TD-MPC2\'s execution)': ours(
            PLANNER_SOLVER, output="sample", std_max=25.0
        ),
        "the paper's solver (`PAPER_PLANNER_SOLVER`: hard CEM, returns the mean)": ours(
            PAPER_PLANNER_SOLVER
        ),
        '… `smoothing=0.1, output="best"`': ours(
            PAPER_PLANNER_SOLVER, smoothing=0.1, output="best"
        ),
        "… `plan()` with colored noise β=2 (hand-kept warm start)": colored,
        MBRL_CEM: lambda n, seed: MbrlController(setup, mbrl_cem(setup, n)),
        MBRL_ICEM: lambda n, seed: MbrlController(setup, mbrl_icem(setup, n)),
        "TorchRL CEMPlanner (no warm start)": lambda n, seed: TorchRLController(setup, n, "cem"),
        "TorchRL MPPIPlanner": lambda n, seed: TorchRLController(setup, n, "mppi"),
    }


def cartpole_table(setup: CartpoleSetup, log: Callable[[str], None]) -> dict[str, dict[int, Row]]:
    """Every planner of table 1 at every ``N``: 8 starts × seeds episodes each."""
    starts = SYSTEM.sample_initial(setup.starts, torch.Generator().manual_seed(0))
    table: dict[str, dict[int, Row]] = {}
    for label, factory in cartpole_rows(setup).items():
        table[label] = {}
        for n in setup.samples:
            costs: list[float] = []
            times: list[float] = []
            for seed in range(setup.seeds):
                # one-problem interfaces run the starts one by one; the others batch them
                groups = (
                    [starts[i : i + 1] for i in range(setup.starts)]
                    if label in ONE_PROBLEM_PER_CALL
                    else [starts]
                )
                for i, group in enumerate(groups):
                    run_seed = 1000 * seed + i
                    torch.manual_seed(run_seed)  # the peers' global generator
                    cost, ms = episode(factory(n, run_seed), group, setup.steps)
                    costs.extend(cost)
                    times.extend(ms)
            table[label][n] = Row(costs, times)
            log(
                f"  N={n:4d} {table[label][n].mean_cost:8.2f} {table[label][n].ms:8.1f} ms  {label}"
            )
    return table


# -- the Rastrigin table -----------------------------------------------------------------------


def rastrigin(x: Tensor, shift: Tensor) -> Tensor:
    """``x (B, N, d)``, ``shift (B, d)`` → ``(B, N)``; 0 at ``x = shift``."""
    y = x - shift.unsqueeze(1)
    return 10.0 * y.shape[-1] + (y * y - 10.0 * torch.cos(2.0 * math.pi * y)).sum(-1)


RastriginSolver = Callable[[RastriginSetup, Tensor, int], Tensor]
"""``(setup, shifts (B, d), seed) → points (B, d)``."""


def _ours_hard(setup: RastriginSetup, shifts: Tensor, **source: Any) -> Tensor:
    """Hard CEM clipped to the box; ``source`` is ``generator=`` or ``noise=``."""
    return dcem(
        lambda x: rastrigin(x, shifts),
        torch.zeros_like(shifts),
        setup.sigma0,
        n_sample=setup.n_sample,
        n_elite=setup.n_elite,
        n_iter=setup.n_iter,
        tau=None,
        lb=-setup.bound,
        ub=setup.bound,
        **source,
    ).x


def ours_clipped(setup: RastriginSetup, shifts: Tensor, seed: int) -> Tensor:
    return _ours_hard(setup, shifts, generator=torch.Generator().manual_seed(seed))


def ours_noise_arg(setup: RastriginSetup, shifts: Tensor, seed: int) -> Tensor:
    """The workaround before CEM-37: truncated noise drawn by the caller (resampling)."""
    shape = (setup.n_iter, shifts.shape[0], setup.n_sample, shifts.shape[1])
    generator = torch.Generator().manual_seed(seed)
    noise = torch.nn.init.trunc_normal_(torch.empty(shape), 0.0, 1.0, -2.0, 2.0, generator)
    return _ours_hard(setup, shifts, noise=noise)


def ours_sampling(sampling: Sampling) -> RastriginSolver:
    """``impl.cem.solve`` with ``CEMOptions(sampling=...)`` (CEM-37)."""

    def run(setup: RastriginSetup, shifts: Tensor, seed: int) -> Tensor:
        options = CEMOptions(
            n_sample=setup.n_sample,
            n_elite=setup.n_elite,
            n_iter=setup.n_iter,
            tau=None,
            sampling=sampling,
        )
        return solve(
            lambda x: rastrigin(x, shifts),
            torch.zeros_like(shifts),
            setup.sigma0,
            options,
            lb=-setup.bound,
            ub=setup.bound,
            generator=torch.Generator().manual_seed(seed),
        ).x

    return run


def mbrl_rastrigin(setup: RastriginSetup, shifts: Tensor, seed: int) -> Tensor:
    from mbrl.planning import CEMOptimizer  # type: ignore[import-untyped, import-not-found, unused-ignore]

    torch.manual_seed(seed)
    d = shifts.shape[1]
    optimizer = CEMOptimizer(
        num_iterations=setup.n_iter,
        elite_ratio=setup.n_elite / setup.n_sample,
        population_size=setup.n_sample,
        lower_bound=[-setup.bound] * d,
        upper_bound=[setup.bound] * d,
        alpha=0.1,
        device=torch.device("cpu"),
    )
    points = []
    for shift in shifts:
        objective = lambda p, s=shift: -rastrigin(p.unsqueeze(0), s.unsqueeze(0))[0]  # noqa: E731
        points.append(optimizer.optimize(objective, torch.zeros(d)))
    return torch.stack(points)


def torchrl_rastrigin(setup: RastriginSetup, shifts: Tensor, seed: int) -> Tensor:
    """TorchRL's ``CEMPlanner`` on a one-step environment: observation = shift,
    action = ``x / σ₀``, reward = ``−f``."""
    from tensordict import TensorDict  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from torchrl.data import Bounded, Composite, Unbounded  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from torchrl.envs import EnvBase  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from torchrl.modules.planners import CEMPlanner  # type: ignore[import-untyped, import-not-found, unused-ignore]

    scale, d = setup.sigma0, shifts.shape[1]

    class OneStep(EnvBase):  # type: ignore[misc, unused-ignore]
        batch_locked = False

        def __init__(self) -> None:
            super().__init__(batch_size=torch.Size([]))
            self.observation_spec = Composite(observation=Unbounded((d,)))
            self.action_spec = Bounded(-setup.bound / scale, setup.bound / scale, (d,))
            self.reward_spec = Unbounded((1,))

        def _reset(self, tensordict: Any, **kwargs: Any) -> Any:
            return TensorDict({"observation": torch.zeros(d)}, batch_size=[])

        def _step(self, tensordict: Any) -> Any:
            shift, x = tensordict.get("observation"), scale * tensordict.get("action")
            flat_x, flat_shift = x.reshape(-1, 1, d), shift.reshape(-1, d)
            reward = -rastrigin(flat_x, flat_shift).reshape(*x.shape[:-1], 1)
            done = torch.zeros(reward.shape, dtype=torch.bool)
            return TensorDict(
                {"observation": shift, "reward": reward, "done": done, "terminated": done},
                batch_size=tensordict.batch_size,
            )

        def _set_seed(self, seed: int | None) -> None:
            """Stateless: nothing to seed."""

    torch.manual_seed(seed)
    planner = CEMPlanner(OneStep(), 1, setup.n_iter, setup.n_sample, setup.n_elite)
    td = TensorDict({"observation": shifts}, batch_size=[shifts.shape[0]])
    action: Tensor = planner(td)["action"]
    return scale * action


def rastrigin_rows() -> dict[str, RastriginSolver]:
    return {
        "this project, hard CEM (samples clipped to the box)": ours_clipped,
        '… `sampling="truncated"` (CEM-37)': ours_sampling("truncated"),
        '… `sampling="variance_constrained"` (CEM-37)': ours_sampling("variance_constrained"),
        "… truncated noise drawn by the caller, passed as `noise=`": ours_noise_arg,
        "mbrl-lib CEM (truncated normal)": mbrl_rastrigin,
        "TorchRL CEMPlanner": torchrl_rastrigin,
    }


@dataclass(frozen=True)
class RastriginRow:
    values: list[float]
    ms: list[float]
    solved_below: float

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def solved(self) -> float:
        return sum(v < self.solved_below for v in self.values) / len(self.values)


def rastrigin_table(setup: RastriginSetup, log: Callable[[str], None]) -> dict[str, RastriginRow]:
    table = {}
    for label, solver in rastrigin_rows().items():
        values: list[float] = []
        times: list[float] = []
        for seed in range(setup.seeds):
            g = torch.Generator().manual_seed(10_000 + seed)
            shifts = (2 * torch.rand(setup.problems, setup.dim, generator=g) - 1) * setup.shift
            with torch.no_grad():
                began = time.perf_counter()
                points = solver(setup, shifts, seed)
                times.append(1e3 * (time.perf_counter() - began))
            values.extend(rastrigin(points.unsqueeze(1), shifts)[:, 0].tolist())
        table[label] = RastriginRow(values, times, setup.solved)
        row = table[label]
        ms = statistics.median(times)
        log(f"  {row.median:8.2f} {100 * row.solved:5.1f}% {ms:8.0f} ms  {label}")
    return table


def interleaved_speed(setup: CartpoleSetup, n: int, repeats: int) -> dict[str, float]:
    """Median ms per env step of ``MPC``'s defaults and of mbrl-lib's iCEM, the two
    alternating in chunks of 10 control steps from the same starts (so a change of
    machine load hits both alike)."""
    rows = cartpole_rows(setup)
    starts = SYSTEM.sample_initial(setup.starts, torch.Generator().manual_seed(0))
    chunk = min(10, setup.steps)
    times: dict[str, list[float]] = {DEFAULTS: [], MBRL_ICEM: []}
    for repeat in range(repeats):
        for label in times:
            groups = (
                [starts[i : i + 1] for i in range(setup.starts)]
                if label in ONE_PROBLEM_PER_CALL
                else [starts]
            )
            for i, group in enumerate(groups):
                torch.manual_seed(1000 * repeat + i)
                times[label].extend(episode(rows[label](n, 1000 * repeat + i), group, chunk)[1])
    return {label: statistics.median(ms) for label, ms in times.items()}


SAMPLINGS: tuple[Sampling, ...] = ("clip", "truncated", "variance_constrained")


def sampler_costs(setup: RastriginSetup, repeats: int) -> dict[str, float]:
    """Median ms per Rastrigin batch of each ``sampling`` mode, the modes interleaved
    within every repeat (so a change of machine load hits all of them alike)."""
    times: dict[str, list[float]] = {mode: [] for mode in SAMPLINGS}
    g = torch.Generator().manual_seed(10_000)
    shifts = (2 * torch.rand(setup.problems, setup.dim, generator=g) - 1) * setup.shift
    with torch.no_grad():
        for repeat in range(repeats):
            for mode in SAMPLINGS:
                began = time.perf_counter()
                ours_sampling(mode)(setup, shifts, repeat)
                times[mode].append(1e3 * (time.perf_counter() - began))
    return {mode: statistics.median(ms) for mode, ms in times.items()}


def targets(
    cartpole: dict[str, dict[int, Row]],
    rastrigin_results: dict[str, RastriginRow],
    samplers: dict[str, float],
    speed: dict[int, dict[str, float]],
) -> list[str]:
    """The issue's targets, as measured in this run (lines of markdown)."""
    lines = []
    for n, by_label in speed.items():
        ratio = by_label[MBRL_ICEM] / by_label[DEFAULTS]
        lines.append(
            f"- Speed, interleaved (N={n}): `MPC` defaults {by_label[DEFAULTS]:.1f} ms, "
            f"mbrl-lib iCEM {by_label[MBRL_ICEM]:.1f} ms per env step: {ratio:.1f}×."
        )
    ours, icem = cartpole.get(DEFAULTS, {}), cartpole.get(MBRL_ICEM, {})
    if 100 in ours and 100 in icem:
        lines.append(
            f"- cartpole N=100: `MPC` defaults {ours[100].mean_cost:.1f} against mbrl-lib "
            f"iCEM {icem[100].mean_cost:.1f}, {icem[100].ms / ours[100].ms:.1f}× its speed "
            "per env step (target: cost at most iCEM's, ≥ 5× its speed)."
        )
    if 500 in ours:
        peers = [
            by_n[500].mean_cost
            for label, by_n in cartpole.items()
            if 500 in by_n and ("mbrl-lib" in label or "TorchRL" in label)
        ]
        if peers:
            lines.append(
                f"- cartpole N=500: `MPC` defaults {ours[500].mean_cost:.1f} against the "
                f"best peer {min(peers):.1f} (target: at most the best peer's)."
            )
    truncated = rastrigin_results.get('… `sampling="truncated"` (CEM-37)')
    mbrl = rastrigin_results.get("mbrl-lib CEM (truncated normal)")
    if truncated is not None and mbrl is not None:
        faster = statistics.median(mbrl.ms) / statistics.median(truncated.ms)
        lines.append(
            f'- Rastrigin: `sampling="truncated"` solves {100 * truncated.solved:.0f} % '
            f"against mbrl-lib's {100 * mbrl.solved:.0f} %, at {faster:.1f}× its speed "
            "(target: at least its solved share, ≥ 1.5× its speed)."
        )
    if samplers:
        clip = samplers["clip"]
        ratios = ", ".join(
            f"`{mode}` {ms:.0f} ms ({ms / clip:.2f}×)" for mode, ms in samplers.items()
        )
        lines.append(
            f"- Sampler cost, Rastrigin batch, modes interleaved: {ratios} "
            "(target: truncated modes ≤ 1.5× the clipped Gaussian)."
        )
    return lines


# -- report ------------------------------------------------------------------------------------


def markdown(
    cartpole: dict[str, dict[int, Row]],
    rastrigin_results: dict[str, RastriginRow],
    csetup: CartpoleSetup,
    rsetup: RastriginSetup,
    seconds: float,
    samplers: dict[str, float] | None = None,
    speed: dict[int, dict[str, float]] | None = None,
) -> str:
    import mbrl  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import torchrl  # type: ignore[import-untyped, import-not-found, unused-ignore]

    n_cols = csetup.samples
    head = (
        f"| cartpole MPC, H={csetup.horizon}, T={csetup.n_iter}, {csetup.steps} steps, "
        f"{csetup.starts} starts × {csetup.seeds} seeds; σ₀ = {SIGMA0:g} N |"
    )
    for n in n_cols:
        head += f" N={n}: mean cost (worst episode) | ms per env step |"
    lines = [head, "|---|" + "---|---|" * len(n_cols)]
    for label, by_n in cartpole.items():
        cells = "".join(
            f" {by_n[n].mean_cost:.1f} ({by_n[n].worst_cost:.1f}) | {by_n[n].ms:.1f} |"
            for n in n_cols
        )
        lines.append(f"| {label} |{cells}")
    lines += [
        "",
        f"| {rsetup.problems} shifted {rsetup.dim}-D Rastrigin, box [−{rsetup.bound:g}, "
        f"{rsetup.bound:g}], N={rsetup.n_sample}, k={rsetup.n_elite}, T={rsetup.n_iter}, "
        f"{rsetup.seeds} seeds | median f(x) | solved (f < {rsetup.solved:g}) | ms per batch |",
        "|---|---|---|---|",
    ]
    for label, row in rastrigin_results.items():
        ms = statistics.median(row.ms)
        lines.append(f"| {label} | {row.median:.2f} | {100 * row.solved:.0f} % | {ms:.0f} |")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in _loadavg())
    return "\n".join(
        [
            "# Planners against mbrl-lib and TorchRL (issue 15)",
            "",
            "Made by `python -m benchmarks.planners` (setup in its docstring): "
            f"{now}, {platform.machine()} CPU, one thread, torch {torch.__version__}, "
            f"mbrl-lib {getattr(mbrl, '__version__', '0.2.0')}, torchrl {torchrl.__version__}, "
            f"load average {load}, {seconds / 60:.1f} min. Times are medians of the "
            "per-call wall times; the machine is shared, so compare rows, not runs.",
            "",
            *lines,
            "",
            "Targets of issue 15 in this run:",
            "",
            *targets(cartpole, rastrigin_results, samplers or {}, speed or {}),
            "",
        ]
    )


def _loadavg() -> tuple[float, float, float]:
    try:
        import os

        return os.getloadavg()
    except OSError:
        return (math.nan, math.nan, math.nan)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: structure only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    csetup, rsetup = (
        (QUICK_CARTPOLE, QUICK_RASTRIGIN) if args.quick else (CartpoleSetup(), RastriginSetup())
    )

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    began = time.perf_counter()
    log("cartpole MPC (mean cost, ms per env step):")
    cartpole = cartpole_table(csetup, log)
    log("Rastrigin (median f, solved, ms per batch):")
    rastrigin_results = rastrigin_table(rsetup, log)
    log("sampler cost (interleaved):")
    samplers = sampler_costs(rsetup, 2 if args.quick else 9)
    log("  " + ", ".join(f"{mode} {ms:.0f} ms" for mode, ms in samplers.items()))
    log("speed, MPC defaults and mbrl-lib iCEM interleaved (ms per env step):")
    speed = {}
    for n in csetup.samples:
        speed[n] = interleaved_speed(csetup, n, 1 if args.quick else 3)
        log(f"  N={n}: " + ", ".join(f"{ms:.1f} ms {label}" for label, ms in speed[n].items()))
    seconds = time.perf_counter() - began
    text = markdown(cartpole, rastrigin_results, csetup, rsetup, seconds, samplers, speed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
