"""Validation: what the GPUs themselves say, compared with the plan.

`compare` is pure (a host's plan + a reading → findings); `read_host` gathers the reading over SSH
with amd-smi when the host has it, else rocm-smi (never trusting rocm-smi's exit code: it exits 0
without a driver), maps every GPU process to its systemd unit through its cgroup, and probes every
service on the host itself.

Tolerance: a GPU's or a service's measured VRAM may differ from the plan by at most
max(10 % of the planned bytes, 0.5 GiB). vLLM fills its whole budget with KV cache, so a running
instance holds budget + baseline almost exactly; the slack covers the HIP context and allocator
rounding that differ between ROCm versions, and still catches a small embedder grown by 30 %.
More than that above the plan is an error (the next instance on the GPU would fail its
free-memory check); below it is a warning (still loading, or smaller than planned).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from gpufleet.gpu.models import GIB
from gpufleet.gpu.smi import Snapshot
from gpufleet.host.layout import unit_id as unit_of
from gpufleet.plan import Finding, PlannedHost, PlannedService
from gpufleet.probe import Probe

TOLERANCE_FRACTION = 0.10
TOLERANCE_FLOOR = GIB // 2  # about one HIP context: the least certain part of a footprint
UNIT_RE = re.compile(r"/(gpufleet-[a-z0-9-]+)\.service")
IDLE_GPU_BYTES = 297_623_552  # VRAM an idle MI300-class GPU reports in use (real MI308X reading)


def tolerance(planned: int) -> int:
    return max(int(planned * TOLERANCE_FRACTION), TOLERANCE_FLOOR)


@dataclass
class HostReading:
    """Everything read from one host in one pass."""

    host: str
    snapshot: Snapshot | None = None
    pid_units: dict[int, str] = field(default_factory=dict)  # pid -> "gpufleet-x" or other unit
    unit_states: dict[str, str] = field(default_factory=dict)  # "gpufleet-x" -> ActiveState
    probes: dict[str, Probe] = field(default_factory=dict)
    uptimes: dict[str, float] = field(default_factory=dict)  # "gpufleet-x" -> seconds active
    error: str | None = None  # the host could not be read at all


def unit_from_cgroup(text: str) -> str | None:
    """`0::/system.slice/gpufleet-llama-8b.service` -> `gpufleet-llama-8b`."""
    match = UNIT_RE.search(text)
    if match:
        return match.group(1)
    other = re.search(r"/([^/\s]+\.service)", text)
    return other.group(1) if other else None


# ---------------------------------------------------------------- the comparison (pure)


def compare(planned: PlannedHost, reading: HostReading) -> list[Finding]:
    """Findings for one host: memory per GPU and per service, placement, liveness, answers."""
    if reading.error is not None:
        return [Finding("error", "host_unreachable", reading.error, planned.name)]
    findings: list[Finding] = []
    usage = _service_usage(planned, reading)
    for svc in planned.services:
        findings += _check_service(planned.name, svc, reading, usage.get(svc.name, {}))
    findings += _unplanned(planned, reading)
    findings += _check_gpus(planned, reading)
    return findings


def _service_usage(planned: PlannedHost, reading: HostReading) -> dict[str, dict[int, int]]:
    """Measured VRAM per service and GPU, from the processes in each service's cgroup."""
    by_unit = {unit_of(s.name): s.name for s in planned.services}
    usage: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for proc in reading.snapshot.processes if reading.snapshot else []:
        name = by_unit.get(reading.pid_units.get(proc.pid, ""))
        if name is None or not proc.gpus:
            continue
        share = (proc.vram_bytes or 0) // len(proc.gpus)  # tools give a per-process total
        for gpu in proc.gpus:
            usage[name][gpu] += share
    return usage


