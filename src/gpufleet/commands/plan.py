"""`gpufleet plan INVENTORY [--host H] [--json]`: what will fit, what will fail, what to change."""

from __future__ import annotations

import argparse
import json

from gpufleet import inventory
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus
from gpufleet.plan import build_plan
from gpufleet.views import show_plan


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(
        "plan",
        help="plan GPU memory for every instance and GPU; report findings",
        description=__doc__,
    )
    p.add_argument("inventory", metavar="INVENTORY", help="placement inventory YAML")
    p.add_argument("--host", help="plan only this host")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (see README)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, env: Environment) -> int:
    plan = build_plan(inventory.load(args.inventory), only_host=args.host)
    if args.json:
        env.write_json(json.dumps(plan.to_dict(), indent=2))
    else:
        show_plan(plan, env.out)
    return ExitStatus.FINDINGS if plan.has_errors else ExitStatus.OK
