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

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from torch import Tensor

from impl._checks import require_finite_real, require_int, require_real

DEFAULT_STD_MIN = 1e-6
"""Default σ floor (CEM-11): below it a float32 sample of magnitude up to 8
(ulp 9.5e-7) no longer moves, so the distribution has collapsed anyway."""

Output = Literal["mean", "best"]


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
        output: return the final ``"mean"`` or the ``"best"`` sample (CEM-16).
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
        if self.output not in ("mean", "best"):
            raise ValueError(f'output must be "mean" or "best", got {self.output!r}')
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

    def replace(self, **changes: Any) -> CEMOptions:
        """A copy with ``changes`` applied (and validated)."""
        return replace(self, **changes)

    def as_kwargs(self) -> dict[str, Any]:
        """The fields that are keyword arguments of ``impl.dcem.dcem`` (all but
        ``reuse_buffers``, which only ``impl.cem.solve`` reads)."""
        return {
            field.name: getattr(self, field.name)
            for field in fields(self)
            if field.name not in SOLVE_ONLY_FIELDS
        }


SOLVE_ONLY_FIELDS = ("reuse_buffers",)
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
