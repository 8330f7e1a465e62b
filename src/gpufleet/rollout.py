"""Rolling rollouts: batches of hosts, a health gate per changed service, automatic rollback.

For each batch: keep the host's current gpufleet files as the last known-good set, apply the
deploy (which restarts only services whose unit or env changed), then wait until every changed
service answers. A host whose changed service does not become healthy in time is restored to its
known-good files and restarted, and counts as failed; once `max_failed_hosts` hosts failed, the
remaining batches are not started.

The decisions (which hosts roll, when a gate has passed or failed, when to halt, what a host's
status is) are pure functions at the top; the rest carries them out on the hosts, over the
run's lock sessions (gpufleet.host.*) and its pyinfra deploys (gpufleet.deploy).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

from gpufleet.deploy import FleetDeploy, HostReport, SshOverride
from gpufleet.deploys.target import HostTarget
from gpufleet.host.knowngood import SNAPSHOT, restore
from gpufleet.host.layout import owner_of
from gpufleet.host.ssh import HostUnreachable, Session, SshTarget
from gpufleet.host.units import has_unit, logged_error, unit_states
from gpufleet.inventory import RolloutPolicy
from gpufleet.observe import run_probes
from gpufleet.probe import Probe
from gpufleet.survey import HostSurvey, survey_session

POLL_S = 2.0


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


# ---------------------------------------------------------------- the decisions (pure)


Verdict = Literal["healthy", "waiting", "failed"]


def batches(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def halted(done: Sequence[HostOutcome], policy: RolloutPolicy) -> bool:
    """Start no further batch once `max_failed_hosts` hosts failed (unreachable ones count)."""
    return sum(not h.ok for h in done) >= policy.max_failed_hosts


def survey_verdict(report: HostReport, seen: HostSurvey | None) -> Literal["failed",
                                                                           "unchanged", "roll"]:
    """A host the survey could not read failed; one found as planned is done, never batched."""
    if not report.ok:
        return "failed"
    return "unchanged" if seen is not None and seen.converged else "roll"


def changed_services(report: HostReport, target: HostTarget) -> list[str]:
    """Services whose unit or env file the deploy is about to change, in start order."""
    names = [s.name for s in target.services]
    touched = {owner_of(change.path, names) for change in report.files}
    return [n for n in names if n in touched]


def gate_verdict(probes: Mapping[str, Probe], states: Mapping[str, str],
                 timed_out: bool) -> Verdict:
    """One look at the changed services: all answer (healthy), time is up or systemd gave up
    on every one that does not answer (failed), or keep waiting."""
    bad = {n for n, p in probes.items() if not p.ok}
    if not bad:
        return "healthy"
    if timed_out or bad <= {n for n, state in states.items() if state == "failed"}:
        return "failed"
    return "waiting"


def applied_status(report: HostReport, changed: Sequence[str]) -> str | None:
    """A host whose apply changed no service needs no gate: its status is known now."""
    if changed:
        return None
    return "updated" if report.changes else "unchanged"


def rollback_status(after: Mapping[str, Probe]) -> str:
    """Back on known-good and answering: rolled back; known-good broken too: failed."""
    return "rolled-back" if all(p.ok for p in after.values()) else "failed"


# ---------------------------------------------------------------- on the hosts


Notify = Callable[[str], None]
Wrap = Callable[[FleetDeploy], AbstractContextManager[Any]]
Sessions = Mapping[str, Session]


def ssh_target(target: HostTarget, ssh: SshOverride) -> SshTarget:
    return SshTarget.of(target.name, target.planned.host, target.fleet, ssh.key, ssh.known_hosts)


@contextmanager
def host_session(target: HostTarget, ssh: SshOverride, sessions: Sessions | None
                 ) -> Iterator[Session]:
    """The run's open lock session to the host when it has one (no second connection per
    batch), else a new one closed afterwards."""
    if sessions is not None and target.name in sessions:
        yield sessions[target.name]
        return
    with Session(ssh_target(target, ssh)) as session:
        yield session


def wait_healthy(
    session: Session, target: HostTarget, names: list[str], timeout_s: float, full: bool
) -> dict[str, Probe]:
    """Poll the services on the host until gate_verdict says healthy or failed."""
    services = [s for s in target.services if s.name in names]
    deadline = time.monotonic() + timeout_s
    while True:
        probes = run_probes(session, services, full)
        verdict = gate_verdict(probes, unit_states(session, names),
                               time.monotonic() >= deadline)
        if verdict != "waiting":
            return probes
        time.sleep(POLL_S)


def roll_batch(
    targets: list[HostTarget],
    make_run: Callable[[list[HostTarget]], FleetDeploy],
    ssh: SshOverride,
    policy: RolloutPolicy,
    notify: Notify,
    wrap: Wrap = lambda _: nullcontext(),
    steps: dict[str, list[str]] | None = None,
    diffs: bool = False,
    sessions: Sessions | None = None,
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
        _gate(t, outcomes[t.name], reports[t.name], ssh, policy, notify, sessions)
    return list(outcomes.values())


def _snapshot(fleet_run: FleetDeploy, target: HostTarget, outcome: HostOutcome) -> None:
    """Keep the host's current gpufleet files as known-good, on the run's own connection."""
    error = fleet_run.run_command(target.name, SNAPSHOT)
    if error:  # no known-good set, no change: the host is dropped before any operation runs
        fleet_run.drop(target.name, f"could not keep the known-good files: {error}")
    else:
        outcome.snapshot = True


def _gate(target: HostTarget, outcome: HostOutcome, report: HostReport, ssh: SshOverride,
          policy: RolloutPolicy, notify: Notify, sessions: Sessions | None) -> None:
    if not report.ok:
        _failed_deploy(target, outcome, report, ssh, policy, notify, sessions)
        return
    outcome.restarted = list(outcome.changed_services)
    status = applied_status(report, outcome.changed_services)
    if status is not None:
        outcome.status = status
        return
    full = policy.health_check == "request"
    try:
        with host_session(target, ssh, sessions) as session:
            notify(f"{target.name}: waiting for {', '.join(outcome.changed_services)}")
            probes = wait_healthy(session, target, outcome.changed_services,
                                  policy.health_timeout_s, full)
            bad = [n for n, p in probes.items() if not p.ok]
            if not bad:
                outcome.status = "updated"
                return
            outcome.failures = {n: f"{probes[n].detail}; log: {logged_error(session, n)}"
                                for n in bad}
            _roll_back(session, target, outcome, policy, notify)
    except HostUnreachable as exc:
        outcome.status, outcome.error = "failed", str(exc)


def _failed_deploy(target: HostTarget, outcome: HostOutcome, report: HostReport,
                   ssh: SshOverride, policy: RolloutPolicy, notify: Notify,
                   sessions: Sessions | None) -> None:
    """The deploy itself failed: put back whatever it changed of the known-good set."""
    outcome.status, outcome.error = "failed", report.error
    if not outcome.snapshot or report.unreachable or not outcome.changed_services:
        return
    try:
        with host_session(target, ssh, sessions) as session:
            # A changed service whose (re)start failed is a failed health gate: roll back.
            states = unit_states(session, outcome.changed_services)
            outcome.failures = {n: logged_error(session, n) for n in outcome.changed_services
                                if states.get(n) not in ("active", None)}
            if outcome.failures:
                _roll_back(session, target, outcome, policy, notify)
                return
            notify(f"{target.name}: the deploy failed: restoring the known-good files")
            outcome.restarted = restore(session, [s.name for s in target.services])
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
    restarted = restore(session, [s.name for s in target.services])
    outcome.restarted = sorted(set(outcome.restarted) | set(restarted))
    kept = [n for n in restarted if has_unit(session, n)]
    after = wait_healthy(session, target, kept, policy.health_timeout_s,
                         policy.health_check == "request") if kept else {}
    outcome.status = rollback_status(after)


# ---------------------------------------------------------------- the rollout


@dataclass
class Survey:
    """The survey of the whole fleet: who is done, who failed, who needs which steps."""

    done: list[HostOutcome] = field(default_factory=list)
    to_roll: list[HostTarget] = field(default_factory=list)
    steps: dict[str, list[str]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)


def survey(targets: list[HostTarget], make_run: Callable[[list[HostTarget]], FleetDeploy],
           sessions: Sessions | None = None) -> Survey:
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
        verdict = survey_verdict(report, seen)
        if verdict == "roll":
            result.to_roll.append(t)
            result.steps[t.name] = seen.steps_to_run() if seen else fleet_run.steps_for(t.name)
        else:
            result.done.append(HostOutcome(t.name, status=verdict, report=report,
                                           error=report.error if verdict == "failed" else None))
    return result


def _survey_sessions(fleet_run: FleetDeploy, targets: list[HostTarget],
                     sessions: Sessions) -> dict[str, HostSurvey]:
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
    sessions: Sessions | None = None,
) -> RolloutResult:
    """Survey all hosts; roll those with changes in batches of `policy.batch_size`; halt after
    `policy.max_failed_hosts` failures (an unreachable host counts)."""
    everyone = list(targets)
    found = survey(targets, make_run, sessions)
    done = list(found.done)
    for batch in batches(found.to_roll, policy.batch_size):
        if halted(done, policy):
            done += [HostOutcome(t.name, status="skipped", error="not started: the rollout "
                                 "halted after a failed host") for t in batch]
            continue
        notify(f"batch: {', '.join(t.name for t in batch)}")
        rolled = roll_batch(batch, make_run, ssh, policy, notify, wrap,
                            {t.name: found.steps[t.name] for t in batch}, diffs, sessions)
        for outcome in rolled:  # the survey's warnings hold for the whole host
            if outcome.report is not None:
                seen = outcome.report.warnings
                seen[:0] = [w for w in found.warnings.get(outcome.name, []) if w not in seen]
        done += rolled
    order = {t.name: i for i, t in enumerate(everyone)}
    done.sort(key=lambda h: order[h.name])  # report in inventory order
    return RolloutResult(done, any(h.status == "skipped" for h in done))
