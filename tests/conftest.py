"""Shared set-up of the engine tests: two threads, fixed seeds, a timeout per test, small toys."""

from __future__ import annotations

import os

import pytest
import torch

from training.data.toy import ToyConfig, ToyData

# Two threads as on CI; on a machine busy with other work one thread avoids OpenMP stalls on tiny ops.
torch.set_num_threads(int(os.environ.get("MONOSEMANTIC_TEST_THREADS", "1")))

DEFAULT_TIMEOUT_S = 120


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test a timeout unless it names its own, so a hang fails instead of stalling the suite."""
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT_S))


@pytest.fixture(autouse=True)
def _fixed_seed() -> None:
    torch.manual_seed(1234)


@pytest.fixture(scope="session")
def small_toy() -> ToyData:
    """Correlated toy data, d=16 and G=32: the size most SAE and trainer tests use."""
    return ToyData(ToyConfig(dim=16, n_features=32, seed=3))
