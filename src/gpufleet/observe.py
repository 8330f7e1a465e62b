"""Read a host as it is: GPU memory and processes (amd-smi or rocm-smi), which systemd unit each
GPU process belongs to, unit states, and service health. Only reads; changes nothing.
"""

from __future__ import annotations

import json
import shlex

from gpufleet.adopt import CONTAINER_SCOPE, container_names
from gpufleet.gpu import accelerator
from gpufleet.gpu.smi import SmiParseError, Snapshot, merge, parse
from gpufleet.host.ssh import HostUnreachable, Session
from gpufleet.host.units import states_and_uptimes
from gpufleet.plan import PlannedHost, PlannedService
from gpufleet.probe import PROBE_SCRIPT, Probe, parse_probe_output, probe_request
from gpufleet.validate import HostReading, unit_from_cgroup


def read_smi(session: Session, gpu: str = "mi300x") -> Snapshot:
    """One merged snapshot, read as the fleet's accelerator reads its GPUs."""
    return accelerator(gpu).read_snapshot(session)


def read_pid_units(session: Session, pids: list[int]) -> dict[int, str]:
    """Map GPU pids to `gpufleet-<svc>` through their cgroup; containers through their name."""
    if not pids:
        return {}
    script = "; ".join(f"echo {p} $(tr '\\n' ' ' < /proc/{p}/cgroup 2>/dev/null)" for p in pids)
    out = session.run(script).stdout
    containers = container_names(session)
    units = {}
    for line in out.splitlines():
        pid, _, cgroup = line.partition(" ")
        match = CONTAINER_SCOPE.search(cgroup)
        unit = containers.get(match.group(1)[:12]) if match else unit_from_cgroup(cgroup)
        if unit:
            units[int(pid)] = unit
    return units


def run_probes(
    session: Session, services: list[PlannedService], full: bool = True
) -> dict[str, Probe]:
    """Run the probe script with the host's python3; the service list goes in on stdin."""
    result = session.run(
        "python3 -c " + shlex.quote(PROBE_SCRIPT), stdin=probe_request(services, full), timeout=120
    )
    return parse_probe_output(result.stdout, services)


def read_probes(session: Session, host: PlannedHost, full: bool = True) -> dict[str, Probe]:
    return run_probes(session, host.services, full)


def read_host(session: Session, host: PlannedHost, full_probe: bool = True) -> HostReading:
    """Everything validate and status need from one host, in one SSH session."""
    reading = HostReading(host.name)
    try:
        reading.snapshot = read_smi(session, host.gpu_model)
        reading.pid_units = read_pid_units(session, [p.pid for p in reading.snapshot.processes])
        reading.unit_states, reading.uptimes = states_and_uptimes(session)
        reading.probes = read_probes(session, host, full_probe)
    except HostUnreachable as exc:
        reading.error = str(exc)
    except SmiParseError as exc:
        reading.error = f"cannot read the GPUs: {exc}"
    return reading


def reading_from_files(host: str, files: list[str]) -> HostReading:
    """Offline validation (`--smi HOST=FILE`): GPUs and processes from saved outputs only."""
    snapshots = []
    for path in files:
        with open(path, encoding="utf-8") as fh:
            snapshots.append(parse(fh.read(), source=path))
    return HostReading(host, snapshot=merge(*snapshots))


def dump(reading: HostReading) -> str:
    return json.dumps(
        {
            "host": reading.host,
            "error": reading.error,
            "snapshot": reading.snapshot.to_dict() if reading.snapshot else None,
        }
    )
