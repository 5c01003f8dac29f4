"""Properties of impl.dcem.dcem against reference.cem and spec/cem.md."""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from impl.cem.selectors import SoftTopK, reads_values_on_host
from impl.dcem import DEFAULT_STD_MIN, DCEMResult, DCEMStep, dcem, hard_selection
from impl.gaussian import MATMUL_MIN_ELEMENTS, weighted_gaussian_fit
from impl.lml import lml
from impl.selection import (
    VALUE_NORM_EPS,
    hard_weights,
    normalize_values,
    soft_weights,
    soft_weights_of_finite_values,
)
from reference import CEMTrace
from tests.objectives import Objective, objectives
from tests.strategies import temperatures

ref_cem = importlib.import_module("reference.cem")  # the module; reference.cem is also a function


class DCEMKwargs(TypedDict):
    """The options of one ``dcem`` call that a ``Config`` sets."""

    n_sample: int
    n_elite: int
    n_iter: int
    tau: float | None
    normalize: bool
    lb: float | None
    ub: float | None
    std_min: float
    tol: float | None
    smoothing: float
    elite_temperature: float | None


@dataclass(frozen=True)
class Config:
    """One DCEM call on a batch, with its noise and objective."""

    objective: Objective
    mean0: np.ndarray  # (B, d)
    std0: np.ndarray  # (B, d)
    noise: np.ndarray  # (T, B, N, d)
    n_elite: int
    tau: float | None
    normalize: bool
    lb: float | None
    ub: float | None
    std_min: float
    tol: float | None
    smoothing: float = 0.0
    elite_temperature: float | None = None

    def kwargs(self) -> DCEMKwargs:
        return {
            "n_sample": self.noise.shape[2],
            "n_elite": self.n_elite,
            "n_iter": self.noise.shape[0],
            "tau": self.tau,
            "normalize": self.normalize,
            "lb": self.lb,
            "ub": self.ub,
            "std_min": self.std_min,
            "tol": self.tol,
            "smoothing": self.smoothing,
            "elite_temperature": self.elite_temperature,
        }


@st.composite
def configs(
    draw: st.DrawFn,
    kinds: tuple[str, ...] = ("quadratic", "rastrigin", "holes"),
    weighted_elites: bool = False,
) -> Config:
    """Random problems and options; ``weighted_elites`` also draws the
    ``elite_temperature`` of CEM-30 for hard runs (tests that switch ``tau``
    leave it out)."""
    d = draw(st.integers(1, 4))
    batch = draw(st.integers(1, 3))
    n = draw(st.integers(4, 40))
    t = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    bounded = draw(st.booleans())
    tau = draw(st.one_of(st.none(), st.just(0.0), temperatures(-2.0, 1.0)))
    hard = tau is None or tau == 0
    return Config(
        objective=draw(objectives(d, kinds)),
        mean0=rng.uniform(-1, 1, (batch, d)),
        std0=rng.uniform(0.2, 2.0, (batch, d)),
        noise=rng.standard_normal((t, batch, n, d)),
        n_elite=draw(st.integers(1, n - 1)),
        tau=tau,
        normalize=draw(st.booleans()),
        lb=-1.5 if bounded else None,
        ub=draw(st.sampled_from([0.5, 2.0])) if bounded else None,
        std_min=draw(st.sampled_from([1e-6, 1e-2])),
        tol=draw(st.sampled_from([None, 1e-3])),
        smoothing=draw(st.sampled_from([0.0, 0.0, 0.5, 0.9])),
        elite_temperature=(
            draw(st.sampled_from([None, 0.3, 3.0])) if hard and weighted_elites else None
        ),
    )


class Recorder:
    """A callback that keeps every DCEMStep."""

    def __init__(self) -> None:
        self.steps: list[DCEMStep] = []

    def __call__(self, step: DCEMStep) -> None:
        self.steps.append(step)


def run_impl(config: Config, recorder: Recorder | None = None, **overrides: object) -> DCEMResult:
    kwargs = config.kwargs() | overrides
    return dcem(
        config.objective.torch,
        torch.from_numpy(config.mean0),
        torch.from_numpy(config.std0),
        noise=torch.from_numpy(config.noise),
        callback=recorder,
        **kwargs,  # type: ignore[arg-type]
    )


def run_reference(config: Config, b: int) -> CEMTrace:
    trace: CEMTrace = ref_cem.cem(
        config.objective.numpy,
        config.mean0[b],
        config.std0[b],
        config.noise[:, b],
        n_elite=config.n_elite,
        tau=config.tau,
        lb=config.lb,
        ub=config.ub,
        normalize=config.normalize,
        std_min=config.std_min,
        tol=config.tol,
        smoothing=config.smoothing,
        elite_temperature=config.elite_temperature,
    )
    return trace


