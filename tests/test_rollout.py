"""The rollout's decisions, pure and as an orchestration over test doubles.

The decision functions (gate verdict, halting, survey verdict, statuses, what RESTORE touched)
are tested directly. `roll_out` is then driven with a double of the pyinfra run (FakeRun: which
hosts it was asked to deploy, what each apply changed or failed) and of the host readers (probe
answers and unit states scripted per host), so batches, gates, rollback and halting are checked
without hosts; the end-to-end tests (tests/e2e/test_lab.py, test_safe_rollouts.py) run the same
code on real lab hosts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from gpufleet import inventory, rollout
from gpufleet.deploy import FileChange, HostReport, SshOverride
from gpufleet.deploys.target import HostTarget
from gpufleet.host.knowngood import restored
from gpufleet.host.ssh import HostUnreachable
from gpufleet.inventory import RolloutPolicy
from gpufleet.plan import build_plan
from gpufleet.probe import Probe
from gpufleet.survey import HostSurvey

FLEET = """\
fleet:
  name: roll
  vllm_version: "0.19.1"
  runtime: venv
hosts:
{hosts}
"""
HOST = """\
  {name}:
    address: {name}.roll.example
    gpu_count: 1
    services:
      - name: chat
        kind: llm
        model: Qwen/Qwen2.5-0.5B-Instruct
        gpus: [0]
        port: 8000
        gpu_memory_utilization: 0.5
        max_model_len: 4096
