"""The peers' recipes as options of the solver, against ``reference.cem`` (CEM-37 … CEM-42).

Truncated and variance-constrained sampling (mbrl-lib, PETS), the σ cap
(TD-MPC2), kept elites, population decay and the mean candidate (iCEM), and
the executed action drawn from the final distribution (TD-MPC2). One
Hypothesis property runs every combination on the same noise as the float64
oracle, with and without a callback, a graph, initial elites, proposals and
``tol``; the focused tests check what the oracle cannot (laws, gradients,
errors).
"""

from __future__ import annotations

import importlib
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import truncnorm
from torch import Tensor

from impl.cem import DCEMStep, solve
from impl.cem.samplers import TRUNCATION, Box, GaussianSampler, truncate_noise
from impl.options import CEMOptions
from tests.oracle import reference_run

ref_cem = importlib.import_module("reference.cem")

SAMPLINGS = ("clip", "truncated", "variance_constrained")


def f_torch(x: Tensor) -> Tensor:
    """A smooth multimodal objective ``(B, M, d) → (B, M)``."""
    return ((x - 0.3) ** 2).sum(-1) + 0.5 * torch.cos(3.0 * x).sum(-1)


def f_numpy(x: np.ndarray) -> np.ndarray:
    return np.asarray(((x - 0.3) ** 2).sum(-1) + 0.5 * np.cos(3.0 * x).sum(-1))


