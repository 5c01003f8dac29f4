"""The contract every validation script keeps, and the driver that keeps it (VAL-1 to VAL-8).

A reproduction is an ``Experiment`` (its options, config, jobs, ``run_job(job,
ctx)``, figures and claims); ``main(experiment, argv)`` owns the rest: the
shared options (VAL-1, VAL-7), and the files it writes into ``--out DIR``:

- ``config.json``: the resolved settings (checked on ``--resume``);
- ``checkpoints/<job>.pt``: resumable state of unfinished jobs, written
  atomically by whichever process runs the job;
- ``jobs/<job>.json``: each finished job's result (never recomputed), written
  by the driver with the files the job returned;
- ``timing.json``: wall time over all sessions, kept by the driver alone (VAL-3);
- ``sessions.json``: the commit and source hashes each session started with (VAL-5);
- ``progress.log``: time-stamped lines (also on stderr when it is not a terminal);
- metrics CSVs, PNG figures;
- ``summary.json``: name, mode, ``wall_seconds``, the claims (``Claim.as_dict``),
  the experiment's details and the run's provenance; written once, by ``finish``.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from tqdm import tqdm

from validation import provenance

MODES = ("smoke", "short", "full")
"""smoke: CI, minutes, real assertions; short: CPU, minutes to an hour, shows
the paper's qualitative claims; full: the paper's scale."""

STATE_DIRS = ("checkpoints", "jobs")
"""Sub-directories that hold the progress of a run."""

SESSIONS = "sessions.json"
"""The code each session of a run started with, to tell a run computed on one
version from one resumed (or edited under) on another (VAL-5)."""

STOPPED = 3
"""Exit status of a run that ``--stop-after`` ended early (continue with ``--resume``)."""


@dataclass(frozen=True)
class Claim:
    """One number of the paper checked against one measurement."""

    id: str
    description: str
    paper: str
    measured: float
    target: str
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["pass"] = record.pop("passed")
        return record


def at_most(id: str, description: str, paper: str, measured: float, bound: float) -> Claim:
    """A claim that ``measured ≤ bound`` (NaN fails)."""
    return Claim(id, description, paper, measured, f"<= {bound:g}", bool(measured <= bound))


def at_least(id: str, description: str, paper: str, measured: float, bound: float) -> Claim:
    """A claim that ``measured ≥ bound`` (NaN fails)."""
    return Claim(id, description, paper, measured, f">= {bound:g}", bool(measured >= bound))


@dataclass(frozen=True)
class Report:
    """What an experiment concludes from its results: the claims, and further
    numbers for ``summary.json`` (``details``, JSON-able)."""

    claims: list[Claim]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobOutput:
    """A finished job: its JSON-able ``result`` and ``files`` (path relative to
    the run directory → bytes) that the driver writes beside it."""

    result: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)


def load_state(path: Path) -> dict[str, Any]:
    """A ``torch.save``d dict of tensors (a checkpoint), onto the CPU (``weights_only``)."""
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def tensor_bytes(state: Mapping[str, Any]) -> bytes:
    """``torch.save(state)`` into bytes (a file of a ``JobOutput``)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class JobContext:
    """What a job sees of its run, in whatever process or machine runs it: its
    checkpoints under ``root`` (shared storage, or the worker's own disk, where a
    retry on the same machine still finds them). No clock, no summary.

    ``stop_after`` ends the job after that much work, as a kill would (VAL-2; the
    experiment names the unit); ``threads`` is its torch thread count (VAL-7);
    ``position`` places its progress bar; ``on_checkpoint`` is called after each
    checkpoint (the in-process executor records the run's time there).
    """

    root: Path
    stop_after: int | None = None
    position: int = 0
    on_checkpoint: Callable[[], None] | None = None
    threads: int = 1

    def checkpoint_path(self, job: str) -> Path:
        return self.root / "checkpoints" / f"{job}.pt"

    def load_checkpoint(self, job: str) -> dict[str, Any] | None:
        path = self.checkpoint_path(job)
        return load_state(path) if path.exists() else None

    def log(self, line: str) -> None:
        """Append ``line`` to ``progress.log``; echo it when stderr is not a terminal."""
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with open(self.root / "progress.log", "a", encoding="utf-8") as log:
            log.write(f"{stamp} {line}\n")
        if not sys.stderr.isatty():
            print(f"{stamp} {line}", file=sys.stderr, flush=True)

    def save_checkpoint(self, job: str, state: Mapping[str, Any]) -> None:
        """Atomically replace the checkpoint of ``job``."""
        path = self.checkpoint_path(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, tensor_bytes(state))
        if self.on_checkpoint is not None:
            self.on_checkpoint()


