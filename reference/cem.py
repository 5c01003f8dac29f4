"""Float64 oracle of CEM and DCEM for one problem at a time (spec/cem.md).

The cross-entropy method (Algorithm 1 of Amos & Yarats, ICML 2020) minimizes
``f`` over R^d with a diagonal Gaussian N(mu, diag(std^2)): each iteration
draws N reparameterized samples, evaluates them, selects the k best (hard
top-k: CEM; soft top-k through the LML projection: DCEM) and refits the
Gaussian to the selection (Props. 1 and 3).

Here ``f`` is a NumPy callable mapping candidates of shape (N, d) to values
of shape (N,); lower is better.  There is no batch dimension: the batched
PyTorch product is compared with this oracle one problem at a time (CEM-14).
The noise is always given, so a run is a deterministic function of its
arguments.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm, truncnorm

from reference.lml import FloatArray, lml_bisect

__all__ = [
    "DEFAULT_STD_MIN",
    "LOG_2PI",
    "TRUNCATION",
    "VALUE_NORM_EPS",
    "CEMTrace",
    "cem",
    "constrained_std",
    "gaussian_fit",
    "gaussian_loglik",
    "hard_weights",
    "normalize_values",
    "population",
    "soft_weights",
    "truncated_noise",
]

# Truncated sampling keeps |eps| <= TRUNCATION (CEM-37).
TRUNCATION: float = 2.0


def truncated_noise(eps: ArrayLike) -> FloatArray:
    """Standard-normal draws mapped through their CDF to the normal truncated
    to [-c, c] (CEM-37): F_trunc^{-1}(Phi(eps)), by scipy's truncnorm."""
    u = norm.cdf(np.asarray(eps, dtype=np.float64))
    return np.asarray(truncnorm.ppf(u, -TRUNCATION, TRUNCATION), dtype=np.float64)


def constrained_std(mu: FloatArray, std: FloatArray, lb: FloatArray, ub: FloatArray) -> FloatArray:
    """PETS's sampling std (CEM-37): min(std, max(min(mu - lb, ub - mu), 0) / c)."""
    room = np.maximum(np.minimum(mu - lb, ub - mu), 0.0)
    return np.asarray(np.minimum(std, room / TRUNCATION), dtype=np.float64)


def population(n: int, k: int, decay: float, t: int) -> int:
    """N_t = min(N, max(floor(N decay^-t), 2k)) (CEM-40), the floor taken exactly."""
    if decay == 1.0:
        return n
    exact = Fraction(n) / Fraction(decay) ** t  # the float decay's exact value, no rounding
    return min(n, max(math.floor(exact), 2 * k))


# The constant added to the standard deviation when normalizing the values
# (CEM-3): the paper's (and the authors' code's) 1e-6.
VALUE_NORM_EPS: float = 1e-6

# Default floor on the updated standard deviation (CEM-11, DEFAULT_STD_MIN).
DEFAULT_STD_MIN: float = 1e-6

# log(2 pi), the normalizing constant of the Gaussian density.
LOG_2PI: float = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------
# Selection (CEM-3, CEM-4, CEM-5, CEM-12)
# ---------------------------------------------------------------------------


def _as_values(v: ArrayLike) -> FloatArray:
    """Return the values as a float64 vector of shape (N,)."""
    arr = np.array(v, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"values must have shape (N,), got shape {arr.shape}")
    return arr


