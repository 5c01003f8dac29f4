"""The compiled MPC step: ``MPC.act`` with its solve compiled (spec/control.md, CTL-24).

``CompiledMPC(config, batch, cost)`` is the receding-horizon controller of
``impl.control.planner.MPC`` (same ``MPCState``, same warm start, kept
elites and random state, CTL-5 … CTL-7, CTL-17, CTL-22) whose step, from
the observed states of the ``B`` environments to the plan and the next
warm start, is one ``torch.compile`` graph (``impl.cem.compiled``, CEM-44).
The cost takes the observations as an argument (``ObservedCost``), so one
graph serves every step; the noise is drawn before the graph from the
controller's generator as the eager controller draws it (CEM-45), so both
controllers, seeded alike and given the same observations, return the same
actions up to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from impl._checks import require_callable
from impl.cem.compiled import (
    CompileMode,
    CompileSettings,
    draw_noise,
    raise_traced_error,
    solve_graph,
)
from impl.cem.samplers import ColoredNoise, NoiseSource, WhiteNoise
from impl.cem.solver import check_inputs
from impl.control.planner import (
    MPC,
    Dynamics,
    MPCState,
    Plan,
    PlannerConfig,
    StepCost,
    check_costs,
    plan_tensors,
    reported_cost,
    require_sequences,
    rollout,
    same_device,
    shift_warm_start,
)

ObservedCost = Callable[[Tensor, Tensor], Tensor]
"""The objective of eq. 7 from the observed states: ``(observation (B, n_x),
actions (B, N, H, n_u))`` → costs ``(B, N)``; e.g.
``observed_rollout_cost(dynamics, step_cost)``."""


def observed_rollout_cost(dynamics: Dynamics, step_cost: StepCost) -> ObservedCost:
    """The ``ObservedCost`` of eq. 7: ``rollout``'s summed cost from the observations (CTL-1).

    ``cost(observation (B, n_x), actions (B, N, H, n_u)) → (B, N)``, the
    ``rollout_cost`` of ``impl.control.planner`` with the initial states as an
    argument instead of a constant.
    """

    def cost(observation: Tensor, actions: Tensor) -> Tensor:
        return rollout(dynamics, step_cost, observation, actions)[0]

    return cost


class CompiledMPC:
    """``MPC`` whose ``act`` runs one compiled graph per step (CTL-24).

    ``act(observation)`` plans from the warm start for the ``B``
    environments whose states are ``observation (B, n_x)``, returns the
    ``Plan`` (apply ``plan.first_action``) and stores the shifted plan and
    kept elites, as ``MPC.act`` does with ``cost_fn = cost(observation, ·)``.
    Two graphs are traced: the first step (no kept elites yet) and the later
    ones (``config.solver.keep_elites > 0``); a reset without a mask goes
    back to the first. With ``mode="reduce-overhead"`` on CUDA the graph is
    replayed as a CUDA graph; the plan and the state are then copies out of
    the graph's memory.

    Args:
        config: the planner's settings; ``config.solver`` is the solve's
            ``CEMOptions`` (its ``output`` may not be ``"sample"`` with
            half-precision ``dtype``, CEM-47).
        batch: ``B``.
        cost: the ``ObservedCost``, traced into the graph.
        device, dtype, seed: as ``MPC``'s.
        backend, mode: ``impl.cem.compiled.CompileSettings``.
    """

    def __init__(
        self,
        config: PlannerConfig,
        batch: int,
        cost: ObservedCost,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        seed: int | None = None,
        backend: str = "inductor",
        mode: CompileMode | None = None,
    ) -> None:
        require_callable("cost", cost)
        self.controller = MPC(config, batch, device=device, dtype=dtype, seed=seed)
        self.config = config
        self.batch = self.controller.batch
        self.device = self.controller.device
        self.dtype = dtype
        self.cost = cost
        self.settings = CompileSettings(backend, mode)
        options = config.solver
        if options.output == "sample" and dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f'output="sample" with dtype {dtype} is not supported by the compiled step'
            )
        tensors = plan_tensors(config, self.device, dtype)
        lower, upper = tensors.lower, tensors.upper
        n_u = lower.shape[0]
        horizon = config.horizon
        width = horizon * n_u
        frame = _StepFrame(
            config,
            cost,
            tensors.std.expand(horizon, n_u).reshape(1, width),
            lower.expand(horizon, n_u).reshape(1, width),
            upper.expand(horizon, n_u).reshape(1, width),
            tensors.midpoint,
            (self.batch, horizon, n_u),
        )
        self._frame = frame
        self._shape = frame.shape
        self._source: NoiseSource = (
            ColoredNoise(config.noise_beta, horizon, n_u) if config.noise_beta > 0 else WhiteNoise()
        )

        def graph(
            observation: Tensor,
            warm_start: Tensor,
            noise: Tensor,
            elites: Tensor | None,
            proposals: Tensor | None,
            sample_eps: Tensor | None,
        ) -> tuple[Tensor, ...]:
            return mpc_step(frame, observation, warm_start, noise, elites, proposals, sample_eps)

        self._graph = self.settings.compile(graph)

    @property
    def state(self) -> MPCState:
        """The controller's whole memory (CTL-7, CTL-17): assignable, as ``MPC.state``."""
        return self.controller.state

    @state.setter
    def state(self, value: MPCState) -> None:
        self.controller.state = value

    def reset(self, mask: Tensor | None = None) -> None:
        """``MPC.reset``: restart all environments, or those where ``mask (B,)`` is true."""
        self.controller.reset(mask)

    def act(self, observation: Tensor, *, proposals: Tensor | None = None) -> Plan:
        """Plan from the warm start for ``observation (B, n_x)``, then shift (CTL-24).

        ``proposals``: ``(B, P, H, n_u)`` action sequences that join every
        iteration's candidates of this solve (CTL-21). As ``MPC.act``, the
        state is replaced only when the step returns.
        """
        if not isinstance(observation, Tensor):
            raise TypeError(f"observation must be a torch.Tensor, got {type(observation).__name__}")
        if observation.dim() < 1 or observation.shape[0] != self.batch:
            raise ValueError(
                f"observation must have shape ({self.batch}, ...), got {tuple(observation.shape)}"
            )
        if not same_device(observation.device, self.device):
            raise ValueError(
                f"observation is on {observation.device}, the controller on {self.device}"
            )
        if proposals is not None:
            require_sequences("proposals", proposals, self._shape)
        state = self.state
        warm = state.warm_start
        if not isinstance(warm, Tensor) or tuple(warm.shape) != self._shape:
            # MPC.act's check (plan's init_mean): a warm start of the same size but another
            # shape would be reshaped into the graph's (B, H·n_u) and planned from silently
            got = tuple(warm.shape) if isinstance(warm, Tensor) else type(warm).__name__
            raise ValueError(f"state.warm_start has shape {got}, expected {self._shape}")
        if state.elites is not None and state.elites.shape[1]:
            require_sequences("elites", state.elites, self._shape)  # as MPC.act checks them
        options = self.config.solver
        batch, horizon, n_u = self._shape
        shape = (batch, options.n_sample, horizon * n_u)
        # The solve's state dtype: MPC.act plans in the warm start's dtype (a state restored
        # in another dtype plans there), and draws its noise in its state dtype (CEM-24).
        dtype = torch.promote_types(warm.dtype, torch.float32)
        elites = state.elites if state.elites is not None and state.elites.shape[1] else None
        if self.device.type == "cpu":  # the eager solve's checks (CEM-22: values on the CPU)
            frame = self._frame
            check_inputs(
                warm.reshape(batch, -1),
                frame.std,
                options,
                frame.lower,
                frame.upper,
                None,
                None if proposals is None else proposals.reshape(batch, -1, horizon * n_u),
                None if elites is None else elites.reshape(batch, -1, horizon * n_u),
                validate=True,
            )
        generator = None
        if self.device.type != "meta":  # meta draws no values: nothing to seed
            generator = torch.Generator(device=self.device)
            generator.set_state(state.rng)
        self._source.check(options.n_iter, shape, self.device)
        noise = draw_noise(self._source, options, shape, dtype, self.device, generator)
        sample_eps = None
        if options.output == "sample":
            sample_eps = torch.randn(
                (batch, 1, horizon * n_u), generator=generator, dtype=dtype, device=self.device
            )
        cuda_graphs = self.settings.cuda_graphs and self.device.type == "cuda"
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]
        arguments = (observation, warm, noise, elites, proposals, sample_eps)
        try:
            fields = self._graph(*arguments)
        except torch._dynamo.exc.TorchDynamoException as error:
            raise_traced_error(error, lambda: mpc_step(self._frame, *arguments))
        if cuda_graphs:
            fields = tuple(field.clone() for field in fields)  # out of the graph's memory
        actions, cost, mean, std, n_iter, kept, warm_start, next_elites = fields
        self.state = replace(
            state,
            warm_start=warm_start,
            rng=state.rng if generator is None else generator.get_state(),
            elites=next_elites,
        )
        return Plan(
            actions=actions,
            cost=cost,
            first_action=actions[:, 0],
            mean=mean,
            std=std,
            n_iter=n_iter,
            elites=kept,
        )


