"""status --watch: the pure view (watch.fleet_view), its screen, and the live fleet's per-host
loop (persistent session, reconnect, deadline) with a stand-in SSH session."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from rich.console import Console
from support import INVENTORIES
from test_validate import healthy_reading

from gpufleet import inventory, livefleet
from gpufleet.commands.status_watch import watch_screen
from gpufleet.gpu.models import GIB
from gpufleet.host.ssh import HostUnreachable
from gpufleet.livefleet import HostState, LiveFleet, Sample
from gpufleet.plan import build_plan
from gpufleet.validate import HostReading, tolerance, unit_of
from gpufleet.watch import GROWTH_NOISE, fleet_view, host_view, over_plan


@pytest.fixture(scope="module")
def plan():
    return build_plan(inventory.load(INVENTORIES / "berget.yml"))


@pytest.fixture(scope="module")
def host(plan):
    return plan.hosts[0]


def gpu_services(host):
    return sorted((svc.name, g) for svc in host.services for g in svc.gpus)


def test_every_service_on_each_of_its_gpus_measured_against_its_footprint(host):
    view = host_view(host, healthy_reading(host))
    rows = {(r.service, r.gpu): r for r in view.rows if r.gpu is not None}
    assert sorted(rows) == gpu_services(host)
    for (name, _), row in rows.items():
        svc = host.service(name)
        assert row.planned_bytes == svc.footprint_bytes
        assert row.measured_bytes == (svc.footprint_bytes if svc.footprint_bytes else 0)
        assert (row.state, row.healthy, row.over_plan, row.growing) == ("active", True, False,
                                                                        False)
    assert [g.index for g in view.gpus] == [g.index for g in host.gpus]


def test_a_service_past_its_plan_is_flagged_with_its_gpu(host):
    svc = next(s for s in host.services if s.footprint_bytes and len(s.gpus) == 1)
    views = fleet_view_of(host, healthy_reading(host, scale={svc.name: 1.3}))
    assert [(h, r.service, r.gpu) for h, r in over_plan(views)] == [
        (host.name, svc.name, svc.gpus[0])]


def test_within_the_tolerance_is_not_past_plan_but_growth_shows(host):
    svc = next(s for s in host.services if s.footprint_bytes > 8 * GIB and len(s.gpus) == 1)
    grow = 0.9 * tolerance(svc.footprint_bytes) / svc.footprint_bytes
    assert grow * svc.footprint_bytes > GROWTH_NOISE
    view = host_view(host, healthy_reading(host, scale={svc.name: 1 + grow}),
                     healthy_reading(host))
    row = next(r for r in view.rows if r.service == svc.name)
    assert not row.over_plan and row.growing
    assert row.grew_bytes == int(svc.footprint_bytes * (1 + grow)) - svc.footprint_bytes
    steady = host_view(host, healthy_reading(host), healthy_reading(host))
    assert not any(r.growing for r in steady.rows)


def test_unknown_is_never_zero(host):
    reading = healthy_reading(host)
    reading.snapshot.processes[0].vram_bytes = None  # a tool that gave the pid without VRAM
    name = host.services[0].name
    view = host_view(host, reading, healthy_reading(host))
    row = next(r for r in view.rows if r.service == name)
    assert row.measured_bytes is None and row.grew_bytes is None and not row.over_plan


def test_unreachable_and_unread_hosts(plan, host):
    two = replace(plan, hosts=[host, replace(host, name="gpu-02")])
    views = fleet_view(two, {host.name: HostReading(host.name, error="connection refused")})
    assert views[0].error == "connection refused" and views[0].rows == []
    assert views[1].error == "not read yet"


def test_a_stopped_service_holds_nothing_measured(host):
    name = host.services[0].name
    reading = healthy_reading(host)
    pids = [p for p, u in reading.pid_units.items() if u == unit_of(name)]
    reading.snapshot.processes[:] = [p for p in reading.snapshot.processes if p.pid not in pids]
    reading.unit_states[unit_of(name)] = "failed"
    row = next(r for r in host_view(host, reading).rows if r.service == name)
    assert (row.state, row.measured_bytes) == ("failed", 0)


def fleet_view_of(host, reading):
    return [host_view(host, reading)]


def render(plan, states) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(watch_screen(plan, states, 2))
    return console.export_text()


def test_the_screen_names_every_service_flags_and_unreachable_hosts(plan, host):
    svc = next(s for s in host.services if s.footprint_bytes and len(s.gpus) == 1)
    now = time.time()
    states = {host.name: HostState(Sample(healthy_reading(host, scale={svc.name: 1.3}),
                                          at=now, took_s=0.4, number=7), None, None)}
    other = replace(host, name="gpu-02")
    plan = replace(plan, hosts=[host, other, replace(host, name="gpu-03")])
    states[other.name] = HostState(Sample(HostReading(other.name, error="no route to host"),
                                          at=now, number=3), None, None)
    text = render(plan, states)
    assert f"{host.name}  read #7" in text
    for name in {s.name for s in host.services}:
        assert f" {name} " in text
    assert "PAST PLAN +30%" in text
    assert f"past plan: {host.name}/gpu{svc.gpus[0]}/{svc.name} (+30%)" in text
    assert "unreachable: no route to host" in text
    assert "connecting…" in text  # the hosts not read yet


# ---------------------------------------------------------------- the per-host loop


class FakeSession:
    opened: list[FakeSession] = []

    def __init__(self, target, timeout: float = 5.0):
        self.target = target
        self.closed = threading.Event()
        FakeSession.opened.append(self)

    def close(self) -> None:
        self.closed.set()


def one_host_fleet(plan, monkeypatch, reads, interval=0.05):
    FakeSession.opened = []
    monkeypatch.setattr(livefleet, "Session", FakeSession)
    monkeypatch.setattr(livefleet, "read_host", reads)
    single = type(plan)(plan.inventory, plan.hosts[:1], [])
    return LiveFleet(single, interval=interval)


def wait_number(fleet, name, n, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        cur = fleet.states()[name].current
        if cur and cur.number >= n:
            return fleet.states()[name]
        time.sleep(0.01)
    raise AssertionError(f"no read #{n}")


def test_one_session_per_host_reused_and_reopened_after_a_failure(plan, host, monkeypatch):
    calls = []

    def reads(session, planned, full_probe=True):
        calls.append((session, full_probe))
        if len(calls) == 2:
            raise HostUnreachable(f"{planned.name}: connection reset")
        return healthy_reading(planned)

    with one_host_fleet(plan, monkeypatch, reads) as fleet:
        state = wait_number(fleet, host.name, 2)
        assert state.current.reading.error == f"{host.name}: connection reset"
        state = wait_number(fleet, host.name, 5)
    assert state.current.reading.error is None and state.previous.reading.error is None
    first, second = FakeSession.opened[:2]
    assert [s for s, _ in calls[:2]] == [first, first] and first.closed.is_set()
    assert {s for s, _ in calls[2:5]} == {second}  # reused once reopened
    assert not any(probe for _, probe in calls)  # /health only


def test_a_hung_read_ends_as_unreachable_at_its_deadline(plan, host, monkeypatch):
    def reads(session, planned, full_probe=True):
        if len(FakeSession.opened) == 1:
            session.closed.wait(10)  # hangs until the watchdog closes the session
        return healthy_reading(planned)

    monkeypatch.setattr(livefleet, "read_deadline", lambda planned: 0.2)
    with one_host_fleet(plan, monkeypatch, reads, interval=0.5) as fleet:
        state = wait_number(fleet, host.name, 1)
        assert "no answer within" in state.current.reading.error
        assert state.current.took_s < 2
        assert wait_number(fleet, host.name, 2).current.reading.error is None
