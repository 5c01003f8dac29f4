"""Argument validation shared by the public functions.

Every check runs on the host, on Python values or tensor metadata (shape,
dtype, device), so none of them synchronizes with an accelerator. Checks on
tensor *values* live with their callers, behind an explicit ``validate`` flag.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


def require_int(name: str, value: object) -> int:
    """Return ``value`` as an int; ``TypeError`` for non-integers and bools."""
    if type(value) is int:  # the common case, without the ABC check
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    return int(value)


def require_callable(name: str, value: object, *, optional: bool = False) -> None:
    """``TypeError`` naming ``name`` unless ``value`` is callable (``None`` too if ``optional``)."""
    if not callable(value) and not (optional and value is None):
        allowed = "callable or None" if optional else "callable"
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__}")


def require_positive_int(name: str, value: object) -> int:
    """``require_int``, and ``ValueError`` naming the value when it is below 1."""
    number = require_int(name, value)
    if number < 1:
        raise ValueError(f"{name} must be >= 1, got {number}")
    return number


def require_real(name: str, value: object) -> float:
    """Return ``value`` as a float; ``TypeError`` for non-real values and bools,
    ``ValueError`` for a number beyond the float range (e.g. ``10**400``)."""
    if type(value) is float:  # the common case, without the ABC check
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    try:
        return float(value)
    except OverflowError:  # an int (or Fraction) beyond the float range
        raise ValueError(f"{name} is too large for a float, got {value!r:.40}") from None


def number_in_dtype(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded as ``dtype`` holds it, as a Python float: ``±inf`` past
    the dtype's range, as a cast gives (``torch.full`` and ``clamp`` refuse such
    numbers instead of rounding them). Values inside the range come back as they are."""
    if dtype == torch.float64 or not abs(value) > torch.finfo(dtype).max:
        return value
    return float(torch.tensor(value, dtype=torch.float64).to(dtype))


def require_finite_real(name: str, value: object, *, minimum: float, strict: bool) -> float:
    """A finite real number ``> minimum`` (strict) or ``>= minimum``."""
    number = require_real(name, value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number!r}")
    if number < minimum or (strict and number == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be {relation} {minimum}, got {number!r}")
    return number


def require_floating_tensor(name: str, value: object) -> Tensor:
    """A tensor with a floating-point dtype."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    return value


def require_floating_dtype(name: str, value: object) -> torch.dtype:
    """A floating-point ``torch.dtype`` (``TypeError`` naming ``name`` otherwise)."""
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype, got {value!r}")
    return value


def require_optional_bool(name: str, value: object) -> bool | None:
    """``True``, ``False`` or ``None`` (``TypeError`` naming ``name`` otherwise: a
    string such as ``"no"`` is truthy and would silently mean ``True``)."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be True, False or None, got {value!r}")
    return value


def require_broadcastable(name: str, shape: torch.Size, target: torch.Size) -> None:
    """``shape`` must broadcast to exactly ``target`` (NumPy rules, right-aligned)."""
    fits = len(shape) <= len(target) and all(
        size in (1, goal) for size, goal in zip(reversed(shape), reversed(target), strict=False)
    )
    if not fits:
        raise ValueError(
            f"{name} has shape {tuple(shape)}, which does not broadcast to {tuple(target)}"
        )
