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
