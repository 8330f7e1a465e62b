"""`gpufleet deploy INVENTORY`: preview, then apply the plan to its hosts with pyinfra.

    gpufleet deploy inventories/berget.yml --dry-run --diff
    gpufleet deploy inventories/berget.yml --host gpu-01 --steps services
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from gpufleet import inventory
from gpufleet.commands import SUMMARIES
from gpufleet.commands.hosts import add_host_options, chosen_hosts
from gpufleet.deploy import FleetDeploy, HostReport, SshOverride, host_targets, parse_setting
from gpufleet.deploys.site import STEPS, check_steps
from gpufleet.deploys.target import HostTarget
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.fleetlock import FleetLocked, Holder, fleet_lock
from gpufleet.host.ssh import expand_path
from gpufleet.inventory import RolloutPolicy
from gpufleet.plan import Plan, build_plan
from gpufleet.rollout import HostOutcome, RolloutResult, roll_out, ssh_target


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser("deploy", help=SUMMARIES["deploy"],
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inventory", metavar="INVENTORY", help="placement inventory YAML")
    add_host_options(p, "deploy")
    p.add_argument("-y", "--yes", action="store_true",
                   help="do not ask for confirmation (it is asked only on a terminal)")
    p.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    p.add_argument("--diff", action="store_true", help="show unit and plan.json diffs")
    p.add_argument("--force", action="store_true", help="deploy even if the plan has errors")
    p.add_argument("--steps", default=",".join(STEPS),
                   help=f"comma-separated steps (default: {','.join(STEPS)})")
    p.add_argument("--ssh-key", metavar="PATH", help="private key (overrides the inventory)")
    p.add_argument("--known-hosts", metavar="PATH",
                   help="known_hosts file; host keys are checked strictly")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a gpufleet_* setting (group_data/all.py); repeatable")
    p.add_argument("--batch-size", type=int, help="hosts changed at a time (fleet.rollout)")
    p.add_argument("--health-timeout", type=float, metavar="SECONDS",
                   help="how long a restarted service may take to become healthy")
    p.add_argument("--max-failed-hosts", type=int, help="halt after this many failed hosts")
    p.add_argument("--health-check", choices=["health", "request"],
                   help="health: /health only; request: /health + a real request")
    p.add_argument("--no-validate", action="store_true",
                   help="skip the validation that ends every deploy")
    p.add_argument("--wait", type=float, metavar="SECONDS",
                   help="wait up to SECONDS for another run's lock (default: refuse at once)")
    p.add_argument("--json", action="store_true",
                   help="print the result as JSON (hosts, per-service action, errors)")
    p.set_defaults(func=run)
    return p


def deploy_plan(path: str, host: str | None, sets: list[str], limit: str | None = None) -> Plan:
    """The plan a deploy or rebuild renders and applies: the inventory with the run's `--set`
    values over its settings (one resolver for the units and the deploys), narrowed to the
    hosts `--host`/`--limit` choose."""
    overrides = dict(parse_setting(text) for text in sets)
    inv = inventory.load(path).with_overrides(overrides)
    chosen = chosen_hosts(argparse.Namespace(host=host, limit=limit), inv)
    return build_plan(inv, only_hosts=chosen)


def _question(targets: list[HostTarget], steps: list[str], policy: RolloutPolicy) -> str:
    names = ", ".join(t.name for t in targets[:5]) + (" …" if len(targets) > 5 else "")
    return (f"deploy {', '.join(steps)} to {len(targets)} host(s) ({names}), "
            f"{policy.batch_size} at a time? (preview first: --dry-run --diff)")


def run(args: argparse.Namespace, env: Environment) -> int:
    plan = deploy_plan(args.inventory, args.host, args.set, getattr(args, "limit", None))
    if plan.has_errors:
        errors = sum(f.severity == "error" for f in plan.findings)
        if not args.force:
            env.error(f"the plan has {errors} error(s); see `gpufleet plan {args.inventory}` "
                      "(or pass --force)")
            return ExitStatus.BAD_INPUT
        env.warn(f"deploying a plan with {errors} error(s) because of --force")
    try:
        steps = check_steps([s.strip() for s in args.steps.split(",") if s.strip()])
    except ValueError as exc:
        raise InputError(f"--steps: {exc}") from None
    check_settings(plan)
    progress = StepProgress(env)
    fleet = plan.inventory.fleet
    ssh = SshOverride(key=expand_path(args.ssh_key or fleet.ssh_key),
                      known_hosts=expand_path(args.known_hosts or fleet.ssh_known_hosts))

    def make_run(targets: list[HostTarget]) -> FleetDeploy:
        return FleetDeploy(targets, steps=steps, ssh=ssh,
                           callbacks=[progress.callbacks])

    targets = host_targets(plan)
    if args.dry_run:
        return _preview(targets, make_run, args, env)
    policy = rollout_policy(plan.inventory.fleet.rollout, args)
    if not getattr(args, "yes", False) and not env.confirm(_question(targets, steps, policy)):
        env.error("not confirmed: nothing changed")
        return ExitStatus.FINDINGS

    def wrap(fleet_run: FleetDeploy) -> Any:
        if not args.json:
            show_preview(fleet_run.reports.values(), env, args.diff)
        return progress.live(fleet_run)

    holder = Holder.me(args.inventory, getattr(args, "command_name", "deploy"))
    try:
        with fleet_lock([ssh_target(t, ssh) for t in targets], holder, args.wait,
                        notify=lambda m: env.err.print(m)) as locks:
            reachable = [t for t in targets if t.name not in locks.unreachable]
            result = roll_out(reachable, make_run, ssh, policy,
                              notify=lambda m: env.err.print(m), wrap=wrap, diffs=args.diff,
                              sessions=locks.sessions)
            result.hosts = _with_unreachable(result.hosts, targets, locks.unreachable)
            validation = None
            changed = [h.name for h in result.hosts if h.status == "updated"]
            if not args.no_validate and result.ok and "services" in steps and changed:
                validation = _validate(plan, changed, args, locks.sessions)
    except FleetLocked as exc:
        busy = exc.busy or {t.name: str(exc).split(": refusing")[0] for t in targets}
        locked = RolloutResult([HostOutcome(t.name, status="locked" if t.name in busy
                                            else "skipped", error=busy.get(t.name)
                                            or "not started: another run holds a lock")
                                for t in targets], halted=True)
        show_result(locked, env, args.json)
        env.error(str(exc))
        return ExitStatus.BAD_INPUT
    status: int = ExitStatus.OK if result.ok else ExitStatus.FINDINGS
    if validation is not None and not validation["ok"]:
        status = ExitStatus.FINDINGS
    show_result(result, env, args.json, validation)
    return status


def _with_unreachable(done: list[HostOutcome], targets: list[HostTarget],
                      unreachable: dict[str, str]) -> list[HostOutcome]:
    """Hosts whose lock could not be taken (unreachable) are failed, with the SSH error."""
    by_name = {h.name: h for h in done}
    by_name.update({n: HostOutcome(n, status="failed", error=why)
                    for n, why in unreachable.items()})
    return [by_name[t.name] for t in targets if t.name in by_name]


def _preview(targets: list[HostTarget], make_run: Any, args: argparse.Namespace,
             env: Environment) -> int:
    """--dry-run: the survey, then pyinfra's preview of only the steps that differ."""
    fleet_run = make_run(targets)
    try:
        fleet_run.connect()
        surveys = fleet_run.survey()
        fleet_run.limit_steps({name: seen.steps_to_run() for name, seen in surveys.items()})
        reports = fleet_run.prepare(diff=True)
    finally:
        fleet_run.close()
    if args.json:
        env.out.print_json(data=preview_json(reports.values()))
    else:
        show_preview(reports.values(), env, True)
        show_summary(reports.values(), env, applied=False)
    return ExitStatus.OK if all(r.ok for r in reports.values()) else ExitStatus.FINDINGS


