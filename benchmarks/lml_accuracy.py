"""Accuracy and step counts of ``impl.lml`` on adversarial rows.

Run: ``python -m benchmarks.lml_accuracy [--rows N] [--seeds S ...] [--out FILE]``.

The measurement behind ``impl.lml.MAX_STEPS`` and ``FAST_STEPS`` and the
accuracy quoted in the README. Each row is drawn from one of six families chosen to break a
threshold solver, at a random ``n``, ``k`` and ``τ``:

- ``gaussian``: N(0, 1) scores;
- ``wide``: N(0, 1) times a random power of ten in [1e-3, 1e3];
- ``clusters``: three centres with tiny spread (near-ties at every scale);
- ``ties``: rounded N(0, 9) scores (exact ties);
- ``cauchy``: heavy tails;
- ``ramp``: sorted scores stretched by a factor growing to 1e3 along the row.

``τ`` is log-uniform in [1e-3, 1e2], raised where needed to keep
``max|x|/τ ≤ 1e4`` (the domain of LML-4). For each row and dtype the script
records the error of ``lml`` against the float64 bisection reference (a row
alone takes the single-row fast path, LML-24, and the guarded solver for
what it does not accept), whether the single-row path accepted the row
(``single_row_rows``), whether the batched fast path (LML-23) accepts it
(``fast_path_rows``) and the worst error of the rows it accepts
(``reduction_worst``: its sums are reductions), and the number of guarded
solver steps after which the row had stopped (the least ``s`` for which the
full ``s``-step schedule already gives the bits of the default schedule;
LML-19).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from impl.lml import (
    FAST_STEPS,
    MAX_STEPS,
    STEP_TOLERANCE,
    lml,
    newton_from_midpoint,
    newton_single_row,
    solve_lml,
)
from reference.lml import lml_bisect

T = TypeVar("T")
Family = Callable[[np.random.Generator, int], np.ndarray]

FAMILIES: dict[str, Family] = {
    "gaussian": lambda rng, n: rng.normal(size=n),
    "wide": lambda rng, n: rng.normal(size=n) * 10 ** rng.uniform(-3, 3),
    "clusters": lambda rng, n: (
        (rng.normal(size=3) * 10 ** rng.uniform(-2, 2))[rng.integers(0, 3, n)]
        + rng.normal(size=n) * 10 ** rng.uniform(-8, -1)
    ),
    "ties": lambda rng, n: np.round(rng.normal(size=n) * 3),
    "cauchy": lambda rng, n: rng.standard_cauchy(size=n),
    "ramp": lambda rng, n: np.sort(rng.normal(size=n))[::-1] * np.linspace(1, 1e3, n),
}
SIZES = (2, 3, 5, 10, 50, 100, 1000)
"""Row lengths ``n`` drawn uniformly."""
TAU_RANGE = (-3.0, 2.0)
"""``log10 τ`` is uniform in this range."""
MAX_SCALED = 1e4
"""``max|x|/τ`` bound of LML-4."""
DTYPES = (torch.float32, torch.float64)
ACCURACY = {torch.float32: 1e-6, torch.float64: 1e-12}
"""LML-4."""


def stopping_step(x: torch.Tensor, k: int, tau: float, final: torch.Tensor) -> int:
    """The least step count whose fixed schedule gives ``final``'s bits (LML-19)."""
    for steps in range(1, MAX_STEPS[x.dtype] + 1):
        if torch.equal(solve_lml(x, k, tau, steps, early_exit=False), final):
            return steps
    return MAX_STEPS[x.dtype] + 1  # never stopped within the schedule


def by_dtype(table: Mapping[torch.dtype, T]) -> dict[str, T]:
    """``table`` keyed by dtype names, for JSON."""
    return {str(d): table[d] for d in DTYPES}


@dataclass
class Worst:
    """The row with the largest error of one dtype."""

    error: float = -1.0
    family: str = ""
    n: int = 0
    k: int = 0
    tau: float = 0.0


@dataclass
class Accuracy:
    """One seed's measurement; keys of the dicts are dtype names."""

    rows: int
    seed: int
    worst: dict[str, Worst]
    median_error: dict[str, float]
    stopping_steps: dict[str, dict[int, int]]
    fast_path_rows: dict[str, int]
    single_row_rows: dict[str, int]
    reduction_worst: dict[str, float]
    max_steps: dict[str, int] = field(default_factory=lambda: by_dtype(MAX_STEPS))
    bound: dict[str, float] = field(default_factory=lambda: by_dtype(ACCURACY))


def measure(rows: int, seed: int) -> Accuracy:
    """Errors and stopping steps over ``rows`` random rows per dtype."""
    rng = np.random.default_rng(seed)
    names = list(FAMILIES)
    worst = {str(d): Worst() for d in DTYPES}
    steps: dict[str, Counter[int]] = {str(d): Counter() for d in DTYPES}
    errors: dict[str, list[float]] = {str(d): [] for d in DTYPES}
    fast: Counter[str] = Counter()
    single: Counter[str] = Counter()
    reduction_worst = {str(d): 0.0 for d in DTYPES}
    for i in range(rows):
        family = names[i % len(names)]
        n = int(rng.choice(SIZES))
        k = int(rng.integers(1, n))
        x = FAMILIES[family](rng, n)
        tau = float(10 ** rng.uniform(*TAU_RANGE))
        tau = max(tau, float(np.abs(x).max()) / MAX_SCALED * (1 + 1e-4))
        for dtype in DTYPES:
            row = torch.from_numpy(x.copy()).to(dtype)[None]
            reference = lml_bisect(row.double().numpy(), k, tau)
            y = lml(row, k, tau)
            error = float(np.abs(y.double().numpy() - reference).max())
            key = str(dtype)
            errors[key].append(error)
            if error >= worst[key].error:
                worst[key] = Worst(error, family, n, k, tau)
            guarded = solve_lml(row, k, tau, MAX_STEPS[dtype], early_exit=False)
            steps[key][stopping_step(row, k, tau, guarded)] += 1
            # lml takes the single-row path (LML-24) on a (1, n) row; the batched
            # fast path (LML-23, sums by reductions) is measured on its own.
            single[key] += int(newton_single_row(row, k, tau, FAST_STEPS[dtype])[1])
            y_red, change = newton_from_midpoint(row, k, tau, FAST_STEPS[dtype])
            if bool(change.max() <= STEP_TOLERANCE[dtype]):
                fast[key] += 1
                reduction_error = float(np.abs(y_red.double().numpy() - reference).max())
                reduction_worst[key] = max(reduction_worst[key], reduction_error)
    return Accuracy(
        rows=rows,
        seed=seed,
        worst=worst,
        median_error={key: float(np.median(v)) for key, v in errors.items()},
        stopping_steps={key: dict(sorted(c.items())) for key, c in steps.items()},
        fast_path_rows={key: fast[key] for key in errors},
        single_row_rows={key: single[key] for key in errors},
        reduction_worst=reduction_worst,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1200, help="rows per seed and dtype")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows must be at least 1, got {args.rows}")
    results = [measure(args.rows, seed) for seed in args.seeds]
    text = json.dumps([asdict(r) for r in results], indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    exceeded = [
        (r.seed, key, max(w.error, r.reduction_worst[key]))
        for r in results
        for key, w in r.worst.items()
        if max(w.error, r.reduction_worst[key]) > r.bound[key]
    ]
    for seed, key, error in exceeded:
        print(f"seed {seed}, {key}: worst error {error:.3g} exceeds LML-4", file=sys.stderr)
    return 1 if exceeded else 0


if __name__ == "__main__":
    sys.exit(main())
