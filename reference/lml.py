"""Float64 oracle of the temperature-scaled LML projection (soft top-k).

The projection of ``spec/lml.md`` (eq. 4 of Amos & Yarats, ICML 2020) is

    Pi_L(x/tau) = argmin_{0<y<1}  -x^T y - tau H_b(y)   s.t.  1^T y = k,

computed here in two independent ways:

* :func:`lml_bisect` -- the KKT form of LML-2, ``y_i = sigmoid((x_i - t)/tau)``,
  with the threshold ``t`` found by plain bisection to full float64
  resolution (:func:`lml_threshold`);
* :func:`lml_cvxpy` -- eq. 4 handed to CVXPY as a convex program (binary
  entropy on the exponential cone, solved by Clarabel), for finite 1-D
  inputs.

plus the closed-form implicit derivatives of LML-12 (:func:`lml_jacobian`,
:func:`lml_vjp`) and the hard top-k limit of LML-11
(:func:`hard_topk_indicator`).

Everything is float64 NumPy, written for clarity rather than speed: rows are
processed one at a time in Python loops.
"""

from __future__ import annotations

import math
import numbers
import warnings

import cvxpy as cp
import numpy as np
from cvxpy.atoms.affine.sum import sum as cvx_sum
from cvxpy.atoms.elementwise.entr import entr
from cvxpy.error import SolverError
from numpy.typing import NDArray
from scipy.special import expit

FloatArray = NDArray[np.float64]

__all__ = [
    "BRACKET_SLACK",
    "CVXPY_MAX_ITER",
    "CVXPY_TOLERANCE",
    "MAX_BISECTION_STEPS",
    "FloatArray",
    "hard_topk_indicator",
    "lml_bisect",
    "lml_cvxpy",
    "lml_jacobian",
    "lml_tau_derivative",
    "lml_threshold",
    "lml_vjp",
]

# Upper bound on the bisection steps of one row.  The bracket is at most
# 2 * max_float ~ 2**1025 wide and bisection stops when no float lies strictly
# between its ends, which are then at least the smallest subnormal spacing
# 2**-1074 apart.  Every step halves the width (up to one rounding), so
# 1025 + 1074 = 2099 steps always suffice; 2200 leaves a margin.  A typical
# row (t of order one, bracket width of order ten) needs about 57 steps.
MAX_BISECTION_STEPS: int = 2200

# Extra width, in units of tau, added to each end of the bracket of LML-2 (see
# `_bracket`).  The bracket is valid without it in exact arithmetic; the
# margin makes the signs of g at the computed (rounded) ends strict whenever
# tau is not negligible against |x| in float64 (|x|/tau << 1/eps_64).
BRACKET_SLACK: float = 1.0

# Clarabel's stopping tolerances (absolute and relative duality gap, primal and
# dual feasibility) for `lml_cvxpy`; Clarabel's defaults are 1e-8.  The error
# in y of an interior-point solution grows like the square root of the gap
# (the objective is quadratic near its maximizer), so the defaults leave y
# off by ~1e-4 and 1e-10 by ~1e-5.  At 1e-12 the solutions Clarabel reports
# `optimal` were measured within 1e-7 of the bisection (see `lml_cvxpy`).
CVXPY_TOLERANCE: float = 1e-12

# Clarabel's iteration cap for `lml_cvxpy` (its default is 200).
CVXPY_MAX_ITER: int = 500


# ---------------------------------------------------------------------------
# Argument checks (LML-17)
# ---------------------------------------------------------------------------


def _as_float_array(x: object, name: str = "x") -> FloatArray:
    """Return ``x`` as a float64 array; a non-floating dtype is a TypeError.

    Inputs of any real floating dtype (float16, float32, float64, ...) are
    accepted and promoted to float64: the reference always computes in
    float64.  A zero-dimensional input is a ValueError (LML-17).
    """
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")
    return arr.astype(np.float64, copy=True)