def preview_json(reports: Any) -> dict[str, Any]:
    return {"dry_run": True, "ok": all(r.ok for r in reports), "hosts": [
        {"name": r.name, "status": ("unchanged" if r.ok and not (r.changes or r.files) else
                                    "would-change" if r.ok else "failed"),
         "error": r.error, "changes": r.changes, "files": [f.path for f in r.files],
         "warnings": r.warnings} for r in reports]}


def check_settings(plan: Plan) -> None:
    """Inventory `settings:` keys must be knobs of group_data/all.py (typos are errors)."""
    from gpufleet.deploys.settings import defaults

    known = defaults()
    inv = plan.inventory
    places = [(("fleet", "settings"), inv.fleet.settings)] + [
        (("hosts", name, "settings"), host.settings) for name, host in inv.hosts.items()]
    for path, values in places:
        for key in values:
            if key not in known:
                raise InputError(f"unknown setting {key!r}", where=inv.where(*path, key),
                                 hint="settings are the gpufleet_* knobs of group_data/all.py")


def rollout_policy(policy: RolloutPolicy, args: argparse.Namespace) -> RolloutPolicy:
    changes = {k: v for k, v in (("batch_size", args.batch_size),
                                 ("health_timeout_s", args.health_timeout),
                                 ("max_failed_hosts", args.max_failed_hosts),
                                 ("health_check", args.health_check)) if v is not None}
    return policy.model_copy(update=changes)


