"""One way to run the reference CEM with a solver's ``CEMOptions``.

Tests that compare ``impl.cem.solve`` with ``reference.cem.cem`` on one
problem ``b`` of a batch pass the same options here, so that every option
the solver takes reaches the reference under its own name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from impl.options import CEMOptions

ref_cem = importlib.import_module("reference.cem")


def _row(a: np.ndarray | float | None, b: int) -> Any:
    """Problem ``b``'s slice of a per-problem array; numbers and ``None`` as they are."""
    return a[b] if isinstance(a, np.ndarray) else a


def reference_run(
    f: Callable[[np.ndarray], np.ndarray],
    options: CEMOptions,
    b: int,
    mean0: np.ndarray,
    std0: np.ndarray,
    noise: np.ndarray,
    *,
    tau: float | None,
    lb: np.ndarray | float | None = None,
    ub: np.ndarray | float | None = None,
    proposals: np.ndarray | None = None,
    elites: np.ndarray | None = None,
    sample_noise: np.ndarray | None = None,
) -> Any:
    """``reference.cem.cem`` on problem ``b``: ``mean0, std0 (B, d)``,
    ``noise (T, B, N, d)``, bounds numbers or ``(B, d)``, ``proposals`` and
    ``elites (B, M, d)``, ``sample_noise (B, d)`` (CEM-42); ``tau`` as a
    number (the options may hold it as a tensor)."""
    return ref_cem.cem(
        f,
        mean0[b],
        std0[b],
        noise[:, b],
        n_elite=options.n_elite,
        tau=tau,
        lb=_row(lb, b),
        ub=_row(ub, b),
        normalize=options.normalize,
        std_min=options.std_min,
        tol=options.tol,
        smoothing=options.smoothing,
        elite_temperature=options.elite_temperature,
        proposals=_row(proposals, b),
        sampling=options.sampling,
        std_max=options.std_max,
        keep_elites=options.keep_elites,
        population_decay=options.population_decay,
        mean_candidate=options.mean_candidate,
        elites=_row(elites, b),
        sample_noise=_row(sample_noise, b),
    )
