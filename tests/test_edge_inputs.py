"""Edge inputs on the user's paths through ``impl.lml``, ``impl.dcem`` and
``impl.cem.solve``: empty batches, numbers past the float32 range, a wrong
noise source, and means that rounding pushes past a bound.

Each test compares with ``reference`` or an independent derivation (never with
``impl`` itself) and names the statement it checks; each failed before the
fix that came with it.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from impl.cem import solve
from impl.cem.inputs import bound_inward
from impl.dcem import dcem
from impl.lml import lml
from impl.options import CEMOptions

ref_cem = importlib.import_module("reference.cem")


def f_torch(x: Tensor) -> Tensor:
    return ((x - 0.3) ** 2).sum(-1) + 0.5 * torch.cos(3.0 * x).sum(-1)


def f_numpy(x: np.ndarray) -> np.ndarray:
    return np.asarray(((x - 0.3) ** 2).sum(-1) + 0.5 * np.cos(3.0 * x).sum(-1))


def _float32_inputs(seed: int, batch: int, n: int, d: int, t: int) -> tuple[np.ndarray, ...]:
    """Mean, std and noise as float64 arrays of float32-exact values."""
    rng = np.random.default_rng(seed)
    mean0 = rng.uniform(-1, 1, (batch, d)).astype(np.float32).astype(np.float64)
    std0 = rng.uniform(0.3, 1.5, (batch, d)).astype(np.float32).astype(np.float64)
    noise = rng.standard_normal((t, batch, n, d)).astype(np.float32).astype(np.float64)
    return mean0, std0, noise


# --- LML-5: an empty batch ---------------------------------------------------------


@pytest.mark.spec("LML-5")
@pytest.mark.parametrize("shape", [(0, 5), (2, 0, 5)])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_lml_of_an_empty_batch_is_empty_on_the_cpu(
    shape: tuple[int, ...], requires_grad: bool
) -> None:
    """LML-5: ``x`` may have any leading dimensions and the output has ``x``'s
    shape; a batch of zero rows has nothing to project. (The meta and compiled
    paths return the empty result; the CPU fast path of LML-23 crashes with
    ``max(): Expected reduction dim`` in ``solve_lml_with_fast_path``.)"""
    x = torch.zeros(shape, requires_grad=requires_grad)
    y = lml(x, 2, 0.5)
    assert y.shape == x.shape
    assert y.dtype == x.dtype


# --- CEM-1 / CEM-22: a batch of zero problems ---------------------------------------


@pytest.mark.spec("CEM-1", "CEM-22")
@pytest.mark.parametrize("tau", [None, 1.0])
@pytest.mark.parametrize("shape", [(0, 2), (0, 0)])
def test_a_batch_of_zero_problems_is_a_named_error(
    tau: float | None, shape: tuple[int, int]
) -> None:
    """CEM-22: ``init_mean`` with ``B = 0`` is a ``ValueError`` naming it,
    raised before ``f`` runs (it had been a ``RuntimeError`` from inside
    ``lml`` with soft selection and from the result's ``elites`` reshape with
    hard selection)."""
    calls: list[int] = []

    def f(x: Tensor) -> Tensor:
        calls.append(1)
        return (x * x).sum(-1)

    with pytest.raises(ValueError, match="init_mean"):
        dcem(f, torch.zeros(shape), 1.0, n_sample=10, n_elite=3, n_iter=2, tau=tau)
    assert calls == []


# --- CEM-30: a tiny elite temperature in a float32 state ----------------------------


@pytest.mark.spec("CEM-30", "CEM-35")
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("temperature", [1e-300, 1e-46])
def test_a_tiny_elite_temperature_gives_no_nan_in_float32(
    temperature: float, normalize: bool
) -> None:
    """CEM-30: "λ → 0⁺ puts all of k on the best elite … no positive λ gives
    NaN". In a float32 state ``−λ`` rounds to ``−0`` and the best elite's logit
    becomes ``0/−0 = NaN`` (``impl/selection.py``, ``exponential_elite_weights``),
    so the mean and std are NaN. Compared with the float64 oracle on the same
    (float32-exact) inputs."""
    mean0, std0, noise = _float32_inputs(3, 2, 12, 2, 1)
    result = dcem(
        f_torch, torch.from_numpy(mean0).float(), torch.from_numpy(std0).float(),
        n_sample=12, n_elite=3, n_iter=1, tau=None, elite_temperature=temperature,
        normalize=normalize, noise=torch.from_numpy(noise).float(),
    )  # fmt: skip
    assert torch.isfinite(result.mean).all() and torch.isfinite(result.std).all()
    for b in range(2):
        trace = ref_cem.cem(
            f_numpy, mean0[b], std0[b], noise[:, b], n_elite=3, tau=None,
            elite_temperature=temperature, normalize=normalize,
        )  # fmt: skip
        np.testing.assert_allclose(result.mean[b].double().numpy(), trace.mean, atol=1e-5)
        np.testing.assert_allclose(result.std[b].double().numpy(), trace.std, atol=1e-5)


# --- CEM-38: a σ cap above the state dtype's range ----------------------------------


@pytest.mark.spec("CEM-38", "CEM-22", "CEM-35")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("tau", [None, 1.0])
def test_a_std_cap_above_the_float32_range_caps_nothing(
    dtype: torch.dtype, tau: float | None
) -> None:
    """CEM-38: any finite ``std_max > 0`` (``≥ std_min``) is valid and caps
    ``σ' ← min(σ', σ_max)``; ``1e300`` caps nothing. With a float32 state
    ``clamp_max(1e300)`` raises ``RuntimeError: value cannot be converted to
    type float without overflow`` after ``f`` has run (``impl/cem/updates.py``).
    Compared with the oracle (float32 tolerance, CEM-35)."""
    mean0, std0, noise = _float32_inputs(5, 2, 16, 2, 2)
    options = CEMOptions(n_sample=16, n_elite=4, n_iter=2, tau=tau, std_max=1e300)
    result = solve(
        f_torch, torch.from_numpy(mean0).to(dtype), torch.from_numpy(std0).to(dtype), options,
        noise=torch.from_numpy(noise).float(),
    )  # fmt: skip
    mean0_r = torch.from_numpy(mean0).to(dtype).double().numpy()
    std0_r = torch.from_numpy(std0).to(dtype).double().numpy()
    for b in range(2):
        trace = ref_cem.cem(
            f_numpy, mean0_r[b], std0_r[b], noise[:, b], n_elite=4, tau=tau, std_max=1e300
        )
        atol = 3e-5 if dtype == torch.float32 else 2e-2  # float16 rounds f's inputs
        np.testing.assert_allclose(result.std[b].double().numpy(), trace.std, atol=atol)


# --- CEM-10 / CEM-24: number bounds and init_std beyond the state dtype's range -----


@pytest.mark.spec("CEM-10", "CEM-24", "CEM-35")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_number_bounds_beyond_the_float32_range_are_cast(dtype: torch.dtype) -> None:
    """CEM-10 (bounds are numbers) and CEM-24 (bounds are cast to the state's
    dtype, "so a run depends on them only through those cast values"):
    ``lb=-1e300, ub=1e300`` is ``∓∞`` in a float32 state, i.e. no bound, as
    the same values given as a float64 tensor are. As numbers they raise
    ``RuntimeError: value cannot be converted to type float without overflow``
    (``torch.full`` in ``impl/cem/inputs.py``, ``broadcast_operand``).
    Compared with the oracle."""
    mean0, std0, noise = _float32_inputs(7, 1, 16, 2, 2)
    result = dcem(
        f_torch, torch.from_numpy(mean0).to(dtype), torch.from_numpy(std0).to(dtype),
        n_sample=16, n_elite=4, n_iter=2, tau=1.0, lb=-1e300, ub=1e300,
        noise=torch.from_numpy(noise).float(),
    )  # fmt: skip
    mean0_r = torch.from_numpy(mean0).to(dtype).double().numpy()
    std0_r = torch.from_numpy(std0).to(dtype).double().numpy()
    trace = ref_cem.cem(
        f_numpy, mean0_r[0], std0_r[0], noise[:, 0], n_elite=4, tau=1.0, lb=-1e300, ub=1e300
    )
    atol = 3e-5 if dtype == torch.float32 else 2e-2
    np.testing.assert_allclose(result.mean[0].double().numpy(), trace.mean, atol=atol)


@pytest.mark.spec("CEM-22", "CEM-24")
def test_a_number_init_std_beyond_the_float32_range_is_a_named_value_error() -> None:
    """CEM-24: ``init_std`` is cast to the state's dtype; ``1e300`` becomes
    ``inf`` in float32, and CEM-22's value check (on by default on the CPU)
    makes a non-finite ``init_std`` a ``ValueError`` naming it. Instead a
    ``RuntimeError`` ("value cannot be converted to type float without
    overflow") that names nothing is raised."""
    with pytest.raises(ValueError, match="init_std"):
        dcem(lambda x: (x * x).sum(-1), torch.zeros(2), 1e300, n_sample=10, n_elite=3)


# --- CEM-22 / LML-17: Python ints too large for a float ------------------------------


@pytest.mark.spec("CEM-22", "LML-17")
@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("tau", lambda: CEMOptions(tau=10**400)),
        ("tol", lambda: CEMOptions(tol=10**400)),
        ("std_min", lambda: CEMOptions(std_min=10**400)),
        ("ub", lambda: dcem(lambda x: (x * x).sum(-1), torch.zeros(2), 1.0, ub=10**400)),
        ("tau", lambda: lml(torch.zeros(2, 5), 2, 10**400)),
    ],
)
def test_an_int_too_large_for_a_float_is_a_named_error(
    name: str, call: Callable[[], object]
) -> None:
    """CEM-22 / LML-17: a bad number is a ``TypeError``/``ValueError`` naming
    the option. ``impl._checks.require_real`` calls ``float(value)``, which
    raises ``OverflowError: int too large to convert to float`` (no name)."""
    with pytest.raises((ValueError, TypeError), match=name):
        call()


