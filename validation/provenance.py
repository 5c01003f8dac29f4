"""Which code a result was computed with, and which committed results are stale (VAL-5).

``summary.json`` records ``provenance``: the commit the run started from, the
repository files its numbers depend on (the ``impl``, ``reference`` and
``validation`` modules it had loaded, less the plumbing in ``PLUMBING``)
with their SHA-256, their combined ``fingerprint``, and which of them
differed from that commit (``uncommitted``).

``python -m validation.provenance [DIR ...]`` (default
``validation/results``) lists every ``summary.json`` below ``DIR`` as
``current`` (the files hash as recorded), ``stale`` (naming the files that
changed since), ``mixed`` (naming files that changed while the run ran:
edited under it, or resumed on other code; the recorded hashes are those at
its end, so the numbers match no one version) or ``unknown`` (written before
provenance was recorded); it exits 1 when any is not current.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
"""The checkout this module belongs to; recorded paths are relative to it."""

PACKAGES = ("impl", "reference", "validation")
"""Top-level folders whose modules can change a result."""

PLUMBING = frozenset(
    {
        "validation/__init__.py",
        "validation/__main__.py",
        "validation/harness.py",
        "validation/executors.py",
        "validation/provenance.py",
    }
)
"""Files that run experiments and write their outputs but compute no number of them."""


def loaded_sources() -> list[str]:
    """The repository files (relative paths) of the modules this process has loaded."""
    files = [getattr(module, "__file__", None) for module in list(sys.modules.values())]
    paths = [Path(file).resolve() for file in files if file is not None]
    relative = {path.relative_to(ROOT).as_posix() for path in paths if path.is_relative_to(ROOT)}
    return sorted(name for name in relative - PLUMBING if name.split("/")[0] in PACKAGES)


def file_hashes(files: Iterable[str], root: Path = ROOT) -> dict[str, str]:
    """SHA-256 of each file under ``root`` (``"missing"`` for a file that is gone)."""
    hashes = {}
    for name in sorted(files):
        path = root / name
        hashes[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"
    return hashes


def fingerprint(hashes: dict[str, str]) -> str:
    """One SHA-256 over the sorted ``path hash`` lines."""
    lines = "".join(f"{name} {digest}\n" for name, digest in sorted(hashes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def package_sources(root: Path = ROOT) -> list[str]:
    """Every module file (relative path) of ``PACKAGES`` under ``root``, less ``PLUMBING``."""
    files = (path for package in PACKAGES for path in (root / package).rglob("*.py"))
    relative = (path.relative_to(root).as_posix() for path in files)
    return sorted(name for name in relative if name not in PLUMBING)


def snapshot(root: Path = ROOT) -> dict[str, Any]:
    """The code a session of a run starts with: the commit and the SHA-256 of
    every file of ``package_sources``. A run keeps one per session (it may be
    resumed on other code); ``record`` compares them with the files at its end."""
    return {
        "commit": _git("rev-parse", "HEAD") or "unknown",
        "files": file_hashes(package_sources(root), root),
    }


def record(
    sources: Iterable[str] | None = None,
    sessions: Sequence[Mapping[str, Any]] = (),
    root: Path = ROOT,
) -> dict[str, Any]:
    """The ``provenance`` of ``summary.json`` for ``sources`` (default: ``loaded_sources()``).

    ``sessions``: the ``snapshot`` each session of the run started with. A
    source whose hash differs between them, or between them and now, is listed
    in ``changed_during_run``: part of the numbers came from other code (a
    file edited while the run ran, or a run resumed on another commit)."""
    hashes = file_hashes(loaded_sources() if sources is None else sources, root)
    changed = _git("status", "--porcelain", "--", *hashes) if hashes else ""
    during = sorted(
        name
        for name, digest in hashes.items()
        if any(session["files"].get(name, "missing") != digest for session in sessions)
    )
    return {
        "commit": _git("rev-parse", "HEAD") or "unknown",
        "uncommitted": sorted(line[3:] for line in (changed or "").splitlines()),
        "sessions": [str(session["commit"]) for session in sessions],
        "changed_during_run": during,
        "fingerprint": fingerprint(hashes),
        "files": hashes,
    }


def status(summary: dict[str, Any], root: Path = ROOT) -> tuple[str, list[str]]:
    """``("current" | "stale" | "mixed" | "unknown", files)`` of one summary
    against ``root``; ``mixed``: files changed while the run ran."""
    recorded = summary.get("provenance")
    if not isinstance(recorded, dict) or "files" not in recorded:
        return "unknown", []
    if recorded.get("changed_during_run"):
        return "mixed", list(recorded["changed_during_run"])
    now = file_hashes(recorded["files"], root)
    if now == recorded["files"] and fingerprint(now) == recorded["fingerprint"]:
        return "current", []
    return "stale", [name for name, digest in now.items() if recorded["files"][name] != digest]


def report(folders: Sequence[Path], root: Path = ROOT) -> tuple[list[str], bool]:
    """One line per ``summary.json`` below ``folders``, and whether all are current."""
    lines, current = [], True
    for folder in folders:
        for path in sorted(folder.resolve().rglob("summary.json")):
            summary = json.loads(path.read_text(encoding="utf-8"))
            state, changed = status(summary, root)
            commit = str(summary.get("provenance", {}).get("commit", "?"))[:10]
            note = f" (changed: {', '.join(changed)})" if changed else ""
            if state == "mixed":
                note = f" (changed while it ran: {', '.join(changed)}; rerun)"
            if state == "unknown":
                note = " (no provenance: written before it was recorded; rerun to check)"
            shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
            lines.append(f"{state:8} {shown} [commit {commit}]{note}")
            current = current and state == "current"
    return lines, current


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation.provenance", description=__doc__)
    parser.add_argument("folders", nargs="*", type=Path, default=[ROOT / "validation" / "results"])
    args = parser.parse_args(argv)
    lines, current = report(args.folders)
    print("\n".join(lines) if lines else "no summary.json found")
    return 0 if current else 1


if __name__ == "__main__":
    sys.exit(main())
