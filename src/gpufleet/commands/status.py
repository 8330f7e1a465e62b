"""`gpufleet status INVENTORY`: one screen for the fleet — per host and GPU, each service's state,
uptime, health and measured vs planned memory (`--html FILE`: also as a page, the measured use
drawn over the plan)."""

from __future__ import annotations

import argparse
import json

from rich.table import Table
from rich.text import Text

from gpufleet import inventory
from gpufleet.commands import SUMMARIES
from gpufleet.commands.hosts import add_host_options, chosen_hosts
from gpufleet.commands.plan import add_html_arg, check_page_path, write_page
from gpufleet.commands.validate import add_ssh_args, host_dict
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus
from gpufleet.fleetread import read_fleet
from gpufleet.gpu.models import GIB
from gpufleet.page import status_page
from gpufleet.plan import PlannedHost, build_plan
from gpufleet.validate import IDLE_GPU_BYTES, HostReading, host_rows

STATE_STYLE = {"active": "green", "activating": "yellow", "failed": "bold red"}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(
        "status", help=SUMMARIES["status"], description=__doc__
    )
    p.add_argument("inventory", metavar="INVENTORY")
    add_host_options(p, "read")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="probe /health only, no real requests")
    add_ssh_args(p)
    add_html_arg(p, "the status")
    p.add_argument(  # the loop and its screen: commands/status_watch.py
        "--watch", metavar="SECONDS", nargs="?", type=float, const=2.0, default=None,
        help="keep the screen live, each host read every SECONDS (default 2) over one open "
        "SSH session; Ctrl-C to quit",
    )
    p.set_defaults(func=run)
    return p


def uptime(seconds: object) -> str:
    if not isinstance(seconds, int | float) or not seconds:
        return "—"
    s = int(seconds)
    return (
        f"{s // 86400}d{s % 86400 // 3600}h"
        if s >= 86400
        else (f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s")
    )


def status_table(host: PlannedHost, reading: HostReading) -> Table:
    table = Table(title=host.name, title_justify="left", box=None, header_style="bold")
    for col in ("GPU", "service", "state", "up", "health", "GiB measured/planned"):
        table.add_column(col)
    if reading.error:
        table.add_row("", Text(reading.error, style="bold red"), "", "", "", "")
        return table
    rows = {r["service"]: r for r in host_rows(host, reading)}
    measured = (
        {g.index: g.vram_used_bytes for g in reading.snapshot.gpus} if reading.snapshot else {}
    )
    for gpu in host.gpus:
        got = measured.get(gpu.index)
        if not gpu.segments and (got or 0) <= IDLE_GPU_BYTES:
            continue  # an idle GPU nobody planned: nothing to show
        gpu_label = f"{gpu.index}  {(got or 0) / GIB:.0f}/{gpu.used_bytes / GIB:.0f} GiB"
        for i, (name, _) in enumerate(gpu.segments or [("—", 0)]):
            row = rows.get(name)
            if row is None:
                table.add_row(gpu_label, "—", "", "", "", "")
                continue
            state = str(row["state"])
            health = {True: Text("ok", "green"), False: Text("FAIL", "bold red"), None: Text("—")}[
                row["healthy"]
            ]
            table.add_row(
                gpu_label if i == 0 else "",
                name,
                Text(state, STATE_STYLE.get(state, "yellow")),
                uptime(row["uptime_s"]),
                health,
                f"{_known(row['measured_gib'])}/{row['planned_gib']}",
            )
    return table


def run(args: argparse.Namespace, env: Environment) -> int:
    if args.html:
        check_page_path(args.html)
    inv = inventory.load(args.inventory)
    plan = build_plan(inv, only_hosts=chosen_hosts(args, inv))
    if args.watch is not None:
        from gpufleet.commands.status_watch import watch  # it imports this module's helpers

        return watch(args, env, plan)
    readings = read_fleet(
        plan, ssh_key=args.ssh_key, known_hosts=args.known_hosts, full_probe=not args.quick
    )
    if args.json:
        env.write_json(
            json.dumps({"hosts": [host_dict(h, readings[h.name]) for h in plan.hosts]}, indent=2)
        )
    else:
        for h in plan.hosts:
            env.out.print(status_table(h, readings[h.name]))
    if args.html:
        write_page(args.html, status_page(plan, readings))
    bad = any(
        r.error or any(s != "active" for s in r.unit_states.values()) for r in readings.values()
    )
    return ExitStatus.FINDINGS if bad else ExitStatus.OK


def _known(value: object) -> str:
    """A measurement as shown: `?` when the reading did not give it (never 0)."""
    return "?" if value is None else str(value)
