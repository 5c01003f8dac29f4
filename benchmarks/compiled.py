"""The compiled path's benchmark (issue 12): ``python -m benchmarks.compiled``.

For each case (a compiled solve or MPC step, ``impl.cem.compiled`` and
``impl.control.compiled``), three fresh processes, one after the other:

1. ``cold``: an empty on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, a new
   folder). Measures the first call (trace + compile + run: the cold
   compile), then the warm per-call time of the compiled and the eager path
   (interleaved medians, ``benchmarks.run.time_interleaved``), their largest
   difference, and saves ``torch.compiler.save_cache_artifacts()`` (the
   "mega-cache", one byte string) to a file.
2. ``disk``: a new process with the same ``TORCHINDUCTOR_CACHE_DIR``: the
   first call now traces again (Dynamo keeps nothing on disk) but finds the
   compiled graphs (the FX-graph and AOTAutograd caches) on disk.
3. ``mega``: a new process with another empty cache folder, which first
   loads the saved mega-cache (``torch.compiler.load_cache_artifacts``): a
   cache carried to another machine as one file.

Each process reports its first call and its start: the seconds from the
parent's launch to the first result (Python and torch imports included).
The cache hits and misses that ``torch._dynamo.utils.counters`` records are
reported with them, so a "warm" start that recompiled shows.

Cases (``CASES``): DCEM (τ = 1) solves with ``N = 100``, ``k = 10``,
``d = 10``, ``T = 10`` at ``B = 1`` (MLP and quadratic ``f``, forward; the
quadratic also forward + backward in its centre) and ``B = 1024`` (quadratic),
and the MPC step of ``impl.control.compiled.CompiledMPC`` for the pendulum,
``H = 10``, ``PLANNER_SOLVER``, ``B = 1`` (two graphs: the first step, then
the steps with kept elites). With ``--device cuda`` the ``*-cudagraph``
cases add ``mode="reduce-overhead"`` (a CUDA graph) and report whether
``torch.compile`` skipped the CUDA graph (``cudagraph_skips``).

Results: ``<out>/compiled-<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LAUNCH_ENV = "DCEM_BENCH_LAUNCHED_AT"
"""The parent's ``time.time()`` at launch, for a child's start-to-result time."""
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results"
CHILD_TIMEOUT_SECONDS = 900.0
"""One child (a cold compile included) may take this long."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One measured configuration.

    Attributes:
        name: the case's name.
        kind: ``"solve"`` (``CompiledSolve``) or ``"mpc"`` (``CompiledMPC``).
        objective: ``"mlp"``, ``"quadratic"`` (solve) or ``"pendulum"`` (mpc).
        batch, n, k, dim, iters: ``B``, ``N``, ``k``, ``d`` (MPC: ``H``), ``T``.
        grad: forward + backward (the gradient of ``Σ μ_T`` in ``f``'s parameters).
        mode: ``torch.compile``'s mode (``None``: default).
        cuda_only: run only with ``--device cuda``.
    """

    name: str
    kind: str
    objective: str
    batch: int
    n: int = 100
    k: int = 10
    dim: int = 10
    iters: int = 10
    grad: bool = False
    mode: str | None = None
    cuda_only: bool = False


_BASE = (
    Case("solve-mlp-b1", "solve", "mlp", 1),
    Case("solve-quadratic-b1", "solve", "quadratic", 1),
    Case("solve-quadratic-b1-grad", "solve", "quadratic", 1, grad=True),
    Case("solve-quadratic-b1024", "solve", "quadratic", 1024),
    Case("mpc-pendulum-b1", "mpc", "pendulum", 1),
)
CASES: dict[str, Case] = {case.name: case for case in _BASE}
CASES.update(
    {
        f"{case.name}-cudagraph": dataclasses.replace(
            case, name=f"{case.name}-cudagraph", mode="reduce-overhead", cuda_only=True
        )
        for case in _BASE
        if case.name in ("solve-mlp-b1", "solve-quadratic-b1-grad", "mpc-pendulum-b1")
    }
)


# --------------------------------------------------------------------------
# The child: one process, one phase


def _build(
    case: Case, device: Any
) -> tuple[Callable[[], Any], Callable[[], Any], Callable[[], Any] | None]:
    """``(compiled call, eager call, f alone)`` of ``case`` on ``device``; ``f
    alone`` (forward solves only): the ``T`` evaluations of ``f`` on the
    candidates of one solve, recorded beforehand (``benchmarks.run``'s baseline)."""
    import torch

    from benchmarks import run as suite
    from impl.cem import CEMOptions, solve
    from impl.cem.compiled import CompiledSolve
    from impl.control import MPC, PLANNER_SOLVER, Pendulum, PlannerConfig
    from impl.control.compiled import CompiledMPC, observed_rollout_cost

    torch.manual_seed(0)
    if case.kind == "mpc":
        system = Pendulum()
        options = PLANNER_SOLVER.replace(n_sample=case.n, n_elite=case.k, n_iter=case.iters)
        config = PlannerConfig(
            horizon=case.dim,
            action_lb=-system.torque_max,
            action_ub=system.torque_max,
            solver=options,
        )

        cost = observed_rollout_cost(system.step, system.cost)
        state = system.sample_initial(case.batch, torch.Generator().manual_seed(0), device=device)
        compiled = CompiledMPC(
            config,
            case.batch,
            cost,
            device=device,
            seed=0,
            mode=case.mode,  # type: ignore[arg-type]
        )
        eager = MPC(config, case.batch, device=device, seed=0)
        return (
            lambda: compiled.act(state).actions,
            lambda: eager.act(lambda actions: cost(state, actions)).actions,
            None,
        )
    options = CEMOptions(n_sample=case.n, n_elite=case.k, n_iter=case.iters, tau=suite.TAU)
    f = suite.make_objective(case.objective, case.batch, device, grad=case.grad)
    parameters = [p for p in f.parameters() if p.requires_grad]
    mean = torch.zeros(case.batch, case.dim, device=device, dtype=suite.DTYPE)
    solver = CompiledSolve(f, options, mode=case.mode)  # type: ignore[arg-type]
    generators = [torch.Generator(device=device).manual_seed(0) for _ in range(2)]

    def run(call: Callable[..., Any], generator: torch.Generator) -> Any:
        if case.grad:
            result = call(mean, 1.0, generator=generator, validate=False)
            return torch.autograd.grad(result.mean.sum(), parameters)[0]
        with torch.no_grad():
            return call(mean, 1.0, generator=generator, validate=False).mean

    recorded: list[torch.Tensor] = []
    with torch.no_grad():
        solve(f, mean, 1.0, options, generator=torch.Generator(device=device).manual_seed(1),
              callback=lambda step: recorded.append(step.samples.clone()))  # fmt: skip

    def bare() -> Any:
        with torch.no_grad():
            return [f(samples) for samples in recorded]

    return (
        lambda: run(solver, generators[0]),
        lambda: run(partial_solve(solve, f, options), generators[1]),
        None if case.grad else bare,
    )


def partial_solve(solve: Callable[..., Any], f: Any, options: Any) -> Callable[..., Any]:
    """``solve`` with ``f`` and ``options`` fixed: the eager path with ``CompiledSolve``'s call."""

    def call(mean: Any, std: float, **kwargs: Any) -> Any:
        return solve(f, mean, std, options, **kwargs)

    return call


def _counters() -> dict[str, dict[str, int]]:
    from torch._dynamo.utils import counters

    keep = ("stats", "inductor", "aot_autograd")
    return {group: dict(counters[group]) for group in keep if group in counters}


def child(case: Case, device_name: str, phase: str, mega: Path, repeats: int) -> dict[str, Any]:
    """One phase of one case, in this (fresh) process."""
    started = time.time()
    import torch

    from benchmarks import run as suite

    torch.set_num_threads(1)
    imported = time.time()
    device = torch.device(device_name)
    report: dict[str, Any] = {"case": dataclasses.asdict(case), "phase": phase}
    if phase == "mega":
        load_start = time.perf_counter()
        info = torch.compiler.load_cache_artifacts(mega.read_bytes())
        report["mega_load_seconds"] = time.perf_counter() - load_start
        report["mega_loaded"] = str(info)[:500] if info is not None else None
    compiled, eager, bare = _build(case, device)
    first_start = time.perf_counter()
    out = compiled()
    suite.synchronize(device)
    report["first_call_seconds"] = time.perf_counter() - first_start
    launched = float(os.environ.get(LAUNCH_ENV, started))
    report["start_to_result_seconds"] = time.time() - launched
    report["import_seconds"] = imported - started
    report["counters_after_first"] = _counters()
    if phase == "cold":  # the eager path's first result, from the same seed
        report["max_abs_difference"] = float((out - eager()).abs().max())
    if case.kind == "mpc":  # the second step traces the graph with kept elites
        second_start = time.perf_counter()
        compiled()
        suite.synchronize(device)
        report["second_call_seconds"] = time.perf_counter() - second_start
    if phase == "cold":
        timing = suite.Timing(repeats, 0.05, "cpu" if device.type == "cpu" else "wall")
        fns = {"compiled": compiled, "eager": eager}
        if bare is not None:
            fns["f alone"] = bare
        times = suite.time_interleaved(fns, timing, device)
        report["warm_seconds"] = {name: sorted(values) for name, values in times.items()}
        report["clock"] = timing.clock
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is not None:
            mega.write_bytes(artifacts[0])
            report["mega_bytes"] = len(artifacts[0])
    report["counters"] = _counters()
    return report


# --------------------------------------------------------------------------
# The parent


PHASES = ("cold", "disk", "mega")


def run_case(
    case: Case, device: str, repeats: int, work: Path, phases: tuple[str, ...] = PHASES
) -> dict[str, Any]:
    """The processes of ``case`` (``phases`` of cold, disk, mega, in order) in ``work``."""
    disk_cache = work / f"{case.name}-cache"
    mega_cache = work / f"{case.name}-mega-cache"
    mega = work / f"{case.name}.mega"
    reports: dict[str, Any] = {}
    for phase, cache in (("cold", disk_cache), ("disk", disk_cache), ("mega", mega_cache)):
        if phase not in phases:
            continue
        if phase == "mega" and not mega.is_file():
            reports[phase] = {"error": "no mega-cache was saved"}
            continue
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache), OMP_NUM_THREADS="1")
        env[LAUNCH_ENV] = repr(time.time())
        command = [sys.executable, "-m", "benchmarks.compiled", "--child", case.name,
                   "--phase", phase, "--device", device, "--mega", str(mega),
                   "--repeats", str(repeats)]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_SECONDS)  # fmt: skip
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            reports[phase] = {"error": done.stderr[-2000:], "returncode": done.returncode}
            continue
        reports[phase] = json.loads(lines[-1])
        print(f"  {case.name} {phase}: {summary_line(reports[phase])}", flush=True)
    return {"case": dataclasses.asdict(case), "phases": reports}


