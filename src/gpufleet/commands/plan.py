"""`gpufleet plan INVENTORY [--host H] [--json] [--html FILE]`: what will fit, what will fail,
what to change."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path

from gpufleet import inventory
from gpufleet.bulk import paused_gc
from gpufleet.commands import SUMMARIES
from gpufleet.commands.hosts import add_host_options, chosen_hosts
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.page import plan_page
from gpufleet.plan import Plan, build_plan
from gpufleet.render import render_findings
from gpufleet.views import DETAIL_HOSTS, show_plan


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(
        "plan",
        help=SUMMARIES["plan"],
        description=__doc__,
    )
    p.add_argument("inventory", metavar="INVENTORY", help="placement inventory YAML")
    add_host_options(p, "plan")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (see README)")
    p.add_argument("--full", action="store_true",
                   help=f"show every host's tables even past {DETAIL_HOSTS} hosts")
    add_html_arg(p, "the plan")
    p.set_defaults(func=run)
    return p


def add_html_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--html", metavar="FILE",
                   help=f"also write {what} as one self-contained HTML page (see README)")


# Past this many hosts the JSON is one compact line: Python's indenting encoder is pure Python
# and would triple the time of a 1,000-host plan (jq or any parser reads both forms).
INDENTED_JSON_HOSTS = 100


def run(args: argparse.Namespace, env: Environment) -> int:
    if args.html:
        check_page_path(args.html)
    inv = inventory.load(args.inventory)
    plan = build_plan(inv, only_hosts=chosen_hosts(args, inv))
    plan = Plan(plan.inventory, plan.hosts, plan.findings + render_findings(plan))
    if args.json:
        with paused_gc():
            data = plan.to_dict()
        indent = 2 if len(plan.hosts) <= INDENTED_JSON_HOSTS else None
        env.write_json(json.dumps(data, indent=indent))
    else:
        show_plan(plan, env.out, full=args.full)
    if args.html:
        write_page(args.html, plan_page(plan))
    return ExitStatus.FINDINGS if plan.has_errors else ExitStatus.OK


def check_page_path(path: str) -> None:
    """Refuse an --html FILE that cannot be written before any work is done (exit 2)."""
    target = Path(path)
    folder = target.parent
    why = ("is a folder" if target.is_dir() else
           f"its folder {folder} does not exist" if not folder.is_dir() else
           f"its folder {folder} is not writable" if not os.access(folder, os.W_OK | os.X_OK)
           else None)
    if why:
        raise InputError(f"--html {path}: {why}",
                         hint="--html takes a file in a folder that exists and you can write to")


def write_page(path: str, html: str) -> None:
    """Write a page atomically: a temporary name beside it, fsynced, renamed over it (an
    interrupted run leaves the old page or the new, never half a page)."""
    target = Path(path)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(temp, "x", encoding="utf-8") as stream:  # "x": never through a symlink
            stream.write(html)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, target)
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise InputError(f"--html {path}: cannot write it: {exc.strerror or exc}",
                         hint="--html takes a file in a folder that exists and you can write to"
                         ) from None
