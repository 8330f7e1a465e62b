"""`gpufleet rebuild HOST`: the disaster-recovery path in one command — a full deploy from a bare
OS (ROCm, tuning, runtime, weights, services in plan order), then validation.

It prints what it will do first, and refuses a host that is healthy and matches the plan (there is
nothing to recover) unless --force.
"""

from __future__ import annotations

import argparse
import os

from gpufleet.commands import SUMMARIES, deploy
from gpufleet.commands.validate import add_ssh_args
from gpufleet.deploys.site import STEPS
from gpufleet.drift import compare_files, read_drift
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.fleetread import read_fleet
from gpufleet.host.ssh import HostUnreachable, Session, SshTarget
from gpufleet.plan import Plan, PlannedHost
from gpufleet.render import render_host
from gpufleet.validate import compare


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser("rebuild", help=SUMMARIES["rebuild"],
                       description=__doc__)
    p.add_argument("host", metavar="HOST", help="the host's name in the inventory")
    p.add_argument("-i", "--inventory", default=os.environ.get("GPUFLEET_INVENTORY"),
                   help="placement inventory YAML (default: $GPUFLEET_INVENTORY)")
    p.add_argument("--force", action="store_true",
                   help="rebuild even if the host is healthy and matches the plan")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--health-timeout", type=float, metavar="SECONDS")
    p.add_argument("--dry-run", action="store_true",
                   help="say what the rebuild would do and what would change; change nothing")
    p.add_argument("-y", "--yes", action="store_true",
                   help="do not ask for confirmation (it is asked only on a terminal)")
    add_ssh_args(p)
    p.set_defaults(func=run)
    return p


def describe(host: PlannedHost, env: Environment) -> None:
    env.out.print(f"[bold]rebuild {host.name}[/] ({host.host.address}):", markup=True)
    env.out.print(f"  steps: {', '.join(STEPS)}")
    for svc in host.services:
        after = f", after {svc.start_after[-1]}" if svc.start_after else ""
        env.out.print(f"  {svc.start_index + 1:>2}. {svc.name} on GPU "
                      f"{','.join(map(str, svc.gpus))}, port {svc.service.port}{after}")
    env.out.print("  then: validate against the plan")


def matches_plan(plan: Plan, host: PlannedHost, args: argparse.Namespace) -> bool:
    """Healthy, validated, and every non-secret file identical: nothing to recover."""
    readings = read_fleet(plan, ssh_key=args.ssh_key, known_hosts=args.known_hosts)
    if any(f.severity == "error" for f in compare(host, readings[host.name])):
        return False
    target = SshTarget.of(host.name, host.host, plan.inventory.fleet, args.ssh_key,
                          args.known_hosts)
    try:
        with Session(target) as session:
            hashes = read_drift(session, host).hashes
    except HostUnreachable:
        return False
    return not compare_files(host.name, render_host(plan, host.name), hashes, False)


def run(args: argparse.Namespace, env: Environment) -> int:
    if not args.inventory:
        raise InputError("which inventory? pass -i INVENTORY (or set GPUFLEET_INVENTORY)")
    plan = deploy.deploy_plan(args.inventory, args.host, args.set)  # --set reaches its check
    host = plan.hosts[0]
    describe(host, env)
    if args.dry_run:  # deploy's own preview of every step against the host as it is
        return deploy.run(_deploy_args(args, dry_run=True), env)
    if not args.force and matches_plan(plan, host, args):
        env.error(f"{host.name} is healthy and matches the plan: nothing to rebuild "
                  "(pass --force to rebuild anyway)")
        return ExitStatus.FINDINGS
    if not args.yes and not env.confirm(f"rebuild {host.name} from bare OS?"):
        env.error("not confirmed: nothing changed")
        return ExitStatus.FINDINGS
    return deploy.run(_deploy_args(args, dry_run=False), env)


def _deploy_args(args: argparse.Namespace, dry_run: bool) -> argparse.Namespace:
    """The deploy a rebuild is: every step, in plan order, on its one host (already confirmed)."""
    return argparse.Namespace(
        inventory=args.inventory, host=args.host, limit=None, dry_run=dry_run, diff=dry_run,
        force=False, steps=",".join(STEPS), ssh_key=args.ssh_key, known_hosts=args.known_hosts,
        set=args.set, batch_size=None, health_timeout=args.health_timeout,
        max_failed_hosts=None, health_check=None, no_validate=False, wait=None, json=False,
        yes=True, command_name="rebuild",
    )