def _check_n_elite(k: object, n: int) -> int:
    """The number of elites must be an int (not a bool) with 1 <= k <= n - 1 (CEM-22)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"n_elite must be an int, got {k!r} of type {type(k).__name__}")
    if not 1 <= int(k) <= n - 1:
        raise ValueError(
            f"n_elite must satisfy 1 <= n_elite <= n_sample - 1, got {k} with n_sample={n}"
        )
    return int(k)


def normalize_values(v: FloatArray) -> FloatArray:
    """Standardize the values of one iteration (CEM-3).

        v~_i = (v_i - mean) / (std + VALUE_NORM_EPS)

    where mean and the unbiased (ddof = 1, divisor m - 1) standard deviation
    are taken over the m finite entries of v only (CEM-12).  Non-finite
    entries are returned unchanged (callers rank them worst).  With fewer than
    two finite entries the unbiased std is undefined and v is returned as is.

    Parameters
    ----------
    v : float64 array of shape (N,)

    Returns
    -------
    float64 array of shape (N,) (a new array)
    """
    out = _as_values(v)
    finite = np.isfinite(out)
    if np.count_nonzero(finite) < 2:
        return out
    # The same numbers computed on u = v/m (m the largest finite magnitude), so
    # that finite values up to the float64 maximum cannot overflow the mean or
    # the standard deviation: (v - mean)/(std + eps) = (u - mean_u)/(std_u + eps/m).
    m = float(np.max(np.abs(out[finite])))
    if m == 0.0:
        out[finite] = 0.0
        return out
    u = out[finite] / m
    mean = float(np.mean(u))
    std = float(np.std(u, ddof=1))
    out[finite] = (u - mean) / (std + VALUE_NORM_EPS / m)
    return out


def hard_weights(v: FloatArray, k: int) -> FloatArray:
    """Hard CEM weights: the indicator of the k lowest values (CEM-4, eq. 2).

    Non-finite values (NaN, +-inf) rank after every finite value (CEM-12).
    Ties (equal values, or two non-finite values) go to the lower index: the
    ranking is a stable argsort.

    Parameters
    ----------
    v : float64 array of shape (N,)
    k : int, 1 <= k <= N - 1

    Returns
    -------
    float64 array of shape (N,) with k ones and N - k zeros
        (fewer than k of the ones sit on finite values when v has fewer
        than k finite entries; `cem` then skips the update).
    """
    values = _as_values(v)
    k_int = _check_n_elite(k, values.shape[0])
    # Every non-finite value becomes +inf, which no finite value reaches.
    keys = np.where(np.isfinite(values), values, np.inf)
    order = np.argsort(keys, kind="stable")
    weights = np.zeros_like(values)
    weights[order[:k_int]] = 1.0
    return weights


def exponential_elite_weights(
    v: FloatArray, k: int, temperature: float, normalize: bool = True
) -> FloatArray:
    """MPPI-style elite weights (CEM-30): the k elites of hard_weights, each
    weighted by exp(-s_i / temperature), scaled to sum to k, where s is
    normalize_values(v) (CEM-3) or v.

    Written out with the best elite's score subtracted before exp (the
    ratio is unchanged), so no term overflows.

    Parameters
    ----------
    v : float64 array of shape (N,)
    k : int, 1 <= k <= N - 1
    temperature : float > 0
    normalize : bool

    Returns
    -------
    float64 array of shape (N,), >= 0, zero outside the elites, summing to k
        (when v has at least k finite entries; `cem` skips the update otherwise).
    """
    values = _as_values(v)
    elites = hard_weights(values, k) > 0
    finite = np.isfinite(values)
    scores = normalize_values(values) if normalize else np.where(finite, values, 0.0)
    scores = np.where(finite, scores, 0.0)
    best = scores[elites].min()
    weights = np.zeros_like(values)
    with np.errstate(over="ignore"):  # a tiny temperature: exp(-inf) = 0, the limit
        weights[elites] = np.exp(-(scores[elites] - best) / temperature)
    result: FloatArray = k * weights / weights.sum()
    return result


def soft_weights(v: FloatArray, k: int, tau: float, normalize: bool = True) -> FloatArray:
    """Soft DCEM weights: I = Pi_L(-v~/tau) = lml(-v~, k, tau) (CEM-5, eq. 5).

    The scores are -normalize_values(v) (CEM-3) or -v (normalize=False); the
    negation makes the lowest values the elites (the paper's Pi_L(v/tau) is
    a sign typo).  Every non-finite value becomes the score -inf, so it gets
    weight exactly 0 (CEM-12, LML-15).

    Parameters
    ----------
    v : float64 array of shape (N,)
    k : int, 1 <= k <= N - 1
    tau : float > 0
    normalize : bool

    Returns
    -------
    float64 array of shape (N,), in [0, 1], summing to k
        All NaN when v has fewer than k + 1 finite entries (LML-15);
        `cem` then skips the update.
    """
    values = _as_values(v)
    k_int = _check_n_elite(k, values.shape[0])
    scores = -(normalize_values(values) if normalize else values)
    scores[~np.isfinite(values)] = -np.inf
    return lml_bisect(scores, k_int, tau)


# ---------------------------------------------------------------------------
# Gaussian fit (CEM-6, CEM-7, CEM-8, CEM-11)
# ---------------------------------------------------------------------------


def gaussian_fit(
    X: FloatArray, w: FloatArray, k: int, std_min: float
) -> tuple[FloatArray, FloatArray]:
    """Weighted diagonal-Gaussian refit (CEM-6; Props. 1 and 3).

        mu    = (1/k) sum_i w_i X_i
        var   = (1/k) sum_i w_i (X_i - mu)^2          (per coordinate)
        std   = max(sqrt(var), std_min)              (CEM-11)

    With sum(w) = k this is the maximizer of the weighted log-likelihood
    (see :func:`gaussian_loglik`) before the floor.

    Parameters
    ----------
    X : float64 array of shape (N, d)   samples
    w : float64 array of shape (N,)     weights (hard or soft, sum k)
    k : int                             the number of elites (the divisor)
    std_min : float >= 0                floor on the returned std

    Returns
    -------
    (mu, std) : two float64 arrays of shape (d,)
    """
    samples = np.asarray(X, dtype=np.float64)
    weights = np.asarray(w, dtype=np.float64)
    if samples.ndim != 2 or weights.shape != (samples.shape[0],):
        raise ValueError(
            f"need X of shape (N, d) and w of shape (N,), got {samples.shape}, {weights.shape}"
        )
    mu = np.sum(weights[:, np.newaxis] * samples, axis=0) / k
    var = np.sum(weights[:, np.newaxis] * (samples - mu) ** 2, axis=0) / k
    std = np.maximum(np.sqrt(var), std_min)  # max(std, std_min): no square to overflow
    return mu, std


def gaussian_loglik(X: FloatArray, w: FloatArray, mu: FloatArray, var: FloatArray) -> float:
    """Weighted diagonal-Gaussian log-likelihood (CEM-7, CEM-8).

        L(mu, var) = sum_i w_i log N(X_i; mu, diag(var))
                   = sum_i w_i sum_j [ -1/2 log(2 pi var_j)
                                       - (X_ij - mu_j)^2 / (2 var_j) ]

    Parameters
    ----------
    X : float64 array of shape (N, d)
    w : float64 array of shape (N,)
    mu : float64 array of shape (d,)
    var : float64 array of shape (d,), > 0

    Returns
    -------
    float
    """
    samples = np.asarray(X, dtype=np.float64)
    weights = np.asarray(w, dtype=np.float64)
    mean = np.asarray(mu, dtype=np.float64)
    variance = np.asarray(var, dtype=np.float64)
    per_sample = np.sum(
        -0.5 * (LOG_2PI + np.log(variance)) - (samples - mean) ** 2 / (2.0 * variance), axis=1
    )
    return float(np.sum(weights * per_sample))


# ---------------------------------------------------------------------------
# The CEM / DCEM loop
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CEMTrace:
    """Everything one run of :func:`cem` computed (T = noise.shape[0]).

    Attributes
    ----------
    means : (T+1, d)    means[0] = mean0, means[t+1] = mean after iteration t
    stds : (T+1, d)     stds[0] = std0, stds[t+1] = std after iteration t
    samples : (T, M, d) the clipped candidates X_t of each iteration: the N
                        Gaussian samples, then the P proposals (M = N + P)
    values : (T, M)     f(X_t)
    weights : (T, M)    the hard or soft weights I_t
    best_x : (d,)       the sample with the lowest finite value (CEM-16)
    best_value : float  its value, +inf if no value was ever finite
    n_iter : int        iterations run, <= T (CEM-13)
    converged : bool    whether the run stopped by the tolerance (CEM-13)
    kept : (K, d)       the elites kept from the last iteration run (CEM-39)
    sample : (d,)|None  the draw from the final distribution (CEM-42)

    With a population decay, kept elites or the mean candidate (CEM-39 -
    CEM-41) the iterations have different candidate counts M_t; samples,
    values and weights are padded with NaN to the largest.

    After a convergence at iteration n_iter - 1, the rows means[n_iter + 1:]
    and stds[n_iter + 1:] repeat the final state and the rows of samples,
    values and weights for the iterations not run are NaN.  The arrays are
    read-only.
    """

    means: FloatArray
    stds: FloatArray
    samples: FloatArray
    values: FloatArray
    weights: FloatArray
    best_x: FloatArray
    best_value: float
    n_iter: int
    converged: bool
    kept: FloatArray | None = None
    sample: FloatArray | None = None

    @property
    def mean(self) -> FloatArray:
        """The final mean mu_{T+1}, shape (d,) (CEM-15)."""
        final: FloatArray = self.means[-1]
        return final

    @property
    def std(self) -> FloatArray:
        """The final standard deviation sigma_{T+1}, shape (d,) (CEM-15)."""
        final: FloatArray = self.stds[-1]
        return final


def _check_real(name: str, value: object) -> float:
    """A real number (not a bool) that is finite, else TypeError / ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    as_float = float(value)
    if not math.isfinite(as_float):
        raise ValueError(f"{name} must be finite, got {name}={as_float!r}")
    return as_float


