"""The cartpole reproduction's smoke mode, end to end (validation contract, CTL-10)."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray  # the cluster extra: pip install -e '.[cluster]'
import torch

from validation import cartpole_embedding as cp
from validation import harness
from validation.executors import ray_temp_dir
from validation.harness import JobContext, JobOutput

ROOT = Path(__file__).resolve().parent.parent


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "validation.cartpole_embedding", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@dataclass(frozen=True)
class SmokeRun:
    out: Path
    done: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> SmokeRun:
    """One smoke run through the command line, as CI runs it."""
    out = tmp_path_factory.mktemp("cartpole") / "run"
    return SmokeRun(out, run_script("--mode", "smoke", "--out", str(out)))


@pytest.mark.spec("CTL-10", "VAL-1")
def test_smoke_mode_learns_and_keeps_the_contract(smoke: SmokeRun) -> None:
    out, done = smoke.out, smoke.done
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["name"] == "cartpole_embedding" and summary["mode"] == "smoke"
    assert summary["wall_seconds"] > 0
    ids = {claim["id"] for claim in summary["claims"]}
    assert {
        "smoke-learning-latent2-tau1",
        "smoke-learning-latent2-tau0",
        "fig9-factor-latent2-tau1",
    } <= ids
    for claim in summary["claims"]:
        assert set(claim) == {"id", "description", "paper", "measured", "target", "pass"}
        assert claim["pass"], claim
    for figure in ("fig2_iterates", "fig8_convergence", "fig9_improvement", "fig10_surfaces"):
        assert (out / f"{figure}.png").stat().st_size > 10_000
    assert (out / "metrics.csv").read_text().startswith("job,update,train_cost,val_return,lr")
    assert json.loads((out / "config.json").read_text())["mode"] == "smoke"
    assert "smoke-learning-latent2-tau1" in done.stdout  # the claims table is printed

    # A second invocation without --resume refuses to overwrite the run ...
    refused = run_script("--mode", "smoke", "--out", str(out))
    assert refused.returncode != 0 and "--resume" in refused.stderr
    # ... and with --resume reuses every finished job (nothing is retrained).
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "jobs").iterdir()}
    resumed = run_script("--mode", "smoke", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "jobs").iterdir()} == stamps
    # Resuming with other settings is refused.
    other = run_script("--mode", "smoke", "--out", str(out), "--resume", "--updates", "7")
    assert other.returncode != 0 and "other settings" in other.stderr


@pytest.mark.spec("CTL-10", "VAL-2")
def test_interrupted_job_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    job = cp.Job(
        latent_dim=2,
        tau=1.0,
        seed=0,
        updates=12,
        batch_states=2,
        validate_every=4,
        validation_states=8,
    )
    whole = cp.EXPERIMENT.run_job(job, JobContext(tmp_path / "whole"))
    interrupted = JobContext(tmp_path / "interrupted", stop_after=6)
    assert cp.EXPERIMENT.run_job(job, interrupted) is None  # "killed" after update 6
    assert interrupted.checkpoint_path(job.name).exists()
    resumed = cp.EXPERIMENT.run_job(job, JobContext(tmp_path / "interrupted"))  # from update 4
    assert whole is not None and resumed is not None
    for key in ("rows", "best_val_return", "return_validation", "return_held_out"):
        assert json.dumps(resumed.result[key]) == json.dumps(whole.result[key])  # NaN-aware
    model = cp.model_path(job)
    first, second = (torch.load(io.BytesIO(out.files[model])) for out in (whole, resumed))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_learning_gain_averages_the_second_half_of_training() -> None:
    def rows(returns: list[float]) -> list[dict[str, float]]:
        return [{"update": 5 * i, "val_return": r} for i, r in enumerate(returns)]

    # Validations after updates 0 (untrained), 5, ..., 40: the second half is 20..40.
    curve = [2.0, 4.0, 6.0, 5.0, 5.0, 3.0, 3.5, 4.5, 3.0]
    assert cp.learning_gain(rows(curve)) == pytest.approx((5 + 3 + 3.5 + 4.5 + 3) / 5 - 2)
    # A final dip below the start does not decide the sign; a curve that falls does.
    assert cp.learning_gain(rows([2.0, 4.0, 4.0, 4.0, 1.0])) > 0
    assert cp.learning_gain(rows([2.0, 1.0, 0.0, -1.0, -2.0])) == pytest.approx(-3.0)


@pytest.mark.spec("VAL-6")
def test_student_t_quantile_matches_scipy() -> None:
    from scipy import stats

    for dof in (1, 2, 4, 9, 30):
        for probability in (0.5, 0.9, 0.975, 0.995):
            expected = float(stats.t.ppf(probability, dof))
            assert cp.student_t_quantile(probability, dof) == pytest.approx(expected, abs=1e-7)
    for probability, dof in ((1.0, 4), (0.4, 4), (0.975, 0)):
        with pytest.raises(ValueError, match=r"probability|dof"):
            cp.student_t_quantile(probability, dof)


@pytest.mark.spec("VAL-6")
def test_mean_interval_is_the_student_t_interval() -> None:
    from scipy import stats

    values = [1.02, 1.10, 1.05, 0.98, 1.07]
    interval = cp.MeanInterval.of(values)
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=sum(values) / 5, scale=stats.sem(values)
    )
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=1e-9)
    assert interval.mean == pytest.approx(1.044) and interval.n == 5
    single = cp.MeanInterval.of([1.2])
    assert (single.low, single.high) == (-math.inf, math.inf)
    with pytest.raises(ValueError, match="at least one"):
        cp.MeanInterval.of([])


def test_bad_options_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["--updates", "0"],
        ["--taus", "-1"],
        ["--latent-dims", "0"],
        ["--seeds", "x"],
        ["--mode", "huge"],
        ["--device", "meta"],
        ["--grad-iters", "0"],
    ):
        with pytest.raises(SystemExit) as error:
            cp.main(args)
        assert error.value.code == 2 and "error" in capsys.readouterr().err, args


def test_grad_iters_ablation_reaches_the_solver_and_names_its_jobs() -> None:
    parser = harness.base_parser("cartpole_embedding", "")
    cp.EXPERIMENT.add_options(parser)
    config = cp.EXPERIMENT.configure(parser.parse_args(["--mode", "smoke", "--grad-iters", "1"]))
    (job,) = [job for job in cp.EXPERIMENT.jobs(config, "smoke") if job.tau == 1.0]
    assert job.grad_iters == 1 and job.name == "latent2_tau1_seed0_grad1"
    assert cp.DecoderTrainer(job).config.solver.grad_iters == 1
    default = cp.EXPERIMENT.configure(parser.parse_args(["--mode", "smoke"]))
    (paper,) = [job for job in cp.EXPERIMENT.jobs(default, "smoke") if job.tau == 1.0]
    assert paper.name == "latent2_tau1_seed0" and paper.grad_iters is None
    assert cp.DecoderTrainer(paper).config.solver.grad_iters is None


# -- executors (VAL-4): the same numbers wherever the jobs run ----------------------------------

DOOMED = "latent2_tau1_seed0"
"""The job whose worker dies after its first checkpoint (update 5), once."""

BRIEF = ["--mode", "smoke", "--updates", "10"]
"""The smoke settings cut to 10 updates: enough for a checkpoint, a death and a
resume, at a quarter of the smoke run's cost (its claims fail, the same way
under every executor)."""


@dataclass(frozen=True)
class BriefRun:
    out: Path
    code: int


@pytest.fixture(scope="module")
def brief(tmp_path_factory: pytest.TempPathFactory) -> BriefRun:
    """The ``BRIEF`` run with the jobs in the driver's process, nobody dying."""
    out = tmp_path_factory.mktemp("cartpole") / "brief"
    return BriefRun(out, harness.main(cp.EXPERIMENT, [*BRIEF, "--out", str(out)]))


