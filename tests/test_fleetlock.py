"""The fleet lock: the host-side flock script run by a real sh, and the controller's lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gpufleet import fleetlock
from gpufleet.fleetlock import FleetLocked, Holder, controller_lock, holder_from, lock_script


@pytest.fixture
def host_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "deploy.lock"
    monkeypatch.setattr(fleetlock, "HOST_LOCK", str(path))
    return path


def hold(holder: Holder, wait_s: float | None = None) -> subprocess.Popen[str]:
    """The script as the host runs it: sh, with our SSH channel as its stdin."""
    script = lock_script(holder, wait_s).replace("mkdir -p /run/gpufleet", "true")
    return subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def test_second_taker_is_refused_at_once_naming_the_holder(host_lock: Path) -> None:
    one = Holder("ctl-a", "alice", 111, "2026-01-01T00:00:00+00:00", "/inv/a.yml")
    first = hold(one)
    assert first_line(first) == "LOCKED"
    assert json.loads(host_lock.read_text())["user"] == "alice"
    started = time.monotonic()
    second = hold(Holder("ctl-b", "bob", 222, "2026-01-01T00:00:01+00:00", "/inv/b.yml"))
    line = first_line(second)
    assert second.wait(timeout=5) == fleetlock.BUSY_EXIT
    assert time.monotonic() - started < 2
    assert line.startswith("BUSY ")
    assert holder_from(line[5:]) == one.describe()
    assert "alice@ctl-a (pid 111" in one.describe()
    first.communicate("")  # the controller closes the channel: the lock goes with it
    third = hold(Holder.me("/inv/c.yml"))
    assert first_line(third) == "LOCKED"
    third.communicate("")


def test_a_killed_holder_releases_the_lock(host_lock: Path) -> None:
    first = hold(Holder.me("/inv/a.yml"))
    assert first_line(first) == "LOCKED"
    os.kill(first.pid, signal.SIGKILL)  # the holder dies: the kernel drops its flock
    first.wait()
    second = hold(Holder.me("/inv/b.yml"))
    assert first_line(second) == "LOCKED"
    second.communicate("")


def test_wait_takes_the_lock_once_it_is_free(host_lock: Path) -> None:
    first = hold(Holder.me("/inv/a.yml"))
    assert first_line(first) == "LOCKED"
    second = hold(Holder.me("/inv/b.yml"), wait_s=10)
    assert first_line(second).startswith("WAIT ")
    first.communicate("")
    assert first_line(second) == "LOCKED"
    second.communicate("")


def test_wait_gives_up_after_its_time(host_lock: Path) -> None:
    first = hold(Holder.me("/inv/a.yml"))
    assert first_line(first) == "LOCKED"
    second = hold(Holder.me("/inv/b.yml"), wait_s=1)
    assert first_line(second).startswith("WAIT ")
    assert first_line(second).startswith("BUSY ")
    assert second.wait(timeout=5) == fleetlock.BUSY_EXIT
    first.communicate("")


def _hold_controller(inventory: str, ready: multiprocessing.Event, stop: multiprocessing.Event
                     ) -> None:
    with controller_lock(Holder.me(inventory), None):
        ready.set()
        stop.wait(10)


def test_controller_lock_refuses_a_second_run_of_the_same_inventory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    inventory = str(tmp_path / "fleet.yml")
    ctx = multiprocessing.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_controller, args=(inventory, ready, stop))
    other.start()
    try:
        assert ready.wait(10)
        with pytest.raises(FleetLocked) as refused, controller_lock(Holder.me(inventory), None):
            pass
        assert f"pid {other.pid}" in str(refused.value)
        assert "--wait" in str(refused.value)
        with controller_lock(Holder.me(str(tmp_path / "other.yml")), None):
            pass  # another inventory: another lock
    finally:
        stop.set()
        other.join(10)
    with controller_lock(Holder.me(inventory), None):
        pass  # released when its holder ended
