"""The GPU check of issue 14: one command for the day a GPU is lent.

    bash benchmarks/gpu_check.sh --device cuda --out DIR --wheels .whl     # on the GPU
    bash benchmarks/gpu_check.sh --device cpu --out DIR --wheels .whl      # the CPU rehearsal
    bash benchmarks/gpu_check.sh --device cpu --out DIR --fast             # its fast part
    bash benchmarks/gpu_check.sh --check-wheels --wheels .whl --out DIR    # the wheel folder only

Phases, in order of importance, each a subprocess with a time limit cut to
what is left of ``--budget`` (default 360 s, ``DEFAULT_BUDGET_SECONDS``):

1. ``wheels``: checks the folder against ``benchmarks.gpu_wheels.WHEELS`` and
   installs it offline (``pip install --no-index --no-deps --target``) into a
   temporary folder put on ``PYTHONPATH`` for the later phases; on a Python
   other than 3.12 the install is a ``--dry-run`` resolution of the cp312
   wheels (the rehearsal).
2. ``sync``: ``benchmarks.gpu_sync`` on ``cuda`` (sync debug mode "error"), or
   on ``meta`` for a CPU rehearsal; writes ``sync.json``.
3. ``device-tests``: ``pytest tests/test_device.py --device DEVICE``;
   writes ``pytest-device.xml``.
4. ``bench-quick``, then ``bench``: ``benchmarks.run``'s table on the device
   plus LML against ``topk`` at ``EXTRA_LML_SHAPES``, first at the quick
   sizes (a table exists even if the full one runs out of time), then at the
   full sizes, which replace them; writes ``<device>.json`` and ``.md``. The
   CPU rehearsal stops at the quick sizes (the CPU's own table is
   ``python -m benchmarks.run``'s).
5. ``oracle-tests``: the reference-comparison suites (``tests/test_lml.py``,
   ``test_dcem.py``, ``test_control.py``) with this machine's torch, when
   CVXPY imports; writes ``pytest-oracle.xml``.
6. ``compiled-path`` (CUDA only): ``benchmarks.compiled``'s CUDA-graph cases
   (``impl.cem.compiled.CompiledSolve`` and ``impl.control.compiled.CompiledMPC``
   with ``mode="reduce-overhead"``), then the default mode; writes
   ``compiled-cuda.json`` (``python -m benchmarks.compiled --render`` makes
   its table).
7. ``bench-compiled``: the ``torch.compile`` solve rows of ``benchmarks.run``
   (compiled against eager and against ``f``'s evaluations) at the largest
   shape it compiles, appended to the table.

Every phase's output goes to ``log.txt``, and ``summary.json`` records each
phase's command, exit status, time and outcome with the versions and the
device: at most 8 files in the output folder. ``--fast`` runs phases 1–4 at
the quick sizes, and only the ``meta`` tests of phase 3; ``--phases a,b``
runs only the phases named (a rerun of what failed; the wheels phase is
needed whenever a later one imports CVXPY). The dm-control
segment of the issue is not part of it (see ``benchmarks/GPU.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from benchmarks import gpu_wheels

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUDGET_SECONDS = 360.0
"""Six minutes: a run and one rerun of the phases that failed fit in a GPU
lease of 15 minutes with the machine's start (about a minute)."""
EXTRA_LML_SHAPES = ((65536, 100, 10),)
"""``(B, n, k)`` of LML against ``topk`` beyond ``benchmarks.run.SHAPES``."""
QUICK_EXTRA_LML_SHAPES = ((256, 100, 10),)
COMPILED_PATH_ARGS = (
    "--cases", "solve-mlp-b1-cudagraph,mpc-pendulum-b1-cudagraph,solve-mlp-b1",
    "--phases", "cold", "--repeats", "5", "--json-only",
)  # fmt: skip
"""``benchmarks.compiled`` in the GPU check: the CUDA-graph solve and MPC step
(``mode="reduce-overhead"``: compiled against eager, and whether the CUDA graph
was skipped), then the default mode; cold processes only; ``compiled-cuda.json``."""
ORACLE_TESTS = ("tests/test_lml.py", "tests/test_dcem.py", "tests/test_control.py")
LOG_NAME = "log.txt"
SUMMARY_NAME = "summary.json"
SYNC_NAME = "sync.json"
PHASE_CAPS_SECONDS = {
    "wheels": 120.0,
    "sync": 120.0,
    "device-tests": 180.0,
    "bench-quick": 90.0,
    "bench": 200.0,
    "oracle-tests": 150.0,
    "compiled-path": 240.0,
    "bench-compiled": 480.0,
}
"""The most each phase may take; the budget's remainder cuts it further."""
MIN_PHASE_SECONDS = 15.0
"""A phase is not started with less than this left of the budget."""

