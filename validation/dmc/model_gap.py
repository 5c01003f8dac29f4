"""How much each planner exploits the learned model, on a saved checkpoint.

``python -m validation.dmc.model_gap --checkpoint runs/.../phase1_final.pt [--set KEY=VALUE ...]``

Plays noise-free episodes of each controller (full CEM at the run's size,
full CEM at the paper's size, latent DCEM) on the evaluation environment
and records, per episode:

- ``real``: the environment's return;
- ``filtered``: the return the model's reward head predicts along the same
  episode, from the filter's beliefs after each step
  (``validation.dmc.diagnostics.model_return``).

A planner that finds action sequences where the model is wrong shows
``filtered ≫ real``: the plans look good to the model and are not. This is
the failure the paper names for phase 2 (App. E: "the decoder finds
especially bad regions in the model"), and the reason latent DCEM must be
trained online while the model keeps learning from its episodes.

``--decoder-updates U`` first runs ``U`` offline steps of Alg. 2 on the
checkpoint's model (initial states as in phase 2, ``latent.start_states``,
but with no environment steps and no model updates), to separate
"the decoder has not learned yet" from "the decoder learned to exploit the
model". Prints and optionally writes JSON.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from validation.dmc import checkpoint_tool
from validation.dmc.diagnostics import model_return
from validation.dmc.train import CONTROLLERS
from validation.harness import positive_int


def main(argv: list[str] | None = None) -> int:
    parser = checkpoint_tool.parser(__doc__, "a phase<p>(_final).pt")
    parser.add_argument("--episodes", type=positive_int, default=1, help="episodes per controller")
    parser.add_argument("--decoder-updates", type=int, default=0, metavar="U")
    parser.add_argument("--controllers", nargs="+", choices=CONTROLLERS, default=list(CONTROLLERS))
    args = parser.parse_args(argv)
    if args.decoder_updates < 0:
        parser.error(f"--decoder-updates must be >= 0, got {args.decoder_updates}")
    session = checkpoint_tool.open_checkpoint(parser, args)

    start = time.perf_counter()
    decoder_costs = [session.decoder_update() for _ in range(args.decoder_updates)]
    decoder_seconds = time.perf_counter() - start

    results: dict[str, Any] = {}
    for name in args.controllers:
        rows = []
        for _ in range(args.episodes):
            episode = session.evaluate(name)
            rows.append(
                {
                    "real": episode.total_reward,
                    "filtered": model_return(session.model, episode),
                    "mean_abs_action": float(episode.actions.abs().mean()),
                    "plan_ms": 1000 * episode.plan_seconds / max(1, episode.actions.shape[0]),
                }
            )
        results[name] = {
            "episodes": rows,
            "median_real": statistics.median(r["real"] for r in rows),
            "median_filtered": statistics.median(r["filtered"] for r in rows),
        }
    report = {
        "decoder_updates": args.decoder_updates,
        "decoder_cost_first_last": ([decoder_costs[0], decoder_costs[-1]] if decoder_costs else []),
        "decoder_seconds": decoder_seconds,
        "controllers": results,
    }
    checkpoint_tool.emit(args, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