@st.composite
def recipes(draw: st.DrawFn) -> CEMOptions:
    n = draw(st.integers(6, 30))
    k = draw(st.integers(1, n // 2))
    std_min = draw(st.sampled_from([0.0, 1e-3]))
    tau = draw(st.sampled_from([None, 0.5]))
    return CEMOptions(
        n_sample=n,
        n_elite=k,
        n_iter=draw(st.integers(1, 4)),
        tau=tau,
        std_min=std_min,
        tol=draw(st.sampled_from([None, 1e-2])),
        output=draw(st.sampled_from(["mean", "best", "sample"])),
        smoothing=draw(st.sampled_from([0.0, 0.2])),
        sampling=draw(st.sampled_from(SAMPLINGS)),
        std_max=draw(st.sampled_from([None, 0.4, 5.0])),
        keep_elites=draw(st.sampled_from([0.0, 0.3, 1.0])),
        population_decay=draw(st.sampled_from([1.0, 1.3, 3.0])),
        mean_candidate=draw(st.booleans()),
    )


@pytest.mark.spec("CEM-37", "CEM-38", "CEM-39", "CEM-40", "CEM-41", "CEM-42", "CEM-25")
@settings(max_examples=60, deadline=None)
@given(
    options=recipes(),
    batch=st.integers(1, 3),
    d=st.integers(1, 4),
    n_elites0=st.sampled_from([0, 1, 3]),
    n_proposals=st.sampled_from([0, 2]),
    path=st.sampled_from(["plain", "callback", "graph"]),
    seed=st.integers(0, 2**16),
)
def test_recipes_agree_with_the_reference(
    options: CEMOptions,
    batch: int,
    d: int,
    n_elites0: int,
    n_proposals: int,
    path: str,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    mean0 = rng.uniform(-1.5, 1.5, (batch, d))
    std0 = rng.uniform(0.2, 2.0, (batch, d))
    lb, ub = -2.0, 2.5
    noise = rng.standard_normal((options.n_iter, batch, options.n_sample, d))
    elites0 = rng.uniform(-3, 3, (batch, n_elites0, d)) if n_elites0 else None
    proposals = rng.uniform(-3, 3, (batch, n_proposals, d)) if n_proposals else None
    generator = torch.Generator().manual_seed(seed)
    # The executed sample (CEM-42) is the generator's next (B, 1, d) draw.
    sample_noise = torch.randn(
        (batch, 1, d), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    seen: list[DCEMStep] = []
    init = torch.from_numpy(mean0).requires_grad_(path == "graph")
    with torch.set_grad_enabled(path == "graph"):
        result = solve(
            f_torch,
            init,
            torch.from_numpy(std0),
            options,
            lb=lb,
            ub=ub,
            noise=torch.from_numpy(noise),
            generator=generator,
            proposals=None if proposals is None else torch.from_numpy(proposals),
            elites=None if elites0 is None else torch.from_numpy(elites0),
            callback=seen.append if path == "callback" else None,
        )
    if path == "graph" and result.x.requires_grad:
        (grad,) = torch.autograd.grad(result.x.sum(), init)
        assert torch.isfinite(grad).all()
    assert not isinstance(options.tau, Tensor)  # recipes() draws None or 0.5
    for b in range(batch):
        trace = reference_run(
            f_numpy, options, b, mean0, std0, noise, tau=options.tau, lb=lb, ub=ub,
            proposals=proposals, elites=elites0, sample_noise=sample_noise[:, 0].numpy(),
        )  # fmt: skip
        np.testing.assert_allclose(result.mean[b].detach().numpy(), trace.mean, 1e-9, 1e-9)
        np.testing.assert_allclose(result.std[b].detach().numpy(), trace.std, 1e-9, 1e-9)
        assert math.isclose(result.best_value[b].item(), trace.best_value, rel_tol=1e-9)
        assert int(result.n_iter[b]) == trace.n_iter
        assert result.elites is not None
        np.testing.assert_allclose(result.elites[b].detach().numpy(), trace.kept, 1e-9, 1e-9)
        point = {"mean": trace.mean, "best": trace.best_x, "sample": trace.sample}[options.output]
        np.testing.assert_allclose(result.x[b].detach().numpy(), point, 1e-9, 1e-9)
        if options.std_max is not None:
            assert (result.std <= options.std_max).all()
    if path == "callback":
        assert len(seen) == options.n_iter
        for step in seen:  # N_t Gaussian candidates, then proposals, kept elites, mean
            n_t = ref_cem.population(
                options.n_sample, options.n_elite, options.population_decay, step.iteration
            )
            kept = options.n_kept if step.iteration else n_elites0
            last = options.mean_candidate and step.iteration == options.n_iter - 1
            assert step.samples.shape[1] == n_t + n_proposals + kept + int(last)


@pytest.mark.spec("CEM-37")
def test_truncated_noise_is_the_truncated_normal_and_differentiable() -> None:
    eps = torch.linspace(-9.0, 9.0, 2001, dtype=torch.float64)
    mapped = truncate_noise(eps)
    assert mapped.abs().max() <= TRUNCATION
    assert (mapped.diff() >= 0).all()  # monotone: the truncation keeps the noise's order
    assert (mapped[eps.abs() < 5].diff() > 0).all()
    expected = truncnorm.ppf(np.asarray(torch.special.ndtr(eps)), -TRUNCATION, TRUNCATION)
    np.testing.assert_allclose(mapped.numpy(), expected, rtol=1e-10, atol=1e-12)
    draws = truncate_noise(torch.randn(400_000, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64))  # fmt: skip
    law = truncnorm(-TRUNCATION, TRUNCATION)
    assert abs(draws.var().item() - law.var()) < 5e-3
    assert torch.autograd.gradcheck(truncate_noise, eps[::50].clone().requires_grad_())


@pytest.mark.spec("CEM-37")
@pytest.mark.parametrize("sampling", ["truncated", "variance_constrained"])
def test_truncated_samples_are_reparameterized_in_mean_std_and_bounds(sampling: str) -> None:
    gen = torch.Generator().manual_seed(3)
    mean = torch.tensor([[0.2, -0.7]], dtype=torch.float64, requires_grad=True)
    std = torch.tensor([[0.5, 2.0]], dtype=torch.float64, requires_grad=True)
    lower = torch.tensor([[-1.0, -1.5]], dtype=torch.float64, requires_grad=True)
    upper = torch.tensor([[1.0, 3.0]], dtype=torch.float64, requires_grad=True)
    eps = torch.randn((1, 7, 2), generator=gen, dtype=torch.float64)
    sampler = GaussianSampler(sampling)  # type: ignore[arg-type]

    def samples(m: Tensor, s: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        return sampler(m, s, eps, Box(lo, hi))

    assert torch.autograd.gradcheck(samples, (mean, std, lower, upper))
    x = samples(mean, std, lower, upper)
    if sampling == "variance_constrained":  # inside the box without clipping
        raw = mean.unsqueeze(1) + sampler.effective_std(mean, std, Box(lower, upper)).unsqueeze(
            1
        ) * truncate_noise(eps)
        torch.testing.assert_close(x, raw, rtol=1e-15, atol=1e-15)  # clipping moved nothing
        assert (raw >= lower.unsqueeze(1)).all() and (raw <= upper.unsqueeze(1)).all()
        room = torch.minimum(mean - lower, upper - mean) / TRUNCATION
        assert torch.equal(
            sampler.effective_std(mean, std, Box(lower, upper)), torch.minimum(std, room)
        )


@pytest.mark.spec("CEM-37")
def test_clip_sampling_is_the_default_bit_for_bit() -> None:
    noise = torch.randn(3, 2, 20, 3, generator=torch.Generator().manual_seed(1))
    mean0 = torch.zeros(2, 3)
    plain = solve(f_torch, mean0, 1.5, CEMOptions(n_sample=20, n_elite=4, n_iter=3, tau=None),
                  lb=-1.0, ub=1.0, noise=noise)  # fmt: skip
    clip = solve(f_torch, mean0, 1.5,
                 CEMOptions(n_sample=20, n_elite=4, n_iter=3, tau=None, sampling="clip"),
                 lb=-1.0, ub=1.0, noise=noise)  # fmt: skip
    assert torch.equal(plain.x, clip.x) and torch.equal(plain.std, clip.std)


@pytest.mark.spec("CEM-39")
def test_kept_elites_are_the_lowest_candidates_in_order() -> None:
    seen: list[DCEMStep] = []
    options = CEMOptions(n_sample=30, n_elite=10, n_iter=3, tau=None, keep_elites=0.5)
    result = solve(f_torch, torch.zeros(2, 3), 1.0, options, callback=seen.append,
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    last = seen[-1]
    order = last.values.argsort(-1)[:, :5]
    expected = last.samples.gather(1, order.unsqueeze(-1).expand(-1, -1, 3))
    assert result.elites is not None and torch.equal(result.elites, expected)
    # the kept elites of iteration t are the last five candidates of iteration t + 1
    for before, after in itertools.pairwise(seen):
        keep = before.samples.gather(
            1, before.values.argsort(-1)[:, :5].unsqueeze(-1).expand(-1, -1, 3)
        )
        assert torch.equal(after.samples[:, -5:], keep)


@pytest.mark.spec("CEM-40")
def test_population_schedule() -> None:
    options = CEMOptions(n_sample=100, n_elite=10, n_iter=8, population_decay=1.5)
    sizes = [options.population(t) for t in range(8)]
    assert sizes == [100, 66, 44, 29, 20, 20, 20, 20]
    assert sizes == [ref_cem.population(100, 10, 1.5, t) for t in range(8)]
    assert CEMOptions(n_sample=15, n_elite=10).replace(population_decay=9.0).population(3) == 15


@pytest.mark.spec("CEM-22", "CEM-37", "CEM-38", "CEM-39", "CEM-40", "CEM-41", "CEM-42")
@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"sampling": "trunc"}, ValueError, "sampling"),
        ({"std_max": 0.0}, ValueError, "std_max"),
        ({"std_max": 1e-7}, ValueError, "std_max must be >= std_min"),
        ({"std_max": math.inf}, ValueError, "std_max"),
        ({"std_max": "1"}, TypeError, "std_max"),
        ({"keep_elites": 1.5}, ValueError, "keep_elites"),
        ({"keep_elites": -0.1}, ValueError, "keep_elites"),
        ({"population_decay": 0.9}, ValueError, "population_decay"),
        ({"population_decay": math.nan}, ValueError, "population_decay"),
        ({"mean_candidate": 1}, TypeError, "mean_candidate"),
        ({"output": "median"}, ValueError, "output"),
    ],
)
def test_bad_recipe_options_are_named(changes: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        CEMOptions(**changes)  # type: ignore[arg-type]


@pytest.mark.spec("CEM-22", "CEM-39")
def test_bad_initial_elites_are_named() -> None:
    with pytest.raises(ValueError, match="elites has shape"):
        solve(f_torch, torch.zeros(2, 3), 1.0, CEMOptions(tau=None), elites=torch.zeros(2, 4, 2))


@pytest.mark.spec("CEM-37", "CEM-28")
@pytest.mark.parametrize("sampling", ["truncated", "variance_constrained"])
def test_truncation_in_the_noise_buffer_is_the_truncation_of_the_same_draws(
    sampling: str,
) -> None:
    """Without a graph the white noise lives in a work buffer that the truncation
    overwrites in place; the result is that of the same draws passed as noise."""
    options = CEMOptions(n_sample=40, n_elite=5, n_iter=3, tau=None, sampling=sampling)  # type: ignore[arg-type]
    source = torch.Generator().manual_seed(9)
    drawn = torch.stack([torch.randn((2, 40, 3), generator=source) for _ in range(3)])
    with torch.no_grad():
        buffered = solve(f_torch, torch.zeros(2, 3), 1.5, options, lb=-1.0, ub=2.0,
                         generator=torch.Generator().manual_seed(9))  # fmt: skip
        given = solve(f_torch, torch.zeros(2, 3), 1.5, options, lb=-1.0, ub=2.0, noise=drawn)
    assert torch.equal(buffered.mean, given.mean) and torch.equal(buffered.std, given.std)
    again = torch.Generator().manual_seed(9)  # the caller's noise was not truncated in place
    assert torch.equal(
        drawn, torch.stack([torch.randn((2, 40, 3), generator=again) for _ in "abc"])
    )
