"""Read several hosts at once (validate, status): one SSH session per host, in parallel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from gpufleet.host.ssh import HostUnreachable, Session, SshTarget
from gpufleet.observe import read_host
from gpufleet.plan import Plan, PlannedHost
from gpufleet.validate import HostReading

MAX_PARALLEL = 16


def read_fleet(
    plan: Plan,
    *,
    ssh_key: str | None = None,
    known_hosts: str | None = None,
    full_probe: bool = True,
    sessions: Mapping[str, Session] | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, HostReading]:
    """`sessions`: open sessions to reuse (a deploy's lock sessions), by host name; `only`:
    read just these hosts (default: every host of the plan)."""
    fleet = plan.inventory.fleet

    def one(host: PlannedHost) -> HostReading:
        if sessions and host.name in sessions:
            try:
                return read_host(sessions[host.name], host, full_probe)
            except HostUnreachable as exc:
                return HostReading(host.name, error=str(exc))
        target = SshTarget.of(host.name, host.host, fleet, ssh_key, known_hosts)
        try:
            with Session(target) as session:
                return read_host(session, host, full_probe)
        except HostUnreachable as exc:
            return HostReading(host.name, error=str(exc))

    hosts = [h for h in plan.hosts if only is None or h.name in only]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(hosts) or 1)) as pool:
        return dict(zip([h.name for h in hosts], pool.map(one, hosts), strict=True))