def quadratic(center: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: ((x - center.unsqueeze(-2)) ** 2).sum(-1)


# --------------------------------------------------------------------------
# CEM-25: the whole algorithm against the reference, on the same noise


def boundary_tie(values: np.ndarray, k: int) -> bool:
    """Whether the k-th and (k+1)-th lowest finite values are equal: hard
    selection may then pick either sample (CEM-4 leaves ties unspecified)."""
    finite = np.sort(values[np.isfinite(values)])
    return finite.size > k and finite[k - 1] == finite[k]


@pytest.mark.spec("CEM-25", "CEM-2", "CEM-6", "CEM-12", "CEM-13", "CEM-16", "CEM-29", "CEM-30")
@given(config=configs(weighted_elites=True))
def test_matches_the_reference_iterate_by_iterate(config: Config) -> None:
    recorder = Recorder()
    result = run_impl(config, recorder)
    hard = config.tau is None or config.tau == 0
    for b in range(config.mean0.shape[0]):
        trace = run_reference(config, b)
        scale = 1 + np.abs(trace.means).max() + np.abs(trace.stds).max()
        for t in range(trace.n_iter):
            step = recorder.steps[t]
            np.testing.assert_allclose(
                step.samples[b].numpy(), trace.samples[t], rtol=0, atol=1e-12 * scale
            )
            if hard and boundary_tie(trace.values[t], config.n_elite):
                break  # both runs are right from here on; they may differ
            np.testing.assert_allclose(
                step.mean[b].numpy(), trace.means[t + 1], rtol=0, atol=1e-9 * scale
            )
            np.testing.assert_allclose(
                step.std[b].numpy(), trace.stds[t + 1], rtol=0, atol=1e-9 * scale
            )
        else:
            assert int(result.n_iter[b]) == trace.n_iter
            assert bool(result.converged[b]) == trace.converged
            final = trace.means[trace.n_iter]
            np.testing.assert_allclose(result.mean[b].numpy(), final, atol=1e-9 * scale)
            best = float(result.best_value[b])
            assert best == pytest.approx(trace.best_value, rel=1e-12, abs=1e-12)
            np.testing.assert_allclose(result.best_x[b].numpy(), trace.best_x, atol=1e-9 * scale)


# --------------------------------------------------------------------------
# Selection and update (CEM-3 … CEM-8)


@st.composite
def value_rows(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    n = draw(st.integers(3, 30))
    k = draw(st.integers(1, n - 2))
    values = draw(
        st.lists(
            st.one_of(st.floats(-1e3, 1e3), st.sampled_from([np.nan, np.inf, -np.inf])),
            min_size=n,
            max_size=n,
        )
    )
    return np.array(values, dtype=np.float64), k


@pytest.mark.spec("CEM-3")
@given(row=value_rows())
def test_normalization_matches_the_reference(row: tuple[np.ndarray, int]) -> None:
    v, _ = row
    finite = np.isfinite(v)
    out = normalize_values(torch.from_numpy(v)[None], torch.from_numpy(finite)[None])[0].numpy()
    expected = ref_cem.normalize_values(v)
    if finite.sum() >= 2:
        np.testing.assert_allclose(out[finite], expected[finite], rtol=1e-12, atol=1e-12)
        kept = out[finite]
        assert abs(kept.mean()) <= 1e-9
        std = v[finite].std(ddof=1)
        assert kept.std(ddof=1) == pytest.approx(std / (std + VALUE_NORM_EPS), abs=1e-9)


@pytest.mark.spec("CEM-3")
@given(power=st.integers(-30, 38), seed=st.integers(0, 2**16))
def test_normalization_of_huge_or_tiny_finite_values(power: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    raw = rng.uniform(-3.0, 3.0, (2, 9)).astype(np.float32) * np.float32(10.0**power)
    v = torch.from_numpy(raw)
    out = normalize_values(v, torch.isfinite(v))
    assert torch.isfinite(out).all()
    expected = ref_cem.normalize_values(raw[0].astype(np.float64))
    np.testing.assert_allclose(out[0].double().numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.spec("CEM-3")
def test_normalization_has_finite_gradients_for_constant_values() -> None:
    v = torch.full((2, 5), 3.0, dtype=torch.float64, requires_grad=True)
    out = normalize_values(v, torch.isfinite(v))
    (grad,) = torch.autograd.grad(out.sum() + (out * torch.arange(5.0)).sum(), v)
    assert (out == 0).all() and torch.isfinite(grad).all()


@pytest.mark.spec("CEM-4", "CEM-12")
@given(row=value_rows())
def test_hard_weights_pick_the_k_lowest_finite_values(row: tuple[np.ndarray, int]) -> None:
    v, k = row
    values = torch.from_numpy(v)[None]
    # impl.selection's, and the one dcem uses (non-finite values mapped to +inf first).
    ranked = torch.nan_to_num(values, nan=torch.inf, posinf=torch.inf, neginf=torch.inf)
    for sel in (hard_weights(values, torch.isfinite(values), k), hard_selection(ranked, k)):
        w = sel.weights[0].numpy()
        assert w.sum() == k and set(np.unique(w)) <= {0.0, 1.0}
        finite = np.isfinite(v)
        assert bool(sel.valid[0]) == (finite.sum() >= k)
        if finite.sum() >= k:
            assert not w[~finite].any()
            chosen, rest = v[w == 1], v[(w == 0) & finite]
            assert rest.size == 0 or chosen.max() <= rest.min()
            expected = ref_cem.hard_weights(v, k)
            assert np.sort(v[w == 1]).tolist() == np.sort(v[expected == 1]).tolist()


@pytest.mark.spec("CEM-4")
@given(row=value_rows())
def test_normalization_does_not_change_the_hard_selection(row: tuple[np.ndarray, int]) -> None:
    v, k = row
    finite = np.isfinite(v)
    raw = torch.from_numpy(v)[None]
    mask = torch.from_numpy(finite)[None]
    if finite.sum() < k:
        return  # not enough finite values: no selection to compare (CEM-12)
    normed = torch.where(mask, normalize_values(raw, mask), raw)
    scores = normed[0].numpy()
    order = np.argsort(v[finite], kind="stable")
    assert (np.diff(scores[finite][order]) >= 0).all()  # monotone: the ranking is kept
    ranked = np.sort(scores[finite])
    if ranked.size > k and ranked[k - 1] == ranked[k]:
        return  # rounding merged the k-th and (k+1)-th values: either choice is right
    a = hard_weights(raw, mask, k).weights[0].numpy()
    b = hard_weights(normed, mask, k).weights[0].numpy()
    assert np.sort(v[a == 1]).tolist() == np.sort(v[b == 1]).tolist()


@pytest.mark.spec("CEM-5", "CEM-12")
@given(row=value_rows(), tau=temperatures(-2.0, 1.0), normalize=st.booleans())
def test_soft_weights_are_lml_of_negated_values(
    row: tuple[np.ndarray, int], tau: float, normalize: bool
) -> None:
    v, k = row
    finite = np.isfinite(v)
    sel = soft_weights(torch.from_numpy(v)[None], torch.from_numpy(finite)[None], k, tau, normalize)
    assert bool(sel.valid[0]) == (finite.sum() > k)
    if finite.sum() > k:
        w = sel.weights[0].numpy()
        np.testing.assert_allclose(w, ref_cem.soft_weights(v, k, tau, normalize), atol=1e-12)
        assert (w[~finite] == 0).all()
        # The lowest value gets the largest weight (minimization, eq. 5 with the sign fixed).
        assert w[np.nanargmin(np.where(finite, v, np.inf))] == w.max()


@st.composite
def weighted_samples(draw: st.DrawFn, soft: bool) -> tuple[np.ndarray, np.ndarray, int]:
    n = draw(st.integers(3, 25))
    d = draw(st.integers(1, 4))
    k = draw(st.integers(2, n - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    samples = rng.standard_normal((n, d)) * rng.uniform(0.1, 3, d) + rng.uniform(-2, 2, d)
    values = rng.standard_normal(n)
    if soft:
        tau = draw(temperatures(-1.5, 1.0))
        w = lml(torch.from_numpy(-values), k, tau).numpy()
    else:
        w = ref_cem.hard_weights(values, k)
    return samples, w, k


def _fit(samples: np.ndarray, w: np.ndarray, k: int, matmul: bool) -> tuple[np.ndarray, np.ndarray]:
    # The solver's one fit, on either of its paths (sums of products, or bmm
    # as from MATMUL_MIN_ELEMENTS sample entries on).
    mu, std = weighted_gaussian_fit(
        torch.from_numpy(samples)[None],
        torch.from_numpy(w)[None],
        k,
        0.0,
        matmul_min_elements=0 if matmul else MATMUL_MIN_ELEMENTS,
    )
    return mu[0].numpy(), (std[0] ** 2).numpy()


def _check_maximizer(samples: np.ndarray, w: np.ndarray, k: int, seed: int, matmul: bool) -> None:
    mu, var = _fit(samples, w, k, matmul)
    ref_mu, ref_std = ref_cem.gaussian_fit(samples, w, k, 0.0)
    np.testing.assert_allclose(mu, ref_mu, atol=1e-12)
    np.testing.assert_allclose(var, ref_std**2, rtol=1e-10, atol=1e-14)
    # First-order conditions of the (weighted) log-likelihood.
    diff = samples - mu
    grad_mu = (w[:, None] * diff).sum(0) / var
    grad_var = (w[:, None] * (diff**2 / (2 * var**2) - 1 / (2 * var))).sum(0)
    assert np.abs(grad_mu * np.sqrt(var)).max() <= 1e-9 * k
    assert np.abs(grad_var * var).max() <= 1e-9 * k
    # No perturbation does better.
    best = ref_cem.gaussian_loglik(samples, w, mu, var)
    rng = np.random.default_rng(seed)
    for _ in range(20):
        mu2 = mu + rng.normal(0, 0.1, mu.shape) * np.sqrt(var)
        var2 = var * np.exp(rng.normal(0, 0.2, var.shape))
        assert ref_cem.gaussian_loglik(samples, w, mu2, var2) <= best + 1e-9 * abs(best)


@pytest.mark.spec("CEM-6", "CEM-7")
@given(data=weighted_samples(soft=False), seed=st.integers(0, 2**16), matmul=st.booleans())
def test_prop1_hard_update_is_the_elite_mle(
    data: tuple[np.ndarray, np.ndarray, int], seed: int, matmul: bool
) -> None:
    _check_maximizer(*data, seed=seed, matmul=matmul)


@pytest.mark.spec("CEM-6", "CEM-8")
@given(data=weighted_samples(soft=True), seed=st.integers(0, 2**16), matmul=st.booleans())
def test_prop3_soft_update_is_the_weighted_mle(
    data: tuple[np.ndarray, np.ndarray, int], seed: int, matmul: bool
) -> None:
    _check_maximizer(*data, seed=seed, matmul=matmul)


@pytest.mark.spec("CEM-8")
@given(seed=st.integers(0, 2**16), k=st.integers(1, 9))
def test_soft_update_tends_to_the_hard_one(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    samples = torch.from_numpy(rng.standard_normal((1, 20, 3)))
    values = torch.from_numpy(rng.permutation(20).astype(np.float64))[None]  # gaps of 1
    hard = weighted_gaussian_fit(
        samples, hard_weights(values, torch.isfinite(values), k).weights, k, 0.0
    )
    size = 1 + float(samples.abs().max()) ** 2
    for tau in (0.1, 0.05, 0.02):
        weight_error = max(k, 20 - k) * math.exp(-1 / (2 * tau))  # LML-11, gaps of 1
        soft = weighted_gaussian_fit(samples, lml(-values, k, tau), k, 0.0)
        tolerance = 4 * 20 * weight_error * size / k
        assert (soft[0] - hard[0]).abs().max() <= tolerance
        assert (soft[1] ** 2 - hard[1] ** 2).abs().max() <= tolerance  # variances


# --------------------------------------------------------------------------
# Corollary 1 (CEM-9)


@pytest.mark.spec("CEM-9")
@given(config=configs(kinds=("quadratic", "rastrigin")))
def test_corollary1_dcem_follows_cem_as_tau_vanishes(config: Config) -> None:
    hard = Recorder()
    run_impl(config, hard, tau=None, tol=None, normalize=True)
    margins = []
    for step in hard.steps:
        v = step.values.numpy()
        z = (v - v.mean(-1, keepdims=True)) / (v.std(-1, ddof=1, keepdims=True) + VALUE_NORM_EPS)
        srt = np.sort(z, axis=-1)
        margins.append((srt[:, config.n_elite] - srt[:, config.n_elite - 1]).min())
    margin = min(margins)
    if margin < 1e-3:  # a near-tie: the corollary's premise does not hold
        return
    soft = Recorder()
    run_impl(config, soft, tau=margin / 60, tol=None, normalize=True)
    for a, b in zip(soft.steps, hard.steps, strict=True):
        scale = 1 + b.mean.abs().max() + b.std.abs().max()
        assert (a.mean - b.mean).abs().max() <= 1e-6 * scale
        assert (a.std - b.std).abs().max() <= 1e-6 * scale


# --------------------------------------------------------------------------
# Bounds, floor, non-finite values (CEM-10 … CEM-12)


@pytest.mark.spec("CEM-10")
@given(config=configs(), lb=st.floats(-2, 0), width=st.floats(0.01, 3))
def test_everything_stays_in_the_box(config: Config, lb: float, width: float) -> None:
    ub = lb + width
    inside = dataclasses.replace(config, mean0=np.clip(config.mean0, lb, ub))
    recorder = Recorder()
    result = run_impl(inside, recorder, lb=lb, ub=ub)
    for step in recorder.steps:
        assert (step.samples >= lb).all() and (step.samples <= ub).all()
        assert (step.mean >= lb - 1e-12).all() and (step.mean <= ub + 1e-12).all()
    for field in (result.mean, result.best_x, result.x):
        assert (field >= lb - 1e-12).all() and (field <= ub + 1e-12).all()


@pytest.mark.spec("CEM-10")
def test_tensor_bounds_per_coordinate_and_problem() -> None:
    lb = torch.tensor([[-1.0, 0.0], [0.5, -3.0]])
    ub = torch.tensor([[-0.5, 0.1], [2.0, -2.9]])
    recorder = Recorder()
    result = dcem(
        quadratic(torch.zeros(2, 2)),
        torch.zeros(2, 2),
        1.0,
        lb=lb,
        ub=ub,
        callback=recorder,
        generator=torch.Generator().manual_seed(0),
    )
    for step in recorder.steps:
        assert (step.samples >= lb[:, None]).all() and (step.samples <= ub[:, None]).all()
    assert (result.mean >= lb - 1e-6).all() and (result.mean <= ub + 1e-6).all()


@pytest.mark.spec("CEM-11")
@given(
    tau=st.one_of(st.none(), temperatures(-1.0, 1.0)), std_min=st.sampled_from([1e-6, 1e-3, 0.1])
)
def test_std_floor_and_finite_gradients_when_elites_coincide(
    tau: float | None, std_min: float
) -> None:
    mean0 = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    std0 = torch.zeros(
        3, 2, dtype=torch.float64, requires_grad=True
    )  # every sample equals the mean
    center = torch.ones(3, 2, dtype=torch.float64)
    result = dcem(
        quadratic(center),
        mean0,
        std0,
        n_elite=1,
        n_iter=3,
        tau=tau,
        std_min=std_min,
        generator=torch.Generator().manual_seed(1),
    )
    assert (result.std >= std_min).all()
    grads = torch.autograd.grad(result.x.sum() + result.std.sum(), (mean0, std0))
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.spec("CEM-12")
@given(tau=st.one_of(st.none(), temperatures(-1.0, 1.0)), k=st.integers(1, 5))
def test_problems_with_too_few_finite_values_keep_their_distribution(
    tau: float | None, k: int
) -> None:
    # Problem 0 is all NaN, problem 1 has exactly k finite values (enough for
    # hard, not for soft), problem 2 is healthy.
    n = 12
    finite_count = torch.tensor([0, k, n])

    def f(x: torch.Tensor) -> torch.Tensor:
        v = (x * x).sum(-1)
        idx = torch.arange(n)[None]
        return torch.where(idx < finite_count[:, None], v, torch.nan)

    recorder = Recorder()
    mean0 = torch.full((3, 2), 0.5, dtype=torch.float64, requires_grad=True)
    result = dcem(
        f,
        mean0,
        1.0,
        n_sample=n,
        n_elite=k,
        n_iter=2,
        tau=tau,
        callback=recorder,
        generator=torch.Generator().manual_seed(2),
    )
    soft = tau is not None
    for step in recorder.steps:
        assert (step.mean[0] == 0.5).all()
        assert ((step.mean[1] == 0.5).all()) == soft
        assert (step.weights[~torch.isfinite(step.values)] == 0).all()
        assert (step.weights[0] == 0).all() and ((step.weights[1] == 0).all() == soft)
    assert torch.isfinite(result.mean).all() and torch.isfinite(result.std).all()
    (grad,) = torch.autograd.grad(result.x.sum(), mean0)
    assert torch.isfinite(grad).all()


# --------------------------------------------------------------------------
# Convergence, independence, result, output (CEM-13 … CEM-16)


@pytest.mark.spec("CEM-13")
@given(tau=st.one_of(st.none(), temperatures(-1.0, 1.0)))
def test_converged_problems_stop_changing_while_others_go_on(tau: float | None) -> None:
    mean0 = torch.zeros(3, 2, dtype=torch.float64)
    std0 = torch.tensor([[1e-9, 1e-9], [1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    recorder = Recorder()
    f = quadratic(torch.tensor([[0.0, 0.0], [0.7, -0.3], [0.2, 0.1]], dtype=torch.float64))
    result = dcem(
        f,
        mean0,
        std0,
        n_iter=8,
        tau=tau,
        tol=1e-4,
        callback=recorder,
        generator=torch.Generator().manual_seed(3),
    )
    assert int(result.n_iter[0]) == 1 and bool(result.converged[0])
    assert int(result.n_iter[1]) > 1
    first = recorder.steps[0]
    for step in recorder.steps[1:]:
        assert not bool(step.active[0])
        assert torch.equal(step.mean[0], first.mean[0]) and torch.equal(step.std[0], first.std[0])
    # Without tol every problem runs every iteration.
    plain = dcem(f, mean0, std0, n_iter=8, tau=tau, generator=torch.Generator().manual_seed(3))
    assert (plain.n_iter == 8).all() and not plain.converged.any()


@pytest.mark.spec("CEM-14")
@given(config=configs())
def test_batch_equals_each_problem_alone(config: Config) -> None:
    batched = run_impl(config)
    for b in range(config.mean0.shape[0]):
        alone = dcem(
            config.objective.torch,
            torch.from_numpy(config.mean0[b]),
            torch.from_numpy(config.std0[b]),
            noise=torch.from_numpy(config.noise[:, b]),
            **config.kwargs(),
        )
        for name in ("x", "mean", "std", "best_x", "best_value"):
            a, c = getattr(batched, name)[b], getattr(alone, name)
            assert torch.allclose(a, c, rtol=1e-9, atol=1e-12, equal_nan=True), name
        assert int(alone.n_iter) == int(batched.n_iter[b])


@pytest.mark.spec("CEM-15", "CEM-1")
@pytest.mark.parametrize("batched", [True, False])
def test_result_record(batched: bool) -> None:
    d = 3
    mean0 = torch.zeros(4, d) if batched else torch.zeros(d)
    seen: list[tuple[int, ...]] = []

    def f(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return (x * x).sum(-1)

    result = dcem(f, mean0, 1.0, n_sample=20, n_elite=4, n_iter=2)
    lead = (4,) if batched else ()
    assert seen == [((4,) if batched else (1,)) + (20, d)] * 2
    for name in ("x", "mean", "std", "best_x"):
        assert getattr(result, name).shape == (*lead, d)
    assert result.best_value.shape == lead
    assert result.n_iter.shape == lead and result.n_iter.dtype == torch.int64
    assert result.converged.shape == lead and result.converged.dtype == torch.bool
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.x = result.mean  # type: ignore[misc]


@pytest.mark.spec("CEM-16")
@given(config=configs(), output=st.sampled_from(["mean", "best"]))
def test_returned_point_and_best_sample(config: Config, output: str) -> None:
    recorder = Recorder()
    result = run_impl(config, recorder, output=output)
    expected = result.mean if output == "mean" else result.best_x
    assert torch.equal(result.x, expected)
    seen = [
        torch.where(torch.isfinite(s.values) & s.active[:, None], s.values, torch.inf)
        for s in recorder.steps
    ]
    lowest = torch.stack(seen).amin(dim=(0, 2))
    assert torch.equal(result.best_value, lowest)
    has_best = torch.isfinite(result.best_value)
    again = config.objective.torch(result.best_x[:, None])[:, 0]
    assert torch.allclose(again[has_best], result.best_value[has_best], rtol=1e-12)


# --------------------------------------------------------------------------
# Smoothed updates (CEM-29)


@pytest.mark.spec("CEM-29")
@given(config=configs(), alpha=st.sampled_from([0.25, 0.5, 0.9]))
def test_one_smoothed_step_blends_the_plain_update(config: Config, alpha: float) -> None:
    one = dataclasses.replace(config, noise=config.noise[:1], tol=None, smoothing=0.0)
    plain = run_impl(one)
    smoothed = run_impl(one, smoothing=alpha)
    mean0, std0 = torch.from_numpy(one.mean0), torch.from_numpy(one.std0)
    moved = ~torch.isclose(plain.mean, mean0, rtol=0, atol=0).all(-1)  # the update was applied
    blend = alpha * mean0 + (1 - alpha) * plain.mean
    # CEM-10: the blend is clipped to the box (a move when init_mean lies outside it)
    lower = -math.inf if one.lb is None else one.lb
    upper = math.inf if one.ub is None else one.ub
    expected_mean = torch.where(moved.unsqueeze(-1), blend.clamp(lower, upper), mean0)
    torch.testing.assert_close(smoothed.mean, expected_mean, rtol=1e-12, atol=1e-12)
    expected_std = (alpha * std0 + (1 - alpha) * plain.std).clamp_min(one.std_min)
    expected_std = torch.where(moved.unsqueeze(-1), expected_std, std0)
    torch.testing.assert_close(smoothed.std, expected_std, rtol=1e-12, atol=1e-12)


@pytest.mark.spec("CEM-29")
@given(config=configs())
def test_zero_smoothing_is_the_plain_update_bit_for_bit(config: Config) -> None:
    kwargs = {key: value for key, value in config.kwargs().items() if key != "smoothing"}
    plain = dcem(  # the option left out
        config.objective.torch,
        torch.from_numpy(config.mean0),
        torch.from_numpy(config.std0),
        noise=torch.from_numpy(config.noise),
        **kwargs,  # type: ignore[arg-type]
    )
    zero = run_impl(config, smoothing=0.0)
    for field in dataclasses.fields(plain):
        assert torch.equal(getattr(plain, field.name), getattr(zero, field.name)), field.name


@pytest.mark.spec("CEM-29", "CEM-17")
@given(alpha=st.sampled_from([0.0, 0.3, 0.8]), seed=st.integers(0, 2**16))
def test_smoothed_std_gradient_has_the_blend_in_it(alpha: float, seed: int) -> None:
    # Hard CEM, one iteration, no bounds: the elites are fixed and
    # σ̂₁ = σ₀ · s(ε) is linear in σ₀, so dσ₁/dσ₀ = α + (1 − α) σ̂₁/σ₀.
    std0 = torch.full((1, 3), 0.7, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(
        1, 1, 50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    kwargs: dict[str, Any] = dict(n_sample=50, n_elite=10, n_iter=1, tau=None, std_min=0.0)
    result = dcem(
        _f, torch.zeros(1, 3, dtype=torch.float64), std0, noise=noise, smoothing=alpha, **kwargs
    )
    (grad,) = torch.autograd.grad(result.std.sum(), std0)
    plain = dcem(_f, torch.zeros(1, 3, dtype=torch.float64), 0.7, noise=noise, **kwargs)
    torch.testing.assert_close(grad, alpha + (1 - alpha) * plain.std / 0.7, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------
# Exponentially weighted elites (CEM-30)


@pytest.mark.spec("CEM-30")
@given(config=configs(("quadratic", "rastrigin")), lam=st.sampled_from([0.05, 0.5, 5.0]))
def test_elite_weights_sum_to_k_and_fall_with_the_value(config: Config, lam: float) -> None:
    recorder = Recorder()
    run_impl(config, recorder, tau=None, tol=None, elite_temperature=lam)  # every update applied
    k = config.n_elite
    for step in recorder.steps:
        weights, values = step.weights, step.values
        torch.testing.assert_close(weights.sum(-1), torch.full_like(weights[:, 0], float(k)))
        assert bool((weights >= 0).all())
        kth = values.sort(-1).values[:, k - 1 : k]
        chosen = weights > 0
        assert bool((chosen.sum(-1) <= k).all())
        assert bool((values[chosen] <= kth.expand_as(values)[chosen]).all())  # elites only
        for b in range(weights.shape[0]):
            order = torch.argsort(values[b][chosen[b]])
            ranked = weights[b][chosen[b]][order]
            assert bool((ranked[1:] <= ranked[:-1] * (1 + 1e-9)).all())


@pytest.mark.spec("CEM-30")
@given(config=configs(("quadratic", "rastrigin")))
def test_elite_temperature_limits(config: Config) -> None:
    # λ → ∞: the plain hard update; λ → 0⁺: the best elite, with σ at the floor.
    one = dataclasses.replace(
        config,
        noise=config.noise[:1],
        tau=None,
        tol=None,
        smoothing=0.0,
        normalize=False,
        elite_temperature=None,
    )
    plain = run_impl(one)
    hot = run_impl(one, elite_temperature=1e12)
    torch.testing.assert_close(hot.mean, plain.mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(hot.std, plain.std, rtol=1e-9, atol=1e-9)
    recorder = Recorder()
    cold = run_impl(one, recorder, elite_temperature=1e-9)
    lowest = recorder.steps[0].values.sort(-1).values
    clear = lowest[:, 1] - lowest[:, 0] > 1e-7  # a unique best sample: e^-100 for the rest
    torch.testing.assert_close(cold.mean[clear], cold.best_x[clear], rtol=0, atol=1e-9)
    floor = torch.full_like(cold.std[clear], one.std_min)
    torch.testing.assert_close(cold.std[clear], floor, rtol=0, atol=1e-9)


@pytest.mark.spec("CEM-30", "CEM-17")
@given(seed=st.integers(0, 2**16), normalize=st.booleans())
def test_elite_weights_carry_the_gradient_to_f(seed: int, normalize: bool) -> None:
    # The hard selection is locally constant, so the gradient in f's parameters
    # comes only through the weights; it matches central differences.
    noise = torch.randn(
        1, 1, 40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    mean0 = torch.zeros(1, 2, dtype=torch.float64)

    def solve(center: torch.Tensor) -> torch.Tensor:
        result = dcem(
            quadratic(center),
            mean0,
            1.0,
            n_sample=40,
            n_elite=8,
            n_iter=1,
            tau=None,
            normalize=normalize,
            elite_temperature=0.7,
            noise=noise,
        )
        return result.mean.sum()

    center = torch.tensor([[0.3, -0.2]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(solve(center), center)
    assert grad.abs().sum() > 0
    h = 1e-6
    for j in range(2):
        step = torch.zeros_like(center)
        step[0, j] = h
        with torch.no_grad():
            numeric = (solve(center + step) - solve(center - step)) / (2 * h)
        assert float(grad[0, j]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-7)


# --------------------------------------------------------------------------
# Gradients (CEM-17, CEM-18)


@pytest.mark.spec("CEM-17")
@given(tau=temperatures(-1.0, 1.0), seed=st.integers(0, 2**16))
def test_gradients_reach_f_parameters_and_the_initial_distribution(tau: float, seed: int) -> None:
    center = torch.tensor([[0.3, -0.2]], dtype=torch.float64, requires_grad=True)
    mean0 = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    std0 = torch.ones(1, 2, dtype=torch.float64, requires_grad=True)
    result = dcem(
        quadratic(center),
        mean0,
        std0,
        n_iter=5,
        tau=tau,
        generator=torch.Generator().manual_seed(seed),
    )
    grads = torch.autograd.grad(result.x.sum(), (center, mean0, std0))
    assert all(torch.isfinite(g).all() for g in grads)
    assert grads[0].abs().sum() > 0


@pytest.mark.spec("CEM-17")
def test_hard_selection_passes_no_gradient_through_the_selection() -> None:
    center = torch.tensor([[0.3, -0.2]], dtype=torch.float64, requires_grad=True)
    mean0 = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    result = dcem(
        quadratic(center),
        mean0,
        1.0,
        n_iter=5,
        tau=None,
        generator=torch.Generator().manual_seed(0),
    )
    g_center, g_mean = torch.autograd.grad(result.mean.sum(), (center, mean0), allow_unused=True)
    assert g_center is None and g_mean is not None and torch.isfinite(g_mean).all()
    (g_best,) = torch.autograd.grad(result.best_value.sum(), center)
    assert g_best.abs().sum() > 0


@pytest.mark.spec("CEM-18")
@given(d=st.integers(1, 3), seed=st.integers(0, 2**16), data=st.data())
def test_jacobian_with_respect_to_the_shift_is_near_identity(
    d: int, seed: int, data: st.DataObject
) -> None:
    p0 = torch.tensor(
        data.draw(st.lists(st.floats(-0.5, 0.5), min_size=d, max_size=d)), dtype=torch.float64
    )

    def solve(p: torch.Tensor) -> torch.Tensor:
        return dcem(
            lambda x: ((x - p) ** 2).sum(-1),
            torch.zeros(d, dtype=torch.float64),
            1.0,
            n_sample=100,
            n_elite=10,
            n_iter=10,
            tau=1.0,
            generator=torch.Generator().manual_seed(seed),
        ).x

    jac = torch.autograd.functional.jacobian(solve, p0)  # type: ignore[no-untyped-call]
    assert torch.linalg.matrix_norm(jac - torch.eye(d, dtype=torch.float64), ord=2) <= 0.25


@pytest.mark.spec("CEM-19")
@pytest.mark.parametrize(
    ("tau", "max_d", "max_cond", "batch", "misses"), [(None, 2, 1.0, 64, 3), (1.0, 4, 3.0, 8, 0)]
)
@given(seed=st.integers(0, 2**16), data=st.data())
def test_converges_on_batched_convex_quadratics(
    tau: float | None,
    max_d: int,
    max_cond: float,
    batch: int,
    misses: int,
    seed: int,
    data: st.DataObject,
) -> None:
    d = data.draw(st.integers(1, max_d))
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((batch, d, d)))
    eig = rng.uniform(1, max_cond, (batch, d))
    eig[:, 0], eig[:, -1] = 1.0, max_cond if d > 1 else 1.0
    size = rng.uniform(1, 10, (batch, 1))
    a = torch.from_numpy(size[..., None] * (q @ (eig[..., None] * np.swapaxes(q, -1, -2))))
    c = torch.from_numpy(rng.uniform(-1, 1, (batch, d)))

    def f(x: torch.Tensor) -> torch.Tensor:
        diff = x - c[:, None]
        return torch.einsum("bni,bij,bnj->bn", diff, a, diff)

    result = dcem(
        f,
        torch.zeros(batch, d, dtype=torch.float64),
        1.0,
        n_sample=100,
        n_elite=10,
        n_iter=30,
        tau=tau,
        generator=torch.Generator().manual_seed(seed),
    )
    missed = int(((result.mean - c).abs().amax(-1) > 1e-2).sum())
    assert missed < misses or missed == 0, f"{missed} of {batch} problems missed 1e-2"


# --------------------------------------------------------------------------
# Reproducibility, callback, errors, sync, dtypes (CEM-20 … CEM-24)


@pytest.mark.spec("CEM-20")
@given(config=configs(), seed=st.integers(0, 2**16))
def test_reproducible_with_a_seeded_generator(config: Config, seed: int) -> None:
    def go(s: int) -> DCEMResult:
        return dcem(
            config.objective.torch,
            torch.from_numpy(config.mean0),
            torch.from_numpy(config.std0),
            generator=torch.Generator().manual_seed(s),
            **config.kwargs(),
        )

    a, b = go(seed), go(seed)
    for name in ("x", "mean", "std", "best_x", "best_value", "n_iter", "converged"):
        # Bitwise, NaN included (CEM-12 allows none; a NaN would fail torch.equal).
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(run_impl(config).mean, run_impl(config).mean)


@pytest.mark.spec("CEM-20")
def test_generator_on_another_device_is_rejected() -> None:
    with pytest.raises(ValueError, match="generator"):
        dcem(lambda x: x.sum(-1), torch.zeros(2, device="meta"), 1.0, generator=torch.Generator())


@pytest.mark.spec("CEM-21")
def test_callback_sees_every_iteration_and_changes_nothing() -> None:
    recorder = Recorder()
    f = quadratic(torch.tensor([[0.5, 0.5, 0.5]] * 2))
    with_cb = dcem(
        f,
        torch.zeros(2, 3),
        1.0,
        n_sample=30,
        n_elite=5,
        n_iter=4,
        callback=recorder,
        generator=torch.Generator().manual_seed(0),
    )
    without = dcem(
        f,
        torch.zeros(2, 3),
        1.0,
        n_sample=30,
        n_elite=5,
        n_iter=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(with_cb.mean, without.mean)
    assert [s.iteration for s in recorder.steps] == [0, 1, 2, 3]
    for s in recorder.steps:
        assert (
            s.samples.shape == (2, 30, 3)
            and s.values.shape == (2, 30)
            and s.weights.shape == (2, 30)
        )
        assert s.mean.shape == (2, 3) and s.std.shape == (2, 3) and s.active.shape == (2,)
        assert torch.allclose(s.weights.sum(-1), torch.full((2,), 5.0))
    assert torch.equal(recorder.steps[-1].mean, with_cb.mean)


def _f(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(-1)


BAD_CALLS = [
    (dict(n_sample=10.0), TypeError, "n_sample"),
    (dict(n_elite=0), ValueError, "n_elite=0"),
    (dict(n_elite=100, n_sample=100), ValueError, "n_elite=100"),
    (dict(n_iter=0), ValueError, "n_iter"),
    (dict(n_iter=True), TypeError, "n_iter"),
    (dict(tau=-0.5), ValueError, "tau"),
    (dict(tau=math.nan), ValueError, "tau"),
    (dict(tau="hot"), TypeError, "tau"),
    (dict(std_min=-1.0), ValueError, "std_min"),
    (dict(tol=-1e-3), ValueError, "tol"),
    (dict(output="median"), ValueError, "output"),
    (dict(normalize=1), TypeError, "normalize"),
    (dict(lb=1.0, ub=0.0), ValueError, "lb < ub"),
    (dict(lb=torch.zeros(3)), ValueError, "lb"),
    (dict(ub=torch.ones(2, dtype=torch.int64)), TypeError, "ub"),
    (dict(lb=torch.full((2,), 1.0), ub=torch.zeros(2)), ValueError, "lb < ub"),
    (dict(noise=torch.zeros(3, 100, 2)), ValueError, "noise"),
    (dict(generator="seed"), TypeError, "generator"),
    (dict(smoothing=1.0), ValueError, "smoothing=1.0"),
    (dict(smoothing=-0.25), ValueError, "smoothing"),
    (dict(smoothing=math.nan), ValueError, "smoothing"),
    (dict(smoothing="0.5"), TypeError, "smoothing"),
    (dict(elite_temperature=0.0), ValueError, "elite_temperature"),
    (dict(elite_temperature=-1.0), ValueError, "elite_temperature"),
    (dict(elite_temperature=math.inf), ValueError, "elite_temperature"),
    (dict(elite_temperature="warm"), TypeError, "elite_temperature"),
    (dict(elite_temperature=0.5, tau=1.0), ValueError, "tau=1.0"),
]


@pytest.mark.spec("CEM-22")
@pytest.mark.parametrize(("kwargs", "error", "words"), BAD_CALLS)
def test_bad_options_raise_before_f_runs(
    kwargs: dict[str, object], error: type[Exception], words: str
) -> None:
    calls: list[int] = []

    def f(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return _f(x)

    with pytest.raises(error, match=words):
        dcem(f, torch.zeros(4, 2), 1.0, **kwargs)  # type: ignore[arg-type]
    assert not calls


BAD_INPUTS = [
    (lambda: dcem(_f, torch.zeros(2, dtype=torch.int64), 1.0), TypeError, "init_mean"),
    (lambda: dcem(_f, [0.0, 0.0], 1.0), TypeError, "init_mean"),  # type: ignore[arg-type]
    (lambda: dcem(_f, torch.zeros(2, 3, 4), 1.0), ValueError, "init_mean"),
    (lambda: dcem(_f, torch.zeros(2, 0), 1.0), ValueError, "init_mean"),
    (lambda: dcem(_f, torch.zeros(4, 2), torch.ones(3)), ValueError, "init_std"),
    (lambda: dcem(_f, torch.zeros(4, 2), -torch.ones(2)), ValueError, "init_std"),
    (lambda: dcem(_f, torch.full((4, 2), math.nan), 1.0), ValueError, "init_mean"),
    (
        lambda: dcem(lambda x: x, torch.zeros(4, 2), 1.0),
        ValueError,
        r"shape \(4, 100, 2\); expected \(4, 100\)",
    ),
    (
        lambda: dcem(lambda x: x.sum(-1).tolist(), torch.zeros(4, 2), 1.0),  # type: ignore[arg-type, return-value]
        TypeError,
        "torch.Tensor",
    ),
    (lambda: dcem(lambda x: x.sum(-1) > 0, torch.zeros(4, 2), 1.0), TypeError, "floating"),
    # f's values, a tensor operand or the noise on another device than init_mean
    (
        lambda: dcem(lambda x: x.sum(-1).to("meta"), torch.zeros(4, 2), 1.0),
        ValueError,
        "f returned values on meta, candidates are on cpu",
    ),
    (
        lambda: dcem(_f, torch.zeros(4, 2), torch.ones(2, device="meta")),
        ValueError,
        "init_std is on meta, init_mean on cpu",
    ),
    (
        lambda: dcem(_f, torch.zeros(4, 2), 1.0, ub=torch.ones(2, device="meta")),
        ValueError,
        "ub is on meta",
    ),
    (
        lambda: dcem(
            _f, torch.zeros(4, 2), 1.0, n_iter=3, noise=torch.zeros(3, 4, 100, 2, device="meta")
        ),
        ValueError,
        "noise is on meta, init_mean on cpu",
    ),
    # noise of the wrong shape, batched (T, B, N, d) and single (T, N, d)
    (
        lambda: dcem(_f, torch.zeros(4, 2), 1.0, n_iter=3, noise=torch.zeros(3, 4, 50, 2)),
        ValueError,
        r"noise has shape \(3, 4, 50, 2\), expected \(3, 4, 100, 2\)",
    ),
    (
        lambda: dcem(_f, torch.zeros(2), 1.0, n_iter=3, noise=torch.zeros(3, 50, 2)),
        ValueError,
        r"noise has shape \(3, 50, 2\), expected \(3, 100, 2\)",
    ),
]


@pytest.mark.spec("CEM-22")
@pytest.mark.parametrize(("call", "error", "words"), BAD_INPUTS)
def test_bad_inputs_raise_clear_errors(
    call: Callable[[], object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        call()


@pytest.mark.spec("CEM-22")
def test_value_checks_can_be_switched_off() -> None:
    result = dcem(_f, torch.zeros(4, 2), -torch.ones(2), validate=False, n_iter=1)
    assert torch.isfinite(result.mean).all()


@pytest.mark.spec("CEM-23")
@pytest.mark.parametrize("tau", [None, 1.0])
def test_one_batched_call_per_iteration_and_runs_on_meta(tau: float | None) -> None:
    calls: list[tuple[int, ...]] = []

    def f(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return (x * x).sum(-1)

    dcem(f, torch.zeros(64, 3), 1.0, n_iter=5, tau=tau)
    assert calls == [(64, 100, 3)] * 5
    meta = dcem(
        _f, torch.zeros(64, 3, device="meta", requires_grad=True), 1.0, n_iter=3, tau=tau, tol=1e-3
    )
    assert meta.x.shape == (64, 3) and meta.x.device.type == "meta"


@pytest.mark.spec("CEM-24")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("tau", [None, 1.0])
def test_dtypes(dtype: torch.dtype, tau: float | None) -> None:
    seen: list[torch.dtype] = []

    def f(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.dtype)
        return ((x - 0.25) ** 2).sum(-1)

    result = dcem(
        f,
        torch.zeros(3, 2, dtype=dtype),
        1.0,
        n_iter=6,
        tau=tau,
        generator=torch.Generator().manual_seed(0),
    )
    assert set(seen) == {dtype}
    for name in ("x", "mean", "std", "best_x", "best_value"):
        assert getattr(result, name).dtype == dtype
    assert (result.mean.float() - 0.25).abs().max() < 0.05
    assert DEFAULT_STD_MIN > 0


# --- Selection of all-finite values read on the host (CEM-43) ---


@st.composite
def finite_rows(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    n = draw(st.integers(2, 30))
    k = draw(st.integers(1, n - 1))
    batch = draw(st.integers(1, 3))
    scale = 10.0 ** draw(st.integers(-20, 30))
    pool = st.floats(-1e3, 1e3)
    rows = draw(st.lists(st.lists(pool, min_size=n, max_size=n), min_size=batch, max_size=batch))
    values = np.array(rows, dtype=np.float64) * scale
    if draw(st.booleans()):  # constant rows and ties
        values[0] = values[0, 0]
    return values, k


@pytest.mark.spec("CEM-43", "CEM-3", "CEM-5")
@given(rows=finite_rows(), tau=temperatures(-2.0, 1.0), normalize=st.booleans())
def test_selection_of_finite_values_matches_the_reference(
    rows: tuple[np.ndarray, int], tau: float, normalize: bool
) -> None:
    v, k = rows
    if not normalize:  # raw scores: keep them within LML-4's |x|/τ range
        v = v / max(1.0, float(np.abs(v).max()) / (1e3 * tau))
    values = torch.from_numpy(v)
    fast = soft_weights_of_finite_values(values, k, tau, normalize)
    masked = soft_weights(values, torch.isfinite(values), k, tau, normalize)
    assert fast.all_valid and not masked.all_valid and bool(fast.valid.all())
    for i, row in enumerate(v):
        expected = ref_cem.soft_weights(row, k, tau, normalize)
        np.testing.assert_allclose(fast.weights[i].numpy(), expected, atol=1e-12)
    torch.testing.assert_close(fast.weights, masked.weights, atol=1e-12, rtol=0)


@pytest.mark.spec("CEM-43", "CEM-3")
@given(power=st.integers(-30, 38), seed=st.integers(0, 2**16))
def test_selection_of_huge_or_tiny_finite_float32_values(power: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    raw = rng.uniform(-3.0, 3.0, (2, 9)).astype(np.float32) * np.float32(10.0**power)
    v = torch.from_numpy(raw)
    fast = soft_weights_of_finite_values(v, 3, 1.0, True).weights
    assert torch.isfinite(fast).all()
    expected = ref_cem.soft_weights(raw[0].astype(np.float64), 3, 1.0, True)
    np.testing.assert_allclose(fast[0].double().numpy(), expected, atol=1e-5)


@pytest.mark.spec("CEM-43", "CEM-17")
def test_selection_of_constant_finite_values_has_finite_gradients() -> None:
    v = torch.full((2, 5), 3.0, dtype=torch.float64, requires_grad=True)
    weights = soft_weights_of_finite_values(v, 2, 1.0, True).weights
    (grad,) = torch.autograd.grad((weights * torch.arange(5.0)).sum(), v)
    torch.testing.assert_close(weights, torch.full_like(weights, 0.4))
    assert torch.isfinite(grad).all()


@pytest.mark.spec("CEM-43", "CEM-12")
def test_the_soft_selector_reads_the_values_on_the_cpu_only_when_all_are_finite() -> None:
    selector = SoftTopK(3, 1.0, True)
    values = torch.randn(4, 12, dtype=torch.float64)
    ranked = torch.nan_to_num(values, nan=torch.inf, posinf=torch.inf, neginf=torch.inf)
    assert selector(values, ranked).all_valid
    values[1, 2] = math.nan
    ranked = torch.nan_to_num(values, nan=torch.inf, posinf=torch.inf, neginf=torch.inf)
    selection = selector(values, ranked)
    assert not selection.all_valid and selection.valid.tolist() == [True] * 4
    for i in range(4):
        expected = ref_cem.soft_weights(values[i].numpy(), 3, 1.0, True)
        np.testing.assert_allclose(selection.weights[i].numpy(), expected, atol=1e-12)
    # No read where values cannot be read: meta tensors and torch.func transforms.
    meta = torch.empty(2, 12, device="meta")
    assert not selector(meta, meta).all_valid
    seen: list[bool] = []

    def mapped(row: torch.Tensor) -> torch.Tensor:
        seen.append(reads_values_on_host(row))
        return row

    torch.func.vmap(mapped)(values)
    assert seen == [False] and reads_values_on_host(values)


@pytest.mark.spec("CEM-43", "CEM-12", "CEM-35")
def test_an_iteration_with_a_nan_value_takes_the_masked_path_and_holds_that_row() -> None:
    # Iteration 0 of row 1 sees a NaN: that row keeps μ₀ and σ₀ (CEM-12), the
    # others update, and the iterations after it (all finite) read on the host.
    calls = [0]

    def f(x: torch.Tensor) -> torch.Tensor:
        values = (x * x).sum(-1)
        if calls[0] == 0:
            values = values.clone()
            values[1, : values.shape[1] - 2] = math.nan  # 2 finite values < k: row invalid
        calls[0] += 1
        return values

    mean = torch.zeros(3, 2, dtype=torch.float64)
    steps: list[DCEMStep] = []
    dcem(f, mean, 1.0, n_sample=12, n_elite=3, n_iter=3, callback=steps.append,
         generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(steps[0].mean[1], mean[1]) and not torch.equal(steps[0].mean[0], mean[0])
    assert (steps[0].weights[1] == 0).all()
    assert not torch.equal(steps[1].mean[1], steps[0].mean[1])
