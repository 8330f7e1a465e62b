"""`gpufleet validate INVENTORY`: measured GPU memory, processes and answers vs the plan."""

from __future__ import annotations

import argparse
import json

from rich.table import Table
from rich.text import Text

from gpufleet import inventory
from gpufleet.commands import SUMMARIES
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.fleetread import read_fleet
from gpufleet.gpu.models import GIB
from gpufleet.observe import reading_from_files
from gpufleet.plan import Plan, PlannedHost, build_plan
from gpufleet.validate import HostReading, compare, host_rows
from gpufleet.views import finding_line


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(
        "validate", help=SUMMARIES["validate"], description=__doc__
    )
    p.add_argument("inventory", metavar="INVENTORY")
    p.add_argument("--host", help="validate only this host")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--smi",
        action="append",
        default=[],
        metavar="HOST=FILE",
        help="offline: validate saved rocm-smi/amd-smi output instead of SSH "
        "(repeat for several files or hosts)",
    )
    add_ssh_args(p)
    p.set_defaults(func=run)
    return p


def add_ssh_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ssh-key", metavar="PATH", help="private key (default: fleet.ssh_key/agent)")
    p.add_argument(
        "--known-hosts", metavar="PATH", help="known_hosts to check host keys against (strict)"
    )


def offline_readings(plan: Plan, specs: list[str]) -> dict[str, HostReading]:
    files: dict[str, list[str]] = {}
    for spec in specs:
        host, sep, path = spec.partition("=")
        if not sep or not path:
            raise InputError(f"--smi {spec!r}: expected HOST=FILE")
        if host not in {h.name for h in plan.hosts}:
            raise InputError(
                f"--smi {spec!r}: no host {host!r} in the plan",
                hint=f"hosts: {', '.join(h.name for h in plan.hosts)}",
            )
        files.setdefault(host, []).append(path)
    try:
        return {h: reading_from_files(h, paths) for h, paths in files.items()}
    except OSError as exc:
        raise InputError(f"--smi: cannot read {exc.filename}: {exc.strerror}") from None


def run(args: argparse.Namespace, env: Environment) -> int:
    plan = build_plan(inventory.load(args.inventory), only_host=args.host)
    if args.smi:
        readings = offline_readings(plan, args.smi)
        plan.hosts = [h for h in plan.hosts if h.name in readings]
    else:
        readings = read_fleet(plan, ssh_key=args.ssh_key, known_hosts=args.known_hosts)
    findings = [f for h in plan.hosts for f in compare(h, readings[h.name])]
    if args.smi:  # saved outputs say nothing about units or answers
        findings = [f for f in findings if f.code not in OFFLINE_BLIND]
    ok = not any(f.severity == "error" for f in findings)
    if args.json:
        env.write_json(
            json.dumps(
                {
                    "ok": ok,
                    "hosts": [host_dict(h, readings[h.name]) for h in plan.hosts],
                    "findings": [f.to_dict() for f in findings],
                },
                indent=2,
            )
        )
    else:
        for h in plan.hosts:
            env.out.print(host_table(h, readings[h.name]))
        for f in findings:
            env.out.print(finding_line(f))
        env.out.print(
            Text("validation passed", style="bold green")
            if ok
            else Text("validation failed", style="bold red")
        )
    return ExitStatus.OK if ok else ExitStatus.FINDINGS


# without SSH there is no cgroup map, unit state or probe: only memory per GPU can be checked
OFFLINE_BLIND = {
    "service_down",
    "missing_process",
    "unplanned_process",
    "service_unhealthy",
    "service_memory_over",
    "service_memory_under",
    "wrong_gpu",
}


def host_dict(host: PlannedHost, reading: HostReading) -> dict[str, object]:
    measured = {g.index: g for g in reading.snapshot.gpus} if reading.snapshot else {}
    return {
        "name": host.name,
        "error": reading.error,
        "gpus": [
            {
                "index": g.index,
                "planned_gib": round(g.used_bytes / GIB, 2),
                "measured_gib": _gib(measured[g.index].vram_used_bytes)
                if g.index in measured
                else None,
            }
            for g in host.gpus
        ],
        "services": host_rows(host, reading),
    }


def _gib(value: int | None) -> float | None:
    return None if value is None else round(value / GIB, 2)


def host_table(host: PlannedHost, reading: HostReading) -> Table:
    table = Table(title=f"{host.name}", title_justify="left", box=None, header_style="bold")
    for col in ("service", "GPUs", "state", "healthy", "planned GiB", "measured GiB"):
        table.add_column(col)
    if reading.error:
        table.add_row(Text(reading.error, style="red"), "", "", "", "", "")
        return table
    for row in host_rows(host, reading):
        healthy = {True: Text("yes", "green"), False: Text("NO", "bold red"), None: Text("—")}
        table.add_row(
            str(row["service"]),
            ",".join(map(str, row["gpus"])),  # type: ignore[call-overload]
            str(row["state"]),
            healthy[row["healthy"]],  # type: ignore[index]
            f"{row['planned_gib']}",
            f"{row['measured_gib']}",
        )
    return table
