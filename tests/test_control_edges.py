"""Edge inputs on the control stack's paths (``plan``, ``MPC``, ``CompiledMPC``)
and on the candidates a user injects (``proposals``, ``elites``).

A review of user paths found each defect tested here; each test failed before
its fix. Expected values come from the spec's statements and independent
derivations (the dtype's values found by stepping with ``nextafter``), never
from ``impl`` itself.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from impl.cem import DCEMStep, solve
from impl.cem.compiled import CompiledSolve
from impl.control import MPC, PlannerConfig, plan
from impl.control.compiled import CompiledMPC
from impl.options import CEMOptions

HARD = CEMOptions(n_sample=20, n_elite=4, n_iter=4, tau=None)


def _push_up(u: Tensor) -> Tensor:
    """``(B, M, H, n_u)`` → ``(B, M)``: smallest at ``u = 1``, above every box below."""
    return ((u.float() - 1.0) ** 2).sum((-1, -2)).to(u.dtype)


def _largest_at_most(value: float, dtype: torch.dtype) -> float:
    """The largest number of ``dtype`` ``≤ value``, by stepping down from its rounding."""
    top = torch.tensor(value, dtype=dtype)
    while float(top) > value:
        top = torch.nextafter(top, torch.tensor(-math.inf, dtype=dtype))
    return float(top)


@pytest.mark.spec("CTL-3", "CEM-24")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("path", ["plan", "MPC", "CompiledMPC"])
def test_half_precision_actions_stay_in_the_action_box(dtype: torch.dtype, path: str) -> None:
    """CTL-3: every sampled candidate and every returned action lies in ``[lb, ub]``.
    The planner rounded the bounds to ``dtype`` to nearest before the solve
    (``ub = 0.3`` became 0.30005 in float16, 0.30078 in bfloat16), so the
    solve's inward move (CEM-24) had nothing left to move and the candidates
    reached the rounded bound. Now they reach the largest value of ``dtype``
    ``≤ 0.3`` and no further."""
    config = PlannerConfig(horizon=2, action_lb=-0.3, action_ub=0.3, solver=HARD)
    seen: list[Tensor] = []

    def record(step: DCEMStep) -> None:
        seen.append(step.samples.detach().double())

    if path == "plan":
        actions = plan(
            _push_up, config, 2, dtype=dtype, generator=torch.Generator().manual_seed(0),
            callback=record,
        ).actions  # fmt: skip
    elif path == "MPC":
        actions = MPC(config, 2, dtype=dtype, seed=0).act(_push_up, record).actions
    else:
        controller = CompiledMPC(
            config, 2, lambda obs, u: _push_up(u), dtype=dtype, seed=0, backend="eager"
        )
        actions = controller.act(torch.zeros(2, 1)).actions
    top = _largest_at_most(0.3, dtype)
    assert float(actions.double().max()) == top  # pushed to the bound, and not past it
    assert float(actions.double().min()) >= -0.3
    for samples in seen:
        assert float(samples.max()) <= top and float(samples.min()) >= -0.3


@pytest.mark.spec("CTL-3", "CTL-2", "CEM-24")
@pytest.mark.parametrize("bounds", [(-40000.0, 40000.0), (30000.0, 60000.0)])
@pytest.mark.parametrize("path", ["plan", "MPC"])
def test_wide_float16_action_boxes_plan(bounds: tuple[float, float], path: str) -> None:
    """CTL-2: ``σ_0 = ½ (ub − lb)`` and the warm start ``½ (lb + ub)``: for these
    float16 bounds (float16 holds them; its largest is 65504) both overflowed
    in float16 and the solve refused its own defaults ("init_std must be
    finite", "init_mean contains non-finite values"). The actions lie in the
    box."""
    lower, upper = bounds
    config = PlannerConfig(horizon=2, action_lb=lower, action_ub=upper, solver=HARD)
    if path == "plan":
        actions = plan(
            _push_up, config, 2, dtype=torch.float16, generator=torch.Generator().manual_seed(0)
        ).actions
    else:
        actions = MPC(config, 2, dtype=torch.float16, seed=0).act(_push_up).actions
    assert actions.dtype == torch.float16
    assert bool(torch.isfinite(actions).all())
    assert float(actions.min()) >= lower and float(actions.max()) <= upper


@pytest.mark.spec("CTL-24", "CTL-2")
def test_compiled_mpc_reports_the_cost_where_no_candidate_was_finite() -> None:
    """CTL-24: ``CompiledMPC.act`` returns the ``Plan`` ``MPC.act`` returns; CTL-2:
    with ``output="best"`` and no finite candidate the cost is ``cost_fn`` at
    the returned point. The cost here is finite only at the midpoint (0), which
    no sample hits: ``cost_fn(0) = obs``. The compiled step reported ∞."""

    def cost(observation: Tensor, u: Tensor) -> Tensor:
        value = (u**2).sum((-1, -2)) + observation[:, :1]
        return torch.where(value == observation[:, :1], value, math.inf)

    config = PlannerConfig(
        horizon=3,
        action_lb=-1.0,
        action_ub=1.0,
        solver=CEMOptions(n_sample=10, n_elite=2, n_iter=2, tau=None, output="best"),
    )
    observation = torch.tensor([[1.0], [2.0]])
    compiled = CompiledMPC(config, 2, cost, seed=0, backend="eager").act(observation)
    assert torch.equal(compiled.cost, torch.tensor([1.0, 2.0]))
    assert torch.equal(compiled.actions, torch.zeros(2, 3, 1))


@pytest.mark.spec("CEM-22", "CEM-34", "CEM-39", "CTL-21")
@pytest.mark.parametrize("where", ["solve-proposals", "solve-elites", "compiled", "MPC"])
def test_non_finite_injected_candidates_are_a_named_error(where: str) -> None:
    """CEM-22's value check: a NaN proposal has weight 0 (CEM-12), but the fit
    multiplied it by its weight, ``0 · NaN = NaN``, and the result (and an MPC's
    warm start) came back NaN. Now a named ``ValueError`` before ``f`` runs."""
    calls: list[int] = []

    def f(x: Tensor) -> Tensor:
        calls.append(1)
        return (x**2).sum(-1)

    given = torch.zeros(2, 1, 3)
    given[0, 0, 1] = math.nan
    name = "elites" if where == "solve-elites" else "proposals"
    with pytest.raises(ValueError, match=f"{name} contains 1 non-finite"):
        if where == "solve-proposals":
            solve(f, torch.zeros(2, 3), 1.0, HARD, proposals=given)
        elif where == "solve-elites":
            solve(f, torch.zeros(2, 3), 1.0, HARD, elites=given)
        elif where == "compiled":
            CompiledSolve(f, HARD, backend="eager")(torch.zeros(2, 3), 1.0, proposals=given)
        else:
            config = PlannerConfig(horizon=3, action_lb=-1.0, action_ub=1.0, solver=HARD)
            MPC(config, 2, seed=0).act(lambda u: f(u.flatten(-2)), proposals=given.view(2, 1, 3, 1))
    assert not calls


@pytest.mark.spec("CTL-13", "CTL-21")
def test_control_input_errors_name_the_value() -> None:
    """CTL-13: a reset mask that is not a tensor (was ``AttributeError``), a
    tensor bound of ``-∞`` (was "init_mean contains non-finite values", naming
    no bound), and zero proposals (was the solver's flattened shape, not the
    ``(B, P, H, n_u)`` of CTL-21)."""
    config = PlannerConfig(horizon=3, action_lb=-1.0, action_ub=1.0, solver=HARD)
    controller = MPC(config, 2, seed=0)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        controller.reset([True, False])  # type: ignore[arg-type]
    unbounded = PlannerConfig(
        horizon=3, action_lb=torch.tensor([-math.inf]), action_ub=1.0, solver=HARD
    )
    with pytest.raises(ValueError, match="action_lb must be finite"):
        plan(_push_up, unbounded, 2)
    with pytest.raises(ValueError, match=r"\(2, P, 3, 1\) with P >= 1"):
        controller.act(_push_up, proposals=torch.zeros(2, 0, 3, 1))


@pytest.mark.spec("CTL-13", "CTL-21")
@pytest.mark.parametrize("path", ["plan", "mpc"])
def test_proposals_that_are_not_a_tensor_are_a_type_error(path: str) -> None:
    """CTL-13: a list of proposals was ``AttributeError: 'list' object has no
    attribute 'dim'`` in ``plan`` and ``MPC.act`` (``CompiledMPC.act`` already
    named it); now the ``TypeError`` of ``require_sequences``, naming it."""
    config = PlannerConfig(horizon=3, action_lb=-1.0, action_ub=1.0, solver=HARD)
    given = [[[[0.0]] * 3]] * 2  # (2, 1, 3, 1) as nested lists
    with pytest.raises(TypeError, match=r"proposals must be a torch\.Tensor, got list"):
        if path == "plan":
            plan(_push_up, config, 2, proposals=given)  # type: ignore[arg-type]
        else:
            MPC(config, 2, seed=0).act(_push_up, proposals=given)  # type: ignore[arg-type]
