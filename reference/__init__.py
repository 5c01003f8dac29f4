"""NumPy (float64) + CVXPY oracle of the LML projection and of CEM/DCEM.

Slow and written to be obviously correct: it is what ``impl`` is tested
against (see ``spec/lml.md`` and ``spec/cem.md``).  No PyTorch here.
"""

from reference.cem import (
    VALUE_NORM_EPS,
    CEMTrace,
    cem,
    gaussian_fit,
    gaussian_loglik,
    hard_weights,
    normalize_values,
    soft_weights,
)
from reference.lml import (
    FloatArray,
    hard_topk_indicator,
    lml_bisect,
    lml_cvxpy,
    lml_jacobian,
    lml_threshold,
    lml_vjp,
)

__all__ = [
    "VALUE_NORM_EPS",
    "CEMTrace",
    "FloatArray",
    "cem",
    "gaussian_fit",
    "gaussian_loglik",
    "hard_topk_indicator",
    "hard_weights",
    "lml_bisect",
    "lml_cvxpy",
    "lml_jacobian",
    "lml_threshold",
    "lml_vjp",
    "normalize_values",
    "soft_weights",
]