@dataclass(frozen=True)
class _StepFrame:
    """What every step of one ``CompiledMPC`` shares (fixed at construction).

    Attributes:
        config: the planner's settings.
        cost: the ``ObservedCost``.
        std, lower, upper: ``(1, H·n_u)`` ``σ_0`` and the action bounds, flattened.
        midpoint: ``(n_u,)`` the bounds' midpoint, the warm start's fill (CTL-5).
        shape: ``(B, H, n_u)``.
    """

    config: PlannerConfig
    cost: ObservedCost
    std: Tensor
    lower: Tensor
    upper: Tensor
    midpoint: Tensor
    shape: tuple[int, int, int]


def mpc_step(
    frame: _StepFrame,
    observation: Tensor,
    warm_start: Tensor,
    noise: Tensor,
    elites: Tensor | None,
    proposals: Tensor | None,
    sample_eps: Tensor | None,
) -> tuple[Tensor, ...]:
    """The traced step: what ``plan`` and ``MPC.act`` compute from the warm start (CTL-24).

    Shapes: ``observation (B, n_x)``, ``warm_start (B, H, n_u)``,
    ``noise (T, B, N, H·n_u)``, ``elites (B, K, H, n_u)``, ``proposals
    (B, P, H, n_u)``, ``sample_eps (B, 1, H·n_u)``. Returns the plan's
    actions, cost, mean, std, iterations and kept elites, then the next warm
    start and the next kept elites (each shifted by one step, CTL-5, CTL-22).
    """
    batch, horizon, n_u = frame.shape
    width = horizon * n_u

    def flat_cost(flat: Tensor) -> Tensor:
        values = frame.cost(observation, flat.reshape(batch, flat.shape[1], horizon, n_u))
        check_costs(values, (batch, flat.shape[1]))
        return values

    def flat(sequences: Tensor | None) -> Tensor | None:
        return None if sequences is None else sequences.reshape(batch, -1, width)

    x, mean, std, _, best_value, n_iter, _, kept = solve_graph(
        flat_cost,
        frame.config.solver,
        warm_start.reshape(batch, width),
        frame.std,
        frame.lower,
        frame.upper,
        noise,
        flat(proposals),
        flat(elites),
        sample_eps,
    )
    actions = x.reshape(frame.shape)
    cost = reported_cost(flat_cost, x, best_value, frame.config.solver.output)
    kept_elites = kept.reshape(batch, -1, horizon, n_u)
    return (
        actions,
        cost,
        mean.reshape(frame.shape),
        std.reshape(frame.shape),
        n_iter,
        kept_elites,
        shift_warm_start(actions.detach(), frame.midpoint),
        shift_warm_start(kept_elites.detach(), frame.midpoint),
    )
