"""Metrics CSVs, figures (learning curves; a box plot like Fig. 4; the per-episode
diagnostics of ``validation.dmc.diagnostics``) and the claims.

``python -m validation.dmc.report --run DIR`` writes ``metrics.csv`` and the
learning-curve and diagnostics figures of a run still in progress (from its
finished phases and the checkpoint of the current one), e.g. before its
state is exported and committed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from validation.dmc.config import (
    LATENT_RATIO_TARGET,
    PAPER_CEM,
    SAMPLE_RATIO_PAPER,
    SPEED_RATIO_TARGET,
    TASKS,
    DMCConfig,
)
from validation.dmc.run import job_name
from validation.harness import Claim, RunDirectory, at_least, at_most, load_state, pyplot

FULL_TARGET_FRACTION = 0.9
"""``full`` mode must reach this fraction of the paper's median eval reward (this
reproduction's tolerance: the paper reads its numbers off a box plot)."""


BOOTSTRAP_CONFIDENCE = 0.95
"""Coverage of the bootstrap interval of a ratio claim (spec/validation.md VAL-12)."""

BOOTSTRAP_RESAMPLES = 10_000
"""Resamples of each episode list in the bootstrap of a ratio (VAL-12): the
interval's ends move by about 0.01 between seeds at 20 episodes per list."""

BOOTSTRAP_SEED = 0
"""Seed of the bootstrap's generator: a claim's interval is the same each time
the claims of the same results are computed (VAL-12)."""

MIN_BOOTSTRAP_EPISODES = 2
"""Episodes each list needs for a bootstrap interval (one episode has no spread)."""

Statistic = Callable[[Sequence[float]], float]
"""A statistic of a list of episode returns (``statistics.median``, ``statistics.fmean``)."""

RATIO_STATISTICS: dict[str, Statistic] = {"median": statistics.median, "mean": statistics.fmean}
"""The statistics whose ratios a ratio claim reports (the claim bounds the medians')."""

RATIO_CLAIMS: dict[str, tuple[str, str]] = {
    "phase2_latent_over_full": ("latent_dcem", "full_cem"),
    "phase2_latent_over_paper_cem": ("latent_dcem", "full_cem_paper"),
}
"""Claim id → (numerator, denominator) controllers of phase 2's ratio claims."""


