"""A run's state in the repository: export it compactly, resume from it on a fresh clone.

A run directory (``validation.harness.RunDirectory``) holds ``config.json``,
``timing.json``, ``progress.log``, ``jobs/phase<p>.json`` (finished phases)
and ``checkpoints/`` (``phase<p>.pt`` of the phase in progress,
``phase<p>_final.pt`` of finished ones). ``export_run`` copies into a
state folder exactly what resuming needs, and no more:

- the JSON files and ``progress.log`` (text);
- the in-progress checkpoint ``phase<p>.pt``, byte for byte (fp32 models,
  optimizers, the replay buffer, every generator and environment state:
  the resumed run continues exactly as the uninterrupted one would);
- the last finished phase's ``phase<p>_final.pt`` byte for byte while the
  next phase has not started (it is that phase's start);
- every other finished phase's final state in compact form,
  ``phase<p>_final.compact.pt``: fp16 weights of the model and the decoder
  (with the model's fp32 buffers), the replay buffer with fp16 observations
  and actions (fp32 rewards), the counters and metrics; no optimizer or
  generator states. This is the phase boundary for users ("pretrained
  phase-1 models"): ``--phase 2 --from-checkpoint .../phase1_final.compact.pt``
  runs latent DCEM on it; it is not an exact resume point.

``import_state`` copies a state folder into an empty run directory, after
which ``--resume`` continues it (``python -m validation.dmc --resume-from``
does both).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

COMPACT_SUFFIX = ".compact.pt"
TEXT_FILES = ("config.json", "timing.json", "progress.log")
PHASES = (1, 2, 3)


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
    written: list[Path] = []
    for name in TEXT_FILES:
        if (run / name).exists():
            written.append(Path(shutil.copy2(run / name, to / name)))
    done = [p for p in PHASES if (run / "jobs" / f"phase{p}.json").exists()]
    for p in done:
        written.append(Path(shutil.copy2(run / "jobs" / f"phase{p}.json", to / "jobs")))
    for p in PHASES:
        current = run / "checkpoints" / f"phase{p}.pt"
        if p not in done and current.exists():
            written.append(Path(shutil.copy2(current, to / "checkpoints")))
    for p in done:
        final = run / "checkpoints" / f"phase{p}_final.pt"
        if not final.exists():
            continue
        next_started = (run / "checkpoints" / f"phase{p + 1}.pt").exists() or (p + 1) in done
        if p + 1 in PHASES and not next_started:
            written.append(Path(shutil.copy2(final, to / "checkpoints")))
        else:
            state = torch.load(final, map_location="cpu", weights_only=True)
            path = to / "checkpoints" / f"phase{p}_final{COMPACT_SUFFIX}"
            torch.save(compact(state), path)
            written.append(path)
    return written


def import_state(state: Path, run: Path) -> None:
    """Copy state folder ``state`` (``export_run``'s output) into run directory
    ``run``, which must not hold a run yet; the compact files are left out
    (they are not resume points)."""
    if not (state / "config.json").exists():
        raise ValueError(f"{state} is not an exported run state (no config.json)")
    for sub in ("jobs", "checkpoints"):
        if (run / sub).exists() and any((run / sub).iterdir()):
            raise ValueError(f"{run} already holds a run; continue it with --resume instead")
    for sub in ("jobs", "checkpoints"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    for name in TEXT_FILES:
        if (state / name).exists():
            shutil.copy2(state / name, run / name)
    for sub in ("jobs", "checkpoints"):
        for path in sorted((state / sub).glob("*")):
            if not path.name.endswith(COMPACT_SUFFIX):
                shutil.copy2(path, run / sub / path.name)


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
        "buffer": {
            "observations": buffer["observations"].half(),
            "actions": buffer["actions"].half(),
            "rewards": buffer["rewards"],
            "lengths": buffer["lengths"],
        },
        "counters": state["counters"],
        "metrics": state["metrics"],
    }


def expand(state: dict[str, Any]) -> dict[str, Any]:
    """A compact state's tensors back in fp32 (the values keep fp16's rounding)."""

    def full(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}

    return {
        **state,
        "model": full(state["model"]),
        "decoder": full(state["decoder"]),
        "buffer": full(state["buffer"]),
    }
