"""An mbrl-lib optimizer that solves with ``impl.dcem.dcem`` (CTL-19).

mbrl-lib's ``Optimizer.optimize(obj_fun, x0, callback)`` solves one problem
per call and *maximizes* ``obj_fun`` over a population ``(N, H, n_u)``;
``mbrl.planning.TrajectoryOptimizer`` builds the optimizer from an OmegaConf
config (its ``_target_``), fills in ``lower_bound``/``upper_bound`` (``H × n_u``
lists) and ``device``, passes the shifted previous solution as ``x0``, and
shifts the returned solution into the next call. ``DCEMOptimizer`` minimizes
``−obj_fun`` with ``dcem`` over the flattened ``H·n_u`` coordinates, clipped
to the bounds, and returns the solver's point ``(H, n_u)``. Non-finite
objective values rank worst (CEM-12), where mbrl-lib's optimizers rank NaN
near the top.

An OmegaConf config for ``TrajectoryOptimizer``::

    optimizer_cfg = omegaconf.OmegaConf.create({
        "_target_": "impl.adapters.mbrl_optimizer.DCEMOptimizer",
        "device": "cpu",
        "solver": {"_target_": "impl.options.CEMOptions", "n_sample": 100, "tau": None},
        "seed": 0,
    })

Needs the ``mbrl`` extra and ``pip install --no-deps mbrl==0.2.0``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from mbrl.planning.trajectory_opt import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
    Optimizer,
)
from torch import Tensor

from impl._checks import require_callable, require_finite_real
from impl.cem import DCEMStep, solve
from impl.control.planner import INIT_STD_SCALE, PLANNER_SOLVER, require_seed
from impl.options import CEMOptions

MbrlCallback = Callable[[Tensor, Tensor, int], Any]
"""mbrl-lib's callback: population ``(N, H, n_u)``, its values ``(N,)``, the iteration."""


class DCEMOptimizer(Optimizer):  # type: ignore[misc, unused-ignore]
    """CEM/DCEM as an mbrl-lib ``Optimizer`` (CTL-19).

    Args:
        lower_bound, upper_bound: ``(H, n_u)`` nested sequences (or tensors),
            as ``TrajectoryOptimizer`` writes them; ``lb < ub``.
        device: where to solve.
        solver: the solver's options, a ``CEMOptions`` or a mapping of its
            fields (OmegaConf passes a nested config as a mapping, or as a
            ``CEMOptions`` when it has ``_target_: impl.options.CEMOptions``).
            Default ``PLANNER_SOLVER`` (hard CEM, N=100, k=10, T=10, iCEM's recipe, CTL-23).
        init_std: ``σ_0``; None takes ``INIT_STD_SCALE · (ub − lb)``.
        seed: seeds the optimizer's own generator; None uses PyTorch's
            global one, as mbrl-lib's optimizers do.
    """

    def __init__(
        self,
        lower_bound: Sequence[Sequence[float]] | Tensor,
        upper_bound: Sequence[Sequence[float]] | Tensor,
        device: torch.device | str = "cpu",
        solver: CEMOptions | Mapping[str, Any] = PLANNER_SOLVER,
        init_std: float | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.device = torch.device(device)
        self.lower_bound = _bound_tensor("lower_bound", lower_bound, self.device)
        self.upper_bound = _bound_tensor("upper_bound", upper_bound, self.device)
        if self.lower_bound.dim() != 2 or self.lower_bound.shape != self.upper_bound.shape:
            raise ValueError(
                "lower_bound and upper_bound must both have shape (H, n_u), got "
                f"{tuple(self.lower_bound.shape)} and {tuple(self.upper_bound.shape)}"
            )
        for name, bound in (("lower_bound", self.lower_bound), ("upper_bound", self.upper_bound)):
            if not bool(torch.isfinite(bound).all()):  # σ_0 and x0 are taken from them
                raise ValueError(f"{name} must be finite, got {bound.tolist()}")
        if not bool((self.lower_bound < self.upper_bound).all()):
            raise ValueError("the bounds must satisfy lower_bound < upper_bound everywhere")
        if not isinstance(solver, (CEMOptions, Mapping)):
            raise TypeError(
                "solver must be an impl.options.CEMOptions or a mapping of its fields, "
                f"got {type(solver).__name__}: {solver!r}"
            )
        self.solver = solver if isinstance(solver, CEMOptions) else CEMOptions(**dict(solver))
        width = self.upper_bound - self.lower_bound
        if init_std is not None:
            init_std = require_finite_real("init_std", init_std, minimum=0.0, strict=False)
        self.init_std = (
            INIT_STD_SCALE * width if init_std is None else torch.full_like(width, init_std)
        )
        if seed is not None:
            seed = require_seed(seed)
        self.generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)

    def optimize(
        self,
        obj_fun: Callable[[Tensor], Tensor],
        x0: Tensor | None = None,
        callback: MbrlCallback | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Maximize ``obj_fun`` (population ``(N, H, n_u)`` → ``(N,)``) from ``x0 (H, n_u)``
        (default the bounds' midpoint); returns ``(H, n_u)``. No graph is recorded."""
        require_callable("obj_fun", obj_fun)
        require_callable("callback", callback, optional=True)
        shape = self.lower_bound.shape
        if x0 is None:
            x0 = 0.5 * (self.lower_bound + self.upper_bound)
        if not isinstance(x0, Tensor):
            raise TypeError(
                f"x0 must be a torch.Tensor of shape {tuple(shape)}, got {type(x0).__name__}"
            )
        if tuple(x0.shape) != tuple(shape):
            raise ValueError(f"x0 has shape {tuple(x0.shape)}, expected {tuple(shape)}")
        x0 = x0.to(self.lower_bound)

        def negated(flat: Tensor) -> Tensor:
            population = flat[0].reshape(flat.shape[1], *shape)
            values = obj_fun(population)
            if not isinstance(values, Tensor):
                raise TypeError(f"obj_fun must return a torch.Tensor, got {type(values).__name__}")
            if tuple(values.shape) != (flat.shape[1],):  # one value per candidate (CTL-19)
                raise ValueError(
                    f"obj_fun returned values of shape {tuple(values.shape)}; expected "
                    f"({flat.shape[1]},) (one value per candidate of the "
                    f"{tuple(population.shape)} population)"
                )
            return -values.reshape(1, flat.shape[1])

        with torch.no_grad():
            result = solve(
                negated,
                x0.reshape(1, -1),
                self.init_std.reshape(1, -1),
                self.solver,
                lb=self.lower_bound.reshape(1, -1),
                ub=self.upper_bound.reshape(1, -1),
                generator=self.generator,
                callback=None if callback is None else _reporter(callback, shape),
            )
        return result.x.reshape(shape)


def _reporter(callback: MbrlCallback, shape: torch.Size) -> Callable[[DCEMStep], None]:
    """``dcem``'s callback as mbrl-lib's: the population ``(N, H, n_u)``, the
    objective values ``(N,)`` (maximized, so ``−f``) and the iteration."""

    def report(step: DCEMStep) -> None:
        population = step.samples[0].reshape(step.samples.shape[1], *shape)
        callback(population, -step.values[0], step.iteration)

    return report


def _bound_tensor(name: str, bound: object, device: torch.device) -> Tensor:
    """A bound as a float32 tensor on ``device`` (``TypeError`` naming it when it is not
    numeric: a string or a ragged list)."""
    try:
        return torch.as_tensor(bound, dtype=torch.float32, device=device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"{name} must be a tensor or nested sequence of numbers of shape (H, n_u), "
            f"got {type(bound).__name__}: {error}"
        ) from None
