"""A short, real DCEM demo: ``python -m validation.demo``.

Part 1 solves a batch of shifted 10-D Rastrigin functions (thousands of local
minima) with random search, CEM and DCEM on the same budget of evaluations.
Part 2 learns an objective end to end through DCEM: ``f_W(x; c) =
‖x − W c‖² + ripple(x)`` has parameters ``W`` that are trained by gradient
descent so that DCEM's solution for context ``c`` matches a target ``M c``;
the gradient flows through every DCEM iteration (CEM-17). The script exits
non-zero if CEM or DCEM fails to beat random search or the training loss does
not fall fivefold.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from impl.dcem import dcem

RASTRIGIN_AMPLITUDE = 10.0
"""The standard Rastrigin amplitude ``A`` in ``A d + Σ (x² − A cos 2πx)``."""

RIPPLE = 0.5
"""Amplitude of the cosine ripple that gives the learned objective local minima."""


@dataclass(frozen=True)
class DemoSettings:
    batch: int
    dim: int
    n_sample: int
    n_elite: int
    n_iter: int
    train_steps: int


FULL = DemoSettings(batch=256, dim=10, n_sample=200, n_elite=20, n_iter=30, train_steps=200)
QUICK = DemoSettings(batch=32, dim=4, n_sample=100, n_elite=10, n_iter=15, train_steps=60)

LEARN_BATCH = 128
"""Contexts per training step of part 2."""

LEARN_ITERATIONS = 20
"""DCEM iterations inside each training step of part 2."""

REQUIRED_LOSS_DROP = 5.0
"""Part 2 passes when the training loss falls at least this many times."""


def optimize(settings: DemoSettings, seed: int) -> dict[str, float]:
    """Part 1: median final value of random search, CEM and DCEM."""
    gen = torch.Generator().manual_seed(seed)
    shift = torch.rand(settings.batch, settings.dim, generator=gen) * 4 - 2

    def f(x: Tensor) -> Tensor:
        """Shifted Rastrigin, minimum 0 at ``shift (B, d)``; maps ``(B, N, d)`` → ``(B, N)``."""
        z = x - shift.unsqueeze(1)
        return (z * z - RASTRIGIN_AMPLITUDE * torch.cos(2 * math.pi * z)).sum(-1) + (
            RASTRIGIN_AMPLITUDE * z.shape[-1]
        )

    init = torch.zeros(settings.batch, settings.dim)
    budget = settings.n_sample * settings.n_iter
    samples = torch.randn(settings.batch, budget, settings.dim, generator=gen) * 3.0
    results = {"random search": float(f(samples).amin(-1).median())}
    for name, tau in (("CEM", None), ("DCEM (tau=0.1)", 0.1), ("DCEM (tau=1)", 1.0)):
        out = dcem(
            f,
            init,
            3.0,
            n_sample=settings.n_sample,
            n_elite=settings.n_elite,
            n_iter=settings.n_iter,
            tau=tau,
            output="best",
            generator=gen,
        )
        results[name] = float(out.best_value.median())
    return results


def learn(settings: DemoSettings, seed: int) -> tuple[float, float]:
    """Part 2: train ``W`` through DCEM; returns the first and last losses."""
    gen = torch.Generator().manual_seed(seed)
    target_map = torch.randn(settings.dim, settings.dim, generator=gen) * 0.5
    weights = torch.zeros(settings.dim, settings.dim, requires_grad=True)
    optimizer = torch.optim.Adam([weights], lr=0.05)
    losses = []
    for _ in range(settings.train_steps):
        context = torch.randn(min(settings.batch, LEARN_BATCH), settings.dim, generator=gen)
        centre = context @ weights.T

        def f(x: Tensor, centre: Tensor = centre) -> Tensor:
            z = x - centre.unsqueeze(1)
            return (z * z).sum(-1) + RIPPLE * (1 - torch.cos(2 * math.pi * x)).sum(-1)

        solution = dcem(
            f,
            torch.zeros_like(context),
            1.0,
            n_sample=settings.n_sample,
            n_elite=settings.n_elite,
            n_iter=LEARN_ITERATIONS,
            tau=1.0,
            generator=gen,
        ).x
        loss = ((solution - context @ target_map.T) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(float(loss.detach()))
    window = max(1, len(losses) // 10)
    return sum(losses[:window]) / window, sum(losses[-window:]) / window


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    start = time.perf_counter()
    values = optimize(settings, args.seed)
    print(
        f"Part 1: {settings.batch} shifted {settings.dim}-D Rastrigin problems, "
        f"{settings.n_sample * settings.n_iter} evaluations each; median best value (optimum 0)"
    )
    for name, value in values.items():
        print(f"  {name:14} {value:9.3f}")
    first, last = learn(settings, args.seed)
    print(f"Part 2: learning f_W end to end through DCEM ({settings.train_steps} Adam steps)")
    print(f"  loss {first:.4f} -> {last:.4f} ({first / last:.1f}x lower)")
    print(f"done in {time.perf_counter() - start:.1f} s")
    beaten = all(
        values[name] < values["random search"] for name in values if name != "random search"
    )
    learned = last * REQUIRED_LOSS_DROP <= first
    if not (beaten and learned):
        print(
            f"FAILED: a method did not beat random search, or the loss fell less than "
            f"{REQUIRED_LOSS_DROP:g}x"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
