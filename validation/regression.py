"""Energy-based regression: unrolled gradient descent vs DCEM (sect. 5.1, App. B).

``python -m validation.regression --mode {smoke,short,full} --out DIR``

An energy network ``E_θ(x, y)`` is trained so that the output ``ŷ(x)`` of an
inner optimizer over ``y`` (eq. 6, ``ŷ = argmin_y E_θ(x, y)``) matches the
target ``y = x sin x`` on 100 points of ``[0, 2π]``; the loss ``(ŷ − y)²`` is
back-propagated through the inner optimizer. Two inner optimizers, both
started at ``y₀ = 0`` and both trained with 10 steps (spec/paper.md §2):

- unrolled gradient descent, ``y_{t+1} = y_t − η ∇_y E_θ(x, y_t)``, the inner
  gradients taken with ``create_graph=True`` so that the outer gradient flows
  through every step;
- DCEM (``impl.dcem``), 10 iterations of 100 samples and 10 soft elites.

Outputs (in DIR): ``metrics.csv`` (step, method, seed, mse, lr),
``ablation.csv`` (method, seed, steps, mse), the figures ``fig5_left_training``
(training MSE against updates), ``fig5_right_ablation`` (trained at 10 inner
steps, tested at 0…20), ``fig1_energy_surfaces`` and ``fig6_predictions``,
and ``summary.json`` with the claims against the paper's numbers (spec/paper.md §3)
and the measured wall time of one training update of each method, with the
DCEM update split into energy-network work and soft top-k work.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from impl.dcem import DEFAULT_STD_MIN, DCEMStep, dcem
from impl.gaussian import weighted_gaussian_fit
from impl.selection import soft_weights
from validation import harness
from validation.harness import (
    Claim,
    JobContext,
    JobOutput,
    Report,
    RunDirectory,
    at_least,
    at_most,
    positive_int,
    pyplot,
    timed,
)
from validation.training import Schedule, Trainer, apply_update, train

NAME = "regression"

# -- the paper's settings (spec/paper.md §2, "Regression") ----------------------------

N_POINTS = 100
"""Training inputs ``x ∈ linspace(0, 2π, 100)``."""

X_MAX = 2 * math.pi
"""Right end of the input interval."""

HIDDEN = 128
"""Width of the three hidden Softplus layers of ``E(x, y)``."""

LEARNING_RATE = 1e-3
"""Adam's learning rate."""

PLATEAU_PATIENCE = 20
"""ReduceLROnPlateau patience, in scheduler steps."""

PLATEAU_FACTOR = 0.5
"""ReduceLROnPlateau factor."""

SCHEDULE_EVERY = 100
"""The scheduler steps every this many updates on the full-data MSE, which
is also when the training curve is logged."""

CLIP_NORM = 1.0
"""Gradient-norm clip of every update."""

UPDATES_PER_POINT = 3
"""Updates made on each randomly drawn training point."""

PAPER_UPDATES = 100_000
"""Updates of the paper's runs (the curves flatten by ~60k)."""

PAPER_SEEDS = 3
"""Seeds per method in the paper."""

INNER_STEPS = 10
"""Inner steps at training time, for both methods (GD steps, DCEM iterations T)."""

INNER_LR = 0.1
"""Step size ``η`` of unrolled gradient descent."""

N_SAMPLE = 100
"""DCEM samples per iteration ``N``."""

N_ELITE = 10
"""DCEM elites ``k``."""

TAU = 1.0
"""DCEM temperature ``τ``."""

INIT_STD = 7.0
"""DCEM's initial standard deviation ``σ₀`` (``μ₀ = 0``)."""

# -- this script's evaluation choices -------------------------------------------

ABLATION_STEPS = tuple(range(21))
"""Test-time inner steps of the ablation (Fig. 5 right)."""

SMOKE_ABLATION_STEPS = (0, 5, 10, 15, 20)
"""The ablation's steps in smoke mode (each DCEM evaluation costs ~0.1 s per iteration)."""

PREDICTION_STEPS = (0, 5, 10, 15, 20)
"""Inner steps whose predictions Fig. 6 draws."""

EVAL_SEED = 2020
"""Seed of the generator of every DCEM evaluation (curves, ablation): the same
noise each time, so the numbers are reproducible."""

SURFACE_X = 100
"""Grid points along ``x`` of the energy surfaces (Fig. 1)."""

