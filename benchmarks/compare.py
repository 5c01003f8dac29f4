"""Before/after: ``python -m benchmarks.compare --against REV [--module dcem|lml]``.

Loads the ``impl`` package as it was at git revision ``REV``
(``load_old_package``) next to the current one and times its ``dcem`` (or
``lml``) against the current one in the same process (interleaved repeats,
medians): whole solves on a quadratic ``f``, with and without a backward
pass, written to ``<out>/before-after-<device>.json``; or the LML forward and
forward + backward at the shapes of ``benchmarks.run.LML_SHAPES`` with the
operations each forward dispatches, written to
``<out>/before-after-lml-<device>.json``. ``new_over_old < 1`` is faster.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
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
    """``impl.<module>`` as it was at ``revision``, with the whole ``impl`` package of
    that revision behind it (``load_old_package``)."""
    return importlib.import_module(f"{load_old_package(revision)}.{module}")


def load_old_package(revision: str) -> str:
    """Import the ``impl`` package at git ``revision`` as ``impl_at_<revision>``; its name.

    The package's files are taken with ``git archive`` into a temporary folder,
    renamed, and their ``impl`` imports rewritten to the new name, so that every
    module of the old revision (not only the one compared) runs: since the
    solver was split into ``impl.cem`` (CEM-31), ``impl/dcem.py`` alone is a
    wrapper that would call the current solver.
    """
    name = "impl_at_" + re.sub(r"\W", "_", revision)
    if name in sys.modules:
        return name
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "impl"], check=True, capture_output=True
    ).stdout
    root = Path(tempfile.mkdtemp())
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    package = root / name
    (root / "impl").rename(package)
    imports = re.compile(r"^(\s*)(from|import) impl(?=[.\s])", re.MULTILINE)
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        path.write_text(imports.sub(rf"\1\2 {name}", text), encoding="utf-8")
    sys.path.insert(0, str(root))
    importlib.import_module(name)
    return name


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
    parser.add_argument("--against", required=True, help="git revision of the old impl package")
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
