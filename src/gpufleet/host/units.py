"""Readers of a host's gpufleet units over an open SSH session, shared by the rollout's health
gate, validate and status: unit states, how long each has been active, the errors it logged."""

from __future__ import annotations

from gpufleet.host.layout import UNIT_GLOB, unit_id, unit_name, unit_path
from gpufleet.host.ssh import Session
from gpufleet.host.systemctl import by_service, parse_show


def unit_states(session: Session, services: list[str]) -> dict[str, str]:
    """Service name -> systemd ActiveState (active, activating, failed, ...)."""
    if not services:
        return {}
    units = " ".join(unit_name(n) for n in services)
    out = session.run(f"systemctl show -p Id,ActiveState {units}").stdout
    return {name: props.get("ActiveState", "unknown")
            for name, props in by_service(parse_show(out)).items()}


def states_and_uptimes(session: Session) -> tuple[dict[str, str], dict[str, float]]:
    """ActiveState and seconds since it became active, per `gpufleet-<svc>` unit id."""
    out = session.run(
        "cat /proc/uptime; systemctl show --property=Id,ActiveState,ActiveEnterTimestampMonotonic "
        f"'{UNIT_GLOB}'"
    ).stdout
    uptime, _, show = out.partition("\n")
    now = float(uptime.split()[0]) if uptime.strip() else 0.0
    states: dict[str, str] = {}
    uptimes: dict[str, float] = {}
    for service, props in by_service(parse_show(show)).items():
        unit = unit_id(service)
        states[unit] = props.get("ActiveState", "unknown")
        since = int(props.get("ActiveEnterTimestampMonotonic", "0") or 0) / 1e6
        if states[unit] == "active" and since:
            uptimes[unit] = max(now - since, 0.0)
    return states, uptimes


def has_unit(session: Session, service: str) -> bool:
    """The service's unit file is on the host (a restore may have removed it)."""
    return session.run(f"test -f {unit_path(service)}").rc == 0


def logged_error(session: Session, service: str) -> str:
    """The last error lines the service logged (vLLM's own message), for the report."""
    out = session.run(
        f"journalctl -u {unit_name(service)} -n 200 --no-pager -o cat 2>/dev/null | "
        "grep -E 'Error|error|ERROR' | tail -n 3"
    ).stdout.strip()
    return out or "no error logged"
