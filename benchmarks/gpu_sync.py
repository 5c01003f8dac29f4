"""Host-synchronization check of every public entry point (issue 14).

``ENTRY_POINTS`` lists one call of each public entry point and of each
``dcem`` option: ``lml``, ``dcem`` (plain, hard, bounds, ``noise``, ``tol``,
``checkpoint``, ``grad_iters``, ``smoothing``, ``elite_temperature``,
callback, ``output="best"``, a device ``generator``), ``plan``, ``MPC.act``
and ``latent_plan``, each a forward pass and, where the output is
differentiable, a backward pass (LML-18, CEM-23, CTL-14). One more entry,
``dcem[validate=True]``, reads tensor values on purpose (CEM-22): it is the
positive control that shows the checker sees a synchronization at all.

``check(entries, device)`` prepares each entry's inputs (outside the check:
building inputs may copy from the host), runs it once to warm up, then once
under the device's checker, and records what the checker saw:

- CUDA: ``torch.cuda.set_sync_debug_mode("error")``, which raises on every
  synchronizing CUDA call (``.item()``, ``bool(tensor)``, blocking copies);
- meta: tensors without values, on which every host read of a value raises
  (the CPU's stand-in for the CUDA check: it finds value reads, not syncs
  that move no value).

The CPU itself has no checker (reads cost no synchronization there).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from impl.control import (
    MPC,
    ActionDecoder,
    Cartpole,
    LatentPlannerConfig,
    PlannerConfig,
    latent_plan,
    plan,
    rollout_cost,
)
from impl.dcem import DCEMStep, dcem
from impl.lml import lml
from impl.options import CEMOptions

BATCH, N_SAMPLE, N_ELITE, DIM, N_ITER = 64, 100, 10, 6, 3
"""``(B, N, k, d, T)`` of every ``dcem`` entry: small, past no threshold that
matters for synchronization (the loop body is the same at every size)."""
LML_SHAPE = (64, 100)
HORIZON = 5
LATENT_DIM = 2

Status = Literal["clean", "sync", "error", "not run"]
Thunk = Callable[[], object]

HOST_READ_MESSAGES = (
    "synchronizing CUDA operation",  # set_sync_debug_mode("error")
    "cannot be called on meta tensors",  # .item(), bool(), float() on meta
    "Cannot copy out of meta tensor",  # .cpu(), .tolist() on meta
    "can't convert meta device type tensor",  # .numpy() on meta
)
"""Error messages that mean "the call read a tensor's value on the host"."""


@dataclass(frozen=True)
class EntryPoint:
    """One call to check.

    Attributes:
        name: ``"function[option]"``, the name the report uses.
        prepare: builds the inputs on a device and returns the call to check
            (forward and, where there is a graph, backward).
        expect_sync: the call reads values on purpose (the positive control).
        on_meta: whether the call can run on ``meta`` (a ``torch.Generator``
            cannot live there).
    """

    name: str
    prepare: Callable[[torch.device], Thunk]
    expect_sync: bool = False
    on_meta: bool = True


@dataclass(frozen=True)
class SyncRecord:
    """What the checker saw for one entry point."""

    name: str
    status: Status
    expect_sync: bool
    message: str = ""

    @property
    def unexpected(self) -> bool:
        """A synchronization (or an error) where none was expected, or none
        where the control expects one."""
        if self.status == "not run":
            return False
        return (self.status == "sync") != self.expect_sync or self.status == "error"


def _backward(value: Tensor) -> None:
    value.sum().backward()  # type: ignore[no-untyped-call]


class _Shifted(nn.Module):
    """``f_b(x) = ‖x − c_b‖²`` with a learnable centre ``c (B, d)``."""

    def __init__(self, centre: Tensor) -> None:
        super().__init__()
        self.centre = nn.Parameter(centre)

    def forward(self, x: Tensor) -> Tensor:  # (B, N, d) → (B, N)
        return (x - self.centre.unsqueeze(1)).square().sum(-1)


def _dcem_entry(**options: Any) -> Callable[[torch.device], Thunk]:
    """A ``dcem`` call with ``options`` (``validate=False`` unless they say
    otherwise), differentiated through ``init_mean`` and ``f``'s parameter;
    an option given as a function of the device is called to build it."""

    def prepare(device: torch.device) -> Thunk:
        f = _Shifted(torch.zeros(BATCH, DIM, device=device))
        mean = torch.zeros(BATCH, DIM, device=device, requires_grad=True)
        resolved = {"validate": False} | {
            key: value(device) if callable(value) else value for key, value in options.items()
        }

        def call() -> object:
            result = dcem(
                f, mean, 1.0, n_sample=N_SAMPLE, n_elite=N_ELITE, n_iter=N_ITER, **resolved
            )
            if result.x.requires_grad:
                _backward(result.x)
            return result

        return call

    return prepare


def _noise(device: torch.device) -> Tensor:
    return torch.randn(N_ITER, BATCH, N_SAMPLE, DIM, device=device)


def _generator(device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(0)


def _upper_bound(device: torch.device) -> Tensor:
    return torch.full((DIM,), 1.5, device=device)


def _callback(device: torch.device) -> Callable[[DCEMStep], None]:
    steps: list[DCEMStep] = []
    return steps.append


def _lml_entry(k: int, dtype: torch.dtype) -> Callable[[torch.device], Thunk]:
    def prepare(device: torch.device) -> Thunk:
        x = torch.randn(LML_SHAPE, device=device, dtype=dtype, requires_grad=True)

        def call() -> object:
            y = lml(x, k, 0.5)
            _backward(y * torch.linspace(0, 1, LML_SHAPE[1], device=device, dtype=dtype))
            return y

        return call

    return prepare


def _planner_config(tau: float | None) -> PlannerConfig:
    solver = CEMOptions(n_sample=N_SAMPLE, n_elite=N_ELITE, n_iter=N_ITER, tau=tau)
    return PlannerConfig(horizon=HORIZON, action_lb=-100.0, action_ub=100.0, solver=solver)


def _initial_states(device: torch.device) -> Tensor:
    return torch.zeros(BATCH, Cartpole.state_dim, device=device)


def _plan_entry(tau: float | None, device_bounds: bool) -> Callable[[torch.device], Thunk]:
    def prepare(device: torch.device) -> Thunk:
        system = Cartpole()
        config = _planner_config(tau)
        if device_bounds:
            bound = torch.full((1,), 100.0, device=device)
            config = dataclasses.replace(config, action_lb=-bound, action_ub=bound)
        cost = rollout_cost(system.step, system.cost, _initial_states(device))

        def call() -> object:
            return plan(cost, config, BATCH, device=device).cost

        return call

    return prepare


def _mpc_entry(device: torch.device) -> Thunk:
    system = Cartpole()
    mpc = MPC(_planner_config(1.0), BATCH, device=device)
    cost = rollout_cost(system.step, system.cost, _initial_states(device))

    def call() -> object:
        first = mpc.act(cost)
        mpc.reset(torch.arange(BATCH, device=device) % 2 == 0)
        return (first, mpc.act(cost))

    return call


def _latent_entry(device: torch.device) -> Thunk:
    system = Cartpole()
    decoder = ActionDecoder(LATENT_DIM, HORIZON, 1, -100.0, 100.0, hidden=32).to(device)
    cost = rollout_cost(system.step, system.cost, _initial_states(device))
    solver = CEMOptions(n_sample=N_SAMPLE, n_elite=N_ELITE, n_iter=N_ITER)
    config = LatentPlannerConfig(latent_dim=LATENT_DIM, solver=solver)

    def call() -> object:  # one step of Alg. 2, without the optimizer
        result = latent_plan(cost, decoder, config, BATCH, device=device)
        _backward(result.cost)
        return result

    return call


def _no_grad(call: Thunk) -> Thunk:
    def run() -> object:
        with torch.no_grad():
            return call()

    return run


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("lml[float32]", _lml_entry(10, torch.float32)),
    EntryPoint("lml[float64]", _lml_entry(10, torch.float64)),
    EntryPoint("lml[k > n/2]", _lml_entry(90, torch.float32)),
    EntryPoint("dcem[tau=1]", _dcem_entry(tau=1.0)),
    EntryPoint("dcem[tau=None]", _dcem_entry(tau=None)),
    EntryPoint("dcem[bounds: numbers]", _dcem_entry(lb=-1.0, ub=1.5)),
    EntryPoint("dcem[bounds: device tensors]", _dcem_entry(lb=-1.0, ub=_upper_bound)),
    EntryPoint("dcem[noise]", _dcem_entry(noise=_noise)),
    EntryPoint("dcem[generator]", _dcem_entry(generator=_generator), on_meta=False),
    EntryPoint("dcem[tol]", _dcem_entry(tol=1e-3)),
    EntryPoint("dcem[checkpoint]", _dcem_entry(checkpoint=True)),
    EntryPoint(
        "dcem[checkpoint, generator]",
        _dcem_entry(checkpoint=True, generator=_generator),
        on_meta=False,
    ),
    EntryPoint("dcem[grad_iters=1]", _dcem_entry(grad_iters=1)),
    EntryPoint("dcem[smoothing]", _dcem_entry(smoothing=0.5)),
    EntryPoint("dcem[elite_temperature]", _dcem_entry(tau=None, elite_temperature=0.5)),
    EntryPoint("dcem[callback]", _dcem_entry(callback=_callback)),
    EntryPoint("dcem[output=best]", _dcem_entry(output="best")),
    EntryPoint("dcem[no grad]", lambda device: _no_grad(_dcem_entry(tau=1.0)(device))),
    EntryPoint("plan[tau=1]", _plan_entry(1.0, device_bounds=False)),
    EntryPoint("plan[tau=None]", _plan_entry(None, device_bounds=False)),
    EntryPoint("plan[bounds: device tensors]", _plan_entry(1.0, device_bounds=True)),
    EntryPoint("MPC.act[two steps, reset]", _mpc_entry),
    EntryPoint("latent_plan[backward]", _latent_entry),
    EntryPoint("control: dcem[validate=True]", _dcem_entry(validate=True), expect_sync=True),
)


@contextlib.contextmanager
def cuda_sync_errors() -> Iterator[None]:
    """``torch.cuda.set_sync_debug_mode("error")`` for the duration, then the previous mode."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def checker_for(device: torch.device) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """The device's checker: CUDA's sync debug mode; on meta none is needed
    (a value read raises by itself). The CPU has none: ``ValueError``."""
    if device.type == "cuda":
        return cuda_sync_errors
    if device.type == "meta":
        return contextlib.nullcontext
    raise ValueError(f"no host-synchronization checker for device {device}; use cuda or meta")


def is_host_read(error: BaseException) -> bool:
    """Whether ``error`` is a checker's report of a host read (not another failure)."""
    return any(message in str(error) for message in HOST_READ_MESSAGES)


