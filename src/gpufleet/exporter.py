"""`gpufleet exporter`: the fleet as Prometheus metrics — plan, measurements, health, restarts
and validate's findings — from the hosts kept open by `livefleet`.

The hosts are read in the background (every `--interval` seconds, each in its own thread) and
a scrape answers from the latest reads: a scrape then takes milliseconds whatever the fleet's
size, a hung service (whose /health the probe waits 5 s for) cannot push it past Prometheus'
scrape timeout, and two Prometheus servers scraping do not double the load on the hosts.
`gpufleet_host_read_age_seconds` says how old each host's figures are.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gpufleet.errors import InputError
from gpufleet.host.layout import unit_id
from gpufleet.livefleet import HostState, LiveFleet
from gpufleet.plan import Plan, PlannedHost
from gpufleet.validate import compare
from gpufleet.watch import measured_by_gpu

DEFAULT_LISTEN = "127.0.0.1:9835"  # loopback: the figures name every host and service
DEFAULT_INTERVAL_S = 15.0  # Prometheus' default scrape interval


@dataclass(frozen=True)
class Metric:
    name: str
    labels: tuple[str, ...]
    help: str


# Every metric the exporter serves (the README's table lists the same, checked by a test).
METRICS = {
    m.name: m
    for m in (
        Metric("gpufleet_host_up", ("host",), "1 when the host's last read succeeded, else 0"),
        Metric("gpufleet_host_read_age_seconds", ("host",),
               "seconds since the host's last completed read"),
        Metric("gpufleet_gpu_planned_bytes", ("host", "gpu"),
               "VRAM the plan puts on the GPU (the footprints of its services)"),
        Metric("gpufleet_gpu_measured_bytes", ("host", "gpu"),
               "VRAM in use as the SMI tool reports it (an idle MI300X reports ~0.28 GiB)"),
        Metric("gpufleet_service_planned_bytes", ("host", "gpu", "service"),
               "the service's planned footprint on the GPU"),
        Metric("gpufleet_service_measured_bytes", ("host", "gpu", "service"),
               "VRAM the service's processes hold on the GPU"),
        Metric("gpufleet_service_planned_kv_tokens", ("host", "service"),
               "tokens the planned KV cache holds (vLLM services)"),
        Metric("gpufleet_service_active", ("host", "service"),
               "1 when systemd says the unit is active, else 0"),
        Metric("gpufleet_service_healthy", ("host", "service"),
               "1 when the service's /health answers 200, else 0"),
        Metric("gpufleet_service_restarts", ("host", "service"),
               "times systemd restarted the unit (NRestarts) since it was last started"),
        Metric("gpufleet_finding", ("host", "gpu", "service", "code", "severity"),
               "validate's findings: the number with these labels (1 as a rule)"),
    )
}


class Families:
    """The metric families of one scrape, filled by name."""

    def __init__(self) -> None:
        self.by_name = {
            m.name: GaugeMetricFamily(m.name, m.help, labels=m.labels) for m in METRICS.values()
        }

    def add(self, name: str, labels: tuple[object, ...], value: float) -> None:
        self.by_name[name].add_metric(["" if v is None else str(v) for v in labels], value)

    def __iter__(self) -> Iterator[GaugeMetricFamily]:
        return iter(self.by_name.values())


def fleet_families(plan: Plan, states: Mapping[str, HostState], now: float) -> Families:
    """Every metric of the fleet: the plan's always; a host's measurements once it was read."""
    out = Families()
    for host in plan.hosts:
        _planned(out, host)
        state = states.get(host.name)
        if state is not None and state.current is not None:
            _measured(out, host, state, now)
    return out


def _planned(out: Families, host: PlannedHost) -> None:
    for gpu in host.gpus:
        out.add("gpufleet_gpu_planned_bytes", (host.name, gpu.index), gpu.used_bytes)
        for name, size in gpu.segments:
            out.add("gpufleet_service_planned_bytes", (host.name, gpu.index, name), size)
    for svc in host.services:
        if svc.estimate is not None:
            out.add("gpufleet_service_planned_kv_tokens", (host.name, svc.name),
                    svc.estimate.kv_tokens)


def _measured(out: Families, host: PlannedHost, state: HostState, now: float) -> None:
    assert state.current is not None
    sample, reading = state.current, state.current.reading
    out.add("gpufleet_host_up", (host.name,), 0 if reading.error else 1)
    out.add("gpufleet_host_read_age_seconds", (host.name,), round(max(now - sample.at, 0.0), 3))
    findings = Counter(
        (f.gpu, f.service, f.code, f.severity) for f in compare(host, reading)
    )
    for (gpu, service, code, severity), n in sorted(findings.items(), key=str):
        out.add("gpufleet_finding", (host.name, gpu, service, code, severity), n)
    if reading.error:
        return
    for g in reading.snapshot.gpus if reading.snapshot else []:
        if g.vram_used_bytes is not None:
            out.add("gpufleet_gpu_measured_bytes", (host.name, g.index), g.vram_used_bytes)
    for (service, gpu), used in sorted(measured_by_gpu(host, reading).items()):
        out.add("gpufleet_service_measured_bytes", (host.name, gpu, service), used)
    for svc in host.services:
        unit = unit_id(svc.name)
        if unit in reading.unit_states:
            out.add("gpufleet_service_active", (host.name, svc.name),
                    int(reading.unit_states[unit] == "active"))
        probe = reading.probes.get(svc.name)
        if probe is not None:
            out.add("gpufleet_service_healthy", (host.name, svc.name), int(probe.ok))
        if svc.name in sample.restarts:
            out.add("gpufleet_service_restarts", (host.name, svc.name), sample.restarts[svc.name])


class FleetCollector(Collector):
    """Answers a scrape from the live fleet's latest reads."""

    def __init__(self, plan: Plan, fleet: LiveFleet) -> None:
        self.plan = plan
        self.fleet = fleet

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return iter(fleet_families(self.plan, self.fleet.states(), time.time()))


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:9835`, `[::1]:9835`, `0.0.0.0:9835` -> (address, port)."""
    address, sep, port = text.rpartition(":")
    address = address.removeprefix("[").removesuffix("]")
    if not sep or not address or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(
            f"--listen {text!r}: expected ADDRESS:PORT",
            hint=f"e.g. {DEFAULT_LISTEN} (loopback), 0.0.0.0:9835 (every address), [::1]:9835",
        )
    return address, int(port)


class MetricsServer:
    """/metrics over HTTP for a live fleet: `start()` listens and returns the URL, `close()`
    stops serving and reading."""

    def __init__(self, plan: Plan, fleet: LiveFleet, listen: tuple[str, int]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)  # our metrics only
        self.registry.register(FleetCollector(plan, fleet))
        self.fleet = fleet
        self.listen = listen
        self._server: WSGIServer | None = None

    def start(self) -> str:
        address, port = self.listen
        try:
            self._server, _ = start_http_server(port, address, registry=self.registry)
        except OSError as exc:
            raise InputError(f"cannot listen on {address}:{port}: {exc.strerror or exc}",
                             hint="choose another --listen ADDRESS:PORT") from None
        self.fleet.start()
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{self._server.server_port}/metrics"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.fleet.stop()
