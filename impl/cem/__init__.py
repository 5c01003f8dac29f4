"""The composable CEM/DCEM solver (spec/cem.md).

| module | holds |
|---|---|
| ``impl.cem.solver`` | ``solve(f, init_mean, init_std, options, ...)``: the loop |
| ``impl.cem.state`` | ``CEMState``, the explicit state between iterations |
| ``impl.cem.step`` | ``step``, one pure iteration, and its ``Problem`` |
| ``impl.cem.samplers`` | the box, noise sources (white, pre-drawn, colored), truncated |
| | and variance-constrained sampling, proposals |
| ``impl.cem.selectors`` | hard top-k, soft LML top-k, exponentially weighted elites |
| ``impl.cem.updates`` | the weighted Gaussian MLE with the σ floor, smoothing |
| ``impl.cem.differentiation`` | truncated and checkpointed differentiation |
| ``impl.cem.memory`` | opt-in work buffers |
| ``impl.cem.inputs`` | argument checks |
| ``impl.cem.result`` | ``DCEMResult``, ``DCEMStep`` |

The options of a solve are one ``impl.options.CEMOptions``.
"""

from impl.cem.result import DCEMResult, DCEMStep
from impl.cem.samplers import (
    Box,
    ColoredNoise,
    GaussianSampler,
    NoiseSource,
    PreDrawnNoise,
    WhiteNoise,
    truncate_noise,
)
from impl.cem.selectors import HardTopK, Selector, SoftTopK, WeightedElites, selector_for
from impl.cem.solver import solve
from impl.cem.state import CEMState, initial_state
from impl.cem.step import Problem, StepOutcome, step
from impl.cem.updates import GaussianUpdate
from impl.options import CEMOptions

__all__ = [
    "Box",
    "CEMOptions",
    "CEMState",
    "ColoredNoise",
    "DCEMResult",
    "DCEMStep",
    "GaussianSampler",
    "GaussianUpdate",
    "HardTopK",
    "NoiseSource",
    "PreDrawnNoise",
    "Problem",
    "Selector",
    "SoftTopK",
    "StepOutcome",
    "WeightedElites",
    "WhiteNoise",
    "initial_state",
    "selector_for",
    "solve",
    "step",
    "truncate_noise",
]