SURFACE_Y = 120
"""Grid points along ``y`` of the energy surfaces."""

SURFACE_Y_RANGE = (-7.0, 4.0)
"""The ``y`` range of the energy surfaces; the target spans about [−4.8, 1.8]."""

SURFACE_FLOOR = 1e-3
"""Floor of the log colour scale of the normalized energy."""

METHODS = ("gd", "dcem")
LABELS = {"gd": "unrolled GD", "dcem": "DCEM"}
COLORS = {"gd": "tab:blue", "dcem": "tab:orange"}


@dataclass(frozen=True)
class ModeSettings:
    """The size of a run.

    Attributes:
        updates: training updates per (method, seed).
        seeds: default number of seeds.
        checkpoint_every: updates between checkpoints.
        timing_updates: updates timed per method for the speed measurement.
        group: seeds trained side by side in one job (see ``ensemble_energy``).
    """

    updates: int
    seeds: int
    checkpoint_every: int
    timing_updates: int
    group: int


MODE_SETTINGS = {
    "smoke": ModeSettings(updates=300, seeds=1, checkpoint_every=100, timing_updates=5, group=1),
    "short": ModeSettings(
        updates=9_000, seeds=2, checkpoint_every=1_500, timing_updates=50, group=1
    ),
    "full": ModeSettings(
        updates=PAPER_UPDATES,
        seeds=PAPER_SEEDS,
        checkpoint_every=2_000,
        timing_updates=100,
        group=3,
    ),
}


@dataclass(frozen=True)
class Targets:
    """The pass bounds of one mode's claims (see ``claims``)."""

    train_mse: float
    gd_ratio: float
    dcem_ratio: float
    gd_over_dcem: float


TARGETS = {
    "short": Targets(train_mse=1e-2, gd_ratio=10.0, dcem_ratio=3.0, gd_over_dcem=10.0),
    "full": Targets(train_mse=1e-3, gd_ratio=100.0, dcem_ratio=3.0, gd_over_dcem=100.0),
}

SMOKE_LEARNING_FACTOR = 2.0
"""Smoke mode passes when the trained predictor's MSE is at least this many
times below that of its starting point ``ŷ = 0`` (the MSE ``mean(y²) ≈ 6.3``)."""

ENERGY_SHARE = 0.5
"""The DCEM update is 'dominated by E' when E's share of its time is at least this."""


# -- the model ---------------------------------------------------------------------


class EnergyNet(nn.Module):
    """``E_θ(x, y)``: MLP ``[x, y] → 128 → 128 → 128 → 1`` with Softplus (spec/paper.md §2)."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(2, hidden),
            nn.Softplus(),
            nn.Linear(hidden, hidden),
            nn.Softplus(),
            nn.Linear(hidden, hidden),
            nn.Softplus(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Energies ``(...)`` of inputs ``x (..., 1)`` and outputs ``y (..., 1)``."""
        out: Tensor = self.layers(torch.cat([x, y], dim=-1))
        return out.squeeze(-1)


