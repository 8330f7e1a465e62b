"""The e2e lab: one session-scoped set of real hosts (systemd-nspawn + netns + sshd).

Without root or the lab tools the e2e tests skip, except under CI=true where they fail: the
e2e suite must never go silently missing in CI (install the tools with `bash .ci/lab-deps.sh`).
"""

from __future__ import annotations

import atexit
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from gpufleet import lab as labmod
from gpufleet.lab import Lab, LabConfig

E2E_DIR = Path(__file__).parent
LAB_HOSTS = 3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def _worker_index() -> int:
    # pytest-xdist workers (gw0, gw1, ...) each need their own prefix, net and bridge.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker[2:].isdigit() else 0


def e2e_config(**overrides: object) -> LabConfig:
    """The e2e lab's settings: apart from the CLI's default lab (prefix gf, 10.231.0)."""
    i = _worker_index()
    settings: dict[str, object] = {
        "prefix": "gt" + chr(ord("a") + i),
        "net": f"10.231.{10 + i}",
    }
    settings.update(overrides)
    return LabConfig(**settings)  # type: ignore[arg-type]


def require_lab() -> None:
    """Skip (or, under CI=true, fail) when this machine cannot run the lab."""
    problem = labmod.preflight_problem()
    if problem is None:
        return
    why = f"lab unavailable: {problem}; run `bash .ci/lab-deps.sh` as root"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: e2e tests must not be skipped)", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def make_lab_config() -> Callable[..., LabConfig]:
    """Factory for extra, throwaway labs (tests that must not disturb the session lab)."""
    require_lab()
    return e2e_config


@pytest.fixture(scope="session")
def lab_config() -> LabConfig:
    require_lab()
    return e2e_config()


@pytest.fixture(scope="session")
def lab(lab_config: LabConfig) -> Iterator[Lab]:
    """A running 3-host lab for the whole session; torn down at the end, even on SIGTERM."""
    labmod.down(lab_config)  # leftovers of a crashed run
    done = False

    def teardown() -> None:
        nonlocal done
        if not done:
            done = True
            labmod.down(lab_config)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        teardown()
        signal.signal(signum, previous)
        os.kill(os.getpid(), signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    atexit.register(teardown)  # the fixture teardown may not run when the session dies
    try:
        yield labmod.up(lab_config, LAB_HOSTS)
    finally:
        teardown()
        signal.signal(signal.SIGTERM, previous)
        atexit.unregister(teardown)
