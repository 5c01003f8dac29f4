"""The benchmark suite of issue 6: ``python -m benchmarks.run`` (or ``nox -s bench``).

Every figure is a ratio of two measurements taken in the same process,
interleaved (A B A B …, the order reversed every other repeat) and reduced to
medians, so that the load of a shared machine affects both sides alike. The
shapes, dtype, device, thread count, torch version and the load average are
recorded with the results in ``<out>/<device>.json`` and ``<out>/<device>.md``.

Benchmarks (float32, ``(B, n, k)`` = problems, samples, elites):

- ``lml``: the LML forward against ``torch.topk`` on the same tensor, and
  forward + backward against the same ``topk``; the authors' LML forward
  (``benchmarks.authors_lml``, written from its description) against the
  LML forward; and the operations one forward dispatches (``ops`` rows,
  counted by ``benchmarks.op_count``), the project's against the authors'.
- ``iteration``: one hard-CEM iteration against one DCEM iteration.
- ``loop``: one hard-CEM iteration against the same iteration building the
  elite mask with a per-problem Python loop (as the authors' release does).
- ``solve``: a whole DCEM solve against the bare evaluations of ``f`` on the
  same samples, for ``f`` a per-candidate MLP and a quadratic; eager and
  ``torch.compile``; the operations one iteration dispatches besides ``f``;
  and a solve with its backward pass at B = 1 against the authors' DCEM loop
  (``benchmarks.authors_dcem``, written from its description).
- ``memory``: the peak memory of a forward + backward pass through ``T``
  iterations, plain against ``checkpoint=True`` and ``grad_iters=K``.
- ``sync`` (CUDA only): no host-device synchronization in ``lml``/``dcem``.

Timings use ``torch.cuda.synchronize`` on CUDA. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA; on the CPU (which keeps no such
counter) it is the peak of the live bytes of every allocation and free that
the profiler records (``profile_memory=True``) during the pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from benchmarks.authors_dcem import authors_dcem
from benchmarks.authors_lml import authors_lml
from benchmarks.op_count import count_ops
from impl.dcem import DCEMResult, DCEMStep, dcem, hard_selection
from impl.gaussian import weighted_gaussian_fit
from impl.lml import lml

DTYPE = torch.float32
SHAPES: tuple[tuple[int, int, int], ...] = ((1, 100, 10), (1024, 100, 10), (4096, 1000, 100))
"""``(B, n, k)`` of the issue."""
QUICK_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 20, 4), (8, 50, 5))
"""Tiny shapes of ``--quick`` (a structural check, not a measurement)."""
LML_SHAPES: tuple[tuple[int, int, int], ...] = (
    (1, 100, 10),
    (64, 100, 10),
    (1024, 100, 10),
    (4096, 1000, 100),
)
"""``(B, n, k)`` of the LML benchmark (issue 12 adds B = 64)."""
AUTHORS_MAX_ELEMENTS = 200_000
"""Largest ``B·n`` at which the authors' LML is timed (at (4096, 1000) each
of its steps builds a (B, 10, n) tensor; seconds per call on the CPU)."""
DIM = 10
"""``d``, the dimension of a candidate (e.g. 10 steps of a 1-D action)."""
HIDDEN = 200
"""Units of each of the MLP objective's two hidden layers."""
TAU = 1.0
"""DCEM's temperature."""
SOLVE_ITERS = 10
"""``T`` of a solve."""
SOLVE_ITERS_LARGE = 3
"""``T`` of a solve on the CPU when ``B·n > LARGE_SAMPLES`` (the ratio is per
iteration in effect; fewer iterations keep the run short)."""
LARGE_SAMPLES = 10_000
MLP_MAX_SAMPLES_CPU = 200_000
"""Largest ``B·n`` for the MLP objective on the CPU without ``--full``: at
``(4096, 1000)`` one evaluation of f is ~350 GFLOP, about a minute here."""
COMPILE_MAX_SAMPLES = 200_000
"""Largest ``B·n`` at which the solve is also compiled (each compilation of
the unrolled solve takes minutes on a 2-core CPU)."""
MEMORY_ITERS = (10, 50)
"""``T`` of the memory benchmark."""
MEMORY_SHAPES = {"quadratic": (1024, 100, 10), "mlp": (64, 100, 10)}
"""``(B, n, k)`` of the memory benchmark per objective."""
QUICK_MEMORY_SHAPE = (4, 20, 4)
QUICK_MEMORY_ITERS = (3, 6)
TRUNCATED_ITERS = 5
"""``K`` of the ``grad_iters`` mode in the memory benchmark."""
QUICK_TRUNCATED_ITERS = 2
LOOP_SHAPE = (256, 1000, 100)
"""``(B, N, k)`` of the hard-CEM against Python-loop benchmark."""
QUICK_LOOP_SHAPE = (8, 50, 5)
MIN_SAMPLE_SECONDS = {False: 0.02, True: 0.0}
"""A timed sample repeats a fast function until it takes at least this long
(by ``--quick``)."""
DEFAULT_REPEATS = 7
QUICK_REPEATS = 2