def make_net(seed: int, device: torch.device) -> EnergyNet:
    """A freshly initialized energy net; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = EnergyNet()
    return net.to(device)


def dataset(device: torch.device) -> tuple[Tensor, Tensor]:
    """The training data ``x ∈ linspace(0, 2π, 100)``, ``y = x sin x``, each ``(100, 1)``."""
    x = torch.linspace(0.0, X_MAX, N_POINTS, device=device).unsqueeze(-1)
    return x, x * torch.sin(x)


def ensemble_energy(nets: Sequence[EnergyNet], x: Tensor, y: Tensor) -> Tensor:
    """Energies ``(S, M)`` of ``S`` independent nets, net ``s`` on ``x[s], y[s]`` ``(M, 1)``.

    The seeds of one job are trained side by side so that the inner optimizer
    (above all DCEM's soft top-k, whose cost on the CPU is per operation, not
    per element) runs once per update for all of them; the nets share nothing.
    """
    return torch.stack([net(x[s], y[s]) for s, net in enumerate(nets)])


def predict_gd(nets: Sequence[EnergyNet], x: Tensor, steps: int, *, create_graph: bool) -> Tensor:
    """Unrolled gradient descent on ``y ↦ E_s(x, y)`` from ``y₀ = 0``, for each net ``s``.

    ``y_{t+1} = y_t − η ∇_y E(x, y_t)`` for ``steps`` steps (eq. 6 approximated
    as in Belanger et al. 2017). With ``create_graph`` the inner gradients are
    themselves differentiable (``torch.autograd.grad(..., create_graph=True)``),
    so that ``ŷ`` is differentiable in θ.

    Args:
        x: ``(S, B, 1)`` inputs, ``B`` per net.
        steps: inner steps; 0 returns ``y₀``.

    Returns:
        ``ŷ``, ``(S, B, 1)``.
    """
    y = torch.zeros_like(x, requires_grad=True)
    with torch.enable_grad():
        for _ in range(steps):
            energy = ensemble_energy(nets, x, y).sum()  # each y only enters its own E
            (grad,) = torch.autograd.grad(energy, y, create_graph=create_graph)
            y = y - INNER_LR * grad
    return y if create_graph else y.detach()


def energy_objective(nets: Sequence[EnergyNet], x: Tensor) -> Callable[[Tensor], Tensor]:
    """``f(Y) = E_s(x, Y)`` for DCEM on ``S·B`` problems (problem ``s·B + b`` is
    input ``x[s, b]`` under net ``s``): candidates ``(S·B, N, 1)`` → energies ``(S·B, N)``."""
    n_nets, batch = x.shape[0], x.shape[1]

    def f(y: Tensor) -> Tensor:
        n = y.shape[1]
        xs = x.unsqueeze(2).expand(-1, -1, n, -1).reshape(n_nets, batch * n, 1)
        energies = ensemble_energy(nets, xs, y.reshape(n_nets, batch * n, 1))
        return energies.reshape(n_nets * batch, n)

    return f


def predict_dcem(
    nets: Sequence[EnergyNet],
    x: Tensor,
    iterations: int,
    generator: torch.Generator,
    callback: Callable[[DCEMStep], None] | None = None,
) -> Tensor:
    """DCEM on ``y ↦ E_s(x, y)`` from ``μ₀ = 0``, ``σ₀ = 7`` (spec/paper.md §2; Alg. 1, eq. 5).

    Args:
        x: ``(S, B, 1)`` inputs, ``B`` per net.
        iterations: DCEM iterations ``T``; 0 returns ``μ₀``.
        generator: the sampling noise.

    Returns:
        ``ŷ = μ_{T+1}``, ``(S, B, 1)``, differentiable in θ.
    """
    mean = torch.zeros_like(x)
    if iterations == 0:
        return mean
    result = dcem(
        energy_objective(nets, x),
        mean.reshape(-1, 1),
        INIT_STD,
        n_sample=N_SAMPLE,
        n_elite=N_ELITE,
        n_iter=iterations,
        tau=TAU,
        normalize=True,
        generator=generator,
        callback=callback,
        validate=False,  # μ₀ = 0 and σ₀ = 7 are valid by construction
    )
    return result.x.reshape(x.shape)


def predict(
    method: str,
    nets: Sequence[EnergyNet],
    x: Tensor,
    steps: int,
    generator: torch.Generator,
    *,
    train: bool,
) -> Tensor:
    """The predictions ``ŷ (S, B, 1)`` of ``method`` with ``steps`` inner steps."""
    if method == "gd":
        return predict_gd(nets, x, steps, create_graph=train)
    with torch.set_grad_enabled(train):
        return predict_dcem(nets, x, steps, generator)


def evaluation_predictions(
    method: str, net: EnergyNet, steps: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Predictions ``(100,)`` and targets ``(100,)`` on the training inputs; DCEM
    draws from a generator seeded ``EVAL_SEED``, the same for every net."""
    x, y = dataset(device)
    generator = torch.Generator(device=device).manual_seed(EVAL_SEED)
    y_hat = predict(method, [net], x.unsqueeze(0), steps, generator, train=False)
    return y_hat.reshape(-1), y.reshape(-1)


def evaluation_mse(method: str, net: EnergyNet, steps: int, device: torch.device) -> float:
    """The MSE over the 100 training points with ``steps`` inner steps (the
    paper's "training MSE")."""
    y_hat, y = evaluation_predictions(method, net, steps, device)
    return float(((y_hat - y) ** 2).mean())


# -- one training job ------------------------------------------------------------------


@dataclass(frozen=True)
class TrainJob:
    """The training runs of ``method`` with ``seeds``, side by side; each seed
    has its own net, Adam, scheduler and stream of training points."""

    method: str
    seeds: tuple[int, ...]
    updates: int
    checkpoint_every: int
    device: str
    ablation_steps: tuple[int, ...] = ABLATION_STEPS

    @property
    def name(self) -> str:
        return f"{self.method}-seed" + "-".join(str(seed) for seed in self.seeds)