def _validate(plan: Plan, changed: list[str], args: argparse.Namespace,
              sessions: Any = None) -> dict[str, Any]:
    """The last step of a deploy that changed hosts: their GPUs against the plan. A host the
    survey found as planned had nothing applied, so there is nothing of this run to check
    there (`gpufleet validate` reads the whole running fleet)."""
    from gpufleet.fleetread import read_fleet
    from gpufleet.validate import compare

    readings = read_fleet(plan, ssh_key=args.ssh_key, known_hosts=args.known_hosts,
                          sessions=sessions, only=changed)
    findings = [f for h in plan.hosts if h.name in readings
                for f in compare(h, readings[h.name])]
    return {"ok": not any(f.severity == "error" for f in findings), "hosts": list(changed),
            "findings": findings}


STATUS_STYLE = {"unchanged": "green", "updated": "green", "rolled-back": "yellow",
                "failed": "red", "skipped": "dim", "locked": "red"}


def show_result(result: RolloutResult, env: Environment, as_json: bool,
                validation: dict[str, Any] | None = None) -> None:
    if as_json:
        env.out.print_json(data=result_json(result, validation))
        return
    show_rollout(result, env)
    if validation is not None:
        from gpufleet.views import finding_line

        for f in validation["findings"]:
            env.out.print(finding_line(f))
        where = f" ({len(validation['hosts'])} changed host(s))"
        env.out.print(f"[green]validation passed[/]{where}" if validation["ok"]
                      else f"[bold red]validation failed[/]{where}", markup=True)


def show_rollout(result: RolloutResult, env: Environment) -> None:
    table = Table(title="rollout" + (" (halted)" if result.halted else ""))
    for column in ("host", "result", "services changed", "notes"):
        table.add_column(column)
    for h in result.hosts:
        notes = [f"{svc}: {why}" for svc, why in h.failures.items()]
        notes += [h.error] if h.error else []
        notes += h.report.warnings if h.report else []
        table.add_row(h.name, Text(h.status, style=STATUS_STYLE.get(h.status, "")),
                      ", ".join(h.changed_services) or "—", Text("\n".join(notes)))
    env.out.print(table)
    counts = {s: sum(h.status == s for h in result.hosts) for s in STATUS_STYLE}
    env.out.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) + " host(s)"
                  + ("" if any(h.status != "unchanged" for h in result.hosts)
                     else ": nothing to change, so nothing to validate "
                     "(`gpufleet validate` reads the running fleet)"))
    for h in result.hosts:  # one unwrapped line per failure: greppable, copy-pastable
        for svc, why in h.failures.items():
            env.out.print(Text.assemble(("failed", "red"), f" {h.name}/{svc}: "
                                        f"{' '.join(why.split())}"), soft_wrap=True)


def result_json(result: RolloutResult, validation: dict[str, Any] | None) -> dict[str, Any]:
    """`deploy --json` (a contract, documented in the README)."""
    return {
        "ok": result.ok and (validation is None or validation["ok"]),
        "halted": result.halted,
        "hosts": [host_json(h) for h in result.hosts],
        "validation": None if validation is None else {
            "ok": validation["ok"], "hosts": validation["hosts"],
            "findings": [f.to_dict() for f in validation["findings"]]},
    }