def check_one(
    entry: EntryPoint,
    device: torch.device,
    checker: Callable[[], contextlib.AbstractContextManager[None]],
) -> SyncRecord:
    """Prepare ``entry``, warm it up unchecked (CUDA), run it under ``checker``."""
    if device.type == "meta" and not entry.on_meta:
        return SyncRecord(entry.name, "not run", entry.expect_sync, "no generator on meta")
    try:
        call = entry.prepare(device)
        if device.type != "meta":
            call()  # lazy initialization (cuBLAS handles, ...) happens here, unchecked
            call = entry.prepare(device)
    except Exception as error:
        return SyncRecord(entry.name, "error", entry.expect_sync, f"prepare: {_describe(error)}")
    try:
        with checker():
            call()
    except Exception as error:
        status: Status = "sync" if is_host_read(error) else "error"
        return SyncRecord(entry.name, status, entry.expect_sync, _describe(error))
    return SyncRecord(entry.name, "clean", entry.expect_sync)


def check(
    entries: tuple[EntryPoint, ...],
    device: torch.device,
    checker: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
) -> list[SyncRecord]:
    """One record per entry point, in order."""
    chosen = checker_for(device) if checker is None else checker
    return [check_one(entry, device, chosen) for entry in entries]


def report(records: list[SyncRecord], device: torch.device) -> dict[str, Any]:
    """The JSON-ready report: every record, the syncs by name, and whether the
    control was seen (if not, a "clean" record proves nothing)."""
    controls = [r for r in records if r.expect_sync and r.status != "not run"]
    return {
        "device": str(device),
        "checker": {
            "cuda": 'torch.cuda.set_sync_debug_mode("error")',
            "meta": "meta tensors (every host read of a value raises)",
        }.get(device.type, "none"),
        "torch": torch.__version__,
        "checker_works": bool(controls) and all(r.status == "sync" for r in controls),
        "syncs": [r.name for r in records if r.status == "sync" and not r.expect_sync],
        "errors": [r.name for r in records if r.status == "error"],
        "unexpected": [r.name for r in records if r.unexpected],
        "entries": [dataclasses.asdict(r) for r in records],
    }


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"