def _vector(name: str, value: ArrayLike | None, d: int, fill: float) -> FloatArray:
    """Broadcast a number, a (d,) array or None (-> ``fill``) to shape (d,)."""
    if value is None:
        return np.full(d, fill, dtype=np.float64)
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape != (d,)):
        raise ValueError(f"{name} must be a number or have shape ({d},), got shape {arr.shape}")
    return np.broadcast_to(arr, (d,)).copy()


class _CEMArgs(NamedTuple):
    """The validated arguments of :func:`cem`, as float64 arrays and floats."""

    mean0: FloatArray  # (d,)
    std0: FloatArray  # (d,)
    noise: FloatArray  # (T, N, d)
    n_elite: int
    tau: float | None
    lb: FloatArray  # (d,), -inf where unbounded
    ub: FloatArray  # (d,), +inf where unbounded
    std_min: float
    tol: float | None
    smoothing: float
    elite_temperature: float | None


def _check_cem_args(
    mean0: ArrayLike,
    std0: ArrayLike,
    noise: ArrayLike,
    n_elite: object,
    tau: object,
    lb: ArrayLike | None,
    ub: ArrayLike | None,
    std_min: object,
    tol: object,
    smoothing: object = 0.0,
    elite_temperature: object = None,
) -> _CEMArgs:
    """Validate and convert the arguments of :func:`cem` (CEM-22)."""
    eps = np.asarray(noise, dtype=np.float64)
    if eps.ndim != 3:
        raise ValueError(f"noise must have shape (T, N, d), got shape {eps.shape}")
    n_iter, n_sample, d = eps.shape
    if n_iter < 1 or d < 1:
        raise ValueError(f"noise must have T >= 1 and d >= 1, got shape {eps.shape}")
    if not np.isfinite(eps).all():
        raise ValueError("noise must be finite")
    mu0 = np.asarray(mean0, dtype=np.float64)
    if mu0.shape != (d,):
        raise ValueError(f"mean0 must have shape ({d},) to match noise, got shape {mu0.shape}")
    sigma0 = _vector("std0", std0, d, math.nan)
    if not (np.isfinite(mu0).all() and np.isfinite(sigma0).all() and (sigma0 >= 0).all()):
        raise ValueError("mean0 and std0 must be finite, and std0 >= 0")
    k = _check_n_elite(n_elite, n_sample)
    tau_f = None if tau is None else _check_real("tau", tau)
    if tau_f is not None and tau_f < 0.0:
        raise ValueError(f"tau must be None or >= 0, got tau={tau_f!r}")
    lower, upper = _vector("lb", lb, d, -math.inf), _vector("ub", ub, d, math.inf)
    if not (lower < upper).all():
        raise ValueError(f"lb < ub is required elementwise, got lb={lower}, ub={upper}")
    floor = _check_real("std_min", std_min)
    if floor < 0.0:
        raise ValueError(f"std_min must be >= 0, got std_min={floor!r}")
    tol_f = None if tol is None else _check_real("tol", tol)
    if tol_f is not None and tol_f < 0.0:
        raise ValueError(f"tol must be None or >= 0, got tol={tol_f!r}")
    alpha = _check_real("smoothing", smoothing)
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"smoothing must satisfy 0 <= smoothing < 1, got smoothing={alpha!r}")
    lam = None if elite_temperature is None else _check_real("elite_temperature", elite_temperature)
    if lam is not None and lam <= 0.0:
        raise ValueError(f"elite_temperature must be > 0, got elite_temperature={lam!r}")
    if lam is not None and tau_f:
        raise ValueError(
            f"elite_temperature needs hard selection (tau None or 0), got tau={tau_f!r}"
        )
    return _CEMArgs(mu0, sigma0, eps, k, tau_f, lower, upper, floor, tol_f, alpha, lam)


