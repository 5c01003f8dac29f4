"""A run's state in the repository: export it compactly, resume from it on a fresh clone.

A run directory (``validation.harness.RunDirectory``) holds ``config.json``,
``timing.json``, ``progress.log``, ``jobs/<job>.json`` (finished jobs) and
``checkpoints/``: ``<job>.pt`` of a job in progress (``validation.dmc.run``)
and ``<job>.phase<p>_final.pt`` of its finished phases. ``export_run`` copies
into a state folder exactly what resuming needs, and no more:

- the JSON files and ``progress.log`` (text);
- each job's checkpoint ``<job>.pt``, byte for byte (fp32 models,
  optimizers, the replay buffer, every generator and environment state:
  the resumed run continues exactly as the uninterrupted one would);
- a job's last final state byte for byte while its next phase has not
  started (it is that phase's start);
- every other final state in compact form, ``<job>.phase<p>_final.compact.pt``
  (a compact state already in the run, e.g. one it was resumed with, is
  copied as it is unless the run holds that phase's full final state):
  fp16 weights of the model and the decoder (with the model's fp32 buffers),
  the replay buffer with fp16 observations and actions (fp32 rewards), the
  counters and metrics; no optimizer or generator states. This is the phase
  boundary for users ("pretrained phase-1 models"): ``--phase 2
  --from-checkpoint .../cheetah.run-seed0.phase1_final.compact.pt`` runs
  latent DCEM on it; it is not an exact resume point.

``import_state`` copies a state folder into an empty run directory, after
which ``--resume`` continues it (``python -m validation.dmc --resume-from``
does both). ``upgrade_legacy`` converts a run directory (or state) written
before dmc ran on the experiment contract: one run per directory with
``checkpoints/phase<p>.pt``, ``phase<p>_final.pt`` and ``jobs/phase<p>.json``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from validation.harness import JobContext, load_state

COMPACT_SUFFIX = ".compact.pt"
TEXT_FILES = ("config.json", "timing.json", "progress.log")
PHASES = (1, 2, 3)
FINAL = re.compile(r"(?P<job>.+)\.phase(?P<phase>\d)_final\.pt")
LEGACY_NAME = re.compile(r"dmc [\w.]+")
"""The ``name`` in ``config.json`` of a run written before the contract (``dmc <task>``)."""

EXPORT_ATTEMPTS = 5
"""A run that is still going may write a checkpoint while it is exported: the
export is repeated (at most this many times) until no checkpoint changed meanwhile."""


def _stamps(run: Path) -> dict[str, int]:
    return {
        path.name: path.stat().st_mtime_ns
        for sub in ("checkpoints", "jobs")
        if (run / sub).exists()
        for path in (run / sub).iterdir()
    }


def export_run(run: Path, to: Path) -> list[Path]:
    """Write the state of run directory ``run`` into ``to`` (replacing what was
    there, so a committed state folder is overwritten in place); returns the
    files written. Safe on a run in progress: the files are a consistent set
    (no checkpoint or result changed while they were copied)."""
    if not (run / "config.json").exists():
        raise ValueError(f"{run} is not a run directory (no config.json)")
    for _ in range(EXPORT_ATTEMPTS):
        before = _stamps(run)
        written = _export_once(run, to)
        if _stamps(run) == before:
            return written
    raise RuntimeError(f"{run} kept changing during {EXPORT_ATTEMPTS} exports; try again")


def _export_once(run: Path, to: Path) -> list[Path]:
    if to.exists():
        shutil.rmtree(to)
    (to / "jobs").mkdir(parents=True)
    (to / "checkpoints").mkdir()
    written = [Path(shutil.copy2(run / n, to / n)) for n in TEXT_FILES if (run / n).exists()]
    written += [Path(shutil.copy2(p, to / "jobs")) for p in sorted((run / "jobs").glob("*.json"))]
    finals: dict[str, dict[int, Path]] = {}
    for path in sorted((run / "checkpoints").glob("*.pt")):
        if match := FINAL.fullmatch(path.name):
            finals.setdefault(match["job"], {})[int(match["phase"])] = path
        elif not path.name.endswith(COMPACT_SUFFIX) or not _has_full(path):
            written.append(Path(shutil.copy2(path, to / "checkpoints")))
    for job, by_phase in finals.items():
        current = run / "checkpoints" / f"{job}.pt"
        between = not current.exists() or load_state(current)["session"] is None
        last = max(by_phase)
        for phase, path in by_phase.items():
            if phase == last and last < PHASES[-1] and between:
                written.append(Path(shutil.copy2(path, to / "checkpoints")))
            else:
                compact_path = to / "checkpoints" / path.name.replace(".pt", COMPACT_SUFFIX)
                torch.save(compact(load_state(path)), compact_path)
                written.append(compact_path)
    return written


def _has_full(compact_path: Path) -> bool:
    """Whether the full final state of compact ``compact_path`` is beside it."""
    return compact_path.with_name(compact_path.name.replace(COMPACT_SUFFIX, ".pt")).exists()


def import_state(state: Path, run: Path) -> None:
    """Copy state folder ``state`` (``export_run``'s output) into run directory
    ``run``, which must not hold a run yet. The compact phase boundaries come
    along: they are not resume points, but the run's next export carries them."""
    if not (state / "config.json").exists():
        raise ValueError(f"{state} is not an exported run state (no config.json)")
    for sub in ("jobs", "checkpoints"):
        if (run / sub).exists() and any((run / sub).iterdir()):
            raise ValueError(f"{run} already holds a run; continue it with --resume instead")
    for sub in ("jobs", "checkpoints"):
        (run / sub).mkdir(parents=True, exist_ok=True)
        for path in sorted((state / sub).glob("*")):
            shutil.copy2(path, run / sub / path.name)
    for name in TEXT_FILES:
        if (state / name).exists():
            shutil.copy2(state / name, run / name)


def upgrade_legacy(run: Path, record: dict[str, Any]) -> bool:
    """Convert run directory ``run`` from the layout before the contract into
    that of ``validation.dmc.run``, in place; False if it is not in that layout.

    The state is moved, not changed: the checkpoint of the phase in progress
    becomes the ``session`` of the job's checkpoint as it was saved, the
    finished phases' results its ``results``, ``phase<p>_final.pt`` is renamed
    (a finished third phase makes a finished job), and ``config.json`` gets
    ``record`` (the run as configured now) with the old settings as its one run.
    """
    config_path = run / "config.json"
    old = json.loads(config_path.read_text(encoding="utf-8"))
    if not LEGACY_NAME.fullmatch(str(old.get("name"))):
        return False
    settings = old["config"]
    job = f"{settings['task']}-seed{settings['seed']}"
    checkpoints, jobs = run / "checkpoints", run / "jobs"
    paths = [jobs / f"phase{phase}.json" for phase in PHASES]
    results = [json.loads(path.read_text(encoding="utf-8")) for path in paths if path.exists()]
    done = {result["phase"] for result in results}
    pending = [p for p in PHASES if p not in done and (checkpoints / f"phase{p}.pt").exists()]
    if done == set(PHASES):
        result = {"task": settings["task"], "seed": settings["seed"], "phases": results}
        (jobs / f"{job}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    else:
        session = load_state(checkpoints / f"phase{pending[0]}.pt") if pending else None
        JobContext(run).save_checkpoint(job, {"results": results, "session": session})
    for phase in PHASES:
        for suffix in (".pt", COMPACT_SUFFIX):
            final = checkpoints / f"phase{phase}_final{suffix}"
            if final.exists():
                final.rename(checkpoints / f"{job}.phase{phase}_final{suffix}")
    new = json.loads(json.dumps(record))
    new["mode"], new["config"]["runs"] = old["mode"], [settings]
    config_path.write_text(json.dumps(new, indent=2) + "\n", encoding="utf-8")
    for phase in PHASES:
        (checkpoints / f"phase{phase}.pt").unlink(missing_ok=True)
        (jobs / f"phase{phase}.json").unlink(missing_ok=True)
    return True


def _half(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Floating tensors of a weight dict in fp16 (the observation standardization
    buffers stay fp32: they scale every input)."""
    return {
        key: value.half() if value.is_floating_point() and not key.startswith("obs_") else value
        for key, value in tensors.items()
    }


def compact(state: dict[str, Any]) -> dict[str, Any]:
    """The compact form of a ``Session.state_dict`` (see the module docstring)."""
    buffer = state["buffer"]
    return {
        "compact": True,
        "model": _half(state["model"]),
        "decoder": _half(state["decoder"]),
        "buffer": {  # fp32 rewards and int64 lengths
            **buffer,
            "observations": buffer["observations"].half(),
            "actions": buffer["actions"].half(),
        },
        "counters": state["counters"],
        "metrics": state["metrics"],
    }


def expand(state: dict[str, Any]) -> dict[str, Any]:
    """A compact state's tensors back in fp32 (the values keep fp16's rounding)."""

    def full(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}

    return {**state, **{key: full(state[key]) for key in ("model", "decoder", "buffer")}}