def job_seed(seeds: Sequence[int]) -> int:
    """The seed of a job's generator (training points and DCEM noise)."""
    total = 7919 * len(seeds)
    for i, seed in enumerate(seeds):
        total += seed * 1_000**i
    return total


class EnergyTrainer(Trainer):
    """The nets of one job: Adam and ReduceLROnPlateau each (spec/paper.md §2).

    Every ``UPDATES_PER_POINT`` updates each seed draws a new training point;
    every ``SCHEDULE_EVERY`` updates each seed's full-data MSE is logged in
    ``curves`` and steps its scheduler.
    """

    def __init__(self, method: str, seeds: Sequence[int], device: torch.device) -> None:
        self.method, self.device = method, device
        self.nets = [make_net(seed, device) for seed in seeds]
        self.modules = self.nets
        self.use_adam(LEARNING_RATE, PLATEAU_PATIENCE, PLATEAU_FACTOR)
        self.generator = torch.Generator(device=device).manual_seed(job_seed(seeds))
        self.points = [0] * len(self.nets)
        self.curves: list[list[dict[str, float]]] = [[] for _ in self.nets]

    def start(self) -> None:
        self.curves = [
            [{"step": 0, "mse": self.mse(net), "lr": LEARNING_RATE}] for net in self.nets
        ]

    def mse(self, net: EnergyNet) -> float:
        return evaluation_mse(self.method, net, INNER_STEPS, self.device)

    def point_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Losses ``(S,)`` of ``(ŷ_s(x_s) − y_s)²``, ``x, y (S, 1, 1)``."""
        y_hat = predict(self.method, self.nets, x, INNER_STEPS, self.generator, train=True)
        return ((y_hat - y) ** 2).reshape(-1)

    def loss(self, step: int) -> Tensor:
        if step % UPDATES_PER_POINT == 0:
            draw = torch.randint(N_POINTS, (len(self.nets),), generator=self.generator)
            self.points = [int(i) for i in draw]
        xs, ys = dataset(self.device)
        index = torch.tensor(self.points, device=self.device)
        return self.point_loss(xs[index].unsqueeze(1), ys[index].unsqueeze(1))

    def validate(self, step: int) -> list[float]:
        return [self.mse(net) for net in self.nets]

    def after_validation(self, step: int, metrics: Sequence[float]) -> dict[str, str]:
        for curve, opt, mse in zip(self.curves, self.optimizers, metrics, strict=True):
            curve.append({"step": step, "mse": mse, "lr": opt.param_groups[0]["lr"]})
        return {"mse": " ".join(f"{mse:.1e}" for mse in metrics)}

    def extra_state(self) -> dict[str, Any]:
        return {"points": self.points, "curves": self.curves}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.points = [int(p) for p in state["points"]]
        self.curves = [list(curve) for curve in state["curves"]]


def evaluate(job: TrainJob, trainer: EnergyTrainer, s: int, seconds: float) -> dict[str, Any]:
    """Seed ``s``'s result: training curve, ablation, predictions, energy surface."""
    device = torch.device(job.device)
    net = trainer.nets[s].eval()
    ablation, predictions, predicted = [], [], []
    for steps in job.ablation_steps:
        y_hat, y = evaluation_predictions(job.method, net, steps, device)
        ablation.append(float(((y_hat - y) ** 2).mean()))
        if steps in PREDICTION_STEPS:
            predicted.append(steps)
            predictions.append(y_hat.tolist())
    grid_x, grid_y, energy = energy_surface(net, device)
    return {
        "method": job.method,
        "seed": job.seeds[s],
        "updates": job.updates,
        "train_seconds": seconds,
        "seeds_side_by_side": len(job.seeds),
        "curve": trainer.curves[s],
        "ablation": {"steps": list(job.ablation_steps), "mse": ablation},
        "predictions": {
            "x": dataset(device)[0].reshape(-1).tolist(),
            "steps": predicted,
            "y": predictions,
        },
        "surface": {"x": grid_x, "y": grid_y, "energy": energy},
    }


