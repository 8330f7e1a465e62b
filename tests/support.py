"""Helpers the tests import: repository paths, ../shared, in-process CLI runs."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

from gpufleet.cli import main
from gpufleet.env import Environment

REPO = Path(__file__).resolve().parents[1]
INVENTORIES = REPO / "inventories"


def shared_dir() -> Path | None:
    """../shared beside the checkout (read-only reference data); None when absent."""
    candidate = Path(os.environ.get("GPUFLEET_SHARED", REPO.parent / "shared"))
    return candidate if candidate.is_dir() else None


@dataclass
class CliResult:
    exit_status: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> CliResult:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(args), Environment(stdout=out, stderr=err, width=200))
    return CliResult(status, out.getvalue(), err.getvalue())


def fuzz_examples(n: int) -> int:
    """Examples per property test: n in CI (derandomized, fixed), n × GPUFLEET_FUZZ_SCALE for a
    release run (`GPUFLEET_FUZZ_SCALE=50 .venv/bin/python -m pytest -q -m "not e2e" tests`)."""
    return n * max(1, int(os.environ.get("GPUFLEET_FUZZ_SCALE", "1")))


FUZZ_FIXED = os.environ.get("GPUFLEET_FUZZ_SCALE", "1") == "1"  # release runs draw new inputs
