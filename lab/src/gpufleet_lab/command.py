"""`gpufleet lab up|down|status`: real test hosts on this machine (root; see .ci/lab-deps.sh)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.table import Table

from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, GpufleetError, InputError
from gpufleet_lab import Lab, LabConfig, LabError, down, preflight_problem, status, up
from gpufleet_lab.config import MAX_HOSTS
from gpufleet_lab.fleet import write_lab_fleet


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "lab",
        help="boot, inspect and remove lab test hosts (systemd-nspawn) on this machine",
        description="Lab hosts: real systemd + sshd machines in network namespaces, plus a "
        "signed apt mirror shaped like repo.radeon.com. Needs root.",
    )
    parser.set_defaults(func=run)
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    up_p = sub.add_parser("up", help="boot N hosts (default 3)")
    up_p.add_argument("n", nargs="?", type=int, default=3, metavar="N")
    up_p.add_argument("--fake-gpus", type=int, default=8, help="emulated MI300X per host (8)")
    up_p.add_argument("--inventory", default="inventories/lab.yml", metavar="PATH",
                      help="where to write the lab fleet's inventory (inventories/lab.yml)")
    sub.add_parser("down", help="stop and remove every trace of the lab")
    sub.add_parser("status", help="table of hosts: address, state, ssh, uptime")
    for p in sub.choices.values():
        p.add_argument("--prefix", default="gf", help="host name prefix, ≤ 6 chars (gf)")
        p.add_argument("--net", default="10.231.0", help="first three octets (10.231.0)")
    return parser


def run(args: argparse.Namespace, env: Environment) -> int:
    problem = preflight_problem()
    if problem:
        raise InputError(problem, hint="run `sudo bash .ci/lab-deps.sh`, then retry as root")
    if args.lab_command == "up" and not 1 <= args.n <= MAX_HOSTS:
        raise InputError(f"lab up {args.n}: a lab has 1 to {MAX_HOSTS} hosts")
    try:
        cfg = LabConfig(prefix=args.prefix, net=args.net, fake_gpus=getattr(args, "fake_gpus", 8))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    try:
        with _log_to(env):
            if args.lab_command == "up":
                lab = up(cfg, args.n)
                _show_up(lab, env)
                written = write_lab_fleet(lab, Path(args.inventory))
                env.out.print(f"inventory: {written}  (try: gpufleet plan {written})")
            elif args.lab_command == "down":
                down(cfg)
            else:
                _show_status(cfg, env)
    except LabError as exc:
        raise GpufleetError(str(exc)) from None
    return ExitStatus.OK


@contextmanager
def _log_to(env: Environment) -> Iterator[None]:
    """Lab progress (INFO) goes to the command's stderr console while the command runs."""

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            env.err.print(f"[dim]{record.getMessage()}[/]", markup=True, highlight=False)

    logger = logging.getLogger("gpufleet_lab")
    handler, old_level = _Handler(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _show_up(lab: Lab, env: Environment) -> None:
    table = Table(title=f"lab {lab.config.prefix}: {len(lab.hosts)} host(s)")
    for col in ("host", "address", "user"):
        table.add_column(col)
    for h in lab.hosts:
        table.add_row(h.name, h.address, h.user)
    env.out.print(table)
    url = lab.mirror_url
    env.out.print(f"ssh:          ssh -F {lab.ssh_config} {lab.hosts[0].name}")
    env.out.print(f"key:          {lab.key}")
    env.out.print(f"known_hosts:  {lab.known_hosts}")
    env.out.print(f"apt (rocm):   {url}/rocm/apt/<ver> jammy main")
    env.out.print(f"apt (amdgpu): {url}/amdgpu/<ver>/ubuntu jammy main")
    env.out.print(f"apt key:      {url}/rocm/rocm.gpg.key")
    env.out.print(f"pypi index:   {url}/simple/  (wheelhouse {lab.wheels_dir})")


def _show_status(cfg: LabConfig, env: Environment) -> None:
    rows = status(cfg)
    if not rows:
        env.out.print(f"lab {cfg.prefix}: down")
        return
    table = Table(title=f"lab {cfg.prefix}")
    for col in ("host", "address", "state", "ssh ok", "uptime"):
        table.add_column(col)
    for s in rows:
        uptime = "-" if s.uptime_s is None else f"{s.uptime_s:.0f} s"
        table.add_row(s.name, s.address, s.state, "yes" if s.ssh_ok else "no", uptime)
    env.out.print(table)
