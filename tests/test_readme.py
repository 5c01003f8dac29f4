"""The README's example runs, and its commands are the ones the project provides."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from validation import demo

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
ROOT = Path(__file__).resolve().parent.parent


def test_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    assert blocks, "the README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def test_documented_test_command_is_what_ci_runs() -> None:
    assert "`nox -s tests typecheck`" in README
    assert "nox -s tests typecheck" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_demo_runs_and_passes_its_own_checks(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "Part 1" in out and "Part 2" in out


def test_demo_is_a_module_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "validation.demo", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "--quick" in done.stdout
