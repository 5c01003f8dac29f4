"""Where each iteration's candidates come from (spec/cem.md, CEM-2, CEM-10, CEM-33, CEM-34).

An iteration's ``N`` Gaussian candidates are ``X = clip(μ + σ ⊙ ε, lb, ub)``
(CEM-2, CEM-10), with standard-normal noise ``ε`` from a *noise source*:

- ``WhiteNoise``: ``torch.randn`` from the solve's generator, one ``(B, N, d)``
  draw per iteration (the default);
- ``PreDrawnNoise``: the caller's ``(T, B, N, d)`` tensor, cast to the
  state's dtype (CEM-24);
- ``ColoredNoise``: noise whose spectrum along a planning horizon falls as
  ``1/f^β`` (``impl.control.noise.colored_noise``, iCEM), CEM-33.

The samples meet the box as ``CEMOptions.sampling`` says (CEM-37,
``GaussianSampler``): clipped, truncated at ``±TRUNCATION`` standard
deviations, or truncated with the variance constrained by the bounds.

Injected proposals (CEM-34) are ``P`` caller-supplied candidates per problem
that join the ``N`` Gaussian ones at every iteration (``join_proposals``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from impl._checks import require_finite_real, require_floating_tensor, require_positive_int
from impl.options import Sampling

Shape3 = tuple[int, int, int]


@dataclass(frozen=True)
class Box:
    """Elementwise bounds ``lb ≤ x ≤ ub`` (CEM-10); ``None`` is unbounded.

    Attributes:
        lower, upper: ``(B, d)`` tensors or ``None``.
    """

    lower: Tensor | None = None
    upper: Tensor | None = None

    @property
    def bounded(self) -> bool:
        return self.lower is not None or self.upper is not None

    @property
    def requires_grad(self) -> bool:
        """Whether a bound is part of an autograd graph."""
        return any(t is not None and t.requires_grad for t in (self.lower, self.upper))

    def clip(self, x: Tensor) -> Tensor:
        """``x`` of shape ``(B, d)`` or ``(B, M, d)`` clipped to the box."""
        if not self.bounded:
            return x
        lower, upper = self.lower, self.upper
        if x.dim() == 3:
            lower = None if lower is None else lower.unsqueeze(1)
            upper = None if upper is None else upper.unsqueeze(1)
        return torch.clamp(x, min=lower, max=upper)

    def clip_(self, x: Tensor) -> Tensor:
        """``clip`` in place, for a ``(B, N, d)`` work buffer (no graph may hold it,
        and no bound may require grad)."""
        if self.bounded:
            lower = None if self.lower is None else self.lower.unsqueeze(1)
            upper = None if self.upper is None else self.upper.unsqueeze(1)
            torch.clamp(x, min=lower, max=upper, out=x)
        return x


def gaussian_samples(
    mean: Tensor, std: Tensor, eps: Tensor, box: Box, out: Tensor | None = None
) -> Tensor:
    """``X = clip(μ + σ ⊙ ε, lb, ub)`` (CEM-2, CEM-10), reparameterized.

    Shapes: ``mean, std (B, d)``, ``eps (B, N, d)`` of the state's dtype →
    ``(B, N, d)``. With ``out`` (a work buffer, CEM-28) the samples are
    written into it; no input may then require grad.
    """
    if out is None:
        return box.clip(torch.addcmul(mean.unsqueeze(1), std.unsqueeze(1), eps))
    return box.clip_(torch.addcmul(mean.unsqueeze(1), std.unsqueeze(1), eps, out=out))


TRUNCATION = 2.0
"""``c``: truncated sampling keeps ``|ε| ≤ c`` (mbrl-lib's and PETS's 2σ)."""

_ERF_C = math.erf(TRUNCATION / math.sqrt(2.0))


def truncate_noise(eps: Tensor, inplace: bool = False) -> Tensor:
    """Standard-normal noise mapped to the normal truncated to ``[−c, c]`` (CEM-37).

    ``ε' = Φ⁻¹(Φ(−c) + Φ(ε)(Φ(c) − Φ(−c))) = √2 erfinv(erf(c/√2) · erf(ε/√2))``:
    ``Φ(ε)`` is uniform, so ``ε'`` has the truncated law exactly (inverse
    CDF, no resampling), is monotone and differentiable in ``ε``, and any
    noise source (white, pre-drawn, colored) can be truncated. Same shape.
    ``inplace``: overwrite ``eps`` (a work buffer no graph holds, CEM-28).
    """
    if inplace:
        return eps.mul_(1 / math.sqrt(2.0)).erf_().mul_(_ERF_C).erfinv_().mul_(math.sqrt(2.0))
    return torch.erfinv(torch.erf(eps * (1 / math.sqrt(2.0))) * _ERF_C) * math.sqrt(2.0)


@dataclass(frozen=True)
class GaussianSampler:
    """The ``N`` Gaussian candidates from the noise (CEM-2, CEM-10, CEM-37).

    - ``"clip"``: ``X = clip(μ + σ ⊙ ε, lb, ub)``;
    - ``"truncated"``: ``X = clip(μ + σ ⊙ ε', lb, ub)``, ``ε' = truncate_noise(ε)``;
    - ``"variance_constrained"``: ``X = clip(μ + σ̃ ⊙ ε', lb, ub)`` with
      ``σ̃ = min(σ, max(min(μ − lb, ub − μ), 0) / c)`` (PETS): every sample
      already lies in the box when ``μ`` does.

    Attributes:
        sampling: the mode.
    """

    sampling: Sampling = "clip"

    def effective_std(self, mean: Tensor, std: Tensor, box: Box) -> Tensor:
        """``σ̃`` of ``"variance_constrained"`` (``σ`` otherwise); ``(B, d)``."""
        if self.sampling != "variance_constrained" or not box.bounded:
            return std
        gaps = []
        if box.lower is not None:
            gaps.append(mean - box.lower)
        if box.upper is not None:
            gaps.append(box.upper - mean)
        room = gaps[0] if len(gaps) == 1 else torch.minimum(gaps[0], gaps[1])
        return torch.minimum(std, room.clamp_min(0) / TRUNCATION)

    def __call__(
        self,
        mean: Tensor,
        std: Tensor,
        eps: Tensor,
        box: Box,
        out: Tensor | None = None,
        noise_is_scratch: bool = False,
    ) -> Tensor:
        """``mean, std (B, d)``, ``eps (B, N, d)`` → ``(B, N, d)`` (into ``out`` if
        given); ``noise_is_scratch``: ``eps`` is a work buffer the truncation may
        overwrite (CEM-28)."""
        if self.sampling != "clip":
            eps = truncate_noise(eps, inplace=noise_is_scratch)
        return gaussian_samples(mean, self.effective_std(mean, std, box), eps, box, out)


def join_proposals(samples: Tensor, proposals: Tensor | None) -> Tensor:
    """The ``N`` Gaussian candidates followed by the ``P`` proposals (CEM-34).

    Shapes: ``samples (B, N, d)``, ``proposals (B, P, d)`` (already clipped
    to the box) → ``(B, N + P, d)``.
    """
    if proposals is None:
        return samples
    return torch.cat((samples, proposals.to(samples.dtype)), dim=1)


class NoiseSource(Protocol):
    """Standard-normal noise ``ε_t`` of one iteration."""

    @property
    def uses_generator(self) -> bool:
        """Whether ``draw`` reads the random generator (checkpointing replays it)."""
        ...

    def check(self, n_iter: int, shape: Shape3, device: torch.device) -> None:
        """Raise ``ValueError`` if the source cannot serve ``n_iter`` draws of ``shape``."""
        ...

    def draw(
        self,
        iteration: int,
        shape: Shape3,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | None,
        out: Tensor | None = None,
    ) -> Tensor:
        """``ε_t`` of shape ``shape = (B, N, d)`` and dtype ``dtype``; into
        ``out`` when the source can write there."""
        ...


@dataclass(frozen=True)
class WhiteNoise:
    """Independent standard normals, one ``torch.randn`` of ``(B, N, d)`` per
    iteration from the generator (the global one when ``None``), CEM-2.

    Drawing into a work buffer (``normal_``) gives the same numbers as
    ``torch.randn`` of the same shape from the same generator state.
    """

    @property
    def uses_generator(self) -> bool:
        return True

    def check(self, n_iter: int, shape: Shape3, device: torch.device) -> None:
        return None

    def draw(
        self,
        iteration: int,
        shape: Shape3,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | None,
        out: Tensor | None = None,
    ) -> Tensor:
        if out is None:
            return torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return out.normal_(generator=generator)


@dataclass(frozen=True)
class PreDrawnNoise:
    """The caller's noise ``(T, B, N, d)``: iteration ``t`` uses ``noise[t]``
    (its first ``N_t`` samples, CEM-40) cast to the state's dtype (CEM-2,
    CEM-24). It may require grad."""

    noise: Tensor

    def __post_init__(self) -> None:
        require_floating_tensor("noise", self.noise)

    @property
    def uses_generator(self) -> bool:
        return False

    def check(self, n_iter: int, shape: Shape3, device: torch.device) -> None:
        expected = (n_iter, *shape)
        if tuple(self.noise.shape) != expected:
            raise ValueError(f"noise has shape {tuple(self.noise.shape)}, expected {expected}")
        if self.noise.device != device:
            raise ValueError(f"noise is on {self.noise.device}, init_mean on {device}")

    def draw(
        self,
        iteration: int,
        shape: Shape3,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | None,
        out: Tensor | None = None,
    ) -> Tensor:
        return self.noise[iteration, :, : shape[1]].to(dtype)  # N_t ≤ N (CEM-40)


@dataclass(frozen=True)
class ColoredNoise:
    """Noise with power spectral density ``∝ 1/f^β`` along a planning horizon
    (CEM-33): the ``d = H·n_u`` coordinates are a time-major ``(H, n_u)``
    sequence, and each iteration draws ``colored_noise(1, B, N, H, n_u, β)``
    from the generator. ``β = 0`` is white noise (a different draw order
    than ``WhiteNoise``).

    Attributes:
        beta: ``β ≥ 0``.
        horizon: ``H ≥ 1``.
        action_dim: ``n_u ≥ 1``.
    """

    beta: float
    horizon: int
    action_dim: int

    def __post_init__(self) -> None:
        require_finite_real("beta", self.beta, minimum=0, strict=False)
        require_positive_int("horizon", self.horizon)
        require_positive_int("action_dim", self.action_dim)

    @property
    def uses_generator(self) -> bool:
        return True

    def check(self, n_iter: int, shape: Shape3, device: torch.device) -> None:
        width = self.horizon * self.action_dim
        if shape[2] != width:
            raise ValueError(
                f"ColoredNoise(horizon={self.horizon}, action_dim={self.action_dim}) draws "
                f"{width} coordinates, but the problem has d={shape[2]}"
            )

    def draw(
        self,
        iteration: int,
        shape: Shape3,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | None,
        out: Tensor | None = None,
    ) -> Tensor:
        # Imported here: impl.control's package imports the planners, which
        # import the solver (a cycle at import time).
        from impl.control.noise import colored_noise

        batch, n_sample, _ = shape
        drawn = colored_noise(
            1,
            batch,
            n_sample,
            self.horizon,
            self.action_dim,
            self.beta,
            generator=generator,
            dtype=dtype,
            device=device,
        )
        return drawn[0]
