"""Checking and shaping the tensor arguments of a solve (spec/cem.md, CEM-1, CEM-22).

Every check here reads metadata only (shape, dtype, device), except
``validate_values``, which reads tensor values and runs only when asked to
(or on the CPU, where it costs no device synchronization).
"""

from __future__ import annotations

import torch
from torch import Tensor

from impl._checks import (
    number_in_dtype,
    require_broadcastable,
    require_floating_tensor,
    require_real,
)


def batched_mean(init_mean: object) -> tuple[Tensor, bool, torch.dtype]:
    """``init_mean`` as the ``(B, d)`` state mean, whether it was a single
    ``(d,)`` problem, and the dtype ``f`` sees. Half-precision inputs get a
    float32 state (CEM-24)."""
    tensor = require_floating_tensor("init_mean", init_mean)
    if tensor.dim() not in (1, 2) or tensor.shape[-1] == 0 or tensor.shape[0] == 0:
        raise ValueError(
            "init_mean must have shape (B, d) or (d,) with B >= 1 and d >= 1, "
            f"got {tuple(tensor.shape)}"
        )
    single = tensor.dim() == 1
    dtype = torch.promote_types(tensor.dtype, torch.float32)
    mean = (tensor.unsqueeze(0) if single else tensor).to(dtype)
    return mean, single, tensor.dtype


def broadcast_operand(name: str, value: Tensor | float, target: torch.Size, mean: Tensor) -> Tensor:
    """A number or tensor broadcastable to ``init_mean``'s shape ``target``,
    as a ``(B, d)`` tensor of the state's dtype (``mean (B, d)``)."""
    if isinstance(value, Tensor):
        require_floating_tensor(name, value)
        require_broadcastable(name, value.shape, target)
        if value.device != mean.device:
            raise ValueError(f"{name} is on {value.device}, init_mean on {mean.device}")
        tensor = value.to(mean.dtype)
    else:
        number = number_in_dtype(require_real(name, value), mean.dtype)  # CEM-24
        # A fill, not torch.tensor: no host-to-device copy (CEM-23).
        tensor = torch.full((), number, dtype=mean.dtype, device=mean.device)
    return tensor.expand(target).reshape(mean.shape)


def bound_inward(bound: Tensor, dtype: torch.dtype, *, upper: bool) -> Tensor:
    """A bound ``(B, d)`` of the state's dtype moved inward to the nearest value
    that ``dtype`` (``init_mean``'s, narrower than the state's) holds: the
    largest such value ``≤ ub`` or the smallest ``≥ lb`` (CEM-10, CEM-24).

    A candidate clipped to it in the state's dtype and then rounded to ``dtype``
    for ``f`` stays in the box: rounding to nearest cannot cross a value that
    ``dtype`` holds exactly. A finite bound past ``dtype``'s range rounds to
    ``±inf`` there and moves in to ``dtype``'s largest finite value (``ub = 1e5``
    for float16 gives 65504); an infinite bound stays infinite. The gradient
    passes straight through, as for the cast."""
    rounded = bound.to(dtype)
    back = rounded.to(bound.dtype)
    outward = back > bound if upper else back < bound
    toward = torch.full_like(rounded, -torch.inf if upper else torch.inf)
    stepped = torch.nextafter(rounded.detach(), toward).to(bound.dtype)
    return torch.where(outward, stepped + (bound - bound.detach()), back)


def batched_noise(noise: object, single: bool, shape: tuple[int, int, int], n_iter: int) -> Tensor:
    """``noise`` as ``(T, B, N, d)``; a single problem may give ``(T, N, d)``."""
    tensor = require_floating_tensor("noise", noise)
    if single and tensor.dim() == 3:
        if tuple(tensor.shape) != (n_iter, *shape[1:]):
            raise ValueError(
                f"noise has shape {tuple(tensor.shape)}, expected {(n_iter, *shape[1:])}"
            )
        return tensor.unsqueeze(1)
    if tuple(tensor.shape) != (n_iter, *shape):
        wanted = (n_iter, *shape[1:]) if single else (n_iter, *shape)
        raise ValueError(f"noise has shape {tuple(tensor.shape)}, expected {wanted}")
    return tensor


def batched_proposals(
    proposals: object,
    single: bool,
    batch: int,
    dim: int,
    device: torch.device,
    name: str = "proposals",
) -> Tensor:
    """``proposals`` (or initial ``elites``, CEM-39) as ``(B, P, d)`` with
    ``P ≥ 1``; a single problem may give ``(P, d)`` (CEM-34)."""
    tensor = require_floating_tensor(name, proposals)
    if single and tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    if (
        tensor.dim() != 3
        or tensor.shape[0] != batch
        or tensor.shape[2] != dim
        or not (tensor.shape[1] >= 1)
    ):
        wanted = f"(P, {dim})" if single else f"({batch}, P, {dim})"
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {wanted} with P >= 1")
    if tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device}, init_mean on {device}")
    return tensor


def check_generator(generator: object, device: torch.device) -> torch.Generator | None:
    """The generator must be ``None`` or draw on ``init_mean``'s device (CEM-20)."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    source = torch.device(generator.device)
    if source.type != device.type or (
        source.index is not None and device.index is not None and source.index != device.index
    ):
        raise ValueError(f"generator is on {source}, init_mean on {device}")
    return generator


def validate_values(
    mean: Tensor,
    std: Tensor,
    lower: Tensor | None,
    upper: Tensor | None,
    candidates: dict[str, Tensor | None] | None = None,
) -> None:
    """Value checks of CEM-22: one host synchronization (an accelerator's), and
    the details only when a check fails. ``candidates``: given points by name
    (``proposals``, ``elites``), which must be finite: a NaN candidate has weight
    0 but ``0 · NaN`` would still reach the fit (CEM-34, CEM-39)."""
    given = {name: t for name, t in (candidates or {}).items() if t is not None}
    ok = torch.isfinite(mean).all() & torch.isfinite(std).all() & (std >= 0).all()
    ordered = _ordered(lower, upper)
    if ordered is not None:
        ok = ok & ordered.all()
    for tensor in given.values():
        ok = ok & torch.isfinite(tensor).all()
    if bool(ok):
        return
    for name, tensor in given.items():
        if not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{name} contains {count} non-finite values")
    if not bool(torch.isfinite(mean).all()):
        raise ValueError("init_mean contains non-finite values")
    if not bool(torch.isfinite(std).all()) or bool((std < 0).any()):
        raise ValueError(f"init_std must be finite and >= 0; its minimum is {std.min().item()}")
    if ordered is not None and not bool(ordered.all()):
        if lower is not None and upper is not None:
            gap = (upper - lower).min().item()
            raise ValueError(f"the bounds must satisfy lb < ub elementwise; min(ub - lb) = {gap}")
        for name, bound in (("lb", lower), ("ub", upper)):
            if bound is not None:
                bad = bound[~ordered].flatten()[0].item()
                raise ValueError(
                    "the bounds must satisfy lb < ub elementwise, a missing bound being "
                    f"∓inf; {name} holds {bad} and the other bound is missing"
                )


def _ordered(lower: Tensor | None, upper: Tensor | None) -> Tensor | None:
    """``lb < ub`` elementwise, a missing bound counting as ``∓∞`` (CEM-10): ``False``
    where a bound is NaN, or where ``lb = +∞`` or ``ub = −∞`` (an empty box); ``None``
    without bounds."""
    if lower is not None and upper is not None:
        return lower < upper
    if lower is not None:
        return lower < torch.inf
    if upper is not None:
        return upper > -torch.inf
    return None
