"""The contract every validation script keeps.

``python -m validation.<name> --mode {smoke,short,full} --out DIR`` (plus
``--seeds``, ``--device``, ``--jobs``, ``--resume``/``--fresh`` and options of
its own) writes into ``DIR``:

- ``config.json``: the resolved settings (checked on ``--resume``);
- ``checkpoints/<job>.pt``: resumable state of unfinished jobs, written
  atomically (a killed run loses at most the steps since the last save);
- ``jobs/<job>.json``: the result of every finished job (never recomputed);
- ``timing.json``: wall time over all sessions, up to the last checkpoint;
- ``progress.log``: one time-stamped line per logged step (episodes,
  evaluations), also echoed to stderr when it is not a terminal, where the
  progress bars stay silent (``nohup``, batch jobs);
- metrics CSVs, PNG figures;
- ``summary.json``: ``{"name", "mode", "wall_seconds", "claims": [...]}``,
  each claim ``{"id", "description", "paper", "measured", "target", "pass"}``
  tying a measured number to a figure of the paper; the table is printed.

A script splits its work into independent *jobs* (e.g. one training run per
method and seed) that ``run_jobs`` can spread over processes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm import tqdm

MODES = ("smoke", "short", "full")
"""smoke: CI, minutes, real assertions; short: CPU, minutes to an hour, shows
the paper's qualitative claims; full: the paper's scale."""

STATE_DIRS = ("checkpoints", "jobs")
"""Sub-directories that hold the progress of a run."""


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
    """The options every script shares."""
    parser = argparse.ArgumentParser(prog=f"python -m validation.{name}", description=description)
    parser.add_argument("--mode", choices=MODES, default="smoke")
    parser.add_argument("--out", type=Path, default=None, help="run directory (runs/NAME/MODE)")
    parser.add_argument(
        "--seeds", type=parse_seeds, default=None, help="a count or a comma list (mode default)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--jobs", type=int, default=1, help="processes for independent jobs")
    state = parser.add_mutually_exclusive_group()
    state.add_argument("--resume", action="store_true", help="continue the run in --out")
    state.add_argument("--fresh", action="store_true", help="discard the run in --out")
    return parser


class RunDirectory:
    """The files of one run (see the module docstring)."""

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
        self.root = root
        self.name = name
        self.mode = mode
        self._session_start = time.perf_counter()
        self._owner = True
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
            if previous != json.loads(json.dumps(record)):
                raise SystemExit(
                    f"--resume: {config_path} was written with other settings; "
                    "run with the same options, or use --fresh"
                )
        if fresh:
            for sub in STATE_DIRS:
                shutil.rmtree(root / sub, ignore_errors=True)
            (root / "timing.json").unlink(missing_ok=True)
        for sub in STATE_DIRS:
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._write_json(config_path, record)

    @classmethod
    def attach(cls, root: Path) -> RunDirectory:
        """Open the run in ``root`` from a worker process (no checks, no writes)."""
        record = json.loads((root / "config.json").read_text(encoding="utf-8"))
        run = cls.__new__(cls)
        run.root, run.name, run.mode = root, str(record["name"]), str(record["mode"])
        run._session_start = time.perf_counter()
        run._owner = False
        return run

    # -- jobs ---------------------------------------------------------------

    def checkpoint_path(self, job: str) -> Path:
        return self.root / "checkpoints" / f"{job}.pt"

    def save_checkpoint(self, job: str, state: Mapping[str, Any]) -> None:
        """Atomically replace the checkpoint of ``job``."""
        path = self.checkpoint_path(job)
        tmp = path.with_suffix(".tmp")
        torch.save(dict(state), tmp)
        os.replace(tmp, path)
        if self._owner:  # workers of run_jobs leave the clock to the main process
            self.record_time()

    def load_checkpoint(self, job: str) -> dict[str, Any] | None:
        path = self.checkpoint_path(job)
        if not path.exists():
            return None
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        return state

    def result_path(self, job: str) -> Path:
        return self.root / "jobs" / f"{job}.json"

    def load_result(self, job: str) -> dict[str, Any] | None:
        path = self.result_path(job)
        if not path.exists():
            return None
        result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return result

    def save_result(self, job: str, result: Mapping[str, Any]) -> None:
        """Record a finished job and drop its checkpoint."""
        self._write_json(self.result_path(job), result)
        self.checkpoint_path(job).unlink(missing_ok=True)

    # -- outputs ------------------------------------------------------------

    def write_csv(self, name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
        """Write ``rows`` (dicts with the same keys) to ``name.csv``."""
        path = self.root / f"{name}.csv"
        keys: list[str] = []
        for row in rows:
            keys += [key for key in row if key not in keys]
        lines = [",".join(keys)]
        lines += [",".join(_csv_cell(row.get(key, "")) for key in keys) for row in rows]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    def figure_path(self, name: str) -> Path:
        return self.root / f"{name}.png"

    def wall_seconds(self) -> float:
        """Wall time of this run over all its sessions (``--resume`` adds up).

        ``timing.json`` holds the total up to this session's last checkpoint
        (or the end of the previous session's last one): time spent on work a
        kill then lost is not counted, so a resumed run reports the time its
        results cost.
        """
        return self._recorded_seconds() + time.perf_counter() - self._session_start

    def record_time(self) -> None:
        """Fold the wall time since the last record into ``timing.json``."""
        now = time.perf_counter()
        total = self._recorded_seconds() + now - self._session_start
        self._write_json(self.root / "timing.json", {"wall_seconds": total})
        self._session_start = now

    def log(self, line: str) -> None:
        """Append ``line`` to ``progress.log``; echo it when stderr is not a terminal."""
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with open(self.root / "progress.log", "a", encoding="utf-8") as log:
            log.write(f"{stamp} {line}\n")
        if not sys.stderr.isatty():
            print(f"{stamp} {line}", file=sys.stderr, flush=True)

    def _recorded_seconds(self) -> float:
        timing = self.root / "timing.json"
        if not timing.exists():
            return 0.0
        return float(json.loads(timing.read_text(encoding="utf-8"))["wall_seconds"])

    def finish(self, claims: Iterable[Claim]) -> dict[str, Any]:
        """Write ``summary.json`` and print the claims table."""
        claims = list(claims)
        self.record_time()
        wall = self.wall_seconds()
        summary = {
            "name": self.name,
            "mode": self.mode,
            "wall_seconds": round(wall, 1),
            "claims": [claim.as_dict() for claim in claims],
        }
        self._write_json(self.root / "summary.json", summary)
        print(format_claims(self.name, self.mode, wall, claims))
        return summary

    def _write_json(self, path: Path, data: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
        os.replace(tmp, path)


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


Job = TypeVar("Job")
Result = TypeVar("Result")


def run_jobs(work: Callable[[Job], Result], jobs: Sequence[Job], processes: int) -> list[Result]:
    """``[work(job) for job in jobs]``, over ``processes`` worker processes.

    Workers are spawned (safe with torch) and each gets an even share of the
    machine's threads. ``work`` must be a module-level function.
    """
    if processes <= 1 or len(jobs) <= 1:
        return [work(job) for job in jobs]
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // processes)
    with ProcessPoolExecutor(
        max_workers=min(processes, len(jobs)),
        mp_context=context,
        initializer=torch.set_num_threads,
        initargs=(threads,),
    ) as pool:
        return list(pool.map(work, jobs))


def default_out(name: str, mode: str) -> Path:
    return Path("runs") / name / mode


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
