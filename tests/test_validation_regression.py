"""validation/regression.py keeps the validation contract and resumes exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from validation import regression
from validation.harness import RunDirectory

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("fig5_left_training", "fig5_right_ablation", "fig1_energy_surfaces", "fig6_predictions")
CLAIM_KEYS = {"id", "description", "paper", "measured", "target", "pass"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke run through the command line, as CI runs it."""
    out = tmp_path_factory.mktemp("regression") / "smoke"
    done = subprocess.run(
        [sys.executable, "-m", "validation.regression", "--mode", "smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_smoke_summary_has_the_contract_structure(smoke_run: Path) -> None:
    summary = json.loads((smoke_run / "summary.json").read_text(encoding="utf-8"))
    assert summary["name"] == "regression" and summary["mode"] == "smoke"
    assert summary["wall_seconds"] > 0
    assert summary["claims"]
    for claim in summary["claims"]:
        assert set(claim) == CLAIM_KEYS
        assert isinstance(claim["pass"], bool)
    speed = summary["speed_ms"]
    for key in ("gd_update_ms", "dcem_update_ms", "dcem_energy_ms", "dcem_topk_ms"):
        assert speed[key] > 0


def test_smoke_learns(smoke_run: Path) -> None:
    summary = json.loads((smoke_run / "summary.json").read_text(encoding="utf-8"))
    claims = {claim["id"]: claim for claim in summary["claims"]}
    for claim_id in ("smoke-gd-learns", "smoke-dcem-learns", "smoke-finite"):
        assert claims[claim_id]["pass"], claims[claim_id]


def test_smoke_writes_figures_and_tables(smoke_run: Path) -> None:
    for name in FIGURES:
        assert (smoke_run / f"{name}.png").stat().st_size > 1000
    header, *rows = (smoke_run / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert header == "step,method,seed,mse,lr"
    assert {row.split(",")[1] for row in rows} == {"gd", "dcem"}
    assert (smoke_run / "ablation.csv").exists()
    config = json.loads((smoke_run / "config.json").read_text(encoding="utf-8"))
    assert config["config"]["settings"]["n_sample"] == regression.N_SAMPLE


def test_resume_does_not_recompute_finished_jobs(smoke_run: Path) -> None:
    jobs = sorted((smoke_run / "jobs").glob("*.json"))
    assert jobs and not list((smoke_run / "checkpoints").glob("*.pt"))
    before = {path: path.stat().st_mtime_ns for path in jobs}
    finished = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in jobs}

    def refuse(job: regression.TrainJob) -> None:
        raise AssertionError(f"{job.name} was trained again")

    original = regression.new_state
    regression.new_state = refuse  # type: ignore[assignment]
    try:
        outcome = [regression.train(job) for job in _jobs(smoke_run)]
    finally:
        regression.new_state = original
    assert {job.name: result for job, result in zip(_jobs(smoke_run), outcome, strict=True)} == (
        finished
    )
    assert {path: path.stat().st_mtime_ns for path in jobs} == before


def _jobs(root: Path) -> list[regression.TrainJob]:
    config = json.loads((root / "config.json").read_text(encoding="utf-8"))["config"]
    run = RunDirectory(root, "regression", "smoke", config, resume=True)
    return [
        regression.TrainJob(
            run, method, (seed,), config["updates"], config["checkpoint_every"], "cpu"
        )
        for method in regression.METHODS
        for seed in config["seeds"]
    ]


def test_cli_rejects_bad_input() -> None:
    for argv in (["--jobs", "0"], ["--updates", "0"], ["--mode", "huge"], ["--seeds", "x"]):
        with pytest.raises(SystemExit) as error:
            regression.parse(argv)
        assert error.value.code == 2


@pytest.mark.parametrize("method", regression.METHODS)
def test_killed_run_resumes_to_the_same_result(
    method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped after 31 of 60 updates (mid-point, after scheduler steps) and
    resumed == never stopped, for two seeds side by side."""
    torch.set_num_threads(1)
    monkeypatch.setattr(regression, "SCHEDULE_EVERY", 20)
    monkeypatch.setattr(regression, "N_POINTS", 20)  # cheaper evaluations
    config = {"test": method}

    def run(root: Path, stop_after: int | None, resume: bool) -> dict[str, Any] | None:
        directory = RunDirectory(root, "regression", "smoke", config, resume=resume)
        job = regression.TrainJob(
            directory, method, (0, 1), 60, 20, "cpu", stop_after, ablation_steps=(0, 3)
        )
        return regression.train(job)

    whole = run(tmp_path / "whole", None, False)
    assert run(tmp_path / "killed", 31, False) is None
    assert (tmp_path / "killed" / "checkpoints" / f"{method}-seed0-1.pt").exists()
    resumed = run(tmp_path / "killed", None, True)
    assert whole is not None and resumed is not None
    assert len(whole["runs"][0]["curve"]) == 4
    for a, b in zip(whole["runs"], resumed["runs"], strict=True):
        assert a["curve"] == b["curve"]
        assert a["ablation"] == b["ablation"]
        assert a["predictions"] == b["predictions"]
