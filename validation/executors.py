"""Where the jobs of a run execute (VAL-4): in this process, on a local
process pool (``--jobs N``), or as Ray tasks (``--executor ray``).

Every executor hands each job a ``JobContext`` and gives what the job
returns to the driver's ``RunDirectory.accept``, which writes the result
and its files and records the time: jobs never touch the clock (VAL-3).
A worker that dies (killed, out of memory, a lost machine) is replaced and
its job starts again from its last checkpoint: Ray retries each task up to
``RETRIES`` times, the local pool is rebuilt up to ``RETRIES`` times a run.
Exceptions raised by a job are bugs, not deaths, and end the run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from functools import partial
from typing import Any

import torch

from validation import provenance
from validation.harness import Experiment, JobContext, JobOutput, NamedJob, RunDirectory

RETRIES = 2
"""Times a job whose worker died is started again (from its checkpoint)."""

RECORD_SECONDS = 60.0
"""While workers run, the driver records the run's time at least this often."""

Executor = Callable[[Experiment[Any, Any], Sequence[NamedJob], RunDirectory, JobContext], None]


def run_job(experiment: Experiment[Any, Any], job: NamedJob, ctx: JobContext) -> JobOutput | None:
    """``experiment.run_job(job, ctx)`` on ``ctx.threads`` torch threads (every worker runs it)."""
    torch.set_num_threads(ctx.threads)
    return experiment.run_job(job, ctx)


def in_process(
    experiment: Experiment[Any, Any], jobs: Sequence[NamedJob], run: RunDirectory, ctx: JobContext
) -> None:
    """One job after another in this process; the time is recorded at every checkpoint."""
    ctx = replace(ctx, on_checkpoint=run.record_time)
    for job in jobs:
        run.accept(job.name, run_job(experiment, job, ctx))


def process_pool(
    processes: int,
    experiment: Experiment[Any, Any],
    jobs: Sequence[NamedJob],
    run: RunDirectory,
    ctx: JobContext,
) -> None:
    """Up to ``processes`` spawned worker processes, ``ctx.threads`` torch threads each
    (``partial(process_pool, processes)`` is an ``Executor``)."""
    remaining = {job.name: job for job in jobs}
    for attempt in range(RETRIES + 1):
        try:
            _pool_round(processes, experiment, remaining, run, ctx)
            return
        except BrokenProcessPool:
            if attempt == RETRIES:
                raise
            run.context().log(
                f"a worker died; restarting {sorted(remaining)} from their checkpoints"
            )


def _pool_round(
    processes: int,
    experiment: Experiment[Any, Any],
    remaining: dict[str, NamedJob],
    run: RunDirectory,
    ctx: JobContext,
) -> None:
    """One pool for the jobs of ``remaining``; a job leaves it once the driver accepted it."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(processes, len(remaining)), mp_context=context) as pool:
        futures: dict[Future[JobOutput | None], NamedJob] = {
            pool.submit(run_job, experiment, job, replace(ctx, position=i)): job
            for i, job in enumerate(remaining.values())
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=RECORD_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                job = futures[future]
                run.accept(job.name, future.result())
                del remaining[job.name]
            run.record_time()


def ray_tasks(
    address: str | None,
    experiment: Experiment[Any, Any],
    jobs: Sequence[NamedJob],
    run: RunDirectory,
    ctx: JobContext,
) -> None:
    """One Ray task per job (``ctx.threads`` CPUs each), on the cluster at ``address``, or
    on the Ray instance this process already started, or on a new local one
    (``partial(ray_tasks, address)`` is an ``Executor``).

    The run directory must be on storage that every node sees at the same
    path for checkpoints to survive a lost node; results and files always
    come back to the driver. Ray restarts a task whose worker died
    (``max_retries``), and the task resumes from its checkpoint.
    """
    try:
        import ray
    except ImportError:
        raise SystemExit("--executor ray needs Ray: pip install -e '.[cluster]'") from None
    if not ray.is_initialized():
        ray.init(
            address=address,
            runtime_env={"working_dir": str(provenance.ROOT)},  # Ray ships the checkout
            _temp_dir=None if address is not None else ray_temp_dir(),
        )
    task = ray.remote(num_cpus=ctx.threads, max_retries=RETRIES)(run_job)
    refs = {task.remote(experiment, job, ctx): job for job in jobs}
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1, timeout=RECORD_SECONDS)
        for ref in done:
            run.accept(refs.pop(ref).name, ray.get(ref))
        run.record_time()


def ray_temp_dir() -> str:
    """Where a local Ray instance keeps its sessions: the system's temporary
    folder, unless that lies inside the running virtual environment (nox points
    ``TMPDIR`` there), which Ray refuses (its workers die at start and the
    driver waits forever); then ``/tmp/ray``."""
    base = os.path.realpath(tempfile.gettempdir())
    prefix = os.path.realpath(sys.prefix)
    inside = sys.prefix != sys.base_prefix and (base == prefix or base.startswith(prefix + os.sep))
    return os.path.join(os.sep, "tmp", "ray") if inside else os.path.join(base, "ray")


def executor_for(args: argparse.Namespace) -> Executor:
    """The executor that ``--executor``, ``--jobs`` and ``--ray-address`` choose."""
    if args.executor == "ray" or args.ray_address is not None:
        return partial(ray_tasks, args.ray_address)
    if args.jobs > 1:
        return partial(process_pool, args.jobs)
    return in_process
