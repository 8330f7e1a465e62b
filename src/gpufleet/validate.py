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

What a reading cannot say is never read as zero: a GPU without a VRAM figure, or a service whose
processes come without their VRAM or GPUs, is *unchecked* (`unchecked()`), and the commands exit
non-zero for it. A saved SMI output (`offline`) has no cgroup map, unit states or answers, so
there only the memory of each GPU is compared, and a GPU that holds nothing while the plan has
services on it is an error (`gpu_idle`): nothing else would say they are not running.
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
    offline: bool = False  # a saved SMI output: no cgroup map, unit states or probes


@dataclass(frozen=True)
class Unchecked:
    """A GPU or a service that could not be checked, why, and what reading would check it."""

    host: str
    gpu: int | None
    service: str | None
    reason: str
    hint: str

    def to_dict(self) -> dict[str, object]:
        return {"host": self.host, "gpu": self.gpu, "service": self.service,
                "reason": self.reason, "hint": self.hint}


# What a reading needs for the GPU checks: VRAM used per GPU (and the processes on them).
SAVE_HINT = ("save `rocm-smi --showmeminfo vram --showpids --json > FILE` (or "
             "`amd-smi metric --mem-usage --json`) on the host and pass --smi HOST=FILE")
LIVE_HINT = ("run `rocm-smi --showmeminfo vram --showpids --showpidgpus` (or `amd-smi process`) "
             "on the host to see what it reports")


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
    if reading.offline:  # units, answers and per-service memory are not in a saved output
        return _check_gpus(planned, reading)
    findings: list[Finding] = []
    usage, unknown = _service_usage(planned, reading)
    for svc in planned.services:
        # unknown usage: its memory is unchecked (see unchecked()); state and answers still count
        known = None if svc.name in unknown else usage.get(svc.name, {})
        findings += _check_service(planned.name, svc, reading, known)
    findings += _unplanned(planned, reading)
    findings += _check_gpus(planned, reading)
    return findings


def _service_usage(
    planned: PlannedHost, reading: HostReading
) -> tuple[dict[str, dict[int, int]], set[str]]:
    """Measured VRAM per service and GPU, from the processes in each service's cgroup, and the
    services with a process whose VRAM or GPUs the tool did not give (their usage is unknown,
    not a smaller number)."""
    by_unit = {unit_of(s.name): s.name for s in planned.services}
    usage: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    unknown: set[str] = set()
    for proc in reading.snapshot.processes if reading.snapshot else []:
        name = by_unit.get(reading.pid_units.get(proc.pid, ""))
        if name is None:
            continue
        if not proc.gpus or proc.vram_bytes is None:
            unknown.add(name)
            continue
        share = proc.vram_bytes // len(proc.gpus)  # tools give a per-process total
        for gpu in proc.gpus:
            usage[name][gpu] += share
    return usage, unknown


def service_usage(
    planned: PlannedHost, reading: HostReading
) -> tuple[dict[str, dict[int, int]], set[str]]:
    """Measured VRAM per service and GPU, and the services whose usage is unknown (for the
    load check's samples, read as `compare` reads a snapshot)."""
    return _service_usage(planned, reading)


def _check_service(
    host: str, svc: PlannedService, reading: HostReading, usage: dict[int, int] | None
) -> list[Finding]:
    """State, answers and (with a known `usage`) placement and memory of one service."""
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
    if svc.footprint_bytes == 0 or reading.snapshot is None or usage is None:
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
                f"{gib_text(proc.vram_bytes)} GiB on GPU {gpus}, not in the plan",
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
        if _gpu_gap(reading.snapshot, gpu.index) is not None:
            continue  # unchecked (see unchecked()): neither missing nor a measurement
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
        # a missing figure is a gap (above), so `or 0` never stands in for a measurement
        used = max((got.vram_used_bytes or 0) - IDLE_GPU_BYTES, 0)
        if reading.offline and _idle(used, gpu.used_bytes):
            out.append(_idle_finding(planned, gpu.index, used, gpu.used_bytes))
            continue
        out += _memory_finding(planned.name, gpu.index, None, used, gpu.used_bytes, "gpu")
    return out


