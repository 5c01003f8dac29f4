"""Hypothesis strategies shared by the tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

MAX_SCALED_SCORE = 1e4
"""The accuracy statements (LML-4) hold for ``max |x| / τ`` up to this."""


@dataclass(frozen=True)
class LMLProblem:
    """A batch of LML problems: ``x`` of shape ``(B, n)`` (float64 values
    that are exactly representable in float32), ``k`` and ``tau``."""

    x: np.ndarray
    k: int
    tau: float

    @property
    def n(self) -> int:
        return int(self.x.shape[-1])


def _float32_at_most(value: float) -> float:
    """The largest float32 number ``≤ value`` (for ``value > 0``)."""
    rounded = np.float32(value)
    if rounded > value:
        rounded = np.nextafter(rounded, np.float32(0))
    return float(rounded)


@st.composite
def temperatures(draw: st.DrawFn, low: float = -3.0, high: float = 2.0) -> float:
    """``τ = 10^e`` with ``e`` uniform-ish in ``[low, high]``."""
    return float(10.0 ** draw(st.floats(low, high)))


@st.composite
def lml_problems(
    draw: st.DrawFn,
    max_n: int = 48,
    max_batch: int = 3,
    max_scaled: float = MAX_SCALED_SCORE,
    min_n: int = 2,
) -> LMLProblem:
    """Rows of scores with ``|x|/τ ≤ max_scaled``, rich in ties and clusters.

    Each row mixes draws from a small pool of values (ties), tight clusters
    around pool values, and free values; Hypothesis adds its own edge cases
    (zeros, bounds, repeats) and shrinks towards them.
    """
    n = draw(st.integers(min_n, max_n))
    k = draw(st.integers(1, n - 1))
    tau = draw(temperatures())
    batch = draw(st.integers(1, max_batch))
    limit = _float32_at_most(max_scaled * tau)
    free = st.floats(-limit, limit, width=32)
    pool = draw(st.lists(free, min_size=1, max_size=4))
    spread = draw(st.sampled_from([0.0, 1e-3, 1e-1, 1.0, 10.0])) * tau

    def entry(center: float) -> st.SearchStrategy[float]:
        return st.floats(-1.0, 1.0, width=32).map(
            lambda u: float(np.clip(np.float32(center + u * spread), -limit, limit))
        )

    element = st.one_of(free, st.sampled_from(pool), st.sampled_from(pool).flatmap(entry))
    rows = draw(st.lists(st.lists(element, min_size=n, max_size=n), min_size=batch, max_size=batch))
    x = np.asarray(rows, dtype=np.float32).astype(np.float64)
    return LMLProblem(x=x, k=k, tau=tau)


@st.composite
def gapped_problems(draw: st.DrawFn, max_n: int = 32) -> tuple[np.ndarray, int, float]:
    """A row with a gap ``m > 0`` between its k-th and (k+1)-th largest entries.

    Returns ``(x (n,), k, m)`` with the top ``k`` entries in ``[m, m + 10]``
    and the rest in ``[−10, 0]`` (then shuffled), so the gap is at least ``m``.
    """
    n = draw(st.integers(2, max_n))
    k = draw(st.integers(1, n - 1))
    m = draw(st.floats(0.01, 5.0))
    top = draw(st.lists(st.floats(0.0, 10.0), min_size=k, max_size=k))
    rest = draw(st.lists(st.floats(-10.0, 0.0), min_size=n - k, max_size=n - k))
    x = np.array([m + t for t in top] + rest, dtype=np.float64)
    perm = draw(st.permutations(range(n)))
    gap = float(np.sort(x)[::-1][k - 1] - np.sort(x)[::-1][k])
    return x[list(perm)], k, gap
