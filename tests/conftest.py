"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import run_cli, shared_dir


@pytest.fixture
def shared() -> Path:
    path = shared_dir()
    if path is None:
        pytest.skip("../shared is not present (reference data only ships with the workspace)")
    return path


@pytest.fixture
def cli():
    return run_cli