Outcome = Literal["ok", "failed", "timeout", "skipped"]


@dataclasses.dataclass
class Phase:
    """One phase's record in ``summary.json``."""

    name: str
    outcome: Outcome
    seconds: float = 0.0
    command: list[str] = dataclasses.field(default_factory=list)
    returncode: int | None = None
    note: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class Runner:
    """Runs the phases as subprocesses against one deadline, logging to ``log.txt``."""

    def __init__(
        self, out: Path, budget: float, env: dict[str, str], selected: frozenset[str] | None
    ) -> None:
        self.out = out
        self.selected = selected
        self.deadline = time.monotonic() + budget
        self.env = env
        self.log = out / LOG_NAME
        self.phases: list[Phase] = []

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def note(self, text: str) -> None:
        with self.log.open("a", encoding="utf-8") as log:
            log.write(text + "\n")
        print(text, flush=True)

    def skip(self, name: str, reason: str) -> Phase:
        phase = Phase(name, "skipped", note=reason)
        self.phases.append(phase)
        self.note(f"== {name}: skipped ({reason})")
        return phase

    def run(self, name: str, command: Sequence[str]) -> Phase:
        """Run ``command`` in the repository root with at most the phase's
        cap (or what is left of the budget); a process group that outlives it
        is killed whole (``torch.compile`` starts worker processes)."""
        if self.selected is not None and name not in self.selected:
            return self.skip(name, "not selected by --phases")
        limit = min(PHASE_CAPS_SECONDS[name], self.remaining())
        if limit < MIN_PHASE_SECONDS:
            return self.skip(name, f"budget spent ({self.remaining():.0f} s left)")
        self.note(f"== {name} (limit {limit:.0f} s): {' '.join(command)}")
        start = time.monotonic()
        with self.log.open("a", encoding="utf-8") as log:
            process = subprocess.Popen(
                list(command), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            try:
                code: int | None = process.wait(timeout=limit)
                outcome: Outcome = "ok" if code == 0 else "failed"
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                code, outcome = None, "timeout"
        phase = Phase(name, outcome, round(time.monotonic() - start, 1), list(command), code)
        self.phases.append(phase)
        self.note(f"== {name}: {outcome} in {phase.seconds} s (exit {code})")
        return phase


def junit_counts(path: Path) -> dict[str, int]:
    """Tests, failures, errors and skips of a pytest JUnit XML file."""
    if not path.is_file():
        return {}
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    keys = ("tests", "failures", "errors", "skipped")
    return {key: sum(int(suite.get(key, "0")) for suite in suites) for key in keys}


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and the device, for the summary."""
    cuda = device.type == "cuda" and torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.machine(),
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _module(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def wheels_phase(runner: Runner, folder: Path, site: Path) -> bool:
    """Check the wheel folder and install it (or resolve it, off Python 3.12).
    Returns whether ``site`` now holds the wheels."""
    check = gpu_wheels.check_folder(folder)
    if not check.files:
        phase = runner.skip("wheels", f"no wheels in {folder}")
        phase.details = check.as_dict()
        return False
    real = sys.version_info[:2] == (3, 12)
    phase = runner.run("wheels", gpu_wheels.install_command(folder, site, dry_run=not real))
    phase.details = check.as_dict() | {"installed": real and phase.outcome == "ok"}
    if not check.ok and phase.outcome == "ok":
        phase.outcome, phase.note = "failed", "the folder does not match benchmarks.gpu_wheels"
    if not real:
        phase.note = (phase.note + "; " if phase.note else "") + (
            f"Python {platform.python_version()}: cp312 wheels resolved (--dry-run), not installed"
        )
    return real and phase.outcome == "ok"


def check_all(args: argparse.Namespace) -> int:
    """Every phase, then ``summary.json``; exit 1 when a phase failed."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    runner = Runner(out, args.budget, env, args.phases)
    started = time.time()
    runner.note(f"gpu_check: device {device}, budget {args.budget:.0f} s, out {out}")
    with tempfile.TemporaryDirectory(prefix="gpu-check-site-") as tmp:
        site = Path(tmp)
        if args.wheels is None:
            runner.skip("wheels", "no --wheels folder given")
        elif wheels_phase(runner, args.wheels, site):
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        if not args.check_wheels:
            run_checks(runner, args, device)
    summary = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "budget_seconds": args.budget,
        "fast": args.fast,
        "environment": environment(device),
        "phases": [dataclasses.asdict(phase) for phase in runner.phases],
        "not_included": "the dm-control phase-2 segment: no phase-1 checkpoint is committed, "
        "and the dm-control and MuJoCo wheels (83 MB) exceed what travels (64 MiB)",
    }
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    failed = [p.name for p in runner.phases if p.outcome in ("failed", "timeout")]
    runner.note(f"gpu_check: done in {summary['seconds']} s; failed phases: {failed or 'none'}")
    return 1 if failed else 0