# --- CEM-33 / CEM-22: a sampler that is not a noise source ---------------------------


@pytest.mark.spec("CEM-33", "CEM-22")
@pytest.mark.parametrize("sampler", ["white", torch.zeros(10, 1, 100, 2)])
def test_a_sampler_that_is_not_a_noise_source_is_a_named_type_error(sampler: object) -> None:
    """CEM-33 names the noise sources ``sampler=`` takes; anything else (e.g.
    the noise tensor itself, which belongs in ``noise=``) should be a
    ``TypeError`` naming ``sampler`` (CEM-22), not ``AttributeError: 'Tensor'
    object has no attribute 'check'``."""
    calls: list[int] = []

    def f(x: Tensor) -> Tensor:
        calls.append(1)
        return (x * x).sum(-1)

    with pytest.raises(TypeError, match="sampler"):
        solve(f, torch.zeros(1, 2), 1.0, CEMOptions(), sampler=sampler)  # type: ignore[arg-type]
    assert calls == []


# --- CEM-10: the updated mean in the box ----------------------------------------------


@pytest.mark.spec("CEM-10", "CEM-16")
@pytest.mark.parametrize("ub", [0.1, 0.9])
def test_the_mean_of_elites_on_the_bound_stays_in_the_box(ub: float) -> None:
    """CEM-10: every updated mean (a convex combination of samples) and the
    returned point lie in the box. Noise ``+5`` clips every sample to ``ub``,
    so every elite is exactly ``ub`` and their mean is ``ub``; the fit's
    ``Σ (I_i/k) X_i`` rounds to one ulp above ``ub`` in float32 (hard CEM,
    ``k = 3``), and ``x`` is returned outside the box."""
    noise = torch.full((1, 10, 1), 5.0)
    result = dcem(
        lambda x: ((x - 5.0) ** 2).sum(-1), torch.tensor([0.0]), 1.0,
        n_sample=10, n_elite=3, n_iter=1, tau=None, ub=ub, noise=noise,
    )  # fmt: skip
    bound = torch.tensor(ub, dtype=torch.float32)
    assert bool((result.x <= bound).all()), (result.x.item(), bound.item())
    assert bool((result.mean <= bound).all())
    assert math.isfinite(result.best_value.item())