def _check_k(k: object, n: int) -> int:
    """Validate the number of selected entries ``k`` for rows of length ``n``.

    LML-17: ``k`` must be an integer but not a ``bool`` (TypeError), with
    ``0 < k < n`` (ValueError naming ``k`` and ``n``).
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int (not a bool), got {k!r} of type {type(k).__name__}")
    k_int = int(k)
    if not 0 < k_int < n:
        raise ValueError(f"k must satisfy 0 < k < n, got k={k_int} with n={n}")
    return k_int


def _check_tau(tau: object) -> float:
    """Validate the temperature: a finite real number ``tau > 0`` (LML-17)."""
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real):
        raise TypeError(f"tau must be a real number, got {tau!r} of type {type(tau).__name__}")
    tau_f = float(tau)
    if not math.isfinite(tau_f) or tau_f <= 0.0:
        raise ValueError(f"tau must be finite and > 0, got tau={tau_f!r}")
    return tau_f


# ---------------------------------------------------------------------------
# Threshold by bisection (LML-2, LML-15)
# ---------------------------------------------------------------------------


def _residual(z: FloatArray, n_pos_inf: int, k: int, u: float) -> float:
    """g(u) = sum_i sigmoid(z_i - u) - k for one row, rounded once.

    ``z`` holds the scaled scores ``(x_i - c)/tau`` of the row's finite
    entries, shape (m,) (an entry may be +-inf where the quotient overflows:
    its sigmoid is then exactly 1 or 0); the ``n_pos_inf`` entries equal to
    +inf contribute 1 each and the -inf entries 0 (LML-15).

    The sum is evaluated as (LML-19, step 4)

        #{a_i >= 0} - sum_{a_i >= 0} sigmoid(-a_i) + sum_{a_i < 0} sigmoid(a_i),

    with a = z - u, using sigmoid(a) = 1 - sigmoid(-a), so that every term is
    a sigmoid of a non-positive argument (accurate to a relative eps_64, never
    rounded near 1), and all terms are added by ``math.fsum``, which returns
    their exact sum rounded once.  The sign of the result is therefore
    trustworthy down to the rounding of the individual sigmoids.
    """
    a = z - u
    upper = a >= 0.0
    terms = np.concatenate([-expit(-a[upper]), expit(a[~upper])])
    count = n_pos_inf + int(np.count_nonzero(upper)) - k
    return math.fsum([float(count), *terms.tolist()])


def _centred(row: FloatArray, k: int, tau: float) -> tuple[float, FloatArray]:
    """The centre ``c`` and the scaled scores ``z = (x - c)/tau`` of a valid row.

    ``c`` is the midpoint of the k-th and (k+1)-th largest entries (halves
    added, so it cannot overflow).  Searching the offset ``u = (t - c)/tau``
    instead of ``t`` keeps the bisection's resolution relative to tau: in
    units of ``t`` a tiny tau would leave no float between two adjacent
    scores, and a huge one would push the bracket past the float range.
    ``x - c`` is formed exactly where it does not overflow and as
    ``2 ((x/2 - c/2)/tau)`` where it does; a quotient beyond the float range
    is +-inf, whose sigmoid is the exact limit.  Infinite entries stay infinite.
    """
    descending = np.sort(row)[::-1]
    c = 0.5 * float(descending[k - 1]) + 0.5 * float(descending[k])
    with np.errstate(over="ignore", invalid="ignore"):
        difference = row - c
        z = difference / tau
        wide = np.isinf(difference) & np.isfinite(row)
        z[wide] = ((0.5 * row[wide] - 0.5 * c) / tau) * 2.0
    return c, z


def _bracket(z: FloatArray, k: int) -> tuple[float, float]:
    """An interval [lo, hi] of offsets u that contains the root of g, for one valid row.

    Let z_(1) >= ... >= z_(n) be the scaled scores sorted in decreasing order
    (with +-inf entries; z_(k) >= 0 >= z_(k+1) are finite here unless the
    scaling overflowed), n = len(z).  Then

        lo = z_(k+1) - log(k),      hi = z_(k) + log(n - k)

    bracket the root (the bracket of LML-19, step 2, in units of tau):

    * at u = lo, each of the k+1 largest entries has z_i - u >= log k, so
      sigmoid >= k/(k+1) (a +inf entry gives exactly 1); these k+1 terms
      alone sum to at least k and the others are >= 0, so g(lo) >= 0;
    * at u = hi, each of the n-k+1 smallest entries has z_i - u <= -log(n-k),
      so sigmoid <= 1/(n-k+1) (a -inf entry gives exactly 0); these terms
      sum to at most 1 and the k-1 largest entries contribute at most 1
      each, so g(hi) <= (k-1) + 1 - k = 0.

    Since g is continuous and decreasing, its root lies in [lo, hi].  Each
    end is pushed out by a further ``BRACKET_SLACK`` so that the signs at the
    rounded ends stay strict, and both ends are kept within the float range
    (where g is exactly k - k = 0 over a whole interval, the bisection stops
    at the first point it evaluates there).
    """
    descending = np.sort(z)[::-1]
    z_k, z_k1 = float(descending[k - 1]), float(descending[k])
    n = z.shape[0]
    largest = float(np.finfo(np.float64).max)
    lo = max(z_k1 - (math.log(k) + BRACKET_SLACK), -largest)
    hi = min(z_k + (math.log(n - k) + BRACKET_SLACK), largest)
    return lo, hi


def _row_is_valid(row: FloatArray, k: int) -> bool:
    """LML-15: a row is solvable iff it has no NaN and x_(k), x_(k+1) are finite."""
    if bool(np.isnan(row).any()):
        return False
    descending = np.sort(row)[::-1]
    return bool(np.isfinite(descending[k - 1]) and np.isfinite(descending[k]))


def _row_offset(row: FloatArray, k: int, tau: float) -> tuple[float, FloatArray, float]:
    """``(c, z, u)`` of one row of shape (n,): the threshold of LML-2 is
    ``t = c + tau u`` and ``y = sigmoid(z - u)``; NaN ``u`` for a row that
    LML-15 declares unsolvable.

    Plain bisection on the decreasing g over the bracket of `_bracket`,
    keeping g(lo) > 0 > g(hi) (as evaluated), until no float lies strictly
    between lo and hi; the end with the smaller |g| is returned (an exact
    zero of g is returned at once).
    """
    if not _row_is_valid(row, k):
        return math.nan, np.full_like(row, math.nan), math.nan
    c, z = _centred(row, k, tau)
    finite = np.isfinite(row)
    z_finite = z[finite]
    n_pos_inf = int(np.count_nonzero(row == np.inf))

    def g(u: float) -> float:
        return _residual(z_finite, n_pos_inf, k, u)

    lo, hi = _bracket(z, k)
    for _ in range(MAX_BISECTION_STEPS):
        mid = 0.5 * lo + 0.5 * hi  # halves separately: lo + hi cannot overflow
        if not lo < mid < hi:  # lo and hi are adjacent floats: full resolution
            break
        g_mid = g(mid)
        if g_mid > 0.0:
            lo = mid
        elif g_mid < 0.0:
            hi = mid
        else:
            return c, z, mid
    else:
        raise RuntimeError(
            f"bisection did not reach float64 resolution in {MAX_BISECTION_STEPS} steps"
        )
    return c, z, (lo if abs(g(lo)) <= abs(g(hi)) else hi)


def lml_threshold(x: FloatArray, k: int, tau: float = 1.0) -> FloatArray:
    """Threshold t of the LML projection for every row (LML-2, LML-15).

    Parameters
    ----------
    x : array of shape (..., n), any real floating dtype (computed in float64)
        Scores; each row (last axis) is an independent problem (LML-5).
    k : int, 0 < k < n
        Number of entries to select.
    tau : float > 0
        Temperature.

    Returns
    -------
    t : float64 array of shape (...,) (0-d for a 1-D ``x``)
        The unique root of g(t) = sum_i sigmoid((x_i - t)/tau) - k (the
        paper's -nu, App. A), as ``c + tau u`` with ``u`` bisected to full
        float64 resolution (`_row_offset`); for |x|/tau beyond ~1/eps_64 the
        rounded ``t`` no longer resolves the row, and `lml_bisect` uses ``u``.
        Entries of x equal to -inf contribute 0 to the sum and +inf entries
        1.  A row with a NaN, or whose k-th or (k+1)-th largest entry is
        infinite, gives NaN.

    Raises
    ------
    TypeError, ValueError
        As LML-17 says, for a bad dtype, a scalar ``x``, ``k`` or ``tau``.
    """
    arr = _as_float_array(x)
    k_int = _check_k(k, arr.shape[-1])
    tau_f = _check_tau(tau)
    t = np.empty(arr.shape[:-1], dtype=np.float64)
    for index in np.ndindex(*arr.shape[:-1]):
        c, _, u = _row_offset(arr[index], k_int, tau_f)
        t[index] = c + tau_f * u
    return t


def lml_bisect(x: FloatArray, k: int, tau: float = 1.0) -> FloatArray:
    """The LML projection Pi_L(x/tau) by its KKT form (LML-1, LML-2, LML-15).

    y_i = sigmoid((x_i - t)/tau) for each row, with t = lml_threshold(x, k, tau),
    computed as sigmoid(z_i - u) from the row's offset (`_row_offset`).

    Parameters
    ----------
    x : array of shape (..., n), any real floating dtype (computed in float64)
    k : int, 0 < k < n
    tau : float > 0

    Returns
    -------
    y : float64 array of shape (..., n)
        Each row lies in [0, 1]^n and sums to k up to the rounding of its
        entries.  Entries -inf give exactly 0 and +inf exactly 1; a row that
        LML-15 declares unsolvable is all NaN.  Equal entries of a row give
        bitwise equal outputs (LML-9).
    """
    arr = _as_float_array(x)
    k_int = _check_k(k, arr.shape[-1])
    tau_f = _check_tau(tau)
    y: FloatArray = np.empty_like(arr)
    for index in np.ndindex(*arr.shape[:-1]):
        _, z, u = _row_offset(arr[index], k_int, tau_f)
        y[index] = expit(z - u)
    return y


def _solve_eq4(z: FloatArray, k: int, split: bool) -> FloatArray | None:
    """Solve eq. 4 for scaled scores z = x/tau with CVXPY + Clarabel, or None.

        maximize   z^T y + sum_i [entr(y_i) + entr(1 - y_i)]     s.t.  1^T y = k

    with entr(u) = -u log u.  The box 0 <= y <= 1 is not stated as a
    constraint: it is the domain of the two entropy terms (each is an
    exponential-cone constraint that forces its argument >= 0), and the
    redundant inequalities were measured to make Clarabel stop short of
    ``CVXPY_TOLERANCE`` about four times as often.  With ``split=True`` the
    second entropy acts on its own variable w with the constraint y + w = 1
    (the same problem, stated differently to the solver).

    Parameters: z of shape (n,), finite; 0 < k < n.  Returns y of shape (n,)
    when Clarabel reports the status ``optimal`` at ``CVXPY_TOLERANCE``, and
    None otherwise (inaccurate, failed or limit reached).
    """
    y = cp.Variable(z.shape[0])
    if split:
        w = cp.Variable(z.shape[0])
        entropy = cvx_sum(entr(y)) + cvx_sum(entr(w))
        constraints = [cvx_sum(y) == k, y + w == 1.0]
    else:
        entropy = cvx_sum(entr(y)) + cvx_sum(entr(1.0 - y))
        constraints = [cvx_sum(y) == k]
    problem = cp.Problem(cp.Maximize(z @ y + entropy), constraints)
    with warnings.catch_warnings():
        # CVXPY warns about an inaccurate solution; we discard those below.
        warnings.filterwarnings("ignore", message="Solution may be inaccurate")
        try:
            problem.solve(  # type: ignore[no-untyped-call]  # cvxpy leaves solve() unannotated
                solver=cp.CLARABEL,
                tol_gap_abs=CVXPY_TOLERANCE,
                tol_gap_rel=CVXPY_TOLERANCE,
                tol_feas=CVXPY_TOLERANCE,
                max_iter=CVXPY_MAX_ITER,
            )
        except SolverError:
            return None
    if problem.status != cp.OPTIMAL or y.value is None:
        return None
    return np.asarray(y.value, dtype=np.float64)


def lml_cvxpy(x: FloatArray, k: int, tau: float = 1.0) -> FloatArray:
    """The LML projection by solving eq. 4 directly with CVXPY (LML-1).

    Solves eq. 4, maximize x^T y + tau H_b(y) s.t. 1^T y = k, 0 <= y <= 1,
    with the objective divided by tau > 0 (same maximizer, better scaled):

        maximize   (x/tau)^T y + sum_i [entr(y_i) + entr(1 - y_i)]
        subject to sum(y) = k        (0 <= y <= 1 is entr's domain)

    The entropies go to the exponential cone and Clarabel solves the cone
    program to ``CVXPY_TOLERANCE``.  Clarabel does not reach that tolerance
    on every instance, so up to four equivalent statements are tried in
    turn and the first one that Clarabel reports ``optimal`` is returned:
    the problem as above, with 1 - y split into its own variable, and both
    of these for the complement w = 1 - y, which solves eq. 4 for (-x, n-k)
    because H_b(1 - w) = H_b(w) (LML-10).  No bisection or sigmoid is used.

    Parameters
    ----------
    x : array of shape (n,), finite, any real floating dtype
    k : int, 0 < k < n
    tau : float > 0

    Returns
    -------
    y : float64 array of shape (n,)
        The solver's solution, clipped to [0, 1] (it may leave the box by
        the solver tolerance).  Measured against :func:`lml_bisect` on about
        5000 random problems (n < 300, |x|/tau <= 20, 1e-3 <= tau <= 1e3):
        max error 2e-7, 99th percentile 2e-8, median 1e-10.  Entries near 0
        or 1 are resolved only to about the solver's tolerance, so their
        relative accuracy is poor.

    Raises
    ------
    ValueError
        If ``x`` is not 1-D or not finite (and as LML-17 says for k, tau).
    RuntimeError
        If Clarabel reports ``optimal`` for none of the statements.
    """
    arr = _as_float_array(x)
    if arr.ndim != 1:
        raise ValueError(f"lml_cvxpy needs a 1-D x, got shape {arr.shape}")
    if not bool(np.isfinite(arr).all()):
        raise ValueError("lml_cvxpy needs finite x")
    n = arr.shape[0]
    k_int = _check_k(k, n)
    z = arr / _check_tau(tau)
    for complement in (False, True):
        for split in (False, True):
            if complement:
                w = _solve_eq4(-z, n - k_int, split)
                y = None if w is None else 1.0 - w
            else:
                y = _solve_eq4(z, k_int, split)
            if y is not None:
                solution: FloatArray = np.clip(y, 0.0, 1.0)
                return solution
    raise RuntimeError(
        f"CVXPY/Clarabel found no optimal solution of eq. 4 (n={n}, k={k_int}, tau={tau!r}) "
        f"at tolerance {CVXPY_TOLERANCE}"
    )


# ---------------------------------------------------------------------------
# Implicit derivatives (LML-12, LML-13)
# ---------------------------------------------------------------------------


def lml_jacobian(y: FloatArray, tau: float) -> FloatArray:
    """Closed-form Jacobian dy/dx of the LML projection (LML-12, App. A).

        J = (1/tau) [diag(h) - h h^T / sum(h)],   h = y * (1 - y),

    and J = 0 when sum(h) == 0 (every entry saturated).  J is symmetric
    positive semi-definite with J 1 = 0 (LML-13).

    Parameters
    ----------
    y : float64 array of shape (n,)
        A projection, e.g. ``lml_bisect(x, k, tau)``.
    tau : float > 0
        The temperature that produced ``y``.

    Returns
    -------
    J : float64 array of shape (n, n)
    """
    y_arr = _as_float_array(y, "y")
    if y_arr.ndim != 1:
        raise ValueError(f"lml_jacobian needs a 1-D y, got shape {y_arr.shape}")
    tau_f = _check_tau(tau)
    h = y_arr * (1.0 - y_arr)
    h_sum = float(np.sum(h))
    if h_sum == 0.0:
        return np.zeros((h.shape[0], h.shape[0]), dtype=np.float64)
    jacobian: FloatArray = (np.diag(h) - np.outer(h, h) / h_sum) / tau_f
    return jacobian


def lml_vjp(y: FloatArray, g: FloatArray, tau: float) -> FloatArray:
    """Vector-Jacobian product g^T J of the LML projection, rowwise (LML-12).

        vjp(g) = (1/tau) [h * g - h (h . g) / sum(h)],   h = y * (1 - y),

    and 0 for a row whose sum(h) == 0.  Since J is symmetric this is also
    J g.  Each row of the result sums to zero (LML-13).

    Parameters
    ----------
    y : float64 array of shape (..., n)
        Projections, one per row.
    g : float64 array of shape (..., n)
        Cotangents, same shape as ``y``.
    tau : float > 0

    Returns
    -------
    float64 array of shape (..., n)
    """
    y_arr = _as_float_array(y, "y")
    g_arr = _as_float_array(g, "g")
    if y_arr.shape != g_arr.shape:
        raise ValueError(f"y and g must have the same shape, got {y_arr.shape} and {g_arr.shape}")
    tau_f = _check_tau(tau)
    out = np.zeros_like(y_arr)
    for index in np.ndindex(*y_arr.shape[:-1]):
        h = y_arr[index] * (1.0 - y_arr[index])
        h_sum = float(np.sum(h))
        if h_sum != 0.0:
            out[index] = (h * g_arr[index] - h * float(np.dot(h, g_arr[index])) / h_sum) / tau_f
    return out


def lml_tau_derivative(x: FloatArray, k: int, tau: float) -> FloatArray:
    """Closed-form derivative dy/dtau of the LML projection, rowwise (LML-20).

    Differentiating the constraint sum_i sigmoid((x_i - t)/tau) = k in tau
    gives dt/dtau = s-bar = (h . s) / sum(h) with s = (x - t)/tau, h = y * (1 - y)
    (the threshold moves with the h-weighted mean offset), so

        dy/dtau = -(1/tau) [h * s - h (h . s) / sum(h)],

    and 0 for a row whose sum(h) == 0.  Entries with infinite x (h = 0) get 0.
    The threshold t comes from the bisection of :func:`lml_threshold`.

    Parameters
    ----------
    x : float64 array of shape (..., n)
    k : int, 0 < k < n
    tau : float > 0

    Returns
    -------
    float64 array of shape (..., n)
    """
    x_arr = _as_float_array(x)
    tau_f = _check_tau(tau)
    rows = np.atleast_2d(x_arr).reshape(-1, x_arr.shape[-1])
    k_int = _check_k(k, rows.shape[-1])
    out = np.zeros_like(rows)
    for i in range(rows.shape[0]):
        _, z, u = _row_offset(rows[i], k_int, tau_f)
        if not math.isfinite(u):
            out[i] = np.nan
            continue
        y = expit(z - u)
        h = y * (1.0 - y)
        h_sum = float(np.sum(h))
        if h_sum == 0.0:
            continue
        s = np.where(h > 0.0, z - u, 0.0)  # s = (x - t)/tau; h = 0 where it is infinite
        out[i] = -(h * s - h * float(np.dot(h, s)) / h_sum) / tau_f
    result: FloatArray = out.reshape(x_arr.shape)
    return result


# ---------------------------------------------------------------------------
# Hard top-k (LML-11)
# ---------------------------------------------------------------------------


def hard_topk_indicator(x: FloatArray, k: int) -> FloatArray:
    """Indicator of the k largest entries of each row (the tau -> 0 limit, LML-11).

    Parameters
    ----------
    x : array of shape (..., n), any real floating dtype
    k : int, 0 < k < n

    Returns
    -------
    float64 array of shape (..., n)
        1.0 at the k largest entries of each row, 0.0 elsewhere.  Ties are
        broken towards the lowest index (stable sort of -x); a NaN ranks
        below every number.
    """
    arr = _as_float_array(x)
    k_int = _check_k(k, arr.shape[-1])
    out = np.zeros_like(arr)
    for index in np.ndindex(*arr.shape[:-1]):
        order = np.argsort(-arr[index], kind="stable")  # NaN sorts last
        row = out[index]
        row[order[:k_int]] = 1.0
    return out
