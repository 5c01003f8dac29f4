"""The one options type of the solver (spec/cem.md, CEM-22, CEM-32).

``CEMOptions`` holds every scalar setting of a CEM/DCEM solve. It is the only
place the option set is written out: ``impl.dcem.dcem`` builds one from its
keyword arguments, and the planners (``impl.control``) and the validation
configs hold one as a field, so no option can be dropped on the way.

Construction validates every field and raises ``TypeError``/``ValueError``
naming the bad value; an invalid combination (``elite_temperature`` with soft
selection, ``0 < n_elite < n_sample`` violated) cannot be constructed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from typing import Any, Literal

import torch
from torch import Tensor

from impl._checks import require_finite_real, require_int, require_real

DEFAULT_STD_MIN = 1e-6
"""Default σ floor (CEM-11): below it a float32 sample of magnitude up to 8
(ulp 9.5e-7) no longer moves, so the distribution has collapsed anyway."""

Output = Literal["mean", "best", "sample"]

Sampling = Literal["clip", "truncated", "variance_constrained"]
"""How the Gaussian candidates meet the box (CEM-37): clipped (the paper's
choice), truncated at ``±TRUNCATION σ`` then clipped, or truncated with ``σ``
limited by the distance to the bounds (PETS, mbrl-lib's ``CEMOptimizer``)."""


@torch.compiler.assume_constant_result  # type: ignore[untyped-decorator]
def decayed_population(n: int, decay: float, iteration: int) -> int:
    """``⌊N γ^{−t}⌋`` (CEM-40) in exact rational arithmetic on the float ``γ``'s
    value: a float power rounds ``49 · 1.75^{−2} = 16`` down to 15.999….
    A constant for ``torch.compile``, which cannot trace ``Fraction``."""
    return math.floor(Fraction(n) / Fraction(decay) ** iteration)


@dataclass(frozen=True)
class CEMOptions:
    """Scalar settings of one solve; defaults are ``impl.dcem.dcem``'s.

    Attributes:
        n_sample: ``N``, candidates per iteration, ``N ≥ 2``.
        n_elite: ``k``, elites per iteration, ``0 < k < N``.
        n_iter: ``T ≥ 1``, iterations.
        tau: LML temperature ``τ``: ``None`` or ``0`` is hard CEM (CEM-4);
            ``τ > 0`` a Python number or a scalar tensor (which may require
            grad, CEM-5, CEM-36 and LML-20) is DCEM.
        normalize: standardize the values per problem and iteration (CEM-3).
        std_min: the σ floor ``σ_min ≥ 0`` (CEM-11).
        tol: per-problem convergence threshold (CEM-13); ``None`` runs all
            ``T`` iterations.
        output: return the final ``"mean"``, the ``"best"`` sample (CEM-16),
            or ``"sample"``, one draw from the final distribution (CEM-42).
        checkpoint: recompute each iteration in the backward pass (CEM-26).
        grad_iters: ``K ≥ 1``: differentiate only the last ``K`` iterations
            (CEM-27); ``None`` differentiates all of them.
        smoothing: ``α ∈ [0, 1)``, the share of the previous distribution
            each update keeps (CEM-29).
        elite_temperature: ``λ > 0``, exponentially weighted hard elites
            (CEM-30); needs hard selection. ``None``: equal weights.
        reuse_buffers: opt-in work buffers (CEM-28): iterations that record
            no graph write their noise, samples and centred samples into
            ``(B, N, d)`` buffers allocated once, so ``f`` receives a buffer
            the next iteration overwrites. Off by default; incompatible with
            ``checkpoint`` (and, in ``impl.cem.solve``, with a callback).
            Only ``impl.cem.solve`` reads it: ``dcem`` keeps its signature.
        sampling: ``"clip"`` (default), ``"truncated"`` or
            ``"variance_constrained"`` (CEM-37).
        std_max: ``σ_max ≥ σ_min``, a cap on every updated ``σ`` (CEM-38);
            ``None``: no cap.
        keep_elites: ``ρ ∈ [0, 1]``: the ``⌊ρ k⌋`` lowest-valued candidates of
            an iteration join the next iteration's candidates (CEM-39, iCEM).
        population_decay: ``γ ≥ 1``: iteration ``t`` draws
            ``N_t = min(N, max(⌊N γ^{−t}⌋, 2k))`` Gaussian candidates (CEM-40).
        mean_candidate: add the mean ``μ_t`` as a candidate in the last
            iteration (CEM-41, iCEM).

        The last five are read by ``impl.cem.solve`` only (``SOLVE_ONLY_FIELDS``).
    """

    n_sample: int = 100
    n_elite: int = 10
    n_iter: int = 10
    tau: float | Tensor | None = 1.0
    normalize: bool = True
    std_min: float = DEFAULT_STD_MIN
    tol: float | None = None
    output: Output = "mean"
    checkpoint: bool = False
    grad_iters: int | None = None
    smoothing: float = 0.0
    elite_temperature: float | None = None
    reuse_buffers: bool = False
    sampling: Sampling = "clip"
    std_max: float | None = None
    keep_elites: float = 0.0
    population_decay: float = 1.0
    mean_candidate: bool = False

    def __post_init__(self) -> None:
        n_sample = require_int("n_sample", self.n_sample)
        n_elite = require_int("n_elite", self.n_elite)
        n_iter = require_int("n_iter", self.n_iter)
        if not 0 < n_elite < n_sample:
            raise ValueError(
                "n_elite must satisfy 0 < n_elite < n_sample; "
                f"got n_elite={n_elite}, n_sample={n_sample}"
            )
        if n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {n_iter}")
        _check_tau(self.tau)
        if not isinstance(self.normalize, bool):
            raise TypeError(f"normalize must be a bool, got {self.normalize!r}")
        require_finite_real("std_min", self.std_min, minimum=0, strict=False)
        if self.tol is not None:
            require_finite_real("tol", self.tol, minimum=0, strict=False)
        if self.output not in ("mean", "best", "sample"):
            raise ValueError(f'output must be "mean", "best" or "sample", got {self.output!r}')
        if not isinstance(self.checkpoint, bool):
            raise TypeError(f"checkpoint must be a bool, got {self.checkpoint!r}")
        if self.grad_iters is not None:
            last = require_int("grad_iters", self.grad_iters)
            if last < 1:
                raise ValueError(f"grad_iters must be None or >= 1, got {last}")
        alpha = require_finite_real("smoothing", self.smoothing, minimum=0, strict=False)
        if alpha >= 1:
            raise ValueError(f"smoothing must satisfy 0 <= smoothing < 1, got smoothing={alpha}")
        if self.elite_temperature is not None:
            require_finite_real("elite_temperature", self.elite_temperature, minimum=0, strict=True)
            if not self.hard:
                raise ValueError(
                    "elite_temperature weights the elites of hard selection: it needs "
                    f"tau=None or tau=0, got tau={self.tau}"
                )
        if not isinstance(self.reuse_buffers, bool):
            raise TypeError(f"reuse_buffers must be a bool, got {self.reuse_buffers!r}")
        if self.reuse_buffers and self.checkpoint:
            raise ValueError(
                "reuse_buffers=True cannot be combined with checkpoint=True: a checkpointed "
                "iteration recomputes its samples in the backward pass, so they cannot live "
                "in a buffer the next iteration overwrites"
            )
        if self.sampling not in ("clip", "truncated", "variance_constrained"):
            raise ValueError(
                'sampling must be "clip", "truncated" or "variance_constrained", '
                f"got {self.sampling!r}"
            )
        if self.std_max is not None:
            cap = require_finite_real("std_max", self.std_max, minimum=0, strict=True)
            if cap < self.std_min:
                raise ValueError(
                    f"std_max must be >= std_min, got std_max={cap}, std_min={self.std_min}"
                )
        rho = require_finite_real("keep_elites", self.keep_elites, minimum=0, strict=False)
        if rho > 1:
            raise ValueError(f"keep_elites must satisfy 0 <= keep_elites <= 1, got {rho}")
        gamma = require_finite_real(
            "population_decay", self.population_decay, minimum=0, strict=True
        )
        if gamma < 1:
            raise ValueError(f"population_decay must be >= 1, got population_decay={gamma}")
        if not isinstance(self.mean_candidate, bool):
            raise TypeError(f"mean_candidate must be a bool, got {self.mean_candidate!r}")

    @property
    def hard(self) -> bool:
        """Hard selection (CEM-4): ``tau`` is ``None`` or the number 0."""
        return self.tau is None or (not isinstance(self.tau, Tensor) and self.tau == 0)

    @property
    def first_recorded(self) -> int:
        """The first iteration whose graph is recorded (CEM-27): ``T − K``, or 0."""
        if self.grad_iters is None or self.grad_iters >= self.n_iter:
            return 0
        return self.n_iter - self.grad_iters

    @property
    def n_kept(self) -> int:
        """``⌊ρ k⌋``, the elites kept into the next iteration (CEM-39)."""
        return math.floor(self.keep_elites * self.n_elite)

    def population(self, iteration: int) -> int:
        """``N_t = min(N, max(⌊N γ^{−t}⌋, 2k))`` (CEM-40); ``N`` when ``γ = 1``."""
        if self.population_decay == 1:
            return self.n_sample
        decayed: int = decayed_population(self.n_sample, self.population_decay, iteration)
        return min(self.n_sample, max(decayed, 2 * self.n_elite))

    def replace(self, **changes: Any) -> CEMOptions:
        """A copy with ``changes`` applied (and validated)."""
        return replace(self, **changes)

    def as_kwargs(self) -> dict[str, Any]:
        """The fields that are keyword arguments of ``impl.dcem.dcem`` (all but
        ``SOLVE_ONLY_FIELDS``, which only ``impl.cem.solve`` reads)."""
        return {
            field.name: getattr(self, field.name)
            for field in fields(self)
            if field.name not in SOLVE_ONLY_FIELDS
        }


SOLVE_ONLY_FIELDS = (
    "reuse_buffers",
    "sampling",
    "std_max",
    "keep_elites",
    "population_decay",
    "mean_candidate",
)
"""``CEMOptions`` fields that ``impl.dcem.dcem`` does not take."""


def _check_tau(tau: object) -> None:
    """``None``, a real ``≥ 0``, or a finite scalar floating tensor (value unchecked:
    reading it would synchronize with an accelerator)."""
    if tau is None:
        return
    if isinstance(tau, Tensor):
        if tau.dim() != 0 or not tau.dtype.is_floating_point:
            raise ValueError(
                f"tau as a tensor must be a floating-point scalar, got shape "
                f"{tuple(tau.shape)} and dtype {tau.dtype}"
            )
        return
    require_real("tau", tau)
    require_finite_real("tau", tau, minimum=0, strict=False)
