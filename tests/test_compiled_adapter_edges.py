"""The compiled paths and the mbrl-lib adapter at their input edges: bad input and restored state.

Each test failed before its fix. The compiled paths (spec/cem.md CEM-44 –
CEM-47, spec/control.md CTL-24) are compared with the eager ones they claim
to equal (``impl.cem.solve``, ``MPC.act``), whose errors are those of CEM-22
and CTL-13; the adapter (CTL-19) with the statements it cites. Traces use
``backend="eager"`` (Dynamo's whole trace, seconds), each test on fresh caches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from impl.cem import solve
from impl.cem.compiled import CompiledSolve
from impl.control import MPC, PlannerConfig
from impl.control.compiled import CompiledMPC
from impl.options import CEMOptions

SMALL = CEMOptions(n_sample=8, n_elite=2, n_iter=2, tau=None)


pytestmark = pytest.mark.usefixtures("fresh_dynamo")


def _quadratic(x: Tensor) -> Tensor:
    return (x.float() - 0.3).square().sum(-1).to(x.dtype)


def _error_of(call: Callable[[], object]) -> Exception:
    """The exception ``call`` raises (it must raise one)."""
    try:
        call()
    except Exception as error:  # the eager path's error, whatever it is
        return error
    raise AssertionError("the eager path raised nothing")


HALF = torch.zeros(2, 2, dtype=torch.float16) + 0.1

SOLVE_CASES: dict[str, tuple[Any, CEMOptions, dict[str, Any], dict[str, Any]]] = {
    # float16 holds no value in [0.1, 0.10001] (0.0999756 < 0.1 < 0.1000366): the
    # compiled solve returned 0.0999756, outside the box.
    "half-number-bounds": (_quadratic, SMALL, {}, {"lb": 0.1, "ub": 0.10001}),
    "half-tensor-bounds": (
        _quadratic,
        SMALL,
        {},
        {"lb": torch.full((2,), 0.1), "ub": torch.full((2,), 0.10001)},
    ),
    # a noise tensor where a sampler goes: AttributeError 'Tensor' object has no attribute 'check'
    "sampler-tensor": (_quadratic, SMALL, {"sampler": torch.zeros(3)}, {}),
    # std_min past float32: torch._dynamo.exc.Unsupported "Observed exception"
    "std-min-overflow": (_quadratic, SMALL.replace(std_min=1e300), {}, {}),
    # f returning one value for all candidates: Unsupported, naming neither error nor shape
    "f-wrong-shape": (lambda x: x.sum(), SMALL, {}, {}),
}


@pytest.mark.spec("CEM-22", "CEM-47", "CEM-24", "CEM-33")
@pytest.mark.parametrize("case", list(SOLVE_CASES))
def test_compiled_solve_raises_the_errors_of_solve(case: str) -> None:
    """CEM-47: bad call arguments raise CEM-22's errors; CEM-44: the compiled solve
    is ``solve``. Each case is an error of ``solve`` (type and message) that the
    compiled solve answered with a wrong result or an unnamed error."""
    f, options, construct, call = SOLVE_CASES[case]
    mean = HALF if case.startswith("half") else HALF.float()
    eager_kwargs = dict(call, **construct)
    expected = _error_of(lambda: solve(f, mean, 0.1, options, **eager_kwargs))
    assert isinstance(expected, (ValueError, TypeError))
    with pytest.raises(type(expected), match=re.escape(str(expected))):
        CompiledSolve(f, options, backend="eager", **construct)(mean, 0.1, **call)


def _mpc_cost(observation: Tensor, u: Tensor) -> Tensor:
    return (u.float() - observation[:, None, None, :1]).square().sum((-1, -2)).to(u.dtype)


CONFIG = PlannerConfig(
    horizon=3, action_lb=-2.0, action_ub=2.0, action_dim=2, solver=SMALL.replace(keep_elites=0.5)
)
OBSERVATION = torch.tensor([[0.5], [1.0]])


@pytest.mark.spec("CTL-24", "CTL-7", "CTL-13", "CTL-22")
@pytest.mark.parametrize("field", ["warm_start", "elites"])
def test_compiled_mpc_checks_an_assigned_state_as_mpc_act(field: str) -> None:
    """A state whose warm start (or kept elites) is ``(B, n_u, H)`` instead of
    ``(B, H, n_u)``: ``MPC.act`` raises a ``ValueError`` naming the shapes; the
    compiled step reshaped it into its ``(B, H·n_u)`` input and planned from it."""
    eager = MPC(CONFIG, 2, seed=0)
    compiled = CompiledMPC(CONFIG, 2, _mpc_cost, seed=0, backend="eager")
    noise = torch.rand(2, 1, 2, 3, generator=torch.Generator().manual_seed(0))
    if field == "warm_start":
        state = replace(eager.state, warm_start=noise[:, 0])
    else:
        state = replace(eager.state, elites=noise)
    eager.state = compiled.state = state
    expected = _error_of(lambda: eager.act(partial(_mpc_cost, OBSERVATION)))
    assert isinstance(expected, ValueError) and "has shape (2, " in str(expected)
    with pytest.raises(
        ValueError, match=r"has shape \(2, (1, )?2, 3\), expected \(2, (P, )?3, 2\)"
    ):
        compiled.act(OBSERVATION)
    assert compiled.state is state  # a step that raises leaves the state as it was (CTL-7)


@pytest.mark.spec("CTL-24", "CTL-13", "CTL-3", "CEM-24", "CEM-22")
@pytest.mark.parametrize("case", ["half-box-without-a-value", "cost-wrong-shape", "list-proposals"])
def test_compiled_mpc_raises_named_errors(case: str) -> None:
    """CTL-24: the values are checked before the graph as ``MPC.act`` checks them.
    A float16 box holding no float16 value (eager: ``ValueError``; compiled: the
    action 0.0999756, outside ``[0.1, 0.10001]``), a cost of the wrong shape
    (eager: ``ValueError`` naming the shapes; compiled: Dynamo's ``Unsupported``),
    proposals that are not a tensor (was ``AttributeError``)."""
    dtype = torch.float16 if case.startswith("half") else torch.float32
    bounds = (0.1, 0.10001) if case.startswith("half") else (-2.0, 2.0)
    config = PlannerConfig(horizon=2, action_lb=bounds[0], action_ub=bounds[1], solver=SMALL)

    def cost(observation: Tensor, u: Tensor) -> Tensor:
        values = _mpc_cost(observation, u)
        return values.unsqueeze(-1) if case == "cost-wrong-shape" else values

    compiled = CompiledMPC(config, 2, cost, dtype=dtype, seed=0, backend="eager")
    if case == "list-proposals":
        with pytest.raises(TypeError, match=r"proposals must be a torch\.Tensor, got list"):
            compiled.act(OBSERVATION, proposals=[[0.0]])  # type: ignore[arg-type]
        return
    eager = MPC(config, 2, dtype=dtype, seed=0)
    expected = _error_of(lambda: eager.act(partial(cost, OBSERVATION)))
    assert isinstance(expected, ValueError)
    with pytest.raises(ValueError, match=re.escape(str(expected))):
        compiled.act(OBSERVATION)


@pytest.mark.spec("CTL-24", "CTL-17", "CTL-7")
def test_compiled_mpc_plans_a_float64_state_as_mpc_act() -> None:
    """A float32 controller given a float64 warm start (a saved state restored):
    ``MPC.act`` plans in float64 and draws its noise in float64; the compiled
    step drew float32 noise, so its plan differed (by up to 1.8)."""
    eager = MPC(CONFIG, 2, seed=3)
    compiled = CompiledMPC(CONFIG, 2, _mpc_cost, seed=3, backend="eager")
    state = replace(eager.state, warm_start=eager.state.warm_start.double())
    eager.state = compiled.state = state
    for _ in range(2):
        want = eager.act(partial(_mpc_cost, OBSERVATION))
        got = compiled.act(OBSERVATION)
        assert got.actions.dtype == want.actions.dtype == torch.float64
        torch.testing.assert_close(got.actions, want.actions, rtol=0, atol=1e-6)
        torch.testing.assert_close(got.cost, want.cost, rtol=0, atol=1e-6)
        assert torch.equal(compiled.state.rng, eager.state.rng)
        torch.testing.assert_close(compiled.state.warm_start, eager.state.warm_start)


# -- mbrl-lib (CTL-19) -------------------------------------------------------------------------


def _objective(population: Tensor) -> Tensor:
    return -(population - 0.2).square().sum((-1, -2))


@pytest.mark.spec("CTL-19", "CTL-13")
@pytest.mark.parametrize(
    ("returns", "error", "message"),
    [
        # per-step values (N, H): was RuntimeError "shape '[1, 8]' is invalid for input of size 16"
        (lambda p: -p.square().sum(-1), ValueError, r"shape \(8, 2\); expected \(8,\)"),
        # (N/2, 2): was silently reshaped into N values, ranking the wrong candidates
        (lambda p: _objective(p).reshape(4, 2), ValueError, r"shape \(4, 2\); expected \(8,\)"),
        (lambda p: -p.square().sum(), ValueError, r"shape \(\); expected \(8,\)"),
        # a list: was AttributeError 'list' object has no attribute 'reshape'
        (lambda p: [0.0] * p.shape[0], TypeError, "obj_fun must return a torch.Tensor"),
    ],
    ids=["per-step-values", "reshapeable", "scalar", "list"],
)
def test_mbrl_optimizer_checks_the_objective_values(
    returns: Callable[[Tensor], Any], error: type[Exception], message: str
) -> None:
    """CTL-19: ``obj_fun`` maps the population ``(N, H, n_u)`` to ``(N,)``."""
    pytest.importorskip("mbrl.planning")
    from impl.adapters.mbrl_optimizer import DCEMOptimizer

    optimizer = DCEMOptimizer([[-1.0], [-1.0]], [[1.0], [1.0]], solver=SMALL, seed=0)
    with pytest.raises(error, match=message):
        optimizer.optimize(returns)


@pytest.mark.spec("CTL-19", "CTL-13")
def test_mbrl_optimizer_names_its_bad_arguments() -> None:
    """Infinite bounds (were "init_mean contains non-finite values": the midpoint
    x0 and σ_0 are taken from them), a solver that is neither ``CEMOptions`` nor a
    mapping (was dict()'s "dictionary update sequence element #0 has length 1"),
    a NumPy ``x0`` (was ``AttributeError``). Good arguments still solve."""
    pytest.importorskip("mbrl.planning")
    from impl.adapters.mbrl_optimizer import DCEMOptimizer

    with pytest.raises(ValueError, match=r"lower_bound must be finite, got \[\[-inf\]\]"):
        DCEMOptimizer([[-math.inf]], [[math.inf]], solver=SMALL, init_std=1.0)
    with pytest.raises(ValueError, match=r"upper_bound must be finite"):
        DCEMOptimizer([[0.0]], [[math.inf]], solver=SMALL)
    with pytest.raises(
        TypeError, match=r"solver must be an impl\.options\.CEMOptions or a mapping"
    ):
        DCEMOptimizer([[0.0]], [[1.0]], solver="cem")  # type: ignore[arg-type]
    optimizer = DCEMOptimizer([[-1.0], [-1.0]], [[1.0], [1.0]], solver=SMALL, seed=0)
    with pytest.raises(
        TypeError, match=r"x0 must be a torch.Tensor of shape \(2, 1\), got ndarray"
    ):
        optimizer.optimize(_objective, np.zeros((2, 1), dtype=np.float32))  # type: ignore[arg-type]
    solution = optimizer.optimize(_objective, torch.zeros(2, 1))
    assert solution.shape == (2, 1) and bool((solution.abs() <= 1.0).all())
