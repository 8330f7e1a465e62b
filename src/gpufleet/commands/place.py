"""`gpufleet place INVENTORY [--out FILE | --in-place] [--objective pack|spread] [--json] [--diff]`:
choose GPUs, utilizations and parallelism from what each service needs, write the placed
inventory (comments and order kept), and plan it. Without --out or --in-place: a dry run."""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path

from gpufleet import inventory
from gpufleet.commands import SUMMARIES
from gpufleet.commands.render import write_file
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.place import Outcome, place
from gpufleet.place.write import placed_text
from gpufleet.plan import Plan, build_plan
from gpufleet.render import RenderedFile, render_findings
from gpufleet.views import show_plan


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser("place", help=SUMMARIES["place"], description=__doc__)
    p.add_argument("inventory", metavar="INVENTORY", help="inventory with requirements")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", metavar="FILE", help="write the placed inventory here")
    where.add_argument("--in-place", action="store_true", help="rewrite INVENTORY itself")
    p.add_argument("--objective", choices=("pack", "spread"),
                   help="pack: fewest GPUs; spread: balance free memory (default: "
                        "fleet.placement.objective, else pack)")
    p.add_argument("--json", action="store_true", help="print the placement as JSON (README)")
    p.add_argument("--diff", action="store_true", help="print the change as a unified diff")
    p.add_argument("--time-limit", type=float, default=20.0, metavar="S",
                   help="seconds the solver may search (default 20)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, env: Environment) -> int:
    source = Path(args.inventory)
    inv = inventory.load(source, placing=True)
    if not 0 < args.time_limit <= 3600:
        raise InputError(f"--time-limit {args.time_limit}: give 0 < S <= 3600 seconds")
    outcome = place(inv, args.objective, args.time_limit)
    original = source.read_text(encoding="utf-8").removeprefix("\ufeff")
    text = placed_text(original, outcome.placed) if outcome.feasible else None
    plan = _plan(text, source) if text is not None else None
    target = source if args.in_place else Path(args.out) if args.out else None
    written = None
    if text is not None and plan is not None and not plan.has_errors and target is not None:
        mode = f"{source.stat().st_mode & 0o777:o}" if source.exists() else "644"
        written = str(write_file(target, RenderedFile(target.name, text, mode)))
    if args.json:
        env.write_json(json.dumps(_json(outcome, plan, written), indent=2))
    else:
        _show(env, outcome, plan, written, target)
        if args.diff and text is not None:
            env.stdout.writelines(difflib.unified_diff(
                original.splitlines(True), text.splitlines(True), str(source),
                str(target or "placed"),
            ))
    return ExitStatus.OK if plan is not None and not plan.has_errors else ExitStatus.FINDINGS


def _plan(text: str, source: Path) -> Plan:
    placed = inventory.loads(text, str(source))
    plan = build_plan(placed)
    return Plan(plan.inventory, plan.hosts, plan.findings + render_findings(plan))


def _json(outcome: Outcome, plan: Plan | None, written: str | None) -> dict[str, object]:
    result = outcome.result
    return {
        "feasible": outcome.feasible and plan is not None and not plan.has_errors,
        "objective": outcome.objective,
        "margin": outcome.margin,
        # `is not None`: an empty assignment (every service pinned) still has GPUs in use.
        "gpus_used": result.gpus_used if result and result.assignment is not None else None,
        "lower_bound": result.lower_bound if result else None,
        "optimal": bool(result and result.proven and result.assignment is not None),
        "services": [p.to_dict() for p in outcome.placed],
        "reasons": outcome.reasons + ([f.message for f in plan.findings if f.severity == "error"]
                                      if plan else []),
        "notes": outcome.notes,
        "written": written,
    }


def _show(env: Environment, outcome: Outcome, plan: Plan | None, written: str | None,
          target: Path | None) -> None:
    if not outcome.feasible:
        for reason in outcome.reasons:
            env.error(f"no placement: {reason}")
        return
    assert plan is not None
    show_plan(plan, env.out)
    env.out.print()
    for p in outcome.placed:
        what = "placed" if p.moved else "sized "
        util = (f"util {p.sizing.utilization:g}" if p.sizing.utilization is not None
                else "util as written")
        tokens = f", {p.sizing.kv_tokens:,} KV tokens" if p.sizing.kv_tokens else ""
        pp = p.sizing.pipeline_parallel_size
        stages = f" x pp {pp}" if pp > 1 else ""
        env.out.print(f"{what} {p.name:<20} -> {p.host} GPU {','.join(map(str, p.gpus))}  "
                      f"{util}, tp {p.sizing.tensor_parallel_size}{stages}{tokens}",
                      highlight=False, markup=False)
    for note in outcome.notes:
        env.warn(note)
    result = outcome.result
    if result and result.assignment is not None:
        env.out.print(f"{result.gpus_used} GPUs in use (lower bound {result.lower_bound}"
                      f"{', optimal' if result.proven else ''})", markup=False)
    if plan.has_errors:
        env.error("the placed inventory does not plan cleanly: nothing written")
    elif written:
        env.out.print(f"wrote {written}", markup=False)
    elif target is None:
        env.out.print("dry run: nothing written; --out FILE or --in-place writes it", markup=False)
