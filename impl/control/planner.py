"""Model-predictive control with CEM/DCEM over action sequences (spec/control.md).

- ``rollout_cost`` turns dynamics and a per-step cost into the objective of
  eq. 7 for a batch of initial states: candidates ``(B, N, H, n_u)`` →
  costs ``(B, N)``, one batched dynamics call per time step (CTL-1).
- ``plan`` solves eq. 7 with ``impl.dcem`` over ``(B, H, n_u)`` with
  per-dimension action bounds (CTL-2, CTL-3); with ``tau > 0`` the plan and
  its cost are differentiable in every parameter of the dynamics and the cost
  (CTL-4).
- ``MPC`` runs it in a receding horizon with warm starts; its whole state,
  warm start and random state, is the explicit, resettable ``MPCState``
  (CTL-5 … CTL-7, CTL-17): restoring it reproduces the controller.
- The peers' recipes reach both: colored noise (``PlannerConfig.noise_beta``,
  CTL-20), policy-prior proposals (``proposals=``, CTL-21), and iCEM's kept
  elites shifted into the next control step (CTL-22); the defaults
  (``PLANNER_SOLVER``) were chosen from measurements (CTL-23).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from impl._checks import (
    require_callable,
    require_finite_real,
    require_floating_dtype,
    require_floating_tensor,
    require_int,
    require_positive_int,
)
from impl.cem import ColoredNoise, DCEMStep, solve
from impl.options import CEMOptions

Dynamics = Callable[[Tensor, Tensor], Tensor]
"""``x_{t+1} = f(x_t, u_t)``: states ``(..., n_x)``, actions ``(..., n_u)``."""

StepCost = Callable[[Tensor, Tensor], Tensor]
"""``C(x_t, u_t)``: states ``(..., n_x)``, actions ``(..., n_u)`` → ``(...)``."""

ActionCost = Callable[[Tensor], Tensor]
"""The objective of eq. 7: action sequences ``(B, N, H, n_u)`` → costs ``(B, N)``."""


def rollout(
    dynamics: Dynamics, step_cost: StepCost, initial_state: Tensor, actions: Tensor
) -> tuple[Tensor, Tensor]:
    """Simulate eq. 7's constraint and sum its cost (CTL-1).

    ``cost = Σ_{t=1}^{H} C(x_t, u_t)`` with ``x_1 = x_init`` and
    ``x_{t+1} = f(x_t, u_t)``.

    Args:
        dynamics, step_cost: see ``Dynamics`` and ``StepCost``.
        initial_state: ``(B, n_x)``.
        actions: ``(B, N, H, n_u)``: ``N`` candidate sequences per state.

    Returns:
        ``(costs (B, N), states (B, N, H + 1, n_x))``.
    """
    batch, n_cand, horizon, _ = actions.shape
    state = initial_state.unsqueeze(1).expand(batch, n_cand, initial_state.shape[-1])
    states = [state]
    total = actions.new_zeros(batch, n_cand)
    for t in range(horizon):
        action = actions[:, :, t]
        total = total + step_cost(state, action)
        state = dynamics(state, action)
        states.append(state)
    return total, torch.stack(states, dim=2)


def rollout_cost(dynamics: Dynamics, step_cost: StepCost, initial_state: Tensor) -> ActionCost:
    """The objective of eq. 7 from ``initial_state (B, n_x)``, for ``plan``."""

    def cost(actions: Tensor) -> Tensor:
        return rollout(dynamics, step_cost, initial_state, actions)[0]

    return cost


PLANNER_SOLVER = CEMOptions(
    tau=None, smoothing=0.1, output="best", keep_elites=0.3, mean_candidate=True
)
"""``PlannerConfig``'s default solver options (CTL-23): ``impl.dcem.dcem``'s
sizes (N=100, k=10, T=10), hard CEM (``tau=None``) with iCEM's recipe on
white noise: smoothing ``α = 0.1``, the best sample executed, 30 % of the
elites kept into the next iteration and, shifted, into the next control step,
and the mean as a candidate in the last iteration. Chosen from
``python -m benchmarks.planners`` (spec/control.md, CTL-23). The paper's
full-space expert is ``CEMOptions(tau=None)`` (plain hard CEM): the
reproductions write their options out."""

PAPER_PLANNER_SOLVER = CEMOptions(tau=None)
"""The paper's full-space expert's solver: plain hard CEM returning the mean
(spec/paper.md §2), one config away from the defaults (CTL-23)."""


@dataclass(frozen=True)
class PlannerConfig:
    """How to solve eq. 7 over the full action space (CTL-2, CTL-16).

    Attributes:
        horizon: ``H ≥ 1``.
        action_lb, action_ub: bounds, numbers or ``(n_u,)`` tensors, ``lb < ub``.
        action_dim: ``n_u``.
        init_std: ``σ_0`` of every solve, a number or ``(n_u,)`` tensor;
            ``None`` takes ``INIT_STD_SCALE · (ub − lb)`` (the paper's expert).
        solver: every scalar option of the solve (``N``, ``k``, ``T``, ``τ``,
            normalization, σ floor, ``tol``, output, differentiation,
            smoothing, elite weights), passed whole to ``impl.cem.solve``.
            Default ``PLANNER_SOLVER`` (hard CEM with iCEM's recipe, CTL-23;
            ``PAPER_PLANNER_SOLVER`` is the paper's). Note that ``CEMOptions()``
            alone is DCEM with ``τ = 1``: write ``tau=None`` for hard CEM.
        noise_beta: ``β ≥ 0``: the solves draw colored noise with PSD
            ``∝ 1/f^β`` along the horizon (CEM-33, CTL-20, iCEM); ``0`` draws
            ``WhiteNoise`` (the default).
    """

    horizon: int
    action_lb: Tensor | float
    action_ub: Tensor | float
    action_dim: int = 1
    init_std: Tensor | float | None = None
    solver: CEMOptions = PLANNER_SOLVER
    noise_beta: float = 0.0

    def __post_init__(self) -> None:
        require_options(self.solver)
        require_finite_real("noise_beta", self.noise_beta, minimum=0, strict=False)


def require_options(solver: object) -> CEMOptions:
    """The ``solver`` field must be a ``CEMOptions`` (CTL-13)."""
    if not isinstance(solver, CEMOptions):
        raise TypeError(
            f"solver must be an impl.options.CEMOptions, got {type(solver).__name__}: {solver!r}"
        )
    return solver


INIT_STD_SCALE = 0.5
"""Default ``σ_0 = 0.5 (ub − lb)``: the paper's full-space expert (spec/paper.md §2,
the authors' ``init_sigma_scale``)."""


@dataclass(frozen=True)
class Plan:
    """A solution of eq. 7 for ``B`` problems.

    Attributes:
        actions: ``(B, H, n_u)`` the plan.
        cost: ``(B,)`` its cost under the objective.
        first_action: ``(B, n_u)`` what a receding-horizon controller applies.
        mean, std: ``(B, H, n_u)`` the final sampling distribution.
        n_iter: ``(B,)`` solver iterations used.
        elites: ``(B, K, H, n_u)`` the elites kept from the last iteration
            (CEM-39), lowest cost first; ``K = 0`` unless
            ``config.solver.keep_elites`` keeps some.
    """

    actions: Tensor
    cost: Tensor
    first_action: Tensor
    mean: Tensor
    std: Tensor
    n_iter: Tensor
    elites: Tensor


def action_bounds(
    config: PlannerConfig, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """The bounds as ``(n_u,)`` tensors on ``device``, checked (CTL-3, CTL-13).

    ``lb < ub`` is checked on the host, without a device synchronization
    (CTL-14), wherever the values are there: numbers and CPU tensors are
    checked (in ``dtype``) before they reach ``device``; a bound given as a
    tensor on another device is read only when ``device`` is the CPU.
    """
    n_u = require_positive_int("action_dim", config.action_dim)
    lower, host_lower = _bound("action_lb", config.action_lb, n_u, device, dtype)
    upper, host_upper = _bound("action_ub", config.action_ub, n_u, device, dtype)
    if host_lower is None or host_upper is None:  # on an accelerator: not read (CTL-14)
        return lower, upper
    for name, host in (("action_lb", host_lower), ("action_ub", host_upper)):
        if not bool(torch.isfinite(host).all()):
            raise ValueError(f"{name} must be finite, got {host.tolist()}")
    if not bool((host_lower < host_upper).all()):
        raise ValueError(
            "action bounds must satisfy lb < ub in every dimension; "
            f"got lb={host_lower.tolist()}, ub={host_upper.tolist()}"
        )
    return lower, upper


def _bound(
    name: str, value: Tensor | float, n: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor | None]:
    """``vector(name, value, n, device, dtype)``, and the same values on the CPU
    when they can be read there without a device synchronization, else None."""
    cpu = torch.device("cpu")
    if isinstance(value, Tensor) and value.device.type != "cpu":
        bound = vector(name, value, n, device, dtype)
        return bound, bound if bound.device.type == "cpu" else None
    host = vector(name, value, n, cpu, dtype)
    if device.type == "cpu":
        return host, host
    if isinstance(value, Tensor):
        return host.to(device), host  # the one copy the tensor needs, checked before it
    return vector(name, value, n, device, dtype), host  # a fill: no host-to-device copy


@dataclass(frozen=True)
class PlanTensors:
    """A configuration's bounds and ``σ_0`` as ``(n_u,)`` tensors on one device
    and dtype (CTL-2, CTL-3): what ``plan`` builds on every call and ``MPC``
    once, at construction."""

    lower: Tensor
    upper: Tensor
    std: Tensor
    midpoint: Tensor


def plan_tensors(config: PlannerConfig, device: torch.device, dtype: torch.dtype) -> PlanTensors:
    """The bounds (checked, ``action_bounds``), ``σ_0`` (``config.init_std`` or
    ``INIT_STD_SCALE · (ub − lb)``) and the bounds' midpoint (CTL-2, CTL-6).

    The bounds and ``σ_0`` are held in the solve's state dtype (float32 for
    float16/bfloat16 actions, CEM-24), so that the solve moves the bounds
    inward to values of ``dtype`` (rounded to ``dtype`` first, ``ub = 0.3``
    became 0.30005 in float16 and candidates reached it) and ``ub − lb`` does
    not overflow (float16 bounds ±40000). The midpoint, the fresh warm start,
    is in ``dtype``. Shapes ``(n_u,)``."""
    require_floating_dtype("dtype", dtype)
    wide = torch.promote_types(dtype, torch.float32)
    lower, upper = action_bounds(config, device, wide)
    if config.init_std is None:
        std = INIT_STD_SCALE * (upper - lower)
    else:
        std = vector("init_std", config.init_std, lower.shape[0], device, wide)
    return PlanTensors(lower, upper, std, (0.5 * (lower + upper)).to(dtype))


def same_device(first: torch.device, second: torch.device) -> bool:
    """Whether tensors on ``first`` and on ``second`` are on one device.

    An index-less accelerator device (``cuda``) is the current one, which is
    where PyTorch creates its tensors (and they report ``cuda:0`` while
    device 0 is current).
    """
    if first.type != second.type:
        return False
    if first.type in ("cpu", "meta") or first.index == second.index:  # cpu:0 is the CPU
        return True
    return _index(first) == _index(second)


def _index(device: torch.device) -> int:
    """An accelerator device's index, the current one when it has none."""
    if device.index is not None:
        return device.index
    index: int = torch.get_device_module(device.type).current_device()
    return index


def plan(
    cost_fn: ActionCost,
    config: PlannerConfig,
    batch: int,
    *,
    init_mean: Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    proposals: Tensor | None = None,
    elites: Tensor | None = None,
    callback: Callable[[DCEMStep], None] | None = None,
) -> Plan:
    """Solve eq. 7 for ``batch`` problems with CEM/DCEM over action sequences.

    Args:
        cost_fn: candidates ``(B, N, H, n_u)`` → costs ``(B, N)``.
        config: the planner's settings.
        batch: ``B``.
        init_mean: ``(B, H, n_u)`` warm start; default the bounds' midpoint.
        device, dtype: where to plan (taken from ``init_mean`` when given).
        generator: source of the sampling noise.
        noise: pre-drawn standard-normal noise ``(T, B, N, H·n_u)`` (overrides
            ``generator`` and ``config.noise_beta``; see ``impl.dcem.dcem``).
        proposals: ``(B, P, H, n_u)`` action sequences that join every
            iteration's candidates (CEM-34, CTL-21), e.g. a policy prior's.
        elites: ``(B, K, H, n_u)`` candidates of the first iteration only,
            e.g. the previous plan's kept elites shifted by a step (CEM-39, CTL-22).
        callback: ``impl.dcem``'s per-iteration callback (samples flattened to
            ``(B, N, H·n_u)``).
    """
    require_positive_int("horizon", config.horizon)
    batch = require_positive_int("batch", batch)
    if init_mean is not None:
        require_floating_tensor("init_mean", init_mean)
        device, dtype = init_mean.device, init_mean.dtype
    device = torch.device("cpu") if device is None else torch.device(device)
    return _plan(
        cost_fn,
        config,
        batch,
        plan_tensors(config, device, dtype),
        init_mean=init_mean,
        generator=generator,
        noise=noise,
        proposals=proposals,
        elites=elites,
        callback=callback,
    )


def _plan(
    cost_fn: ActionCost,
    config: PlannerConfig,
    batch: int,
    tensors: PlanTensors,
    *,
    init_mean: Tensor | None,
    generator: torch.Generator | None,
    noise: Tensor | None,
    proposals: Tensor | None,
    elites: Tensor | None,
    callback: Callable[[DCEMStep], None] | None,
) -> Plan:
    """``plan`` with its checked arguments and its ``tensors`` (on ``init_mean``'s
    device and dtype) built."""
    require_callable("cost_fn", cost_fn)
    horizon = config.horizon
    lower, upper, std = tensors.lower, tensors.upper, tensors.std
    n_u = lower.shape[0]
    shape = (batch, horizon, n_u)
    if init_mean is None:
        init_mean = tensors.midpoint.expand(shape)
    elif tuple(init_mean.shape) != shape:
        raise ValueError(f"init_mean has shape {tuple(init_mean.shape)}, expected {shape}")

    width = horizon * n_u

    def flat(name: str, sequences: Tensor | None) -> Tensor | None:
        """``(B, P, H, n_u)`` → ``(B, P, H·n_u)``."""
        if sequences is None:
            return None
        require_sequences(name, sequences, shape)
        return sequences.reshape(batch, sequences.shape[1], width)

    sampler = None
    if noise is None and config.noise_beta > 0:
        sampler = ColoredNoise(config.noise_beta, horizon, n_u)

    def flat_cost(flat: Tensor) -> Tensor:
        values = cost_fn(flat.reshape(batch, flat.shape[1], horizon, n_u))
        check_costs(values, (batch, flat.shape[1]))
        return values

    result = solve(
        flat_cost,
        init_mean.reshape(batch, horizon * n_u),
        std.expand(horizon, n_u).reshape(1, horizon * n_u),
        config.solver,
        lb=lower.expand(horizon, n_u).reshape(1, horizon * n_u),
        ub=upper.expand(horizon, n_u).reshape(1, horizon * n_u),
        generator=generator,
        noise=noise,
        sampler=sampler,
        proposals=flat("proposals", proposals),
        elites=flat("elites", elites),
        callback=callback,
    )
    actions = result.x.reshape(shape)
    # The point is evaluated once more, except where "best" already carries the value f
    # gave it: a finite best value (else no candidate was finite and the point is the
    # initial mean, never evaluated; CEM-16, CTL-2).
    cost = reported_cost(flat_cost, result.x, result.best_value, config.solver.output)
    return Plan(
        actions=actions,
        cost=cost,
        first_action=actions[:, 0],
        mean=result.mean.reshape(shape),
        std=result.std.reshape(shape),
        n_iter=result.n_iter,
        elites=result.elites.reshape(batch, -1, horizon, n_u)
        if result.elites is not None
        else actions.unsqueeze(1)[:, :0],
    )


@dataclass(frozen=True)
class MPCState:
    """Everything a receding-horizon controller carries between steps (CTL-7, CTL-17).

    Attributes:
        warm_start: ``(B, H, n_u)`` the mean the next solve starts from.
        rng: the state of the generator the next solve draws its noise from,
            a CPU ``uint8`` tensor as ``torch.Generator.get_state`` returns
            it (of a generator on the controller's device).
        elites: ``(B, K, H, n_u)`` the last plan's kept elites shifted by one
            step, candidates of the next solve's first iteration (CTL-22);
            ``K = 0`` before the first plan and without ``keep_elites``.

    Every field is a plain tensor: ``dataclasses.asdict(state)`` can be saved
    with ``torch.save`` and loaded with ``torch.load(weights_only=True)``, and
    ``MPCState(**loaded)`` restores it.
    """

    warm_start: Tensor
    rng: Tensor
    elites: Tensor | None = None


def shift_warm_start(actions: Tensor, fill: Tensor) -> Tensor:
    """The previous plan advanced by one step: ``[u_2, …, u_H, fill]`` (CTL-5).

    ``actions (..., H, n_u)``, ``fill (n_u,)`` → ``(..., H, n_u)`` (a batch
    of plans, or of kept elites ``(B, K, H, n_u)``, CTL-22).
    """
    tail = fill.to(actions).expand(*actions.shape[:-2], 1, actions.shape[-1])
    return torch.cat((actions[..., 1:, :], tail), dim=-2)


SEED_BOUND = 2**63 - 1
"""Seeds are integers in ``[0, SEED_BOUND)``; an unseeded controller draws one
there from PyTorch's global generator."""


def seeded_rng(seed: int | None, device: torch.device) -> Tensor:
    """The state of a generator on ``device`` seeded with ``seed`` (CTL-17).

    ``seed`` None draws the seed from PyTorch's global generator (so
    ``torch.manual_seed`` makes it reproducible). On the ``meta`` device,
    which has no generator, the state is a CPU generator's.
    """
    if seed is None:
        seed = int(torch.randint(0, SEED_BOUND, ()))
    value = require_seed(seed)
    return torch.Generator(device=_generator_device(device)).manual_seed(value).get_state()


def require_seed(seed: object) -> int:
    """An integer seed in ``[0, SEED_BOUND)`` (CTL-17; ``TypeError``/``ValueError`` naming it)."""
    value = require_int("seed", seed)
    if not 0 <= value < SEED_BOUND:
        raise ValueError(f"seed must satisfy 0 <= seed < 2**63 - 1, got {seed}")
    return value


def _generator_device(device: torch.device) -> torch.device:
    return torch.device("cpu") if device.type == "meta" else device


class MPC:
    """Receding-horizon CEM/DCEM for ``batch`` environments (CTL-5 … CTL-7, CTL-17).

    Each ``act`` solves eq. 7 starting from the warm start (σ reset to
    ``config.init_std``), returns the ``Plan`` (apply ``plan.first_action``),
    and stores the plan shifted by one step, its tail filled with the bounds'
    midpoint. The stored warm start is detached: no graph is kept across
    steps. The sampling noise is drawn from a generator restored from
    ``state.rng`` and saved back after the solve. ``state`` is the whole
    memory of the controller: assigning a saved state to a fresh controller
    of the same configuration and batch reproduces the actions bit for bit.
    ``reset(mask)`` restarts the environments where ``mask`` is true (e.g. new
    episodes); it leaves the random state running.
    """

    def __init__(
        self,
        config: PlannerConfig,
        batch: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        seed: int | None = None,
    ) -> None:
        """``seed``: of the controller's noise (CTL-17); None draws one from
        PyTorch's global generator."""
        self.config = config
        self.batch = require_int("batch", batch)
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.dtype = dtype
        # Built once, on the device: every act reuses them (no copies, CTL-14).
        self._tensors = plan_tensors(config, self.device, dtype)
        self._midpoint = self._tensors.midpoint
        self.state = MPCState(
            warm_start=self.fresh_warm_start(),
            rng=seeded_rng(seed, self.device),
            elites=self.fresh_warm_start().unsqueeze(1)[:, :0],
        )

    def fresh_warm_start(self) -> Tensor:
        """The warm start of fresh episodes, ``(B, H, n_u)``: the bounds' midpoint."""
        horizon = require_positive_int("horizon", self.config.horizon)
        shape = (self.batch, horizon, self._midpoint.shape[0])
        return self._midpoint.expand(shape).clone()

    def reset(self, mask: Tensor | None = None) -> None:
        """Restart all environments, or those where ``mask (B,)`` is true (CTL-7).

        The warm start is reset; so are the kept elites (CTL-22): all of them
        are dropped, or, for a mask, those of the restarted environments are
        replaced by the fresh warm start. The random state keeps running.
        """
        fresh = self.fresh_warm_start()
        if mask is not None and not isinstance(mask, Tensor):
            raise ValueError(
                f"mask must be a bool tensor of shape ({self.batch},), got {type(mask).__name__}"
            )
        if mask is None:
            empty = fresh.unsqueeze(1)[:, :0]
            self.state = replace(self.state, warm_start=fresh, elites=empty)
            return
        if tuple(mask.shape) != (self.batch,) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor of shape ({self.batch},), got "
                f"{tuple(mask.shape)} {mask.dtype}"
            )
        keep = torch.where(mask.view(-1, 1, 1), fresh, self.state.warm_start)
        elites = self.state.elites
        if elites is not None:
            elites = torch.where(mask.view(-1, 1, 1, 1), fresh.unsqueeze(1), elites)
        self.state = replace(self.state, warm_start=keep, elites=elites)

    def act(
        self,
        cost_fn: ActionCost,
        callback: Callable[[DCEMStep], None] | None = None,
        *,
        proposals: Tensor | None = None,
    ) -> Plan:
        """Plan from the warm start, then shift it by one step (CTL-5, CTL-6, CTL-17).

        ``proposals``: ``(B, P, H, n_u)`` action sequences, e.g. a policy
        prior's, that join every iteration's candidates of this solve
        (CTL-21). The kept elites of the last plan, shifted, join its first
        iteration (CTL-22). The state is replaced only when the solve
        returns: a solve that raises leaves it as it was.
        """
        generator = None
        if self.device.type != "meta":  # meta draws no values: nothing to seed
            generator = torch.Generator(device=self.device)
            generator.set_state(self.state.rng)
        warm_start = self.state.warm_start
        tensors = self._tensors
        if warm_start.dtype != self.dtype or not same_device(warm_start.device, self.device):
            # a state restored in another dtype or on another device: plan there, as plan does
            tensors = plan_tensors(self.config, warm_start.device, warm_start.dtype)
        result = _plan(
            cost_fn,
            self.config,
            self.batch,
            tensors,
            init_mean=warm_start,
            generator=generator,
            noise=None,
            proposals=proposals,
            elites=self.state.elites
            if self.state.elites is not None and self.state.elites.shape[1]
            else None,
            callback=callback,
        )
        self.state = MPCState(
            warm_start=shift_warm_start(result.actions.detach(), self._midpoint),
            rng=self.state.rng if generator is None else generator.get_state(),
            elites=shift_warm_start(result.elites.detach(), self._midpoint),
        )
        return result


def vector(
    name: str, value: Tensor | float, n: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """A number or an ``(n,)`` (or broadcastable) tensor as an ``(n,)`` tensor."""
    if isinstance(value, Tensor):
        if value.dim() > 1 or (value.dim() == 1 and value.shape[0] not in (1, n)):
            raise ValueError(
                f"{name} must be a number or a tensor of shape ({n},), got {tuple(value.shape)}"
            )
        return value.to(device=device, dtype=dtype).expand(n).clone()
    number = require_finite_real(name, value, minimum=-float("inf"), strict=False)
    return torch.full((n,), number, device=device, dtype=dtype)


def require_sequences(name: str, sequences: object, shape: tuple[int, int, int]) -> None:
    """Action sequences ``(B, P, H, n_u)`` with ``P ≥ 1`` for plans of ``shape
    (B, H, n_u)`` (proposals, kept elites; CTL-13, CTL-21); a non-tensor is a ``TypeError``."""
    if not isinstance(sequences, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(sequences).__name__}")
    if (
        sequences.dim() != 4
        or (sequences.shape[0], *sequences.shape[2:]) != shape
        or sequences.shape[1] < 1
    ):
        batch, horizon, n_u = shape
        raise ValueError(
            f"{name} has shape {tuple(sequences.shape)}, expected "
            f"({batch}, P, {horizon}, {n_u}) with P >= 1"
        )


def reported_cost(
    flat_cost: Callable[[Tensor], Tensor], x: Tensor, best_value: Tensor, output: str
) -> Tensor:
    """The plan's cost ``(B,)`` at the solver's point ``x (B, H·n_u)`` (CTL-2):
    ``cost_fn`` there, except that ``output="best"`` reports the value the
    solver saw for it where that is finite (else no candidate was finite and
    the point is the initial mean, which the solver never evaluated)."""
    cost = flat_cost(x.unsqueeze(1))[:, 0]
    if output == "best":
        cost = torch.where(torch.isfinite(best_value), best_value, cost)
    return cost


def check_costs(values: object, shape: tuple[int, int]) -> None:
    """The rollout cost must return one cost per candidate (CTL-13)."""
    if not isinstance(values, Tensor):
        raise TypeError(f"the rollout cost must return a torch.Tensor, got {type(values).__name__}")
    if tuple(values.shape) != shape:
        raise ValueError(
            f"the rollout cost returned shape {tuple(values.shape)}; expected {shape} "
            "(one cost per candidate action sequence)"
        )