def energy_surface(
    net: EnergyNet, device: torch.device
) -> tuple[list[float], list[float], list[list[float]]]:
    """``E(x, y)`` on a grid, normalized to [0, 1] over ``y`` for each ``x`` (Fig. 1).

    Returns the ``x`` grid, the ``y`` grid and the normalized energies
    ``[i_y][i_x]``.
    """
    gx = torch.linspace(0.0, X_MAX, SURFACE_X, device=device)
    gy = torch.linspace(*SURFACE_Y_RANGE, SURFACE_Y, device=device)
    yy, xx = torch.meshgrid(gy, gx, indexing="ij")
    with torch.no_grad():
        energy = net(xx.unsqueeze(-1), yy.unsqueeze(-1))
    low = energy.amin(0, keepdim=True)
    high = energy.amax(0, keepdim=True)
    normalized = (energy - low) / (high - low).clamp_min(1e-12)
    return gx.tolist(), gy.tolist(), normalized.tolist()


# -- speed ------------------------------------------------------------------------


def measure_speed(repeats: int, device: torch.device) -> dict[str, float]:
    """Wall time of one training update of each method (one net, as in the
    paper), of one update of three nets side by side, and a split of DCEM's.

    The DCEM update is timed whole; then its parts are replayed alone on the
    same shapes: the energy net's forward and backward over the T = 10
    batches of N = 100 candidates it evaluates (gradients to θ and to the
    candidates, as in the update), the soft top-k (value normalization + LML,
    forward and backward, on 10 rows of 100 values) and the Gaussian fit
    (Prop. 3, forward and backward). The remainder is sampling, the loss,
    clipping, Adam and autograd bookkeeping. Milliseconds per update.
    """
    xs, ys = dataset(device)
    timings: dict[str, float] = {}
    for method in METHODS:
        for count, key in ((1, f"{method}_update_ms"), (3, f"{method}_update_3_seeds_ms")):
            trainer = EnergyTrainer(method, range(count), device)
            x = xs[50:51].expand(count, 1).unsqueeze(1)
            y = ys[50:51].expand(count, 1).unsqueeze(1)

            def one_update(trainer: EnergyTrainer = trainer, x: Tensor = x, y: Tensor = y) -> None:
                apply_update(trainer, trainer.point_loss(x, y), CLIP_NORM)

            timings[key] = 1e3 * timed(one_update, repeats)

    nets = [make_net(0, device)]
    x = xs[50:51].unsqueeze(0)
    generator = torch.Generator(device=device).manual_seed(0)
    samples: list[Tensor] = []
    predict_dcem(nets, x, INNER_STEPS, generator, lambda step: samples.append(step.samples))
    x_in = x.expand(-1, N_SAMPLE, -1)
    grad_out = torch.randn(1, N_SAMPLE, generator=generator, device=device)

    def energy_part() -> None:
        for candidates in samples:
            leaf = candidates.detach().requires_grad_(True)
            (ensemble_energy(nets, x_in, leaf) * grad_out).sum().backward()  # type: ignore[no-untyped-call]

    with torch.no_grad():
        values = [ensemble_energy(nets, x_in, candidates) for candidates in samples]
    finite = torch.ones(1, N_SAMPLE, dtype=torch.bool, device=device)

    def topk_part() -> None:
        for row in values:
            leaf = row.clone().requires_grad_(True)
            weights = soft_weights(leaf, finite, N_ELITE, TAU, True).weights
            (weights * grad_out).sum().backward()  # type: ignore[no-untyped-call]

    def fit_part() -> None:
        for candidates, row in zip(samples, values, strict=True):
            leaf = candidates.detach().requires_grad_(True)
            weights = (row.softmax(-1) * N_ELITE).requires_grad_(True)
            mean, std = weighted_gaussian_fit(leaf, weights, N_ELITE, DEFAULT_STD_MIN)
            (mean.sum() + std.sum()).backward()  # type: ignore[no-untyped-call]

    rest = timings["dcem_update_ms"]
    for part, work in (("energy", energy_part), ("topk", topk_part), ("gaussian_fit", fit_part)):
        timings[f"dcem_{part}_ms"] = 1e3 * timed(work, repeats)
        rest -= timings[f"dcem_{part}_ms"]
    timings["dcem_rest_ms"] = rest
    for part in ("energy", "topk"):
        timings[f"dcem_{part}_share"] = timings[f"dcem_{part}_ms"] / timings["dcem_update_ms"]
    return timings


# -- aggregation, claims, figures ------------------------------------------------------


