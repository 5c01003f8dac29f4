"""``python -m validation.dmc --task cheetah.run --mode {smoke,short,full} --out DIR``.

The cheetah/walker experiment of sect. 5.2.2 and App. E: a proprioceptive
PlaNet trained online with full-space CEM (phase 1), a latent action
decoder learned online by Alg. 2 for latent DCEM (phase 2), and PPO
through the latent-DCEM controller (phase 3); then noise-free evaluations
of the three controllers and the planning-time comparison. See
``validation.dmc.config`` for every setting of each mode.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

import torch

from validation.dmc.config import TASKS, DMCConfig, config_for
from validation.dmc.report import claims, write_outputs
from validation.dmc.run import EpisodeBudget, open_session, run_phase
from validation.dmc.state import import_state
from validation.harness import RunDirectory, base_parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _convert(key: str, text: str, current: Any, annotation: Any) -> Any:
    """``text`` as the type of the setting ``key``."""
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{key} takes true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if text.lower() == "none" and type(None) in typing.get_args(annotation):
        return None
    if current is None:  # an optional setting now unset: its type from the annotation
        kinds = typing.get_args(annotation)
        return int(text) if int in kinds and float not in kinds else float(text)
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    raise ValueError(f"{key} cannot be set from the command line")


def apply_overrides(config: DMCConfig, items: list[str]) -> DMCConfig:
    """``["model.hidden=100", "cem.solver.n_iter=5"]`` applied to ``config``
    (a ``ValueError`` naming the setting for an unknown or invalid one)."""
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        path = key.split(".")
        chain: list[Any] = [config]
        for part in path[:-1]:
            chain.append(getattr(chain[-1], part, None))
            if not dataclasses.is_dataclass(chain[-1]):
                raise ValueError(f"unknown setting {key!r}")
        owner = chain[-1]
        fields = {f.name: f for f in dataclasses.fields(owner)}
        if path[-1] not in fields or dataclasses.is_dataclass(getattr(owner, path[-1])):
            raise ValueError(
                f"unknown setting {key!r}; e.g. model.hidden, cem.solver.n_sample, "
                f"latent.solver.grad_iters, latent.batch, ppo.iterations, eval_episodes"
            )
        hints = typing.get_type_hints(type(owner))
        value = _convert(key, text, getattr(owner, path[-1]), hints[path[-1]])
        new: Any = dataclasses.replace(owner, **{path[-1]: value})
        for parent, part in zip(reversed(chain[:-1]), reversed(path[:-1]), strict=True):
            new = dataclasses.replace(parent, **{part: new})
        config = new
    return config


def _added_keys(old: Any, new: Any, prefix: str = "") -> list[str] | None:
    """The keys of ``new`` missing from ``old`` (dotted), if ``new`` agrees with
    ``old`` everywhere else; None where a value differs or a key was removed."""
    if isinstance(old, dict) and isinstance(new, dict):
        if not set(old) <= set(new):
            return None
        added = [f"{prefix}{key}" for key in new if key not in old]
        for key in old:
            inner = _added_keys(old[key], new[key], f"{prefix}{key}.")
            if inner is None:
                return None
            added += inner
        return added
    return [] if old == new else None


def adopt_added_settings(path: Path, name: str, mode: str, config: dict[str, Any]) -> list[str]:
    """Let ``--resume`` continue a run whose ``config.json`` predates settings
    added to the code since (each new field at its value now, every recorded
    one unchanged): rewrite the record with them and return their names.
    Anything else is left for ``RunDirectory``'s check to refuse."""
    if not path.exists():
        return []
    old = json.loads(path.read_text(encoding="utf-8"))
    new = json.loads(json.dumps({"name": name, "mode": mode, "config": config}))
    added = _added_keys(old, new)
    if not added:
        return []
    path.write_text(json.dumps(new, indent=2) + "\n", encoding="utf-8")
    return added


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("dmc", __doc__ or "")
    parser.add_argument("--task", choices=sorted(TASKS), default="cheetah.run")
    parser.add_argument(
        "--phase",
        choices=("1", "2", "3", "all"),
        default="all",
        help="run one phase (it starts from the previous phase's final "
        "checkpoint in --out, or --from-checkpoint) or all of them",
    )
    parser.add_argument(
        "--env-steps",
        type=_positive_int,
        default=None,
        help="environment steps of phase 1 (overrides the mode's default)",
    )
    parser.add_argument(
        "--from-checkpoint",
        type=Path,
        default=None,
        help="start --phase 2 or 3 from this phase<p-1>_final.pt",
    )
    parser.add_argument(
        "--stop-after-episodes",
        type=_positive_int,
        default=None,
        help="checkpoint and stop after this many episodes in this session "
        "(continue with --resume)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. model.updates_per_episode=50 (recorded in config.json)",
    )
    parser.add_argument(
        "--resume-from",
        type=Path,
        default=None,
        metavar="STATE",
        help="continue the run exported to STATE (python -m validation.dmc.checkpoint_tool "
        "export), e.g. validation/results/dmc/cheetah.run/short/state, in the empty --out",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads (default 1: with another run on the other core, two threads "
        "made a model update 10-50x slower, issue 13)",
    )
    args = parser.parse_args(argv)
    seeds = args.seeds or [0]
    if len(seeds) != 1:
        parser.error(
            "one seed per run (the paper trains a single run per phase); use one --out per seed"
        )
    if args.from_checkpoint is not None:
        if args.phase not in ("2", "3"):
            parser.error("--from-checkpoint needs --phase 2 or 3")
        if not args.from_checkpoint.exists():
            parser.error(f"--from-checkpoint: {args.from_checkpoint} does not exist")
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        parser.error(f"--device: {error}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    try:
        config = config_for(args.task, args.mode, seeds[0], args.env_steps)
        config = apply_overrides(config, args.overrides)
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    out = args.out if args.out is not None else Path("runs") / "dmc" / args.task / args.mode
    resume = args.resume
    if args.resume_from is not None:
        if args.resume or args.fresh:
            parser.error("--resume-from starts a new --out: it excludes --resume and --fresh")
        try:
            import_state(args.resume_from, out)
        except ValueError as error:
            parser.error(f"--resume-from: {error}")
        resume = True
    name = f"dmc {args.task}"
    if resume:
        added = adopt_added_settings(out / "config.json", name, args.mode, config.as_dict())
        if added:
            print(f"settings added since the run started (defaults): {added}", file=sys.stderr)
    run = RunDirectory(out, name, args.mode, config.as_dict(), resume=resume, fresh=args.fresh)
    phases = (1, 2, 3) if args.phase == "all" else (int(args.phase),)
    budget = EpisodeBudget(args.stop_after_episodes)
    for phase in phases:
        if run.load_result(f"phase{phase}") is not None:
            continue
        session = open_session(
            run, config, device, phase, args.from_checkpoint if phase == phases[0] else None
        )
        if not run_phase(session, run, phase, budget):
            print(
                f"stopped in phase {phase} after {args.stop_after_episodes} episodes; "
                f"continue with --resume --out {out}",
                file=sys.stderr,
            )
            return 0
    results = {p: r for p in (1, 2, 3) if (r := run.load_result(f"phase{p}")) is not None}
    if results:
        write_outputs(run, config, results)
        run.finish(claims(config, args.mode, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
