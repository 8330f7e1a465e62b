"""Which hosts a command acts on: `--host NAME` (one) and `--limit PATTERN` (Ansible's).

Every command that reads or changes hosts takes both; they narrow the plan itself, so what a
command shows, renders, deploys, reads or validates is exactly the hosts chosen.
"""

from __future__ import annotations

import argparse

from gpufleet.errors import InputError
from gpufleet.inventory import LIMIT_HELP, Inventory, select_hosts


def add_host_options(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument("--host", help=f"{verb} only this host")
    p.add_argument("--limit", metavar="PATTERN", help=LIMIT_HELP)


def chosen_hosts(args: argparse.Namespace, inv: Inventory) -> list[str] | None:
    """The hosts `--host` and `--limit` leave (both given: the host, if the pattern names it);
    None when neither is given (every host)."""
    host, limit = getattr(args, "host", None), getattr(args, "limit", None)
    if limit is None:
        if host is not None and host not in inv.hosts:
            raise InputError(f"no host {host!r} in the inventory", where=str(inv.path),
                             hint=f"hosts: {', '.join(list(inv.hosts)[:20])}")
        return None if host is None else [host]
    hosts = select_hosts(inv, limit)
    if host is None:
        return hosts
    if host not in hosts:
        raise InputError(f"--host {host!r} is not among the hosts --limit {limit!r} names",
                         hint=f"--limit names: {', '.join(hosts[:20])}")
    return [host]