def mean_over_seeds(results: Sequence[dict[str, Any]], method: str) -> dict[int, float]:
    """The ablation MSE of ``method`` by test-time step count, averaged over seeds."""
    runs = [r["ablation"] for r in results if r["method"] == method]
    rows = [r["mse"] for r in runs]
    means = [sum(column) / len(column) for column in zip(*rows, strict=True)]
    return dict(zip(runs[0]["steps"], means, strict=True))


def claim_list(
    mode: str, results: Sequence[dict[str, Any]], speed: dict[str, float]
) -> list[Claim]:
    """The claims of ``mode`` (spec/paper.md §3; targets of issue 4)."""
    gd = mean_over_seeds(results, "gd")
    dc = mean_over_seeds(results, "dcem")
    share = at_least(
        "speed-dcem-energy-share",
        "share of the DCEM update's time spent evaluating E (forward+backward)",
        "— (issue 4: dominated by E)",
        speed["dcem_energy_share"],
        ENERGY_SHARE,
    )
    if mode == "smoke":
        out = []
        for method in METHODS:
            start = mean_over_seeds(results, method)[0]  # ŷ = y₀ = μ₀ = 0
            best = [min(p["mse"] for p in r["curve"][1:]) for r in results if r["method"] == method]
            out.append(
                at_least(
                    f"smoke-{method}-learns",
                    f"{LABELS[method]}: MSE of the start ŷ = 0 / best logged training MSE",
                    "converges to ≈ 3e-4",
                    start / (sum(best) / len(best)),
                    SMOKE_LEARNING_FACTOR,
                )
            )
        bad = sum(not math.isfinite(point["mse"]) for r in results for point in r["curve"]) + sum(
            not math.isfinite(v) for r in results for v in r["ablation"]["mse"]
        )
        out.append(at_most("smoke-finite", "non-finite MSE values", "—", float(bad), 0.0))
        return [*out, share]
    t = TARGETS[mode]
    check = {"<=": at_most, ">=": at_least}
    table = (  # id, description, paper, measured, comparison, bound
        ("fig5-left-gd-mse", "unrolled GD: final training MSE (10 inner steps, mean over seeds)",
         "≈ 3e-4", gd[10], "<=", t.train_mse),
        ("fig5-left-dcem-mse", "DCEM: final training MSE (T = 10, mean over seeds)", "≈ 3e-4",
         dc[10], "<=", t.train_mse),
        ("fig5-right-gd-20", "unrolled GD trained at 10: MSE tested at 20 steps", "≈ 3",
         gd[20], ">=", t.train_mse * t.gd_ratio),
        ("fig5-right-dcem-20", "DCEM trained at T = 10: MSE tested at T = 20", "≈ 4e-4",
         dc[20], "<=", t.train_mse * t.dcem_ratio),
        ("fig5-right-gd-20-vs-10", "unrolled GD: MSE at 20 steps / MSE at 10 steps",
         "≈ 1e4 (3 / 3e-4)", gd[20] / gd[10], ">=", t.gd_ratio),
        ("fig5-right-dcem-20-vs-10", "DCEM: MSE at T = 20 / MSE at T = 10",
         "≈ 1.3 (4e-4 / 3e-4, flat)", dc[20] / dc[10], "<=", t.dcem_ratio),
        ("fig5-right-15-gd-over-dcem", "MSE at 15 inner steps: unrolled GD / DCEM",
         "≈ 1.8e3 (0.7 / 4e-4)", gd[15] / dc[15], ">=", t.gd_over_dcem),
        ("fig5-right-20-gd-over-dcem", "MSE at 20 inner steps: unrolled GD / DCEM",
         "≈ 7.5e3 (3 / 4e-4)", gd[20] / dc[20], ">=", t.gd_over_dcem),
    )  # fmt: skip
    return [*(check[op](i, d, p, m, b) for i, d, p, m, op, b in table), share]


def _mean_and_range(
    ax: Any, xs: Sequence[float], table: Sequence[Sequence[float]], method: str, style: str = "-"
) -> None:
    """Plot the mean over the rows of ``table`` against ``xs``, shading their range."""
    columns = list(zip(*table, strict=True))
    mean = [sum(col) / len(col) for col in columns]
    ax.plot(xs, mean, style, ms=3, color=COLORS[method], label=LABELS[method])
    low, high = [min(col) for col in columns], [max(col) for col in columns]
    ax.fill_between(xs, low, high, color=COLORS[method], alpha=0.25, linewidth=0)