TARGET_LML_FORWARD = {(1, 100, 10): 15.0, (64, 100, 10): 5.0, (1024, 100, 10): 2.5}
"""LML forward / ``topk`` (issue 12); other shapes: ``TARGET_LML_FORWARD_LARGE``."""
TARGET_LML_FORWARD_LARGE = 3.0
"""LML forward / ``topk`` at ``LML_TARGET_SHAPES`` not in ``TARGET_LML_FORWARD``."""
TARGET_AUTHORS_SPEEDUP = {(1, 100, 10): 5.0, (1024, 100, 10): 8.0}
"""Authors' LML forward / LML forward, at least (issue 12)."""
TARGET_LML_FORWARD_BACKWARD = 5.0
TARGET_SOLVE_MLP = 1.3
TARGET_SOLVE_MLP_SINGLE = 2.0
"""Eager DCEM solve / ``f`` evaluations at B = 1, MLP ``f`` (issue 12; other
batches: ``TARGET_SOLVE_MLP``)."""
TARGET_AUTHORS_DCEM_SPEEDUP = 3.0
"""Authors' DCEM solve / ours, forward + backward at ``AUTHORS_DCEM_SHAPE`` (issue 12)."""
AUTHORS_DCEM_SHAPE = (1, 100, 10)
"""``(B, N, k)`` of the comparison with the authors' DCEM loop (``d = DIM``,
``T = SOLVE_ITERS``)."""
QUICK_AUTHORS_DCEM_ITERS = 2
SMALL_HIDDEN = 32
"""Units of the hidden layers of the small MLP ``f`` of the authors' DCEM comparison."""
TARGET_HARD_OVER_SOFT = 1.0
TARGET_LOOP_SPEEDUP = 50.0
TARGET_MEMORY = 0.2
LML_TARGET_SHAPES = ((1024, 100, 10), (4096, 1000, 100))
MEMORY_TARGET_ITERS = 50

Sense = Literal["max", "min"]


