"""The e2e lab: one session-scoped set of real hosts (systemd-nspawn + netns + sshd).

Without root or the lab tools the e2e tests skip, except under CI=true where they fail: the
e2e suite must never go silently missing in CI (install the tools with `bash .ci/lab-deps.sh`).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO

import pytest

import gpufleet_lab as labmod
from gpufleet_lab import Lab, LabConfig

E2E_DIR = Path(__file__).parent
LAB_HOSTS = 3
LOCK_DIR = Path("/run/gpufleet-lab")
SLOTS = 8


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def _claim_slot() -> tuple[int, IO[str]]:
    """Lock one of SLOTS lab slots for this pytest process (held until it exits, even by a
    crash). Several sessions on one machine (developers, xdist workers) then never share a
    prefix, and `down` of a slot's leftovers cannot hit a live lab."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for i in range(SLOTS):
        fh = open(LOCK_DIR / f"e2e-slot-{i}.lock", "w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        return i, fh
    pytest.fail(f"all {SLOTS} e2e lab slots are busy (other pytest sessions on this machine)")


def e2e_config(slot: int, crash_lab: bool = False) -> LabConfig:
    """The e2e lab of a slot; apart from the CLI's default lab (prefix gf, 10.231.0)."""
    letter = chr(ord("a") + slot)
    return LabConfig(
        prefix=("gz" if crash_lab else "gt") + letter,
        net=f"10.231.{(60 if crash_lab else 10) + slot}",
        fake_gpus=int(os.environ.get("GPUFLEET_E2E_FAKE_GPUS", "0" if crash_lab else "8")),
    )


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
def lab_slot() -> Iterator[int]:
    require_lab()
    slot, lock = _claim_slot()
    try:
        yield slot
    finally:
        lock.close()


@pytest.fixture(scope="session")
def lab_config(lab_slot: int) -> LabConfig:
    return e2e_config(lab_slot)


@pytest.fixture(scope="session")
def crash_lab_config(lab_slot: int) -> LabConfig:
    """A second, throwaway lab of this slot, for tests that must not disturb the main one."""
    return e2e_config(lab_slot, crash_lab=True)


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
