"""The harness's own guarantees: provenance of results (VAL-5) and one clock (VAL-3)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from validation import provenance
from validation.harness import RunDirectory


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


@pytest.mark.spec("VAL-3")
def test_only_the_owner_keeps_the_clock(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path, "t", "smoke", {})
    with pytest.raises(TypeError, match="JobContext"):
        pickle.dumps(run)
    ctx = pickle.loads(pickle.dumps(run.context(stop_after=3)))
    ctx.save_checkpoint("job", {"step": 1})
    assert ctx.load_checkpoint("job") == {"step": 1}
    assert not (tmp_path / "timing.json").exists()  # a worker's checkpoint: no clock
    run.save_checkpoint("job", {"step": 2})
    assert (tmp_path / "timing.json").exists()  # the owner's: recorded