class RunDirectory:
    """The files of one run, held by the process that owns the run (the
    driver): it alone keeps the clock and writes results and the summary.
    Workers get a ``JobContext``; a ``RunDirectory`` refuses to be pickled."""

    def __init__(
        self,
        root: Path,
        name: str,
        mode: str,
        config: Mapping[str, Any],
        *,
        resume: bool = False,
        fresh: bool = False,
    ) -> None:
        self.root, self.name, self.mode = root, name, mode
        self._session_start = time.perf_counter()
        has_state = any((root / sub).exists() and any((root / sub).iterdir()) for sub in STATE_DIRS)
        config_path = root / "config.json"
        record = {"name": name, "mode": mode, "config": dict(config)}
        if has_state and not (resume or fresh):
            raise SystemExit(
                f"{root} holds a previous run; pass --resume to continue it "
                "or --fresh to discard it (or choose another --out)"
            )
        if resume and config_path.exists():
            previous = json.loads(config_path.read_text(encoding="utf-8"))
            added = added_keys(previous, json.loads(json.dumps(record)))
            if added is None:
                raise SystemExit(
                    f"--resume: {config_path} was written with other settings; "
                    "run with the same options, or use --fresh"
                )
            if added:
                print(f"--resume: settings added since the run started: {added}", file=sys.stderr)
        if fresh or not (has_state or resume):
            for sub in STATE_DIRS:
                shutil.rmtree(root / sub, ignore_errors=True)
            for stale in ("timing.json", SESSIONS):
                (root / stale).unlink(missing_ok=True)
        for sub in STATE_DIRS:
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._write_json(config_path, record)
        self._write_json(root / SESSIONS, [*self._sessions(), provenance.snapshot()])

    @classmethod
    def attach(cls, root: Path) -> RunDirectory:
        """Open the existing run in ``root`` to write reports from outside the
        process that owns it (e.g. ``validation.dmc.report`` on a run in
        progress): no checks, no config write, and its clock is never saved."""
        record = json.loads((root / "config.json").read_text(encoding="utf-8"))
        run = cls.__new__(cls)
        run.root, run.name, run.mode = root, str(record["name"]), str(record["mode"])
        run._session_start = time.perf_counter()
        return run

    def __getstate__(self) -> object:
        raise TypeError(
            "a RunDirectory belongs to the process that owns the run (it keeps the clock); "
            "give workers a JobContext"
        )

    def context(self, stop_after: int | None = None, threads: int = 1) -> JobContext:
        """The view of this run that jobs get (``JobContext``)."""
        return JobContext(self.root, stop_after, threads=threads)

    # -- jobs ---------------------------------------------------------------

    def result_path(self, job: str) -> Path:
        return self.root / "jobs" / f"{job}.json"

    def load_result(self, job: str) -> dict[str, Any] | None:
        path = self.result_path(job)
        if not path.exists():
            return None
        result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return result

    def accept(self, job: str, output: JobOutput | None) -> None:
        """Write what a job returned (``None``: stopped early): its files, then its
        result (the job is finished: its checkpoint goes); record the time."""
        if output is not None:
            for relative, data in output.files.items():
                path = self.root / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_atomic(path, data)
            self._write_json(self.result_path(job), output.result)
            self.context().checkpoint_path(job).unlink(missing_ok=True)
        self.record_time()

    # -- outputs ------------------------------------------------------------

    def write_csv(self, name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
        """Write ``rows`` (dicts with the same keys) to ``name.csv``."""
        path = self.root / f"{name}.csv"
        keys: list[str] = []
        for row in rows:
            keys += [key for key in row if key not in keys]
        lines = [",".join(keys)]
        lines += [",".join(_csv_cell(row.get(key, "")) for key in keys) for row in rows]
        _write_atomic(path, ("\n".join(lines) + "\n").encode())
        return path

    def save_figure(self, fig: Any, name: str, **options: Any) -> None:
        """Save matplotlib figure ``fig`` as ``name.png`` (``savefig`` options,
        120 dpi unless given) and close it."""
        fig.savefig(self.root / f"{name}.png", **{"dpi": 120, **options})
        pyplot().close(fig)

    def wall_seconds(self) -> float:
        """Wall time of this run over all its sessions (``--resume`` adds up): the
        total in ``timing.json`` as of the last ``record_time`` (a checkpoint, a
        finished job, or an executor's periodic record; time a kill then lost is
        not counted), plus the time since."""
        return self._recorded_seconds() + time.perf_counter() - self._session_start

    def record_time(self) -> None:
        """Fold the wall time since the last record into ``timing.json``."""
        now = time.perf_counter()
        total = self._recorded_seconds() + now - self._session_start
        self._write_json(self.root / "timing.json", {"wall_seconds": total})
        self._session_start = now

    def _recorded_seconds(self) -> float:
        timing = self.root / "timing.json"
        if not timing.exists():
            return 0.0
        return float(json.loads(timing.read_text(encoding="utf-8"))["wall_seconds"])

    def _sessions(self) -> list[dict[str, Any]]:
        """The code each session of this run started with (``provenance.snapshot``)."""
        path = self.root / SESSIONS
        if not path.exists():
            return []
        sessions: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        return sessions

    def finish(
        self,
        claims: Iterable[Claim],
        details: Mapping[str, Any] | None = None,
        sources: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Write ``summary.json`` (once) and print the claims table.

        ``sources``: the repository files the numbers depend on (default:
        those of the modules loaded now, see ``validation.provenance``).
        """
        claims = list(claims)
        self.record_time()
        wall = self.wall_seconds()
        summary = {
            "name": self.name,
            "mode": self.mode,
            "wall_seconds": round(wall, 1),
            "claims": [claim.as_dict() for claim in claims],
            **(details or {}),
            "provenance": provenance.record(sources, self._sessions()),
        }
        self._write_json(self.root / "summary.json", summary)
        print(format_claims(self.name, self.mode, wall, claims))
        return summary

    def _write_json(self, path: Path, data: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=2, default=_json_default) + "\n"
        _write_atomic(path, text.encode())


def added_keys(old: Any, new: Any, prefix: str = "") -> list[str] | None:
    """The keys of JSON value ``new`` missing from ``old`` (dotted paths), if
    ``new`` agrees with ``old`` everywhere else; None where a value differs or
    a key was removed. A run resumes with settings added to the code since it
    started (at their values now), and with nothing else changed."""
    if isinstance(old, dict) and isinstance(new, dict):
        if not set(old) <= set(new):
            return None
        pairs = [(old[key], new[key], f"{prefix}{key}.") for key in old]
        added = [f"{prefix}{key}" for key in new if key not in old]
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        pairs = [(a, b, f"{prefix}{i}.") for i, (a, b) in enumerate(zip(old, new, strict=True))]
        added = []
    else:
        return [] if old == new else None
    for a, b, inner_prefix in pairs:
        inner = added_keys(a, b, inner_prefix)
        if inner is None:
            return None
        added += inner
    return added


def format_claims(name: str, mode: str, wall: float, claims: Sequence[Claim]) -> str:
    """The claims as a fixed-width table."""
    rows = [("id", "paper", "measured", "target", "pass")]
    rows += [
        (c.id, c.paper, _number(c.measured), c.target, "yes" if c.passed else "NO") for c in claims
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [f"{name} ({mode}), {wall:.0f} s"]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return "\n".join(lines)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def progress(total: int, description: str, *, initial: int = 0, position: int = 0) -> tqdm[Any]:
    """A progress bar on stderr; silent when stderr is not a terminal."""
    return tqdm(
        total=total,
        initial=initial,
        desc=description,
        position=position,
        file=sys.stderr,
        disable=None,
        dynamic_ncols=True,
        leave=False,
    )


def timed(
    work: Callable[[], object], repeats: int, *, warmup: int = 3, device: torch.device | None = None
) -> float:
    """Mean wall seconds of ``work()`` over ``repeats`` calls, after ``warmup``
    calls; on a CUDA ``device`` the clock is read after the device finished."""

    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        work()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    sync()
    return (time.perf_counter() - start) / repeats


# -- the experiment contract ----------------------------------------------------------


class NamedJob(Protocol):
    """A job: picklable, with a name unique within its run."""

    @property
    def name(self) -> str: ...


ConfigT = TypeVar("ConfigT")
JobT = TypeVar("JobT", bound=NamedJob)


class Experiment(Protocol[ConfigT, JobT]):
    """A reproduction script (VAL-1). Instances must be picklable (module-level
    classes): executors send them, with a job, to the worker that runs it.

    Attributes:
        name: module name under ``validation`` (and of the default ``--out``).
        description: one line for ``--help``.
        strict_smoke: in smoke mode, exit 1 when a claim fails (CI's guard).
    """

    name: str
    description: str
    strict_smoke: bool

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        """Options of its own (beyond ``base_parser``'s)."""

    def configure(self, args: argparse.Namespace) -> ConfigT:
        """The run's config from the options; ``ValueError`` for bad ones.
        A dataclass or a mapping, recorded in ``config.json``."""

    def jobs(self, config: ConfigT, mode: str) -> Sequence[JobT]:
        """The independent jobs of a run of ``mode``."""

    def run_job(self, job: JobT, ctx: JobContext) -> JobOutput | None:
        """Run (or resume from its checkpoint) one job; ``None`` if ``ctx.stop_after`` ended it."""

    def figures(
        self, config: ConfigT, results: Sequence[dict[str, Any]], run: RunDirectory
    ) -> None:
        """Tables and figures from the jobs' results (in ``jobs`` order)."""

    def claims(
        self, config: ConfigT, results: Sequence[dict[str, Any]], run: RunDirectory
    ) -> Report:
        """The claims (and further numbers for ``summary.json``)."""


@runtime_checkable
class PreparesRun(Protocol):
    """An ``Experiment`` with work to do on ``--out`` before the driver opens it
    (e.g. import an exported state, upgrade an older layout)."""

    def prepare_run(self, args: argparse.Namespace, out: Path) -> bool:
        """Prepare ``out``; whether to continue the run there (as ``--resume``).
        ``ValueError`` for options that do not fit."""


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_seeds(text: str) -> list[int]:
    """``"3"`` → seeds 0, 1, 2; ``"4,7"`` → seeds 4 and 7."""
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds takes a count or a comma list, got {text!r}"
        ) from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"--seeds needs at least one seed, got {count}")
    return list(range(count))


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The options every script shares (``main`` adds the executors' for an ``Experiment``)."""
    parser = argparse.ArgumentParser(prog=f"python -m validation.{name}", description=description)
    parser.add_argument("--mode", choices=MODES, default="smoke")
    parser.add_argument("--out", type=Path, help="run directory (runs/NAME/MODE)")
    parser.add_argument("--seeds", type=parse_seeds, help="a count or a comma list (mode default)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--jobs", type=positive_int, default=1, help="local worker processes (1: in this process)"
    )
    state = parser.add_mutually_exclusive_group()
    state.add_argument("--resume", action="store_true", help="continue the run in --out")
    state.add_argument("--fresh", action="store_true", help="discard the run in --out")
    return parser


def main(experiment: Experiment[Any, Any], argv: Sequence[str] | None = None) -> int:
    """Run ``experiment`` from the command line; the exit status (0, 1 for a
    failed smoke claim, ``STOPPED``)."""
    from validation.executors import executor_for

    parser = base_parser(experiment.name, experiment.description)
    parser.add_argument(
        "--executor", choices=("local", "ray"), default="local", help="where jobs run"
    )
    parser.add_argument("--ray-address", help="an existing Ray cluster (default: start one here)")
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="torch CPU threads per job (default 1)"
    )
    parser.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)
    experiment.add_options(parser)
    args = parser.parse_args(argv)
    if args.stop_after is not None and args.stop_after < 0:
        parser.error(f"--stop-after must be at least 0, got {args.stop_after}")
    try:
        torch.empty(0, device=torch.device(args.device))
    except (RuntimeError, AssertionError) as error:
        parser.error(f"--device {args.device!r} is not usable: {error}")
    out: Path = (args.out or Path("runs") / experiment.name / args.mode).resolve()
    resume = args.resume
    try:
        config = experiment.configure(args)
        if isinstance(experiment, PreparesRun):
            resume = experiment.prepare_run(args, out) or resume
    except ValueError as error:
        parser.error(str(error))
    record = asdict(config) if is_dataclass(config) and not isinstance(config, type) else config
    run = RunDirectory(out, experiment.name, args.mode, record, resume=resume, fresh=args.fresh)
    jobs = list(experiment.jobs(config, args.mode))
    pending = [job for job in jobs if run.load_result(job.name) is None]
    if pending:  # a finished run resumed has none: no pool or cluster to start
        executor_for(args)(experiment, pending, run, run.context(args.stop_after, args.threads))
    finished = [result for job in jobs if (result := run.load_result(job.name)) is not None]
    if len(finished) < len(jobs):
        print(f"stopped early (--stop-after); continue with --resume --out {out}", file=sys.stderr)
        return STOPPED
    experiment.figures(config, finished, run)
    report = experiment.claims(config, finished, run)
    summary = run.finish(report.claims, report.details)
    failed = [claim["id"] for claim in summary["claims"] if not claim["pass"]]
    if failed and args.mode == "smoke" and experiment.strict_smoke:
        print(f"smoke checks failed: {failed}", file=sys.stderr)
        return 1
    return 0


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _number(value: float) -> str:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.4g}"


def _csv_cell(value: object) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return f'"{text}"' if "," in text else text


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
