"""Rolling rollouts: batches of hosts, a health gate per changed service, automatic rollback.

For each batch: keep the host's current gpufleet files as the last known-good set, apply the
deploy (which restarts only services whose unit or env changed), then wait until every changed
service answers. A host whose changed service does not become healthy in time is restored to its
known-good files and restarted, and counts as failed; once `max_failed_hosts` hosts failed, the
remaining batches are not started.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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

KNOWN_GOOD = "/var/lib/gpufleet/known-good"
UNIT_OP = "/etc/systemd/system/gpufleet-"  # operation names that upload units / env files
ENV_OP = "/etc/gpufleet/"
POLL_S = 2.0
SNAPSHOT = f"""set -e
rm -rf {KNOWN_GOOD}.new && mkdir -p {KNOWN_GOOD}.new/systemd {KNOWN_GOOD}.new/gpufleet
cp -a /etc/systemd/system/gpufleet-*.service /etc/systemd/system/gpufleet.target \
  {KNOWN_GOOD}.new/systemd/ 2>/dev/null || true
cp -a /etc/gpufleet/. {KNOWN_GOOD}.new/gpufleet/ 2>/dev/null || true
chmod 700 {KNOWN_GOOD}.new && rm -rf {KNOWN_GOOD} && mv {KNOWN_GOOD}.new {KNOWN_GOOD}"""


@dataclass
class HostOutcome:
    """What the rollout did to one host."""

    name: str
    status: str = "pending"  # unchanged | updated | rolled-back | failed | skipped
    changed_services: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # service -> why (vLLM's error)
    error: str | None = None
    report: HostReport | None = None

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
    units = " ".join(f"gpufleet-{n}.service" for n in names)
    out = session.run(f"systemctl show -p Id,ActiveState {units}").stdout
    return {unit.removeprefix("gpufleet-"): props.get("ActiveState", "unknown")
            for unit, props in parse_show(out).items()}


def vllm_error(session: Session, name: str) -> str:
    """The last error lines the service logged (vLLM's own message), for the report."""
    out = session.run(
        f"journalctl -u gpufleet-{name}.service -n 200 --no-pager -o cat 2>/dev/null | "
        "grep -E 'Error|error|ERROR' | tail -n 3"
    ).stdout.strip()
    return out or "no error logged"


def restore(session: Session, changed: list[str]) -> None:
    """Put the known-good files back, reload, and restart what the change touched."""
    units = " ".join(f"gpufleet-{n}.service" for n in changed)
    session.run(
        f"systemctl stop {units}; "
        "rm -f /etc/systemd/system/gpufleet-*.service; "
        f"cp -a {KNOWN_GOOD}/systemd/. /etc/systemd/system/; "
        f"rm -rf /etc/gpufleet && mkdir -p /etc/gpufleet && "
        f"cp -a {KNOWN_GOOD}/gpufleet/. /etc/gpufleet/; systemctl daemon-reload",
        timeout=120,
    )
    for name in changed:  # in start order, each waits for the one before on its GPU
        session.run(
            f"test -f /etc/systemd/system/gpufleet-{name}.service && "
            f"systemctl start gpufleet-{name}.service",
            timeout=2000,
        )


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
) -> list[HostOutcome]:
    outcomes = {t.name: HostOutcome(t.name) for t in targets}
    fleet_run = make_run(targets)
    try:
        fleet_run.connect()
        reports = fleet_run.prepare(diff=True)
        for t in targets:
            outcome, report = outcomes[t.name], reports[t.name]
            outcome.report = report
            outcome.changed_services = changed_services(report, t) if report.ok else []
            if report.ok:
                _snapshot(t, ssh, outcome)
        with wrap(fleet_run):
            reports = fleet_run.apply()
    finally:
        fleet_run.close()
    for t in targets:
        _gate(t, outcomes[t.name], reports[t.name], ssh, policy, notify)
    return list(outcomes.values())


