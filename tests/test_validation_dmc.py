"""Smoke mode of ``validation.dmc``: all three phases end to end, and exact resume.

Runs ``python -m validation.dmc --mode smoke`` (tiny model, 1 s episodes of
cheetah.run) twice: once straight through; once stopped after a few
episodes of phase 1, continued with ``--resume`` for a few more, exported
with ``python -m validation.dmc.checkpoint_tool export`` and finished with
``--resume-from`` in a new directory (as on a fresh clone). Checks the
summary, finite losses, a falling model loss, and that the interrupted run
ends in exactly the same state (models, optimizers, replay buffer,
generators, metrics) as the uninterrupted one. States exported before dmc
ran on the experiment contract (``tests/data/dmc_legacy``, written by the
code of commit e718ed5) and the committed states of the ``short`` runs are
upgraded on resume without a bit changed.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import re
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

import impl.cem
from impl.options import CEMOptions

pytest.importorskip("dm_control")

from validation import harness
from validation.dmc import checkpoint_tool, diagnostics, model_gap, report, speed
from validation.dmc import ppo as ppo_module
from validation.dmc.agent import Episode, latent_planning_cost, planning_cost
from validation.dmc.buffer import EpisodeBuffer
from validation.dmc.config import DMCConfig, config_for
from validation.dmc.experiment import EXPERIMENT, apply_overrides, main
from validation.dmc.ppo import LOG_RATIO_LIMIT, ppo_update, tuned_parameters
from validation.dmc.report import RATIO_CLAIMS, ratio_interval
from validation.dmc.rssm import RSSM, Belief
from validation.dmc.state import compact, expand, export_run, import_state, upgrade_legacy
from validation.dmc.train import Session, warmed_up_lr
from validation.harness import STOPPED, RunDirectory

JOB = "cheetah.run-seed0"
"""The one job of a smoke run of cheetah.run (seed 0)."""

LEGACY = Path(__file__).parent / "data" / "dmc_legacy"
"""Smoke states exported by the code before the contract (commit e718ed5): in
phase 1, between phases 1 and 2, in phase 2."""

TIMING_KEYS = {"plan_ms"}
"""Metric columns that measure wall time and so differ between runs."""

EXPECTED_CLAIMS = {
    "phase1_full_cem_reward",
    "phase1_model_loss_ratio",
    "phase2_latent_dcem_reward",
    "phase2_latent_over_full",
    "trajectories_ratio",
    "phase2_latent_over_paper_cem",
    "planning_speedup",
    "phase3_ppo_change",
}


def _smoke(out: Path, *extra: str) -> int:
    return main(
        ["--mode", "smoke", "--task", "cheetah.run", "--out", str(out), "--threads", "1", *extra]
    )


def _equal(a: Any, b: Any, where: str = "", timing: bool = False) -> None:
    """``a == b`` everywhere (tensors bit for bit), wall times too if ``timing``."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape, where
        assert torch.equal(a, b), f"differs at {where}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            if not timing and key in {*TIMING_KEYS, "phase_seconds", "train_seconds"}:
                continue
            _equal(a[key], b[key], f"{where}.{key}", timing)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _equal(x, y, f"{where}[{i}]", timing)
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(straight, resumed)``: the uninterrupted run, and the run interrupted
    twice in phase 1 (``--resume``, then export and ``--resume-from``)."""
    root = tmp_path_factory.mktemp("dmc")
    straight, first, resumed = root / "straight", root / "first", root / "resumed"
    assert _smoke(straight) == 0
    assert _smoke(first, "--stop-after-episodes", "3") == STOPPED
    assert not (first / "summary.json").exists()
    assert (first / "checkpoints" / f"{JOB}.pt").exists()
    assert _smoke(first, "--resume", "--stop-after-episodes", "4") == STOPPED
    state = root / "state"
    assert checkpoint_tool.main(["export", "--run", str(first), "--to", str(state)]) == 0
    assert sorted(p.name for p in (state / "checkpoints").iterdir()) == [f"{JOB}.pt"]
    assert _smoke(resumed, "--resume-from", str(state)) == 0
    return straight, resumed


def test_summary_structure(runs: tuple[Path, Path]) -> None:
    straight, _ = runs
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["mode"] == "smoke"
    ids = {claim["id"] for claim in summary["claims"]}
    assert ids == EXPECTED_CLAIMS
    for claim in summary["claims"]:
        assert set(claim) == {"id", "description", "paper", "measured", "target", "pass"}
        assert claim["paper"]
    for name in (
        "config.json",
        "metrics.csv",
        "eval.csv",
        "phases.csv",
        "speed.csv",
        "learning_curves.png",
        "eval_boxplot.png",
        "diagnostics.png",
    ):
        assert (straight / name).exists(), name
    for phase in (1, 2, 3):
        assert (straight / "checkpoints" / f"{JOB}.phase{phase}_final.pt").exists()


def test_losses_finite_and_model_loss_falls(runs: tuple[Path, Path]) -> None:
    straight, _ = runs
    with (straight / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {row["phase"] for row in rows} == {"1", "2", "3"}
    loss_keys = (
        "model_loss",
        "obs_loss",
        "reward_loss",
        "kl",
        "decoder_cost",
        "policy_loss",
        "value_loss",
        "reward",
    )
    for row in rows:
        for key in loss_keys:
            if row.get(key):
                assert math.isfinite(float(row[key])), (key, row)
    assert any(row.get("decoder_cost") for row in rows), "phase 2 trained the decoder"
    assert any(row.get("policy_loss") for row in rows), "phase 3 ran PPO updates"
    summary = json.loads((straight / "summary.json").read_text())
    claim = next(c for c in summary["claims"] if c["id"] == "phase1_model_loss_ratio")
    assert claim["pass"] and claim["measured"] < 1.0


@pytest.mark.spec("VAL-9")
def test_resume_is_exact(runs: tuple[Path, Path]) -> None:
    straight, resumed = runs
    for phase in (1, 2, 3):
        final = f"{JOB}.phase{phase}_final.pt"
        a = torch.load(straight / "checkpoints" / final, weights_only=True)
        b = torch.load(resumed / "checkpoints" / final, weights_only=True)
        _equal(a, b, f"phase{phase}")
    ev_a = (straight / "eval.csv").read_text()
    ev_b = (resumed / "eval.csv").read_text()
    assert ev_a == ev_b


@pytest.mark.spec("VAL-2")
def test_stops_in_final_evaluations_and_ppo_resume_exactly(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    # The one loop (training.run_units) stopped by the session's budget in
    # phase 2's final evaluations (after 24 episodes: 21 of phase 1, then 2
    # training and 1 final evaluation episodes of phase 2) and in phase 3's PPO
    # episodes (3 more), then resumed: the same states, evaluations and log lines.
    straight, _ = runs
    out = tmp_path / "stopped"

    def session() -> dict[str, Any]:
        saved = torch.load(out / "checkpoints" / f"{JOB}.pt", weights_only=True)
        return dict(saved["session"])

    assert _smoke(out, "--stop-after-episodes", "24") == STOPPED
    counters = session()["counters"]
    assert counters["phase"] == 2 and {k: len(v) for k, v in counters["evals"].items()} == {
        "full_cem": 1
    }
    assert _smoke(out, "--resume", "--stop-after-episodes", "3") == STOPPED
    assert session()["counters"]["phase"] == 3 and len(session()["rollout"]) == 1
    assert _smoke(out, "--resume") == 0
    for phase in (1, 2, 3):
        final = f"{JOB}.phase{phase}_final.pt"
        a = torch.load(straight / "checkpoints" / final, weights_only=True)
        _equal(a, torch.load(out / "checkpoints" / final, weights_only=True), f"phase{phase}")
    assert (out / "eval.csv").read_text() == (straight / "eval.csv").read_text()

    def logged(run: Path) -> list[str]:
        """``progress.log`` less its time stamps and wall seconds."""
        lines = (run / "progress.log").read_text().splitlines()
        return [re.sub(r"\d+ s\)", "s)", line.split(" ", 1)[1]) for line in lines]

    assert logged(out) == logged(straight)


def test_progress_log_has_every_episode(runs: tuple[Path, Path]) -> None:
    # progress.log: one line per metrics row and per final evaluation, kept
    # across --resume (the resumed run logs the same episodes, in two sessions).
    straight, resumed = runs
    with (straight / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    with (straight / "eval.csv").open() as f:
        finals = list(csv.DictReader(f))
    for run in (straight, resumed):
        lines = (run / "progress.log").read_text().splitlines()
        episodes = [line for line in lines if " final eval " not in line]
        assert len(episodes) == len(rows), run
        assert len(lines) - len(episodes) == len(finals), run
        for line, row in zip(episodes, rows, strict=True):
            assert f"phase {row['phase']} {row['kind']} episode {row['episode']} " in line
            assert f"reward={float(row['reward']):.3g}" in line


def _legacy_files(state: Path) -> dict[str, Any]:
    """The files of a state in the layout before the contract, loaded."""
    files: dict[str, Any] = {}
    for path in sorted((state / "checkpoints").glob("*.pt")):
        files[path.name] = torch.load(path, map_location="cpu", weights_only=True)
    for path in sorted((state / "jobs").glob("phase*.json")):
        files[path.name] = json.loads(path.read_text(encoding="utf-8"))
    return files


@pytest.mark.spec("VAL-9")
@pytest.mark.parametrize(
    "state",
    [
        LEGACY / "mid_phase1",
        LEGACY / "phase1_done",
        LEGACY / "mid_phase2",
    ],
    ids=lambda path: path.name,
)
def test_a_state_of_the_layout_before_the_contract_upgrades_without_a_bit_changed(
    state: Path, tmp_path: Path
) -> None:
    # The smoke states of commit e718ed5: the phase in progress becomes the job
    # checkpoint's session as saved, the finished phases its results, the final
    # states keep their bytes; the settings are the run's one job; a Session of
    # the new code loads it.
    run = tmp_path / "run"
    shutil.copytree(state, run)
    before = _legacy_files(run)
    finals = {n: (run / "checkpoints" / n).read_bytes() for n in before if "_final" in n}
    old = json.loads((run / "config.json").read_text(encoding="utf-8"))
    job = f"{old['config']['task']}-seed{old['config']['seed']}"
    config = {"runs": [], "phases": [1, 2, 3], "from_checkpoint": None, "device": "cpu"}
    assert upgrade_legacy(run, {"name": "dmc", "mode": "smoke", "config": config})
    record = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert record == {
        "name": "dmc",
        "mode": old["mode"],
        "config": {**config, "runs": [old["config"]]},
    }
    saved = torch.load(run / "checkpoints" / f"{job}.pt", weights_only=True)
    results = [before[n] for n in ("phase1.json", "phase2.json") if n in before]
    _equal(saved["results"], results, "results", timing=True)
    current = [n for n in before if n in ("phase1.pt", "phase2.pt", "phase3.pt")]
    if current:
        _equal(saved["session"], before[current[0]], "session", timing=True)
    else:
        assert saved["session"] is None and results  # between phases: the next starts from a final
    for name, data in finals.items():
        assert (run / "checkpoints" / f"{job}.{name}").read_bytes() == data
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        [f"{job}.pt", *(f"{job}.{name}" for name in finals)]
    )
    assert not list((run / "jobs").glob("*"))
    assert not upgrade_legacy(run, record)  # done once
    # Exported again (by this code): the job checkpoint as is, and the last final
    # state byte for byte where the next phase starts from it.
    exported = tmp_path / "exported"
    export_run(run, exported)
    checkpoint = f"{job}.pt"
    assert (exported / "checkpoints" / checkpoint).read_bytes() == (
        run / "checkpoints" / checkpoint
    ).read_bytes()
    for name, data in finals.items():
        if not current and not name.endswith(".compact.pt"):
            assert (exported / "checkpoints" / f"{job}.{name}").read_bytes() == data
    # The mode's settings now: those recorded, plus options added to the code since.
    settings = config_for(old["config"]["task"], old["mode"])
    now = {**config, "runs": [settings.as_dict()]}
    RunDirectory(run, "dmc", old["mode"], now, resume=True)  # the driver's check passes
    if current:
        session = Session(settings, torch.device("cpu"))
        session.load_state_dict(saved["session"])
        _equal(session.state_dict(), before[current[0]], "loaded", timing=True)


@pytest.mark.spec("VAL-11")
@pytest.mark.parametrize("task", ["cheetah.run", "walker.walk"])
def test_the_committed_pretrained_phase1_models_open(task: str) -> None:
    # The README's pretrained phase-1 models (the first short runs' phase-1 ends,
    # compact) open in a Session of this code at the end of phase 1.
    path = Path(f"validation/results/dmc/{task}/short/pretrained")
    compact = torch.load(path / f"{task}-seed0.phase1_final.compact.pt", weights_only=True)
    session = Session(config_for(task, "short"), torch.device("cpu"))
    session.load_compact(compact)
    assert session.counters.env_steps == config_for(task, "short").phase1_env_steps


@pytest.mark.spec("VAL-9")
@pytest.mark.parametrize("task", ["cheetah.run", "walker.walk"])
def test_the_committed_short_states_open_where_they_stopped(task: str, tmp_path: Path) -> None:
    # The documented command's first steps on the committed state (whichever
    # layout it was exported in): import, upgrade, the driver's settings check
    # (the state was started with this code's `short` settings, so the plain
    # command resumes it); then a Session of this code holds the saved state bit
    # for bit. A finished run's state holds its result and compact phase
    # boundaries (VAL-11), each of which opens at the env steps its phase ended with.
    state, out = Path(f"validation/results/dmc/{task}/short/state"), tmp_path / "out"
    saved = {p.name: torch.load(p, weights_only=True) for p in (state / "checkpoints").glob("*.pt")}
    args = _parsed(["--mode", "short", "--task", task, "--resume-from", str(state)])
    assert EXPERIMENT.prepare_run(args, out)
    config = EXPERIMENT.configure(args)
    run = RunDirectory(out, "dmc", "short", dataclasses.asdict(config), resume=True)
    job = EXPERIMENT.jobs(config, "short")[0]
    finished = run.load_result(job.name)
    if finished is not None:
        phases = finished["phases"]
        assert [result["phase"] for result in phases] == [1, 2, 3]
        names = [f"{job.name}.phase{result['phase']}_final.compact.pt" for result in phases]
        assert sorted(saved) == names
        for name, result in zip(names, phases, strict=True):
            session = Session(job.config, torch.device("cpu"))
            session.load_compact(saved[name])
            assert session.counters.env_steps == result["total_env_steps"], name
        return
    checkpoint = torch.load(out / "checkpoints" / f"{job.name}.pt", weights_only=True)
    if checkpoint["session"] is None:  # between phases: the next starts from the last final
        last = len(checkpoint["results"])
        final = out / "checkpoints" / f"{job.name}.phase{last}_final.pt"
        current = torch.load(final, weights_only=True)
    else:
        current = checkpoint["session"]
    _equal(current, _resume_point(saved), "saved", timing=True)
    session = Session(job.config, torch.device("cpu"))
    session.load_state_dict(current)
    _equal(session.state_dict(), current, "loaded", timing=True)


def _resume_point(saved: dict[str, Any]) -> Any:
    """What a resume continues from, among a state's checkpoint files (either
    layout): the phase in progress, else the last (non-compact) final state."""
    for name, data in saved.items():
        if data.get("session") is not None or re.fullmatch(r"phase\d\.pt", name):
            return data.get("session", data)
    return next(data for name, data in saved.items() if name.endswith("_final.pt"))


@pytest.mark.spec("VAL-9")
@pytest.mark.parametrize("state", ["phase1_done", "mid_phase2"])
def test_a_state_of_the_layout_before_the_contract_resumes_to_the_end(
    state: str, tmp_path: Path
) -> None:
    # --resume-from on a smoke state of commit e718ed5: the run continues from
    # the saved episode (its metrics rows and log lines come first, unchanged)
    # and finishes with every claim.
    source = LEGACY / state
    legacy = torch.load(next((source / "checkpoints").glob("phase*.pt")), weights_only=True)
    out = tmp_path / "out"
    assert _smoke(out, "--resume-from", str(source)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {claim["id"] for claim in summary["claims"]} == EXPECTED_CLAIMS
    log = (out / "progress.log").read_text()
    assert log.startswith((source / "progress.log").read_text())
    final = torch.load(out / "checkpoints" / f"{JOB}.phase3_final.pt", weights_only=True)
    rows = legacy["metrics"]
    _equal(final["metrics"][: len(rows)], rows, "metrics", timing=True)
    assert final["counters"]["episodes"] > legacy["counters"]["episodes"]


@pytest.mark.spec("VAL-9")
def test_one_job_per_task_and_seed_with_its_own_files_and_claims(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    config = EXPERIMENT.configure(
        _parsed(["--mode", "smoke", "--seeds", "0,3", "--task", "cheetah.run", "walker.walk"])
    )
    jobs = EXPERIMENT.jobs(config, "smoke")
    names = ["cheetah.run-seed0", "cheetah.run-seed3", "walker.walk-seed0", "walker.walk-seed3"]
    assert [job.name for job in jobs] == names
    assert [(job.config.task, job.config.seed) for job in jobs] == [
        (name.split("-seed")[0], int(name.split("-seed")[1])) for name in names
    ]
    assert all(job.phases == (1, 2, 3) and job.from_checkpoint is None for job in jobs)
    # Two jobs' results (here the smoke job's, twice): files and claims named per job.
    straight, _ = runs
    result = json.loads((straight / "jobs" / f"{JOB}.json").read_text())
    two = dataclasses.replace(config, runs=config.runs[:2])
    run = RunDirectory(tmp_path, "dmc", "smoke", {})
    EXPERIMENT.figures(two, [result, result], run)
    for name in names[:2]:
        for output in ("metrics.csv", "eval.csv", "speed.csv", "learning_curves.png"):
            assert (tmp_path / f"{name}-{output}").exists(), (name, output)
    ids = [claim.id for claim in EXPERIMENT.claims(two, [result, result], run).claims]
    assert ids == [f"{name}-{claim}" for name in names[:2] for claim in _claim_order(straight)]


def _parsed(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed with the shared options and the experiment's own."""
    parser = harness.base_parser("dmc", "")
    EXPERIMENT.add_options(parser)
    return parser.parse_args(argv)


