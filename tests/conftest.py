"""Hypothesis profiles and shared fixtures.

Profiles (select with ``pytest --hypothesis-profile=NAME`` or the
``HYPOTHESIS_PROFILE`` environment variable):

- ``ci`` (default): few examples, derandomized, so that the whole suite runs
  in minutes on two cores and a CI run is reproducible;
- ``dev``: Hypothesis' defaults (100 examples, random);
- ``thorough``: 1,000 random examples per property.
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=30, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("dev", max_examples=100, **_COMMON)
settings.register_profile("thorough", max_examples=1000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Tests are single-threaded per process: timing-free, and stable on 2 cores.
torch.set_num_threads(1)
