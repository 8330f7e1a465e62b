"""`gpufleet validate INVENTORY`: measured GPU memory, processes and answers vs the plan."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table
from rich.text import Text

from gpufleet import inventory
from gpufleet.commands import SUMMARIES
from gpufleet.commands.hosts import add_host_options, chosen_hosts
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.fleetread import read_fleet
from gpufleet.gpu.models import GIB
from gpufleet.loadcheck import (
    LoadReading,
    LoadSettings,
    compare_load,
    load_dict,
    load_unchecked,
    read_fleet_under_load,
)
from gpufleet.observe import reading_from_files
from gpufleet.plan import Finding, Plan, PlannedHost, build_plan
from gpufleet.validate import HostReading, Unchecked, compare, host_rows, unchecked
from gpufleet.views import finding_line


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(
        "validate", help=SUMMARIES["validate"], description=__doc__
    )
    p.add_argument("inventory", metavar="INVENTORY")
    add_host_options(p, "validate")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--smi",
        action="append",
        default=[],
        metavar="HOST=FILE",
        help="offline: validate saved rocm-smi/amd-smi output instead of SSH "
        "(repeat for several files or hosts)",
    )
    p.add_argument(
        "--load", action="store_true",
        help="also serve a bounded load from each host to its own services (loopback) and "
        "check peak GPU memory, errors and latency against the plan",
    )
    p.add_argument("--duration", type=float, metavar="S",
                   help="--load: seconds of load (default 30, at most 600)")
    p.add_argument("--concurrency", type=int, metavar="N",
                   help="--load: requests at once per service (default and cap: what the "
                   "plan says fits)")
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
        readings = {h: reading_from_files(h, paths) for h, paths in files.items()}
    except OSError as exc:
        raise InputError(f"--smi: cannot read {exc.filename}: {exc.strerror}") from None
    for reading in readings.values():
        reading.offline = True  # compare then checks GPU memory only
    return readings


def load_settings(args: argparse.Namespace) -> LoadSettings | None:
    """--load's settings (None without --load); --duration/--concurrency need --load."""
    if not args.load:
        if args.duration is not None or args.concurrency is not None:
            raise InputError("--duration and --concurrency go with --load",
                             hint="gpufleet validate INVENTORY --load --duration 30")
        return None
    if args.smi:
        raise InputError("--load runs requests on the hosts: it needs SSH, not --smi files")
    return LoadSettings.of(args.duration, args.concurrency)


def run(args: argparse.Namespace, env: Environment) -> int:
    settings = load_settings(args)
    inv = inventory.load(args.inventory)
    plan = build_plan(inv, only_hosts=chosen_hosts(args, inv))
    loads: dict[str, LoadReading] = {}
    if args.smi:
        readings = offline_readings(plan, args.smi)
        plan.hosts = [h for h in plan.hosts if h.name in readings]
    elif settings is not None:
        readings, loads = read_fleet_under_load(plan, settings, ssh_key=args.ssh_key,
                                                known_hosts=args.known_hosts)
    else:
        readings = read_fleet(plan, ssh_key=args.ssh_key, known_hosts=args.known_hosts)
    findings = [f for h in plan.hosts for f in compare(h, readings[h.name])]
    gaps = [u for h in plan.hosts for u in unchecked(h, readings[h.name])]
    loaded = [h for h in plan.hosts if h.name in loads and readings[h.name].error is None]
    for h in loaded:  # an unreachable host is host_unreachable already
        findings += compare_load(h, loads[h.name], readings[h.name].pid_units)
        gaps += [g for g in load_unchecked(h, loads[h.name], readings[h.name].pid_units)
                 if g not in gaps]
    # what could not be checked is not a pass: exit 0 only when everything was checked and held
    ok = not gaps and not any(f.severity == "error" for f in findings)
    if args.json:
        env.write_json(
            json.dumps(
                {
                    "ok": ok,
                    "hosts": [host_dict(h, readings[h.name]) for h in plan.hosts],
                    "findings": [f.to_dict() for f in findings],
                    "unchecked": [u.to_dict() for u in gaps],
                    **({"load": load_json(settings, loaded, loads, readings)}
                       if settings is not None else {}),
                },
                indent=2,
            )
        )
    else:
        for h in plan.hosts:
            env.out.print(host_table(h, readings[h.name]))
        for h in loaded:
            env.out.print(load_table(load_dict(h, loads[h.name], readings[h.name].pid_units),
                                     settings))
        for f in findings:
            env.out.print(finding_line(f))
        show_verdict(env, plan, findings, gaps, offline=bool(args.smi))
    return ExitStatus.OK if ok else ExitStatus.FINDINGS


