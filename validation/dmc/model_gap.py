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
model".

``--model-updates U1 U2 …`` (increasing, from 0) instead measures the
controllers at several amounts of further model training on the
checkpoint's own buffer: after ``U1`` model updates (App. E's bound, batches
drawn from the buffer as in phase 1, no new episodes), then after ``U2`` in
all, and so on. The optimizer of a compact checkpoint is fresh, so the
learning-rate warm-up (``model.lr_warmup``) starts again (a full
checkpoint's optimizer continues where it was). This separates
"the model saw too little data" from "the model was trained too little on
its data" (issue 13: walker's phase-1 miss). The JSON then has one entry of
``stages`` per count, each with the mean losses of its updates.
Prints and optionally writes JSON.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from typing import Any

from validation.dmc import checkpoint_tool
from validation.dmc.diagnostics import model_return
from validation.dmc.train import CONTROLLERS, Session
from validation.harness import positive_int


def main(argv: list[str] | None = None) -> int:
    parser = checkpoint_tool.parser(__doc__, "a phase<p>(_final).pt")
    parser.add_argument("--episodes", type=positive_int, default=1, help="episodes per controller")
    parser.add_argument("--decoder-updates", type=int, default=0, metavar="U")
    parser.add_argument("--controllers", nargs="+", choices=CONTROLLERS, default=list(CONTROLLERS))
    parser.add_argument("--model-updates", type=int, nargs="+", default=None, metavar="U")
    args = parser.parse_args(argv)
    if args.decoder_updates < 0:
        parser.error(f"--decoder-updates must be >= 0, got {args.decoder_updates}")
    stages = args.model_updates
    if stages is not None and (stages[0] < 0 or any(b <= a for a, b in itertools.pairwise(stages))):
        parser.error(f"--model-updates must be increasing counts >= 0, got {stages}")
    if stages is not None and args.decoder_updates:
        parser.error("--model-updates and --decoder-updates measure different things: pass one")
    session = checkpoint_tool.open_checkpoint(parser, args)
    if stages is not None:
        results = _train_model_in_stages(session, stages, args.controllers, args.episodes)
        checkpoint_tool.emit(args, {"stages": results})
        return 0

    start = time.perf_counter()
    decoder_costs = [session.decoder_update() for _ in range(args.decoder_updates)]
    decoder_seconds = time.perf_counter() - start

    report = {
        "decoder_updates": args.decoder_updates,
        "decoder_cost_first_last": ([decoder_costs[0], decoder_costs[-1]] if decoder_costs else []),
        "decoder_seconds": decoder_seconds,
        "controllers": _play(session, args.controllers, args.episodes),
    }
    checkpoint_tool.emit(args, report)
    return 0


def _train_model_in_stages(
    session: Session, stages: list[int], controllers: list[str], episodes: int
) -> list[dict[str, Any]]:
    """Model updates up to each count of ``stages``, the controllers played after
    each, every stage from the same evaluation-environment state (paired episodes)."""
    if not session.model_opt.state:  # a fresh optimizer (compact state): warm up again
        session.counters.model_updates = 0
    env_state = session.eval_env.get_rng_state()
    done, results = 0, []
    for target in stages:
        start = time.perf_counter()
        losses = [session.model_update() for _ in range(target - done)]
        seconds = time.perf_counter() - start
        done = target
        means = (
            {key: statistics.fmean(row[key] for row in losses) for key in losses[0]}
            if losses
            else {}
        )
        session.eval_env.set_rng_state(env_state)
        results.append(
            {
                "model_updates": target,
                "update_seconds": seconds,
                "mean_losses": means,
                "controllers": _play(session, controllers, episodes),
            }
        )
        print(json.dumps(results[-1]["controllers"]), file=sys.stderr, flush=True)
    return results


def _play(session: Session, controllers: list[str], episodes: int) -> dict[str, Any]:
    """``episodes`` noise-free episodes of each controller: real and filtered returns."""
    results: dict[str, Any] = {}
    for name in controllers:
        rows = []
        for _ in range(episodes):
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
    return results


if __name__ == "__main__":
    sys.exit(main())
