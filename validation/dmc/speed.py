"""Planning time per control step of each controller on a saved model.

``python -m validation.dmc.speed --checkpoint runs/.../phase2_final.pt [--set KEY=VALUE ...]``

Loads a phase-2 (or later) checkpoint with the settings it was trained with
(the same ``--task`` and ``--set`` overrides as its run) and times full CEM at
the run's size, full CEM at the paper's size (N=1000, k=100, T=10) and latent
DCEM on the same beliefs (``Session.speed``), ``--repeats`` times. Prints
and optionally writes JSON with every repeat and the median ratio of paper
CEM to latent DCEM (issue 5 asks for ≥ 5×). Use it to re-measure the planners
after a change to ``impl`` without re-training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from validation.dmc.__main__ import apply_overrides
from validation.dmc.config import TASKS, config_for
from validation.dmc.train import Session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a phase<p>_final.pt")
    parser.add_argument("--task", choices=sorted(TASKS), default="cheetah.run")
    parser.add_argument("--mode", choices=("smoke", "short", "full"), default="short")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error(f"--repeats and --threads must be >= 1, got {args.repeats}, {args.threads}")
    if not args.checkpoint.exists():
        parser.error(f"--checkpoint {args.checkpoint} does not exist")
    torch.set_num_threads(args.threads)
    config = apply_overrides(config_for(args.task, args.mode), args.overrides)
    session = Session(config, torch.device("cpu"))
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    session.load_state_dict(state)
    repeats = [session.speed() for _ in range(args.repeats)]
    ratios = [r["full_cem_paper_ms"] / r["latent_dcem_ms"] for r in repeats]
    result = {
        "checkpoint": str(args.checkpoint),
        "task": args.task,
        "overrides": args.overrides,
        "threads": args.threads,
        "torch": torch.__version__,
        "repeats_ms": repeats,
        "paper_cem_over_latent_dcem": ratios,
        "median_ratio": statistics.median(ratios),
    }
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