def show_verdict(
    env: Environment, plan: Plan, findings: list[Finding], gaps: list[Unchecked], *, offline: bool
) -> None:
    """What could not be checked (and why), then one line that says what the result means."""
    for gap in gaps:
        where = "/".join(p for p in (gap.host, _gpu_label(gap.gpu), gap.service) if p)
        env.out.print(Text.assemble(("unchecked ", "bold yellow"), f"{where}: {gap.reason}"),
                      highlight=False)
    env.out.print(verdict(plan, findings, gaps, offline=offline), highlight=False)
    for hint in dict.fromkeys(g.hint for g in gaps):
        env.out.print(Text(f"        fix: {hint}", style="green"), highlight=False)


def verdict(
    plan: Plan, findings: list[Finding], gaps: list[Unchecked], *, offline: bool
) -> Text:
    gpu_gaps = sum(1 for g in gaps if g.service is None)
    if any(f.severity == "error" for f in findings):
        more = f"; {_count(gpu_gaps, len(gaps) - gpu_gaps)} could not be checked" if gaps else ""
        return Text(f"validation failed{more}", style="bold red")
    if offline and gpu_gaps and gpu_gaps == sum(len(h.gpus) for h in plan.hosts):
        return Text("validation checked nothing: the saved SMI output gives the memory of "
                    "none of the planned GPUs", style="bold red")
    if gaps:
        return Text(f"validation incomplete: {_count(gpu_gaps, len(gaps) - gpu_gaps)} could "
                    "not be checked", style="bold red")
    if offline:
        return Text("validation passed (offline: GPU memory only; unit states, answers and "
                    "per-service memory need SSH)", style="bold green")
    return Text("validation passed", style="bold green")


def _count(gpus: int, services: int) -> str:
    parts = [f"{n} {word}{'s' if n != 1 else ''}"
             for n, word in ((gpus, "GPU"), (services, "service")) if n]
    return " and ".join(parts)


def _gpu_label(gpu: int | None) -> str | None:
    return None if gpu is None else f"gpu{gpu}"


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
            "?" if row["measured_gib"] is None else f"{row['measured_gib']}",
        )
    return table


# ---------------------------------------------------------------- --load


def load_json(
    settings: LoadSettings | None, hosts: list[PlannedHost], loads: dict[str, LoadReading],
    readings: dict[str, HostReading],
) -> dict[str, object]:
    assert settings is not None
    return {
        "duration_s": settings.duration_s,
        "concurrency": settings.concurrency,
        "max_requests": settings.max_requests,
        "hosts": [load_dict(h, loads[h.name], readings[h.name].pid_units) for h in hosts],
    }


def load_table(row: dict[str, Any], settings: LoadSettings | None) -> Table:
    """One host under load: per service the requests and latencies, per GPU the peak."""
    duration = f"{settings.duration_s:g} s" if settings else "?"
    table = Table(title=f"{row['name']} under load ({duration}, {row['samples']} SMI samples)",
                  title_justify="left", box=None, header_style="bold")
    for col in ("service", "GPUs", "at once", "requests", "errors", "p50 ms", "p95 ms",
                "p99 ms", "rest GiB", "peak GiB", "planned GiB"):
        table.add_column(col)
    if row["error"]:
        table.add_row(Text(row["error"], style="red"), *[""] * 10)
        return table
    for s in row["services"]:
        if s["skipped"]:
            table.add_row(s["service"], _gpus(s["gpus"]), Text(f"skipped: {s['skipped']}",
                                                               style="yellow"), *[""] * 8)
            continue
        errors = Text(str(s["errors"]), "bold red" if s["errors"] else "green")
        table.add_row(s["service"], _gpus(s["gpus"]), str(s["concurrency"]), str(s["requests"]),
                      errors, *(_num(s[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "rest_gib",
                                                      "peak_gib", "planned_gib")))
    for g in row["gpus"]:
        if g["planned_gib"] or g["peak_gib"]:
            table.add_row(Text(f"gpu{g['index']}", style="dim"), str(g["index"]), *[""] * 6,
                          _num(g["rest_gib"]), _num(g["peak_gib"]), _num(g["planned_gib"]))
    return table


def _gpus(gpus: list[int]) -> str:
    return ",".join(map(str, gpus))


def _num(value: object) -> str:
    return "?" if value is None else str(value)