def _save(fig: Any, ax: Any, run: RunDirectory, name: str, **labels: str) -> None:
    ax.set(yscale="log", ylabel="training MSE", **labels)
    ax.legend()
    fig.tight_layout()
    run.save_figure(fig, name)


def figure_training(run: RunDirectory, results: Sequence[dict[str, Any]]) -> None:
    """Fig. 5 left: full-data training MSE against updates, mean and range over seeds."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method in METHODS:
        curves = [r["curve"] for r in results if r["method"] == method]
        table = [[point["mse"] for point in curve] for curve in curves]
        _mean_and_range(ax, [point["step"] for point in curves[0]], table, method)
    title = f"Training (mean, range over {len(curves)} seeds)"
    _save(fig, ax, run, "fig5_left_training", xlabel="updates", title=title)


def figure_ablation(run: RunDirectory, results: Sequence[dict[str, Any]]) -> None:
    """Fig. 5 right: trained at 10 inner steps, MSE tested at 0…20 steps."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method in METHODS:
        runs = [r["ablation"] for r in results if r["method"] == method]
        _mean_and_range(ax, runs[0]["steps"], [r["mse"] for r in runs], method, "o-")
    ax.axvline(INNER_STEPS, color="gray", linestyle=":", label="trained at 10")
    ax.set(xlabel="inner-loop iterations at test time")
    _save(fig, ax, run, "fig5_right_ablation", title="Inner-step ablation (mean, range over seeds)")


def _first_seed(results: Sequence[dict[str, Any]], method: str) -> dict[str, Any]:
    return min((r for r in results if r["method"] == method), key=lambda r: int(r["seed"]))


def figure_surfaces(run: RunDirectory, results: Sequence[dict[str, Any]]) -> None:
    """Fig. 1: the normalized, log-scaled energy surfaces (lighter = lower energy)."""
    plt = pyplot()
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, method in zip(axes, METHODS, strict=True):
        r = _first_seed(results, method)
        s = r["surface"]
        energy = [[max(v, SURFACE_FLOOR) for v in row] for row in s["energy"]]
        mesh = ax.pcolormesh(
            s["x"],
            s["y"],
            energy,
            shading="auto",
            cmap="viridis_r",
            norm=LogNorm(vmin=SURFACE_FLOOR, vmax=1.0),
        )
        xs = r["predictions"]["x"]
        ax.plot(xs, [v * math.sin(v) for v in xs], color="black", lw=2, label="target")
        ax.set(title=f"{LABELS[method]} (seed {r['seed']})", xlabel="x")
    axes[0].set_ylabel("y")
    axes[0].legend(loc="lower left")
    fig.colorbar(mesh, ax=axes, label="normalized energy")
    run.save_figure(fig, "fig1_energy_surfaces", bbox_inches="tight")


