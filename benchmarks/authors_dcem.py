"""The authors' DCEM loop, written from its description, as a speed baseline.

The release's ``dcem`` solves ``B`` problems with one loop of ``T`` iterations
(spec/paper.md §1.2, §1.6, and §4 for the behaviour kept here):

1. draw ``N`` candidates per problem with ``Normal(μ, σ).rsample((N,))``,
   move the sample dimension after the batch one, and clamp them to the box
   when bounds are given;
2. evaluate ``f`` on the ``(B, N, d)`` candidates;
3. normalize the values per problem, ``ṽ = (v − mean v) / (std v + 1e-6)``;
4. weigh the candidates by the soft top-k of the release's LML layer
   (``benchmarks.authors_lml``) on ``−ṽ · temp`` (``temp = 1/τ``), with the
   bracket width ``LML_EPS`` that the release's ``dcem`` passes to it;
5. ``μ ← Σ_i I_i X_i / k``; stop the whole batch when ``‖μ − μ_old‖ <
   ITER_EPS`` (a value read on the host, before σ is updated: §4);
   ``σ ← sqrt(Σ_i I_i (X_i − μ)² / k)`` (no floor: §4).

It returns the final ``μ`` (clamped to the box when bounds are given) and
the number of iterations run. Only the pieces the benchmark needs are
written: no hard-CEM branch, no ``k = 1`` softmax, no projection of the
iterates, no callback. It is a baseline, not a reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Normal

from benchmarks.authors_lml import authors_lml_layer

LML_EPS = 1e-3
"""Bracket width of the LML layer inside the release's ``dcem``."""
ITER_EPS = 1e-4
"""The release's early stop: ``‖μ_{t+1} − μ_t‖`` over the whole batch below this."""
VALUE_NORM_EPS = 1e-6
"""Added to the standard deviation of the values (spec/paper.md §1.6)."""


def authors_dcem(
    f: Callable[[Tensor], Tensor],
    init_mu: Tensor,
    init_sigma: Tensor,
    *,
    n_sample: int,
    n_elite: int,
    n_iter: int,
    temp: float = 1.0,
    lb: float | None = None,
    ub: float | None = None,
) -> tuple[Tensor, int]:
    """The release's DCEM loop: ``init_mu, init_sigma (B, d)`` → ``(μ (B, d), iterations run)``.

    ``f`` maps ``(B, N, d)`` candidates to ``(B, N)`` values (lower is
    better); ``temp`` multiplies the normalized values (``1/τ``).
    """
    if init_mu.dim() != 2 or init_sigma.shape != init_mu.shape:
        raise ValueError(
            f"init_mu and init_sigma must have one shape (B, d); got {tuple(init_mu.shape)} "
            f"and {tuple(init_sigma.shape)}"
        )
    if not 0 < n_elite < n_sample:
        raise ValueError(f"need 0 < n_elite < n_sample; got {n_elite} and {n_sample}")
    batch = init_mu.shape[0]
    mu, sigma = init_mu, init_sigma
    run = 0
    for _ in range(n_iter):
        run += 1
        samples = Normal(mu, sigma).rsample((n_sample,)).transpose(0, 1).contiguous()
        if lb is not None or ub is not None:
            samples = torch.clamp(samples, lb, ub)
        values = f(samples).view(batch, n_sample)
        normalized = (values - values.mean(dim=1, keepdim=True)) / (
            values.std(dim=1, keepdim=True) + VALUE_NORM_EPS
        )
        weights = authors_lml_layer(-normalized * temp, n_elite, LML_EPS).unsqueeze(2)
        old_mu = mu
        mu = (weights * samples).sum(dim=1) / n_elite
        if bool((mu - old_mu).norm() < ITER_EPS):
            break
        sigma = ((weights * (samples - mu.unsqueeze(1)) ** 2).sum(dim=1) / n_elite).sqrt()
    if lb is not None or ub is not None:
        mu = torch.clamp(mu, lb, ub)
    return mu, run