def run_checks(runner: Runner, args: argparse.Namespace, device: torch.device) -> None:
    out: Path = args.out
    common = ["--out", str(out), "--device", str(device)]
    if args.threads is not None:
        common += ["--threads", str(args.threads)]
    sync_device = "cuda" if device.type == "cuda" else "meta"
    phase = runner.run("sync", _module("benchmarks.gpu_check", "sync", *common[:2],
                                       "--device", sync_device))  # fmt: skip
    sync_path = out / SYNC_NAME
    if sync_path.is_file():
        report = json.loads(sync_path.read_text(encoding="utf-8"))
        phase.details = {key: report[key] for key in ("checker", "checker_works", "syncs",
                                                      "errors", "unexpected")}  # fmt: skip

    pytest = _module("pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra --strict-markers")
    xml = out / "pytest-device.xml"
    selection = ["-k", "meta"] if args.fast else []
    phase = runner.run("device-tests", [*pytest, "tests/test_device.py", "--device", str(device),
                                        f"--junitxml={xml}", *selection])  # fmt: skip
    phase.details = junit_counts(xml)

    # The quick table first: a table exists even if the full one runs out of time.
    bench = _module("benchmarks.gpu_check", "bench", *common)
    quick = args.fast or device.type == "cpu"
    runner.run("bench-quick", [*bench, "--stage", "eager", "--quick"])
    if quick:
        runner.skip("bench", "the CPU rehearsal and --fast stop at the quick sizes")
    else:
        runner.run("bench", [*bench, "--stage", "eager"])
    if args.fast:
        runner.skip("oracle-tests", "--fast")
        runner.skip("compiled-path", "--fast")
        runner.skip("bench-compiled", "--fast")
        return

    probe = subprocess.run([sys.executable, "-c", "import cvxpy"], env=runner.env, cwd=ROOT,
                           capture_output=True, timeout=120)  # fmt: skip
    if probe.returncode != 0:
        runner.skip("oracle-tests", "cvxpy does not import (no wheels installed?)")
    else:
        xml = out / "pytest-oracle.xml"
        phase = runner.run("oracle-tests", [*pytest, *ORACLE_TESTS, f"--junitxml={xml}"])
        phase.details = junit_counts(xml)
    if device.type == "cuda":  # the CPU's figures: benchmarks/results/compiled-cpu.md
        compiled_path = [*COMPILED_PATH_ARGS, "--device", str(device), "--out", str(out)]
        runner.run("compiled-path", _module("benchmarks.compiled", *compiled_path))
    else:
        runner.skip("compiled-path", "CUDA only (the CPU's: python -m benchmarks.compiled)")
    compiled = [*bench, "--stage", "compiled"]
    runner.run("bench-compiled", [*compiled, "--quick"] if quick else compiled)


# --------------------------------------------------------------------------
# Stages (run as subprocesses by check_all)


def sync_stage(device: torch.device, out: Path) -> int:
    """``benchmarks.gpu_sync`` on ``device``: ``sync.json``; exit 1 on anything unexpected."""
    from benchmarks import gpu_sync

    report = gpu_sync.report(gpu_sync.check(gpu_sync.ENTRY_POINTS, device), device)
    out.mkdir(parents=True, exist_ok=True)
    (out / SYNC_NAME).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({key: value for key, value in report.items() if key != "entries"}, indent=1))
    return 0 if report["checker_works"] and not report["unexpected"] else 1


