"""exporter: the metric families from a plan and the latest reads, the README's table of them,
--listen, and /metrics served over HTTP from a stand-in live fleet."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import INVENTORIES, REPO
from test_validate import healthy_reading

from gpufleet import inventory
from gpufleet.errors import InputError
from gpufleet.exporter import METRICS, MetricsServer, fleet_families, parse_listen
from gpufleet.gpu.smi import ProcessReading
from gpufleet.livefleet import HostState, Sample
from gpufleet.plan import build_plan
from gpufleet.probe import Probe
from gpufleet.validate import HostReading


@pytest.fixture(scope="module")
def plan():
    return build_plan(inventory.load(INVENTORIES / "berget.yml"))


def samples(families, name):
    return {tuple(sorted(s.labels.items())): s.value
            for f in families if f.name == name for s in f.samples}


def by(families, name, *keys):
    return {tuple(dict(labels)[k] for k in keys): v
            for labels, v in samples(families, name).items()}


def state(reading, restarts=None, at=None):
    return HostState(Sample(reading, restarts or {}, at or time.time(), 0.1, 1), None, None)


def test_readme_lists_every_metric_with_its_labels():
    text = (REPO / "README.md").read_text().split("## Watching", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(gpufleet_\w+)` \| ([^|]*) \|", text, re.M)
    documented = {name: tuple(re.findall(r"`(\w+)`", labels)) for name, labels in rows}
    assert documented == {m.name: m.labels for m in METRICS.values()}


def test_planned_figures_come_from_the_plan_before_any_read(plan):
    host = plan.hosts[0]
    families = list(fleet_families(plan, {}, time.time()))
    gpus = by(families, "gpufleet_gpu_planned_bytes", "host", "gpu")
    assert gpus == {(host.name, str(g.index)): g.used_bytes for g in host.gpus}
    per = by(families, "gpufleet_service_planned_bytes", "host", "gpu", "service")
    assert per == {(host.name, str(g), s.name): s.footprint_bytes
                   for s in host.services for g in s.gpus}
    kv = by(families, "gpufleet_service_planned_kv_tokens", "host", "service")
    assert kv == {(host.name, s.name): s.estimate.kv_tokens for s in host.services if s.estimate}
    assert not samples(families, "gpufleet_host_up")
    assert not samples(families, "gpufleet_service_measured_bytes")


def test_measured_health_restarts_and_findings(plan):
    host = plan.hosts[0]
    svc = next(s for s in host.services if s.footprint_bytes and len(s.gpus) == 1)
    reading = healthy_reading(host, scale={svc.name: 1.3})
    down = host.services[-1].name
    reading.probes[down] = Probe(down, False, "timed out")
    restarts = {s.name: i for i, s in enumerate(host.services)}
    families = list(fleet_families(plan, {host.name: state(reading, restarts, time.time() - 3)},
                                   time.time()))
    assert by(families, "gpufleet_host_up", "host") == {(host.name,): 1}
    assert 2.9 < by(families, "gpufleet_host_read_age_seconds", "host")[(host.name,)] < 10
    measured = by(families, "gpufleet_service_measured_bytes", "host", "gpu", "service")
    assert measured[(host.name, str(svc.gpus[0]), svc.name)] == int(svc.footprint_bytes * 1.3)
    health = by(families, "gpufleet_service_healthy", "host", "service")
    assert health[(host.name, down)] == 0 and health[(host.name, svc.name)] == 1
    assert by(families, "gpufleet_service_restarts", "host", "service") == {
        (host.name, n): i for n, i in restarts.items()}
    assert set(by(families, "gpufleet_service_active", "host", "service").values()) == {1}
    findings = by(families, "gpufleet_finding", "host", "gpu", "service", "code", "severity")
    assert findings[(host.name, str(svc.gpus[0]), svc.name, "service_memory_over", "error")] == 1
    assert findings[(host.name, "", down, "service_unhealthy", "error")] == 1
    gpu_used = by(families, "gpufleet_gpu_measured_bytes", "host", "gpu")
    assert set(gpu_used) == {(host.name, str(g.index)) for g in host.gpus}


def test_findings_with_the_same_labels_are_counted_not_duplicated(plan):
    host = plan.hosts[0]
    reading = healthy_reading(host)
    reading.snapshot.processes += [ProcessReading(9001, "stray", [5, 6], 2**30),
                                   ProcessReading(9002, "stray", [5, 6], 2**30)]
    families = list(fleet_families(plan, {host.name: state(reading)}, time.time()))
    findings = by(families, "gpufleet_finding", "host", "gpu", "service", "code", "severity")
    assert findings[(host.name, "", "", "unplanned_process", "error")] == 2


def test_an_unreachable_host_is_down_with_its_finding(plan):
    host = plan.hosts[0]
    reading = HostReading(host.name, error="connection refused")
    families = list(fleet_families(plan, {host.name: state(reading)}, time.time()))
    assert by(families, "gpufleet_host_up", "host") == {(host.name,): 0}
    assert by(families, "gpufleet_finding", "host", "code") == {
        (host.name, "host_unreachable"): 1}
    assert not samples(families, "gpufleet_service_healthy")


@pytest.mark.parametrize("text, want", [("127.0.0.1:9835", ("127.0.0.1", 9835)),
                                        ("[::1]:9000", ("::1", 9000)),
                                        ("0.0.0.0:1", ("0.0.0.0", 1))])
def test_listen(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["9835", ":9835", "host:", "host:x", "host:70000"])
def test_bad_listen(text):
    with pytest.raises(InputError, match="ADDRESS:PORT"):
        parse_listen(text)


class StandInFleet:
    def __init__(self, states):
        self._states = states
        self.started = self.stopped = False

    def start(self):
        self.started = True
        return self

    def states(self):
        return self._states

    def stop(self):
        self.stopped = True


def test_metrics_served_over_http_parse_with_their_labels(plan):
    host = plan.hosts[0]
    fleet = StandInFleet({host.name: state(healthy_reading(host), {"x": 1})})
    server = MetricsServer(plan, fleet, ("127.0.0.1", 0))  # type: ignore[arg-type]
    url = server.start()
    try:
        assert fleet.started and url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.close()
    assert fleet.stopped
    seen = {f.name: f for f in text_string_to_metric_families(text)}
    for metric in METRICS.values():
        for s in seen[metric.name].samples:
            assert set(s.labels) == set(metric.labels)
    assert not any(name.startswith(("process_", "python_")) for name in seen)  # ours only
