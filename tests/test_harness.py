"""The harness's own guarantees: the driver (VAL-1), one clock (VAL-3), provenance (VAL-5)."""

from __future__ import annotations

import argparse
import json
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch

import impl.lml  # noqa: F401  (a loaded source: the summaries below record it)
from validation import executors, harness, provenance
from validation.harness import JobContext, JobOutput, Report, RunDirectory, at_least


def summary_of(files: dict[str, str]) -> dict[str, object]:
    return {"provenance": {"files": files, "fingerprint": provenance.fingerprint(files)}}


@pytest.mark.spec("VAL-5")
def test_a_changed_source_makes_a_result_stale(tmp_path: Path) -> None:
    (tmp_path / "impl").mkdir()
    (tmp_path / "impl" / "a.py").write_text("x = 1\n")
    (tmp_path / "impl" / "b.py").write_text("y = 2\n")
    summary = summary_of(provenance.file_hashes(["impl/a.py", "impl/b.py"], tmp_path))
    assert provenance.status(summary, tmp_path) == ("current", [])
    (tmp_path / "impl" / "b.py").write_text("y = 3\n")
    assert provenance.status(summary, tmp_path) == ("stale", ["impl/b.py"])
    (tmp_path / "impl" / "a.py").unlink()
    assert provenance.status(summary, tmp_path) == ("stale", ["impl/a.py", "impl/b.py"])
    assert provenance.status({"name": "old"}, tmp_path) == ("unknown", [])


