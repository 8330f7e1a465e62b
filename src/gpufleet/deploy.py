"""Apply the plan to hosts with pyinfra's API: connect, preview, apply, report per host.

One pyinfra State holds the hosts of one run. Each host gets its own `add_deploy` call with its
HostTarget (its part of the plan, its rendered files, its download tokens), so per-host
variation lives in the arguments. Secrets are resolved here and nowhere else, and go only into
files uploaded without diff or log (see gpufleet.deploys.operations.secret_file).

The same deploys run from pyinfra's CLI (`pyinfra inventories/berget.py deploys/site.py`):
`pyinfra_hosts` builds the inventory rows from the YAML and `cli_target` rebuilds the host's
HostTarget inside the deploy file.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pyinfra import host as current_host
from pyinfra.api import BaseStateCallback, Config, Inventory, State, StringCommand
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import DeployError, PyinfraError
from pyinfra.api.host import Host
from pyinfra.api.operations import run_ops
from pyinfra.connectors.sshuserclient import client as sshclient
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts.files import FileContents

from gpufleet import inventory as inventory_yaml
from gpufleet.deploys.rocm import check_supported
from gpufleet.deploys.site import STEPS, check_steps, site
from gpufleet.deploys.target import HostTarget
from gpufleet.errors import InputError
from gpufleet.facts import FileStates, host_state_fact
from gpufleet.host.ssh import expand_path
from gpufleet.inventory import Host as Host_
from gpufleet.plan import Plan, PlannedHost, build_plan
from gpufleet.render import RenderedFile, render_host
from gpufleet.secrets import resolve_secrets
from gpufleet.settings import PREFIX, defaults, validate_settings
from gpufleet.settings import resolve as resolve_settings
from gpufleet.survey import HostSurvey, survey_host

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NOISE = re.compile(r"^Error: executed \d+ commands?$")
_PREFIXED = re.compile(r"^\[(?P<host>[^\]]+)\]\s*(?P<message>.*)$", re.S)


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class SshOverride:
    """SSH settings that beat the inventory's (the lab passes its key and known_hosts)."""

    key: str | None = None
    known_hosts: str | None = None
    user: str | None = None
    port: int | None = None
    strict_host_key_checking: str = "yes"


def host_data(inv_host: Host_, ssh: SshOverride, settings: dict[str, Any]) -> dict[str, Any]:
    """pyinfra host data for one inventory host: its SSH settings + the override, settings."""
    user = ssh.user or inv_host.ssh_user
    data: dict[str, Any] = {
        "ssh_hostname": inv_host.address,
        "ssh_user": user,
        "ssh_port": ssh.port or inv_host.ssh_port,
        "ssh_strict_host_key_checking": ssh.strict_host_key_checking,
        "_sudo": user != "root",
    }
    if ssh.key:
        data["ssh_key"] = ssh.key
    if ssh.known_hosts:
        data["ssh_known_hosts_file"] = ssh.known_hosts
    return {**data, **settings}


def no_delay(host: Host) -> None:
    """TCP_NODELAY on the host's SSH socket: pyinfra's many small commands otherwise each wait
    for a delayed ACK (measured: a 3-host no-op run 6.2 s -> 2.2 s, facts/performance.md)."""
    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client is not None else None
    if transport is not None and transport.sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def host_targets(plan: Plan, names: Sequence[str] | None = None) -> list[HostTarget]:
    """The HostTarget of each chosen host: rendered files, the hub tokens it needs, and the
    settings both were made from (the run's overrides are in `plan.inventory.overrides`)."""
    secrets = resolve_secrets(plan.inventory.fleet)
    targets = []
    for planned in plan.hosts:
        if names is None or planned.name in names:
            files = tuple(render_host(plan, planned.name, secrets=secrets))
            targets.append(HostTarget(planned.name, plan.inventory.fleet, planned, files,
                                      _hub_tokens(planned, secrets),
                                      resolve_settings(plan.inventory, planned.name)))
    return targets


