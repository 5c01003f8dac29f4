"""``python -m validation.dmc --task cheetah.run --mode {smoke,short,full} --out DIR``.

The experiment of ``validation.dmc`` (sect. 5.2.2, App. E): one job per task
and seed (``validation.dmc.run``) runs the three phases and the final
evaluations; ``validation.dmc.config`` gives every setting of each mode.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from validation import harness
from validation.dmc import report, run
from validation.dmc.config import TASKS, DMCConfig, config_for
from validation.dmc.state import import_state, upgrade_legacy
from validation.harness import JobContext, JobOutput, Report, RunDirectory, positive_int

NAME = "dmc"


@dataclass(frozen=True)
class DMCRun:
    """The settings of a run (``config.json``): one ``DMCConfig`` per job (task
    and seed), the phases each job runs, the state the first of them starts
    from, and the torch device."""

    runs: tuple[DMCConfig, ...]
    phases: tuple[int, ...] = (1, 2, 3)
    from_checkpoint: str | None = None
    device: str = "cpu"


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
    if isinstance(current, int | float | str):  # bool is handled above
        return type(current)(text)
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


class DMC:
    """The experiment (``harness.Experiment``); one ``run.Job`` per task and seed."""

    name = NAME
    description = __doc__.splitlines()[0] if __doc__ else NAME
    strict_smoke = False  # smoke sizes cannot meet the paper's ratios

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--task", choices=sorted(TASKS), nargs="+", default=["cheetah.run"], help="one job each"
        )
        parser.add_argument(
            "--phase",
            choices=("1", "2", "3", "all"),
            default="all",
            help="run one phase (2 and 3 start from --from-checkpoint) or all of them",
        )
        parser.add_argument(
            "--env-steps",
            type=positive_int,
            default=None,
            help="environment steps of phase 1 (overrides the mode's default)",
        )
        parser.add_argument(
            "--from-checkpoint",
            type=Path,
            default=None,
            help="start --phase 2 or 3 from this <job>.phase<p-1>_final[.compact].pt",
        )
        parser.add_argument(
            "--stop-after-episodes",
            dest="stop_after",
            type=positive_int,
            default=None,
            help="stop each job after this many episodes in this session (continue with --resume)",
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

    def configure(self, args: argparse.Namespace) -> DMCRun:
        if args.from_checkpoint is not None:
            if args.phase not in ("2", "3"):
                raise ValueError("--from-checkpoint needs --phase 2 or 3")
            if not args.from_checkpoint.exists():
                raise ValueError(f"--from-checkpoint: {args.from_checkpoint} does not exist")
        elif args.phase in ("2", "3"):
            previous = int(args.phase) - 1
            raise ValueError(
                f"--phase {args.phase} starts from a phase-{previous} final state: "
                "give it with --from-checkpoint"
            )
        pairs = [(task, seed) for task in args.task for seed in args.seeds or [0]]
        if len(set(pairs)) < len(pairs):
            raise ValueError(f"each task and seed once, got tasks {args.task}, seeds {args.seeds}")
        runs = tuple(
            apply_overrides(config_for(task, args.mode, seed, args.env_steps), args.overrides)
            for task, seed in pairs
        )
        source = args.from_checkpoint
        return DMCRun(
            runs,
            (1, 2, 3) if args.phase == "all" else (int(args.phase),),
            None if source is None else str(source.resolve()),
            args.device,
        )

    def prepare_run(self, args: argparse.Namespace, out: Path) -> bool:
        """``--resume-from``: import the state into the empty ``out``; on a
        resume, upgrade a run of the layout before the contract."""
        resume = bool(args.resume)
        if args.resume_from is not None:
            if args.resume or args.fresh:
                raise ValueError(
                    "--resume-from starts a new --out: it excludes --resume and --fresh"
                )
            try:
                import_state(args.resume_from, out)
            except ValueError as error:
                raise ValueError(f"--resume-from: {error}") from None
            resume = True
        if resume and (out / "config.json").exists():
            record = {"name": NAME, "mode": args.mode, "config": asdict(self.configure(args))}
            if upgrade_legacy(out, record):
                print(f"{out}: converted to the job layout of validation.dmc.run", file=sys.stderr)
        return resume

    def jobs(self, config: DMCRun, mode: str) -> list[run.Job]:
        return [
            run.Job(c, config.phases, config.from_checkpoint, config.device) for c in config.runs
        ]

    def run_job(self, job: run.Job, ctx: JobContext) -> JobOutput | None:
        return run.run_job(job, ctx)

    def figures(
        self, config: DMCRun, results: Sequence[dict[str, Any]], run_dir: RunDirectory
    ) -> None:
        for settings, by_phase, prefix in _by_job(config, results):
            report.write_outputs(run_dir, settings, by_phase, prefix)

    def claims(
        self, config: DMCRun, results: Sequence[dict[str, Any]], run_dir: RunDirectory
    ) -> Report:
        """Each job's claims; ``summary.json``'s ``ratio_intervals`` holds the
        episode counts and bootstrap intervals of its ratio claims (VAL-12)."""
        jobs = _by_job(config, results)
        return Report(
            [
                dataclasses.replace(claim, id=prefix + claim.id)
                for settings, by_phase, prefix in jobs
                for claim in report.claims(settings, run_dir.mode, by_phase)
            ],
            {
                "ratio_intervals": {
                    prefix + claim: estimates
                    for _, by_phase, prefix in jobs
                    for claim, estimates in report.ratio_details(by_phase).items()
                }
            },
        )


def _by_job(
    config: DMCRun, results: Sequence[dict[str, Any]]
) -> list[tuple[DMCConfig, dict[int, dict[str, Any]], str]]:
    """Each job's settings, its results by phase, and what its files and claim
    ids start with (nothing in a run of one job)."""
    return [
        (
            settings,
            {r["phase"]: r for r in result["phases"]},
            "" if len(config.runs) == 1 else f"{run.job_name(settings.task, settings.seed)}-",
        )
        for settings, result in zip(config.runs, results, strict=True)
    ]


EXPERIMENT = DMC()


def main(argv: Sequence[str] | None = None) -> int:
    return harness.main(EXPERIMENT, argv)


if __name__ == "__main__":
    sys.exit(main())