def ratio_interval(
    numerator: Sequence[float],
    denominator: Sequence[float],
    *,
    statistic: Statistic,
    confidence: float = BOOTSTRAP_CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """``(ratio, low, high)``: ``s(x) / s(y)`` and its percentile bootstrap interval
    (spec/validation.md VAL-12), ``s`` = ``statistic``, ``x`` = ``numerator`` and
    ``y`` = ``denominator`` the episode returns of two controllers.

    With ``B = resamples``, the generator ``numpy.random.default_rng(seed)``
    first draws a ``B × n_x`` array of indices uniformly from ``0..n_x−1``, then
    a ``B × n_y`` array from ``0..n_y−1``; row ``b`` of each gives the resamples
    ``x*_b``, ``y*_b`` (with replacement, the two lists independently), and

        r_b = s(x*_b) / s(y*_b),    b = 1..B.

    ``low`` and ``high`` are the ``α`` and ``1 − α`` quantiles of the ``r_b``,
    ``α = (1 − confidence) / 2``, by linear interpolation between order
    statistics (``numpy.quantile``'s default): with ``r_(1) ≤ … ≤ r_(B)``,
    ``h = 1 + (B − 1) q`` and ``j = ⌊h⌋``, the ``q`` quantile is
    ``r_(j) + (h − j)(r_(j+1) − r_(j))``.

    All three are NaN when either list has fewer than ``MIN_BOOTSTRAP_EPISODES``
    episodes or a non-finite one, or when ``s(y)`` or any ``s(y*_b)`` is not
    positive (a ratio of returns is then undefined or unbounded).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    undefined = (math.nan, math.nan, math.nan)
    xs, ys = [float(v) for v in numerator], [float(v) for v in denominator]
    if min(len(xs), len(ys)) < MIN_BOOTSTRAP_EPISODES or not all(map(math.isfinite, xs + ys)):
        return undefined
    rng = np.random.default_rng(seed)
    x_draws = np.asarray(xs)[rng.integers(0, len(xs), size=(resamples, len(xs)))]
    y_draws = np.asarray(ys)[rng.integers(0, len(ys), size=(resamples, len(ys)))]
    tops = np.array([statistic(row) for row in x_draws.tolist()], dtype=np.float64)
    bottoms = np.array([statistic(row) for row in y_draws.tolist()], dtype=np.float64)
    top, bottom = statistic(xs), statistic(ys)
    finite = math.isfinite(top) and bool(np.isfinite(tops).all())
    if not (finite and bottom > 0 and bool((bottoms > 0).all())):
        return undefined
    tail = (1 - confidence) / 2
    low, high = np.quantile(tops / bottoms, [tail, 1 - tail])
    return top / bottom, float(low), float(high)


def ratio_details(results: Mapping[int, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Claim id → the controllers, episode counts and ``[ratio, low, high]``
    (``ratio_interval`` at the defaults) for each statistic of ``RATIO_STATISTICS``
    of each ratio claim (``RATIO_CLAIMS``) of a job whose phase 2 is finished
    (JSON-able, for ``summary.json``; none before)."""
    if 2 not in results:
        return {}
    evals = results[2]["evals"]
    details = {}
    for claim, (top, bottom) in RATIO_CLAIMS.items():
        numerator, denominator = evals.get(top, []), evals.get(bottom, [])
        details[claim] = {
            "numerator": top,
            "denominator": bottom,
            "episodes": [len(numerator), len(denominator)],
            "confidence": BOOTSTRAP_CONFIDENCE,
            "resamples": BOOTSTRAP_RESAMPLES,
            "seed": BOOTSTRAP_SEED,
            **{
                name: list(ratio_interval(numerator, denominator, statistic=statistic))
                for name, statistic in RATIO_STATISTICS.items()
            },
        }
    return details


def _ratio_text(estimates: Mapping[str, Any]) -> str:
    """What a ratio claim's description says of its episodes and intervals."""
    top, bottom = estimates["episodes"]
    _, low, high = estimates["median"]
    mean, mean_low, mean_high = estimates["mean"]
    return (
        f"{top} / {bottom} episodes; {estimates['confidence']:.0%} bootstrap interval "
        f"[{low:.2f}, {high:.2f}]; ratio of means {mean:.2f} [{mean_low:.2f}, {mean_high:.2f}]"
    )


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _spread(values: list[float]) -> float:
    """Standard error of the mean (NaN below two values)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan


def reward_target(config: DMCConfig, mode: str, paper: float) -> float:
    if mode == "full":
        return FULL_TARGET_FRACTION * paper
    if mode == "short":
        return config.spec.short_target
    return 0.0  # smoke: any finite reward (dm_control rewards are >= 0)


def claims(config: DMCConfig, mode: str, results: dict[int, dict[str, Any]]) -> list[Claim]:
    """The claims of the finished phases, each citing the paper's number (spec/paper.md §3)."""
    spec, task = config.spec, config.task
    out: list[Claim] = []
    if 1 in results:
        r1 = results[1]
        full = r1["evals"].get("full_cem", [])
        out.append(
            at_least(
                "phase1_full_cem_reward",
                f"{task}: median eval reward of full CEM after phase 1 "
                f"({r1['total_env_steps']} env steps, {len(full)} episodes)",
                f"≈ {spec.paper_full:g} (Fig. 4, ≈ 2M steps); random ≈ {spec.random_reward:g}",
                _median(full),
                reward_target(config, mode, spec.paper_full),
            )
        )
        losses = [
            row["model_loss"]
            for row in r1["metrics"]
            if row.get("phase") == 1 and "model_loss" in row
        ]
        ratio = losses[-1] / losses[0] if len(losses) >= 2 else math.nan
        out.append(
            at_most(
                "phase1_model_loss_ratio",
                "model loss (negative bound) of the last phase-1 episode over the first",
                "falls (PlaNet training)",
                ratio,
                1.0,
            )
        )
    if 2 in results:
        r2 = results[2]
        latent = _median(r2["evals"].get("latent_dcem", []))
        out.append(
            at_least(
                "phase2_latent_dcem_reward",
                f"{task}: median eval reward of latent DCEM after phase 2",
                f"≈ {spec.paper_latent:g} (Fig. 4)",
                latent,
                reward_target(config, mode, spec.paper_latent)
                * (1.0 if mode == "full" else LATENT_RATIO_TARGET),
            )
        )
        # sect. 5.2.2 compares with the paper's full CEM; the run's own (config.cem)
        # may be smaller to save CPU, as in `short` (N=100, T=5)
        c, lat = PAPER_CEM.solver, config.latent.solver
        paper_size = f"N={c.n_sample}, T={c.n_iter}"
        denominators = {
            "phase2_latent_over_full": "full CEM",
            "phase2_latent_over_paper_cem": f"full CEM at the paper's size ({paper_size})",
        }
        for claim, estimates in ratio_details(results).items():
            bottom = _median(r2["evals"].get(estimates["denominator"], []))
            out.append(
                at_least(
                    claim,
                    f"latent DCEM / {denominators[claim]} median eval reward on the same "
                    f"(phase-2) model ({_ratio_text(estimates)})",
                    f"≈ {spec.paper_latent / spec.paper_full:.2f} (Fig. 4)",
                    latent / bottom if bottom > 0 else math.nan,
                    LATENT_RATIO_TARGET,
                )
            )
        out.append(
            at_least(
                "trajectories_ratio",
                f"trajectories per control step, full CEM at the paper's size "
                f"({c.n_sample}×{c.n_iter}) / latent DCEM ({lat.n_sample}×{lat.n_iter})",
                "10,000 / 1,000 = 10 (sect. 5.2.2)",
                c.n_sample * c.n_iter / (lat.n_sample * lat.n_iter),
                SAMPLE_RATIO_PAPER,
            )
        )
        speed = r2["speed_ms"]
        out.append(
            at_least(
                "planning_speedup",
                f"planning time per control step, full CEM at the paper's {paper_size} / "
                "latent DCEM, same model and device",
                "≈ 10× fewer samples (sect. 5.2.2)",
                speed["full_cem_paper_ms"] / speed["latent_dcem_ms"],
                SPEED_RATIO_TARGET,
            )
        )
    if 2 in results and 3 in results:
        before = results[2]["evals"].get("latent_dcem", [])
        after = results[3]["evals"].get("latent_dcem", [])
        out.append(
            at_least(
                "phase3_ppo_change",
                "median eval reward of latent DCEM + PPO minus latent DCEM after phase 2 (± "
                f"{math.hypot(_spread(before), _spread(after)):.3g} s.e. of the mean difference)",
                f"≈ +{spec.paper_ppo - spec.paper_latent:g} ({spec.paper_latent:g} → "
                f"{spec.paper_ppo:g}, Fig. 4)",
                _median(after) - _median(before),
                0.0,
            )
        )
    return out


def write_outputs(
    run: RunDirectory, config: DMCConfig, results: dict[int, dict[str, Any]], prefix: str = ""
) -> None:
    """``metrics.csv``, ``eval.csv``, ``phases.csv``, ``speed.csv`` and the
    figures of one job (each name after ``prefix``)."""
    last = results[max(results)]
    run.write_csv(prefix + "metrics", last["metrics"])
    eval_rows: list[dict[str, Any]] = []
    for phase, result in sorted(results.items()):
        for name, rewards in result["evals"].items():
            label = f"{name}+ppo" if phase == 3 else name
            eval_rows += [
                {"phase": phase, "controller": label, "episode": i, "reward": r}
                for i, r in enumerate(rewards)
            ]
    run.write_csv(prefix + "eval", eval_rows)
    run.write_csv(
        prefix + "phases",
        [
            {
                "phase": p,
                "env_steps": r["env_steps"],
                "episodes": r["episodes"],
                "train_seconds": r["train_seconds"],
                "env_steps_per_second": r["env_steps_per_second"],
                **{f"median_{k}": v for k, v in r["eval_median"].items()},
            }
            for p, r in sorted(results.items())
        ],
    )
    if 2 in results:
        run.write_csv(
            prefix + "speed",
            [
                {"controller": k.removesuffix("_ms"), "ms_per_control_step": v}
                for k, v in results[2]["speed_ms"].items()
            ],
        )
    learning_curves(run, config.task, config.spec.random_reward, last["metrics"], prefix)
    eval_figure(run, config, results, eval_rows, prefix)
    diagnostics_figure(run, config.task, last["metrics"], prefix)


OPEN_LOOP_COLUMNS = [f"open_loop_err_{k}" for k in range(1, 13)]


def _series(ax: Any, rows: list[dict[str, Any]], key: str, *style: str, **options: Any) -> None:
    """Plot ``row[key]`` of ``rows`` against their environment steps."""
    ax.plot([r["env_steps"] for r in rows], [r[key] for r in rows], *style, **options)


def diagnostics_figure(
    run: RunDirectory, task: str, rows: list[dict[str, Any]], prefix: str = ""
) -> None:
    """``diagnostics.png``: per episode, the real return beside the model's return
    along it and the return its plans predicted; mean |action|; the decoder's
    spread over the latent box; the k-step open-loop reward error of the
    held-out (evaluation) episodes."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax_ret, ax_act, ax_spread, ax_open = axes.ravel()
    for kind, marker in (("train", "."), ("eval", "o")):
        picked = [r for r in rows if str(r["kind"]).startswith(kind) and "model_return" in r]
        if not picked:
            continue
        _series(ax_ret, picked, "reward", marker, color="k", label=f"real ({kind})")
        for key, color, what in (
            ("model_return", "tab:blue", "model along the episode"),
            ("planned_return", "tab:red", "predicted by the plans"),
        ):
            _series(ax_ret, picked, key, marker, color=color, alpha=0.6, label=f"{what} ({kind})")
        _series(ax_act, picked, "mean_abs_action", marker, label=kind)
        _series(ax_spread, picked, "decoder_spread", marker, label=kind)
    ax_ret.set_ylabel("episode return")
    ax_ret.legend(fontsize=6)
    ax_act.set_ylabel("mean |action| (controller, before noise)")
    ax_act.legend(fontsize=7)
    ax_spread.set(ylabel="decoded-plan std over the latent box", xlabel="environment steps")
    ax_spread.legend(fontsize=7)
    held_out = [r for r in rows if str(r["kind"]).startswith("eval") and OPEN_LOOP_COLUMNS[0] in r]
    if held_out:
        cmap = plt.get_cmap("viridis")
        top = max(r["env_steps"] for r in held_out) or 1
        for r in held_out:
            ks = [k for k, col in enumerate(OPEN_LOOP_COLUMNS, 1) if col in r]
            ax_open.plot(
                ks,
                [r[f"open_loop_err_{k}"] for k in ks],
                color=cmap(r["env_steps"] / top),
                label=f"{r['env_steps']} steps, phase {r['phase']}",
            )
        ax_open.legend(fontsize=5, ncol=2)
    ax_open.set(xlabel="k (open-loop steps)", ylabel="mean |reward error| (held-out episodes)")
    fig.suptitle(f"{task}: diagnostics per episode")
    fig.tight_layout()
    run.save_figure(fig, prefix + "diagnostics")


def learning_curves(
    run: RunDirectory, task: str, random_reward: float, rows: list[dict[str, Any]], prefix: str = ""
) -> None:
    """``learning_curves.png``: episode rewards and the model loss over environment steps."""
    plt = pyplot()
    fig, (ax_r, ax_l) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    colors = {1: "tab:blue", 2: "tab:orange", 3: "tab:green"}
    for phase in (1, 2, 3):
        train = [r for r in rows if r["phase"] == phase and r["kind"] == "train"]
        evals = [r for r in rows if r["phase"] == phase and str(r["kind"]).startswith("eval")]
        losses = [r for r in train if "model_loss" in r]
        color = colors[phase]
        if train:
            label = f"phase {phase} train (noisy)"
            _series(ax_r, train, "reward", ".", color=color, alpha=0.5, label=label)
        if evals:
            _series(ax_r, evals, "reward", "-o", color=color, label=f"phase {phase} eval")
        if losses:
            _series(ax_l, losses, "model_loss", color=color, label=f"phase {phase} model loss")
    ax_r.axhline(random_reward, color="gray", ls=":", label="random policy")
    ax_r.set_ylabel("episode reward")
    ax_r.legend(fontsize=7)
    ax_l.set(ylabel="negative bound", xlabel="environment steps", yscale="symlog")
    ax_l.legend(fontsize=7)
    fig.suptitle(f"{task}: learning curves")
    fig.tight_layout()
    run.save_figure(fig, prefix + "learning_curves")


def eval_figure(
    run: RunDirectory,
    config: DMCConfig,
    results: dict[int, dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    prefix: str,
) -> None:
    """``eval_boxplot.png``: the final evaluations of each controller (with its
    episode count) beside the paper's medians (Fig. 4), and the planning times."""
    plt = pyplot()
    spec = config.spec
    columns = [  # controller, its tick label, the paper's median, the phase it is evaluated in
        ("full_cem", f"full CEM\n(N={config.cem.solver.n_sample})", spec.paper_full, 2),
        ("full_cem_paper", "full CEM\n(N=1000)", spec.paper_full, 2),
        ("latent_dcem", "latent DCEM", spec.paper_latent, 2),
        ("latent_dcem+ppo", "latent DCEM\n+ PPO", spec.paper_ppo, 3),
    ]
    data = []
    for name, _, _, phase in columns:
        picked = [r["reward"] for r in eval_rows if (r["controller"], r["phase"]) == (name, phase)]
        if name == "full_cem" and not picked:
            picked = [r["reward"] for r in eval_rows if r["controller"] == name]
        data.append(picked)
    fig, (ax_b, ax_s) = plt.subplots(1, 2, figsize=(10, 4))
    shown = [i for i, d in enumerate(data) if d]
    if shown:
        ax_b.boxplot([data[i] for i in shown], positions=[i + 1 for i in shown])
    ticks = range(1, len(columns) + 1)
    paper = [column[2] for column in columns]
    ax_b.plot(ticks, paper, "r_", markersize=20, label="paper median (Fig. 4)")
    labels = [f"{column[1]}\n{len(d)} episodes" for column, d in zip(columns, data, strict=True)]
    ax_b.set_xticks(ticks, labels, fontsize=7)
    ax_b.set_ylabel("eval episode reward")
    ax_b.legend(fontsize=7)
    ax_b.set_title(f"{config.task}: noise-free evaluation")
    if 2 in results:
        speed = results[2]["speed_ms"]
        names = list(speed)
        ax_s.bar(range(len(names)), [speed[n] for n in names])
        ax_s.set_xticks(range(len(names)), [n.removesuffix("_ms") for n in names], fontsize=7)
        title = "planning time, same model and device"
        ax_s.set(ylabel="planning ms per control step", yscale="log", title=title)
    fig.tight_layout()
    run.save_figure(fig, prefix + "eval_boxplot")


def write_in_progress(root: Path) -> list[Path]:
    """``metrics.csv``, ``learning_curves.png`` and ``diagnostics.png`` of each
    job of the run in ``root`` as it stands: the metrics of its checkpoint, or
    of its result; returns the ``metrics.csv`` files (one per job with metrics)."""
    config = json.loads((root / "config.json").read_text(encoding="utf-8"))["config"]
    if "runs" not in config:
        raise ValueError(f"{root} predates the job layout: resume it once to convert it")
    runs = config["runs"]
    run = RunDirectory.attach(root)
    written = []
    for settings in runs:
        task, job = settings["task"], job_name(settings["task"], settings["seed"])
        rows = _current_metrics(root, job)
        if rows:
            prefix = "" if len(runs) == 1 else f"{job}-"
            written.append(run.write_csv(prefix + "metrics", rows))
            learning_curves(run, task, TASKS[task].random_reward, rows, prefix)
            diagnostics_figure(run, task, rows, prefix)
    if not written:
        raise ValueError(f"{root} has no metrics yet")
    return written


def _current_metrics(root: Path, job: str) -> list[dict[str, Any]]:
    """The metrics rows of ``job`` so far (none before its first episode)."""
    checkpoint, result = root / "checkpoints" / f"{job}.pt", root / "jobs" / f"{job}.json"
    if checkpoint.exists():
        state = load_state(checkpoint)
        phases = state["results"]
        if state["session"] is not None:
            return list(state["session"]["metrics"])
    elif result.exists():
        phases = json.loads(result.read_text(encoding="utf-8"))["phases"]
    else:
        return []
    return list(phases[-1]["metrics"]) if phases else []


def main(argv: list[str] | None = None) -> int:
    """``python -m validation.dmc.report --run DIR``: the outputs of a run in progress."""
    parser = argparse.ArgumentParser(prog="python -m validation.dmc.report", description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="the run directory (--out)")
    args = parser.parse_args(argv)
    try:
        for path in write_in_progress(args.run):
            print(path)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
