"""Elite selection as typed values (spec/cem.md, CEM-3–CEM-5, CEM-12, CEM-30).

A selector maps an iteration's values ``v (B, M)`` (and ``ranked``: ``v``
with every non-finite entry replaced by ``+∞``) to elite weights that sum to
``k`` per row, with a per-row validity flag (CEM-12). The math lives in
``impl.selection``; this module chooses among it from the options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from impl.lml import can_stop_early
from impl.options import CEMOptions
from impl.selection import (
    Selection,
    exponential_elite_weights,
    hard_selection,
    soft_weights,
    soft_weights_of_finite_values,
)


class Selector(Protocol):
    """Elite weights of one iteration."""

    def __call__(self, values: Tensor, ranked: Tensor) -> Selection:
        """``values, ranked (B, M)`` → weights ``(B, M)`` summing to ``k``, valid ``(B,)``."""
        ...


@dataclass(frozen=True)
class HardTopK:
    """The indicator of the ``k`` lowest values (CEM-4)."""

    k: int

    def __call__(self, values: Tensor, ranked: Tensor) -> Selection:
        return hard_selection(ranked, self.k)


@dataclass(frozen=True)
class WeightedElites:
    """The ``k`` hard elites weighted by ``exp(−s/λ)``, scaled to sum to ``k``
    (CEM-30); ``s`` the normalized values (CEM-3) or the raw ones."""

    k: int
    temperature: float
    normalize: bool

    def __call__(self, values: Tensor, ranked: Tensor) -> Selection:
        elites = hard_selection(ranked, self.k)
        weights = exponential_elite_weights(
            values, elites.weights, self.k, self.temperature, self.normalize
        )
        return Selection(weights=weights, valid=elites.valid)


@dataclass(frozen=True)
class SoftTopK:
    """The soft top-k ``Π_L(−ṽ/τ)`` of the LML projection (CEM-5)."""

    k: int
    tau: float | Tensor  # a 0-dim tensor may require grad (CEM-36)
    normalize: bool

    def __call__(self, values: Tensor, ranked: Tensor) -> Selection:
        # ranked holds +∞ exactly where values is not finite: one comparison.
        finite = ranked < torch.inf
        if values.shape[-1] > self.k and reads_values_on_host(values) and bool(finite.all()):
            return soft_weights_of_finite_values(values, self.k, self.tau, self.normalize)
        return soft_weights(values, finite, self.k, self.tau, self.normalize)


def reads_values_on_host(values: Tensor) -> bool:
    """Whether a selection may branch on ``values`` read on the host (CEM-43): CPU
    tensors (no synchronization), outside ``torch.compile`` and ``torch.func``
    transforms (a traced or batched value cannot be read)."""
    return can_stop_early(values) and not torch._C._are_functorch_transforms_active()


def selector_for(options: CEMOptions) -> Selector:
    """The selector the options describe: hard top-k (``tau`` None or 0), with
    exponential elite weights when ``elite_temperature`` is set, else the
    soft top-k (with ``tau`` a number or a 0-dim tensor, CEM-36)."""
    tau = options.tau
    if tau is None or options.hard:
        if options.elite_temperature is None:
            return HardTopK(options.n_elite)
        return WeightedElites(options.n_elite, options.elite_temperature, options.normalize)
    return SoftTopK(
        options.n_elite, tau if isinstance(tau, Tensor) else float(tau), options.normalize
    )
