"""Rolling rollouts: batches of hosts, a health gate per changed service, automatic rollback.

For each batch: keep the host's current gpufleet files as the last known-good set, apply the
deploy (which restarts only services whose unit or env changed), then wait until every changed
service answers. A host whose changed service does not become healthy in time is restored to its
known-good files and restarted, and counts as failed; once `max_failed_hosts` hosts failed, the
remaining batches are not started.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from gpufleet.deploy import FleetDeploy, HostReport, SshOverride
from gpufleet.deploys.services import owner_of
from gpufleet.deploys.target import HostTarget
from gpufleet.inventory import RolloutPolicy
from gpufleet.observe import run_probes
from gpufleet.probe import Probe
from gpufleet.remote import HostUnreachable, Session, SshTarget, parse_show
from gpufleet.render import UNIT_DIR, unit_name
from gpufleet.survey import HostSurvey, survey_session

KNOWN_GOOD = "/var/lib/gpufleet/known-good"
POLL_S = 2.0
# The gpufleet files of a host, kept before each change: units and the target, and the top-level
# files of /etc/gpufleet (env files, plan.json). Built beside the old set, then swapped in, so a
# failure at any point leaves a complete known-good set.
SNAPSHOT = f"""set -e
umask 077
rm -rf {KNOWN_GOOD}.new {KNOWN_GOOD}.old
mkdir -p {KNOWN_GOOD}.new/systemd {KNOWN_GOOD}.new/gpufleet
for f in /etc/systemd/system/gpufleet-*.service /etc/systemd/system/gpufleet.target; do
  [ -f "$f" ] && cp -a "$f" {KNOWN_GOOD}.new/systemd/
done
[ ! -d /etc/gpufleet ] || find /etc/gpufleet -maxdepth 1 -type f ! -name '.*' \\
  -exec cp -a {{}} {KNOWN_GOOD}.new/gpufleet/ \\;
