"""`gpufleet import HOST`: write the inventory that reproduces the vLLM services running on a
hand-built host (their units and command lines), to start managing it with gpufleet."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gpufleet import inventory
from gpufleet.adopt import (
    read_after,
    read_vllm_processes,
    serve_args,
    service_from_argv,
    service_name,
    start_order,
)
from gpufleet.commands import SUMMARIES
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.host.ssh import HostUnreachable, Session, SshTarget
from gpufleet.inventory import Fleet, Host


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(
        "import", help=SUMMARIES["import"], description=__doc__
    )
    p.add_argument("host", metavar="HOST", help="host name (and address unless --address)")
    p.add_argument(
        "--inventory",
        metavar="INVENTORY",
        help="take the host's SSH settings and fleet defaults from this inventory",
    )
    p.add_argument("--address", help="address to connect to (default: HOST)")
    p.add_argument("--user", default="root")
    p.add_argument("--port", type=int, default=22)
    p.add_argument("--ssh-key", metavar="PATH")
    p.add_argument("--known-hosts", metavar="PATH")
    p.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    p.set_defaults(func=run)
    return p


def _target(args: argparse.Namespace) -> tuple[SshTarget, Fleet, Host]:
    if args.inventory:
        inv = inventory.load(args.inventory)
        if args.host not in inv.hosts:
            raise InputError(
                f"no host {args.host!r} in {args.inventory}", hint=f"hosts: {', '.join(inv.hosts)}"
            )
        host, fleet = inv.hosts[args.host], inv.fleet
    else:
        try:
            host = Host(address=args.address or args.host, ssh_user=args.user,
                        ssh_port=args.port)
        except ValidationError as exc:  # a hostile --address/--user/--port: the tool's error
            reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                for e in exc.errors())
            raise InputError(f"import {args.host!r}: {reasons}",
                             hint="--address: a host name or IP address; --user: a user "
                             "name; --port: 1-65535") from None
        fleet = Fleet(name="imported")
    target = SshTarget.of(args.host, host, fleet, args.ssh_key, args.known_hosts)
    return target, fleet, host


def run(args: argparse.Namespace, env: Environment) -> int:
    target, fleet, host = _target(args)
    try:
        with Session(target) as session:
            found = read_vllm_processes(session)
            after = read_after(session, sorted({r.unit for r in found if r.unit}))
    except HostUnreachable as exc:
        env.error(str(exc))
        return ExitStatus.FINDINGS
    names = {r.unit: service_name(r.unit, serve_args(r.argv)[0]) for r in found if r.unit}
    services = [service_from_argv(r.argv, r.env, service_name(r.unit, serve_args(r.argv)[0]))
                for r in found]
    services = start_order(services, {names.get(u, u): {names.get(a, a) for a in deps}
                                      for u, deps in after.items()})
    doc = inventory_doc(args.host, fleet, host, services)
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
    header = (
        f"# Imported from {args.host} by `gpufleet import`: {len(services)} vLLM service(s).\n"
        "# Review it, add secrets references, then `gpufleet plan` it.\n"
    )
    if args.out:
        Path(args.out).write_text(header + text, encoding="utf-8")
        env.err.print(f"wrote {args.out} ({len(services)} services)")
    else:
        env.stdout.write(header + text)
    return ExitStatus.OK


def inventory_doc(
    name: str, fleet: Fleet, host: Host, services: list[dict[str, Any]]
) -> dict[str, Any]:
    fleet_doc = fleet.model_dump(mode="json", exclude_defaults=True, exclude={"secrets"})
    fleet_doc.setdefault("name", fleet.name)
    known = fleet.model_dump(mode="json")["secrets"]
    wanted = {ref: var for svc in services for var, ref in svc.get("secrets", {}).items()}
    # secrets the inventory defines are kept; new ones read the controller's environment
    fleet_doc["secrets"] = {
        ref: known.get(ref, {"env": var}) for ref, var in sorted(wanted.items())
    }
    if not fleet_doc["secrets"]:
        del fleet_doc["secrets"]
    host_doc = host.model_dump(mode="json", exclude_defaults=True, exclude={"services"})
    host_doc["address"] = host.address
    return {"fleet": fleet_doc, "hosts": {name: {**host_doc, "services": services}}}