def _check_service(
    host: str, svc: PlannedService, reading: HostReading, usage: dict[int, int]
) -> list[Finding]:
    out: list[Finding] = []

    def add(
        severity: str, code: str, message: str, gpu: int | None = None, hint: str | None = None
    ) -> None:
        out.append(Finding(severity, code, message, host, gpu, svc.name, hint))

    state = reading.unit_states.get(unit_of(svc.name), "not-found")
    if state != "active":
        add(
            "error",
            "service_down",
            f"unit {unit_of(svc.name)}.service is {state}",
            hint=f"journalctl -u {unit_of(svc.name)} on {host}",
        )
    probe = reading.probes.get(svc.name)
    if probe is not None and not probe.ok:
        add("error", "service_unhealthy", f"does not answer: {probe.detail}")
    if svc.footprint_bytes == 0 or reading.snapshot is None:
        return out
    for gpu in sorted(set(usage) - set(svc.gpus)):
        add(
            "error",
            "wrong_gpu",
            f"runs on GPU {gpu}, planned on GPU(s) {', '.join(map(str, svc.gpus))}",
            gpu,
            "check HIP_VISIBLE_DEVICES in its unit",
        )
    if state == "active" and not usage:
        add(
            "error",
            "missing_process",
            f"no process of {unit_of(svc.name)} holds GPU memory "
            f"on GPU(s) {', '.join(map(str, svc.gpus))}",
        )
        return out
    for gpu in svc.gpus:
        if gpu in usage:
            out += _memory_finding(host, gpu, svc.name, usage[gpu], svc.footprint_bytes, "service")
    return out


def _memory_finding(
    host: str, gpu: int, service: str | None, measured: int, planned: int, what: str
) -> list[Finding]:
    slack = tolerance(planned)
    delta = measured - planned
    text = (
        f"{'GPU ' + str(gpu) if what == 'gpu' else service} uses {measured / GIB:.1f} GiB, "
        f"planned {planned / GIB:.1f} GiB ({delta / max(planned, 1):+.0%})"
    )
    if delta > slack:
        return [
            Finding(
                "error",
                f"{what}_memory_over",
                text,
                host,
                gpu,
                service,
                "a neighbour on this GPU may fail to start; re-plan with the measured "
                "size or find what grew",
            )
        ]
    if delta < -slack:
        return [
            Finding(
                "warning",
                f"{what}_memory_under",
                text,
                host,
                gpu,
                service,
                "still loading, or the plan over-reserves",
            )
        ]
    return []


def _unplanned(planned: PlannedHost, reading: HostReading) -> list[Finding]:
    units = {unit_of(s.name) for s in planned.services}
    out = []
    for proc in reading.snapshot.processes if reading.snapshot else []:
        unit = reading.pid_units.get(proc.pid)
        if unit in units:
            continue
        gpus = ", ".join(map(str, proc.gpus)) or "?"
        out.append(
            Finding(
                "error",
                "unplanned_process",
                f"pid {proc.pid} ({proc.name or '?'}, unit {unit or 'none'}) holds "
                f"{(proc.vram_bytes or 0) / GIB:.1f} GiB on GPU {gpus}, not in the plan",
                planned.name,
                proc.gpus[0] if len(proc.gpus) == 1 else None,
                None,
                "stop it, or add it to the inventory as a service",
            )
        )
    return out


def _check_gpus(planned: PlannedHost, reading: HostReading) -> list[Finding]:
    if reading.snapshot is None:
        return []
    out = []
    measured = {g.index: g for g in reading.snapshot.gpus}
    for gpu in planned.gpus:
        got = measured.get(gpu.index)
        if got is None:
            out.append(
                Finding(
                    "error",
                    "gpu_missing",
                    f"GPU {gpu.index} is not visible",
                    planned.name,
                    gpu.index,
                )
            )
            continue
        if got.vram_used_bytes is not None:
            out += _memory_finding(
                planned.name,
                gpu.index,
                None,
                max(got.vram_used_bytes - IDLE_GPU_BYTES, 0),
                gpu.used_bytes,
                "gpu",
            )
    return out


# ---------------------------------------------------------------- views of the result


def host_rows(planned: PlannedHost, reading: HostReading) -> list[dict[str, Any]]:
    """One row per planned service: state, health, measured vs planned GiB (for tables/JSON)."""
    usage = _service_usage(planned, reading)
    rows: list[dict[str, Any]] = []
    for svc in planned.services:
        probe = reading.probes.get(svc.name)
        measured = sum(usage.get(svc.name, {}).values())
        rows.append(
            {
                "service": svc.name,
                "gpus": list(svc.gpus),
                "state": reading.unit_states.get(unit_of(svc.name), "unknown"),
                "uptime_s": round(reading.uptimes.get(unit_of(svc.name), 0.0)) or None,
                "healthy": probe.ok if probe else None,
                "planned_gib": round(svc.footprint_bytes * len(svc.gpus) / GIB, 2),
                "measured_gib": round(measured / GIB, 2) if reading.snapshot else None,
            }
        )
    return rows