def figure_predictions(run: RunDirectory, results: Sequence[dict[str, Any]]) -> None:
    """Fig. 6: predictions for several test-time inner-step counts against the target."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, method in zip(axes, METHODS, strict=True):
        r = _first_seed(results, method)
        p = r["predictions"]
        ax.plot(p["x"], [v * math.sin(v) for v in p["x"]], color="black", lw=2.5, label="target")
        for i, (steps, ys) in enumerate(zip(p["steps"], p["y"], strict=True)):
            color = cmap(i / max(1, len(p["steps"]) - 1))
            ax.plot(p["x"], ys, color=color, lw=1.2, label=f"{steps} steps")
        ax.set_title(f"{LABELS[method]} (seed {r['seed']}), trained at 10")
        ax.set_xlabel("x")
        ax.set_ylim(-8, 5)
    axes[0].set_ylabel("y")
    axes[1].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    run.save_figure(fig, "fig6_predictions")


def write_tables(run: RunDirectory, results: Sequence[dict[str, Any]]) -> None:
    """``metrics.csv`` (the training curves) and ``ablation.csv``."""
    metrics = [
        dict(step=p["step"], method=r["method"], seed=r["seed"], mse=p["mse"], lr=p["lr"])
        for r in results
        for p in r["curve"]
    ]
    run.write_csv("metrics", metrics)
    ablation = [
        {"method": r["method"], "seed": r["seed"], "steps": s, "mse": m}
        for r in results
        for s, m in zip(r["ablation"]["steps"], r["ablation"]["mse"], strict=True)
    ]
    run.write_csv("ablation", ablation)


def partition(seeds: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """``seeds`` in consecutive groups of at most ``size``."""
    return [tuple(seeds[i : i + size]) for i in range(0, len(seeds), size)]


# -- the experiment -------------------------------------------------------------------


class Regression:
    """The ``Experiment`` (validation.harness) of this module."""

    name = NAME
    description = __doc__.splitlines()[0] if __doc__ else NAME
    strict_smoke = False  # the speed claim depends on the machine's load

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--updates", type=positive_int, default=None, help="training updates per run"
        )
        parser.add_argument(
            "--group", type=positive_int, default=None, help="seeds trained side by side in a job"
        )

    def configure(self, args: argparse.Namespace) -> dict[str, Any]:
        settings = MODE_SETTINGS[args.mode]
        return {
            "seeds": args.seeds or list(range(settings.seeds)),
            "updates": args.updates or settings.updates,
            "checkpoint_every": settings.checkpoint_every,
            "seeds_per_job": args.group or settings.group,
            "device": args.device,
            "settings": {
                "n_points": N_POINTS,
                "hidden": HIDDEN,
                "lr": LEARNING_RATE,
                "plateau_patience": PLATEAU_PATIENCE,
                "plateau_factor": PLATEAU_FACTOR,
                "schedule_every": SCHEDULE_EVERY,
                "clip_norm": CLIP_NORM,
                "updates_per_point": UPDATES_PER_POINT,
                "inner_steps": INNER_STEPS,
                "inner_lr": INNER_LR,
                "n_sample": N_SAMPLE,
                "n_elite": N_ELITE,
                "tau": TAU,
                "init_std": INIT_STD,
                "eval_seed": EVAL_SEED,
            },
            "mode_settings": asdict(settings),
        }

    def jobs(self, config: dict[str, Any], mode: str) -> list[TrainJob]:
        ablation = SMOKE_ABLATION_STEPS if mode == "smoke" else ABLATION_STEPS
        return [
            TrainJob(
                method,
                group,
                config["updates"],
                config["checkpoint_every"],
                config["device"],
                ablation,
            )
            for method in ("dcem", "gd")
            for group in partition(config["seeds"], config["seeds_per_job"])
        ]

    def run_job(self, job: TrainJob, ctx: JobContext) -> JobOutput | None:
        device = torch.device(job.device)
        trainer = EnergyTrainer(job.method, job.seeds, device)
        schedule = Schedule(job.updates, SCHEDULE_EVERY, job.checkpoint_every, CLIP_NORM)
        seconds = train(trainer, schedule, ctx, job.name)
        if seconds is None:
            return None
        runs = [evaluate(job, trainer, s, seconds) for s in range(len(job.seeds))]
        return JobOutput({"runs": runs})

    def figures(
        self, config: dict[str, Any], results: Sequence[dict[str, Any]], run: RunDirectory
    ) -> None:
        runs = [seed_run for result in results for seed_run in result["runs"]]
        write_tables(run, runs)
        figure_training(run, runs)
        figure_ablation(run, runs)
        figure_surfaces(run, runs)
        figure_predictions(run, runs)

    def claims(
        self, config: dict[str, Any], results: Sequence[dict[str, Any]], run: RunDirectory
    ) -> Report:
        runs = [seed_run for result in results for seed_run in result["runs"]]
        torch.set_num_threads(1)  # the speed of an update as a worker runs it
        timing_updates = MODE_SETTINGS[run.mode].timing_updates
        speed = measure_speed(timing_updates, torch.device(config["device"]))
        print("speed (ms per update): " + ", ".join(f"{k}={v:.3g}" for k, v in speed.items()))
        gd, dc = mean_over_seeds(runs, "gd"), mean_over_seeds(runs, "dcem")
        details = {
            "speed_ms": speed,
            "ablation_mean_mse": {
                "steps": list(gd),
                "gd": list(gd.values()),
                "dcem": list(dc.values()),
            },
            "train_seconds": {f"{r['method']}-seed{r['seed']}": r["train_seconds"] for r in runs},
            "updates": config["updates"],
            "seeds": config["seeds"],
        }
        return Report(claim_list(run.mode, runs, speed), details)


EXPERIMENT = Regression()


def main(argv: Sequence[str] | None = None) -> int:
    return harness.main(EXPERIMENT, argv)


if __name__ == "__main__":
    sys.exit(main())
