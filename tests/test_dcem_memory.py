"""Bounded backward memory (CEM-26, CEM-27) and work buffers (CEM-28) of impl.dcem."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from benchmarks.run import peak_memory
from impl.cem import solve
from impl.dcem import MATMUL_MIN_ELEMENTS, DCEMResult, dcem
from impl.options import CEMOptions

FIELDS = ("x", "mean", "std", "best_x", "best_value", "n_iter", "converged")


class Model(nn.Module):
    """A small per-candidate MLP plus a quadratic term: ``(B, N, d) → (B, N)``."""

    def __init__(self, d: int, hidden: int = 16, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.centre = nn.Parameter(torch.linspace(-0.5, 0.5, d))
        self.to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out.squeeze(-1) + ((x - self.centre) ** 2).sum(-1)


def run(
    model: Model,
    mean0: Tensor,
    std0: Tensor,
    n_iter: int,
    tau: float | None,
    **options: object,
) -> DCEMResult:
    return dcem(model, mean0, std0, n_sample=24, n_elite=5, n_iter=n_iter, tau=tau, **options)  # type: ignore[arg-type]


def gradients(
    model: Model, make: Callable[[Tensor, Tensor], DCEMResult]
) -> tuple[DCEMResult, list[Tensor | None]]:
    """Run, backpropagate ``Σ mean² + Σ std + Σ best_value``, return the gradients."""
    model.zero_grad(set_to_none=True)
    mean0 = torch.linspace(-1, 1, 3 * 4, dtype=torch.float64).reshape(3, 4).requires_grad_(True)
    std0 = torch.full((3, 4), 0.8, dtype=torch.float64, requires_grad=True)
    result = make(mean0, std0)
    loss = result.mean.square().sum() + result.std.sum() + result.best_value.sum()
    loss.backward()  # type: ignore[no-untyped-call]
    grads = [mean0.grad, std0.grad, *(p.grad for p in model.parameters())]
    return result, grads


def assert_same_results(a: DCEMResult, b: DCEMResult) -> None:
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def assert_close_grads(a: list[Tensor | None], b: list[Tensor | None], rtol: float) -> None:
    for ga, gb in zip(a, b, strict=True):
        assert ga is not None and gb is not None
        scale = 1 + float(gb.abs().max())  # the gradients here are float64
        torch.testing.assert_close(ga, gb, rtol=0, atol=rtol * scale)


# --------------------------------------------------------------------------
# CEM-26: checkpointing gives the same values and the exact gradient


@pytest.mark.spec("CEM-26")
@pytest.mark.parametrize("tau", [1.0, 0.3, None])
@pytest.mark.parametrize("source", ["generator", "noise", "global"])
def test_checkpoint_gives_the_plain_values_and_gradient(tau: float | None, source: str) -> None:
    model = Model(4)
    n_iter = 5
    noise = torch.randn(n_iter, 3, 24, 4, dtype=torch.float64, generator=torch.Generator())

    def make(checkpoint: bool) -> Callable[[Tensor, Tensor], DCEMResult]:
        def go(mean0: Tensor, std0: Tensor) -> DCEMResult:
            options: dict[str, object] = {"checkpoint": checkpoint, "lb": -1.2, "ub": 1.5}
            if source == "generator":
                options["generator"] = generator = torch.Generator().manual_seed(7)
            elif source == "noise":
                options["noise"] = noise
            else:
                torch.manual_seed(11)
            result = run(model, mean0, std0, n_iter, tau, **options)
            if source == "generator":  # the generator ends where the plain run leaves it
                states.append(generator.get_state())
            return result

        return go

    states: list[Tensor] = []
    plain, plain_grads = gradients(model, make(False))
    ckpt, ckpt_grads = gradients(model, make(True))
    assert_same_results(plain, ckpt)
    assert_close_grads(ckpt_grads, plain_grads, rtol=1e-6)
    if source == "generator":
        assert torch.equal(states[0], states[1])


@pytest.mark.spec("CEM-26")
def test_checkpoint_replays_global_randomness_inside_f() -> None:
    model = Model(3)

    def noisy(x: Tensor) -> Tensor:  # uses the global generator, like dropout would
        value: Tensor = model(x)
        return value + 0.01 * torch.randn(x.shape[:-1], dtype=x.dtype)

    def go(checkpoint: bool) -> tuple[Tensor, Tensor]:
        torch.manual_seed(5)
        centre = model.centre
        centre.grad = None
        result = dcem(noisy, torch.zeros(2, 3, dtype=torch.float64), 1.0, n_iter=4,
                      checkpoint=checkpoint)  # fmt: skip
        result.mean.sum().backward()  # type: ignore[no-untyped-call]
        assert centre.grad is not None
        return result.mean.detach(), centre.grad.clone()

    (mean_a, grad_a), (mean_b, grad_b) = go(False), go(True)
    assert torch.equal(mean_a, mean_b)
    torch.testing.assert_close(grad_b, grad_a, rtol=1e-6, atol=1e-9)


@pytest.mark.spec("CEM-26")
def test_checkpoint_option_is_checked_and_inert_without_autograd() -> None:
    with pytest.raises(TypeError, match="checkpoint"):
        dcem(lambda x: x.sum(-1), torch.zeros(2), 1.0, checkpoint=1)  # type: ignore[arg-type]
    f = Model(2)
    with torch.no_grad():
        a = dcem(f, torch.zeros(2, 2, dtype=torch.float64), 1.0, n_iter=3,
                 generator=torch.Generator().manual_seed(1))  # fmt: skip
        b = dcem(f, torch.zeros(2, 2, dtype=torch.float64), 1.0, n_iter=3, checkpoint=True,
                 generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert_same_results(a, b)


# --------------------------------------------------------------------------
# CEM-27: grad_iters = K differentiates the last K iterations only


@pytest.mark.spec("CEM-27")
@pytest.mark.parametrize("tau", [1.0, None])
@pytest.mark.parametrize("last", [1, 3])
def test_truncated_gradient_is_that_of_a_detached_restart(tau: float | None, last: int) -> None:
    model = Model(4)
    n_iter = 6
    noise = torch.randn(n_iter, 3, 24, 4, dtype=torch.float64, generator=torch.Generator())

    def truncated(mean0: Tensor, std0: Tensor) -> DCEMResult:
        return run(model, mean0, std0, n_iter, tau, noise=noise, grad_iters=last, ub=1.3)

    def restarted(mean0: Tensor, std0: Tensor) -> DCEMResult:
        with torch.no_grad():
            head = run(model, mean0, std0, n_iter - last, tau, noise=noise[: n_iter - last],
                       ub=1.3)  # fmt: skip
        tail = run(model, head.mean, head.std, last, tau, noise=noise[n_iter - last :], ub=1.3)
        # Keep the graph of mean0/std0 so that their gradients exist (zero).
        return DCEMResult(
            tail.x, tail.mean + 0 * mean0, tail.std + 0 * std0, tail.best_x,
            torch.zeros_like(tail.best_value), tail.n_iter, tail.converged,
        )  # fmt: skip

    def loss_of(result: DCEMResult) -> Tensor:
        return result.mean.square().sum() + result.std.sum()

    def grads(make: Callable[[Tensor, Tensor], DCEMResult]) -> tuple[DCEMResult, list[Tensor]]:
        model.zero_grad(set_to_none=True)
        mean0 = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
        std0 = torch.full((3, 4), 0.8, dtype=torch.float64, requires_grad=True)
        result = make(mean0, std0)
        inputs = [mean0, std0, *model.parameters()]
        loss = loss_of(result)
        # Hard selection with K = 1 leaves no path from the loss to any input.
        found = (
            torch.autograd.grad(loss, inputs, allow_unused=True)
            if loss.requires_grad
            else (None,) * len(inputs)
        )
        return result, [
            torch.zeros_like(t) if g is None else g for g, t in zip(found, inputs, strict=True)
        ]

    cut, cut_grads = grads(truncated)
    again, again_grads = grads(restarted)
    torch.testing.assert_close(cut.mean, again.mean, rtol=1e-12, atol=1e-12)
    for a, b in zip(cut_grads, again_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert not cut_grads[0].any() and not cut_grads[1].any()  # no gradient to μ_0, σ_0


@pytest.mark.spec("CEM-27")
def test_truncation_keeps_the_values_and_k_at_least_t_is_plain() -> None:
    model = Model(4)

    def make(**options: object) -> Callable[[Tensor, Tensor], DCEMResult]:
        return lambda m, s: run(model, m, s, 4, 1.0, generator=torch.Generator().manual_seed(3),
                                **options)  # fmt: skip

    plain, plain_grads = gradients(model, make())
    cut, _ = gradients(model, make(grad_iters=2))
    assert_same_results(plain, cut)
    full, full_grads = gradients(model, make(grad_iters=4))
    assert_same_results(plain, full)
    assert_close_grads(full_grads, plain_grads, rtol=0)
    for bad, error in ((0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="grad_iters"):
            dcem(model, torch.zeros(4, dtype=torch.float64), 1.0, grad_iters=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Memory: both options bound what the backward pass holds


@pytest.mark.spec("CEM-26", "CEM-27")
def test_bounded_modes_use_less_memory() -> None:
    torch.manual_seed(0)
    d, n_iter = 8, 20
    model = Model(d, hidden=64, dtype=torch.float32)

    def backward_pass(**options: object) -> Callable[[], object]:
        def go() -> object:
            mean0 = torch.zeros(16, d, requires_grad=True)
            result = dcem(model, mean0, 1.0, n_sample=64, n_elite=8, n_iter=n_iter,
                          generator=torch.Generator().manual_seed(0), **options)  # type: ignore[arg-type]  # fmt: skip
            result.mean.sum().backward()  # type: ignore[no-untyped-call]
            return None

        return go

    plain = peak_memory(backward_pass(), torch.device("cpu"))
    checkpointed = peak_memory(backward_pass(checkpoint=True), torch.device("cpu"))
    truncated = peak_memory(backward_pass(grad_iters=2), torch.device("cpu"))
    assert checkpointed < plain / 4, (checkpointed, plain)
    assert truncated < plain / 4, (truncated, plain)


# --------------------------------------------------------------------------
# CEM-28: work buffers change no result


@pytest.mark.spec("CEM-28", "CEM-6")
@pytest.mark.parametrize("batch", [3, 64])  # below and above MATMUL_MIN_ELEMENTS
@pytest.mark.parametrize("tau", [1.0, None])
def test_buffers_change_no_result(batch: int, tau: float | None) -> None:
    d, n = 6, 100
    assert (batch * n * d >= MATMUL_MIN_ELEMENTS) == (batch == 64)
    centre = torch.linspace(-1, 1, batch * d).reshape(batch, 1, d)
    inputs: list[Tensor] = []

    def f(x: Tensor) -> Tensor:
        inputs.append(x)
        return ((x - centre) ** 2).sum(-1)

    def go(mode: str) -> DCEMResult:
        inputs.clear()
        mean0 = torch.zeros(batch, d, requires_grad=mode == "graph")
        options = CEMOptions(
            n_sample=n, n_elite=10, n_iter=4, tau=tau, reuse_buffers=mode != "plain"
        )
        kwargs: dict[str, object] = {
            "lb": -1.5, "ub": 1.5, "generator": torch.Generator().manual_seed(2),
        }  # fmt: skip
        if mode == "no_grad":
            with torch.no_grad():
                return solve(f, mean0, 0.9, options, **kwargs)  # type: ignore[arg-type]
        return solve(f, mean0, 0.9, options, **kwargs)  # type: ignore[arg-type]

    reference = go("plain")  # buffer reuse off (the default): f sees fresh tensors
    assert len({x.data_ptr() for x in inputs}) == 4
    for mode in ("no_grad", "graph", "reuse"):
        result = go(mode)
        # With reuse on and no graph, f sees the same buffer every iteration.
        assert len({x.data_ptr() for x in inputs}) == (4 if mode == "graph" else 1), mode
        for name in FIELDS:
            assert torch.equal(getattr(result, name).detach(), getattr(reference, name)), (
                mode,
                name,
            )


@pytest.mark.spec("CEM-28", "CEM-17")
def test_gradients_to_f_are_right_when_the_first_iteration_used_buffers() -> None:
    # μ_0 requires no grad, so iteration 0 writes into the buffers; f's
    # parameters require grad, so the graph then holds them and the solve
    # must stop reusing them (a reuse would fail the backward pass or corrupt it).
    batch, d = 64, 6
    centre = torch.zeros(batch, 1, d, requires_grad=True)

    def f(x: Tensor) -> Tensor:
        return ((x - centre) ** 2).sum(-1)

    def go(reuse: bool) -> Tensor:
        centre.grad = None
        result = solve(f, torch.full((batch, d), 0.5), 1.0,
                       CEMOptions(n_iter=4, reuse_buffers=reuse),
                       generator=torch.Generator().manual_seed(4))  # fmt: skip
        result.mean.square().sum().backward()  # type: ignore[no-untyped-call]
        assert centre.grad is not None
        return centre.grad.clone()

    torch.testing.assert_close(go(True), go(False), rtol=0, atol=0)


@pytest.mark.spec("CEM-28", "CEM-22")
def test_buffer_reuse_is_opt_in_and_refuses_invalid_combinations() -> None:
    assert CEMOptions().reuse_buffers is False
    assert "reuse_buffers" not in CEMOptions().as_kwargs()  # dcem keeps its signature
    with pytest.raises(ValueError, match="checkpoint"):
        CEMOptions(reuse_buffers=True, checkpoint=True)
    with pytest.raises(TypeError, match="reuse_buffers"):
        CEMOptions(reuse_buffers=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="callback"):
        solve(lambda x: x.sum(-1), torch.zeros(2), 1.0, CEMOptions(reuse_buffers=True),
              callback=lambda step: None)  # fmt: skip
