"""What the tools that measure a saved checkpoint share (``speed``, ``model_gap``),
and ``python -m validation.dmc.checkpoint_tool export --run DIR --to STATE``, which
writes a run's state into a folder to commit (``validation.dmc.state``).

Each loads a checkpoint with the settings its run was trained with (the same
``--task``, ``--mode`` and ``--set`` overrides), measures something, and
prints the result as JSON (also written to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from validation.dmc.config import TASKS, config_for
from validation.dmc.experiment import apply_overrides
from validation.dmc.state import export_run
from validation.dmc.train import Session
from validation.harness import MODES, positive_int


def parser(doc: str | None, checkpoint_help: str) -> argparse.ArgumentParser:
    """``--checkpoint --task --mode --set --threads --out``; tools add their own."""
    result = argparse.ArgumentParser(description=doc.split("\n")[0] if doc else None)
    result.add_argument("--checkpoint", type=Path, required=True, help=checkpoint_help)
    result.add_argument("--task", choices=sorted(TASKS), default="cheetah.run")
    result.add_argument("--mode", choices=MODES, default="short")
    result.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    result.add_argument("--threads", type=positive_int, default=1)
    result.add_argument("--out", type=Path, default=None, help="write the JSON here")
    return result


def open_checkpoint(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Session:
    """Check the shared options, set the thread count and load the session.

    A full checkpoint (``<job>.pt``, ``<job>.phase<p>_final.pt``) restores the
    session exactly; a compact phase boundary (``.compact.pt``, the form
    committed under ``validation/results/dmc/<task>/<mode>/state``) restores
    its models, buffer and counters with fresh generators (``Session.load``).
    """
    if not args.checkpoint.exists():
        parser.error(f"--checkpoint {args.checkpoint} does not exist")
    torch.set_num_threads(args.threads)
    config = apply_overrides(config_for(args.task, args.mode), args.overrides)
    return Session.load(config, torch.device("cpu"), args.checkpoint)


def emit(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Print ``result`` after the checkpoint, task and overrides as JSON, and write
    it to ``--out`` when given."""
    shared = {"checkpoint": str(args.checkpoint), "task": args.task, "overrides": args.overrides}
    text = json.dumps({**shared, **result}, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


def main(argv: list[str] | None = None) -> int:
    """``python -m validation.dmc.checkpoint_tool export --run DIR --to STATE``."""
    cli = argparse.ArgumentParser(
        prog="python -m validation.dmc.checkpoint_tool",
        description="Export a run's latest state compactly (validation.dmc.state), to be "
        "committed and resumed with python -m validation.dmc --resume-from STATE.",
    )
    commands = cli.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write a run's state into a folder")
    export.add_argument("--run", type=Path, required=True, help="the run directory (--out)")
    export.add_argument(
        "--to",
        type=Path,
        required=True,
        help="e.g. validation/results/dmc/cheetah.run/short/state (replaced)",
    )
    args = cli.parse_args(argv)
    try:
        written = export_run(args.run, args.to)
    except ValueError as error:
        cli.error(str(error))
    total = sum(path.stat().st_size for path in written)
    for path in written:
        print(f"{path.stat().st_size / 1e6:8.2f} MB  {path}")
    print(f"{total / 1e6:8.2f} MB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
