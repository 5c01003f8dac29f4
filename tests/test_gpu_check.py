"""The GPU check's CPU rehearsal, its sync report and its wheel folder (issue 14)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from benchmarks import gpu_check, gpu_sync, gpu_wheels
from benchmarks.gpu_sync import ENTRY_POINTS, EntryPoint, check, check_one, report

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
META = torch.device("meta")


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


# -- the fast rehearsal ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("gpu-check")
    done = _script("--device", "cpu", "--out", str(out), "--fast", "--threads", "1", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


@pytest.mark.spec("CEM-23", "LML-18", "CTL-14")
def test_rehearsal_writes_a_few_files(rehearsal: tuple[Path, str]) -> None:
    out, stdout = rehearsal
    files = sorted(path.name for path in out.iterdir())
    assert files == ["cpu.json", "cpu.md", "log.txt", "pytest-device.xml", "summary.json",
                     "sync.json"]  # fmt: skip
    assert all(path.is_file() and path.stat().st_size > 0 for path in out.iterdir())
    assert "failed phases: none" in stdout


def test_rehearsal_summary_records_every_phase(rehearsal: tuple[Path, str]) -> None:
    out, _ = rehearsal
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    outcomes = {phase["name"]: phase["outcome"] for phase in summary["phases"]}
    assert outcomes == {
        "wheels": "skipped",  # no --wheels given
        "sync": "ok",
        "device-tests": "ok",
        "bench-quick": "ok",
        "bench": "skipped",  # the CPU stops at the quick sizes
        "oracle-tests": "skipped",
        "compiled-path": "skipped",
        "bench-compiled": "skipped",
    }
    assert summary["environment"]["torch"] == torch.__version__
    assert summary["environment"]["device"] == "cpu" and summary["fast"] is True
    tests = next(p for p in summary["phases"] if p["name"] == "device-tests")["details"]
    expected = sum(entry.on_meta for entry in ENTRY_POINTS)
    assert tests == {"tests": expected, "failures": 0, "errors": 0, "skipped": 0}
    root = ElementTree.parse(out / "pytest-device.xml").getroot()
    assert all("meta" in case.get("name", "") for case in root.iter("testcase"))


@pytest.mark.spec("CEM-23", "LML-18", "CTL-14")
def test_rehearsal_sync_report_covers_every_entry_point(rehearsal: tuple[Path, str]) -> None:
    out, _ = rehearsal
    sync = json.loads((out / "sync.json").read_text(encoding="utf-8"))
    assert sync["device"] == "meta" and sync["checker_works"] is True
    assert sync["syncs"] == [] and sync["errors"] == [] and sync["unexpected"] == []
    entries = {entry["name"]: entry for entry in sync["entries"]}
    assert list(entries) == [entry.name for entry in ENTRY_POINTS]
    for entry in ENTRY_POINTS:
        status = entries[entry.name]["status"]
        if not entry.on_meta:
            assert status == "not run"
        else:
            assert status == ("sync" if entry.expect_sync else "clean"), entries[entry.name]
    names = " ".join(entries)
    for option in ("bounds", "noise", "tol", "checkpoint", "grad_iters", "smoothing",
                   "elite_temperature", "callback", "generator"):  # fmt: skip
        assert f"dcem[{option}" in names or f"dcem[checkpoint, {option}" in names, option
    for function in ("lml[", "plan[", "MPC.act[", "latent_plan["):
        assert function in names


def test_rehearsal_benchmark_table(rehearsal: tuple[Path, str]) -> None:
    out, _ = rehearsal
    payload = json.loads((out / "cpu.json").read_text(encoding="utf-8"))
    assert payload["meta"]["device"] == "cpu" and payload["meta"]["stages"] == [
        {"stage": "eager", "quick": True}
    ]
    assert payload["meta"]["command"].startswith("python -m benchmarks.gpu_check bench")
    rows = payload["results"]
    assert not [row for row in rows if row["status"] == "error"]
    batch, n, k = gpu_check.QUICK_EXTRA_LML_SHAPES[0]
    extra = {row["name"]: row for row in rows
             if row["group"] == "lml" and row["shape"] == {"B": batch, "n": n, "k": k}}  # fmt: skip
    timed = ("LML forward / topk", "LML forward+backward / topk forward")
    assert all(extra[name]["ratio"] > 0 for name in timed), sorted(extra)
    table = (out / "cpu.md").read_text(encoding="utf-8")
    assert f"B={batch}, n={n}, k={k}" in table


# -- the sync report with a checker that sees host reads ---------------------------------------


class _HostReads(TorchFunctionMode):
    """A stand-in for CUDA's sync debug mode on CPU tensors: raises its
    message on every read of a tensor's value by the host."""

    READS = (torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__float__,
             torch.Tensor.__int__, torch.Tensor.tolist)  # fmt: skip

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Any = (), kwargs: Any = None
    ) -> Any:
        if func in self.READS:
            raise RuntimeError("called a synchronizing CUDA operation")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _host_read_checker() -> Iterator[None]:
    with _HostReads():
        yield