@pytest.mark.spec("CEM-10", "CEM-29")
def test_a_smoothed_mean_outside_the_box_is_clipped_with_the_clip_gradient() -> None:
    """CEM-10, CEM-29: ``μ_1 = clip(α μ_0 + (1 − α) μ̂, lb, ub)``. Coordinate 0
    starts inside the box, coordinate 1 at 3 > ub = 1: its samples clip to 1, the
    blend is ``0.5·3 + 0.5·1 = 2``, clipped to 1. Derived by hand (hard CEM,
    reparameterized samples ``μ_0 + σ ε``): ``∂μ_1/∂μ_0`` is ``α + (1 − α) = 1`` on
    coordinate 0 and 0 on coordinate 1 (the clip's gradient; 0.5 without it)."""
    noise = torch.tensor(
        [[[0.3, 0.2], [-0.4, -0.1], [0.1, 0.5], [-0.2, 0.05]]], dtype=torch.float64
    )
    mean0 = torch.tensor([0.2, 3.0], dtype=torch.float64, requires_grad=True)
    result = dcem(
        lambda x: (x**2).sum(-1), mean0, 0.01, n_sample=4, n_elite=2, n_iter=1,
        tau=None, lb=-1.0, ub=1.0, smoothing=0.5, noise=noise,
    )  # fmt: skip
    elites = 0.2 + 0.01 * torch.tensor([-0.4, -0.2], dtype=torch.float64)  # the two lowest x_0
    expected = torch.stack(
        [0.5 * 0.2 + 0.5 * elites.mean(), torch.tensor(1.0, dtype=torch.float64)]
    )
    torch.testing.assert_close(result.mean.detach(), expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(result.mean.sum(), mean0)
    torch.testing.assert_close(grad, torch.tensor([1.0, 0.0], dtype=torch.float64))


# --- CEM-24: bounds past a half-precision dtype's range ---------------------------


def _all_finite_values(dtype: torch.dtype) -> np.ndarray:
    """Every finite value of a 16-bit float dtype, sorted, from its 65,536 bit
    patterns: an enumeration independent of ``bound_inward``'s rounding."""
    patterns = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    values = patterns.view(dtype).double().numpy()
    return np.unique(values[np.isfinite(values)])


@pytest.mark.spec("CEM-24")
@settings(max_examples=300, deadline=None)
@given(
    dtype=st.sampled_from([torch.float16, torch.bfloat16]),
    value=st.one_of(
        st.floats(-1e6, 1e6),  # past float16's 65504
        st.floats(width=32, allow_nan=False),  # past bfloat16's too, and ±inf
        st.sampled_from([65504.0, 65520.0, 3.3895313892515355e38, 3.4e38]),
    ),
    upper=st.booleans(),
)
def test_a_bound_moves_inward_to_the_nearest_value_of_the_half_dtype(
    dtype: torch.dtype, value: float, upper: bool
) -> None:
    """CEM-24: ``ub`` becomes the largest value of the dtype ``≤ ub`` and ``lb``
    the smallest ``≥ lb``; a finite bound past the dtype's range becomes its
    largest finite value, an infinite one stays infinite; the gradient passes
    through. (A finite bound past the range gave NaN: ``ub = 1e5`` with a
    float16 ``init_mean`` was a ``ValueError`` "min(ub - lb) = nan", or with the
    value check off a NaN box.)"""
    bound = torch.tensor([value], dtype=torch.float32, requires_grad=True)
    moved = bound_inward(bound, dtype, upper=upper)
    finite = _all_finite_values(dtype)
    target = float(np.float32(value))
    if upper:
        held = finite[finite <= target]
        expected = held[-1] if held.size else -math.inf
        expected = math.inf if target == math.inf else expected
    else:
        held = finite[finite >= target]
        expected = held[0] if held.size else math.inf
        expected = -math.inf if target == -math.inf else expected
    assert float(moved.detach()) == expected
    if math.isfinite(expected):
        (grad,) = torch.autograd.grad(moved.sum(), bound)
        assert float(grad) == 1.0


@pytest.mark.spec("CEM-10", "CEM-24", "CEM-35")
@pytest.mark.parametrize("bounds", ["number", "float32", "float64"])
def test_bounds_past_the_float16_range_are_its_largest_values(bounds: str) -> None:
    """CEM-24: ``lb = -1e5, ub = 1e5`` with a float16 ``init_mean`` is the box
    ``[-65504, 65504]``, i.e. every finite float16. Compared with the oracle run
    on that box. Failed before: ``ValueError: ... min(ub - lb) = nan``."""
    mean0, std0, noise = _float32_inputs(11, 2, 16, 3, 2)
    mean16 = torch.from_numpy(mean0).half()
    std16 = torch.from_numpy(std0).half()
    lb: float | Tensor = -1e5
    ub: float | Tensor = 1e5
    if bounds != "number":
        kind = torch.float32 if bounds == "float32" else torch.float64
        lb, ub = torch.full((2, 3), -1e5, dtype=kind), torch.full((2, 3), 1e5, dtype=kind)
    result = dcem(
        f_torch, mean16, std16, n_sample=16, n_elite=4, n_iter=2, tau=1.0, lb=lb, ub=ub,
        noise=torch.from_numpy(noise).float(),
    )  # fmt: skip
    for b in range(2):
        trace = ref_cem.cem(
            f_numpy, mean16[b].double().numpy(), std16[b].double().numpy(), noise[:, b],
            n_elite=4, tau=1.0, lb=-65504.0, ub=65504.0,
        )  # fmt: skip
        np.testing.assert_allclose(result.mean[b].double().numpy(), trace.mean, atol=2e-2)


@pytest.mark.spec("CEM-22", "CEM-24")
def test_half_bounds_holding_one_value_of_the_dtype_are_a_named_error() -> None:
    """CEM-22/CEM-24: float16 holds 0.30005 and nothing else in ``[0.3, 0.3001]``;
    moved inward, both bounds are 0.30005, which breaks ``lb < ub``. The error
    names the bounds the user gave (before: "min(ub - lb) = 0.0", naming neither)."""
    with pytest.raises(ValueError, match=r"only one .*\[0\.3, 0\.3001\]"):
        dcem(
            f_torch, torch.zeros(3, dtype=torch.float16), 1.0,
            lb=0.3, ub=0.3001, n_sample=10, n_elite=2, n_iter=1,
        )  # fmt: skip


@pytest.mark.spec("CEM-9", "LML-17", "CEM-25")
def test_dcem_with_a_tau_float32_holds_only_as_zero_agrees_with_the_oracle() -> None:
    """CEM-9 (DCEM → CEM as τ → 0⁺) through LML-17: ``tau=1e-50`` in a float32
    solve. ``f = Σ max(x, 0)`` is flat below 0, so values tie at the k-th
    place; with τ rounded to 0 those rows were 0/0 and the mean came back NaN.
    Compared with the float64 oracle at ``τ = 1e-50``."""
    mean0, std0, noise = _float32_inputs(5, 2, 20, 3, 2)

    def relu_sum(x: Tensor) -> Tensor:
        return x.clamp(min=0).sum(-1)

    result = dcem(
        relu_sum, torch.from_numpy(mean0).float(), torch.from_numpy(std0).float(),
        n_sample=20, n_elite=5, n_iter=2, tau=1e-50, noise=torch.from_numpy(noise).float(),
    )  # fmt: skip
    assert bool(torch.isfinite(result.mean).all())
    for b in range(2):
        trace = ref_cem.cem(
            lambda x: np.maximum(x, 0.0).sum(-1), mean0[b], std0[b], noise[:, b],
            n_elite=5, tau=1e-50,
        )  # fmt: skip
        np.testing.assert_allclose(result.mean[b].double().numpy(), trace.mean, atol=3e-5)
