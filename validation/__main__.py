"""Run every reproduction script: ``python -m validation [--mode M] [--out ROOT] [...]``.

Each script of ``validation.SCRIPTS`` runs in its own process with the given
options; ``--out ROOT`` puts script ``name`` in ``ROOT/name`` (default
``runs/<name>/<mode>``). Further options (``--seeds``, ``--device``,
``--jobs``, ``--resume``, ``--fresh``) are passed through. Exits non-zero if
any script fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from validation import SCRIPTS
from validation.harness import MODES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation", description=__doc__)
    parser.add_argument("--mode", choices=MODES, default="smoke")
    parser.add_argument("--out", type=Path, default=None, help="root of the run directories")
    parser.add_argument("--only", nargs="*", default=None, help="a subset of " + ", ".join(SCRIPTS))
    args, passthrough = parser.parse_known_args(argv)
    chosen = SCRIPTS if args.only is None else tuple(args.only)
    unknown = [name for name in chosen if name not in SCRIPTS]
    if unknown:
        parser.error(f"unknown scripts {unknown}; choose from {list(SCRIPTS)}")
    failed = []
    for name in chosen:
        command = [sys.executable, "-m", f"validation.{name}", "--mode", args.mode, *passthrough]
        if args.out is not None:
            command += ["--out", str(args.out / name)]
        print("$ " + " ".join(command), flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