def _claim_order(run: Path) -> list[str]:
    return [c["id"] for c in json.loads((run / "summary.json").read_text())["claims"]]


def test_cli_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--task", "cheetah.jump", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--mode", "smoke", "--out", str(tmp_path), "--set", "model.nope=3"])
    with pytest.raises(SystemExit):
        main(["--mode", "smoke", "--out", str(tmp_path), "--phase", "2"])  # no phase-1 state
    with pytest.raises(SystemExit):  # the same job twice
        main(["--mode", "smoke", "--out", str(tmp_path), "--seeds", "1,1"])
    assert not (tmp_path / "config.json").exists()  # usage errors leave --out alone


def test_overrides() -> None:
    config = apply_overrides(
        config_for("walker.walk", "short"),
        [
            "model.hidden=64",
            "cem.solver.n_iter=3",
            "ppo.learn_std=true",
            "time_limit=2.5",
            "latent.solver.grad_iters=2",
            "latent.solver.tau=none",
        ],
    )
    assert config.model.hidden == 64 and config.cem.solver.n_iter == 3
    assert config.latent.solver.grad_iters == 2 and config.latent.solver.tau is None
    assert config.ppo.learn_std and config.time_limit == 2.5
    assert config_for("cheetah.run", "short", env_steps=1234).phase1_env_steps == 1234