@dataclasses.dataclass(frozen=True)
class Timing:
    """How each function is timed: ``repeats`` interleaved samples, each lasting
    at least ``min_sample_seconds`` (a fast function is called several times)."""

    repeats: int
    min_sample_seconds: float
    clock: Literal["wall", "cpu"] = "wall"
    """``wall``: ``time.perf_counter``. ``cpu``: ``time.process_time``, the
    CPU time of this process, which a shared machine's other processes do
    not inflate (CPU devices, one thread; it misses time spent waiting)."""

    def now(self) -> float:
        return time.process_time() if self.clock == "cpu" else time.perf_counter()

    def halved(self) -> Timing:
        """Fewer samples, for the slow benchmarks."""
        return dataclasses.replace(self, repeats=max(2, self.repeats // 2))


@dataclasses.dataclass
class Row:
    """One measured ratio ``candidate / baseline`` and its target."""

    group: str
    name: str
    shape: dict[str, int]
    candidate: str
    baseline: str
    candidate_value: float | None  # median seconds, or bytes
    baseline_value: float | None
    unit: Literal["s", "bytes", "ops"]
    ratio: float | None
    target: float | None = None
    sense: Sense = "max"  # "max": ratio ≤ target; "min": ratio ≥ target
    status: str = ""  # pass, miss, info, skipped, error
    note: str = ""
    samples: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status:
            return
        if self.ratio is None:
            self.status = "skipped"
        elif self.target is None:
            self.status = "info"
        else:
            met = self.ratio <= self.target if self.sense == "max" else self.ratio >= self.target
            self.status = "pass" if met else "miss"


# --------------------------------------------------------------------------
# Measurement


def synchronize(device: torch.device) -> None:
    """Wait for the device (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], object]], timing: Timing, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each function, ``timing.repeats`` samples each, interleaved.

    Each function runs twice to warm up (a first call may pay a one-time
    cost: the first backward pass of a process takes ~0.3 s here), and the
    second call sets the calls per sample: a sample of a fast function is
    the mean over enough calls to last ``timing.min_sample_seconds``.
    """
    calls: dict[str, int] = {}
    for name, fn in fns.items():
        fn()
        synchronize(device)
        start = timing.now()
        fn()
        synchronize(device)
        once = timing.now() - start
        calls[name] = max(1, math.ceil(timing.min_sample_seconds / max(once, 1e-9)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for repeat in range(timing.repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            synchronize(device)
            start = timing.now()
            for _ in range(calls[name]):
                fns[name]()
            synchronize(device)
            times[name].append((timing.now() - start) / calls[name])
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio_row(
    group: str,
    name: str,
    shape: dict[str, int],
    times: dict[str, list[float]],
    candidate: str,
    baseline: str,
    *,
    target: float | None = None,
    sense: Sense = "max",
    note: str = "",
) -> Row:
    """A row ``median(candidate) / median(baseline)`` from interleaved samples."""
    a, b = median(times[candidate]), median(times[baseline])
    return Row(
        group,
        name,
        shape,
        candidate,
        baseline,
        a,
        b,
        "s",
        a / b,
        target,
        sense,
        note=note,
        samples={candidate: times[candidate], baseline: times[baseline]},
    )


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated while ``fn`` runs, above what was live before it.

    CUDA: ``max_memory_allocated``. CPU: the running sum of the sizes of the
    allocations and frees that the profiler records, in time order.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def saved_tensor_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the distinct storages that autograd saves while ``fn`` runs
    (the graph's size at the end of the forward pass, before the backward)."""
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storages.values())


# --------------------------------------------------------------------------
# Objectives


def make_quadratic(batch: int, device: torch.device, requires_grad: bool = False) -> nn.Module:
    """``f_b(x) = ‖x − c_b‖²``: candidates ``(B, N, d)`` → ``(B, N)``."""
    return Quadratic(torch.rand(batch, DIM, device=device, dtype=DTYPE) - 0.5, requires_grad)


class Quadratic(nn.Module):
    def __init__(self, centre: Tensor, requires_grad: bool) -> None:
        super().__init__()
        self.centre = nn.Parameter(centre, requires_grad=requires_grad)  # (B, d)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.centre.unsqueeze(1)).square().sum(-1)


class MLPObjective(nn.Module):
    """A learned model scoring each candidate: ``d → h → h → 1``, ReLU (``h = HIDDEN``)."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(DIM, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, N, d) → (B, N)
        out: Tensor = self.net(x).squeeze(-1)
        return out


def make_objective(kind: str, batch: int, device: torch.device, grad: bool = False) -> nn.Module:
    if kind == "quadratic":
        return make_quadratic(batch, device, grad)
    model = MLPObjective().to(device=device, dtype=DTYPE)
    model.requires_grad_(grad)
    return model


def shape_dict(batch: int, n: int, k: int, **extra: int) -> dict[str, int]:
    return {"B": batch, "n": n, "k": k, **extra}


# --------------------------------------------------------------------------
# Benchmarks


def bench_lml(shape: tuple[int, int, int], timing: Timing, device: torch.device) -> list[Row]:
    """LML forward, and forward + backward, against ``torch.topk`` forward; the
    authors' LML forward against the LML forward; dispatched operations."""
    batch, n, k = shape
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, n, generator=gen, device=device, dtype=DTYPE)
    x_grad = x.clone().requires_grad_(True)
    cotangent = torch.randn(batch, n, generator=gen, device=device, dtype=DTYPE)

    def topk() -> object:
        return torch.topk(x, k, dim=-1)

    def forward() -> object:
        with torch.no_grad():
            return lml(x, k, TAU)

    def forward_backward() -> object:
        return torch.autograd.grad(lml(x_grad, k, TAU), x_grad, cotangent)

    def authors() -> object:
        with torch.no_grad():
            return authors_lml(x, k, TAU)

    fns = {"torch.topk": topk, "lml forward": forward, "lml forward+backward": forward_backward}
    with_authors = batch * n <= AUTHORS_MAX_ELEMENTS
    if with_authors:
        fns["authors' lml forward"] = authors
    times = time_interleaved(fns, timing, device)
    dims = shape_dict(batch, n, k)
    forward_target = TARGET_LML_FORWARD.get(
        shape, TARGET_LML_FORWARD_LARGE if shape in LML_TARGET_SHAPES else None
    )
    rows = [
        ratio_row(
            "lml",
            "LML forward / topk",
            dims,
            times,
            "lml forward",
            "torch.topk",
            target=forward_target,
        ),
        ratio_row(
            "lml",
            "LML forward+backward / topk forward",
            dims,
            times,
            "lml forward+backward",
            "torch.topk",
            target=TARGET_LML_FORWARD_BACKWARD if shape in LML_TARGET_SHAPES else None,
        ),
    ]
    ours = count_ops(forward).total
    if with_authors:
        rows.append(
            ratio_row(
                "lml",
                "authors' LML forward / LML forward (speed-up)",
                dims,
                times,
                "authors' lml forward",
                "lml forward",
                target=TARGET_AUTHORS_SPEEDUP.get(shape),
                sense="min",
            )
        )
        theirs = count_ops(authors).total
        rows.append(
            Row("lml", "dispatched ops per forward: LML / authors' LML", dims, "lml forward",
                "authors' lml forward", ours, theirs, "ops", ours / theirs)
        )  # fmt: skip
    else:
        rows.append(
            Row("lml", "dispatched ops per forward: LML / authors' LML", dims, "lml forward",
                "authors' lml forward", ours, None, "ops", None,
                note=f"authors' LML not run above B·n = {AUTHORS_MAX_ELEMENTS}")
        )  # fmt: skip
    return rows


def bench_iteration(shape: tuple[int, int, int], timing: Timing, device: torch.device) -> list[Row]:
    """One hard-CEM iteration against one DCEM iteration (quadratic f, no grad)."""
    batch, n, k = shape
    f = make_quadratic(batch, device)
    mean = torch.zeros(batch, DIM, device=device, dtype=DTYPE)
    gen = torch.Generator(device=device).manual_seed(0)

    def run(tau: float | None) -> Callable[[], object]:
        def go() -> object:
            with torch.no_grad():
                return dcem(
                    f, mean, 1.0, n_sample=n, n_elite=k, n_iter=1, tau=tau, generator=gen,
                    validate=False,
                )  # fmt: skip

        return go

    times = time_interleaved({"hard CEM": run(None), "DCEM": run(TAU)}, timing, device)
    return [
        ratio_row(
            "iteration",
            "hard-CEM iteration / DCEM iteration",
            shape_dict(batch, n, k, d=DIM),
            times,
            "hard CEM",
            "DCEM",
            target=TARGET_HARD_OVER_SOFT,
            note="quadratic f, no grad",
        )
    ]


def loop_mask(values: Tensor, k: int, per_elite: bool) -> Tensor:
    """The 0/1 elite mask ``(B, N)`` of the ``k`` lowest values of each row,
    built problem by problem in Python. ``per_elite``: the authors' release
    (one batched ``argsort``, then ``mask[b, i] = 1`` for each elite ``i`` of
    each problem ``b``, a double loop); else one ``topk`` and one indexed
    write per problem."""
    batch, n = values.shape
    mask = torch.zeros(batch, n, device=values.device, dtype=values.dtype)
    if per_elite:
        order = values.argsort(dim=1)[:, :k]
        for b in range(batch):
            for index in order[b]:
                mask[b, index] = 1.0
    else:
        for b in range(batch):
            mask[b, torch.topk(values[b], k, largest=False).indices] = 1.0
    return mask


def loop_iteration(
    f: Callable[[Tensor], Tensor],
    mean: Tensor,
    std: Tensor,
    k: int,
    eps: Tensor,
) -> tuple[Tensor, Tensor]:
    """One hard-CEM iteration whose elite mask is the authors' double loop."""
    samples = mean.unsqueeze(1) + std.unsqueeze(1) * eps
    mask = loop_mask(f(samples), k, per_elite=True)
    return weighted_gaussian_fit(samples, mask, k, 1e-6)


def bench_loop(shape: tuple[int, int, int], timing: Timing, device: torch.device) -> list[Row]:
    """Batched hard selection (and iteration) against per-problem Python loops."""
    batch, n, k = shape
    f = make_quadratic(batch, device)
    mean = torch.zeros(batch, DIM, device=device, dtype=DTYPE)
    std = torch.ones(batch, DIM, device=device, dtype=DTYPE)
    gen = torch.Generator(device=device).manual_seed(0)
    eps = torch.randn(batch, n, DIM, generator=gen, device=device, dtype=DTYPE)
    values = f(mean.unsqueeze(1) + std.unsqueeze(1) * eps).detach()

    def batched_mask() -> Tensor:  # as dcem selects (impl.dcem.hard_selection)
        ranked = torch.nan_to_num(values, nan=torch.inf, posinf=torch.inf, neginf=torch.inf)
        return hard_selection(ranked, k).weights

    def batched_iteration() -> object:
        with torch.no_grad():
            return dcem(
                f, mean, std, n_sample=n, n_elite=k, n_iter=1, tau=None, noise=eps.unsqueeze(0),
                validate=False,
            )  # fmt: skip

    def loop_iteration_() -> object:
        with torch.no_grad():
            return loop_iteration(f, mean, std, k, eps)

    reference = loop_mask(values, k, per_elite=True)
    if not torch.equal(batched_mask(), reference):  # (ties are improbable with Gaussian noise)
        raise AssertionError("the batched and the looped elite masks differ")
    fns: dict[str, Callable[[], object]] = {
        "batched hard selection": batched_mask,
        "authors' double loop": partial(loop_mask, values, k, True),
        "per-problem loop": partial(loop_mask, values, k, False),
        "batched hard-CEM iteration": batched_iteration,
        "iteration with the double loop": loop_iteration_,
    }
    times = time_interleaved(fns, timing.halved(), device)
    dims = shape_dict(batch, n, k, d=DIM)
    return [
        ratio_row(
            "loop",
            "elite mask: authors' double loop / batched hard selection (speed-up)",
            dims,
            times,
            "authors' double loop",
            "batched hard selection",
            target=TARGET_LOOP_SPEEDUP,
            sense="min",
            note="batched argsort, then mask[b, i] = 1 for each elite i of each problem b",
        ),
        ratio_row(
            "loop",
            "elite mask: per-problem loop / batched hard selection (speed-up)",
            dims,
            times,
            "per-problem loop",
            "batched hard selection",
            target=TARGET_LOOP_SPEEDUP,
            sense="min",
            note="for each problem b: mask[b, topk(v[b]).indices] = 1",
        ),
        ratio_row(
            "loop",
            "whole iteration: with the double loop / batched hard CEM (speed-up)",
            dims,
            times,
            "iteration with the double loop",
            "batched hard-CEM iteration",
            sense="min",
            note="same noise; sampling, f and the update are common to both",
        ),
    ]


def solve_iterations(batch: int, n: int, device: torch.device) -> int:
    return SOLVE_ITERS if device.type != "cpu" or batch * n <= LARGE_SAMPLES else SOLVE_ITERS_LARGE


def bench_solve(
    kind: str,
    shape: tuple[int, int, int],
    timing: Timing,
    device: torch.device,
    compile_solve: bool,
) -> list[Row]:
    """A whole DCEM solve (no grad) against evaluating f on the same samples."""
    batch, n, k = shape
    iters = solve_iterations(batch, n, device)
    dims = shape_dict(batch, n, k, d=DIM, T=iters)
    f = make_objective(kind, batch, device)
    gen = torch.Generator(device=device).manual_seed(0)
    noise = torch.randn(iters, batch, n, DIM, generator=gen, device=device, dtype=DTYPE)
    mean = torch.zeros(batch, DIM, device=device, dtype=DTYPE)

    def solve(mean: Tensor, noise: Tensor) -> Tensor:
        result: DCEMResult = dcem(
            f, mean, 1.0, n_sample=n, n_elite=k, n_iter=iters, tau=TAU, noise=noise,
            validate=False,
        )  # fmt: skip
        return result.mean

    recorded: list[Tensor] = []

    def keep(step: DCEMStep) -> None:
        recorded.append(step.samples.clone())

    with torch.no_grad():
        dcem(
            f, mean, 1.0, n_sample=n, n_elite=k, n_iter=iters, tau=TAU, noise=noise,
            validate=False, callback=keep,
        )  # fmt: skip

    def eager() -> object:
        with torch.no_grad():
            return solve(mean, noise)

    def bare() -> object:
        with torch.no_grad():
            return [f(samples) for samples in recorded]

    fns: dict[str, Callable[[], object]] = {"f on the samples": bare, "DCEM solve": eager}
    rows: list[Row] = []
    target = solve_target(kind, batch)
    compiled_note = ""
    if compile_solve:
        try:
            compiled = torch.compile(solve)
            start = time.perf_counter()
            with torch.no_grad():
                compiled(mean, noise)
            synchronize(device)
            compile_seconds = time.perf_counter() - start
            with torch.no_grad():
                gap = (compiled(mean, noise) - solve(mean, noise)).abs().max().item()

            def compiled_solve() -> object:
                with torch.no_grad():
                    return compiled(mean, noise)

            fns["compiled DCEM solve"] = compiled_solve
            compiled_note = f"compile (first call) {compile_seconds:.1f} s; max |Δmean| {gap:.1e}"
        except Exception as error:  # recorded, not fatal: the eager rows still count
            rows.append(
                Row(
                    "solve",
                    f"torch.compile(DCEM solve), {kind} f",
                    dims,
                    "compiled DCEM solve",
                    "f on the samples",
                    None,
                    None,
                    "s",
                    None,
                    status="error",
                    note=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}",
                )
            )
    times = time_interleaved(fns, timing, device)
    rows.insert(
        0,
        ratio_row(
            "solve",
            f"DCEM solve / f evaluations, {kind} f",
            dims,
            times,
            "DCEM solve",
            "f on the samples",
            target=target,
            note="eager, no grad",
        ),
    )
    solve_ops, f_ops = count_ops(eager).total, count_ops(bare).total
    rows.insert(
        1,
        Row("solve", f"dispatched ops besides f: DCEM solve / f evaluations, {kind} f", dims,
            "DCEM solve", "f on the samples", solve_ops - f_ops, f_ops, "ops",
            (solve_ops - f_ops) / f_ops,
            note=f"eager, no grad, T={iters}: {(solve_ops - f_ops) / iters:.1f} ops per iteration "
            "besides f's"),
    )  # fmt: skip
    if "compiled DCEM solve" in times:
        rows.append(
            ratio_row(
                "solve",
                f"compiled DCEM solve / f evaluations, {kind} f",
                dims,
                times,
                "compiled DCEM solve",
                "f on the samples",
                target=target,
                note=compiled_note,
            )
        )
        rows.append(
            ratio_row(
                "solve",
                f"compiled / eager DCEM solve, {kind} f",
                dims,
                times,
                "compiled DCEM solve",
                "DCEM solve",
                note="torch.compile, default mode",
            )
        )
    return rows


def solve_target(kind: str, batch: int) -> float | None:
    """The target of ``DCEM solve / f evaluations``: MLP ``f`` only."""
    if kind != "mlp":
        return None
    return TARGET_SOLVE_MLP_SINGLE if batch == 1 else TARGET_SOLVE_MLP


def bench_authors_dcem(
    timing: Timing, device: torch.device, quick: bool, compile_solve: bool = False
) -> list[Row]:
    """Our DCEM solve against the authors' loop, forward + backward, small MLP ``f``.

    Both draw fresh noise per call (ours from a generator, theirs by
    ``Normal.rsample``), both differentiate ``μ_T`` (summed) with respect to
    ``f``'s parameters; ``init_std = 1``, ``τ = 1``, no bounds. With
    ``compile_solve``, the compiled path (``impl.cem.compiled.CompiledSolve``,
    forward and backward compiled together) is timed in the same interleaved
    rounds, after one untimed first call (the compile, reported in the note).
    """
    batch, n, k = QUICK_SHAPES[0] if quick else AUTHORS_DCEM_SHAPE
    iters = QUICK_AUTHORS_DCEM_ITERS if quick else SOLVE_ITERS
    dims = shape_dict(batch, n, k, d=DIM, T=iters)
    f = MLPObjective(SMALL_HIDDEN).to(device=device, dtype=DTYPE)
    params = list(f.parameters())
    mean = torch.zeros(batch, DIM, device=device, dtype=DTYPE)
    std = torch.ones(batch, DIM, device=device, dtype=DTYPE)
    gen = torch.Generator(device=device).manual_seed(0)
    runs: list[int] = []

    def ours() -> object:
        result = dcem(
            f, mean, 1.0, n_sample=n, n_elite=k, n_iter=iters, tau=TAU, generator=gen,
            validate=False,
        )  # fmt: skip
        return torch.autograd.grad(result.mean.sum(), params)

    def theirs() -> object:
        mu, run = authors_dcem(f, mean, std, n_sample=n, n_elite=k, n_iter=iters, temp=1 / TAU)
        runs.append(run)
        return torch.autograd.grad(mu.sum(), params)

    fns: dict[str, Callable[[], object]] = {"DCEM solve": ours, "authors' DCEM solve": theirs}
    compile_note = ""
    if compile_solve:
        from impl.cem import CEMOptions
        from impl.cem.compiled import CompiledSolve

        options = CEMOptions(n_sample=n, n_elite=k, n_iter=iters, tau=TAU)
        solver = CompiledSolve(f, options)
        compiled_gen = torch.Generator(device=device).manual_seed(0)

        def compiled() -> object:
            result = solver(mean, 1.0, generator=compiled_gen, validate=False)
            return torch.autograd.grad(result.mean.sum(), params)

        start = time.perf_counter()
        compiled()
        compile_note = (
            f"; compiled: first call (trace + compile) {time.perf_counter() - start:.1f} s"
        )
        fns["compiled DCEM solve"] = compiled
    times = time_interleaved(fns, timing, device)
    ours_ops, theirs_ops = count_ops(ours).total, count_ops(theirs).total
    layers = f"{DIM}-{SMALL_HIDDEN}-{SMALL_HIDDEN}-1"
    note = f"forward + backward, MLP f {layers}; authors' iterations run: "
    note += ", ".join(str(r) for r in sorted(set(runs)))
    rows = [
        ratio_row("solve", "authors' DCEM / DCEM solve (speed-up)", dims, times,
                  "authors' DCEM solve", "DCEM solve", target=TARGET_AUTHORS_DCEM_SPEEDUP,
                  sense="min", note=note),
        Row("solve", "dispatched ops per solve: DCEM / authors' DCEM", dims, "DCEM solve",
            "authors' DCEM solve", ours_ops, theirs_ops, "ops", ours_ops / theirs_ops,
            note="forward + backward"),
    ]  # fmt: skip
    if "compiled DCEM solve" in times:
        rows.append(
            ratio_row("solve", "authors' DCEM / compiled DCEM solve (speed-up)", dims, times,
                      "authors' DCEM solve", "compiled DCEM solve",
                      target=TARGET_AUTHORS_DCEM_SPEEDUP, sense="min",
                      note=note + compile_note)
        )  # fmt: skip
    return rows


def skipped_solve(kind: str, shape: tuple[int, int, int], reason: str) -> Row:
    batch, n, k = shape
    return Row(
        "solve",
        f"DCEM solve / f evaluations, {kind} f",
        shape_dict(batch, n, k, d=DIM),
        "DCEM solve",
        "f on the samples",
        None,
        None,
        "s",
        None,
        solve_target(kind, batch),
        note=reason,
    )


def bench_memory(
    kind: str, shape: tuple[int, int, int], iters: int, timing: Timing, device: torch.device
) -> list[Row]:
    """Peak memory (and time) of forward + backward through ``iters`` iterations."""
    batch, n, k = shape
    f = make_objective(kind, batch, device, grad=True)
    init = torch.zeros(batch, DIM, device=device, dtype=DTYPE)
    seed = 0
    truncated = TRUNCATED_ITERS if iters > TRUNCATED_ITERS else QUICK_TRUNCATED_ITERS

    def make_pass(options: dict[str, Any]) -> Callable[[], object]:
        def go() -> object:
            mean0 = init.clone().requires_grad_(True)
            gen = torch.Generator(device=device).manual_seed(seed)
            result = dcem(
                f, mean0, 1.0, n_sample=n, n_elite=k, n_iter=iters, tau=TAU, generator=gen,
                validate=False, **options,
            )  # fmt: skip
            loss = result.mean.square().sum()
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        return go

    modes: dict[str, dict[str, Any]] = {
        "plain": {},
        "checkpoint=True": {"checkpoint": True},
        f"grad_iters={truncated}": {"grad_iters": truncated},
    }
    peaks = {name: peak_memory(make_pass(options), device) for name, options in modes.items()}
    graphs: dict[str, int] = {}
    for name, options in modes.items():

        def forward(options: dict[str, Any] = options) -> object:
            gen = torch.Generator(device=device).manual_seed(seed)
            mean0 = init.clone().requires_grad_(True)
            return dcem(
                f, mean0, 1.0, n_sample=n, n_elite=k, n_iter=iters, tau=TAU, generator=gen,
                validate=False, **options,
            )  # fmt: skip

        graphs[name] = saved_tensor_bytes(forward)
    f.zero_grad(set_to_none=True)
    times = time_interleaved(
        {name: make_pass(options) for name, options in modes.items()}, timing.halved(), device
    )
    dims = shape_dict(batch, n, k, d=DIM, T=iters)
    targeted = iters == MEMORY_TARGET_ITERS
    method = "max_memory_allocated" if device.type == "cuda" else "profiler live-bytes peak"
    rows: list[Row] = []
    for name in list(modes)[1:]:
        rows.append(
            Row(
                "memory",
                f"peak memory {name} / plain, {kind} f",
                dims,
                name,
                "plain",
                float(peaks[name]),
                float(peaks["plain"]),
                "bytes",
                peaks[name] / peaks["plain"],
                TARGET_MEMORY if targeted else None,
                note=(
                    f"{method}, forward+backward; graph at the end of the forward "
                    f"{graphs[name] / 2**20:.1f} MiB vs {graphs['plain'] / 2**20:.1f} MiB "
                    "(saved tensors; checkpointed iterations hide theirs)"
                ),
            )
        )
        rows.append(
            ratio_row(
                "memory",
                f"time of forward+backward {name} / plain, {kind} f",
                dims,
                times,
                name,
                "plain",
            )
        )
    return rows


def check_syncs(device: torch.device) -> list[Row]:
    """CUDA: ``lml`` and ``dcem`` (``validate=False``) under sync-debug "error"."""
    if device.type != "cuda":
        return [
            Row(
                "sync",
                "host-device syncs in lml and dcem",
                {},
                "lml, dcem",
                "-",
                None,
                None,
                "s",
                None,
                note="no GPU on this machine: not run",
            )
        ]
    batch, n, k = SHAPES[1]
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, n, device=device, dtype=DTYPE, generator=gen, requires_grad=True)
    f = make_quadratic(batch, device, requires_grad=True)
    mean = torch.zeros(batch, DIM, device=device, dtype=DTYPE, requires_grad=True)
    # Warm up outside the check (first calls may initialize lazily).
    lml(x, k).sum().backward()  # type: ignore[no-untyped-call]
    status, note = "pass", 'torch.cuda.set_sync_debug_mode("error") raised nothing'
    torch.cuda.set_sync_debug_mode("error")
    try:
        lml(x, k, TAU).sum().backward()  # type: ignore[no-untyped-call]
        for tau in (TAU, None):
            result = dcem(
                f, mean, 1.0, n_sample=n, n_elite=k, n_iter=3, tau=tau, generator=gen,
                validate=False,
            )  # fmt: skip
            result.mean.sum().backward()  # type: ignore[no-untyped-call]
    except RuntimeError as error:
        status, note = "miss", str(error).splitlines()[0][:200]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return [
        Row(
            "sync",
            "host-device syncs in lml and dcem",
            shape_dict(batch, n, k, d=DIM),
            "lml, dcem",
            "-",
            None,
            None,
            "s",
            None,
            status=status,
            note=note,
        )
    ]


# --------------------------------------------------------------------------
# Driver and output


def run(
    quick: bool,
    repeats: int,
    device: torch.device,
    full: bool,
    compile_solve: bool,
    only: str | None = None,
    clock: Literal["wall", "cpu"] = "wall",
) -> list[Row]:
    """Every benchmark, or only the group ``only`` (``lml``, ``solve``, or ``authors``:
    the comparison with the authors' DCEM alone)."""
    shapes = QUICK_SHAPES if quick else SHAPES
    timing = Timing(repeats, MIN_SAMPLE_SECONDS[quick], clock)
    rows: list[Row] = []

    def attempt(label: str, bench: Callable[[], list[Row]]) -> None:
        print(f"[bench] {label}", file=sys.stderr, flush=True)
        try:
            rows.extend(bench())
        except Exception as error:
            traceback.print_exc()
            rows.append(
                Row(label.split()[0], label, {}, "-", "-", None, None, "s", None,
                    status="error", note=f"{type(error).__name__}: {error}"[:200])
            )  # fmt: skip

    if only == "authors":
        attempt("solve authors' DCEM", partial(bench_authors_dcem, timing, device, quick,
                                               compile_solve and not quick))  # fmt: skip
        return rows
    if only in (None, "lml"):
        for shape in QUICK_SHAPES if quick else LML_SHAPES:
            attempt(f"lml {shape}", partial(bench_lml, shape, timing, device))
    if only == "lml":
        return rows
    if only is None:
        for shape in shapes:
            attempt(f"iteration {shape}", partial(bench_iteration, shape, timing, device))
        loop_shape = QUICK_LOOP_SHAPE if quick else LOOP_SHAPE
        attempt(f"loop {loop_shape}", partial(bench_loop, loop_shape, timing, device))
    for kind in ("mlp", "quadratic"):
        for shape in shapes:
            samples = shape[0] * shape[1]
            if (
                kind == "mlp"
                and device.type == "cpu"
                and samples > MLP_MAX_SAMPLES_CPU
                and not full
            ):
                rows.append(
                    skipped_solve(
                        kind,
                        shape,
                        "skipped on the CPU (one evaluation of f is ~350 GFLOP, about a "
                        "minute on 2 cores); run with --full",
                    )
                )
                continue
            compiled = compile_solve and not quick and samples <= COMPILE_MAX_SAMPLES
            attempt(
                f"solve {kind} {shape}",
                partial(bench_solve, kind, shape, timing, device, compiled),
            )
    attempt(
        "solve authors' DCEM",
        partial(bench_authors_dcem, timing, device, quick, compile_solve and not quick),
    )
    if only == "solve":
        return rows
    for kind, memory_shape in MEMORY_SHAPES.items():
        for iters in QUICK_MEMORY_ITERS if quick else MEMORY_ITERS:
            shape = QUICK_MEMORY_SHAPE if quick else memory_shape
            attempt(
                f"memory {kind} {shape} T={iters}",
                partial(bench_memory, kind, shape, iters, timing, device),
            )
    attempt("sync", partial(check_syncs, device))
    return rows


def metadata(
    args: argparse.Namespace, device: torch.device, load_before: list[float]
) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": name or platform.machine(),
        "gpu": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "dtype": str(DTYPE).removeprefix("torch."),
        "quick": args.quick,
        "repeats": args.repeats,
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "memory_method": (
            "torch.cuda.max_memory_allocated"
            if device.type == "cuda"
            else "peak of live bytes over the profiler's allocation/free events"
        ),
        "timing": (
            "medians of interleaved repeats; ratio = median(candidate) / median(baseline); "
            f"clock: {args.clock}"
        ),
    }


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    if unit == "ops":
        return f"{value:.0f} ops"
    return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"


def markdown(meta: dict[str, Any], rows: list[Row]) -> str:
    gpu = "" if meta["gpu"] else " (no GPU on this machine: the CUDA rows were not run)"
    lines = [
        f"# DCEM benchmarks on {meta['device']}",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}; torch {meta['torch']}, Python {meta['python']}",
        f"- device: {meta['device']} ({meta['device_name']}){gpu}",
        f"- dtype {meta['dtype']}, {meta['threads']} threads, {meta['cpu_count']} CPUs",
        f"- load average before/after: {meta['load_average_before']} / "
        f"{meta['load_average_after']}",
        f"- timing: {meta['timing']}; repeats {meta['repeats']}",
        f"- peak memory: {meta['memory_method']}",
        "",
        "| group | ratio measured | shape | ratio | target | status | candidate | baseline "
        "| note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        shape = ", ".join(f"{key}={value}" for key, value in row.shape.items())
        ratio = "—" if row.ratio is None else f"{row.ratio:.3g}"
        target = (
            "—" if row.target is None else ("≤ " if row.sense == "max" else "≥ ") + str(row.target)
        )
        lines.append(
            f"| {row.group} | {row.name} | {shape} | {ratio} | {target} | {row.status} | "
            f"{format_value(row.candidate_value, row.unit)} | "
            f"{format_value(row.baseline_value, row.unit)} | {row.note} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats, no compile")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--full", action="store_true", help="also the MLP at the largest shape")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own)"
    )
    parser.add_argument(
        "--only",
        choices=("lml", "solve", "authors"),
        default=None,
        help="one group, to <device>-<group>.* (authors: only the authors' DCEM comparison)",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time (a shared CPU machine, one thread)",
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if name == "auto" else name)
    load_before = list(os.getloadavg())
    torch.manual_seed(0)
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures CPU devices only")
    rows = run(args.quick, args.repeats, device, args.full, args.compile, args.only, args.clock)
    meta = metadata(args, device, load_before)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (device.type if args.only is None else f"{device.type}-{args.only}")
    payload = {"meta": meta, "results": [dataclasses.asdict(row) for row in rows]}
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown(meta, rows), encoding="utf-8")
    print(markdown(meta, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