def _idle(used: int, planned: int) -> bool:
    """Nothing beyond an idle GPU's own use, where the plan holds more than the tolerance."""
    return used <= TOLERANCE_FLOOR and planned - used > tolerance(planned)


def _idle_finding(planned: PlannedHost, gpu: int, used: int, want: int) -> Finding:
    names = [s.name for s in planned.services if gpu in s.gpus and s.footprint_bytes]
    return Finding(
        "error",
        "gpu_idle",
        f"GPU {gpu} holds {used / GIB:.1f} GiB (an idle GPU), planned {want / GIB:.1f} GiB: "
        f"none of its planned services ({', '.join(names)}) is running",
        planned.name,
        gpu,
        None,
        "start them (`systemctl start gpufleet.target` on the host), or save the output "
        "again once they are up",
    )


def _gpu_gap(snapshot: Snapshot, index: int) -> str | None:
    """Why the snapshot cannot say what GPU `index` holds, or None when it can."""
    got = next((g for g in snapshot.gpus if g.index == index), None)
    if not snapshot.gpus:
        return "the SMI output lists no GPUs (a process list alone has no GPU memory)"
    if got is None and snapshot.warnings:
        return f"GPU {index} is not in the SMI output, which is incomplete: {snapshot.warnings[0]}"
    if got is None and not _lists_gpus(snapshot):
        return f"GPU {index} is not in the SMI output, which names only the GPUs processes use"
    if got is not None and got.vram_used_bytes is None:
        return f"the SMI output has no VRAM-used figure for GPU {index}"
    return None


def _lists_gpus(snapshot: Snapshot) -> bool:
    """The output read the GPUs themselves (memory, PCI address), so an absent one is missing;
    a process view (`--showpidgpus`) names only the GPUs that processes sit on."""
    return any(g.vram_used_bytes is not None or g.vram_total_bytes is not None or g.bdf
               for g in snapshot.gpus)


def unchecked(planned: PlannedHost, reading: HostReading) -> list[Unchecked]:
    """What `compare` could not check on this host: each GPU without a VRAM reading, and (over
    SSH) each service whose processes came without their VRAM or GPUs. Empty: all checked."""
    if reading.error is not None:
        return []  # host_unreachable already fails the host
    hint = SAVE_HINT if reading.offline else LIVE_HINT
    out = []
    for gpu in planned.gpus:
        gap = _gpu_gap(reading.snapshot, gpu.index) if reading.snapshot else "no GPU reading"
        if gap is not None:
            names = [s.name for s in planned.services if gpu.index in s.gpus]
            on_it = f"; planned on it: {', '.join(names)}" if names else ""
            out.append(Unchecked(planned.name, gpu.index, None, gap + on_it, hint))
    if not reading.offline:
        _, unknown = _service_usage(planned, reading)
        out += [
            Unchecked(planned.name, None, name, "the SMI reading gives a process of it "
                      "without its VRAM or its GPUs", hint)
            for name in sorted(unknown)
        ]
    return out


# ---------------------------------------------------------------- views of the result


def host_rows(planned: PlannedHost, reading: HostReading) -> list[dict[str, Any]]:
    """One row per planned service: state, health, measured vs planned GiB (for tables/JSON)."""
    usage, unknown = _service_usage(planned, reading)
    known = reading.snapshot is not None and not reading.offline  # offline: no cgroup map
    rows: list[dict[str, Any]] = []
    for svc in planned.services:
        probe = reading.probes.get(svc.name)
        measured = sum(usage.get(svc.name, {}).values())
        measured_gib = round(measured / GIB, 2) if known and svc.name not in unknown else None
        rows.append(
            {
                "service": svc.name,
                "gpus": list(svc.gpus),
                "state": reading.unit_states.get(unit_of(svc.name), "unknown"),
                "uptime_s": round(reading.uptimes.get(unit_of(svc.name), 0.0)) or None,
                "healthy": probe.ok if probe else None,
                "planned_gib": round(svc.footprint_bytes * len(svc.gpus) / GIB, 2),
                "measured_gib": measured_gib,
            }
        )
    return rows


def gib_text(value: int | None) -> str:
    """GiB with one decimal, or `?` for a value the reading did not give."""
    return "?" if value is None else f"{value / GIB:.1f}"