def test_speed_script_times_a_saved_model(runs: tuple[Path, Path], tmp_path: Path) -> None:
    straight, _ = runs
    checkpoint = straight / "checkpoints" / f"{JOB}.phase2_final.pt"
    out = tmp_path / "speed.json"
    threads = torch.get_num_threads()
    try:
        argv = ["--checkpoint", str(checkpoint), "--mode", "smoke", "--repeats", "2"]
        assert speed.main([*argv, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text(encoding="utf-8"))
    assert len(result["repeats_ms"]) == 2 and len(result["paper_cem_over_latent_dcem"]) == 2
    for repeat in result["repeats_ms"]:
        assert set(repeat) == {"full_cem_ms", "full_cem_paper_ms", "latent_dcem_ms"}
        assert all(math.isfinite(v) and v > 0 for v in repeat.values())
    assert result["median_ratio"] > 0
    with pytest.raises(SystemExit):
        speed.main(["--checkpoint", str(tmp_path / "missing.pt")])


def test_model_gap_script_on_a_saved_model(runs: tuple[Path, Path], tmp_path: Path) -> None:
    straight, _ = runs
    checkpoint = straight / "checkpoints" / f"{JOB}.phase2_final.pt"
    out = tmp_path / "gap.json"
    threads = torch.get_num_threads()
    try:
        argv = ["--checkpoint", str(checkpoint), "--mode", "smoke", "--episodes", "2"]
        argv += ["--decoder-updates", "2", "--controllers", "full_cem", "latent_dcem"]
        assert model_gap.main([*argv, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(result["controllers"]) == {"full_cem", "latent_dcem"}
    assert len(result["decoder_cost_first_last"]) == 2
    for summary in result["controllers"].values():
        assert len(summary["episodes"]) == 2
        for row in summary["episodes"]:
            assert all(math.isfinite(v) for v in row.values())
            assert 0 <= row["mean_abs_action"] <= 1  # cheetah's actions lie in [-1, 1]
    with pytest.raises(SystemExit):
        model_gap.main(["--checkpoint", str(checkpoint), "--episodes", "0"])
    with pytest.raises(SystemExit):
        model_gap.main(["--checkpoint", str(tmp_path / "missing.pt")])


def test_model_gap_trains_the_model_in_stages(runs: tuple[Path, Path], tmp_path: Path) -> None:
    # --model-updates: stage 0 plays the checkpoint's model exactly as the plain
    # script does (same fresh session, same episodes); later stages train the
    # model on the checkpoint's buffer first and report the mean losses.
    straight, _ = runs
    checkpoint = straight / "checkpoints" / f"{JOB}.phase1_final.pt"
    base = ["--checkpoint", str(checkpoint), "--mode", "smoke", "--controllers", "full_cem"]
    plain, staged = tmp_path / "plain.json", tmp_path / "staged.json"
    threads = torch.get_num_threads()
    try:
        assert model_gap.main([*base, "--out", str(plain)]) == 0
        argv = [*base, "--model-updates", "0", "3", "--out", str(staged)]
        assert model_gap.main(argv) == 0
        for bad in (["3", "2"], ["-1"], ["2", "2"], ["1", "--decoder-updates", "1"]):
            with pytest.raises(SystemExit):
                model_gap.main([*base, "--model-updates", *bad])
    finally:
        torch.set_num_threads(threads)
    expected = json.loads(plain.read_text(encoding="utf-8"))["controllers"]["full_cem"]
    stages = json.loads(staged.read_text(encoding="utf-8"))["stages"]
    assert [stage["model_updates"] for stage in stages] == [0, 3]
    first, second = (stage["controllers"]["full_cem"]["episodes"][0] for stage in stages)
    assert first["real"] == expected["episodes"][0]["real"]
    assert first["filtered"] == expected["episodes"][0]["filtered"]
    assert stages[0]["mean_losses"] == {}
    losses = stages[1]["mean_losses"]
    assert set(losses) == {"model_loss", "obs_loss", "reward_loss", "kl"}
    assert all(math.isfinite(v) for v in losses.values())
    assert second["filtered"] != first["filtered"]  # the model moved


def test_the_checkpoint_tools_open_a_committed_compact_boundary(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    # The compact phase-2 boundary (the form committed in the repository) loads
    # its fp16-rounded models and buffer; the tools then play it like a full state.
    straight, _ = runs
    full = harness.load_state(straight / "checkpoints" / f"{JOB}.phase2_final.pt")
    small = compact(full)
    path = tmp_path / f"{JOB}.phase2_final.compact.pt"
    torch.save(small, path)
    parser = checkpoint_tool.parser(None, "a checkpoint")
    args = parser.parse_args(["--checkpoint", str(path), "--mode", "smoke"])
    threads = torch.get_num_threads()
    try:
        session = checkpoint_tool.open_checkpoint(parser, args)
        expanded = expand(small)
        for name, tensor in session.model.state_dict().items():
            assert torch.equal(tensor, expanded["model"][name]), name
        for name, tensor in session.decoder.state_dict().items():
            assert torch.equal(tensor, expanded["decoder"][name]), name
        assert session.buffer.episodes == int(full["buffer"]["lengths"].numel())
        out = tmp_path / "gap.json"
        argv = ["--checkpoint", str(path), "--mode", "smoke", "--controllers", "latent_dcem"]
        assert model_gap.main([*argv, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    row = json.loads(out.read_text(encoding="utf-8"))["controllers"]["latent_dcem"]["episodes"][0]
    assert all(math.isfinite(v) for v in row.values())


def test_model_return_pairs_each_action_with_the_next_belief() -> None:
    # A reward head that reads the first deterministic unit: the model return
    # of beliefs h = 0, 1, …, L−1 is 1 + … + (L−1) (the first belief, before
    # any action, is not counted) plus the reward of the belief the filter
    # reaches after the last action.
    config = config_for("cheetah.run", "smoke")
    model = RSSM(4, 2, config.model)
    with torch.no_grad():
        for layer in model.reward_model:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        linears = [layer for layer in model.reward_model if isinstance(layer, torch.nn.Linear)]
        assert len(linears) == 3
        for layer in linears:  # ReLU(h_0) in hidden unit 0, passed on to the output
            layer.weight[0, 0] = 1.0
    length = 6
    h = torch.zeros(length, config.model.deter)
    h[:, 0] = torch.arange(length, dtype=torch.float32)
    s = torch.zeros(length, config.model.stoch)
    episode = Episode(
        observations=torch.zeros(length + 1, 4),
        actions=torch.zeros(length, 2),
        raw_actions=torch.zeros(length, 2),
        rewards=torch.zeros(length),
        beliefs=Belief(h, s),
        means=torch.zeros(length, 2),
        plan_seconds=0.0,
        planned=torch.zeros(length),
    )
    with torch.no_grad():
        last = model.observe(
            Belief(h[-1:], s[-1:]), episode.actions[-1:], episode.observations[-1:]
        )
        final = float(model.reward(last).sum())
    assert diagnostics.model_return(model, episode) == pytest.approx(sum(range(1, length)) + final)


@pytest.mark.spec("VAL-11")
def test_export_of_a_finished_run_is_compact_and_starts_phase_2(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    # Every phase is finished: no exact resume point is needed, each phase
    # boundary is exported in compact form (fp16 weights and observations),
    # and a compact phase-1 boundary starts a phase-2 run (the README's
    # "pretrained phase-1 model" for users).
    straight, _ = runs
    state = tmp_path / "state"
    assert checkpoint_tool.main(["export", "--run", str(straight), "--to", str(state)]) == 0
    names = sorted(p.name for p in (state / "checkpoints").iterdir())
    assert names == [f"{JOB}.phase{p}_final.compact.pt" for p in (1, 2, 3)]
    full = torch.load(straight / "checkpoints" / f"{JOB}.phase1_final.pt", weights_only=True)
    small = torch.load(state / "checkpoints" / f"{JOB}.phase1_final.compact.pt", weights_only=True)
    assert small["compact"] and small["buffer"]["observations"].dtype == torch.float16
    assert torch.equal(small["buffer"]["rewards"], full["buffer"]["rewards"])
    assert torch.equal(small["model"]["obs_scale"], full["model"]["obs_scale"])
    weight = "encoder.0.weight"
    assert torch.allclose(small["model"][weight].float(), full["model"][weight], rtol=1e-3)
    out = tmp_path / "phase2"
    source = str(state / "checkpoints" / f"{JOB}.phase1_final.compact.pt")
    argv = ["--phase", "2", "--from-checkpoint", source, "--stop-after-episodes", "1"]
    assert _smoke(out, *argv) == STOPPED
    resumed = torch.load(out / "checkpoints" / f"{JOB}.pt", weights_only=True)["session"]
    assert resumed["counters"]["phase"] == 2 and resumed["counters"]["phase_episodes"] == 1
    assert resumed["buffer"]["lengths"].shape[0] == full["buffer"]["lengths"].shape[0] + 1
    with pytest.raises(SystemExit):  # a state folder goes into an empty --out only
        _smoke(out, "--resume-from", str(state))


@pytest.mark.spec("VAL-11")
def test_a_compact_boundary_survives_resume_and_export(tmp_path: Path) -> None:
    # A run resumed from a committed state that holds a compact phase-1
    # boundary (and no full one) exports that boundary again, byte for byte;
    # a compact file whose full final state is in the run is made anew from it.
    state, run, again = tmp_path / "state", tmp_path / "run", tmp_path / "again"
    (state / "checkpoints").mkdir(parents=True)
    (state / "jobs").mkdir()
    (state / "config.json").write_text("{}", encoding="utf-8")
    torch.save({"results": [], "session": {"step": 1}}, state / "checkpoints" / f"{JOB}.pt")
    boundary = state / "checkpoints" / f"{JOB}.phase1_final.compact.pt"
    torch.save({"compact": True, "marker": torch.arange(3)}, boundary)
    import_state(state, run)
    assert (run / "checkpoints" / boundary.name).read_bytes() == boundary.read_bytes()
    written = {path.name for path in export_run(run, again)}
    assert {f"{JOB}.pt", boundary.name} <= written
    assert (again / "checkpoints" / boundary.name).read_bytes() == boundary.read_bytes()


# -- the settings of issue 13, piece by piece -----------------------------------


def test_warm_up_rises_linearly_to_the_learning_rate() -> None:
    lr = 1e-3
    assert warmed_up_lr(lr, 1000, 0) == pytest.approx(1e-6)
    assert warmed_up_lr(lr, 1000, 499) == pytest.approx(5e-4)
    assert warmed_up_lr(lr, 1000, 999) == lr
    assert warmed_up_lr(lr, 1000, 50_000) == lr
    assert warmed_up_lr(lr, 0, 0) == lr


def test_standardization_and_reward_scale_in_the_bound() -> None:
    base = config_for("cheetah.run", "smoke").model
    generator = torch.Generator().manual_seed(3)
    obs = 5 + 3 * torch.randn(4, 6, 5, generator=generator)
    obs[..., 0] = 2.0  # a constant dimension: its scale is the floor, not 0
    actions = torch.rand(4, 6, 2, generator=generator)
    rewards = torch.rand(4, 6, generator=generator)
    losses = []
    for scale in (1.0, 10.0):
        torch.manual_seed(0)
        model = RSSM(5, 2, dataclasses.replace(base, reward_scale=scale))
        model.set_normalization(obs.reshape(-1, 5))
        flat = model.standardize(obs).reshape(-1, 5)
        assert torch.allclose(flat[:, 1:].mean(0), torch.zeros(4), atol=1e-5)
        assert torch.allclose(flat[:, 1:].std(0), torch.ones(4), atol=1e-5)
        assert model.obs_scale[0] == base.obs_std_floor and torch.all(flat[:, 0] == 0)
        losses.append(model.loss(obs, actions, rewards, torch.Generator().manual_seed(1)))
    one, ten = losses
    assert torch.equal(one.reward, ten.reward) and torch.equal(one.observation, ten.observation)
    assert torch.allclose(ten.total - one.total, 9 * one.reward)
    assert torch.allclose(one.total, one.observation + one.reward + one.kl)


def _numbered_buffer() -> EpisodeBuffer:
    """Episodes of 3, 5 and 4 steps; observation ``o`` of episode ``e`` at step ``t``
    holds ``100 e + t``, its action ``100 e + t + 0.5``."""
    buffer = EpisodeBuffer(1, 1)
    for e, length in enumerate((3, 5, 4)):
        t = torch.arange(length + 1, dtype=torch.float32)
        buffer.add((100 * e + t).unsqueeze(1), (100 * e + t[:-1] + 0.5).unsqueeze(1), t[:-1])
    return buffer


def test_buffer_draws_steps_uniformly_and_returns_episode_prefixes() -> None:
    buffer = _numbered_buffer()
    generator = torch.Generator().manual_seed(0)
    episodes, steps = buffer.sample_steps(12_000, generator)
    lengths = buffer.lengths[episodes]
    assert bool((steps >= 0).all()) and bool((steps < lengths).all())
    counts = torch.bincount(episodes, minlength=3).double() / 12_000
    assert torch.allclose(
        counts, torch.tensor([3.0, 5.0, 4.0], dtype=torch.float64) / 12, atol=0.02
    )
    episodes, steps = torch.tensor([0, 1, 2, 1]), torch.tensor([2, 4, 0, 1])
    obs, actions = buffer.prefixes(episodes, steps)
    assert obs.shape == (4, 5, 1) and actions.shape == (4, 4, 1)
    for row, (e, t) in enumerate(zip(episodes.tolist(), steps.tolist(), strict=True)):
        expected = 100 * e + torch.arange(t + 1, dtype=torch.float32)
        assert torch.equal(obs[row, : t + 1, 0], expected)
        assert torch.equal(actions[row, :t, 0], expected[:-1] + 0.5)


def test_filtered_start_states_are_the_controllers_beliefs() -> None:
    # The decoder's initial states: a stored episode filtered from its start
    # with RSSM.observe, one step at a time, exactly as run_episode does.
    session = Session(config_for("cheetah.run", "smoke"), torch.device("cpu"))
    for _ in range(3):
        session.train_episode(1)
    generator_state = session.cpu_gen.get_state()
    beliefs = session.filtered_starts(5)
    session.cpu_gen.set_state(generator_state)
    episodes, steps = session.buffer.sample_steps(5, session.cpu_gen)
    offsets = torch.cumsum(session.buffer.lengths, 0) - session.buffer.lengths
    for row, (e, t) in enumerate(zip(episodes.tolist(), steps.tolist(), strict=True)):
        first = int(offsets[e]) + e  # observations: L + 1 per episode
        obs = session.buffer.observations[first : first + t + 1]
        actions = session.buffer.actions[int(offsets[e]) : int(offsets[e]) + t]
        with torch.no_grad():
            belief = session.model.observe(None, None, obs[:1])
            for j in range(1, t + 1):
                belief = session.model.observe(belief, actions[j - 1 : j], obs[j : j + 1])
        assert torch.allclose(beliefs.h[row], belief.h[0], atol=1e-5)
        assert torch.allclose(beliefs.s[row], belief.s[0], atol=1e-5)


def test_standardization_is_frozen_after_the_seed_episodes() -> None:
    config = config_for("cheetah.run", "smoke")
    session = Session(config, torch.device("cpu"))
    for _ in range(config.seed_episodes):
        session.train_episode(1)
    seeds = session.buffer.observations.clone()
    assert torch.allclose(session.model.obs_mean, seeds.mean(0))
    session.train_episode(1)
    assert torch.allclose(session.model.obs_mean, seeds.mean(0))
    assert session.counters.model_updates == config.model.updates_per_episode


def test_model_reinitialization_at_phase_2_keeps_buffer_and_standardization() -> None:
    config = config_for("cheetah.run", "smoke")
    config = dataclasses.replace(
        config, latent=dataclasses.replace(config.latent, reinit_model=True)
    )
    session = Session(config, torch.device("cpu"))
    for _ in range(config.seed_episodes + 1):
        session.train_episode(1)
    before = {k: v.clone() for k, v in session.model.state_dict().items()}
    steps = session.buffer.steps
    session.start_phase(2)
    after = session.model.state_dict()
    assert torch.equal(after["obs_mean"], before["obs_mean"])
    assert not torch.equal(after["encoder.0.weight"], before["encoder.0.weight"])
    assert session.buffer.steps == steps and session.counters.model_updates == 0
    assert not session.model_opt.state  # a fresh optimizer


def test_controllers_pass_their_solver_options_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import validation.dmc.agent as agent

    seen: list[CEMOptions] = []
    real = impl.cem.solve

    def recording(f: Any, mean: Any, std: Any, options: CEMOptions, **kwargs: Any) -> Any:
        seen.append(options)
        return real(f, mean, std, options, **kwargs)

    monkeypatch.setattr(agent, "solve", recording)
    config = apply_overrides(
        config_for("cheetah.run", "smoke"),
        [
            "cem.solver.smoothing=0.25",
            "cem.solver.elite_temperature=2.0",
            "cem.solver.output=best",
            "cem.solver.reuse_buffers=true",
            "latent.solver.std_min=0.01",
            "latent.solver.normalize=false",
            "latent.solver.grad_iters=1",
        ],
    )
    assert config.cem.solver.reuse_buffers and config.latent.solver.grad_iters == 1
    session = Session(config, torch.device("cpu"))
    belief = session.model.observe(None, None, torch.zeros(1, session.env.obs_dim))
    session.controller("full_cem").act(belief)
    session.controller("latent_dcem").act(belief)
    # The configured objects themselves: no option is dropped or rewritten on the way.
    assert len(seen) == 2
    assert seen[0] is config.cem.solver and seen[1] is config.latent.solver


def test_open_loop_error_matches_a_step_by_step_rollout() -> None:
    config = config_for("cheetah.run", "smoke")
    torch.manual_seed(0)
    model = RSSM(3, 2, config.model)
    generator = torch.Generator().manual_seed(0)
    length, max_k = 7, 4
    episode = Episode(
        observations=torch.randn(length + 1, 3, generator=generator),
        actions=torch.rand(length, 2, generator=generator),
        raw_actions=torch.zeros(length, 2),
        rewards=torch.rand(length, generator=generator),
        beliefs=Belief(
            torch.randn(length, config.model.deter, generator=generator),
            torch.randn(length, config.model.stoch, generator=generator),
        ),
        means=torch.zeros(length, 2),
        plan_seconds=0.0,
        planned=torch.zeros(length),
    )
    errors = diagnostics.open_loop_errors(model, episode, max_k)
    sums, counts = [0.0] * max_k, [0] * max_k
    with torch.no_grad():
        for t in range(length):
            state = Belief(episode.beliefs.h[t : t + 1], episode.beliefs.s[t : t + 1])
            for k in range(max_k):
                if t + k >= length:
                    break
                h = model.transition(state, episode.actions[t + k : t + k + 1])
                state = Belief(h, model.prior(h)[0])
                sums[k] += abs(float(model.reward(state)[0]) - float(episode.rewards[t + k]))
                counts[k] += 1
    expected = torch.tensor([s / c for s, c in zip(sums, counts, strict=True)])
    assert torch.allclose(errors, expected, atol=1e-5)
    row = diagnostics.held_out_diagnostics(model, episode, max_k)
    assert list(row) == [f"open_loop_err_{k}" for k in range(1, max_k + 1)]


def test_decoder_spread_is_zero_for_a_constant_decoder() -> None:
    config = config_for("cheetah.run", "smoke")
    session = Session(config, torch.device("cpu"))
    assert diagnostics.decoder_spread(session.decoder, 1.0) > 0
    with torch.no_grad():
        for layer in session.decoder.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
    assert diagnostics.decoder_spread(session.decoder, 1.0) == 0


def test_in_progress_report_rewrites_the_same_metrics(runs: tuple[Path, Path]) -> None:
    straight, _ = runs
    before = (straight / "metrics.csv").read_text()
    (straight / "diagnostics.png").unlink()
    assert report.main(["--run", str(straight)]) == 0
    assert (straight / "metrics.csv").read_text() == before
    assert (straight / "diagnostics.png").exists()
    header = before.splitlines()[0].split(",")
    for column in ("model_return", "planned_return", "mean_abs_action", "decoder_spread"):
        assert column in header
    assert [f"open_loop_err_{k}" for k in range(1, 13)] == [
        c for c in header if c.startswith("open_loop_err_")
    ]


# -- exploitation remedies (off by default; issue 13 item 4) --------------------


def _with(config: DMCConfig, **latent: Any) -> DMCConfig:
    return dataclasses.replace(config, latent=dataclasses.replace(config.latent, **latent))


def test_reward_ensemble_trains_every_head_and_plans_pessimistically() -> None:
    base = config_for("cheetah.run", "smoke")
    torch.manual_seed(0)
    model = RSSM(5, 2, dataclasses.replace(base.model, reward_heads=3))
    generator = torch.Generator().manual_seed(0)
    obs = torch.randn(2, 6, 5, generator=generator)
    actions = torch.rand(2, 6, 2, generator=generator)
    rewards = torch.rand(2, 6, generator=generator)
    losses = model.loss(obs, actions, rewards, torch.Generator().manual_seed(1))
    features = torch.cat((losses.states.h[:, 1:], losses.states.s[:, 1:]), -1)
    heads = [model.reward_model, *model.extra_reward_models]
    nll = [0.5 * ((h(features).squeeze(-1) - rewards[:, :-1]) ** 2).mean() for h in heads]
    assert torch.allclose(losses.reward, torch.stack(nll).mean())
    belief = Belief(torch.randn(4, base.model.deter), torch.randn(4, base.model.stoch))
    each = torch.stack([h(torch.cat((belief.h, belief.s), -1)).squeeze(-1) for h in heads])
    assert torch.allclose(model.reward(belief), each.mean(0))
    assert torch.allclose(
        model.pessimistic_reward(belief, 0.5), each.mean(0) - 0.5 * each.std(0), atol=1e-6
    )
    plans = torch.rand(4, 3, 5, 2) * 2 - 1
    optimistic = model.imagine_return(belief, plans)
    assert bool((model.imagine_return(belief, plans, 0.5) < optimistic).all())


def test_action_penalty_adds_the_mean_square_of_the_plan() -> None:
    config = _with(config_for("cheetah.run", "smoke"), action_penalty=0.3)
    torch.manual_seed(0)
    model = RSSM(5, 2, config.model)
    belief = Belief(torch.randn(2, config.model.deter), torch.randn(2, config.model.stoch))
    plans = torch.rand(2, 7, 4, 2) * 2 - 1
    penalized = latent_planning_cost(model, belief, config.latent)(plans)
    plain = planning_cost(model, belief)(plans)
    assert torch.allclose(penalized, plain + 0.3 * (plans**2).mean((-2, -1)))
    default = config_for("cheetah.run", "smoke").latent
    assert torch.equal(latent_planning_cost(model, belief, default)(plans), plain)


def test_phase_2_batch_share_draws_from_phase_2_episodes() -> None:
    config = _with(config_for("cheetah.run", "smoke"), phase2_batch_share=0.5)
    session = Session(config, torch.device("cpu"))
    for _ in range(config.seed_episodes + 1):
        session.train_episode(1)
    session.start_phase(2)
    session.train_episode(2)
    obs, _, _ = session._model_batch()
    recent = round(0.5 * config.model.batch)
    lengths = session.buffer.lengths
    last = int(lengths[:-1].sum()) + lengths.shape[0] - 1  # first observation of the last episode
    phase2_obs = session.buffer.observations[last:]
    for row in range(config.model.batch):
        inside = bool((phase2_obs == obs[row, 0]).all(-1).any())
        if row < recent:
            assert inside, row
    assert obs.shape[0] == config.model.batch


def test_every_remedy_and_option_together_through_phases_2_and_3() -> None:
    config = config_for("cheetah.run", "smoke")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, reward_heads=2))
    config = _with(
        config,
        pessimism=1.0,
        action_penalty=0.1,
        phase2_batch_share=0.5,
        start_states="posterior_samples",
        reinit_model=True,
    )
    session = Session(config, torch.device("cpu"))
    for _ in range(config.seed_episodes + 1):
        session.train_episode(1)
    session.start_phase(2)
    row = session.train_episode(2)
    rows = [*session.metrics, row]
    assert any(math.isfinite(float(r.get("decoder_cost", math.nan))) for r in rows)
    session.start_phase(3)
    for _ in range(config.ppo.episodes_per_iteration):
        row = session.ppo_episode()
    assert session.counters.ppo_iterations == 1
    assert any(
        math.isfinite(float(r.get("policy_loss", math.nan))) for r in [*session.metrics, row]
    )


def _ppo_after_a_large_step(session: Session, noise: float) -> dict[str, float]:
    """One ``ppo_update`` of ``session`` on fresh latent-DCEM episodes played
    with exploration noise ``noise``."""
    config = session.config
    controller = session.controller("latent_dcem")
    episodes = [
        session.play(controller, noise=noise) for _ in range(config.ppo.episodes_per_iteration)
    ]
    return ppo_update(
        session.model,
        session.decoder,
        session.value,
        session.log_std,
        session.ppo_opt,
        session.value_opt,
        episodes,
        config.ppo,
        config.latent,
        session.cpu_gen,
        session.device,
    )


@pytest.mark.spec("VAL-10")
def test_ppo_step_keeps_parameters_finite_when_the_ratio_overflows() -> None:
    # Actions played with noise 1 around a narrow policy (σ = 0.01) have
    # tiny old log-probabilities; a step that moves the DCEM mean toward them
    # gives log-ratios in the thousands, where exp overflows float32 and its
    # backward would turn every tuned parameter into NaN.
    config = config_for("cheetah.run", "smoke")
    ppo = dataclasses.replace(config.ppo, std=0.01, lr=0.01, passes=3)
    config = dataclasses.replace(config, ppo=ppo)
    session = Session(config, torch.device("cpu"))
    for _ in range(config.seed_episodes):
        session.train_episode(1)
    session.start_phase(3)
    stats = _ppo_after_a_large_step(session, noise=1.0)
    overflow = math.log(torch.finfo(torch.float32).max)  # exp of more is inf in float32
    assert stats["max_log_ratio"] > max(overflow, LOG_RATIO_LIMIT)
    tuned = tuned_parameters(session.model, session.decoder, session.log_std, ppo)
    assert all(bool(torch.isfinite(param).all()) for param in tuned)
    assert all(math.isfinite(value) for value in stats.values()), stats
    assert stats["skipped_steps"] == 0  # the clamp, not the guard, handled it


@pytest.mark.spec("VAL-10")
def test_ppo_step_skips_a_non_finite_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    # A step whose gradient is NaN (here: NaN advantages) is not taken.
    config = config_for("cheetah.run", "smoke")
    session = Session(config, torch.device("cpu"))
    for _ in range(config.seed_episodes):
        session.train_episode(1)
    session.start_phase(3)
    tuned = tuned_parameters(session.model, session.decoder, session.log_std, config.ppo)
    before = [param.detach().clone() for param in tuned]
    original = ppo_module.make_batch

    def poisoned(*args: Any, **kwargs: Any) -> Any:
        batch = original(*args, **kwargs)
        return dataclasses.replace(batch, advantages=torch.full_like(batch.advantages, math.nan))

    monkeypatch.setattr(ppo_module, "make_batch", poisoned)
    stats = _ppo_after_a_large_step(session, noise=config.ppo.std)
    ppo = config.ppo  # every step: passes × the minibatches of states_per_iteration states
    steps = ppo.passes * math.ceil(ppo.states_per_iteration / ppo.minibatch)
    assert stats["skipped_steps"] == steps
    for param, old in zip(tuned, before, strict=True):
        assert torch.equal(param.detach(), old)


# -- VAL-12: ratio claims over enough episodes, with a bootstrap interval ---------------------

PLANNER_CHECKS = Path("validation/results/dmc/cheetah.run/short/planner_checks")
"""The committed 20-episode plays of both controllers on cheetah's phase-2 model."""


@pytest.mark.spec("VAL-12")
@pytest.mark.parametrize(
    ("numerator", "denominator", "statistic", "expected"),
    [
        # Medians of 3 draws from {1, 2, 4}: 1 (or 4) when at least two draws
        # are 1 (or 4), probability 3·(1/3)²·(2/3) + (1/3)³ = 7/27 each. Drawn
        # independently, the extreme ratios 1/4 and 4 each have probability
        # (7/27)² ≈ 6.7 % > 2.5 %, so both ends are forced; resampling the two
        # lists with the same indices would give every ratio 1 instead.
        ([1.0, 2.0, 4.0], [1.0, 2.0, 4.0], statistics.median, (1.0, 0.25, 4.0)),
        # Means of 2 draws from {1, 3}: 1 or 3 with probability 1/4 each (> 2.5 %),
        # over the constant 2.
        ([1.0, 3.0], [2.0, 2.0], statistics.fmean, (1.0, 0.5, 1.5)),
    ],
)
def test_ratio_interval_of_a_hand_derived_case(
    numerator: list[float],
    denominator: list[float],
    statistic: report.Statistic,
    expected: tuple[float, float, float],
) -> None:
    assert ratio_interval(numerator, denominator, statistic=statistic) == expected


@pytest.mark.spec("VAL-12")
@pytest.mark.parametrize("statistic", [statistics.median, statistics.fmean])
def test_ratio_interval_of_constant_lists_collapses_to_the_ratio(
    statistic: report.Statistic,
) -> None:
    assert ratio_interval([300.0] * 5, [200.0] * 20, statistic=statistic) == (1.5, 1.5, 1.5)


@pytest.mark.spec("VAL-12")
@pytest.mark.parametrize(
    ("numerator", "denominator"),
    [
        ([400.0], [300.0, 500.0]),  # one episode has no spread
        ([300.0, 500.0], [400.0]),
        ([], [300.0, 500.0]),
        ([300.0, math.nan], [300.0, 500.0]),  # a non-finite episode
        ([300.0, 500.0], [0.0, 0.0]),  # s(y) = 0
        ([300.0, 500.0], [0.0, 0.0, 0.0, 5.0]),  # s(y) > 0, some s(y*_b) = 0
    ],
)
def test_ratio_interval_is_nan_where_undefined(
    numerator: list[float], denominator: list[float]
) -> None:
    ratio = ratio_interval(numerator, denominator, statistic=statistics.median)
    assert all(math.isnan(value) for value in ratio), ratio


@pytest.mark.spec("VAL-12")
def test_ratio_interval_is_fixed_by_its_seed() -> None:
    # The committed cheetah planner checks (20 episodes per controller) give
    # the numbers the results README quotes, the same each time; another
    # seed moves the ends a little, never the ratio.
    def returns(name: str) -> list[float]:
        record = json.loads((PLANNER_CHECKS / f"{name}_20.json").read_text(encoding="utf-8"))
        return [episode["real"] for episode in record["controllers"][name]["episodes"]]

    latent, full = returns("latent_dcem"), returns("full_cem")
    assert (len(latent), len(full)) == (20, 20)
    first = ratio_interval(latent, full, statistic=statistics.median)
    assert ratio_interval(latent, full, statistic=statistics.median) == first
    assert [round(value, 2) for value in first] == [0.57, 0.40, 1.03]
    means = ratio_interval(latent, full, statistic=statistics.fmean)
    assert [round(value, 2) for value in means] == [0.69, 0.52, 0.91]
    other = ratio_interval(latent, full, statistic=statistics.median, seed=1)
    assert other != first and other[0] == first[0]
    assert other[1:] == pytest.approx(first[1:], abs=0.02)
    with pytest.raises(ValueError, match="confidence"):
        ratio_interval(latent, full, statistic=statistics.median, confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        ratio_interval(latent, full, statistic=statistics.median, resamples=0)


@pytest.mark.spec("VAL-12")
def test_ratio_claims_name_their_episodes_and_interval() -> None:
    # short mode now plays 20 episodes per controller and 5 of paper-size CEM;
    # each ratio claim states the counts and the interval of ratio_interval.
    config = config_for("cheetah.run", "short")
    assert (config.eval_episodes, config.paper_cem_eval_episodes) == (20, 5)
    full = [100.0 + 25.0 * i for i in range(config.eval_episodes)]
    latent = [0.8 * value for value in full[::-1]]
    paper = [500.0, 400.0, 600.0, 550.0, 450.0]
    evals = {"full_cem": full, "latent_dcem": latent, "full_cem_paper": paper}
    speed_ms = {"full_cem_ms": 90.0, "full_cem_paper_ms": 1200.0, "latent_dcem_ms": 200.0}
    results: dict[int, dict[str, Any]] = {2: {"evals": evals, "speed_ms": speed_ms}}
    by_id = {claim.id: claim for claim in report.claims(config, "short", results)}
    details = report.ratio_details(results)
    assert set(details) == set(RATIO_CLAIMS)
    for claim_id, (top, bottom) in RATIO_CLAIMS.items():
        claim = by_id[claim_id]
        n_top, n_bottom = len(evals[top]), len(evals[bottom])
        ratio, low, high = ratio_interval(evals[top], evals[bottom], statistic=statistics.median)
        assert claim.measured == pytest.approx(ratio)
        assert f"{n_top} / {n_bottom} episodes" in claim.description
        assert f"95% bootstrap interval [{low:.2f}, {high:.2f}]" in claim.description
        mean = ratio_interval(evals[top], evals[bottom], statistic=statistics.fmean)
        assert f"ratio of means {mean[0]:.2f} [{mean[1]:.2f}, {mean[2]:.2f}]" in claim.description
        assert details[claim_id]["episodes"] == [n_top, n_bottom]
        assert details[claim_id]["median"] == [ratio, low, high]
        assert details[claim_id]["mean"] == list(mean)
    assert by_id["phase2_latent_over_full"].measured == pytest.approx(0.8)


@pytest.mark.spec("VAL-12")
def test_summary_records_the_ratio_intervals(runs: tuple[Path, Path]) -> None:
    # In summary.json beside the claims; one smoke episode per controller: NaN.
    straight, _ = runs
    summary = json.loads((straight / "summary.json").read_text())
    intervals = summary["ratio_intervals"]
    assert set(intervals) == set(RATIO_CLAIMS)
    for estimates in intervals.values():
        assert estimates["episodes"] == [1, 1]
        assert all(math.isnan(value) for value in estimates["median"] + estimates["mean"])
