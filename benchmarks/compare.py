"""Before/after: ``python -m benchmarks.compare --against REV [--module dcem|lml]``.

Loads ``impl/dcem.py`` (or ``impl/lml.py``) as it was at git revision ``REV``
next to the current one and times both in the same process (interleaved
repeats, medians): whole solves on a quadratic ``f``, with and without a
backward pass, written to ``<out>/before-after-<device>.json``; or the LML
forward and forward + backward at the shapes of ``benchmarks.run.LML_SHAPES``
with the operations each forward dispatches, written to
``<out>/before-after-lml-<device>.json``. ``new_over_old < 1`` is faster.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from benchmarks.op_count import count_ops
from benchmarks.run import (
    DIM,
    DTYPE,
    LML_SHAPES,
    MIN_SAMPLE_SECONDS,
    TAU,
    Timing,
    make_quadratic,
    median,
    time_interleaved,
)
from impl.dcem import dcem
from impl.lml import lml

CASES: tuple[tuple[int, int, int, int], ...] = (
    (1, 100, 10, 10),
    (1024, 100, 10, 10),
    (4096, 1000, 100, 3),
)
"""``(B, n, k, T)`` of the compared solves."""
GRAD_MAX_SAMPLES = 200_000
"""Largest ``B·n`` also timed with a backward pass."""


def load_old(revision: str, module: str = "dcem") -> ModuleType:
    """``impl/<module>.py`` at ``revision``, as the module ``<module>_at_<revision>``."""
    source = subprocess.run(
        ["git", "show", f"{revision}:impl/{module}.py"], check=True, capture_output=True, text=True
    ).stdout
    name = f"{module}_at_{revision.replace('-', '_').replace('~', '_')}"
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def make_solve(
    impl: Callable[..., Any],
    f: Callable[[torch.Tensor], torch.Tensor],
    init: torch.Tensor,
    sizes: tuple[int, int, int],
    tau: float | None,
    grad: bool,
) -> Callable[[], object]:
    """A whole solve with ``impl`` (``sizes`` = ``(n, k, T)``), with a backward pass if ``grad``."""
    n, k, iters = sizes

    def go() -> object:
        gen = torch.Generator(device=init.device).manual_seed(0)
        mean0 = init.clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            result = impl(
                f, mean0, 1.0, n_sample=n, n_elite=k, n_iter=iters, tau=tau, generator=gen,
                validate=False,
            )  # fmt: skip
            if grad:
                result.mean.sum().backward()
        return result

    return go


def lml_forward(impl: Callable[..., Any], x: torch.Tensor, k: int) -> object:
    with torch.no_grad():
        return impl(x, k, TAU)


def lml_forward_backward(impl: Callable[..., Any], x: torch.Tensor, k: int) -> object:
    return torch.autograd.grad(impl(x, k, TAU).square().sum(), x)


def compare_lml(
    old: Callable[..., Any], timing: Timing, device: torch.device
) -> list[dict[str, Any]]:
    """Old against new ``lml``: forward, forward + backward, and dispatched ops per forward."""
    rows: list[dict[str, Any]] = []
    for batch, n, k in LML_SHAPES:
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(batch, n, generator=gen, device=device, dtype=DTYPE)
        x_grad = x.clone().requires_grad_(True)

        fns: dict[str, Callable[[], object]] = {
            "old forward": partial(lml_forward, old, x, k),
            "new forward": partial(lml_forward, lml, x, k),
            "old forward+backward": partial(lml_forward_backward, old, x_grad, k),
            "new forward+backward": partial(lml_forward_backward, lml, x_grad, k),
        }
        times = time_interleaved(fns, timing, device)
        for kind in ("forward", "forward+backward"):
            a, b = median(times[f"old {kind}"]), median(times[f"new {kind}"])
            row = {"B": batch, "n": n, "k": k, "pass": kind, "old_s": a, "new_s": b,
                   "new_over_old": b / a}  # fmt: skip
            if kind == "forward":
                row["old_ops"] = count_ops(fns["old forward"]).total
                row["new_ops"] = count_ops(fns["new forward"]).total
            print(row, flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision of the old impl/dcem.py")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--module", choices=("dcem", "lml"), default="dcem")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.module == "lml":
        lml_report: dict[str, Any] = {
            "what": (
                f"impl.lml.lml at {args.against} (old) against the working tree (new), same "
                f"process, interleaved, {args.repeats} repeats, medians; x ~ N(0, 1), "
                f"tau={TAU}; forward under no_grad; forward+backward of (y*y).sum(); ops: "
                "ATen operations one forward dispatches; new_over_old < 1 is faster"
            ),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": str(device),
            "dtype": str(DTYPE).removeprefix("torch."),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_before": list(os.getloadavg()),
        }
        timing = Timing(args.repeats, MIN_SAMPLE_SECONDS[False], args.clock)
        lml_report["clock"] = args.clock
        lml_report["rows"] = compare_lml(load_old(args.against, "lml").lml, timing, device)
        lml_report["load_average_after"] = list(os.getloadavg())
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"before-after-lml-{device.type}.json"
        out.write_text(json.dumps(lml_report, indent=1) + "\n", encoding="utf-8")
        return 0
    old: Callable[..., Any] = load_old(args.against).dcem
    report: dict[str, Any] = {
        "what": (
            f"impl.dcem.dcem at {args.against} (old) against the working tree (new), same "
            f"process, interleaved, {args.repeats} repeats, medians; quadratic f, d={DIM}; "
            "tau=1.0 is DCEM, None hard CEM; grad: forward + backward of mean.sum() w.r.t. "
            "init_mean; new_over_old < 1 is faster"
        ),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "dtype": str(DTYPE).removeprefix("torch."),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_before": list(os.getloadavg()),
        "rows": [],
    }
    for batch, n, k, iters in CASES:
        f = make_quadratic(batch, device)
        init = torch.zeros(batch, DIM, device=device, dtype=DTYPE)
        for tau in (1.0, None):
            for grad in (False, True):
                if grad and batch * n > GRAD_MAX_SAMPLES:
                    continue

                times = time_interleaved(
                    {
                        name: make_solve(impl, f, init, (n, k, iters), tau, grad)
                        for name, impl in (("old", old), ("new", dcem))
                    },
                    Timing(args.repeats, MIN_SAMPLE_SECONDS[False], args.clock),
                    device,
                )
                row = {
                    "B": batch, "n": n, "k": k, "T": iters, "tau": tau, "grad": grad,
                    "old_s": median(times["old"]), "new_s": median(times["new"]),
                    "new_over_old": median(times["new"]) / median(times["old"]),
                }  # fmt: skip
                print(row, flush=True)
                report["rows"].append(row)
    report["load_average_after"] = list(os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"before-after-{device.type}.json"
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
