"""The explicit state of a batched CEM/DCEM solve (spec/cem.md, CEM-31).

A solve is a fold of ``impl.cem.step.step`` over the iterations: each
iteration maps a ``CEMState`` to the next one and nothing else carries over
(the random source is the caller's generator or pre-drawn noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from impl.cem.samplers import Box


@dataclass(frozen=True)
class CEMState:
    """The state between two iterations, for ``B`` problems in ``d`` dimensions.

    Attributes:
        mean: ``(B, d)`` ``μ_t``.
        std: ``(B, d)`` ``σ_t``.
        best_x: ``(B, d)`` the lowest-valued sample seen (CEM-16).
        best_value: ``(B,)`` its value, ``+∞`` before any finite one.
        n_iter: ``(B,)`` int64, iterations applied per problem (CEM-13).
        converged: ``(B,)`` bool, problems that met ``tol`` (CEM-13).
        active: ``(B,)`` bool, problems still running: ``~converged``.
        kept: ``(B, K, d)`` the candidates that join the next iteration's
            (CEM-39): the elites kept from the last iteration, or the initial
            ones given to the solve; ``None``: none.
    """

    mean: Tensor
    std: Tensor
    best_x: Tensor
    best_value: Tensor
    n_iter: Tensor
    converged: Tensor
    active: Tensor
    kept: Tensor | None = None


def initial_state(mean: Tensor, std: Tensor, box: Box, elites: Tensor | None = None) -> CEMState:
    """The state before the first iteration: ``μ_0``, ``σ_0``, no sample seen
    (``best_x`` is ``μ_0`` clipped to the box, ``best_value = +∞``), every
    problem active, ``kept = elites`` (``(B, K, d)``, already in the box).
    Shapes: ``mean, std (B, d)``."""
    batch = mean.shape[0]
    device = mean.device
    return CEMState(
        mean=mean,
        std=std,
        best_x=box.clip(mean),
        best_value=torch.full((batch,), torch.inf, dtype=mean.dtype, device=device),
        n_iter=torch.zeros(batch, dtype=torch.int64, device=device),
        converged=torch.zeros(batch, dtype=torch.bool, device=device),
        active=torch.ones(batch, dtype=torch.bool, device=device),
        kept=elites,
    )
