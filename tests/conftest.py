"""Hypothesis profiles and shared fixtures.

Profiles (select with ``pytest --hypothesis-profile=NAME`` or the
``HYPOTHESIS_PROFILE`` environment variable):

- ``ci`` (default): few examples, derandomized, so that the whole suite runs
  in minutes on two cores and a CI run is reproducible;
- ``dev``: Hypothesis' defaults (100 examples, random);
- ``thorough``: 1,000 random examples per property.

Device: ``pytest --device cuda`` runs the device-parametrized tests
(``tests/test_device.py``, through the ``device`` fixture) on that device;
the default is ``cpu``. An unavailable device is a usage error, not a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings

_COMMON: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=30, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("dev", max_examples=100, **_COMMON)
settings.register_profile("thorough", max_examples=1000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Tests are single-threaded per process: timing-free, and stable on 2 cores.
torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        help="torch device of the device-parametrized tests (cpu, cuda, cuda:1, ...); default cpu",
    )


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("--device")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise pytest.UsageError(f"--device {name!r} is not a torch device: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {name!r}: torch.cuda.is_available() is False")
    if device.type not in ("cpu", "cuda"):
        raise pytest.UsageError(f"--device {name!r}: only cpu and cuda devices are supported")


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """The device named by ``--device`` (default ``cpu``)."""
    return torch.device(pytestconfig.getoption("--device"))


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    """No compiled graph, guard or counter of one test is seen by another (modules
    that compile use it for every test: ``pytestmark = pytest.mark.usefixtures(...)``)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