def _snapshot(target: HostTarget, ssh: SshOverride, outcome: HostOutcome) -> None:
    try:
        with Session(ssh_target(target, ssh)) as session:
            session.run(SNAPSHOT)
    except HostUnreachable as exc:
        outcome.error = str(exc)


def _gate(target: HostTarget, outcome: HostOutcome, report: HostReport, ssh: SshOverride,
          policy: RolloutPolicy, notify: Notify) -> None:
    if not report.ok:
        _failed_deploy(target, outcome, report, ssh, policy, notify)
        return
    if not outcome.changed_services:
        outcome.status = "unchanged"
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
    """The deploy itself failed: if it got as far as the units, put the known-good set back."""
    outcome.status, outcome.error = "failed", report.error
    touched = any(UNIT_OP in name or ENV_OP in name for name in report.changes)
    if not (touched and outcome.changed_services):
        return
    try:
        with Session(ssh_target(target, ssh)) as session:
            states = unit_states(session, outcome.changed_services)
            outcome.failures = {n: vllm_error(session, n) for n in outcome.changed_services
                                if states.get(n) != "active"}
            _roll_back(session, target, outcome, policy, notify)
            outcome.status = "failed" if outcome.status != "rolled-back" else "rolled-back"
    except HostUnreachable as exc:
        outcome.error = f"{report.error}\n{exc}"


def _roll_back(session: Session, target: HostTarget, outcome: HostOutcome,
               policy: RolloutPolicy, notify: Notify) -> None:
    notify(f"{target.name}: {', '.join(outcome.failures) or 'the deploy'} failed: rolling back")
    restore(session, outcome.changed_services)
    kept = [n for n in outcome.changed_services
            if session.run(f"test -f /etc/systemd/system/gpufleet-{n}.service").rc == 0]
    after = wait_healthy(session, target, kept, policy.health_timeout_s,
                         policy.health_check == "request") if kept else {}
    outcome.status = "rolled-back" if all(p.ok for p in after.values()) else "failed"


# ---------------------------------------------------------------- the rollout


def survey(targets: list[HostTarget], make_run: Callable[[list[HostTarget]], FleetDeploy]
           ) -> tuple[list[HostOutcome], list[HostTarget]]:
    """One parallel look at every host: those already in the planned state are done (no batch,
    no gate); the others go on to be rolled in batches."""
    fleet_run = make_run(targets)
    try:
        fleet_run.connect()
        reports = fleet_run.prepare(diff=True)
    finally:
        fleet_run.close()
    unchanged, rest = [], []
    for t in targets:
        report = reports[t.name]
        if report.ok and not report.changes and not report.files:
            unchanged.append(HostOutcome(t.name, status="unchanged", report=report))
        else:
            rest.append(t)
    return unchanged, rest


def roll_out(
    targets: list[HostTarget],
    make_run: Callable[[list[HostTarget]], FleetDeploy],
    ssh: SshOverride,
    policy: RolloutPolicy,
    notify: Notify = lambda _: None,
    wrap: Wrap = lambda _: nullcontext(),
) -> RolloutResult:
    """Batches of `policy.batch_size` hosts; halt after `policy.max_failed_hosts` failures."""
    everyone, done = list(targets), list[HostOutcome]()
    if len(targets) > policy.batch_size:  # only hosts with something to change are rolled
        done, targets = survey(targets, make_run)
    for batch in batches(targets, policy.batch_size):
        if sum(not h.ok for h in done) >= policy.max_failed_hosts:
            done += [
                HostOutcome(t.name, status="skipped", error="not started: the rollout halted")
                for t in batch
            ]
            continue
        notify(f"batch: {', '.join(t.name for t in batch)}")
        done += roll_batch(batch, make_run, ssh, policy, notify, wrap)
    order = {t.name: i for i, t in enumerate(everyone)}
    done.sort(key=lambda h: order[h.name])  # report in inventory order
    halted = any(h.status == "skipped" for h in done)
    return RolloutResult(done, halted)