def cem(
    f: Callable[[FloatArray], ArrayLike],
    mean0: FloatArray,
    std0: FloatArray | float,
    noise: FloatArray,
    *,
    n_elite: int,
    tau: float | None,
    lb: FloatArray | float | None = None,
    ub: FloatArray | float | None = None,
    normalize: bool = True,
    std_min: float = DEFAULT_STD_MIN,
    tol: float | None = None,
    smoothing: float = 0.0,
    elite_temperature: float | None = None,
    proposals: FloatArray | None = None,
    sampling: str = "clip",
    std_max: float | None = None,
    keep_elites: float = 0.0,
    population_decay: float = 1.0,
    mean_candidate: bool = False,
    elites: FloatArray | None = None,
    sample_noise: FloatArray | None = None,
) -> CEMTrace:
    """Run CEM (tau None or 0) or DCEM (tau > 0) on one problem (Algorithm 1).

    For t = 0, ..., T-1 (with k = n_elite):

    1. X_t = clip(mu_t + s_t * e_t, lb, ub)                      (CEM-2, CEM-10)
       with e_t = noise[t, :N_t] (N_t = population(N, k, decay, t), CEM-40),
       truncated by truncated_noise unless sampling == "clip", and
       s_t = constrained_std(mu_t, std_t, lb, ub) for "variance_constrained",
       else std_t                                                  (CEM-37);
       followed by the P rows of clip(proposals, lb, ub), if given  (CEM-34),
       the kept elites of the previous iteration (at t = 0: clip(elites))
       (CEM-39), and clip(mu_t) at t = T - 1 if mean_candidate      (CEM-41)
    2. v_t = f(X_t), which must have shape (M,), M = N + P
    3. I_t = hard_weights(v_t, k)                      if tau is None or 0 (CEM-4)
       I_t = exponential_elite_weights(v_t, k, elite_temperature, normalize)
                                            if, besides, elite_temperature is set (CEM-30)
       I_t = soft_weights(v_t, k, tau, normalize)      otherwise  (CEM-3, CEM-5)
    4. if v_t has at least k (hard) or k + 1 (soft) finite entries,
       (mu_hat, std_hat) = gaussian_fit(X_t, I_t, k, std_min)    (CEM-6, CEM-11),
       mu_{t+1}  = clip(a * mu_t  + (1 - a) * mu_hat, lb, ub)      (CEM-29, CEM-10)
       std_{t+1} = max(a * std_t + (1 - a) * std_hat, std_min)     with a = smoothing,
       then min(std_{t+1}, std_max) if std_max is given            (CEM-38);
       otherwise the distribution is left unchanged                (CEM-12)
    5. best_x / best_value: replaced by a sample whose finite value is
       strictly lower than the best so far, scanning samples in index order,
       so the earliest wins ties                                    (CEM-16);
       kept: the floor(keep_elites * k) candidates of X_t with the lowest
       values (non-finite last), lowest first                      (CEM-39)
    6. if tol is given and the update of step 4 was applied and moved no
       coordinate of mu or std (after smoothing) by more than tol, the run has converged and
       stops after this iteration                                   (CEM-13)

    Parameters
    ----------
    f : callable, (N, d) float64 array -> (N,) values; lower is better
    mean0 : (d,) initial mean mu_0
    std0 : (d,) or a number, initial standard deviation std_0 >= 0
    noise : (T, N, d) standard-normal noise; fixes T and N
    n_elite : int k, 1 <= k <= N - 1
    tau : None or a number >= 0 -- None or 0 is hard CEM, > 0 is DCEM
    lb, ub : None, a number, or (d,) bounds of the box, lb < ub (CEM-10)
    normalize : whether to standardize the values before soft selection
        (CEM-3; hard selection does not depend on it)
    std_min : floor on every updated std (CEM-11)
    tol : None, or the convergence tolerance >= 0 (CEM-13)
    smoothing : a in [0, 1), the share of the previous distribution kept by
        each update (CEM-29); 0 is the plain update
    elite_temperature : None, or lambda > 0 for exponentially weighted hard
        elites (CEM-30; needs tau None or 0)
    proposals : None, or (P, d) candidates joined to the N samples of every
        iteration, clipped to the box and ranked with them (CEM-34)

    sampling, std_max, keep_elites, population_decay, mean_candidate :
        as ``impl.options.CEMOptions`` (CEM-37 - CEM-41)
    elites : None, or (K, d) candidates of the first iteration (CEM-39)
    sample_noise : None, or (d,) standard-normal noise: ``sample`` is then
        the final distribution's draw on it, sampled as in step 1 (CEM-42)

    Returns
    -------
    CEMTrace
    """
    mu, std, eps, k, tau_f, lower, upper, floor, tol_f, alpha, lam = _check_cem_args(
        mean0, std0, noise, n_elite, tau, lb, ub, std_min, tol, smoothing, elite_temperature
    )
    n_iter_max, n_gauss, d = eps.shape
    if sampling not in ("clip", "truncated", "variance_constrained"):
        raise ValueError(f"unknown sampling {sampling!r}")
    extra = np.zeros((0, d))
    if proposals is not None:
        extra = np.asarray(proposals, dtype=np.float64)
        if extra.ndim != 2 or extra.shape[1] != d or extra.shape[0] < 1:
            raise ValueError(f"proposals must have shape (P, {d}) with P >= 1, got {extra.shape}")
        extra = np.clip(extra, lower, upper)
    kept = np.zeros((0, d))
    if elites is not None:
        kept = np.clip(np.asarray(elites, dtype=np.float64).reshape(-1, d), lower, upper)
    n_kept = math.floor(keep_elites * k)
    n_max = n_gauss + extra.shape[0] + max(kept.shape[0], n_kept) + int(mean_candidate)
    # Soft selection needs a finite (k+1)-th largest score (LML-15).
    min_finite = k if tau_f is None or tau_f == 0.0 else k + 1

    def draw(mu: FloatArray, std: FloatArray, e: FloatArray) -> FloatArray:
        if sampling != "clip":
            e = truncated_noise(e)
        s = constrained_std(mu, std, lower, upper) if sampling == "variance_constrained" else std
        return np.asarray(np.clip(mu + s * e, lower, upper), dtype=np.float64)

    means = np.empty((n_iter_max + 1, d))
    stds = np.empty((n_iter_max + 1, d))
    samples = np.full((n_iter_max, n_max, d), np.nan)
    values = np.full((n_iter_max, n_max), np.nan)
    weights = np.full((n_iter_max, n_max), np.nan)
    means[0], stds[0] = mu, std
    best_x, best_value = np.clip(mu, lower, upper), math.inf  # CEM-16: none seen yet
    n_iter, converged = 0, False

    for t in range(n_iter_max):
        n_t = population(n_gauss, k, population_decay, t)
        parts = [draw(mu, std, eps[t, :n_t]), extra, kept]
        if mean_candidate and t == n_iter_max - 1:
            parts.append(np.clip(mu, lower, upper)[None])
        X = np.concatenate(parts)
        m_t = X.shape[0]
        v = np.asarray(f(X.copy()), dtype=np.float64)
        if v.shape != (m_t,):
            raise ValueError(f"f must return values of shape ({m_t},), got shape {v.shape}")
        if (tau_f is None or tau_f == 0.0) and lam is not None:
            w = exponential_elite_weights(v, k, lam, normalize)
        elif tau_f is None or tau_f == 0.0:
            w = hard_weights(v, k)
        else:
            w = soft_weights(v, k, tau_f, normalize)
        samples[t, :m_t], values[t, :m_t], weights[t, :m_t] = X, v, w
        n_iter = t + 1

        for i in range(m_t):
            if math.isfinite(v[i]) and v[i] < best_value:
                best_x, best_value = X[i].copy(), float(v[i])
        ranked = np.where(np.isfinite(v), v, np.inf)
        kept = X[np.argsort(ranked, kind="stable")[:n_kept]].copy()

        if np.count_nonzero(np.isfinite(v)) >= min_finite:
            fit_mu, fit_std = gaussian_fit(X, w, k, floor)
            new_mu = np.clip(alpha * mu + (1.0 - alpha) * fit_mu, lower, upper)  # CEM-10
            new_std = np.maximum(alpha * std + (1.0 - alpha) * fit_std, floor)
            if std_max is not None:
                new_std = np.minimum(new_std, std_max)
            change = max(float(np.max(np.abs(new_mu - mu))), float(np.max(np.abs(new_std - std))))
            mu, std = new_mu, new_std
            converged = tol_f is not None and change <= tol_f
        means[t + 1], stds[t + 1] = mu, std
        if converged:
            break

    sample = None
    if sample_noise is not None:
        sample = draw(mu, std, np.asarray(sample_noise, dtype=np.float64)[None])[0]
    means[n_iter + 1 :], stds[n_iter + 1 :] = mu, std
    for array in (means, stds, samples, values, weights, best_x):
        array.setflags(write=False)
    return CEMTrace(
        means=means,
        stds=stds,
        samples=samples,
        values=values,
        weights=weights,
        best_x=best_x,
        best_value=best_value,
        n_iter=n_iter,
        converged=converged,
        kept=kept,
        sample=sample,
    )
