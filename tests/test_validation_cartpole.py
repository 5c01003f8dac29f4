"""The cartpole reproduction's smoke mode, end to end (validation contract, CTL-10)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from validation import cartpole_embedding as cp
from validation.harness import RunDirectory

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


@pytest.mark.spec("CTL-10")
def test_smoke_mode_learns_and_keeps_the_contract(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run_script("--mode", "smoke", "--out", str(out))
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


@pytest.mark.spec("CTL-10")
def test_interrupted_job_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    def job(root: Path) -> cp.Job:
        RunDirectory(root, cp.NAME, "smoke", {"test": True})
        (root / "models").mkdir()
        return cp.Job(
            str(root),
            latent_dim=2,
            tau=1.0,
            seed=0,
            updates=12,
            batch_states=2,
            validate_every=4,
            validation_states=8,
        )

    whole = cp.train(job(tmp_path / "whole"))
    interrupted = job(tmp_path / "interrupted")
    assert cp.train(interrupted, stop_after=6) is None  # "killed" after update 6
    assert (tmp_path / "interrupted" / "checkpoints" / f"{interrupted.name}.pt").exists()
    resumed = cp.train(interrupted)  # restarts from the checkpoint at update 4
    assert whole is not None and resumed is not None
    assert json.dumps(resumed["rows"]) == json.dumps(whole["rows"])  # NaN-aware equality
    assert resumed["best_val_return"] == whole["best_val_return"]
    models = [
        root / "models" / f"{interrupted.name}.pt"
        for root in (tmp_path / "whole", tmp_path / "interrupted")
    ]
    first, second = (torch.load(path, weights_only=True) for path in models)
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_bad_options_are_rejected() -> None:
    for args in (
        ["--updates", "0"],
        ["--taus", "-1"],
        ["--latent-dims", "0"],
        ["--seeds", "x"],
        ["--mode", "huge"],
    ):
        done = run_script(*args)
        assert done.returncode == 2 and "error" in done.stderr, args
