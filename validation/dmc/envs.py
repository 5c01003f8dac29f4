"""DeepMind Control Suite tasks with state observations (sect. 5.2.2).

``DMCEnv`` loads ``domain.name`` headless, repeats each action
``action_repeat`` times (summing rewards), flattens the observation dict
into one float32 vector, and exposes its random state so that a checkpoint
taken between episodes restores the exact same future episodes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from validation.dmc.config import TASKS


@dataclass(frozen=True)
class Step:
    """The result of one control step: observation ``(obs_dim,)``, summed reward, episode end."""

    observation: np.ndarray[Any, np.dtype[np.float32]]
    reward: float
    done: bool


class DMCEnv:
    """One seeded ``dm_control.suite`` environment with action repeat.

    Args:
        task: ``"cheetah.run"`` or ``"walker.walk"``.
        seed: seeds the task's ``numpy.random.RandomState``.
        time_limit: episode length in seconds (None: the suite default, 10 s).
    """

    def __init__(self, task: str, seed: int, time_limit: float | None = None) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {sorted(TASKS)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # glfw complains about a missing display
            from absl import logging as absl_logging
            from dm_control import suite

        absl_logging.set_verbosity(absl_logging.ERROR)  # a MuJoCo deprecation note per load

        spec = TASKS[task]
        kwargs: dict[str, Any] = {"random": seed}
        if time_limit is not None:
            kwargs["time_limit"] = time_limit
        self._env = suite.load(spec.domain, spec.name, task_kwargs=kwargs)
        self.action_repeat = spec.action_repeat
        action_spec = self._env.action_spec()
        self.action_dim = int(action_spec.shape[0])
        self.action_lb = torch.tensor(np.array(action_spec.minimum), dtype=torch.float32)
        self.action_ub = torch.tensor(np.array(action_spec.maximum), dtype=torch.float32)
        step_limit = float(self._env._step_limit)
        self.episode_length = math.ceil(step_limit / self.action_repeat)
        """Control steps per episode."""
        self.obs_dim = sum(
            int(np.prod(item.shape)) for item in self._env.observation_spec().values()
        )

    @staticmethod
    def _flatten(observation: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
        parts = [np.asarray(value, dtype=np.float32).reshape(-1) for value in observation.values()]
        return np.concatenate(parts)

    def reset(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Start an episode; the first observation ``(obs_dim,)``."""
        return self._flatten(self._env.reset().observation)

    def step(self, action: np.ndarray[Any, np.dtype[Any]]) -> Step:
        """Apply ``action (action_dim,)`` for ``action_repeat`` simulator steps."""
        total = 0.0
        time_step = None
        for _ in range(self.action_repeat):
            time_step = self._env.step(action)
            total += float(time_step.reward or 0.0)
            if time_step.last():
                break
        assert time_step is not None
        return Step(self._flatten(time_step.observation), total, bool(time_step.last()))

    def get_rng_state(self) -> dict[str, Any]:
        """The task's random state as tensors and numbers (``weights_only``-loadable)."""
        kind, keys, pos, has_gauss, cached = self._env.task.random.get_state()
        return {
            "kind": str(kind),
            "keys": torch.as_tensor(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }

    def set_rng_state(self, state: dict[str, Any]) -> None:
        keys = np.asarray(state["keys"].numpy(), dtype=np.uint32)
        self._env.task.random.set_state(
            (state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"])
        )
