"""What a solve returns and what its callback sees (spec/cem.md, CEM-15, CEM-21)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class DCEMResult:
    """What ``dcem`` and ``impl.cem.solve`` return (CEM-15). Shapes for a batch
    of ``B`` problems; a single problem given as ``(d,)`` drops the batch
    dimension.

    Attributes:
        x: ``(B, d)`` the returned point, ``mean`` or ``best_x`` (CEM-16).
        mean: ``(B, d)`` the final mean ``μ_{T+1}``.
        std: ``(B, d)`` the final standard deviation ``σ_{T+1}``.
        best_x: ``(B, d)`` the lowest-valued sample seen.
        best_value: ``(B,)`` its value (``+∞`` if no finite value was seen).
        n_iter: ``(B,)`` int64, iterations run per problem (CEM-13).
        converged: ``(B,)`` bool, whether the problem met ``tol`` (CEM-13).
        elites: ``(B, K, d)`` the ``K = ⌊ρ k⌋`` kept elites of the last
            iteration, lowest value first (CEM-39); ``K = 0`` without them.
            A solve always sets it; ``None`` only for results built by hand.
    """

    x: Tensor
    mean: Tensor
    std: Tensor
    best_x: Tensor
    best_value: Tensor
    n_iter: Tensor
    converged: Tensor
    elites: Tensor | None = None

    def squeezed(self) -> DCEMResult:
        """The result of a single problem: every field without its batch dimension."""
        return DCEMResult(
            x=self.x.squeeze(0),
            mean=self.mean.squeeze(0),
            std=self.std.squeeze(0),
            best_x=self.best_x.squeeze(0),
            best_value=self.best_value.squeeze(0),
            n_iter=self.n_iter.squeeze(0),
            converged=self.converged.squeeze(0),
            elites=None if self.elites is None else self.elites.squeeze(0),
        )


@dataclass(frozen=True)
class DCEMStep:
    """One iteration as seen by the ``callback`` (CEM-21); always batched.

    Attributes:
        iteration: the iteration index, from 0.
        samples: ``(B, M, d)`` the candidates ``X_t`` (after clipping): the
            ``N`` Gaussian samples, then the ``P`` proposals (``M = N + P``,
            CEM-34).
        values: ``(B, M)`` their values ``f(X_t)``.
        weights: ``(B, M)`` the elite weights ``I_t`` the update used; zero
            for a problem not updated in this iteration.
        mean: ``(B, d)`` the mean after this iteration's update.
        std: ``(B, d)`` the standard deviation after the update.
        active: ``(B,)`` bool, the problems that ran this iteration.
    """

    iteration: int
    samples: Tensor
    values: Tensor
    weights: Tensor
    mean: Tensor
    std: Tensor
    active: Tensor