def bench_stage(
    device: torch.device, out: Path, stage: str, quick: bool, repeats: int | None
) -> int:
    """``benchmarks.run`` on ``device``: ``eager`` writes the table (and the
    extra LML shapes); ``compiled`` appends the ``torch.compile`` solve rows,
    rewriting the table after each objective (a compilation takes minutes)."""
    from benchmarks import run as suite

    repeats = repeats or (suite.QUICK_REPEATS if quick else suite.DEFAULT_REPEATS)
    timing = suite.Timing(repeats, suite.MIN_SAMPLE_SECONDS[quick])
    shapes = suite.QUICK_SHAPES if quick else suite.SHAPES
    path = out / f"{device.type}.json"
    load_before = list(os.getloadavg())
    this = {"stage": stage, "quick": quick}
    out.mkdir(parents=True, exist_ok=True)

    def write(rows: list[Any], stages: list[dict[str, Any]]) -> None:
        namespace = argparse.Namespace(quick=quick, repeats=repeats, clock=timing.clock)
        meta = suite.metadata(namespace, device, load_before)
        meta["command"] = "python -m benchmarks.gpu_check " + " ".join(sys.argv[1:])
        meta["stages"] = stages
        payload = {"meta": meta, "results": [dataclasses.asdict(row) for row in rows]}
        path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        path.with_suffix(".md").write_text(suite.markdown(meta, rows), encoding="utf-8")

    torch.manual_seed(0)
    if stage == "eager":
        rows = suite.run(quick, repeats, device, full=True, compile_solve=False)
        for shape in QUICK_EXTRA_LML_SHAPES if quick else EXTRA_LML_SHAPES:
            rows.extend(suite.bench_lml(shape, timing, device))
        write(rows, [this])
        return 0
    if not path.is_file():
        print(f"no {path}: run the eager stage first", file=sys.stderr)
        return 1
    payload = json.loads(path.read_text(encoding="utf-8"))
    rows = [suite.Row(**row) for row in payload["results"]]
    stages = [*payload["meta"].get("stages", []), this]
    # The largest shape benchmarks.run compiles: each compilation takes minutes on a CPU.
    shape = max(s for s in shapes if s[0] * s[1] <= suite.COMPILE_MAX_SAMPLES)
    for kind in ("mlp", "quadratic"):
        solved = suite.bench_solve(kind, shape, timing, device, compile_solve=True)
        rows.extend(row for row in solved if "compile" in row.name)
        write(rows, stages)
    return 0


def _phase_list(text: str) -> frozenset[str]:
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(names - set(PHASE_CAPS_SECONDS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown phases {unknown} in {text!r}; known: {', '.join(PHASE_CAPS_SECONDS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", nargs="?", default="all", choices=("all", "sync", "bench"))
    parser.add_argument("--device", default="cuda", help="cuda or cpu (sync: cuda or meta)")
    parser.add_argument("--out", type=Path, required=True, help="the output folder")
    parser.add_argument("--wheels", type=Path, default=None, help="the wheel folder (.whl)")
    parser.add_argument("--check-wheels", action="store_true", help="only the wheels phase")
    parser.add_argument("--fast", action="store_true", help="quick sizes, meta tests only")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_SECONDS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--phases",
        type=_phase_list,
        default=None,
        help=f"comma-separated phases to run (default all): {','.join(PHASE_CAPS_SECONDS)}",
    )
    parser.add_argument("--stage", dest="bench_stage", choices=("eager", "compiled"),
                        default="eager", help="bench: which rows")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="bench: benchmarks.run --quick")
    parser.add_argument("--repeats", type=int, default=None, help="bench: timed repeats")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.stage == "sync":
        return sync_stage(device, args.out)
    if args.stage == "bench":
        return bench_stage(device, args.out, args.bench_stage, args.quick, args.repeats)
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available() and not args.check_wheels:
        parser.error("--device cuda: torch.cuda.is_available() is False")
    return check_all(args)


if __name__ == "__main__":
    raise SystemExit(main())
