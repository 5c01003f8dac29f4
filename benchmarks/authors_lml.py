"""The authors' LML forward, written from its description, as a speed baseline.

The release that accompanies the paper solves the projection of eq. 4 by a
bracketed grid search on the dual variable ``ν`` (``y = σ(x + ν)``, so
``ν = −t`` of spec/lml.md LML-2), on temperature-scaled scores (the release
calls ``LML(−f · temp)``, i.e. ``temp = 1/τ``):

1. sort each row in decreasing order; the root lies in
   ``[−x_(k) − 7, −x_(k+1) + 7]``;
2. at each step evaluate ``Σ_i σ(x_i + ν) − k`` on a grid of ``BRANCH``
   equally spaced points over every unfinished row's bracket (both ends
   included), and keep the sub-interval between the last point with a
   negative value and the next one;
3. a row is finished once its bracket is narrower than ``EPS``; at most
   ``MAX_ITERATIONS`` steps; the rows still working are selected with boolean
   masks each step, and the loop ends as soon as none is left (the count is
   read on the host);
4. ``ν`` is the midpoint of the final bracket and ``y = σ(x + ν)``.

``AuthorsLML`` adds the release's backward pass, the implicit-function
formula from the saved output (spec/paper.md §1.5): with ``h = y(1 − y)``,
``∂L/∂x = h ⊙ (g − hᵀg / 1ᵀh)`` in the scaled scores (the scaling by the
temperature is differentiated by autograd around it); ``benchmarks.authors_dcem``
runs the release's DCEM loop on it. It is a baseline, not a reference: its
accuracy is that of its bracket (``1e-4`` by default).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

EPS = 1e-4
"""Bracket width at which a row is finished (scaled units)."""
MAX_ITERATIONS = 100
BRANCH = 10
"""Grid points per step."""
BRACKET_MARGIN = 7.0
"""Slack added on either side of the initial bracket (scaled units)."""


def authors_lml(x: Tensor, k: int, tau: float = 1.0, eps: float = EPS) -> Tensor:
    """``Π_L(x/τ)`` row by row for ``x (B, n)`` by the release's grid search; shape ``(B, n)``.

    ``eps``: the bracket width at which a row is finished (scaled units).
    """
    if x.dim() != 2:
        raise ValueError(f"x must have shape (B, n), got {tuple(x.shape)}")
    n = x.shape[1]
    if not 0 < k < n:
        raise ValueError(f"k must satisfy 0 < k < n; got k={k} with n={n}")
    scaled = x / tau
    ordered = torch.sort(scaled, dim=1, descending=True).values
    lower = -ordered[:, k - 1] - BRACKET_MARGIN
    upper = -ordered[:, k] + BRACKET_MARGIN
    grid = torch.linspace(0, 1, BRANCH, dtype=x.dtype, device=x.device)
    for _ in range(MAX_ITERATIONS):
        width = upper - lower
        working = width > eps
        if int(working.sum()) == 0:
            break
        nus = width[working].unsqueeze(1) * grid + lower[working].unsqueeze(1)  # (c, BRANCH)
        values = torch.sigmoid(scaled[working].unsqueeze(1) + nus.unsqueeze(2)).sum(2) - k
        below = (values < 0).sum(1) - 1  # the last grid point with a negative value
        all_positive = below < 0
        below = below.clamp(0, BRANCH - 2)
        new_lower = nus.gather(1, below.unsqueeze(1)).squeeze(1)
        new_upper = nus.gather(1, (below + 1).unsqueeze(1)).squeeze(1)
        lower[working] = new_lower - BRACKET_MARGIN * all_positive.to(x.dtype)
        upper[working] = new_upper
    nu = lower + (upper - lower) / 2
    return torch.sigmoid(scaled + nu.unsqueeze(1))


class AuthorsLML(torch.autograd.Function):
    """The release's LML layer on already scaled scores ``x (B, n)``: the grid
    search forward (``authors_lml`` at ``τ = 1``) and the implicit backward."""

    @staticmethod
    def forward(x: Tensor, k: int, eps: float) -> Tensor:
        with torch.no_grad():
            return authors_lml(x, k, 1.0, eps)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (y,) = ctx.saved_tensors
        h = y * (1 - y)
        centre = (h * grad).sum(1, keepdim=True) / h.sum(1, keepdim=True)
        return h * (grad - centre), None, None


def authors_lml_layer(x: Tensor, k: int, eps: float = EPS) -> Tensor:
    """``AuthorsLML.apply`` with types: ``x (B, n)`` scaled scores → ``(B, n)``."""
    y: Tensor = AuthorsLML.apply(x, k, eps)  # type: ignore[no-untyped-call]
    return y
