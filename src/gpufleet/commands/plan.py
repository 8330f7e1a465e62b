"""`gpufleet plan INVENTORY [--host H] [--json]`: what will fit, what will fail, what to change."""

from __future__ import annotations

import argparse
import json

from gpufleet import inventory
from gpufleet.bulk import paused_gc
from gpufleet.commands import SUMMARIES
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus
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
    p.add_argument("--host", help="plan only this host")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (see README)")
    p.add_argument("--full", action="store_true",
                   help=f"show every host's tables even past {DETAIL_HOSTS} hosts")
    p.set_defaults(func=run)
    return p


# Past this many hosts the JSON is one compact line: Python's indenting encoder is pure Python
# and would triple the time of a 1,000-host plan (jq or any parser reads both forms).
INDENTED_JSON_HOSTS = 100


def run(args: argparse.Namespace, env: Environment) -> int:
    plan = build_plan(inventory.load(args.inventory), only_host=args.host)
    plan = Plan(plan.inventory, plan.hosts, plan.findings + render_findings(plan))
    if args.json:
        with paused_gc():
            data = plan.to_dict()
        indent = 2 if len(plan.hosts) <= INDENTED_JSON_HOSTS else None
        env.write_json(json.dumps(data, indent=indent))
    else:
        show_plan(plan, env.out, full=args.full)
    return ExitStatus.FINDINGS if plan.has_errors else ExitStatus.OK
