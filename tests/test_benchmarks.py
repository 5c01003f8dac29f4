"""The benchmark script runs and writes well-formed results (structure only, no timings)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given

import impl.cem as impl_cem
import impl.dcem as impl_dcem
from benchmarks import lml_accuracy
from benchmarks.authors_dcem import authors_dcem
from benchmarks.authors_lml import EPS, authors_lml, authors_lml_layer
from benchmarks.op_count import count_ops
from benchmarks.run import main
from impl.lml import lml
from reference.lml import lml_bisect, lml_vjp
from tests.strategies import LMLProblem, lml_problems

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


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_quick_run_writes_the_json_and_the_table(tmp_path: Path, clock: str) -> None:
    threads = torch.get_num_threads()
    args = ["--quick", "--out", str(tmp_path), "--device", "cpu", "--threads", "1"]
    try:
        assert main([*args, "--clock", clock]) == 0
    finally:
        torch.set_num_threads(threads)
    payload = json.loads((tmp_path / "cpu.json").read_text(encoding="utf-8"))
    meta, rows = payload["meta"], payload["results"]
    assert set(meta) >= META_KEYS
    assert meta["device"] == "cpu" and meta["dtype"] == "float32" and meta["threads"] == 1
    assert meta["quick"] is True and len(meta["load_average_before"]) == 3
    assert meta["timing"].endswith(f"clock: {clock}")
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
        if row["unit"] == "ops" and row["ratio"] is not None:
            assert row["candidate_value"] == int(row["candidate_value"]) > 0, row["name"]
    names = {row["name"] for row in rows}
    assert "LML forward / topk" in names and "hard-CEM iteration / DCEM iteration" in names
    assert "authors' LML forward / LML forward (speed-up)" in names
    assert "dispatched ops per forward: LML / authors' LML" in names
    assert any(name.startswith("peak memory checkpoint=True") for name in names)
    assert any(name.startswith("peak memory grad_iters=") for name in names)
    table = (tmp_path / "cpu.md").read_text(encoding="utf-8")
    assert "| group | ratio measured |" in table and "float32" in table
    assert table.count("\n| ") == len(rows) + 1  # header + one line per row


def _quick_group(tmp_path: Path, group: str) -> list[dict[str, Any]]:
    """The rows of ``--quick --only group`` on the CPU, one thread, CPU clock."""
    threads = torch.get_num_threads()
    args = ["--quick", "--out", str(tmp_path), "--device", "cpu", "--threads", "1"]
    try:
        assert main([*args, "--only", group, "--clock", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = json.loads(
        (tmp_path / f"cpu-{group}.json").read_text(encoding="utf-8")
    )["results"]
    return rows


def test_only_the_solve_group(tmp_path: Path) -> None:
    rows = _quick_group(tmp_path, "solve")
    assert {row["group"] for row in rows} == {"solve"}
    names = {row["name"] for row in rows}
    assert "authors' DCEM / DCEM solve (speed-up)" in names
    assert "dispatched ops per solve: DCEM / authors' DCEM" in names
    assert "dispatched ops besides f: DCEM solve / f evaluations, mlp f" in names
    for row in rows:
        assert row["status"] in STATUSES and row["ratio"] is not None, row["name"]


def test_only_the_authors_comparison(tmp_path: Path) -> None:
    # --only authors runs the comparison with the authors' DCEM and nothing else
    # (--quick leaves the compiled contender out: its first call compiles for ~80 s).
    rows = _quick_group(tmp_path, "authors")
    assert [row["name"] for row in rows] == [
        "authors' DCEM / DCEM solve (speed-up)",
        "dispatched ops per solve: DCEM / authors' DCEM",
    ]
    assert all(row["ratio"] is not None and row["ratio"] > 0 for row in rows)


def test_lml_accuracy_script_checks_the_bound(tmp_path: Path) -> None:
    out = tmp_path / "accuracy.json"
    assert lml_accuracy.main(["--rows", "18", "--seeds", "7", "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text(encoding="utf-8"))
    for dtype in ("torch.float32", "torch.float64"):
        assert 0 <= result["worst"][dtype]["error"] <= result["bound"][dtype]
        counts = {int(s): c for s, c in result["stopping_steps"][dtype].items()}
        assert sum(counts.values()) == 18
        assert max(counts) <= result["max_steps"][dtype]  # every row stopped in the schedule


@given(problem=lml_problems(max_n=60, max_batch=3, max_scaled=50.0))
def test_authors_baseline_solves_the_projection(problem: LMLProblem) -> None:
    # A bracket of width EPS (scaled units) around ν = −t/τ: each output is
    # within h_max · EPS/2 = EPS/8 of the projection (LML-12's bound on |∂y/∂t|).
    x = torch.from_numpy(problem.x)
    y = authors_lml(x, problem.k, problem.tau).numpy()
    expected = lml_bisect(problem.x, problem.k, problem.tau)
    assert np.abs(y - expected).max() <= EPS / 8 + 1e-12


def test_op_counter_counts_what_runs() -> None:
    x = torch.randn(2, 5)
    counter = count_ops(lambda: (x + 1).sigmoid_())
    assert counter.counts == {"aten.add.Tensor": 1, "aten.sigmoid_.default": 1}
    assert counter.total == 2
    assert count_ops(lambda: lml(x, 2, 1.0)).total > 2


@given(problem=lml_problems(max_n=40, max_batch=3, max_scaled=50.0))
def test_authors_layer_backward_is_the_implicit_vjp(problem: LMLProblem) -> None:
    # On scaled scores (τ = 1 inside the layer): the VJP of LML-12 at the layer's output.
    x = torch.from_numpy(problem.x / problem.tau).requires_grad_(True)
    g = torch.from_numpy(np.random.default_rng(0).normal(size=problem.x.shape))
    y = authors_lml_layer(x, problem.k)
    (grad,) = torch.autograd.grad(y, x, g)
    expected = lml_vjp(y.detach().numpy(), g.numpy(), 1.0)
    np.testing.assert_allclose(grad.numpy(), expected, atol=1e-12)


def test_authors_dcem_minimizes_and_differentiates() -> None:
    # A quadratic with its minimum at c: the loop's μ approaches c, and μ_T is
    # differentiable in c (the gradient flows through the LML layer and f).
    torch.manual_seed(0)
    centre = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64, requires_grad=True)

    def f(x: torch.Tensor) -> torch.Tensor:
        return (x - centre.unsqueeze(1)).square().sum(-1)

    init = torch.zeros(1, 3, dtype=torch.float64)
    mu, run = authors_dcem(f, init, init + 2.0, n_sample=200, n_elite=20, n_iter=8)
    assert 1 <= run <= 8
    assert (mu - centre).abs().max() < 0.3
    (grad,) = torch.autograd.grad(mu.sum(), centre)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="n_elite"):
        authors_dcem(f, init, init + 1.0, n_sample=5, n_elite=5, n_iter=1)


def test_compare_loads_the_whole_old_package() -> None:
    # The old revision's dcem must run the old revision's solver, not the
    # current one: every module of the package is the revision's own copy.
    import subprocess

    from benchmarks.compare import load_old

    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    old = load_old(head, "dcem")
    assert old.__name__ == f"impl_at_{head}.dcem"
    assert old.solve.__module__ == f"impl_at_{head}.cem.solver"
    assert old.solve is not impl_cem.solve
    noise = torch.randn(3, 2, 20, 2, generator=torch.Generator().manual_seed(0))

    def run(module: Any) -> torch.Tensor:
        result = module.dcem(lambda x: (x * x).sum(-1), torch.zeros(2, 2), 1.0, n_sample=20,
                             n_elite=4, n_iter=3, noise=noise)  # fmt: skip
        return result.mean  # type: ignore[no-any-return]

    torch.testing.assert_close(run(old), run(impl_dcem), rtol=0, atol=0)
