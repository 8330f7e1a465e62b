"""What systemd says about units, read one way for the deploys, the survey, the rollout,
validate and import alike."""

from __future__ import annotations

from collections.abc import Iterable

from gpufleet.host.layout import service_of


def parse_show(output: str | Iterable[str]) -> dict[str, dict[str, str]]:
    """`systemctl show -p Id,...` of several units (blank-line separated blocks) -> unit Id as
    systemd prints it (`gpufleet-chat.service`, `gpufleet.target`) -> its properties. A value
    may itself hold `=` (ExecStart, Environment): only the first one splits."""
    lines = output.splitlines() if isinstance(output, str) else list(output)
    units: dict[str, dict[str, str]] = {}
    block: dict[str, str] = {}
    for line in [*lines, ""]:
        if "=" in line:
            key, _, value = line.partition("=")
            block[key.strip()] = value.strip()
        elif not line.strip() and block:
            if block.get("Id"):
                units[block["Id"]] = block
            block = {}
    return units


def by_service(units: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """parse_show's result for gpufleet service units only, by service name (`chat`)."""
    return {svc: props for unit, props in units.items() if (svc := service_of(unit))}
