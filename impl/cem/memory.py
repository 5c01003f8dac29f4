"""Work buffers of a solve (spec/cem.md, CEM-28).

Two kinds, both used only by iterations that record no autograd graph:

- internal buffers, always on: the noise ``ε_t`` and the centred samples
  ``X − μ`` of the fit are written into two ``(B, N, d)`` buffers allocated
  once per solve. Neither ``f`` nor the callback ever sees them, so they
  change nothing a caller can observe (bitwise);
- the samples buffer, opt-in (``CEMOptions(reuse_buffers=True)``): the
  candidates handed to ``f`` are written into a third buffer, which the next
  iteration overwrites.

*Informative*: large fresh allocations page-fault on every iteration; the
buffers avoid that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class WorkBuffers:
    """The ``(B, N, d)`` buffers one iteration may write into.

    Attributes:
        noise: for ``ε_t`` (internal).
        scratch: for ``X − μ`` in the fit (internal).
        samples: for the candidates passed to ``f`` (opt-in), or ``None``.
    """

    noise: Tensor
    scratch: Tensor
    samples: Tensor | None


class BufferPolicy:
    """Decides, iteration by iteration, which buffers may be used.

    None while a graph could hold them: grad mode on and an input of the
    sampling or the selection (``μ_t``, ``σ_t``, bounds, pre-drawn noise,
    proposals, a tensor ``τ``) requiring grad. Once ``f``'s output records a
    graph (its parameters require grad), that graph holds the candidates, so
    the samples buffer is given up for the rest of the solve (the internal
    ones are not: ``f`` never saw them)."""

    def __init__(
        self,
        reuse_samples: bool,
        shape: tuple[int, int, int],
        dtype: torch.dtype,
        device: torch.device,
        inputs_require_grad: bool,
    ) -> None:
        self._reuse_samples = reuse_samples
        self._shape, self._dtype, self._device = shape, dtype, device
        self._inputs_require_grad = inputs_require_grad
        self._internal: tuple[Tensor, Tensor] | None = None
        self._samples: Tensor | None = None

    def _empty(self) -> Tensor:
        return torch.empty(self._shape, dtype=self._dtype, device=self._device)

    def buffers(self, mean: Tensor, std: Tensor) -> WorkBuffers | None:
        """The buffers for an iteration starting from ``mean, std (B, d)``, or
        ``None`` when a graph could hold them."""
        if torch.is_grad_enabled() and (
            self._inputs_require_grad or mean.requires_grad or std.requires_grad
        ):
            return None
        if self._internal is None:
            self._internal = (self._empty(), self._empty())
        if self._reuse_samples and self._samples is None:
            self._samples = self._empty()
        noise, scratch = self._internal
        return WorkBuffers(noise, scratch, self._samples if self._reuse_samples else None)

    def after(self, values: Tensor) -> None:
        """Give up the samples buffer once ``values (B, M)`` record a graph."""
        if self._reuse_samples and torch.is_grad_enabled() and values.requires_grad:
            self._reuse_samples = False