@dataclass(frozen=True)
class DyingContext(JobContext):
    """A context whose process exits, once, right after the first checkpoint of ``DOOMED``."""

    def save_checkpoint(self, job: str, state: Mapping[str, Any]) -> None:
        super().save_checkpoint(job, state)
        marker = self.root / f"died-{job}"
        if job == DOOMED and not marker.exists():
            marker.touch()
            os._exit(1)


class DiesOnce(cp.CartpoleEmbedding):
    """The cartpole experiment, with the worker of ``DOOMED`` killed once."""

    def run_job(self, job: cp.Job, ctx: JobContext) -> JobOutput | None:
        dying = DyingContext(ctx.root, ctx.stop_after, ctx.position, ctx.on_checkpoint)
        return super().run_job(job, dying)


def outcome(root: Path) -> dict[str, Any]:
    """The numbers of a run: its jobs' results (less their timing), models and claims."""
    jobs = {}
    for path in sorted((root / "jobs").glob("*.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        result.pop("train_seconds")
        jobs[path.stem] = json.dumps(result)  # NaN-aware comparison
    models = {path.name: path.read_bytes() for path in sorted((root / "models").glob("*.pt"))}
    claims = json.loads((root / "summary.json").read_text(encoding="utf-8"))["claims"]
    return {"jobs": jobs, "models": models, "claims": claims}


@pytest.mark.spec("VAL-4")
def test_a_dead_pool_worker_is_replaced_and_its_job_resumes(
    brief: BriefRun, tmp_path: Path
) -> None:
    code = harness.main(DiesOnce(), [*BRIEF, "--jobs", "2", "--out", str(tmp_path)])
    assert code == brief.code
    assert (tmp_path / f"died-{DOOMED}").exists()  # the worker did die ...
    assert "a worker died" in (tmp_path / "progress.log").read_text(encoding="utf-8")
    assert outcome(tmp_path) == outcome(brief.out)  # ... and its job resumed exactly


@pytest.mark.spec("VAL-4")
def test_ray_tasks_equal_the_in_process_run(brief: BriefRun, tmp_path: Path) -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_temp_dir())
    try:
        argv = [*BRIEF, "--executor", "ray", "--out", str(tmp_path)]
        code = harness.main(DiesOnce(), argv)
    finally:
        ray.shutdown()
    assert code == brief.code
    assert (tmp_path / f"died-{DOOMED}").exists()  # Ray restarted the task
    assert outcome(tmp_path) == outcome(brief.out)


@pytest.mark.spec("VAL-4")
def test_local_ray_sessions_live_outside_the_virtual_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # nox points TMPDIR into the session's virtualenv, where Ray's workers refuse to start.
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "venv" / "tmp"))
    assert ray_temp_dir() == "/tmp/ray"
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "elsewhere"))
    assert ray_temp_dir() == str(tmp_path / "elsewhere" / "ray")