sync {KNOWN_GOOD}.new/systemd/* {KNOWN_GOOD}.new/gpufleet/* 2>/dev/null || true
[ -d {KNOWN_GOOD} ] && mv {KNOWN_GOOD} {KNOWN_GOOD}.old
mv {KNOWN_GOOD}.new {KNOWN_GOOD} && rm -rf {KNOWN_GOOD}.old && sync /var/lib/gpufleet"""
# Put back every file that differs from the known-good set, each atomically (copy to a temp
# name beside it, fsync, rename), and remove gpufleet files the set does not have. Prints one
# RESTORED/REMOVED line per file it touched; the caller restarts only the owners of those.
RESTORE = f"""set -e
put() {{ tmp="$(dirname "$2")/.$(basename "$2").gpufleet-new"; cp -a "$1" "$tmp"; sync "$tmp";
        mv -f "$tmp" "$2"; echo "RESTORED $2"; }}
for pair in "{KNOWN_GOOD}/systemd /etc/systemd/system" "{KNOWN_GOOD}/gpufleet /etc/gpufleet"; do
  set -- $pair
  for f in "$1"/* "$1"/.[!.]*; do
    [ -f "$f" ] || continue
    cmp -s "$f" "$2/$(basename "$f")" || put "$f" "$2/$(basename "$f")"
  done
done
for f in /etc/systemd/system/gpufleet-*.service /etc/systemd/system/gpufleet.target; do
  [ -f "$f" ] && [ ! -f "{KNOWN_GOOD}/systemd/$(basename "$f")" ] && rm -f "$f" && echo "REMOVED $f"
done
for f in $(find /etc/gpufleet -maxdepth 1 -type f ! -name '.*' 2>/dev/null); do
  [ -f "{KNOWN_GOOD}/gpufleet/$(basename "$f")" ] || {{ rm -f "$f"; echo "REMOVED $f"; }}
done
sync /etc/systemd/system /etc/gpufleet"""


@dataclass
class HostOutcome:
    """What the rollout did to one host."""

    name: str
    status: str = "pending"  # unchanged | updated | rolled-back | failed | skipped | locked
    changed_services: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)  # services (re)started by this run
    failures: dict[str, str] = field(default_factory=dict)  # service -> why (vLLM's error)
    error: str | None = None
    report: HostReport | None = None
    steps: list[str] = field(default_factory=list)  # the steps pyinfra ran (survey: differ)
    snapshot: bool = False  # the known-good set of this run was taken

    @property
    def ok(self) -> bool:
        return self.status in ("unchanged", "updated")


@dataclass
class RolloutResult:
    hosts: list[HostOutcome]
    halted: bool = False

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)


def batches(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def changed_services(report: HostReport, target: HostTarget) -> list[str]:
    """Services whose unit or env file the deploy is about to change, in start order."""
    names = [s.name for s in target.services]
    touched = {owner_of(change.path, names) for change in report.files}
    return [n for n in names if n in touched]


def ssh_target(target: HostTarget, ssh: SshOverride) -> SshTarget:
    return SshTarget.of(target.name, target.planned.host, target.fleet, ssh.key, ssh.known_hosts)


def wait_healthy(
    session: Session, target: HostTarget, names: list[str], timeout_s: float, full: bool
) -> dict[str, Probe]:
    """Poll the services on the host until all answer or the gate's time is up."""
    services = [s for s in target.services if s.name in names]
    deadline = time.monotonic() + timeout_s
    probes: dict[str, Probe] = {}
    while True:
        probes = run_probes(session, services, full)
        failed_units = [n for n, st in unit_states(session, names).items() if st == "failed"]
        if all(p.ok for p in probes.values()) or time.monotonic() >= deadline:
            return probes
        if failed_units and set(failed_units) >= {n for n, p in probes.items() if not p.ok}:
            return probes  # systemd gave up on them (start failed): no point waiting longer
        time.sleep(POLL_S)


def unit_states(session: Session, names: list[str]) -> dict[str, str]:
    """Service name -> systemd ActiveState (active, activating, failed, ...)."""
    units = " ".join(unit_name(n) for n in names)
    out = session.run(f"systemctl show -p Id,ActiveState {units}").stdout
    return {unit.removeprefix("gpufleet-"): props.get("ActiveState", "unknown")
            for unit, props in parse_show(out).items()}


def vllm_error(session: Session, name: str) -> str:
    """The last error lines the service logged (vLLM's own message), for the report."""
    out = session.run(
        f"journalctl -u {unit_name(name)} -n 200 --no-pager -o cat 2>/dev/null | "
        "grep -E 'Error|error|ERROR' | tail -n 3"
    ).stdout.strip()
    return out or "no error logged"


def restored_services(output: str, target: HostTarget) -> tuple[list[str], list[str], bool]:
    """RESTORE's lines -> (services to restart, services removed, whether a unit changed)."""
    names = [s.name for s in target.services]
    touched: set[str] = set()
    removed: set[str] = set()
    units = False
    for line in output.splitlines():
        verb, _, path = line.partition(" ")
        if verb not in ("RESTORED", "REMOVED"):
            continue
        units = units or path.startswith(f"{UNIT_DIR}/")
        owner = owner_of(path, names) or _unit_owner(path)
        if owner:
            (removed if verb == "REMOVED" and path.startswith(UNIT_DIR) else touched).add(owner)
    order = [n for n in names if n in touched - removed]
    order += sorted(touched - removed - set(names))
    return order, sorted(removed), units


def _unit_owner(path: str) -> str | None:
    """gpufleet-<svc>.service -> svc, for units that are no longer in the plan."""
    base = path.rsplit("/", 1)[-1]
    if base.startswith("gpufleet-") and base.endswith(".service"):
        return base.removeprefix("gpufleet-").removesuffix(".service")
    return None


def restore(session: Session, target: HostTarget) -> list[str]:
    """Put the known-good files back (atomically, only those that differ), reload systemd if a
    unit changed, and restart exactly the services whose files were put back. Returns them."""
    out = session.run(RESTORE, timeout=120)
    restart, removed, units_changed = restored_services(out.stdout, target)
    for name in removed:
        session.run(f"systemctl stop {unit_name(name)}; systemctl disable {unit_name(name)}",
                    timeout=120)
    if units_changed:
        session.run("systemctl daemon-reload", timeout=120)
    for name in restart:  # in start order, each waits for the one before on its GPU
        session.run(f"test -f {UNIT_DIR}/{unit_name(name)} && "
                    f"systemctl restart {unit_name(name)}", timeout=2000)
    return restart


# ---------------------------------------------------------------- one batch


Notify = Callable[[str], None]


Wrap = Callable[[FleetDeploy], AbstractContextManager[Any]]


def roll_batch(
    targets: list[HostTarget],
    make_run: Callable[[list[HostTarget]], FleetDeploy],
    ssh: SshOverride,
    policy: RolloutPolicy,
    notify: Notify,
    wrap: Wrap = lambda _: nullcontext(),
    steps: dict[str, list[str]] | None = None,
    diffs: bool = False,
) -> list[HostOutcome]:
    outcomes = {t.name: HostOutcome(t.name) for t in targets}
    fleet_run = make_run(targets)
    try:
        fleet_run.connect()
        if steps is not None:
            fleet_run.limit_steps(steps)
        reports = fleet_run.prepare(diff=diffs)
        for t in targets:
            outcome, report = outcomes[t.name], reports[t.name]
            outcome.report, outcome.steps = report, fleet_run.steps_for(t.name)
            outcome.changed_services = changed_services(report, t) if report.ok else []
            if report.ok and "services" in outcome.steps:
                _snapshot(fleet_run, t, outcome)
        with wrap(fleet_run):
            reports = fleet_run.apply()
    finally:
        fleet_run.close()
    for t in targets:
        _gate(t, outcomes[t.name], reports[t.name], ssh, policy, notify)
    return list(outcomes.values())


def _snapshot(fleet_run: FleetDeploy, target: HostTarget, outcome: HostOutcome) -> None:
    """Keep the host's current gpufleet files as known-good, on the run's own connection."""
    error = fleet_run.run_command(target.name, SNAPSHOT)
    if error:  # no known-good set, no change: the host is dropped before any operation runs
        fleet_run.drop(target.name, f"could not keep the known-good files: {error}")
    else:
        outcome.snapshot = True


def _gate(target: HostTarget, outcome: HostOutcome, report: HostReport, ssh: SshOverride,
          policy: RolloutPolicy, notify: Notify) -> None:
    if not report.ok:
        _failed_deploy(target, outcome, report, ssh, policy, notify)
        return
    outcome.restarted = list(outcome.changed_services)
    if not outcome.changed_services:
        outcome.status = "updated" if report.changes else "unchanged"
        return
    full = policy.health_check == "request"
    try:
        with Session(ssh_target(target, ssh)) as session:
            notify(f"{target.name}: waiting for {', '.join(outcome.changed_services)}")
            probes = wait_healthy(session, target, outcome.changed_services,
                                  policy.health_timeout_s, full)
            bad = [n for n, p in probes.items() if not p.ok]
            if not bad:
                outcome.status = "updated"
                return
            outcome.failures = {n: f"{probes[n].detail}; log: {vllm_error(session, n)}"
                                for n in bad}
            _roll_back(session, target, outcome, policy, notify)
    except HostUnreachable as exc:
        outcome.status, outcome.error = "failed", str(exc)


def _failed_deploy(target: HostTarget, outcome: HostOutcome, report: HostReport,
                   ssh: SshOverride, policy: RolloutPolicy, notify: Notify) -> None:
    """The deploy itself failed: put back whatever it changed of the known-good set."""
    outcome.status, outcome.error = "failed", report.error
    if not outcome.snapshot or report.unreachable or not outcome.changed_services:
        return
    try:
        with Session(ssh_target(target, ssh)) as session:
            # A changed service whose (re)start failed is a failed health gate: roll back.
            states = unit_states(session, outcome.changed_services)
            outcome.failures = {n: vllm_error(session, n) for n in outcome.changed_services
                                if states.get(n) not in ("active", None)}
            if outcome.failures:
                _roll_back(session, target, outcome, policy, notify)
                return
            notify(f"{target.name}: the deploy failed: restoring the known-good files")
            outcome.restarted = restore(session, target)
            if outcome.restarted:
                after = wait_healthy(session, target, outcome.restarted,
                                     policy.health_timeout_s, policy.health_check == "request")
                if not all(p.ok for p in after.values()):
                    outcome.error = f"{report.error}\nthe known-good services did not recover"
    except HostUnreachable as exc:
        outcome.error = f"{report.error}\n{exc}"


def _roll_back(session: Session, target: HostTarget, outcome: HostOutcome,
               policy: RolloutPolicy, notify: Notify) -> None:
    notify(f"{target.name}: {', '.join(outcome.failures) or 'the deploy'} failed: rolling back")
    restarted = restore(session, target)
    outcome.restarted = sorted(set(outcome.restarted) | set(restarted))
    kept = [n for n in restarted
            if session.run(f"test -f {UNIT_DIR}/{unit_name(n)}").rc == 0]
    after = wait_healthy(session, target, kept, policy.health_timeout_s,
                         policy.health_check == "request") if kept else {}
    outcome.status = "rolled-back" if all(p.ok for p in after.values()) else "failed"


# ---------------------------------------------------------------- the rollout


@dataclass
class Survey:
    """The survey of the whole fleet: who is done, who failed, who needs which steps."""

    done: list[HostOutcome] = field(default_factory=list)
    to_roll: list[HostTarget] = field(default_factory=list)
    steps: dict[str, list[str]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)


def survey(targets: list[HostTarget], make_run: Callable[[list[HostTarget]], FleetDeploy],
           sessions: Mapping[str, Session] | None = None) -> Survey:
    """One parallel look at every host (one command each): those already in the planned
    state are done (no batch, no gate, no operation); the others go on to be rolled, with only
    the steps that differ. Over the run's open lock sessions when it has them."""
    result = Survey()
    if not targets:
        return result
    fleet_run = make_run(targets)
    if sessions is not None and all(t.name in sessions for t in targets):
        surveys = _survey_sessions(fleet_run, targets, sessions)
    else:
        try:
            fleet_run.connect()
            surveys = fleet_run.survey()
        finally:
            fleet_run.close()
    for t in targets:
        report, seen = fleet_run.reports[t.name], surveys.get(t.name)
        result.warnings[t.name] = list(report.warnings)
        if not report.ok:
            result.done.append(HostOutcome(t.name, status="failed", error=report.error,
                                           report=report))
        elif seen is not None and seen.converged:
            result.done.append(HostOutcome(t.name, status="unchanged", report=report))
        else:
            result.to_roll.append(t)
            result.steps[t.name] = seen.steps_to_run() if seen else fleet_run.steps_for(t.name)
    return result


def _survey_sessions(fleet_run: FleetDeploy, targets: list[HostTarget],
                     sessions: Mapping[str, Session]) -> dict[str, HostSurvey]:
    def one(t: HostTarget) -> HostSurvey | None:
        try:
            return survey_session(sessions[t.name], t, fleet_run.settings_of(t.name),
                                  fleet_run.steps_for(t.name))
        except HostUnreachable as exc:
            fleet_run.reports[t.name].fail(str(exc))
            return None

    with ThreadPoolExecutor(max_workers=min(32, len(targets))) as pool:
        found = dict(zip([t.name for t in targets], pool.map(one, targets), strict=True))
    surveys = {name: seen for name, seen in found.items() if seen is not None}
    for name, seen in surveys.items():
        fleet_run.reports[name].warnings += seen.warnings
    return surveys


def roll_out(
    targets: list[HostTarget],
    make_run: Callable[[list[HostTarget]], FleetDeploy],
    ssh: SshOverride,
    policy: RolloutPolicy,
    notify: Notify = lambda _: None,
    wrap: Wrap = lambda _: nullcontext(),
    diffs: bool = False,
    sessions: Mapping[str, Session] | None = None,
) -> RolloutResult:
    """Survey all hosts; roll those with changes in batches of `policy.batch_size`; halt after
    `policy.max_failed_hosts` failures (an unreachable host counts)."""
    everyone = list(targets)
    found = survey(targets, make_run, sessions)
    done = list(found.done)
    for batch in batches(found.to_roll, policy.batch_size):
        if sum(not h.ok for h in done) >= policy.max_failed_hosts:
            done += [HostOutcome(t.name, status="skipped", error="not started: the rollout "
                                 "halted after a failed host") for t in batch]
            continue
        notify(f"batch: {', '.join(t.name for t in batch)}")
        rolled = roll_batch(batch, make_run, ssh, policy, notify, wrap,
                            {t.name: found.steps[t.name] for t in batch}, diffs)
        for outcome in rolled:  # the survey's warnings hold for the whole host
            if outcome.report is not None:
                seen = outcome.report.warnings
                seen[:0] = [w for w in found.warnings.get(outcome.name, []) if w not in seen]
        done += rolled
    order = {t.name: i for i, t in enumerate(everyone)}
    done.sort(key=lambda h: order[h.name])  # report in inventory order
    halted = any(h.status == "skipped" for h in done)
    return RolloutResult(done, halted)
