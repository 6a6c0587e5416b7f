"""Shared test fixtures.

Tests marked ``data`` use a real dataset. When it is not present they are
skipped, unless ``NEURALAB_REQUIRE_DATA=1`` (CI sets it), where a missing
dataset is a failure: CI must never go green by skipping its real-data tests.
"""

from __future__ import annotations

import os

import pytest
import torch


def require_dataset(name: str) -> None:
    """Skip (or fail under NEURALAB_REQUIRE_DATA=1) when dataset ``name`` is not found here."""
    from neuralab.data import locate
    from neuralab.errors import UserError

    try:
        locate(name)
    except UserError as err:
        if os.environ.get("NEURALAB_REQUIRE_DATA") == "1":
            pytest.fail(f"NEURALAB_REQUIRE_DATA=1 but {name} is missing: {err}")
        pytest.skip(f"{name} not present: {err}")


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep each test on at most 2 threads: the CI machine has 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, 2))
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """One thread, for tests that share the two cores with whatever else runs (and whose
    float sums must not depend on how work is split between threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
