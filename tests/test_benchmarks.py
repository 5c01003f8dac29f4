"""The benchmark script runs and writes well-formed results (structure only, no timings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from benchmarks import lml_accuracy
from benchmarks.run import main

GROUPS = {"lml", "iteration", "loop", "solve", "memory", "sync"}
STATUSES = {"pass", "miss", "info", "skipped"}
META_KEYS = {
    "date", "command", "torch", "device", "threads", "dtype", "repeats", "cpu_count",
    "load_average_before", "load_average_after", "memory_method", "timing", "gpu",
}  # fmt: skip
ROW_KEYS = {
    "group", "name", "shape", "candidate", "baseline", "candidate_value", "baseline_value",
    "unit", "ratio", "target", "sense", "status", "note", "samples",
}  # fmt: skip


def test_quick_run_writes_the_json_and_the_table(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        assert main(["--quick", "--out", str(tmp_path), "--device", "cpu", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    payload = json.loads((tmp_path / "cpu.json").read_text(encoding="utf-8"))
    meta, rows = payload["meta"], payload["results"]
    assert set(meta) >= META_KEYS
    assert meta["device"] == "cpu" and meta["dtype"] == "float32" and meta["threads"] == 1
    assert meta["quick"] is True and len(meta["load_average_before"]) == 3
    assert {row["group"] for row in rows} == GROUPS
    for row in rows:
        assert set(row) == ROW_KEYS, row["name"]
        assert row["status"] in STATUSES, (row["name"], row["status"], row["note"])
        if row["status"] in ("pass", "miss", "info"):
            assert math.isfinite(row["ratio"]) and row["ratio"] > 0, row["name"]
            assert row["candidate_value"] > 0 and row["baseline_value"] > 0, row["name"]
        if row["target"] is not None and row["ratio"] is not None:
            met = (
                row["ratio"] <= row["target"]
                if row["sense"] == "max"
                else (row["ratio"] >= row["target"])
            )
            assert row["status"] == ("pass" if met else "miss"), row["name"]
        if row["unit"] == "s" and row["ratio"] is not None:
            assert set(row["samples"]) == {row["candidate"], row["baseline"]}
            assert all(len(times) >= 2 for times in row["samples"].values())
    names = {row["name"] for row in rows}
    assert "LML forward / topk" in names and "hard-CEM iteration / DCEM iteration" in names
    assert any(name.startswith("peak memory checkpoint=True") for name in names)
    assert any(name.startswith("peak memory grad_iters=") for name in names)
    table = (tmp_path / "cpu.md").read_text(encoding="utf-8")
    assert "| group | ratio measured |" in table and "float32" in table
    assert table.count("\n| ") == len(rows) + 1  # header + one line per row


def test_lml_accuracy_script_checks_the_bound(tmp_path: Path) -> None:
    out = tmp_path / "accuracy.json"
    assert lml_accuracy.main(["--rows", "18", "--seeds", "7", "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text(encoding="utf-8"))
    for dtype in ("torch.float32", "torch.float64"):
        assert 0 <= result["worst"][dtype]["error"] <= result["bound"][dtype]
        counts = {int(s): c for s, c in result["stopping_steps"][dtype].items()}
        assert sum(counts.values()) == 18
        assert max(counts) <= result["max_steps"][dtype]  # every row stopped in the schedule
