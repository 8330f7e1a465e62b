"""validate.compare: the plan vs what the GPUs report, on synthetic readings of the berget host."""

from __future__ import annotations

import json

import pytest
from support import INVENTORIES

from gpufleet import inventory
from gpufleet.gpu.models import GIB
from gpufleet.gpu.smi import GpuReading, ProcessReading, Snapshot
from gpufleet.plan import build_plan
from gpufleet.probe import Probe, parse_probe_output, probe_request
from gpufleet.validate import (
    IDLE_GPU_BYTES,
    HostReading,
    compare,
    tolerance,
    unit_from_cgroup,
    unit_of,
)


@pytest.fixture(scope="module")
def host():
    return build_plan(inventory.load(INVENTORIES / "berget.yml")).hosts[0]


def healthy_reading(host, scale=None, moved=None):
    """A reading where every service holds what the plan says (scaled for `scale` services)."""
    scale, moved = scale or {}, moved or {}
    procs, pid_units, used = [], {}, {g.index: IDLE_GPU_BYTES for g in host.gpus}
    pid = 1000
    for svc in host.services:
        if svc.footprint_bytes == 0:
            continue
        for gpu in svc.gpus:
            gpu = moved.get(svc.name, gpu)
            size = int(svc.footprint_bytes * scale.get(svc.name, 1.0))
            procs.append(ProcessReading(pid, "python3", [gpu], size))
            pid_units[pid] = unit_of(svc.name)
            used[gpu] += size
            pid += 1
    gpus = [GpuReading(g.index, None, None, g.total_bytes, used[g.index]) for g in host.gpus]
    return HostReading(
        host.name,
        Snapshot(gpus, procs, "rocm-smi", "test"),
        pid_units,
        {unit_of(s.name): "active" for s in host.services},
        {s.name: Probe(s.name, True, "ok") for s in host.services},
    )


def errors(findings):
    return sorted((f.code, f.service, f.gpu) for f in findings if f.severity == "error")


def test_matching_reading_passes(host):
    assert errors(compare(host, healthy_reading(host))) == []


def test_service_using_30_percent_more_is_named(host):
    found = errors(compare(host, healthy_reading(host, scale={"kb-whisper": 1.3})))
    assert ("service_memory_over", "kb-whisper", 0) in found


def test_small_deviation_within_tolerance(host):
    svc = host.service("llama-8b")
    extra = tolerance(svc.footprint_bytes) / svc.footprint_bytes * 0.9
    assert errors(compare(host, healthy_reading(host, scale={"llama-8b": 1 + extra}))) == []


def test_process_on_wrong_gpu(host):
    found = errors(compare(host, healthy_reading(host, moved={"gemma-3": 7})))
    assert ("wrong_gpu", "gemma-3", 7) in found


def test_service_stopped_answering(host):
    reading = healthy_reading(host)
    reading.probes["llama-70b"] = Probe("llama-70b", False, "connection refused")
    found = [f for f in compare(host, reading) if f.code == "service_unhealthy"]
    assert [(f.service, f.host) for f in found] == [("llama-70b", "gpu-01")]
    assert "connection refused" in found[0].message


def test_unplanned_and_missing_processes(host):
    reading = healthy_reading(host)
    stray = ProcessReading(99, "python3", [3], 5 * GIB)
    reading.snapshot.processes.append(stray)
    reading.pid_units[99] = "session-4.scope"
    gone = [
        p.pid
        for p in reading.snapshot.processes
        if reading.pid_units[p.pid] == unit_of("mistral-small")
    ]
    reading.snapshot.processes = [p for p in reading.snapshot.processes if p.pid not in gone]
    found = errors(compare(host, reading))
    assert ("unplanned_process", None, 3) in found
    assert ("missing_process", "mistral-small", None) in found


def test_unit_down(host):
    reading = healthy_reading(host)
    reading.unit_states[unit_of("docling")] = "failed"
    assert ("service_down", "docling", None) in errors(compare(host, reading))


def test_unreachable_host(host):
    found = compare(host, HostReading(host.name, error="timed out"))
    assert [(f.code, f.host) for f in found] == [("host_unreachable", "gpu-01")]


def test_unit_from_cgroup():
    assert unit_from_cgroup("0::/system.slice/gpufleet-llama-8b.service\n") == "gpufleet-llama-8b"
    assert unit_from_cgroup("0::/user.slice/session-3.scope") is None


def test_probe_output_parsing(host):
    services = host.services[:2]
    request = json.loads(probe_request(services, True))
    assert request["services"][0]["env_file"] == "/etc/gpufleet/llama-8b.env"
    out = parse_probe_output('{"llama-8b": {"ok": true, "detail": "ok"}}', services)
    assert out["llama-8b"].ok and not out["kb-whisper"].ok


def test_parse_show_reads_several_units():
    from gpufleet.host.systemctl import parse_show

    text = ("Id=gpufleet-chat.service\nActiveState=active\nMainPID=12\n\n"
            "Id=gpufleet-embed.service\nActiveState=failed\nMainPID=0\n")
    assert parse_show(text) == {
        "gpufleet-chat.service": {"Id": "gpufleet-chat.service", "ActiveState": "active",
                                  "MainPID": "12"},
        "gpufleet-embed.service": {"Id": "gpufleet-embed.service", "ActiveState": "failed",
                                   "MainPID": "0"},
    }
    assert parse_show("") == {}
