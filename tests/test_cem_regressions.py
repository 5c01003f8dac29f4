"""Regression tests for the defects of issue 11, each of which failed on main.

- tensor ``lb``/``ub``/``noise`` that require grad crashed the default path
  (``clamp()``/``addcmul()`` with ``out=`` under autograd);
- float64 ``noise`` with a float32 ``init_mean`` gave different means on the
  default path and the callback path;
- ``std_min=0`` with collapsed elites gave NaN gradients.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from impl.dcem import DCEMResult, dcem

FIELDS = ("x", "mean", "std", "best_x", "best_value", "n_iter", "converged")


def _quadratic(x: Tensor) -> Tensor:
    return ((x - 0.3) ** 2).sum(-1)


@pytest.mark.spec("CEM-10", "CEM-17")
@pytest.mark.parametrize("which", ["lb", "ub", "both"])
def test_tensor_bounds_that_require_grad(which: str) -> None:
    lower = torch.full((2,), -0.5, dtype=torch.float64, requires_grad=True)
    upper = torch.full((2,), 0.2, dtype=torch.float64, requires_grad=True)
    bounds = {
        "lb": {"lb": lower},
        "ub": {"ub": upper},
        "both": {"lb": lower, "ub": upper},
    }[which]
    mean0 = torch.zeros(3, 2, dtype=torch.float64)
    kwargs: dict[str, object] = {"n_iter": 4, "tau": 1.0, **bounds}
    result = dcem(_quadratic, mean0, 1.0, generator=torch.Generator().manual_seed(0), **kwargs)  # type: ignore[arg-type]
    plain = dcem(
        _quadratic,
        mean0,
        1.0,
        generator=torch.Generator().manual_seed(0),
        **{key: value.detach() if isinstance(value, Tensor) else value
           for key, value in kwargs.items()},  # type: ignore[arg-type]
    )  # fmt: skip
    for name in FIELDS:
        assert torch.equal(getattr(result, name).detach(), getattr(plain, name)), name
    given = list(bounds.values())
    grads = torch.autograd.grad(result.mean.sum(), given)
    assert all(torch.isfinite(g).all() for g in grads)
    # The optimum 0.3 lies above ub = 0.2: the mean is pulled to the upper bound,
    # so it moves with it.
    if which != "lb":
        assert float(grads[-1].sum()) > 0


@pytest.mark.spec("CEM-2", "CEM-17")
def test_noise_that_requires_grad() -> None:
    noise = torch.randn(3, 2, 40, 2, dtype=torch.float64, generator=torch.Generator())
    leaf = noise.clone().requires_grad_(True)
    mean0 = torch.zeros(2, 2, dtype=torch.float64)
    result = dcem(_quadratic, mean0, 1.0, n_sample=40, n_elite=5, n_iter=3, noise=leaf)
    plain = dcem(_quadratic, mean0, 1.0, n_sample=40, n_elite=5, n_iter=3, noise=noise)
    for name in FIELDS:
        assert torch.equal(getattr(result, name).detach(), getattr(plain, name)), name
    (grad,) = torch.autograd.grad(result.mean.sum(), leaf)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.spec("CEM-24", "CEM-2")
@pytest.mark.parametrize("tau", [None, 1.0])
@pytest.mark.parametrize(("state", "noise_dtype"), [(torch.float32, torch.float64),
                                                     (torch.float64, torch.float32)])  # fmt: skip
def test_noise_of_another_dtype_is_cast_to_the_state_on_every_path(
    tau: float | None, state: torch.dtype, noise_dtype: torch.dtype
) -> None:
    noise = torch.randn(4, 2, 50, 3, dtype=noise_dtype, generator=torch.Generator().manual_seed(1))
    mean0 = torch.zeros(2, 3, dtype=state)

    def go(noise: Tensor, **options: object) -> DCEMResult:
        return dcem(_quadratic, mean0, 1.0, n_sample=50, n_elite=5, n_iter=4, tau=tau,
                    noise=noise, **options)  # type: ignore[arg-type]  # fmt: skip

    cast = go(noise.to(state))
    for result in (go(noise), go(noise, callback=lambda step: None)):
        for name in FIELDS:
            assert torch.equal(getattr(result, name), getattr(cast, name)), name
    graph = dcem(_quadratic, mean0.clone().requires_grad_(True), 1.0, n_sample=50, n_elite=5,
                 n_iter=4, tau=tau, noise=noise)  # fmt: skip
    for name in FIELDS:
        assert torch.equal(getattr(graph, name).detach(), getattr(cast, name)), name


@pytest.mark.spec("CEM-11", "CEM-17")
@pytest.mark.parametrize("tau", [None, 1.0])
def test_zero_floor_with_collapsed_samples_has_finite_exact_gradients(tau: float | None) -> None:
    # σ₀ = 0: every sample is μ₀, so every mean is μ₀ (∂μ_T/∂μ₀ = 1) and every
    # spread is 0; the square root at 0 takes the subgradient 0 (CEM-11).
    mean0 = torch.tensor([[0.1, -0.4], [0.7, 0.2]], dtype=torch.float64, requires_grad=True)
    std0 = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    result = dcem(_quadratic, mean0, std0, n_iter=3, tau=tau, std_min=0.0,
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(result.mean, mean0, rtol=1e-14, atol=0)  # (1/k) Σ of k copies
    # 0 up to the rounding of μ = Σ_i (I_i/k) μ₀ (soft weights sum to k within rounding)
    rounding = 64 * torch.finfo(torch.float64).eps * float(mean0.detach().abs().max())
    assert float(result.std.detach().max()) <= rounding
    g_mean, g_std = torch.autograd.grad(result.mean.sum() + result.std.sum(), (mean0, std0))
    torch.testing.assert_close(g_mean, torch.ones_like(g_mean), rtol=1e-14, atol=0)
    assert torch.isfinite(g_std).all()


@pytest.mark.spec("CEM-11", "CEM-17")
def test_zero_floor_with_one_elite_has_finite_exact_gradients() -> None:
    # k = 1, hard: μ₁ = μ₀ + σ₀ ε₀[i*] for the best sample i*, σ₁ = 0, and then
    # every later sample is μ₁. So ∂μ_T/∂μ₀ = 1 and ∂μ_T/∂σ₀ = ε₀[i*].
    noise = torch.randn(
        3, 1, 30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    mean0 = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    std0 = torch.ones(1, 2, dtype=torch.float64, requires_grad=True)
    result = dcem(_quadratic, mean0, std0, n_sample=30, n_elite=1, n_iter=3, tau=None,
                  std_min=0.0, noise=noise)  # fmt: skip
    best = int(_quadratic(noise[0, 0]).argmin())
    assert torch.equal(result.mean.detach(), noise[0, 0, best].unsqueeze(0))
    g_mean, g_std = torch.autograd.grad(result.mean.sum() + result.std.sum(), (mean0, std0))
    assert torch.equal(g_mean, torch.ones_like(g_mean))
    torch.testing.assert_close(g_std, noise[0, 0, best].unsqueeze(0), rtol=0, atol=1e-15)
