"""Planning time per control step of each controller on a saved model.

``python -m validation.dmc.speed --checkpoint runs/.../phase2_final.pt [--set KEY=VALUE ...]``

Times full CEM at the run's size, full CEM at the paper's size (N=1000, k=100,
T=10) and latent DCEM on the same beliefs (``Session.speed``) of a phase-2 (or
later) checkpoint, ``--repeats`` times; the JSON (``checkpoint_tool``) holds every
repeat and the median ratio of paper CEM to latent DCEM (issue 5 asks for ≥ 5×).
Use it to re-measure the planners after a change to ``impl`` without re-training.
"""

from __future__ import annotations

import statistics
import sys

import torch

from validation.dmc import checkpoint_tool
from validation.harness import positive_int


def main(argv: list[str] | None = None) -> int:
    parser = checkpoint_tool.parser(__doc__, "a phase<p>_final.pt")
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args(argv)
    session = checkpoint_tool.open_checkpoint(parser, args)
    repeats = [session.speed() for _ in range(args.repeats)]
    ratios = [r["full_cem_paper_ms"] / r["latent_dcem_ms"] for r in repeats]
    result = {
        "threads": args.threads,
        "torch": torch.__version__,
        "repeats_ms": repeats,
        "paper_cem_over_latent_dcem": ratios,
        "median_ratio": statistics.median(ratios),
    }
    checkpoint_tool.emit(args, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
