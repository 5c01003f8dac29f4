"""The distribution update of one iteration (spec/cem.md, CEM-6, CEM-11, CEM-29, CEM-38)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from impl._checks import number_in_dtype
from impl.gaussian import weighted_gaussian_fit


@dataclass(frozen=True)
class GaussianUpdate:
    """The weighted Gaussian MLE with the σ floor, optionally smoothed.

        μ̂, σ̂ = weighted_gaussian_fit(X, I, k, σ_min)                (CEM-6, CEM-11)
        μ' = α μ + (1 − α) μ̂,   σ' = max(α σ + (1 − α) σ̂, σ_min)    (CEM-29)
        σ' ← min(σ', σ_max)                                            (CEM-38)

    ``α = 0`` and ``σ_max = None`` add no operation to the plain fit.

    Attributes:
        k: the weights' row sum (``n_elite``).
        std_min: ``σ_min ≥ 0``.
        smoothing: ``α ∈ [0, 1)``.
        std_max: ``σ_max ≥ σ_min`` or ``None`` (no cap).
    """

    k: int
    std_min: float
    smoothing: float = 0.0
    std_max: float | None = None

    def __call__(
        self,
        samples: Tensor,
        weights: Tensor,
        mean: Tensor,
        std: Tensor,
        scratch: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``samples (B, M, d)``, ``weights (B, M)``, ``mean, std (B, d)`` →
        the updated ``(mean, std)``, each ``(B, d)``. ``scratch``: an optional
        ``(B, M, d)`` work buffer for the fit (CEM-28)."""
        new_mean, new_std = weighted_gaussian_fit(
            samples, weights, self.k, self.std_min, scratch=scratch
        )
        if self.smoothing > 0:
            new_mean = torch.lerp(new_mean, mean, self.smoothing)
            new_std = torch.lerp(new_std, std, self.smoothing).clamp_min(self.std_min)
        if self.std_max is not None:
            new_std = new_std.clamp_max(number_in_dtype(self.std_max, new_std.dtype))
        return new_mean, new_std