def host_json(h: HostOutcome) -> dict[str, Any]:
    report = h.report
    services = [s for s in h.changed_services]
    services += [s for s in sorted(set(h.restarted) | set(h.failures)) if s not in services]
    return {
        "name": h.name, "status": h.status, "error": h.error,
        "steps": h.steps,
        "services": [{"name": s, "action": _action(h, s), "restarted": s in h.restarted,
                      "error": h.failures.get(s)} for s in services],
        "changes": report.changes if report else [],
        "warnings": report.warnings if report else [],
    }


def _action(h: HostOutcome, service: str) -> str:
    if service in h.failures or (h.status == "rolled-back" and service in h.changed_services):
        return "rolled-back" if h.status == "rolled-back" else "failed"
    if service in h.changed_services:
        return "updated" if h.status == "updated" else h.status
    return "restored"


# ---------------------------------------------------------------- progress (pyinfra callbacks)


class StepProgress:
    """A rich progress bar per host: operations done, and the step it is in."""

    def __init__(self, env: Environment):
        from pyinfra.api import BaseStateCallback

        self.env = env
        self.bar = Progress(TextColumn("{task.fields[host]:<16}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.description}"),
                            console=env.err, transient=False)
        self.tasks: dict[str, TaskID] = {}
        outer = self

        class _Callbacks(BaseStateCallback):
            @staticmethod
            def operation_host_start(state: Any, host: Any, op_hash: str) -> None:
                outer.started(host, _step(state.get_op_meta(op_hash).names))

            @staticmethod
            def operation_host_success(state: Any, host: Any, op_hash: str,
                                       retry_count: int = 0) -> None:
                outer.advance(host)

            @staticmethod
            def operation_host_error(state: Any, host: Any, op_hash: str, *args: Any) -> None:
                outer.advance(host)

        self.callbacks = _Callbacks()

    def live(self, fleet_run: FleetDeploy) -> Progress:
        for host in fleet_run.hosts():
            name = fleet_run.report_for(host).name
            self.tasks[host.name] = self.bar.add_task("waiting", host=name,
                                                      total=len(host.op_hash_order))
        return self.bar

    def started(self, host: Any, step: str) -> None:
        if host.name in self.tasks:
            self.bar.update(self.tasks[host.name], description=step)

    def advance(self, host: Any) -> None:
        if host.name in self.tasks:
            self.bar.advance(self.tasks[host.name])


def _step(names: Sequence[str] | set[str]) -> str:
    """'gpufleet | ROCm | Ensure ...' -> 'ROCm'."""
    for name in sorted(names):
        parts = [p.strip() for p in name.split("|")]
        if len(parts) >= 3:
            return parts[1]
    return ""


# ---------------------------------------------------------------- views


def show_preview(reports: Sequence[HostReport] | Any, env: Environment, diffs: bool) -> None:
    for report in reports:
        env.out.print(f"[bold]{report.name}[/]", markup=True)
        if not report.ok:
            env.out.print(f"  [red]cannot deploy:[/] {report.error}", markup=True)
            continue
        for change in report.files:
            env.out.print(f"  file {change.path}: "
                          + ("changes" if change.diff.startswith("---") else change.diff))
            if diffs and change.diff.startswith("---"):
                env.out.print(Syntax(change.diff, "diff", theme="ansi_dark"))
        for name in report.changes:
            env.out.print(f"  will change: {name}")
        for name in report.maybe:
            env.out.print(f"  if needed:   {name}", style="dim")
        if not (report.changes or report.files):
            env.out.print("  no changes")


def show_summary(reports: Sequence[HostReport] | Any, env: Environment, applied: bool) -> None:
    table = Table(title="deploy" if applied else "deploy (dry run)")
    for column in ("host", "result", "changed", "notes"):
        table.add_column(column)
    for r in reports:
        result = "[green]ok[/]" if r.ok else "[red]failed[/]"
        notes = "\n".join(([r.error] if r.error else []) + r.warnings)
        table.add_row(r.name, result, str(len(r.changes)), notes)
    env.out.print(table)
