"""`gpufleet status INVENTORY --watch [SECONDS]`: the status screen kept live (rich Live) —
every GPU's measured memory against the plan and every service's state and health, each host
read every SECONDS over its one open SSH session, a service past its plan flagged.
Ctrl-C ends it (exit 0); a lost host shows as unreachable and comes back by itself."""

from __future__ import annotations

import argparse
import time

from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gpufleet.commands.status import STATE_STYLE, uptime
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.gpu.models import GIB
from gpufleet.livefleet import HostState, LiveFleet
from gpufleet.plan import Plan
from gpufleet.validate import IDLE_GPU_BYTES
from gpufleet.watch import HostView, ServiceOnGpu, fleet_view, over_plan

HEALTH = {True: Text("ok", "green"), False: Text("FAIL", "bold red"), None: Text("—")}


def watch(args: argparse.Namespace, env: Environment, plan: Plan) -> int:
    if args.json:
        raise InputError("--watch is a live screen: it has no --json (use `status --json`, or "
                         "`gpufleet exporter` for metrics)")
    if getattr(args, "html", None):
        raise InputError("--watch is a live screen: write a page with `status --html FILE`")
    if args.watch < 0.5:
        raise InputError(f"--watch {args.watch:g}: refresh at most twice a second")
    fleet = LiveFleet(plan, interval=args.watch, ssh_key=args.ssh_key,
                      known_hosts=args.known_hosts)
    tick = min(args.watch, 1.0)  # redraw at least every second: the "read … ago" moves
    try:
        with fleet, Live(console=env.out, auto_refresh=False, transient=False) as live:
            while True:
                live.update(watch_screen(plan, fleet.states(), args.watch), refresh=True)
                time.sleep(tick)
    except KeyboardInterrupt:
        pass
    return ExitStatus.OK


def watch_screen(plan: Plan, states: dict[str, HostState], seconds: float) -> RenderableType:
    """The whole screen for the hosts' latest reads (at `time.time()`)."""
    now = time.time()
    current = {n: s.current.reading if s.current else None for n, s in states.items()}
    previous = {n: s.previous.reading if s.previous else None for n, s in states.items()}
    views = fleet_view(plan, current, previous)
    head = Text.assemble(
        ("gpufleet status --watch", "bold"),
        f"  every {seconds:g} s · {time.strftime('%H:%M:%S', time.localtime(now))} · "
        "Ctrl-C to quit",
    )
    parts: list[RenderableType] = [head]
    for view in views:
        parts.append(_host_title(view.name, states.get(view.name), now))
        parts.append(watch_table(view))
    flagged = over_plan(views)
    if flagged:
        parts.append(Text("past plan: " + ", ".join(
            f"{host}/gpu{row.gpu}/{row.service} ({_delta(row)})" for host, row in flagged),
            style="bold red"))
    return Group(*parts)


def _host_title(name: str, state: HostState | None, now: float) -> Text:
    sample = state.current if state else None
    if sample is None:
        return Text.assemble((name, "bold"), ("  connecting…", "yellow"))
    text = Text.assemble(
        (name, "bold"),
        f"  read #{sample.number} {max(now - sample.at, 0):.1f} s ago (took {sample.took_s:.1f} s)",
    )
    if state and state.reading_since is not None and now - state.reading_since > 2 * max(
        sample.took_s, 1.0
    ):
        text.append(f"  reading for {now - state.reading_since:.0f} s…", "yellow")
    return text


def watch_table(view: HostView) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False, show_header=not view.error)
    if view.error:  # one line, not a column as wide as the message
        table.add_column("")
        table.add_row(Text(f"unreachable: {view.error}", "bold red"))
        return table
    for col in ("GPU", "service", "state", "up", "health", "GiB measured/planned", "note"):
        table.add_column(col)
    for gpu in view.gpus:
        if not gpu.services and (gpu.measured_bytes or 0) <= IDLE_GPU_BYTES:
            continue  # an idle GPU nobody planned: nothing to show
        label = f"{gpu.index}  {_gib(gpu.measured_bytes, 0)}/{gpu.planned_bytes / GIB:.0f} GiB"
        for i, row in enumerate(gpu.services or ()):
            table.add_row(label if i == 0 else "", *_cells(row))
        if not gpu.services:
            table.add_row(label, Text("— unplanned use", "bold red"), "", "", "", "", "")
    for row in view.off_gpu:
        table.add_row("cpu", *_cells(row))
    return table


def _cells(row: ServiceOnGpu) -> list[RenderableType]:
    note = Text()
    if row.over_plan:
        note.append(f"PAST PLAN {_delta(row)}", "bold red")
    if row.growing and row.grew_bytes is not None:
        note.append(f" ↑ +{row.grew_bytes / GIB:.2f} GiB", "yellow")
    if row.healthy is False:
        note.append(f" {row.detail[:60]}", "red")
    return [
        row.service,
        Text(row.state, STATE_STYLE.get(row.state, "yellow")),
        uptime(row.uptime_s),
        HEALTH[row.healthy],
        f"{_gib(row.measured_bytes, 1)}/{row.planned_bytes / GIB:.1f}",
        note,
    ]


def _delta(row: ServiceOnGpu) -> str:
    measured = row.measured_bytes or 0
    return f"{(measured - row.planned_bytes) / max(row.planned_bytes, 1):+.0%}"


def _gib(value: int | None, digits: int) -> str:
    """GiB as shown: `?` when the reading did not give it (never 0)."""
    return "?" if value is None else f"{value / GIB:.{digits}f}"
