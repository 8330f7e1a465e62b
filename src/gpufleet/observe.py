"""Read a host as it is: GPU memory and processes (amd-smi or rocm-smi), which systemd unit each
GPU process belongs to, unit states, and service health. Only reads; changes nothing.
"""

from __future__ import annotations

import json
import shlex

from gpufleet.adopt import CONTAINER_SCOPE, container_names
from gpufleet.host.ssh import HostUnreachable, Session
from gpufleet.host.units import states_and_uptimes
from gpufleet.plan import PlannedHost, PlannedService
from gpufleet.probe import PROBE_SCRIPT, Probe, parse_probe_output, probe_request
from gpufleet.smi import SmiParseError, Snapshot, merge, parse
from gpufleet.validate import HostReading, unit_from_cgroup

# amd-smi first (ROCm >= 6), then rocm-smi; both as JSON where the version supports it.
SMI_COMMANDS = {
    "amd-smi": ["amd-smi metric --mem-usage --json", "amd-smi process --json"],
    "rocm-smi": [
        "rocm-smi --showmeminfo vram --json",
        "rocm-smi --showpids",
        "rocm-smi --showpidgpus",
    ],
}


# One rocm-smi run for memory, processes and their GPUs (each run is a Python start on the host,
# which is most of a no-op deploy's cost there); the separate commands above are the fallback.
ROCM_SMI_ONCE = "rocm-smi --showmeminfo vram --showpids --showpidgpus"


def read_smi(session: Session) -> Snapshot:
    """One merged snapshot. rocm-smi exits 0 even without a driver: parse() recognises that."""
    tool = "amd-smi" if session.run("command -v amd-smi").rc == 0 else "rocm-smi"
    if tool == "rocm-smi":
        once = session.run(ROCM_SMI_ONCE)
        try:
            snapshot = parse(once.stdout, source=f"{session.target.name}: {ROCM_SMI_ONCE}")
            if snapshot.gpus and (snapshot.processes or "No KFD PIDs" in once.stdout):
                return snapshot
        except SmiParseError:
            pass  # an older or newer rocm-smi that words the combined view otherwise
    snapshots = []
    for command in SMI_COMMANDS[tool]:
        result = session.run(command)
        text = result.stdout + ("\n" + result.stderr if "ERROR" in result.stderr else "")
        try:
            snapshots.append(parse(text, source=f"{session.target.name}: {command}"))
        except SmiParseError as exc:
            if "No KFD PIDs" in text or "no running processes" in text.lower():
                continue  # nothing running on the GPUs is a valid reading
            raise exc
    return merge(*snapshots)


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
        reading.snapshot = read_smi(session)
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
