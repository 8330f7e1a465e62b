"""`gpufleet drift INVENTORY`: what differs between the hosts and the inventory — unit and env
files, the running processes' real flags, services nobody planned, ROCm and vLLM versions."""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

from rich.text import Text

from gpufleet import inventory
from gpufleet.commands import SUMMARIES
from gpufleet.commands.hosts import add_host_options, chosen_hosts
from gpufleet.commands.validate import add_ssh_args
from gpufleet.drift import compare_files, compare_processes, compare_versions, read_drift
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.host.layout import container_name
from gpufleet.host.ssh import HostUnreachable, Session, SshTarget
from gpufleet.plan import Finding, Plan, PlannedHost, build_plan
from gpufleet.render import render_host
from gpufleet.secrets import resolve_secrets
from gpufleet.views import finding_line


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser("drift", help=SUMMARIES["drift"],
                       description=__doc__)
    p.add_argument("inventory", metavar="INVENTORY")
    add_host_options(p, "compare")
    p.add_argument("--json", action="store_true")
    add_ssh_args(p)
    p.set_defaults(func=run)
    return p


def host_drift(plan: Plan, host: PlannedHost, args: argparse.Namespace,
               secrets: dict[str, str] | None) -> list[Finding]:
    fleet = plan.inventory.fleet
    target = SshTarget.of(host.name, host.host, fleet, args.ssh_key, args.known_hosts)
    try:
        with Session(target) as session:
            reading = read_drift(session, host)
    except HostUnreachable as exc:
        return [Finding("error", "host_unreachable", str(exc), host.name)]
    rendered = render_host(plan, host.name, secrets)
    images = {container_name(s.name): s.service.image or fleet.image or ""
              for s in host.services} if fleet.runtime == "container" else {}
    return (compare_files(host.name, rendered, reading.hashes, secrets is not None)
            + compare_processes(host, reading.processes)
            + compare_versions(host, reading, fleet.rocm_version, fleet.vllm_version, images))


def run(args: argparse.Namespace, env: Environment) -> int:
    inv = inventory.load(args.inventory)
    plan = build_plan(inv, only_hosts=chosen_hosts(args, inv))
    try:
        secrets: dict[str, str] | None = resolve_secrets(plan.inventory.fleet)
    except InputError as exc:
        env.warn(f"env files are not compared: {exc.what}")
        secrets = None
    with ThreadPoolExecutor(max_workers=16) as pool:
        per_host = list(pool.map(lambda h: host_drift(plan, h, args, secrets), plan.hosts))
    findings = [f for fs in per_host for f in fs]
    drifted = any(f.severity != "info" for f in findings)
    if args.json:
        env.write_json(json.dumps({"drifted": drifted,
                                   "findings": [f.to_dict() for f in findings]}, indent=2))
    else:
        for f in findings:
            env.out.print(finding_line(f))
        env.out.print(Text("drift found", style="bold red") if drifted
                      else Text("no drift: every host matches the inventory", style="bold green"))
    return ExitStatus.FINDINGS if drifted else ExitStatus.OK
