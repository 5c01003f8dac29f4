"""The wheel folder that travels to the GPU machine (issue 14).

The GPU machine (Python 3.12, torch, numpy, scipy, pytest, hypothesis; no
network) lacks the reference's CVXPY. This module downloads exactly the
cp312 manylinux x86-64 wheels it needs into the git-ignored ``.whl/`` and
checks a folder against that list:

    python -m benchmarks.gpu_wheels            # download into .whl/, check, print the size
    python -m benchmarks.gpu_wheels --check    # check an existing folder only

``import cvxpy`` needs ``qdldl``; ``reference.lml_cvxpy`` solves with Clarabel.
Nothing else is carried: CVXPY imports its other solvers (OSQP, SCS, HiGHS)
and ``sparsediffpy`` only when they are used (SCS alone is a 43 MB wheel),
and Clarabel's ``cffi`` is not imported by what the reference calls (all
checked by blocking those imports while ``lml_cvxpy`` solved). The
dm-control benchmark is left out as well: the dm-control wheel (56 MB) and
MuJoCo's (27 MB) do not fit in the 64 MiB that travels.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

WHEELS: dict[str, str] = {
    "cvxpy": "1.9.3",
    "clarabel": "0.11.1",
    "qdldl": "0.1.9.post1",
}
"""Distribution → version: the versions of the development environment."""

DEFAULT_FOLDER = Path(".whl")
PYTHON_VERSION = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
"""Platform tags pip may pick (pip matches each ``manylinux_2_N`` exactly)."""
SIZE_LIMIT_BYTES = 16 * 2**20
"""What the folder may weigh: a quarter of the 64 MiB that travels, leaving
the rest to the working tree (about 3 MB)."""

_WHEEL_NAME = re.compile(
    r"^(?P<name>[A-Za-z0-9_.]+?)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<python>[^-]+)-(?P<abi>[^-]+)-"
    r"(?P<platform>[^-]+)\.whl$"
)


def normalize(name: str) -> str:
    """PEP 503 normalization: ``dm_control`` and ``dm-control`` are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_platform_options() -> list[str]:
    """The ``pip download``/``pip install`` options that select cp312 manylinux wheels."""
    options = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for tag in PLATFORMS:
        options += ["--platform", tag]
    return options


def requirements() -> list[str]:
    return [f"{name}=={version}" for name, version in WHEELS.items()]


@dataclass
class FolderCheck:
    """What ``check_folder`` found. ``ok`` when every pinned wheel is there
    once, in its version, for this platform, and nothing else is."""

    folder: str
    files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_platform: list[str] = field(default_factory=list)
    total_bytes: int = 0
    limit_bytes: int = SIZE_LIMIT_BYTES

    @property
    def ok(self) -> bool:
        return (
            bool(self.files)
            and not (self.missing or self.unexpected or self.wrong_platform)
            and self.total_bytes <= self.limit_bytes
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"ok": self.ok, "total_mib": round(self.total_bytes / 2**20, 2)}


def platform_fits(python: str, abi: str, platform: str) -> bool:
    """Whether a wheel's tags install on CPython 3.12, manylinux x86-64."""
    pythons = python.split(".")
    abis = abi.split(".")
    platforms = platform.split(".")
    python_ok = any(p in ("cp312", "py3", "py2.py3") for p in pythons) or (
        "abi3" in abis and any(p.startswith("cp3") for p in pythons)
    )
    abi_ok = any(a in ("cp312", "abi3", "none") for a in abis)
    platform_ok = any(p == "any" or (p.startswith("manylinux") and p.endswith("x86_64"))
                      for p in platforms)  # fmt: skip
    return python_ok and abi_ok and platform_ok


def check_folder(folder: Path) -> FolderCheck:
    """Compare the ``*.whl`` files of ``folder`` with ``WHEELS``."""
    result = FolderCheck(folder=str(folder))
    wanted = {normalize(name): version for name, version in WHEELS.items()}
    seen: dict[str, list[str]] = {}
    paths = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    for path in paths:
        result.files.append(path.name)
        result.total_bytes += path.stat().st_size
        match = _WHEEL_NAME.match(path.name)
        if match is None:
            result.unexpected.append(path.name)
            continue
        name = normalize(match["name"])
        if wanted.get(name) != match["version"]:
            result.unexpected.append(path.name)
            continue
        if not platform_fits(match["python"], match["abi"], match["platform"]):
            result.wrong_platform.append(path.name)
        seen.setdefault(name, []).append(path.name)
    for name, version in wanted.items():
        if name not in seen:
            result.missing.append(f"{name}=={version}")
        elif len(seen[name]) > 1:
            result.unexpected.extend(seen[name][1:])
    return result


def download(folder: Path) -> None:
    """``pip download`` every pinned wheel (no dependencies) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", *pip_platform_options()]
    subprocess.run([*command, "-d", str(folder), *requirements()], check=True)


def install_command(folder: Path, target: Path, *, dry_run: bool) -> list[str]:
    """The offline install of the folder into ``target``: for real on the
    GPU machine's Python 3.12, as a ``--dry-run`` resolution elsewhere (the
    platform options then let another Python resolve cp312 wheels)."""
    command = [
        sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile",
        "--no-cache-dir", "--disable-pip-version-check", "--find-links", str(folder),
        "--target", str(target), "--upgrade",
    ]  # fmt: skip
    if dry_run:
        command += ["--dry-run", *pip_platform_options()]
    return [*command, *requirements()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_FOLDER, help="default .whl")
    parser.add_argument("--check", action="store_true", help="check the folder, download nothing")
    args = parser.parse_args(argv)
    if not args.check:
        download(args.dest)
    result = check_folder(args.dest)
    print(json.dumps(result.as_dict(), indent=1))
    print(
        f"{args.dest}: {len(result.files)} wheels, {result.total_bytes / 2**20:.2f} MiB "
        f"(limit {result.limit_bytes / 2**20:.0f} MiB): {'ok' if result.ok else 'NOT OK'}"
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