def _reads_a_value(device: torch.device) -> Callable[[], object]:
    x = torch.ones(3, device=device)
    return lambda: x.sum().item()


def _fails(device: torch.device) -> Callable[[], object]:
    def call() -> object:
        raise ValueError("not a synchronization")

    return call


PROBE = EntryPoint("probe[.item()]", _reads_a_value)
FAILING = EntryPoint("probe[raises]", _fails)


@pytest.mark.spec("CEM-23")
def test_injected_checker_names_the_entry_point_that_reads() -> None:
    # Hard CEM reads nothing on the CPU (lml's early exit does, LML-18's CPU exception).
    clean = next(entry for entry in ENTRY_POINTS if entry.name == "dcem[tau=None]")
    control = ENTRY_POINTS[-1]
    cpu = torch.device("cpu")
    records = check((clean, PROBE, FAILING, control), cpu, _host_read_checker)
    assert [r.status for r in records] == ["clean", "sync", "error", "sync"]
    result = report(records, cpu)
    assert result["syncs"] == ["probe[.item()]"] and result["errors"] == ["probe[raises]"]
    assert result["unexpected"] == ["probe[.item()]", "probe[raises]"]
    assert result["checker_works"] is True
    assert "not a synchronization" in result["entries"][2]["message"]


@pytest.mark.spec("CEM-23")
def test_meta_checker_names_the_entry_point_that_reads() -> None:
    records = check((PROBE,), META)
    assert records[0].status == "sync" and "meta" in records[0].message
    result = report(records, META)
    assert result["syncs"] == ["probe[.item()]"]
    assert result["checker_works"] is False  # no control was run: clean records prove nothing


def test_a_checker_that_sees_nothing_fails_the_control() -> None:
    cpu = torch.device("cpu")
    records = check((PROBE, ENTRY_POINTS[-1]), cpu, contextlib.nullcontext)
    result = report(records, cpu)
    assert [r.status for r in records] == ["clean", "clean"]
    assert result["checker_works"] is False and result["unexpected"] == [ENTRY_POINTS[-1].name]


def test_no_checker_on_the_cpu() -> None:
    with pytest.raises(ValueError, match="no host-synchronization checker for device cpu"):
        gpu_sync.checker_for(torch.device("cpu"))


def test_not_run_on_meta_without_a_generator() -> None:
    entry = next(entry for entry in ENTRY_POINTS if not entry.on_meta)
    record = check_one(entry, META, contextlib.nullcontext)
    assert record.status == "not run" and not record.unexpected


# -- the wheel folder --------------------------------------------------------------------------


def _wheel_names() -> list[str]:
    return [f"{name}-{version}-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
            for name, version in gpu_wheels.WHEELS.items()]  # fmt: skip


def test_wheel_folder_check(tmp_path: Path) -> None:
    for name in _wheel_names():
        (tmp_path / name).write_bytes(b"x" * 10)
    assert gpu_wheels.check_folder(tmp_path).ok
    first = _wheel_names()[0]
    (tmp_path / first).unlink()
    (tmp_path / first.replace("manylinux_2_17_x86_64.manylinux2014_x86_64", "win_amd64")).touch()
    (tmp_path / "numpy-2.0.0-cp312-cp312-manylinux2014_x86_64.whl").touch()
    result = gpu_wheels.check_folder(tmp_path)
    assert not result.ok
    assert result.wrong_platform == [first.replace("manylinux_2_17_x86_64.manylinux2014_x86_64",
                                                   "win_amd64")]  # fmt: skip
    assert result.unexpected == ["numpy-2.0.0-cp312-cp312-manylinux2014_x86_64.whl"]
    (tmp_path / _wheel_names()[1].replace(list(gpu_wheels.WHEELS.values())[1], "0.0.1")).touch()
    assert len(gpu_wheels.check_folder(tmp_path).unexpected) == 2
    assert gpu_wheels.check_folder(tmp_path / "absent").missing == gpu_wheels.requirements()


def test_wheel_folder_over_the_limit(tmp_path: Path) -> None:
    for name in _wheel_names():
        (tmp_path / name).touch()
    with (tmp_path / _wheel_names()[0]).open("wb") as handle:
        handle.truncate(gpu_wheels.SIZE_LIMIT_BYTES + 1)  # sparse: no 16 MiB written
    result = gpu_wheels.check_folder(tmp_path)
    assert not result.ok and result.total_bytes > result.limit_bytes
    assert not (result.missing or result.unexpected or result.wrong_platform)


def test_check_wheels_mode_fails_on_a_broken_folder(tmp_path: Path) -> None:
    folder, out = tmp_path / "whl", tmp_path / "out"
    folder.mkdir()
    for name in _wheel_names():
        (folder / name).write_bytes(b"not a zip file")
    done = _script("--check-wheels", "--wheels", str(folder), "--out", str(out), timeout=120)
    assert done.returncode == 1
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    (phase,) = summary["phases"]
    assert phase["name"] == "wheels" and phase["outcome"] == "failed"
    assert phase["details"]["ok"] is True  # the names are right; pip found the files broken
    assert sorted(path.name for path in out.iterdir()) == ["log.txt", "summary.json"]