def summary_line(report: dict[str, Any]) -> str:
    first = report.get("first_call_seconds")
    start = report.get("start_to_result_seconds")
    text = f"first call {first:.2f} s, start to result {start:.2f} s"
    if "warm_seconds" in report:
        warm = {name: _median(values) for name, values in report["warm_seconds"].items()}
        text += (
            f", warm compiled {warm['compiled'] * 1e3:.3g} ms, eager {warm['eager'] * 1e3:.3g} ms"
        )
    return text


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])


def table(results: list[dict[str, Any]]) -> list[str]:
    """The markdown rows of ``results``."""
    lines = [
        "| case | B, N, k, d, T | cold: first call; start to result | warm compiled "
        "| warm eager | eager / compiled | compiled / f alone | max abs diff "
        "| 2nd process (disk cache): first call; start to result "
        "| 3rd process (mega-cache): first call; start to result "
        "| cold / disk first call | graphs; FX-graph cache hits (disk) | CUDA-graph skips |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        case = result["case"]
        cold = result["phases"].get("cold", {})
        disk = result["phases"].get("disk", {})
        mega = result["phases"].get("mega", {})
        shape = f"{case['batch']}, {case['n']}, {case['k']}, {case['dim']}, {case['iters']}"
        name = case["name"] + (" (fwd+bwd)" if case["grad"] else "")
        if "error" in cold:
            lines.append(f"| {name} | {shape} | error: {cold['error'][-200:]!r} |" + " |" * 10)
            continue
        warm = {key: _median(values) for key, values in cold.get("warm_seconds", {}).items()}
        first_cold = _first(cold)
        first_disk = _first(disk)
        ratio = "—"
        if first_cold is not None and first_disk:
            ratio = f"{first_cold / first_disk:.3g}"
        speedup = f"{warm['eager'] / warm['compiled']:.3g}" if warm else "—"
        over_f = f"{warm['compiled'] / warm['f alone']:.3g}" if "f alone" in warm else "—"
        diff = cold.get("max_abs_difference")
        hits = disk.get("counters_after_first", {}).get("inductor", {}).get("fxgraph_cache_hit")
        graphs = disk.get("counters_after_first", {}).get("stats", {}).get("unique_graphs")
        skips = cold.get("counters", {}).get("inductor", {}).get("cudagraph_skips", 0)
        lines.append(
            f"| {name} | {shape} | {_seconds(first_cold)}; "
            f"{_seconds(cold.get('start_to_result_seconds'))} | {_seconds(warm.get('compiled'))} | "
            f"{_seconds(warm.get('eager'))} | {speedup} | {over_f} | "
            f"{'—' if diff is None else f'{diff:.1e}'} | "
            f"{_seconds(first_disk)}; {_seconds(disk.get('start_to_result_seconds'))} | "
            f"{_seconds(_first(mega))}; {_seconds(mega.get('start_to_result_seconds'))} | "
            f"{ratio} | {graphs}; {hits} | {skips if case['mode'] else '—'} |"
        )
    return lines


def _first(report: dict[str, Any]) -> float | None:
    """The first result's seconds: the first call, plus the second for MPC (two graphs)."""
    if "first_call_seconds" not in report:
        return None
    first = float(report["first_call_seconds"])
    return first + float(report.get("second_call_seconds", 0.0))


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"


def write(
    out: Path,
    device: str,
    results: list[dict[str, Any]],
    meta: dict[str, Any],
    with_markdown: bool,
) -> None:
    """``compiled-<device>.json`` (and its ``.md``) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"compiled-{device.split(':')[0]}.json"
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    if with_markdown:
        write_markdown(path.with_suffix(".md"), device, results, meta)


def write_markdown(
    path: Path, device: str, results: list[dict[str, Any]], meta: dict[str, Any]
) -> None:
    """The table of ``results`` as markdown, in ``path``."""
    lines = [
        f"# The compiled path on {device}",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}; torch {meta['torch']}, Python {meta['python']}",
        f"- device: {device}; {meta['cpu_count']} CPUs, 1 torch thread, "
        f"load average before/after {meta['load_before']} / {meta['load_after']}",
        "- first call: trace + compile + run (MPC: the first two steps, two graphs); "
        "start to result: from the parent's launch of the process to the first result "
        "(imports included; MPC: the first step)",
        f"- warm: medians of {meta['repeats']} interleaved samples (clock: process CPU time "
        "on the CPU, wall on CUDA), no validation, no grad unless fwd+bwd; f alone: the T "
        "evaluations of f on one solve's candidates",
        "- max abs diff: the first results of the compiled and the eager path from the same "
        "seed (solve: the final mean, or the gradient; MPC: the first plan's actions)",
        "",
        *table(results),
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", default=None, help="comma-separated case names (default all)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=None, help="cache folders (default: a temp)")
    parser.add_argument("--merge", action="store_true", help="add to the existing results file")
    parser.add_argument("--phases", default=",".join(PHASES), help="processes per case")
    parser.add_argument("--json-only", action="store_true", help="write no .md (GPU check)")
    parser.add_argument("--render", type=Path, default=None, help="write the .md of a .json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--phase", default="cold", help=argparse.SUPPRESS)
    parser.add_argument("--mega", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        report = child(CASES[args.child], args.device, args.phase, args.mega, args.repeats)
        print(json.dumps(report))
        return 0
    if args.render is not None:
        payload = json.loads(args.render.read_text())
        write_markdown(
            args.render.with_suffix(".md"), args.device, payload["results"], payload["meta"]
        )
        return 0
    phases = tuple(phase for phase in PHASES if phase in args.phases.split(","))
    cuda = args.device.startswith("cuda")
    names = args.cases.split(",") if args.cases else [
        name for name, case in CASES.items() if cuda or not case.cuda_only
    ]  # fmt: skip
    unknown = [name for name in names if name not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    load_before = list(os.getloadavg())
    path = args.out / f"compiled-{args.device.split(':')[0]}.json"
    results: list[dict[str, Any]] = []
    if args.merge and path.is_file():
        results = [
            r for r in json.loads(path.read_text())["results"] if r["case"]["name"] not in names
        ]
    with tempfile.TemporaryDirectory(prefix="dcem-compiled-") as temporary:
        work = args.work or Path(temporary)
        for name in names:
            print(f"{name}:", flush=True)
            results.append(run_case(CASES[name], args.device, args.repeats, work, phases))
            import torch

            meta = {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "command": "python -m benchmarks.compiled " + " ".join(sys.argv[1:]),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "repeats": args.repeats,
                "load_before": load_before,
                "load_after": list(os.getloadavg()),
            }
            order = list(CASES)
            results.sort(key=lambda r: order.index(r["case"]["name"]))
            write(args.out, args.device, results, meta, with_markdown=not args.json_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