@pytest.mark.spec("VAL-5")
def test_the_command_lists_stale_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    current = provenance.record(["validation/training.py"])
    assert current["files"]["validation/training.py"] != "missing"
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "summary.json").write_text(json.dumps({"provenance": current}))
    assert provenance.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("current")
    stale = summary_of({"validation/training.py": "0" * 64})["provenance"]
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / "summary.json").write_text(json.dumps({"provenance": stale}))
    (tmp_path / "unknown").mkdir()
    (tmp_path / "unknown" / "summary.json").write_text(json.dumps({"name": "x"}))
    assert provenance.main([str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["current", "stale", "unknown"]
    assert "changed: validation/training.py" in lines[1]


@pytest.mark.spec("VAL-5")
def test_a_source_changed_while_the_run_ran_makes_it_mixed(tmp_path: Path) -> None:
    # The hashes are taken when the summary is written; a file edited during the
    # run used to be recorded as if it had computed every number ("current").
    (tmp_path / "impl").mkdir()
    (tmp_path / "impl" / "a.py").write_text("x = 1\n")
    (tmp_path / "impl" / "b.py").write_text("y = 2\n")
    started = provenance.snapshot(tmp_path)
    assert sorted(started["files"]) == ["impl/a.py", "impl/b.py"]
    same = provenance.record(["impl/a.py", "impl/b.py"], [started, started], tmp_path)
    assert same["changed_during_run"] == [] and len(same["sessions"]) == 2
    assert provenance.status({"provenance": same}, tmp_path) == ("current", [])
    (tmp_path / "impl" / "b.py").write_text("y = 3\n")  # edited under the running job
    edited = provenance.record(["impl/a.py", "impl/b.py"], [started], tmp_path)
    assert edited["changed_during_run"] == ["impl/b.py"]
    assert provenance.status({"provenance": edited}, tmp_path) == ("mixed", ["impl/b.py"])


@pytest.mark.spec("VAL-5")
def test_a_run_resumed_on_other_code_is_reported_mixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out", str(tmp_path / "run")]
    assert harness.main(Counting(), [*out, "--stop-after", "2"]) == harness.STOPPED
    sessions_path = tmp_path / "run" / harness.SESSIONS
    (first,) = json.loads(sessions_path.read_text())
    assert set(provenance.loaded_sources()) <= set(first["files"])
    # as the file would read had that session run on another version of impl/lml.py
    first["files"]["impl/lml.py"] = "0" * 64
    sessions_path.write_text(json.dumps([first]))
    assert harness.main(Counting(), [*out, "--resume"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["provenance"]["sessions"]) == 2
    assert summary["provenance"]["changed_during_run"] == ["impl/lml.py"]
    capsys.readouterr()
    assert provenance.main([str(tmp_path)]) == 1
    assert capsys.readouterr().out.startswith("mixed")
    assert harness.main(Counting(), [*out, "--fresh"]) == 0  # a new run forgets the old sessions
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["provenance"]["sessions"]) == 1
    assert summary["provenance"]["changed_during_run"] == []


@pytest.mark.spec("VAL-3")
def test_only_the_owner_keeps_the_clock(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path, "t", "smoke", {})
    with pytest.raises(TypeError, match="JobContext"):
        pickle.dumps(run)
    ctx = pickle.loads(pickle.dumps(run.context(stop_after=3)))
    ctx.save_checkpoint("job", {"step": 1})
    assert ctx.load_checkpoint("job") == {"step": 1}
    assert not (tmp_path / "timing.json").exists()  # a worker's checkpoint: no clock
    owned = replace(run.context(), on_checkpoint=run.record_time)  # the in-process executor's
    owned.save_checkpoint("job", {"step": 2})
    assert (tmp_path / "timing.json").exists()  # the owner's: recorded


@pytest.mark.spec("VAL-3")
def test_wall_time_adds_up_over_sessions(tmp_path: Path) -> None:
    first = RunDirectory(tmp_path, "t", "smoke", {"a": 1})
    time.sleep(0.2)
    replace(first.context(), on_checkpoint=first.record_time).save_checkpoint("job", {"x": 1})
    lost = time.perf_counter()
    time.sleep(0.2)  # work after the last checkpoint that a kill loses: not counted
    recorded = json.loads((tmp_path / "timing.json").read_text())["wall_seconds"]
    assert 0.2 <= recorded < 0.2 + (time.perf_counter() - lost)
    second = RunDirectory(tmp_path, "t", "smoke", {"a": 1}, resume=True)
    time.sleep(0.1)
    second.finish([])
    total = json.loads((tmp_path / "timing.json").read_text())["wall_seconds"]
    assert recorded + 0.1 <= total < recorded + 0.3
    assert json.loads((tmp_path / "summary.json").read_text())["wall_seconds"] == round(total, 1)


@dataclass(frozen=True)
class CountJob:
    name: str
    steps: int


class Counting:
    """A tiny Experiment: each job counts to ``steps``, checkpointing every step."""

    name = "counting"
    description = "count"
    strict_smoke = True

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--steps", type=int, default=5)

    def configure(self, args: argparse.Namespace) -> dict[str, int]:
        return {"steps": args.steps}

    def jobs(self, config: dict[str, int], mode: str) -> list[CountJob]:
        return [CountJob(f"job{i}", config["steps"] + i) for i in range(2)]

    def run_job(self, job: CountJob, ctx: JobContext) -> JobOutput | None:
        saved = ctx.load_checkpoint(job.name)
        step = 0 if saved is None else int(saved["step"])
        while step < job.steps:
            if ctx.stop_after is not None and step >= ctx.stop_after:
                return None
            step += 1
            ctx.save_checkpoint(job.name, {"step": step})
        return JobOutput({"count": step}, {f"files/{job.name}.txt": str(step).encode()})

    def figures(
        self, config: dict[str, int], results: Sequence[dict[str, Any]], run: RunDirectory
    ) -> None:
        run.write_csv("counts", results)

    def claims(
        self, config: dict[str, int], results: Sequence[dict[str, Any]], run: RunDirectory
    ) -> Report:
        total = float(sum(r["count"] for r in results))
        return Report([at_least("total", "sum of counts", "—", total, 11.0)], {"total": total})


@pytest.mark.spec("VAL-1", "VAL-4")
def test_a_finished_run_resumes_with_a_process_pool_without_starting_one(tmp_path: Path) -> None:
    # Resuming a finished run leaves no job to run: with --jobs 2 that used to ask
    # ProcessPoolExecutor for zero workers (ValueError) instead of rewriting the summary.
    out = ["--out", str(tmp_path)]
    assert harness.main(Counting(), out) == 0
    first = json.loads((tmp_path / "summary.json").read_text())
    assert harness.main(Counting(), [*out, "--resume", "--jobs", "2"]) == 0
    again = json.loads((tmp_path / "summary.json").read_text())
    assert again["claims"] == first["claims"] and again["total"] == 11.0


@pytest.mark.spec("VAL-1")
def test_the_driver_stops_resumes_and_writes_the_summary_once(tmp_path: Path) -> None:
    out = ["--out", str(tmp_path)]
    assert harness.main(Counting(), [*out, "--stop-after", "2"]) == harness.STOPPED
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["job0.pt", "job1.pt"]
    assert not (tmp_path / "summary.json").exists()
    with pytest.raises(SystemExit, match="--resume"):
        harness.main(Counting(), out)
    assert harness.main(Counting(), [*out, "--resume"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [c["measured"] for c in summary["claims"]] == [11.0]
    assert summary["total"] == 11.0 and summary["provenance"]["fingerprint"]
    assert (tmp_path / "files" / "job1.txt").read_text() == "6"
    assert not list((tmp_path / "checkpoints").iterdir())
    assert (tmp_path / "counts.csv").read_text() == "count\n5\n6\n"

    class Refusing(Counting):
        def run_job(self, job: CountJob, ctx: JobContext) -> JobOutput | None:
            raise AssertionError(f"{job.name} ran again")

    assert harness.main(Refusing(), [*out, "--resume"]) == 0  # nothing recomputed
    with pytest.raises(SystemExit, match="other settings"):
        harness.main(Counting(), [*out, "--resume", "--steps", "4"])


@pytest.mark.spec("VAL-1")
def test_a_failed_smoke_claim_fails_the_command(tmp_path: Path) -> None:
    assert harness.main(Counting(), ["--out", str(tmp_path), "--steps", "1"]) == 1
    assert harness.main(Counting(), ["--out", str(tmp_path / "short"), "--mode", "short",
                                     "--steps", "1"]) == 0  # fmt: skip


class Threads(Counting):
    """Each job's result is the torch thread count it ran on."""

    def run_job(self, job: CountJob, ctx: JobContext) -> JobOutput | None:
        return JobOutput({"count": job.steps, "threads": torch.get_num_threads()})


@pytest.mark.spec("VAL-7")
def test_each_job_runs_on_the_threads_asked_for(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        assert harness.main(Threads(), ["--out", str(tmp_path), "--threads", "2"]) == 0
        results = [json.loads(p.read_text()) for p in sorted((tmp_path / "jobs").iterdir())]
        assert [r["threads"] for r in results] == [2, 2]
        ctx = JobContext(tmp_path / "w", threads=3)  # what every worker runs
        output = executors.run_job(Threads(), CountJob("job9", 1), ctx)
        assert output is not None and output.result["threads"] == 3
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        harness.main(Threads(), ["--out", str(tmp_path / "bad"), "--threads", "0"])


class Preparing(Counting):
    """Before the driver opens ``--out``: writes a previous run's state there
    and asks to continue it (as ``dmc --resume-from`` does)."""

    def prepare_run(self, args: argparse.Namespace, out: Path) -> bool:
        if args.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {args.steps}")
        record = {"name": "counting", "mode": args.mode, "config": {"steps": args.steps}}
        (out / "checkpoints").mkdir(parents=True)
        (out / "config.json").write_text(json.dumps(record))
        JobContext(out).save_checkpoint("job0", {"step": 4})
        return True


@pytest.mark.spec("VAL-8")
def test_an_experiment_prepares_the_run_directory_before_the_driver_opens_it(
    tmp_path: Path,
) -> None:
    assert isinstance(Preparing(), harness.PreparesRun)
    assert not isinstance(Counting(), harness.PreparesRun)
    assert harness.main(Preparing(), ["--out", str(tmp_path), "--stop-after", "5"]) == (
        harness.STOPPED  # job0 continued from step 4 (done at 5), job1 stopped at 5
    )
    assert (tmp_path / "jobs" / "job0.json").exists()
    assert not (tmp_path / "jobs" / "job1.json").exists()
    with pytest.raises(SystemExit):  # its ValueError is a usage error
        harness.main(Preparing(), ["--out", str(tmp_path / "bad"), "--steps", "-1"])


@pytest.mark.spec("VAL-1")
def test_resume_takes_settings_added_since_but_nothing_else(tmp_path: Path) -> None:
    RunDirectory(tmp_path, "t", "smoke", {"model": {"lr": 0.1}, "runs": [{"seed": 0}]})
    grown = {"model": {"lr": 0.1, "scale": 10.0}, "runs": [{"seed": 0, "k": 2}], "x": None}
    RunDirectory(tmp_path, "t", "smoke", grown, resume=True)
    assert json.loads((tmp_path / "config.json").read_text())["config"] == grown
    assert harness.added_keys({"a": 1}, grown) is None  # a removed key
    for changed in (
        {**grown, "model": {"lr": 0.5, "scale": 10.0}},  # a changed value
        {**grown, "runs": [{"seed": 0, "k": 2}, {"seed": 1, "k": 2}]},  # another job
    ):
        with pytest.raises(SystemExit, match="other settings"):
            RunDirectory(tmp_path, "t", "smoke", changed, resume=True)
    assert harness.added_keys({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2, "c": 3}], "d": 4}) == [
        "d",
        "a.1.c",
    ]
