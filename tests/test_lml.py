"""Properties of impl.lml.lml against the reference and spec/lml.md."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from impl.lml import (
    FAST_STEPS,
    MAX_STEPS,
    STEP_TOLERANCE,
    lml,
    newton_from_midpoint,
    newton_single_row,
    solve_lml,
)
from reference.lml import (
    hard_topk_indicator,
    lml_bisect,
    lml_cvxpy,
    lml_jacobian,
    lml_tau_derivative,
    lml_threshold,
    lml_vjp,
)
from tests.strategies import LMLProblem, gapped_problems, lml_problems, temperatures

ACCURACY = {torch.float32: 1e-6, torch.float64: 1e-12}  # LML-4
EPS = {
    torch.float32: float(torch.finfo(torch.float32).eps),
    torch.float64: float(np.finfo(np.float64).eps),
}
DTYPES = [torch.float32, torch.float64]


def run(problem: LMLProblem, dtype: torch.dtype) -> np.ndarray:
    """impl.lml on ``problem`` in ``dtype``, back as float64 NumPy."""
    x = torch.from_numpy(problem.x).to(dtype)
    return lml(x, problem.k, problem.tau).double().numpy()


def ref(problem: LMLProblem) -> np.ndarray:
    return lml_bisect(problem.x, problem.k, problem.tau)


@pytest.mark.spec("LML-2", "LML-4")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems())
def test_matches_the_bisection_reference(problem: LMLProblem, dtype: torch.dtype) -> None:
    error = np.abs(run(problem, dtype) - ref(problem)).max()
    assert error <= ACCURACY[dtype], f"max error {error:.3e}"


@pytest.mark.spec("LML-4", "LML-19")
@given(problem=lml_problems(max_n=600, max_batch=1))
def test_accuracy_on_long_rows(problem: LMLProblem) -> None:
    error = np.abs(run(problem, torch.float32) - ref(problem)).max()
    assert error <= ACCURACY[torch.float32], f"max error {error:.3e}"


@pytest.mark.spec("LML-1")
@given(problem=lml_problems(max_n=12, max_batch=1, max_scaled=20.0))
def test_cvxpy_solution_of_eq4_agrees(problem: LMLProblem) -> None:
    row = problem.x[0]
    direct = lml_cvxpy(row, problem.k, problem.tau)
    assert np.abs(direct - lml_bisect(row, problem.k, problem.tau)).max() <= 1e-6
    assert np.abs(direct - run(problem, torch.float64)[0]).max() <= 1e-6


@pytest.mark.spec("LML-2")
@given(problem=lml_problems(max_scaled=50.0))
def test_output_has_the_kkt_form(problem: LMLProblem) -> None:
    # One threshold t per row explains every entry: y_i = σ((x_i − t)/τ).
    y = run(problem, torch.float64)
    t = lml_threshold(problem.x, problem.k, problem.tau)
    implied = 1.0 / (1.0 + np.exp(-(problem.x - t[:, None]) / problem.tau))
    assert np.abs(y - implied).max() <= 1e-12


@pytest.mark.spec("LML-3")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems(max_n=300))
def test_feasible(problem: LMLProblem, dtype: torch.dtype) -> None:
    y = run(problem, dtype)
    assert (y >= 0).all() and (y <= 1).all()
    slack = np.abs(y.sum(-1) - problem.k).max()
    assert slack <= 2 * problem.n * EPS[dtype], f"|Σy − k| = {slack:.3e}"


@pytest.mark.spec("LML-5")
@given(problem=lml_problems(max_batch=6), lead=st.sampled_from([(), (1,), (2, 3)]))
def test_rows_are_independent_problems(problem: LMLProblem, lead: tuple[int, ...]) -> None:
    x = torch.from_numpy(problem.x).float()
    batched = lml(x, problem.k, problem.tau)
    for i in range(x.shape[0]):
        alone = lml(x[i : i + 1], problem.k, problem.tau)
        assert (batched[i : i + 1] - alone).abs().max() <= ACCURACY[torch.float32]
    shaped = x[0].expand(*lead, problem.n) if lead else x[0]
    out = lml(shaped, problem.k, problem.tau)
    assert out.shape == shaped.shape
    flat = out.reshape(-1, problem.n)
    assert (flat - batched[0]).abs().max() <= ACCURACY[torch.float32]


@pytest.mark.spec("LML-6")
@given(problem=lml_problems(), data=st.data())
def test_permutation_equivariant(problem: LMLProblem, data: st.DataObject) -> None:
    perm = np.array(data.draw(st.permutations(range(problem.n))))
    shuffled = LMLProblem(problem.x[:, perm], problem.k, problem.tau)
    assert np.abs(run(shuffled, torch.float32) - run(problem, torch.float32)[:, perm]).max() <= 2e-6


def rounding_effect(exact: np.ndarray, rounded: np.ndarray, tau: float) -> float:
    """A bound on how much rounding the input moves the projection (LML-7, LML-8).

    By the mean value theorem and LML-12, ``|y(a) − y(b)|_∞ ≤ max|a − b| / (2τ)``:
    ``|(J v)_i| = |h_i v_i − h_i (hᵀv)/1ᵀh| / τ ≤ 2 h_i |v|_∞ / τ ≤ |v|_∞ / (2τ)``
    since ``h_i ≤ 1/4``.
    ``exact`` is in float64, whose own rounding (and that of a scaled τ,
    equivalent to scaling the input by 1 + η, |η| ≤ ε/2) is added as two ulps.
    """
    gap = np.abs(rounded - exact) + 2 * np.spacing(np.abs(exact))
    return float(gap.max()) / (2 * tau)


@pytest.mark.spec("LML-7")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems(max_scaled=5e3), fraction=st.floats(-1.0, 1.0))
def test_shift_invariant(problem: LMLProblem, dtype: torch.dtype, fraction: float) -> None:
    # A general shift (not a power of two) of up to 5e3 τ, so |x + c|/τ ≤ 1e4.
    c = float(np.float32(fraction * 5e3 * problem.tau))
    exact = problem.x + c  # exact in float64 for float32 x and c (or rounded once)
    moved = torch.from_numpy(exact).to(dtype)
    shifted = lml(moved, problem.k, problem.tau).double().numpy()
    original = run(problem, dtype)
    bound = 2 * ACCURACY[dtype] + rounding_effect(exact, moved.double().numpy(), problem.tau)
    assert np.abs(shifted - original).max() <= bound


@pytest.mark.spec("LML-8")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems(max_scaled=5e3), alpha=st.floats(1 / 64, 64.0))
def test_scale_covariant(problem: LMLProblem, dtype: torch.dtype, alpha: float) -> None:
    # A general scale (not a power of two): both α x and α τ are rounded.
    tau = float(np.float32(alpha * problem.tau))  # a τ exact in either dtype
    exact = problem.x * (tau / problem.tau)  # the input that τ scales exactly (to one ulp)
    scaled = torch.from_numpy(exact).to(dtype)
    result = lml(scaled, problem.k, tau).double().numpy()
    bound = 2 * ACCURACY[dtype] + rounding_effect(exact, scaled.double().numpy(), tau)
    assert np.abs(result - run(problem, dtype)).max() <= bound


@pytest.mark.spec("LML-9")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems(), repeats=st.integers(1, 5))
def test_order_preserved_and_ties_equal(
    problem: LMLProblem, dtype: torch.dtype, repeats: int
) -> None:
    n_dup = min(repeats, problem.n - 1)
    x = np.concatenate([problem.x, problem.x[:, :n_dup]], axis=-1)  # guaranteed ties
    y = run(LMLProblem(x, problem.k, problem.tau), dtype)
    order = np.argsort(x, axis=-1, kind="stable")
    assert (np.diff(np.take_along_axis(y, order, -1), axis=-1) >= -EPS[dtype]).all()
    assert (np.abs(y[:, -n_dup:] - y[:, :n_dup]) <= EPS[dtype]).all()


@pytest.mark.spec("LML-10")
@given(problem=lml_problems())
def test_complement_symmetry(problem: LMLProblem) -> None:
    flipped = LMLProblem(-problem.x, problem.n - problem.k, problem.tau)
    assert np.abs(run(problem, torch.float64) - (1 - run(flipped, torch.float64))).max() <= 2e-12


@pytest.mark.spec("LML-11")
@given(draw=gapped_problems(), divisor=st.floats(1.0, 200.0))
def test_prop2_small_temperature_gives_hard_topk(
    draw: tuple[np.ndarray, int, float], divisor: float
) -> None:
    x, k, gap = draw
    tau = gap / divisor
    n = x.size
    bound = max(k, n - k) * math.exp(-gap / (2 * tau))
    y = lml(torch.from_numpy(x), k, tau).numpy()
    assert np.abs(y - hard_topk_indicator(x, k)).max() <= bound + 1e-12
    if bound < EPS[torch.float64] / 4:  # below half an ulp under 1: exactly 1
        assert (y[hard_topk_indicator(x, k) == 1] == 1).all()


@pytest.mark.spec("LML-12")
@given(problem=lml_problems(max_scaled=50.0), seed=st.integers(0, 2**16))
def test_vjp_matches_the_closed_form(problem: LMLProblem, seed: int) -> None:
    x = torch.from_numpy(problem.x).requires_grad_()
    g = torch.from_numpy(np.random.default_rng(seed).standard_normal(problem.x.shape))
    (grad,) = torch.autograd.grad(lml(x, problem.k, problem.tau), x, g)
    expected = lml_vjp(ref(problem), g.numpy(), problem.tau)
    scale = np.abs(g.numpy()).max() / problem.tau
    assert np.abs(grad.numpy() - expected).max() <= 1e-10 * scale


@pytest.mark.spec("LML-12")
@given(problem=lml_problems(max_n=10, max_batch=1, max_scaled=8.0), seed=st.integers(0, 2**16))
def test_vjp_matches_finite_differences_of_the_reference(problem: LMLProblem, seed: int) -> None:
    row, k, tau = problem.x[0], problem.k, problem.tau
    g = np.random.default_rng(seed).standard_normal(row.size)
    step = 1e-5 * tau
    numeric = np.empty(row.size)
    for i in range(row.size):
        e = np.zeros(row.size)
        e[i] = step
        numeric[i] = g @ (lml_bisect(row + e, k, tau) - lml_bisect(row - e, k, tau)) / (2 * step)
    x = torch.from_numpy(row).requires_grad_()
    (grad,) = torch.autograd.grad(lml(x, k, tau), x, torch.from_numpy(g))
    assert np.abs(grad.numpy() - numeric).max() <= 1e-6 * np.abs(g).max() / tau


@pytest.mark.spec("LML-12")
def test_backward_saves_only_the_output() -> None:
    x = torch.randn(4, 50, requires_grad=True)
    y = lml(x, 5, 0.5)
    saved = y.grad_fn.saved_tensors  # type: ignore[union-attr]
    assert len(saved) == 1 and saved[0].shape == y.shape and torch.equal(saved[0], y)


@pytest.mark.spec("LML-13")
@given(problem=lml_problems(max_n=16, max_batch=1, max_scaled=30.0))
def test_jacobian_symmetric_psd_and_kills_constants(problem: LMLProblem) -> None:
    x = torch.from_numpy(problem.x[0])
    jac = torch.autograd.functional.jacobian(  # type: ignore[no-untyped-call]
        lambda v: lml(v, problem.k, problem.tau), x
    ).numpy()
    expected = lml_jacobian(lml_bisect(problem.x[0], problem.k, problem.tau), problem.tau)
    scale = 1.0 / problem.tau
    assert np.abs(jac - expected).max() <= 1e-10 * scale
    assert np.abs(jac - jac.T).max() <= 1e-12 * scale
    assert np.linalg.eigvalsh(0.5 * (jac + jac.T)).min() >= -1e-10 * scale
    assert np.abs(jac @ np.ones(problem.n)).max() <= 1e-12 * scale


@pytest.mark.spec("LML-14")
@given(problem=lml_problems(max_n=8, max_batch=2, max_scaled=10.0))
def test_gradcheck_and_gradgradcheck(problem: LMLProblem) -> None:
    x = torch.from_numpy(problem.x).requires_grad_()

    def fn(v: torch.Tensor) -> torch.Tensor:
        return lml(v, problem.k, problem.tau)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6 * problem.tau, atol=1e-6, rtol=1e-4)
    assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6 * problem.tau, atol=1e-5, rtol=1e-3)


@pytest.mark.spec("LML-15")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems(max_n=24, max_batch=1), data=st.data())
def test_infinite_entries(problem: LMLProblem, dtype: torch.dtype, data: st.DataObject) -> None:
    n, k = problem.n, problem.k
    row = problem.x[0].copy()
    n_pos = data.draw(st.integers(0, k - 1))  # keeps the k-th largest finite
    n_neg = data.draw(st.integers(0, n - k - 1))  # keeps the (k+1)-th largest finite
    where = data.draw(st.permutations(range(n)))
    row[list(where[:n_pos])] = np.inf
    row[list(where[n_pos : n_pos + n_neg])] = -np.inf
    x = torch.from_numpy(row).to(dtype).requires_grad_()
    y = lml(x, k, problem.tau)
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y) + torch.arange(n, dtype=dtype))
    expected = lml_bisect(row, k, problem.tau)
    assert np.abs(y.detach().double().numpy() - expected).max() <= ACCURACY[dtype]
    assert (y[row == np.inf] == 1).all() and (y[row == -np.inf] == 0).all()
    assert (grad[~np.isfinite(row)] == 0).all()


@pytest.mark.spec("LML-15")
@given(problem=lml_problems(max_n=16, max_batch=1), data=st.data())
def test_rows_that_cannot_be_projected_are_nan(problem: LMLProblem, data: st.DataObject) -> None:
    n, k = problem.n, problem.k
    row = problem.x[0].copy()
    kind = data.draw(st.sampled_from(["nan", "too many +inf", "too many -inf"]))
    where = list(data.draw(st.permutations(range(n))))
    if kind == "nan":
        row[where[0]] = np.nan
    elif kind == "too many +inf":
        row[where[:k]] = np.inf
    else:
        row[where[: n - k]] = -np.inf
    other = problem.x[0]
    y = lml(torch.from_numpy(np.stack([row, other])).float(), k, problem.tau)
    assert torch.isnan(y[0]).all()
    assert torch.isfinite(y[1]).all()
    assert np.isnan(lml_bisect(row, k, problem.tau)).all()


@pytest.mark.spec("LML-16")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@given(problem=lml_problems(max_scaled=100.0))
def test_half_precision_inputs_are_computed_in_float32(
    problem: LMLProblem, dtype: torch.dtype
) -> None:
    x = torch.from_numpy(problem.x).to(dtype).requires_grad_()
    y = lml(x, problem.k, problem.tau)
    assert y.dtype == dtype and y.device == x.device
    rounded = x.detach().double().numpy()  # what the solver actually sees
    expected = torch.from_numpy(lml_bisect(rounded, problem.k, problem.tau)).to(dtype)
    assert torch.equal(y, expected) or (y.double() - expected.double()).abs().max() <= float(
        torch.finfo(dtype).eps
    )
    (grad,) = torch.autograd.grad(y.float().sum(), x)
    assert grad.dtype == dtype


BAD_ARGUMENTS = [
    (lambda: lml(torch.arange(5), 2), TypeError, "floating"),
    (lambda: lml(torch.tensor(1.0), 1), ValueError, "dimension"),
    (lambda: lml(torch.randn(5), 2.0), TypeError, "k"),  # type: ignore[arg-type]
    (lambda: lml(torch.randn(5), True), TypeError, "k"),
    (lambda: lml(torch.randn(5), 0), ValueError, "k=0"),
    (lambda: lml(torch.randn(5), 5), ValueError, "k=5"),
    (lambda: lml(torch.randn(5), -1), ValueError, "k=-1"),
    (lambda: lml(torch.randn(5), 2, 0.0), ValueError, "tau"),
    (lambda: lml(torch.randn(5), 2, -1.0), ValueError, "tau"),
    (lambda: lml(torch.randn(5), 2, math.inf), ValueError, "tau"),
    (lambda: lml(torch.randn(5), 2, math.nan), ValueError, "tau"),
    (lambda: lml(torch.randn(5), 2, "1"), TypeError, "tau"),  # type: ignore[arg-type]
    (lambda: lml(torch.randn(5), 2, torch.tensor(1)), TypeError, "tau"),
    (lambda: lml(torch.randn(3, 5), 2, torch.ones(3)), ValueError, "tau"),
    (lambda: lml(torch.randn(3, 5), 2, torch.ones(2, 1)), ValueError, "tau"),
    (lambda: lml(torch.randn(3, 5), 2, torch.ones(1, 3, 1)), ValueError, "tau"),
    (lambda: lml(torch.randn(5), 2, max_steps=0), ValueError, "max_steps=0"),
    (lambda: lml(torch.randn(5), 2, max_steps=2.5), TypeError, "max_steps"),  # type: ignore[arg-type]
]


@pytest.mark.spec("LML-17")
@pytest.mark.parametrize(("call", "error", "words"), BAD_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(
    call: Callable[[], object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        call()


@pytest.mark.spec("LML-18", "LML-22")
def test_runs_on_meta_tensors() -> None:
    # Meta tensors have no values: any .item(), host sync or value-dependent
    # branch would raise.
    x = torch.empty(7, 100, device="meta", requires_grad=True)
    y = lml(x, 10, 1.0)
    assert y.shape == x.shape and y.device.type == "meta"
    (grad,) = torch.autograd.grad(y, x, torch.empty_like(y))
    assert grad.shape == x.shape
    assert lml(torch.empty(3, 9, device="meta"), 7, 0.1).shape == (3, 9)  # complement path
    tau = torch.empty((), device="meta", requires_grad=True)  # a learnable τ (LML-22)
    grads = torch.autograd.grad(lml(x, 10, tau), (x, tau), torch.empty_like(y))
    assert grads[0].shape == x.shape and grads[1].shape == ()


@pytest.mark.spec("LML-18")
def test_traces_without_graph_breaks() -> None:
    compiled = torch.compile(lambda v: lml(v, 3, 0.5), fullgraph=True, backend="eager")
    x = torch.randn(4, 12, dtype=torch.float64, requires_grad=True)
    y = compiled(x)
    torch.testing.assert_close(y, lml(x, 3, 0.5))
    (grad,) = torch.autograd.grad(y.sum() + (y * y).sum(), x)
    assert torch.isfinite(grad).all()


@pytest.mark.spec("LML-19")
@given(problem=lml_problems())
def test_bracket_contains_the_root(problem: LMLProblem) -> None:
    # The bracket of LML-19 step 2, in threshold units t = c + τu.
    k, n, tau = problem.k, problem.n, problem.tau
    srt = -np.sort(-problem.x, axis=-1)
    x_k, x_k1 = srt[:, k - 1], srt[:, k]
    t = lml_threshold(problem.x, k, tau)
    assert (t >= x_k1 - tau * math.log(k) - 1e-9 * (1 + np.abs(t))).all()
    assert (t <= x_k + tau * math.log(n - k) + 1e-9 * (1 + np.abs(t))).all()


@pytest.mark.spec("LML-19")
@given(problem=lml_problems(max_scaled=100.0))
def test_step_count_can_be_set(problem: LMLProblem) -> None:
    x = torch.from_numpy(problem.x)
    default = lml(x, problem.k, problem.tau)
    explicit = lml(x, problem.k, problem.tau, max_steps=MAX_STEPS[torch.float64])
    assert torch.equal(default, explicit)
    # Rows that have stopped never move again, so extra steps change nothing.
    longer = lml(x, problem.k, problem.tau, max_steps=60)
    assert (longer - torch.from_numpy(ref(problem))).abs().max() <= ACCURACY[torch.float64]


@pytest.mark.spec("LML-19")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems())
def test_stopping_early_changes_no_output(problem: LMLProblem, dtype: torch.dtype) -> None:
    # The CPU solver ends its loop once every row has stopped; the CUDA one
    # runs the whole schedule. Both must give the same bits.
    x = torch.from_numpy(problem.x).to(dtype)
    steps = MAX_STEPS[dtype]
    early = solve_lml(x, problem.k, problem.tau, steps, early_exit=True)
    full = solve_lml(x, problem.k, problem.tau, steps, early_exit=False)
    assert torch.equal(early.isnan(), full.isnan())
    assert torch.equal(early.nan_to_num(), full.nan_to_num())


# --- The temperature as a tensor, dy/dτ and torch.func (LML-20 to LML-22) ---


@pytest.mark.spec("LML-20")
@given(problem=lml_problems(max_n=10, max_batch=2, max_scaled=8.0))
def test_reference_tau_derivative_matches_finite_differences(problem: LMLProblem) -> None:
    # The closed form of LML-20 against central differences of the bisection.
    x, k, tau = problem.x, problem.k, problem.tau
    step = 1e-5 * tau
    numeric = (lml_bisect(x, k, tau + step) - lml_bisect(x, k, tau - step)) / (2 * step)
    closed = lml_tau_derivative(x, k, tau)
    assert np.abs(closed - numeric).max() <= 1e-6 / tau


@pytest.mark.spec("LML-20")
@given(problem=lml_problems(max_scaled=50.0), seed=st.integers(0, 2**16))
def test_gradient_in_tau_matches_the_closed_form(problem: LMLProblem, seed: int) -> None:
    x = torch.from_numpy(problem.x)
    tau = torch.tensor(problem.tau, dtype=torch.float64, requires_grad=True)
    g = np.random.default_rng(seed).standard_normal(problem.x.shape)
    (grad,) = torch.autograd.grad(lml(x, problem.k, tau), tau, torch.from_numpy(g))
    expected = float((g * lml_tau_derivative(problem.x, problem.k, problem.tau)).sum())
    scale = np.abs(g).sum() / problem.tau
    assert abs(float(grad) - expected) <= 1e-10 * scale


@pytest.mark.spec("LML-20")
@given(problem=lml_problems(max_n=10, max_batch=2, max_scaled=8.0))
def test_gradient_in_tau_matches_finite_differences_in_float32(problem: LMLProblem) -> None:
    x = torch.from_numpy(problem.x).float()
    tau = torch.tensor(problem.tau, requires_grad=True)
    (grad,) = torch.autograd.grad(lml(x, problem.k, tau).pow(2).sum(), tau)
    step = 1e-5 * problem.tau

    def loss(t: float) -> float:
        return float((lml_bisect(problem.x, problem.k, t) ** 2).sum())

    numeric = (loss(problem.tau + step) - loss(problem.tau - step)) / (2 * step)
    assert abs(float(grad) - numeric) <= 1e-4 * problem.x.size / problem.tau


@pytest.mark.spec("LML-14", "LML-20")
@given(problem=lml_problems(max_n=8, max_batch=2, max_scaled=10.0))
def test_gradcheck_in_x_and_tau(problem: LMLProblem) -> None:
    # In units of τ₀ (v = x/τ₀, t = τ/τ₀ = 1), so that every derivative, and
    # the cotangents gradgradcheck perturbs, are of order one.
    tau0 = problem.tau
    v = torch.from_numpy(problem.x / tau0).requires_grad_()
    t = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return lml(a * tau0, problem.k, b * tau0)

    assert torch.autograd.gradcheck(fn, (v, t), eps=1e-6, atol=1e-6, rtol=1e-4)
    assert torch.autograd.gradgradcheck(fn, (v, t), eps=1e-6, atol=1e-5, rtol=1e-3)


@pytest.mark.spec("LML-22")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems())
def test_a_scalar_tensor_tau_gives_the_float_result(
    problem: LMLProblem, dtype: torch.dtype
) -> None:
    x = torch.from_numpy(problem.x).to(dtype)
    as_float = lml(x, problem.k, problem.tau)
    assert torch.equal(lml(x, problem.k, torch.tensor(problem.tau, dtype=dtype)), as_float)
    # A τ of another dtype is rounded to x's dtype: the float of that rounding.
    for tau_dtype in DTYPES:
        tau = torch.tensor(problem.tau, dtype=tau_dtype)
        as_tensor = lml(x, problem.k, tau)
        assert as_tensor.dtype == dtype
        assert torch.equal(as_tensor, lml(x, problem.k, float(tau.to(dtype))))


@pytest.mark.spec("LML-22")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems(max_batch=4), data=st.data())
def test_one_temperature_per_row(
    problem: LMLProblem, dtype: torch.dtype, data: st.DataObject
) -> None:
    taus = [data.draw(temperatures()) for _ in range(problem.x.shape[0])]
    # Keep |x|/τ within LML-4's range for the smallest τ.
    x = np.clip(problem.x, -1e4 * min(taus), 1e4 * min(taus)).astype(np.float32).astype(np.float64)
    tau = torch.tensor(taus, dtype=dtype).unsqueeze(-1)  # (B, 1)
    y = lml(torch.from_numpy(x).to(dtype), problem.k, tau).double().numpy()
    for i, t in enumerate(taus):
        t_rounded = float(torch.tensor(t, dtype=dtype))
        expected = lml_bisect(x[i : i + 1], problem.k, t_rounded)
        assert np.abs(y[i : i + 1] - expected).max() <= ACCURACY[dtype]


@pytest.mark.spec("LML-22")
def test_rows_with_a_bad_tensor_temperature_are_nan() -> None:
    x = torch.randn(5, 9)
    tau = torch.tensor([[1.0], [0.0], [-2.0], [math.inf], [math.nan]])
    y = lml(x, 3, tau)
    assert torch.isfinite(y[0]).all()
    assert torch.isnan(y[1:]).all()


@pytest.mark.spec("LML-21")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems(max_batch=3))
def test_vmap_equals_the_batched_call(problem: LMLProblem, dtype: torch.dtype) -> None:
    x = torch.from_numpy(problem.x).to(dtype)
    k, tau = problem.k, problem.tau
    batched = lml(x, k, tau)
    mapped = torch.func.vmap(lambda row: lml(row, k, tau))(x)
    torch.testing.assert_close(mapped, batched, atol=ACCURACY[dtype], rtol=0, equal_nan=True)
    # Batch dimension last, and nested maps.
    across = torch.func.vmap(lambda row: lml(row, k, tau), in_dims=1, out_dims=1)(x.T)
    torch.testing.assert_close(across.T, batched, atol=ACCURACY[dtype], rtol=0, equal_nan=True)
    nested = torch.func.vmap(torch.func.vmap(lambda row: lml(row, k, tau)))(x.unsqueeze(1))
    torch.testing.assert_close(nested[:, 0], batched, atol=ACCURACY[dtype], rtol=0, equal_nan=True)


@pytest.mark.spec("LML-21", "LML-22")
@given(problem=lml_problems(max_batch=2, max_scaled=100.0), data=st.data())
def test_vmap_over_the_temperature(problem: LMLProblem, data: st.DataObject) -> None:
    x = torch.from_numpy(problem.x)
    taus = torch.tensor([problem.tau * data.draw(st.floats(0.5, 2.0)) for _ in range(3)])
    mapped = torch.func.vmap(lambda t: lml(x, problem.k, t))(taus)
    for i in range(3):
        expected = lml_bisect(problem.x, problem.k, float(taus[i]))
        assert np.abs(mapped[i].numpy() - expected).max() <= ACCURACY[torch.float64]
    both = torch.func.vmap(lambda row, t: lml(row, problem.k, t), in_dims=(None, 0))(x[0], taus)
    torch.testing.assert_close(both, mapped[:, 0], atol=1e-12, rtol=0)


@pytest.mark.spec("LML-21")
@given(problem=lml_problems(max_n=16, max_batch=1, max_scaled=30.0), seed=st.integers(0, 2**16))
def test_jvp_is_the_jacobian_times_the_tangent(problem: LMLProblem, seed: int) -> None:
    rng = np.random.default_rng(seed)
    row, k, tau = problem.x[0], problem.k, problem.tau
    v, tau_dot = rng.standard_normal(row.size), float(rng.standard_normal())
    x = torch.from_numpy(row)
    t = torch.tensor(tau, dtype=torch.float64)
    tangents = (torch.from_numpy(v), torch.tensor(tau_dot, dtype=torch.float64))
    y, y_dot = torch.func.jvp(lambda a, b: lml(a, k, b), (x, t), tangents)[:2]
    reference = lml_bisect(row, k, tau)
    expected = lml_jacobian(reference, tau) @ v + lml_tau_derivative(row, k, tau) * tau_dot
    scale = (np.abs(v).max() + abs(tau_dot) * np.abs(row).max() / tau) / tau
    assert np.abs(y.numpy() - reference).max() <= ACCURACY[torch.float64]
    assert np.abs(y_dot.numpy() - expected).max() <= 1e-10 * scale
    # Forward mode over a float τ, and through torch.autograd.forward_ad.
    x_only = torch.func.jvp(lambda a: lml(a, k, tau), (x,), (torch.from_numpy(v),))[1]
    assert np.abs(x_only.numpy() - lml_jacobian(reference, tau) @ v).max() <= 1e-10 * scale
    fwad = torch.autograd.forward_ad
    with fwad.dual_level():
        dual_x = fwad.make_dual(x, tangents[0])  # type: ignore[no-untyped-call]
        dual_t = fwad.make_dual(t, tangents[1])  # type: ignore[no-untyped-call]
        dual_y = fwad.unpack_dual(lml(dual_x, k, dual_t)).tangent  # type: ignore[no-untyped-call]
    assert np.abs(dual_y.numpy() - expected).max() <= 1e-10 * scale


@pytest.mark.spec("LML-21")
@given(problem=lml_problems(max_n=16, max_batch=2, max_scaled=30.0))
def test_jacrev_and_jacfwd_match_the_reference(problem: LMLProblem) -> None:
    x = torch.from_numpy(problem.x)
    k, tau = problem.k, problem.tau
    scale = 1.0 / tau
    for transform in (torch.func.jacrev, torch.func.jacfwd):
        jac = transform(lambda v: lml(v, k, tau))(x).numpy()  # (B, n, B, n)
        for b in range(problem.x.shape[0]):
            expected = lml_jacobian(lml_bisect(problem.x[b], k, tau), tau)
            assert np.abs(jac[b, :, b, :] - expected).max() <= 1e-10 * scale
            others = np.delete(jac[b], b, axis=1)
            assert (others == 0).all()  # rows are independent (LML-5)
    t = torch.tensor(tau, dtype=torch.float64)
    d_tau = torch.func.jacrev(lambda s: lml(x, k, s))(t).numpy()
    expected_tau = lml_tau_derivative(problem.x, k, tau)
    assert np.abs(d_tau - expected_tau).max() <= 1e-10 * (1 + np.abs(problem.x).max() / tau) / tau


@pytest.mark.spec("LML-21")
@given(problem=lml_problems(max_batch=2, max_scaled=50.0), seed=st.integers(0, 2**16))
def test_func_grad_equals_eager_autograd(problem: LMLProblem, seed: int) -> None:
    w = torch.from_numpy(np.random.default_rng(seed).standard_normal(problem.x.shape))
    k = problem.k

    def loss(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (lml(v, k, t) * w).sum() + lml(v, k, t).pow(2).sum()

    x = torch.from_numpy(problem.x)
    t = torch.tensor(problem.tau, dtype=torch.float64)
    gx, gt = torch.func.grad(loss, argnums=(0, 1))(x, t)
    xe, te = x.clone().requires_grad_(), t.clone().requires_grad_()
    ex, et = torch.autograd.grad(loss(xe, te), (xe, te))
    torch.testing.assert_close(gx, ex, atol=1e-12 / problem.tau, rtol=1e-10)
    torch.testing.assert_close(gt, et, atol=1e-12 / problem.tau, rtol=1e-10)
    # Per-example gradients: vmap of grad.
    per_row = torch.func.vmap(torch.func.grad(lambda v: (lml(v, k, problem.tau) * v).sum()))(x)
    xe = x.clone().requires_grad_()
    (whole,) = torch.autograd.grad((lml(xe, k, problem.tau) * xe).sum(), xe)
    torch.testing.assert_close(per_row, whole, atol=1e-10, rtol=1e-10)


@pytest.mark.spec("LML-18", "LML-21")
def test_compiles_with_a_learnable_temperature() -> None:
    def fn(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return lml(v, 3, t)

    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    x = torch.randn(4, 12, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y = compiled(x, t)
    torch.testing.assert_close(y, fn(x, t), atol=1e-12, rtol=0)
    grads = torch.autograd.grad((y * y).sum(), (x, t))
    expected = torch.autograd.grad((fn(x, t) ** 2).sum(), (x, t))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


# --- The fast path (LML-23) ---


@pytest.mark.spec("LML-23")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems(max_n=300))
def test_rows_the_fast_path_accepts_match_the_reference(
    problem: LMLProblem, dtype: torch.dtype
) -> None:
    x = torch.from_numpy(problem.x).to(dtype)
    y, change = newton_from_midpoint(x, problem.k, problem.tau, FAST_STEPS[dtype])
    accepted = (change <= STEP_TOLERANCE[dtype]).squeeze(1).numpy()
    error = np.abs(y.double().numpy() - ref(problem)).max(axis=1)
    assert (error[accepted] <= ACCURACY[dtype]).all(), error[accepted].max()


@pytest.mark.spec("LML-23")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "k"), [(100, 10), (100, 90), (1000, 100), (7, 3), (50, 25)])
@pytest.mark.parametrize("tau", [0.1, 1.0, 10.0])
def test_the_fast_path_accepts_gaussian_rows(
    n: int, k: int, tau: float, dtype: torch.dtype
) -> None:
    # The schedule of FAST_STEPS is enough for N(0, 1) scores at these τ
    # (the benchmark's rows), so the fast path is what they run.
    x = torch.randn(64, n, generator=torch.Generator().manual_seed(n + k), dtype=dtype)
    change = newton_from_midpoint(x, k, tau, FAST_STEPS[dtype])[1]
    assert (change <= STEP_TOLERANCE[dtype]).all()


@pytest.mark.spec("LML-23")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems(max_batch=4), data=st.data())
def test_rows_the_fast_path_leaves_go_to_the_guarded_solver(
    problem: LMLProblem, dtype: torch.dtype, data: st.DataObject
) -> None:
    # A batch mixing accepted rows and rows the fast path cannot finish (a
    # tiny τ puts every entry deep in the sigmoid's tails, a NaN poisons a
    # row): each row is its own projection (LML-4, LML-15).
    x = torch.from_numpy(problem.x).to(dtype)
    # The smallest τ that keeps the row within LML-4's |x|/τ ≤ 1e4.
    tiny = [max(float(np.abs(row).max()) / 1e4, problem.tau * 1e-6) for row in problem.x]
    taus = [data.draw(st.sampled_from([problem.tau, t])) for t in tiny]
    if data.draw(st.booleans()):
        x[0, 0] = math.nan
    tau = torch.tensor(taus, dtype=dtype).unsqueeze(1)
    y = lml(x, problem.k, tau).double().numpy()
    for i, t in enumerate(taus):
        t_rounded = float(torch.tensor(t, dtype=dtype))
        expected = lml_bisect(x[i : i + 1].double().numpy(), problem.k, t_rounded)
        assert np.array_equal(np.isnan(y[i]), np.isnan(expected[0]))
        assert np.nan_to_num(np.abs(y[i] - expected[0])).max() <= ACCURACY[dtype]


@pytest.mark.spec("LML-23")
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_batch_with_rows_for_both_solvers(dtype: torch.dtype) -> None:
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=dtype)
    # Row 1: a gap of 1519 τ after the top two; every sum underflows (saturated).
    x[1] = torch.tensor([74.81, -68.62, -67.6, 59.62, -59.84, 76.71], dtype=dtype)
    x[3, 5] = math.nan
    tau = torch.tensor([[1.0], [0.01], [0.3], [1.0]], dtype=dtype)
    change = newton_from_midpoint(x, 2, tau, FAST_STEPS[dtype])[1].squeeze(1)
    fast = change <= STEP_TOLERANCE[dtype]
    assert fast.tolist() == [True, False, True, False]  # both paths are taken
    y = lml(x, 2, tau).double().numpy()
    for i in range(4):
        expected = lml_bisect(x[i : i + 1].double().numpy(), 2, float(tau[i]))[0]
        assert np.array_equal(np.isnan(y[i]), np.isnan(expected))
        assert np.nan_to_num(np.abs(y[i] - expected)).max() <= ACCURACY[dtype]


@pytest.mark.spec("LML-4", "LML-23", "LML-24")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 2, 40, 300])
def test_lml_of_gaussian_batches(batch: int, dtype: torch.dtype) -> None:
    # One row (LML-24) and batches (LML-23) of the benchmark's kind of rows.
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 100, generator=gen, dtype=torch.float64) * 3
    x = x.to(dtype)
    expected = lml_bisect(x.double().numpy(), 10, 0.5)
    assert np.abs(lml(x, 10, 0.5).double().numpy() - expected).max() <= ACCURACY[dtype]


# --- The single-row fast path (LML-24) ---


@pytest.mark.spec("LML-24")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems(max_n=300, max_batch=1))
def test_rows_the_single_row_path_accepts_match_the_reference(
    problem: LMLProblem, dtype: torch.dtype
) -> None:
    x = torch.from_numpy(problem.x).to(dtype)
    y, accepted = newton_single_row(x, problem.k, problem.tau, FAST_STEPS[dtype])
    if accepted:
        expected = lml_bisect(x.double().numpy(), problem.k, problem.tau)
        assert np.abs(y.double().numpy() - expected).max() <= ACCURACY[dtype]
    # Accepted or not, lml of the row is the projection (LML-4).
    error = np.abs(lml(x, problem.k, problem.tau).double().numpy() - ref(problem)).max()
    assert error <= ACCURACY[dtype]


@pytest.mark.spec("LML-24")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "k"), [(100, 10), (100, 90), (1000, 100), (7, 3), (50, 25)])
@pytest.mark.parametrize("tau", [0.1, 1.0, 10.0])
def test_the_single_row_path_accepts_gaussian_rows(
    n: int, k: int, tau: float, dtype: torch.dtype
) -> None:
    # The benchmark's and DCEM's rows (N(0, 1) scores) take this path, both
    # sides of the complement (k > n/2), τ = 1 (no division) and others.
    gen = torch.Generator().manual_seed(n + k)
    for _ in range(8):
        x = torch.randn(1, n, generator=gen, dtype=dtype)
        y, accepted = newton_single_row(x, k, tau, FAST_STEPS[dtype])
        assert accepted
        expected = lml_bisect(x.double().numpy(), k, tau)
        assert np.abs(y.double().numpy() - expected).max() <= ACCURACY[dtype]


@pytest.mark.spec("LML-24", "LML-15")
@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_the_single_row_path_leaves_go_to_the_guarded_solver(dtype: torch.dtype) -> None:
    # A gap of 1519 τ after the top two: every sum underflows (saturated).
    saturated = torch.tensor([[74.81, -68.62, -67.6, 59.62, -59.84, 76.71]], dtype=dtype)
    with_nan = torch.tensor([[0.3, math.nan, -1.0, 2.0]], dtype=dtype)
    with_inf = torch.tensor([[math.inf, 0.5, -math.inf, 2.0, 1.0]], dtype=dtype)
    inf_centre = torch.tensor([[math.inf, math.inf, 0.5, 1.0]], dtype=dtype)  # x_(1), x_(2)
    # (row, k, τ, whether the single-row path may accept it)
    cases = [
        (saturated, 2, 0.01, False),
        (with_nan, 1, 1.0, False),
        (inf_centre, 1, 1.0, False),
        (with_inf, 2, 0.5, True),
        (with_inf, 3, 1.0, True),
    ]
    for x, k, tau, may_accept in cases:
        accepted = newton_single_row(x, k, tau, FAST_STEPS[dtype])[1]
        assert may_accept or not accepted
        expected = lml_bisect(x.double().numpy(), k, tau)
        y = lml(x, k, tau).double().numpy()
        assert np.array_equal(np.isnan(y), np.isnan(expected))
        assert np.nan_to_num(np.abs(y - expected)).max() <= ACCURACY[dtype]


@pytest.mark.spec("LML-24", "LML-22")
@pytest.mark.parametrize("dtype", DTYPES)
@given(problem=lml_problems(max_batch=1), data=st.data())
def test_a_single_row_with_a_tensor_temperature(
    problem: LMLProblem, dtype: torch.dtype, data: st.DataObject
) -> None:
    # One element, 0-dim or (1, 1): read on the host, bit for bit the float of
    # its rounding; a bad τ gives a NaN row; a (1, n) row of a (1, 1, n) input.
    x = torch.from_numpy(problem.x).to(dtype)
    as_float = lml(x, problem.k, float(torch.tensor(problem.tau, dtype=dtype)))
    shape = data.draw(st.sampled_from([(), (1,), (1, 1)]))
    tau = torch.full(shape, problem.tau, dtype=torch.float64)
    assert torch.equal(lml(x, problem.k, tau), as_float)
    assert torch.equal(lml(x.unsqueeze(0), problem.k, tau), as_float.unsqueeze(0))
    bad = data.draw(st.sampled_from([0.0, -1.0, math.inf, math.nan]))
    assert torch.isnan(lml(x, problem.k, torch.full(shape, bad, dtype=dtype))).all()


@pytest.mark.spec("LML-24", "LML-12")
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_row_forward_and_backward_through_autograd(dtype: torch.dtype) -> None:
    # The autograd.Function's forward takes the single-row path too.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 40, generator=gen, dtype=dtype, requires_grad=True)
    g = torch.randn(1, 40, generator=gen, dtype=dtype)
    y = lml(x, 5, 0.7)
    (grad,) = torch.autograd.grad(y, x, g)
    expected = lml_bisect(x.detach().double().numpy(), 5, 0.7)
    assert np.abs(y.detach().double().numpy() - expected).max() <= ACCURACY[dtype]
    vjp = lml_vjp(expected, g.double().numpy(), 0.7)
    bound = 1e-5 if dtype == torch.float32 else 1e-10
    assert np.abs(grad.double().numpy() - vjp).max() <= bound


# --- defects a review of the temperature's extremes found (each failed before) ------


@pytest.mark.spec("LML-17", "LML-9", "LML-11")
@pytest.mark.parametrize("tau", [2.0**-150, 1e-46, 1e-300])
@pytest.mark.parametrize("batch", [1, 3])
def test_a_tau_that_float32_holds_only_as_zero_gives_the_limit(tau: float, batch: int) -> None:
    """LML-17: a positive number ``τ ≤ 2⁻¹⁵⁰`` is 0 in float32; it is computed
    as float32's smallest positive value, the τ → 0⁺ limit (LML-11). Compared
    with the float64 reference at the τ given. Before, τ became 0 and a row
    with a tie at the k-th entry was all NaN (0/0 at the centre), as was every
    gradient."""
    rows = np.array([[1.0, 1.0, 1.0, 0.0], [3.0, -1.0, 2.0, 0.5]])
    x = torch.from_numpy(np.tile(rows, (batch, 1))).float().requires_grad_(True)
    y = lml(x, 2, tau)
    for i, row in enumerate(np.tile(rows, (batch, 1))):
        np.testing.assert_allclose(
            y[i].detach().double().numpy(), lml_bisect(row, 2, tau), atol=1e-6
        )
    # the untied rows are saturated: the Jacobian (LML-12) is exactly 0 there
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    weights[0::2] = 0.0  # the tied rows' derivatives are of order 1/τ: not compared
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.spec("LML-20", "LML-14")
@pytest.mark.parametrize(
    "row",
    [[1000.0, 0.5, 0.0, -1000.0], [math.inf, 0.5, 0.0, -math.inf], [40.0, 0.3, -0.2, -45.0]],
)
def test_second_derivatives_through_tau_are_finite_where_outputs_are_0_or_1(
    row: list[float],
) -> None:
    """LML-20/LML-14: ``h s`` and its derivatives are finite at ``y ∈ {0, 1}``.
    ``∂²y₁/∂τ²`` and ``∂²y₁/∂x∂τ`` against central differences of the forward
    in float64. Before, ``xlogy``'s derivative at 0 (``log 0 + 1 = −∞``) times
    0 made both NaN whenever an output was exactly 0 or 1."""
    x = torch.tensor([row], dtype=torch.float64, requires_grad=True)
    tau = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    (dy_dtau,) = torch.autograd.grad(lml(x, 2, tau)[0, 1], tau, create_graph=True)
    second_tau, mixed = torch.autograd.grad(dy_dtau, (tau, x))
    step = 1e-3

    def y1(shift: np.ndarray, dtau: float) -> float:
        return float(lml(x.detach() + torch.from_numpy(shift), 2, 1.0 + dtau)[0, 1])

    zero = np.zeros((1, 4))
    fd_tau = (y1(zero, step) - 2 * y1(zero, 0.0) + y1(zero, -step)) / step**2
    assert abs(float(second_tau) - fd_tau) <= 1e-5
    for j in range(4):
        e = np.zeros((1, 4))
        e[0, j] = step if math.isfinite(row[j]) else 0.0
        fd = (y1(e, step) - y1(e, -step) - y1(-e, step) + y1(-e, -step)) / (4 * step**2)
        fd = fd if math.isfinite(row[j]) else 0.0  # an infinite score has derivative 0
        assert abs(float(mixed[0, j]) - fd) <= 1e-5, (j, float(mixed[0, j]), fd)


@pytest.mark.spec("LML-24", "LML-17")
@pytest.mark.parametrize("tau", [1e39, 1e-46, 1e-300])
def test_the_single_row_path_warns_of_nothing(tau: float) -> None:
    """LML-24: one row gives what it gives inside a batch. Under
    ``-W error`` (warnings as exceptions) it raised NumPy's RuntimeWarning
    ("overflow encountered in cast", "divide by zero") where B = 2 returned."""
    x = torch.tensor([[3.0, 1.0, 2.0, 0.5, -1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = lml(x, 2, tau)
        two = lml(x.repeat(2, 1), 2, tau)
    assert torch.equal(one[0], two[0])


@pytest.mark.spec("LML-17", "LML-22")
def test_a_tensor_tau_on_another_device_is_a_named_value_error() -> None:
    """LML-17: a tensor τ lives on ``x``'s device (a 0-dim CPU τ is also taken,
    as torch takes CPU scalars). Before, a RuntimeError named no argument."""
    with pytest.raises(ValueError, match="tau is on meta"):
        lml(torch.randn(2, 5), 2, torch.full((2, 1), 0.5, device="meta"))
    assert lml(torch.randn(2, 5, device="meta"), 2, torch.tensor(0.5)).device.type == "meta"