"""


def targets(names: list[str]) -> list[HostTarget]:
    text = FLEET.format(hosts="".join(HOST.format(name=n) for n in names))
    plan = build_plan(inventory.loads(text, "roll.yml"))
    return [HostTarget(p.name, plan.inventory.fleet, p, ()) for p in plan.hosts]


def ok(name: str) -> Probe:
    return Probe(name, True, "ok")


def bad(name: str) -> Probe:
    return Probe(name, False, "connection refused")


# ---------------------------------------------------------------- pure decisions


def test_gate_verdict() -> None:
    assert rollout.gate_verdict({"chat": ok("chat")}, {}, False) == "healthy"
    assert rollout.gate_verdict({"chat": ok("chat")}, {}, True) == "healthy"
    assert rollout.gate_verdict({"chat": bad("chat")}, {"chat": "activating"}, False) == "waiting"
    assert rollout.gate_verdict({"chat": bad("chat")}, {"chat": "activating"}, True) == "failed"
    # systemd gave up on every service that does not answer: no point waiting longer
    assert rollout.gate_verdict({"chat": bad("chat")}, {"chat": "failed"}, False) == "failed"
    both = {"chat": bad("chat"), "embed": bad("embed")}
    assert rollout.gate_verdict(both, {"chat": "failed", "embed": "activating"},
                                False) == "waiting"


def test_halting_counts_every_failed_host() -> None:
    policy = RolloutPolicy(max_failed_hosts=2)
    done = [rollout.HostOutcome("a", status="updated"), rollout.HostOutcome("b", "rolled-back")]
    assert not rollout.halted(done, policy)
    done.append(rollout.HostOutcome("c", status="failed"))
    assert rollout.halted(done, policy)


def test_batches() -> None:
    assert rollout.batches([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert rollout.batches([], 3) == []


def test_survey_verdict() -> None:
    converged = HostSurvey({"services": [], "rocm": []})
    differs = HostSurvey({"services": ["x differs"]})
    assert rollout.survey_verdict(HostReport("h"), converged) == "unchanged"
    assert rollout.survey_verdict(HostReport("h"), differs) == "roll"
    assert rollout.survey_verdict(HostReport("h"), None) == "roll"  # unread: ask pyinfra
    failed = HostReport("h", ok=False, error="cannot connect")
    assert rollout.survey_verdict(failed, converged) == "failed"


def test_statuses_without_a_gate_and_after_a_rollback() -> None:
    assert rollout.applied_status(HostReport("h"), []) == "unchanged"
    assert rollout.applied_status(HostReport("h", changes=["tuning"]), []) == "updated"
    assert rollout.applied_status(HostReport("h"), ["chat"]) is None  # the gate decides
    assert rollout.rollback_status({"chat": ok("chat")}) == "rolled-back"
    assert rollout.rollback_status({}) == "rolled-back"
    assert rollout.rollback_status({"chat": bad("chat")}) == "failed"


def test_restored_lines_say_what_to_restart_and_retire() -> None:
    out = ("RESTORED /etc/gpufleet/embed.env\nRESTORED /etc/systemd/system/gpufleet-chat.service\n"
           "REMOVED /etc/systemd/system/gpufleet-new.service\nREMOVED /etc/gpufleet/new.env\n"
           "RESTORED /etc/systemd/system/gpufleet-old.service\nnoise\n")
    done = restored(out, ["chat", "embed", "new"])
    assert done.restart == ["chat", "embed", "old"]  # start order, then units not planned
    assert done.removed == ["new"]
    assert done.units_changed
    assert not restored("RESTORED /etc/gpufleet/plan.json\n", ["chat"]).units_changed


# ---------------------------------------------------------------- roll_out over doubles


@dataclass
class Script:
    """How each host behaves: the survey's differences, the apply's result, the probes."""

    differs: dict[str, bool] = field(default_factory=dict)
    apply_error: dict[str, str] = field(default_factory=dict)
    healthy_after: dict[str, bool] = field(default_factory=dict)  # the changed service answers
    unit_state: dict[str, str] = field(default_factory=dict)
    deployed: list[list[str]] = field(default_factory=list)  # the batches pyinfra was given
    restored: list[str] = field(default_factory=list)
    unreachable: set[str] = field(default_factory=set)


class FakeRun:
    """Test double of gpufleet.deploy.FleetDeploy: no pyinfra, the scripted outcome per host."""

    def __init__(self, script: Script, targets: list[HostTarget]):
        self.script, self.targets = script, targets
        self.reports = {t.name: HostReport(t.name) for t in targets}

    def connect(self) -> None:
        self.script.deployed.append([t.name for t in self.targets])

    def settings_of(self, name: str) -> dict[str, Any]:
        return {}

    def steps_for(self, name: str) -> list[str]:
        return ["services"]

    def limit_steps(self, steps: dict[str, list[str]]) -> None:
        pass

    def prepare(self, diff: bool = True) -> dict[str, HostReport]:
        for t in self.targets:
            self.reports[t.name].files = [FileChange("/etc/gpufleet/chat.env", "changed")]
        return self.reports

    def run_command(self, name: str, command: str) -> str | None:
        return None  # the known-good snapshot

    def drop(self, name: str, error: str) -> None:
        self.reports[name].fail(error)

    def apply(self) -> dict[str, HostReport]:
        for t in self.targets:
            if t.name in self.script.apply_error:
                self.reports[t.name].fail(self.script.apply_error[t.name])
            else:
                self.reports[t.name].changes = ["Restart chat because its env changed."]
        return self.reports

    def close(self) -> None:
        pass


class FakeSession:
    """Test double of a lock session: answers `test -f` only; the readers are scripted."""

    def __init__(self, name: str):
        self.name = name

    def run(self, command: str, **_: Any) -> Any:
        return type("R", (), {"rc": 0, "stdout": "", "stderr": ""})()


def drive(monkeypatch: pytest.MonkeyPatch, script: Script, names: list[str],
          policy: RolloutPolicy) -> rollout.RolloutResult:
    hosts = targets(names)
    sessions = {n: FakeSession(n) for n in names}
    by_session = {id(s): n for n, s in sessions.items()}

    def survey_session(session: FakeSession, target: HostTarget, *_: Any) -> HostSurvey:
        return HostSurvey({"services": ["differs"] if script.differs.get(target.name) else []})

    def probes(session: FakeSession, services: list[Any], full: bool) -> dict[str, Probe]:
        host = by_session[id(session)]
        if host in script.unreachable:
            raise HostUnreachable(f"{host}: connection reset")
        healthy = script.healthy_after.get(host, True) or host in script.restored
        return {s.name: ok(s.name) if healthy else bad(s.name) for s in services}

    def states(session: FakeSession, names_: list[str]) -> dict[str, str]:
        return {n: script.unit_state.get(by_session[id(session)], "active") for n in names_}

    def restore(session: FakeSession, services: list[str]) -> list[str]:
        script.restored.append(by_session[id(session)])
        return ["chat"]

    def no_new_connections(*_: Any) -> None:
        raise AssertionError("the gate opened a second connection instead of the lock session")

    monkeypatch.setattr(rollout, "survey_session", survey_session)
    monkeypatch.setattr(rollout, "run_probes", probes)
    monkeypatch.setattr(rollout, "unit_states", states)
    monkeypatch.setattr(rollout, "logged_error", lambda s, n: "ValueError: boom")
    monkeypatch.setattr(rollout, "restore", restore)
    monkeypatch.setattr(rollout, "has_unit", lambda s, n: True)
    monkeypatch.setattr(rollout, "Session", no_new_connections)
    monkeypatch.setattr(rollout, "POLL_S", 0.0)
    make_run: Callable[[list[HostTarget]], Any] = lambda ts: FakeRun(script, ts)  # noqa: E731
    return rollout.roll_out(hosts, make_run, SshOverride(), policy,
                            sessions=sessions)  # type: ignore[arg-type]


def statuses(result: rollout.RolloutResult) -> dict[str, str]:
    return {h.name: h.status for h in result.hosts}


def test_converged_hosts_are_never_batched(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(differs={"b": True})
    result = drive(monkeypatch, script, ["a", "b", "c"], RolloutPolicy(batch_size=1))
    assert statuses(result) == {"a": "unchanged", "b": "updated", "c": "unchanged"}
    assert script.deployed == [["b"]]
    assert result.hosts[1].restarted == ["chat"]


def test_batches_follow_the_batch_size_in_inventory_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(differs={"a": True, "b": True, "c": True})
    result = drive(monkeypatch, script, ["a", "b", "c"], RolloutPolicy(batch_size=2))
    assert script.deployed == [["a", "b"], ["c"]]
    assert statuses(result) == dict.fromkeys("abc", "updated") and not result.halted


def test_a_failed_gate_rolls_back_and_halts_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(differs=dict.fromkeys("abc", True), healthy_after={"a": False},
                    unit_state={"a": "failed"})
    result = drive(monkeypatch, script, ["a", "b", "c"],
                   RolloutPolicy(batch_size=1, max_failed_hosts=1, health_timeout_s=30))
    assert statuses(result) == {"a": "rolled-back", "b": "skipped", "c": "skipped"}
    assert result.halted and script.restored == ["a"] and script.deployed == [["a"]]
    assert "ValueError: boom" in result.hosts[0].failures["chat"]


def test_max_failed_hosts_lets_the_rollout_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(differs=dict.fromkeys("abc", True), healthy_after={"a": False},
                    unit_state={"a": "failed"})
    result = drive(monkeypatch, script, ["a", "b", "c"],
                   RolloutPolicy(batch_size=1, max_failed_hosts=2))
    assert statuses(result) == {"a": "rolled-back", "b": "updated", "c": "updated"}
    assert not result.halted


def test_a_failed_apply_with_a_dead_service_is_rolled_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(differs={"a": True}, apply_error={"a": "Restart chat failed"},
                    unit_state={"a": "failed"})
    result = drive(monkeypatch, script, ["a"], RolloutPolicy())
    assert statuses(result) == {"a": "rolled-back"} and script.restored == ["a"]


def test_a_host_lost_during_the_gate_is_failed_with_the_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(differs={"a": True, "b": True}, unreachable={"a"})
    result = drive(monkeypatch, script, ["a", "b"], RolloutPolicy(max_failed_hosts=1))
    assert statuses(result) == {"a": "failed", "b": "skipped"}
    assert "connection reset" in (result.hosts[0].error or "")