def _hub_tokens(planned: PlannedHost, secrets: dict[str, str]) -> dict[str, str]:
    """Only the secrets the host's model downloads use (those named by HF_TOKEN)."""
    wanted = {p.service.secrets.get("HF_TOKEN") for p in planned.services}
    return {name: secrets[name] for name in wanted if name and name in secrets}


def parse_setting(text: str) -> tuple[str, Any]:
    """`gpufleet_x=value` with a YAML value (false, 600, [a, b]); refuses unknown knobs."""
    from gpufleet.deploys.settings import defaults
    from gpufleet.settings import validate_settings

    key, sep, value = text.partition("=")
    if not sep or key not in defaults():
        raise InputError(f"--set {text!r}: not a gpufleet setting",
                         hint="KEY=VALUE with a key from group_data/all.py")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        raise InputError(f"--set {key}: not a YAML value: {value!r}") from None
    return key, validate_settings({key: parsed}, "--set")[key]


# ---------------------------------------------------------------- results


@dataclass
class FileChange:
    path: str
    diff: str  # unified diff, or a note for secret files (their content is never shown)


@dataclass
class HostReport:
    """What happened (or would happen) on one host."""

    name: str
    ok: bool = True
    error: str | None = None
    unreachable: bool = False
    changes: list[str] = field(default_factory=list)  # operations that change (will / did)
    maybe: list[str] = field(default_factory=list)  # conditional operations (restarts, reload)
    files: list[FileChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def fail(self, error: str) -> None:
        self.ok = False
        self.error = f"{self.error}\n{error}" if self.error else error


class _ConnectErrors(BaseStateCallback):
    """Keeps each host's own connection error (refused, timed out, host key, auth)."""

    def __init__(self, run: FleetDeploy):
        self.run = run

    def host_connect_error(self, state: State, host: Host, error: Exception) -> None:  # type: ignore[override]
        name = self.run._by_host.get(host.name, host.name)
        self.run.connect_errors[name] = f"cannot connect: {connect_error_text(error)}"


def connect_error_text(error: BaseException) -> str:
    """pyinfra's ConnectError text without its colour codes."""
    text = _ANSI.sub("", str(error.args[0] if error.args else error)).strip()
    return text or type(error).__name__


class _Warnings(logging.Handler):
    """Collects pyinfra's warnings and errors per host (skips, tolerated failures)."""

    def __init__(self, reports: dict[str, HostReport], names: dict[str, str]):
        super().__init__(logging.WARNING)
        self.reports, self.names = reports, names  # names: pyinfra host name -> plan name

    def emit(self, record: logging.LogRecord) -> None:
        match = _PREFIXED.match(_ANSI.sub("", record.getMessage()).strip())
        name = self.names.get(match["host"]) if match else None
        if match and name in self.reports:
            report, message = self.reports[name], match["message"].strip()
            if _NOISE.match(message):
                return  # pyinfra's tally of a failed operation: the error says what failed
            if message and message not in report.warnings:
                report.warnings.append(message)


# ---------------------------------------------------------------- the run


class FleetDeploy:
    """One deploy run: `connect()`, `prepare()` (the preview), then `apply()`; `close()`."""

    def __init__(self, targets: Sequence[HostTarget], *, steps: Sequence[str] = tuple(STEPS),
                 ssh: SshOverride | None = None,
                 callbacks: Sequence[BaseStateCallback] = (), connector: str | None = None,
                 extra_data: dict[str, Any] | None = None):
        # Settings come only with the targets (HostTarget.settings): the values the units were
        # rendered with are the values the deploys run with. Overrides go on the inventory.
        self.targets = {t.name: t for t in targets}
        self.steps = check_steps(steps)
        self.reports = {name: HostReport(name) for name in self.targets}
        self._names = {name: f"{connector}/{name}" if connector else name for name in self.targets}
        self._by_host: dict[str, str] = {v: k for k, v in self._names.items()}
        rows = [(self._names[t.name], {**host_data(t.planned.host, ssh or SshOverride(),
                                                   t.settings),
                                       **(extra_data or {})})
                for t in targets]
        self.state = State(Inventory((rows, {})), Config(FAIL_PERCENT=None))
        for callback in callbacks:
            self.state.add_callback_handler(callback)
        self.state.add_callback_handler(_ConnectErrors(self))
        self._log = _Warnings(self.reports, self._by_host)
        self.connect_errors: dict[str, str] = {}
        self.surveys: dict[str, HostSurvey] = {}
        self._steps_by_host: dict[str, list[str]] = {}

    def report_for(self, host: Host) -> HostReport:
        return self.reports[self._by_host.get(host.name, host.name)]

    def connect(self) -> None:
        # pyinfra memoizes known_hosts per process: a host key replaced since (a rebuilt host
        # whose new key the operator accepted) would be refused in a long-lived process.
        sshclient.get_host_keys.cache.clear()  # type: ignore[attr-defined]
        logging.getLogger("pyinfra").addHandler(self._log)
        try:
            connect_all(self.state)
        except PyinfraError:  # every host failed: each one's own error is in connect_errors
            pass
        self._fail_unconnected()
        for host in self.state.activated_hosts:
            no_delay(host)

    def _fail_unconnected(self) -> None:
        for host in self.state.inventory:
            if host not in self.state.activated_hosts:
                report = self.report_for(host)
                report.unreachable = True
                report.fail(self.connect_errors.get(report.name, "could not connect"))

    def survey(self) -> dict[str, HostSurvey]:
        """One command per host, all hosts at once: which steps already are as planned."""
        import gevent

        hosts = self.hosts()
        jobs = {self.state.pool.spawn(self._survey_host, h): h for h in hosts}
        gevent.joinall(list(jobs))
        for job, host in jobs.items():
            result = job.value if job.successful() else None
            report = self.report_for(host)
            if isinstance(result, HostSurvey):
                self.surveys[report.name] = result
                report.warnings += [w for w in result.warnings if w not in report.warnings]
                if result.error:
                    report.fail(result.error)
        return self.surveys

    def settings_of(self, name: str) -> dict[str, Any]:
        """Every knob's value for a host, as its pyinfra host data has them."""
        host = self.state.inventory.get_host(self._names[name])
        return {**defaults(), **{k: v for k, v in host.data.dict().items()
                                 if k.startswith(PREFIX)}}

    def _survey_host(self, host: Host) -> HostSurvey | None:
        target = self.targets[self._by_host[host.name]]
        settings = self.settings_of(target.name)
        try:
            with ctx_state.use(self.state), ctx_host.use(host):
                return survey_host(host, target, settings, self.steps)
        except Exception as exc:  # a survey that fails only means: ask pyinfra for every step
            logging.getLogger("pyinfra").debug("survey of %s: %r", host.name, exc)
            return None

    def steps_for(self, name: str) -> list[str]:
        return self._steps_by_host.get(name, self.steps)

    def run_command(self, name: str, command: str) -> str | None:
        """Run a shell command on a connected host; None when it worked, else its error."""
        host = self.state.inventory.get_host(self._names[name])
        with ctx_state.use(self.state), ctx_host.use(host):
            ok, output = host.run_shell_command(StringCommand(command))
        return None if ok else ("\n".join(output.stderr_lines[-3:]) or "failed")

    def limit_steps(self, steps_by_host: dict[str, list[str]]) -> None:
        """Run only these steps on these hosts (the survey found the others converged)."""
        self._steps_by_host = dict(steps_by_host)

    def hosts(self) -> list[Host]:
        return [h for h in self.state.inventory.get_active_hosts()
                if self.report_for(h).ok]

    def prepare(self, diff: bool = True) -> dict[str, HostReport]:
        """Check each host, diff its files, build its operations; nothing changes on hosts."""
        for host in self.hosts():
            self._prepare_host(host, diff)
        return self.reports

    def _prepare_host(self, host: Host, diff: bool) -> None:
        target, report = self.targets[self._by_host[host.name]], self.report_for(host)
        steps = self._steps_by_host.get(report.name, self.steps)
        if not steps:
            return  # converged: no operation at all
        try:
            with ctx_state.use(self.state), ctx_host.use(host):
                if "rocm" in steps:
                    check_supported(target.fleet.rocm_version)
                if "services" in steps:
                    report.files = file_changes(host, target.files, diff)
            add_deploy(self.state, site, target, steps, host=[host])
        except (DeployError, PyinfraError) as exc:
            report.fail(str(exc))
            self._drop(host)
            return
        report.changes, report.maybe = self._planned_changes(host)

    def drop(self, name: str, error: str) -> None:
        """Fail a host before apply: none of its operations will run."""
        self.reports[name].fail(error)
        self._drop(self.state.inventory.get_host(self._names[name]))

    def _drop(self, host: Host) -> None:
        try:
            self.state.fail_hosts({host})
        except PyinfraError:  # "No hosts remaining!": the reports already say why
            pass

    def _planned_changes(self, host: Host) -> tuple[list[str], list[str]]:
        will, maybe = [], []
        with ctx_state.use(self.state), ctx_host.use(host):
            for op_hash in host.op_hash_order:
                data = self.state.get_op_data_for_host(host, op_hash)
                name = op_name(self.state, data, op_hash)
                if data.global_arguments.get("_if"):
                    maybe.append(name)
                elif data.operation_meta.will_change:
                    will.append(name)
        return will, maybe

    def apply(self) -> dict[str, HostReport]:
        """Run the prepared operations on every host still ok; fills changes and errors."""
        if self.hosts():
            try:
                run_ops(self.state)
            except PyinfraError as exc:  # raised when no host is left
                logging.getLogger("pyinfra").debug("run_ops: %s", exc)
        for host in self.state.inventory:
            if host.name in self._by_host and self.report_for(host).ok:
                self._collect(host)
        return self.reports

    def _collect(self, host: Host) -> None:
        report = self.report_for(host)
        report.changes, report.maybe = [], []
        for op_hash in host.op_hash_order:
            data = self.state.get_op_data_for_host(host, op_hash)
            meta = data.operation_meta
            if not meta.is_complete():
                continue
            if meta.did_error() and not data.global_arguments.get("_ignore_errors"):
                report.fail(operation_error(report.name, op_name(self.state, data, op_hash),
                                            meta.stderr_lines))
            elif meta.did_change():
                report.changes.append(op_name(self.state, data, op_hash))
        if host in self.state.failed_hosts and report.ok:
            report.fail("the host failed (see the operation output above)")

    def close(self) -> None:
        try:
            disconnect_all(self.state)
        finally:
            logging.getLogger("pyinfra").removeHandler(self._log)


def operation_error(host: str, name: str, stderr: Sequence[str]) -> str:
    """A failed operation for the report; a full disk is said as such, first."""
    lines = [_ANSI.sub("", line).strip() for line in stderr]
    for line in lines:
        if line.startswith("no space left on") or "No space left on device" in line:
            space = line if line.startswith("no space left on") else "no space left on device"
            return f"host {host}: {space}; nothing was changed by: {name}"
    detail = "\n".join(lines[-5:])
    return f"{name} failed" + (f":\n{detail}" if detail else "")


def op_name(state: State, data: Any, op_hash: str) -> str:
    """The operation's own name on this host (op hashes are shared between hosts)."""
    name = data.global_arguments.get("name")
    if name:
        return str(name)
    return ", ".join(sorted(state.get_op_meta(op_hash).names)) or op_hash


def file_changes(host: Host, files: Sequence[RenderedFile], diffs: bool = True
                 ) -> list[FileChange]:
    """Rendered files that differ from the host's (by SHA-256, one command for all, the same
    fact the uploads read): a unified diff when asked, secrets only as a note."""
    batch = tuple(sorted(f.path for f in files))
    states = host_state_fact(host, FileStates, paths=batch)
    changes = []
    for rendered in files:
        have = states.get(rendered.path)
        if have is not None and have[3] == hashlib.sha256(rendered.content.encode()).hexdigest():
            continue
        if rendered.secret or not diffs:
            what = "new" if have is None else "changed"
            changes.append(FileChange(rendered.path, f"{what} (secret)" if rendered.secret
                                      else what))
            continue
        lines = host.get_fact(FileContents, path=rendered.path)
        old = [line + "\n" for line in lines] if lines is not None else []
        new = rendered.content.splitlines(keepends=True)
        if old != new:
            text = "".join(difflib.unified_diff(old, new, f"{rendered.path} (host)",
                                                f"{rendered.path} (plan)"))
            changes.append(FileChange(rendered.path, text))
    return changes


# ---------------------------------------------------------------- pyinfra CLI mode


def pyinfra_hosts(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Inventory rows for a `inventories/<fleet>.py` file: one per host of the YAML.

    Environment overrides (the lab uses them): GPUFLEET_SSH_KEY, GPUFLEET_KNOWN_HOSTS, and
    GPUFLEET_SETTINGS, a YAML file of `gpufleet_*` settings.
    """
    inv = inventory_yaml.load(path)
    fleet = inv.fleet
    ssh = SshOverride(key=expand_path(os.environ.get("GPUFLEET_SSH_KEY") or fleet.ssh_key),
                      known_hosts=expand_path(os.environ.get("GPUFLEET_KNOWN_HOSTS")
                                              or fleet.ssh_known_hosts))
    settings = _settings_file(os.environ.get("GPUFLEET_SETTINGS"))
    rows = []
    for name, inv_host in inv.hosts.items():
        merged = {**fleet.settings, **inv_host.settings, **settings}
        data = host_data(inv_host, ssh, merged)
        data.update(gpufleet_inventory=str(Path(path).resolve()), gpufleet_host=name)
        rows.append((name, data))
    return rows


def _settings_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    return dict(parse_setting(f"{k}={yaml.safe_dump(v).strip()}") for k, v in data.items())


@cache
def _plan_and_targets(path: str, overrides: str) -> dict[str, HostTarget]:
    inv = inventory_yaml.load(path).with_overrides(json.loads(overrides))
    return {t.name: t for t in host_targets(build_plan(inv))}


def cli_target() -> HostTarget:
    """The current host's HostTarget, inside a deploy file run by pyinfra's CLI. Rendered with
    the host's pyinfra data as the settings (inventory row, group_data files, `--data`), so the
    units name what the deploys install, whichever channel a value came in by."""
    path = current_host.data.get("gpufleet_inventory")
    if not path:
        raise DeployError(f"{current_host.name}: not a gpufleet inventory host "
                          "(use inventories/<fleet>.py)")
    data = {k: v for k, v in current_host.data.dict().items() if k in defaults()}
    try:
        overrides = validate_settings(data, "pyinfra data")
    except InputError as exc:
        raise DeployError(f"{current_host.name}: {exc}") from None
    targets = _plan_and_targets(path, json.dumps(overrides, sort_keys=True))
    return targets[current_host.data.get("gpufleet_host")]


def cli_steps() -> list[str]:
    """Steps for the CLI path: `--data gpufleet_steps=rocm,services` (default: all)."""
    steps = current_host.data.get("gpufleet_steps") or list(STEPS)
    return check_steps(steps.split(",") if isinstance(steps, str) else steps)
