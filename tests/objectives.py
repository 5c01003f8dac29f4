"""Test objectives written once for NumPy (the reference) and torch (impl).

Each objective maps candidates of shape ``(..., N, d)`` to values ``(..., N)``
with the same formula in both libraries, so that impl and reference can be run
on identical problems and noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st


@dataclass(frozen=True)
class Objective:
    """``kind`` in {"quadratic", "rastrigin", "holes"} around ``center (d,)``
    with per-coordinate curvature ``scale (d,)``."""

    kind: str
    center: np.ndarray
    scale: np.ndarray

    def _eval(self, x: Any, lib: Any, center: Any, scale: Any) -> Any:
        diff = x - center
        quad = (scale * diff * diff).sum(-1)
        if self.kind == "quadratic":
            return quad
        if self.kind == "rastrigin":
            return quad + (1 - lib.cos(2 * np.pi * diff)).sum(-1)
        # "holes": NaN and +inf patches, the rest quadratic (CEM-12)
        wave = lib.sin(7 * x[..., 0])
        nan = lib.full_like(quad, np.nan)
        inf = lib.full_like(quad, np.inf)
        return lib.where(wave > 0.8, nan, lib.where(wave < -0.9, inf, quad))

    def numpy(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._eval(x, np, self.center, self.scale), dtype=np.float64)

    def torch(self, x: torch.Tensor) -> torch.Tensor:
        center = torch.as_tensor(self.center, dtype=x.dtype, device=x.device)
        scale = torch.as_tensor(self.scale, dtype=x.dtype, device=x.device)
        out: torch.Tensor = self._eval(x, torch, center, scale)
        return out


@st.composite
def objectives(
    draw: st.DrawFn, d: int, kinds: tuple[str, ...] = ("quadratic", "rastrigin", "holes")
) -> Objective:
    kind = draw(st.sampled_from(kinds))
    center = np.array(draw(st.lists(st.floats(-1, 1), min_size=d, max_size=d)))
    scale = np.array(draw(st.lists(st.floats(0.1, 10), min_size=d, max_size=d)))
    return Objective(kind, center, scale)
