"""Temporally correlated sampling noise for the planners (spec/control.md, CTL-15).

``colored_noise`` draws standard-normal noise for ``plan(..., noise=...)``
whose power spectral density along the planning horizon falls as ``1/f^β``:
``β = 0`` is the white noise the planners draw by default, ``β ≈ 2`` gives
smooth action sequences. This is the sampling of iCEM (Pinneri et al., 2020,
"Sample-efficient cross-entropy method for real-time planning"), which
reports β between 2 and 4 as good for locomotion. Each action coordinate
gets its own independent sequence.

The construction: independent complex Gaussians at the ``H // 2 + 1``
non-negative frequencies ``f = j / H``, scaled by ``max(f, 1/H)^(−β/2)``, the
zero frequency (and the Nyquist frequency, for even ``H``) kept real, an
inverse real FFT, and a division by the exact standard deviation this gives,
so every entry has variance 1 for every ``β``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from impl._checks import require_finite_real, require_positive_int


def colored_noise(
    n_iter: int,
    batch: int,
    n_sample: int,
    horizon: int,
    action_dim: int,
    beta: float,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Noise ``(T, B, N, H·n_u)`` for ``plan(..., noise=...)``, with PSD ∝ ``1/f^β`` along ``H``.

    Args:
        n_iter, batch, n_sample: ``T``, ``B``, ``N`` of the planner.
        horizon, action_dim: ``H`` and ``n_u``; the last axis is the flattened
            ``(H, n_u)`` sequence, time-major, as ``plan`` expects.
        beta: ``β ≥ 0``, the exponent of the spectrum; 0 is white noise.
        generator, dtype, device: where and how to draw.

    Returns:
        Zero-mean Gaussian noise whose every entry has variance 1, independent
        across iterations, problems, samples and action coordinates, and
        correlated along the horizon as ``β`` says.
    """
    sizes = {
        "n_iter": n_iter,
        "batch": batch,
        "n_sample": n_sample,
        "horizon": horizon,
        "action_dim": action_dim,
    }
    for name, value in sizes.items():
        require_positive_int(name, value)
    exponent = require_finite_real("beta", beta, minimum=0, strict=False)
    lead = (n_iter, batch, n_sample, action_dim)
    if horizon == 1 or exponent == 0:
        white = torch.randn((*lead, horizon), generator=generator, dtype=dtype, device=device)
        return white.transpose(-1, -2).reshape(n_iter, batch, n_sample, horizon * action_dim)
    work = torch.float64
    freqs = torch.fft.rfftfreq(horizon, dtype=work, device=device)
    scale = freqs.clamp_min(1.0 / horizon).pow(-exponent / 2)  # (F,)
    n_freq = freqs.shape[0]
    parts = torch.randn((2, *lead, n_freq), generator=generator, dtype=work, device=device)
    real, imag = parts[0] * scale, parts[1] * scale
    imag[..., 0] = 0.0  # the zero frequency is real
    if horizon % 2 == 0:
        imag[..., -1] = 0.0  # so is the Nyquist frequency
    series: Tensor = torch.fft.irfft(torch.complex(real, imag), n=horizon)  # (..., H)
    # Each entry's variance: (1/H²) Σ_f m_f scale_f², with m_f = 4 for the
    # frequencies that have a mirror image (random real and imaginary parts,
    # counted twice) and 1 for the real ones (zero, and Nyquist for even H).
    multiplicity = torch.full_like(scale, 4.0)
    multiplicity[0] = 1.0
    if horizon % 2 == 0:
        multiplicity[-1] = 1.0
    variance = (multiplicity * scale.square()).sum() / horizon**2
    series = (series / variance.sqrt()).to(dtype)
    return series.transpose(-1, -2).reshape(n_iter, batch, n_sample, horizon * action_dim)
