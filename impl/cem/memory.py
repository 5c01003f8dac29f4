"""Opt-in work buffers (spec/cem.md, CEM-28).

With ``CEMOptions(reuse_buffers=True)``, an iteration that records no
autograd graph writes its noise, samples and centred samples into three
``(B, N, d)`` buffers allocated once per solve instead of allocating them
afresh. *Informative*: large fresh allocations page-fault on every
iteration; the buffers avoid that, at the price that ``f`` receives a tensor
the next iteration overwrites.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class WorkBuffers:
    """Three ``(B, N, d)`` buffers of one solve: noise, samples, scratch."""

    noise: Tensor
    samples: Tensor
    scratch: Tensor

    @staticmethod
    def allocate(
        shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device
    ) -> WorkBuffers:
        return WorkBuffers(*(torch.empty(shape, dtype=dtype, device=device) for _ in range(3)))


class BufferPolicy:
    """Decides, iteration by iteration, whether the buffers may be used.

    They may while no autograd graph can hold them: grad mode off, or no
    input of the sampling (``μ_t``, ``σ_t``, bounds, pre-drawn noise,
    proposals) requiring grad. Once ``f``'s output records a graph (its
    parameters require grad), that graph holds the samples, and the solve
    allocates afresh from then on.
    """

    def __init__(
        self,
        enabled: bool,
        shape: tuple[int, int, int],
        dtype: torch.dtype,
        device: torch.device,
        inputs_require_grad: bool,
    ) -> None:
        self._enabled = enabled
        self._shape, self._dtype, self._device = shape, dtype, device
        self._inputs_require_grad = inputs_require_grad
        self._buffers: WorkBuffers | None = None

    def buffers(self, mean: Tensor, std: Tensor) -> WorkBuffers | None:
        """The buffers for an iteration starting from ``mean, std (B, d)``, or
        ``None`` when a graph could hold them."""
        if not self._enabled:
            return None
        if torch.is_grad_enabled() and (
            self._inputs_require_grad or mean.requires_grad or std.requires_grad
        ):
            return None
        if self._buffers is None:
            self._buffers = WorkBuffers.allocate(self._shape, self._dtype, self._device)
        return self._buffers

    def after(self, values: Tensor) -> None:
        """Stop for good once ``values (B, M)`` record a graph."""
        if torch.is_grad_enabled() and values.requires_grad:
            self._enabled = False
