"""Settings at the ends of the float range, in the product and in the oracle.

Each case here was a defect: the oracle (``reference``) or the product
(``impl``) gave a wrong answer where the spec's statement still applies (a
temperature near the float limits, values near the float maximum, a σ floor
whose square under- or overflows, an elite temperature that overflows the
exponent, a population size whose float power rounds down). The checks use
an independent derivation each: exact rescaling by powers of two, exact
rational arithmetic, or the spec's stated limit.
"""

from __future__ import annotations

import importlib
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from impl.dcem import dcem
from impl.gaussian import floored_std
from impl.options import CEMOptions
from reference.lml import lml_bisect

ref_cem = importlib.import_module("reference.cem")

# --- the oracle's LML at extreme temperatures (LML-3, LML-11) ---


@pytest.mark.spec("LML-3", "LML-1")
@given(
    n=st.integers(2, 12),
    seed=st.integers(0, 2**16),
    power=st.integers(-950, 990),  # |x| 2^p stays within the normal float64 range
    data=st.data(),
)
def test_oracle_lml_depends_on_x_over_tau_only_over_the_whole_float_range(
    n: int, seed: int, power: int, data: st.DataObject
) -> None:
    # Π_L(x/τ) is a function of x/τ: scaling x and τ by the same power of two
    # (exact in binary floating point while both stay normal) changes nothing.
    k = data.draw(st.integers(1, n - 1))
    x = np.random.default_rng(seed).normal(size=n) * 4.0
    scale = math.ldexp(1.0, power)
    y = lml_bisect(x, k, 1.0)
    scaled = lml_bisect(x * scale, k, scale)
    assert abs(float(scaled.sum()) - k) <= 1e-12 * k
    np.testing.assert_allclose(scaled, y, rtol=0, atol=1e-12)


@pytest.mark.spec("LML-3", "LML-11")
@pytest.mark.parametrize("tau", [1e-30, 1e-16, 1e-300])
def test_oracle_lml_resolves_adjacent_scores_at_tiny_temperatures(tau: float) -> None:
    # x_(1) and x_(2) one ulp apart: a threshold in units of x cannot fall
    # between them, the offset in units of τ can (LML-11's bound for tiny τ).
    x = np.array([1.0, np.nextafter(1.0, 0.0), 0.0])
    y = lml_bisect(x, 1, tau)
    assert abs(float(y.sum()) - 1.0) <= 1e-12
    # The threshold sits at the midpoint of the two (the third entry is far
    # below): y_1 = σ(gap/2) with the scaled gap (x_1 − x_2)/τ.
    gap = (x[0] - x[1]) / tau
    expected = 1.0 / (1.0 + math.exp(-gap / 2)) if gap < 1400 else 1.0
    assert y[0] == pytest.approx(expected, abs=1e-12) and y[2] == 0.0


@pytest.mark.spec("LML-3")
def test_oracle_lml_with_a_huge_temperature_sums_to_k() -> None:
    y = lml_bisect(np.arange(100.0), 1, 5e307)
    np.testing.assert_allclose(y, np.full(100, 0.01), rtol=1e-12)
    x = np.array([1.7e308, 1.6e308, -1.7e308])
    np.testing.assert_allclose(lml_bisect(x, 1, 1e307), lml_bisect(x / 1e307, 1, 1.0), rtol=1e-12)


# --- the oracle's value normalization near the float maximum (CEM-3) ---


@pytest.mark.spec("CEM-3")
@given(n=st.integers(2, 20), seed=st.integers(0, 2**16), power=st.integers(900, 1020))
def test_oracle_normalization_of_values_near_the_float_maximum(
    n: int, seed: int, power: int
) -> None:
    # ṽ = (v − mean)/(std + ε): scaling v by 2^p divides ε's share by 2^p.
    v = np.random.default_rng(seed).normal(size=n) + 3.0
    assume(np.std(v, ddof=1) > 1e-3)
    scaled = ref_cem.normalize_values(v * math.ldexp(1.0, power))
    assert np.isfinite(scaled).all()
    np.testing.assert_allclose(scaled, ref_cem.normalize_values(v), rtol=1e-5, atol=1e-5)


@pytest.mark.spec("CEM-3", "CEM-5", "CEM-35")
def test_impl_and_oracle_select_alike_near_the_float_maximum() -> None:
    v = np.array([1.7e308, -1.7e308, 0.0, 1.0, 1.2e308])
    expected = ref_cem.soft_weights(v, 2, 1.0, True)
    assert abs(float(expected.sum()) - 2.0) <= 1e-12
    assert expected[1] == expected.max()  # the lowest value weighs most
    got = dcem_selection(v, 2)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def dcem_selection(values: np.ndarray, k: int) -> np.ndarray:
    """The weights the solver's soft selection gives ``values`` (one row, float64)."""
    from impl.cem.selectors import SoftTopK

    v = torch.from_numpy(values)[None]
    selection = SoftTopK(k, 1.0, True)(v, v)
    return selection.weights[0].numpy()


# --- population decay, exactly (CEM-40) ---


@pytest.mark.spec("CEM-40")
@given(
    n=st.integers(4, 5000),
    p=st.integers(1, 64),
    m=st.integers(0, 6),
    t=st.integers(0, 12),
    data=st.data(),
)
def test_population_floor_is_exact(n: int, p: int, m: int, t: int, data: st.DataObject) -> None:
    # γ = 1 + p/2^m is a float exactly; N γ^{−t} = N 2^{mt} / (2^m + p)^t in integers.
    k = data.draw(st.integers(1, max(1, n // 2 - 1)))
    gamma = 1.0 + p / 2**m
    assert Fraction(gamma) == 1 + Fraction(p, 2**m)
    exact = (n * 2 ** (m * t)) // (2**m + p) ** t
    expected = min(n, max(exact, 2 * k))
    options = CEMOptions(n_sample=n, n_elite=k, population_decay=gamma)
    assert options.population(t) == expected
    assert ref_cem.population(n, k, gamma, t) == expected


@pytest.mark.spec("CEM-40")
def test_population_where_the_float_power_rounds_down() -> None:
    assert CEMOptions(n_sample=49, n_elite=5, population_decay=1.75).population(2) == 16
    assert CEMOptions(n_sample=729, n_elite=10, population_decay=1.5).population(6) == 64


# --- the σ floor at the ends of the range (CEM-11) ---


@pytest.mark.spec("CEM-11", "CEM-17")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("std_min", [0.0, 1e-45, 1e-25, 1e-170, 1e-3, 1e20, 1e160])
def test_floor_holds_with_finite_gradients_over_the_dtype_range(
    dtype: torch.dtype, std_min: float
) -> None:
    info = torch.finfo(dtype)
    if std_min > info.max:
        with pytest.raises(ValueError, match="std_min"):
            floored_std(torch.zeros(2, dtype=dtype), std_min)
        return
    floor = torch.tensor(std_min, dtype=dtype)  # σ_min as the dtype holds it
    variance = torch.tensor([0.0, 1e-30, 4.0], dtype=dtype, requires_grad=True)
    std = floored_std(variance, std_min)
    expected = torch.maximum(variance.detach().sqrt(), floor)
    torch.testing.assert_close(std, expected, rtol=1e-6, atol=0)
    (grad,) = torch.autograd.grad(std.sum(), variance)
    assert torch.isfinite(grad).all()


@pytest.mark.spec("CEM-11", "CEM-22", "CEM-35")
@pytest.mark.parametrize("std_min", [1e-170, 1e-3, 1e160])
def test_a_solve_with_an_extreme_floor_matches_the_oracle(std_min: float) -> None:
    # σ₀ = 0 collapses the elites at once: every σ is the floor.
    noise = torch.randn(3, 1, 12, 2, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)  # fmt: skip
    mean0 = torch.tensor([[0.5, -0.5]], dtype=torch.float64, requires_grad=True)

    def f(x: torch.Tensor) -> torch.Tensor:
        return (x * x).sum(-1)

    result = dcem(f, mean0, 0.0, n_sample=12, n_elite=3, n_iter=3, std_min=std_min, noise=noise)
    trace = ref_cem.cem(lambda x: (x * x).sum(-1), mean0[0].detach().numpy(), 0.0,
                        noise[:, 0].numpy(), n_elite=3, tau=1.0, std_min=std_min)  # fmt: skip
    np.testing.assert_allclose(result.std[0].detach().numpy(), trace.stds[-1], rtol=1e-12)
    np.testing.assert_allclose(result.mean[0].detach().numpy(), trace.means[-1], atol=1e-12)
    (grad,) = torch.autograd.grad(result.mean.sum() + result.std.sum(), mean0)
    assert torch.isfinite(grad).all()


@pytest.mark.spec("CEM-11", "CEM-22")
def test_a_floor_above_the_dtype_range_is_a_value_error_before_f_runs() -> None:
    calls: list[int] = []

    def f(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return (x * x).sum(-1)

    with pytest.raises(ValueError, match="std_min=1e\\+39"):
        dcem(f, torch.zeros(2), 1.0, std_min=1e39)
    assert calls == []
    assert torch.isfinite(dcem(f, torch.zeros(2, dtype=torch.float64), 1.0, std_min=1e39).std).all()


# --- exponentially weighted elites with a tiny temperature (CEM-30) ---


@pytest.mark.spec("CEM-30", "CEM-35")
@pytest.mark.parametrize(("temperature", "normalize"), [(1e-300, False), (5e-324, True)])
def test_tiny_elite_temperature_puts_all_weight_on_the_best_elite(
    temperature: float, normalize: bool
) -> None:
    noise = torch.randn(2, 1, 10, 2, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)  # fmt: skip

    def f(x: torch.Tensor) -> torch.Tensor:
        return 1e10 * ((x - 0.3) ** 2).sum(-1)

    result = dcem(f, torch.zeros(1, 2, dtype=torch.float64), 1.0, n_sample=10, n_elite=3,
                  n_iter=2, tau=None, elite_temperature=temperature, normalize=normalize,
                  noise=noise)  # fmt: skip
    trace = ref_cem.cem(lambda x: 1e10 * ((x - 0.3) ** 2).sum(-1), np.zeros(2), 1.0,
                        noise[:, 0].numpy(), n_elite=3, tau=None,
                        elite_temperature=temperature, normalize=normalize)  # fmt: skip
    assert torch.isfinite(result.mean).all()
    np.testing.assert_allclose(result.mean[0].numpy(), trace.means[-1], atol=1e-12)
