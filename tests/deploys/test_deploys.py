"""The deploys against @fake hosts whose facts come from small fixtures (tests/fixtures/deploys).

pyinfra's @fake connector records every command; `Host.get_fact` is answered from a FakeMachine
(pyinfra's own operation tests work the same way: facts in, commands out). Nothing connects.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyinfra.operations.server
import pytest
import yaml
from pyinfra.api.host import Host
from support import REPO

from gpufleet import deploy as runner
from gpufleet import inventory
from gpufleet.deploys import rocm as rocm_deploy
from gpufleet.deploys import weights as weights_deploy
from gpufleet.deploys.settings import settings_now
from gpufleet.plan import build_plan
from gpufleet.render import render_host

FIXTURES = Path(__file__).parents[1] / "fixtures" / "deploys"
TOKEN = "hf_SECRETtokenVALUE0123456789"
LAB = {  # what the lab sets: mirror, no kernel, no hub, no tuning
    "gpufleet_rocm_install_driver": False,
    "gpufleet_weights_download": False,
    "gpufleet_tuning_iommu_pt": False,
    "gpufleet_tuning_numa_balancing_off": False,
}


# ---------------------------------------------------------------- the fake machine


@dataclass
class FakeMachine:
    """A host's facts. Files are path -> content; missing facts fail the test loudly."""

    distro: dict[str, Any]
    kernel: str = "6.8.0-45-generic"
    debs: set[str] = field(default_factory=set)
    apt_candidates: set[str] = field(default_factory=set)
    files: dict[str, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)
    enabled: set[str] = field(default_factory=set)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: set[str] = field(default_factory=set)
    gpus: int = 0
    amdgpu: str | None = None
    images: list[str] = field(default_factory=list)
    pip: dict[str, list[str]] = field(default_factory=dict)
    sysctl: dict[str, int] = field(default_factory=dict)
    cmdline: list[str] = field(default_factory=list)
    boots: int = 0

    @classmethod
    def load(cls, name: str) -> FakeMachine:
        raw = yaml.safe_load((FIXTURES / f"{name}.yml").read_text())
        return cls(raw["distro"], raw["kernel"], set(raw.get("debs", [])),
                   set(raw.get("apt_candidates", [])))

    def fact(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        name = cls.__name__
        handler = getattr(self, f"_{name}", None)
        if handler is None:
            raise KeyError(f"FakeMachine has no fact {cls.__module__}.{name} ({kwargs})")
        return handler(*args, **kwargs)

    def _LinuxDistribution(self) -> dict[str, Any]:
        d = self.distro
        return {"name": d["name"], "major": d["major"], "minor": d["minor"],
                "release_meta": {"ID": d["id"], "VERSION_CODENAME": d["codename"]}}

    def _KernelVersion(self) -> str:
        return self.kernel

    def _DebPackages(self) -> dict[str, list[str]]:
        return {p: ["1.0"] for p in self.debs}

    def _AptCandidate(self, package: str) -> str | None:
        return "1.0" if package in self.apt_candidates else None

    def _File(self, path: str) -> dict[str, Any] | None:
        if path not in self.files:
            return None
        mode = 600 if path.endswith((".env", ".token")) else 644
        return {"user": "root", "group": "root", "mode": mode, "size": 1}

    def _Directory(self, path: str) -> dict[str, Any] | None:
        if path not in self.dirs:
            return None
        mode = 700 if path.startswith("/etc/gpufleet/") else 755
        user = "gpufleet" if path.startswith("/var/lib/gpufleet") else "root"
        return {"user": user, "group": user, "mode": mode}

    def _Link(self, path: str) -> None:
        return None

    def _Sha1File(self, path: str) -> str | None:
        content = self.files.get(path)
        return None if content is None else hashlib.sha1(content.encode()).hexdigest()

    def _FileStates(self, paths: tuple[str, ...]) -> dict[str, tuple[str, str, str, str]]:
        states = {}
        for path in paths:
            if path in self.files:
                mode = "600" if path.endswith((".env", ".token", ".py")) else "644"
                digest = hashlib.sha256(self.files[path].encode()).hexdigest()
                states[path] = (mode, "root", "root", digest)
        return states

    def _UnitStates(self, units: tuple[str, ...]) -> dict[str, dict[str, str]]:
        return {u: {"Id": u, "ActiveState": "active" if u in self.running else "inactive",
                    "UnitFileState": "enabled" if u in self.enabled else "disabled"}
                for u in units}

    def _FileContents(self, path: str) -> list[str] | None:
        content = self.files.get(path)
        return None if content is None else content.splitlines()

    def _SystemdStatus(self, services: list[str] | None = None, **_: Any) -> dict[str, bool]:
        return {s: s in self.running for s in services or []}

    def _SystemdEnabled(self, services: list[str] | None = None, **_: Any) -> dict[str, bool]:
        return {s: s in self.enabled for s in services or []}

    def _Users(self) -> dict[str, dict[str, Any]]:
        return self.users

    def _Groups(self) -> list[str]:
        return sorted(self.groups)

    def _Uptime(self) -> int:
        self.boots += 1  # first read: before the reboot; later reads: after it
        return 1000 if self.boots == 1 else 1

    def _TmpDir(self) -> str:
        return "/tmp"

    def _Os(self) -> str:
        return "Linux"

    def _Which(self, command: str) -> str:
        return f"/usr/bin/{command}"

    def _GpufleetUnits(self) -> list[str]:
        prefix, suffix = "/etc/systemd/system/gpufleet-", ".service"
        return sorted(p[len(prefix):-len(suffix)] for p in self.files
                      if p.startswith(prefix) and p.endswith(suffix))

    def _RocmSmiGpuCount(self) -> int:
        return self.gpus

    def _AmdgpuInitstate(self) -> str | None:
        return self.amdgpu

    def _ContainerImages(self, engine: str) -> list[str]:
        return self.images

    def _PipPackages(self, pip: str | None = None) -> dict[str, list[str]]:
        return self.pip

    def _VenvDistVersion(self, python: str, dist: str) -> str | None:
        versions = self.pip.get(dist)
        return versions[0] if versions else None

    def _Sysctl(self, keys: list[str] | None = None) -> dict[str, int]:
        return self.sysctl

    def _KernelCmdline(self) -> list[str]:
        return self.cmdline


@pytest.fixture
def machines(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeMachine]:
    """name -> FakeMachine; Host.get_fact answers from it for @fake/<name>."""
    table: dict[str, FakeMachine] = {}

    def get_fact(self: Host, cls: type, *args: Any, **kwargs: Any) -> Any:
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}
        return table[self.name.removeprefix("@fake/")].fact(cls, args, kwargs)

    monkeypatch.setattr(Host, "get_fact", get_fact)
    monkeypatch.setattr(pyinfra.operations.server, "sleep", lambda _: None)  # reboot waits
    monkeypatch.setenv("GPUFLEET_TEST_HF_TOKEN", TOKEN)
    return table


@dataclass
class Run:
    reports: dict[str, runner.HostReport]
    commands: list[str]
    uploads: list[str]


def deploy_fleet(machine: FakeMachine, *, steps: tuple[str, ...] = ("rocm",),
                 settings: dict[str, Any] | None = None, path: Path = FIXTURES / "fleet.yml",
                 apply: bool = True, machines: dict[str, FakeMachine] | None = None,
                 fails: tuple[str, ...] = ()) -> Run:
    """Deploy the fleet file to @fake hosts answering from `machine`; `fails`: failing commands
    (by substring, since the fake connector runs nothing and would report success)."""
    plan = build_plan(inventory.load(path).with_overrides(settings or {}))
    assert machines is not None
    machines.update({planned.name: machine for planned in plan.hosts})
    uploads: list[str] = []
    run = runner.FleetDeploy(runner.host_targets(plan), steps=steps,
                             connector="@fake", extra_data={
                                 "fake_delay": 0, "fake_delay_jitter": 0,
                                 "fake_responses": {f: {"success": False, "stderr": "failed"}
                                                    for f in fails}})
    run.connect()
    for host in run.state.inventory:
        _record_uploads(host, uploads)
    run.prepare()
    reports = run.apply() if apply else run.reports
    commands = [c for h in run.state.inventory for c in h.connector.executed_commands]
    run.close()
    return Run(reports, commands, uploads)


def _record_uploads(host: Host, uploads: list[str]) -> None:
    def put_file(filename_or_io: Any, remote_filename: str, *args: Any, **kwargs: Any) -> bool:
        text = filename_or_io.read() if hasattr(filename_or_io, "read") else ""
        folder, _, name = remote_filename.rpartition("/")
        assert name.startswith(".") and name.endswith(".gpufleet-new"), remote_filename
        dest = f"{folder}/{name[1:].removesuffix('.gpufleet-new')}"  # uploads are atomic
        uploads.append(f"{dest}: {text.decode() if isinstance(text, bytes) else text}")
        return True

    host.connector.put_file = put_file  # type: ignore[method-assign]


def settled(distro: str = "ubuntu-22.04", gpus: int = 8) -> FakeMachine:
    """A host where the rocm, runtime and services steps have already run."""
    machine = FakeMachine.load(distro)
    machine.debs |= {"rocm-smi-lib", "amd-smi-lib", "rocminfo", "amdgpu-dkms", "docker.io",
                     f"linux-headers-{machine.kernel}"}
    machine.files.update({"/etc/apt/keyrings/rocm.gpg": "key",
                          "/etc/apt/preferences.d/rocm-pin-600": _pin()})
    release = rocm_deploy.RocmRelease(_codename(machine), "6.4.1", "6.4.1")
    with_defaults = _with_default_settings(lambda: rocm_deploy.repo_lines(release, settings_now()))
    for name, text in with_defaults.items():
        machine.files[f"/etc/apt/sources.list.d/{name}.list"] = text
    machine.groups |= {"render", "video"}
    machine.users["gpufleet"] = {"home": "/var/lib/gpufleet", "shell": "/usr/sbin/nologin",
                                 "group": "gpufleet", "groups": ["render", "video"],
                                 "comment": None, "password": None}
    machine.dirs |= {"/etc/apt/keyrings", "/etc/apt/sources.list.d", "/etc/apt/preferences.d",
                     "/var/lib/gpufleet", "/var/lib/gpufleet/models", "/etc/systemd/system",
                     "/etc/gpufleet",
                     "/etc/gpufleet/.upload"}
    machine.images = ["rocm/vllm:rocm6.4.1_vllm_0.11.0"]
    machine.running |= {"docker.service"}
    machine.enabled |= {"docker.service"}
    machine.gpus, machine.amdgpu = gpus, "live"
    return machine


def with_services(machine: FakeMachine) -> FakeMachine:
    """Install what render makes for the test fleet, all running and enabled."""
    plan = build_plan(inventory.load(FIXTURES / "fleet.yml"))
    for rendered in render_host(plan, "gpu-01", secrets={"hf_token": TOKEN}):
        machine.files[rendered.path] = rendered.content
    units = ["gpufleet-llama-8b.service", "gpufleet-e5-embed.service", "gpufleet.target"]
    machine.running |= set(units)
    machine.enabled |= set(units)
    return machine


def _codename(machine: FakeMachine) -> str:
    return "noble" if machine.distro["major"] == 24 else "jammy"


def _pin() -> str:
    return "Package: *\nPin: release o=repo.radeon.com\nPin-Priority: 600\n"


def _with_default_settings(fn: Any) -> Any:
    from pyinfra.api import Inventory, State
    from pyinfra.context import ctx_host, ctx_state

    state = State(Inventory((["@fake/x"], {})))
    host = state.inventory.get_host("@fake/x")
    with ctx_state.use(state), ctx_host.use(host):
        return fn()


# ---------------------------------------------------------------- rocm


@pytest.mark.parametrize(("distro", "codename"), [
    ("ubuntu-22.04", "jammy"), ("ubuntu-24.04", "noble"), ("debian-12", "jammy"),
])
def test_rocm_writes_amds_repositories_pin_and_packages(distro, codename, machines):
    run = deploy_fleet(FakeMachine.load(distro), machines=machines, apply=True)
    uploads = "\n".join(run.uploads)
    signed = "[arch=amd64 signed-by=/etc/apt/keyrings/rocm.gpg]"
    assert (f"/etc/apt/sources.list.d/amdgpu.list: deb {signed} "
            f"https://repo.radeon.com/amdgpu/6.4.1/ubuntu {codename} main") in uploads
    assert (f"/etc/apt/sources.list.d/rocm.list: deb {signed} "
            f"https://repo.radeon.com/rocm/apt/6.4.1 {codename} main") in uploads
    assert "/etc/apt/preferences.d/rocm-pin-600: " + _pin() in uploads
    joined = "\n".join(run.commands)
    assert "https://repo.radeon.com/rocm/rocm.gpg.key" in joined
    # dearmored into a temp name beside the keyring, then renamed over it (atomic)
    assert "gpg --batch --dearmor -o /etc/apt/keyrings/.rocm.gpg.gpufleet-new" in joined
    assert "mv -f /etc/apt/keyrings/.rocm.gpg.gpufleet-new /etc/apt/keyrings/rocm.gpg" in joined
    assert "apt-get update" in joined
    kernel = FakeMachine.load(distro).kernel
    assert _installs(run.commands, f"linux-headers-{kernel}")
    assert _installs(run.commands, "amdgpu-dkms")
    assert _installs(run.commands, "rocm-smi-lib amd-smi-lib rocminfo")
    assert any("usermod" in c or "useradd" in c for c in run.commands)


def _installs(commands: list[str], packages: str) -> bool:
    return any("apt-get" in c and "install" in c and c.rstrip().endswith(packages)
               for c in commands)


def test_rocm_7_adds_the_graphics_repository_and_needs_a_driver_version(machines):
    settings = {"gpufleet_amdgpu_version": "30.10.1"}
    tmp = _tmp_fleet((FIXTURES / "fleet.yml").read_text().replace('"6.4.1"', '"7.0.1"'))
    run = deploy_fleet(FakeMachine.load("ubuntu-24.04"), machines=machines, path=tmp,
                       settings=settings)
    uploads = "\n".join(run.uploads)
    assert "https://repo.radeon.com/amdgpu/30.10.1/ubuntu noble main" in uploads
    assert "https://repo.radeon.com/graphics/7.0.1/ubuntu noble main" in uploads
    bare = deploy_fleet(FakeMachine.load("ubuntu-24.04"), machines=machines, path=tmp)
    assert not bare.reports["gpu-01"].ok
    assert "gpufleet_amdgpu_version" in (bare.reports["gpu-01"].error or "")


def _tmp_fleet(text: str) -> Path:
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="gpufleet-test-"))
    (folder / "fleet.yml").write_text(text)
    return folder / "fleet.yml"


def test_unsupported_os_fails_before_any_operation(machines):
    run = deploy_fleet(FakeMachine.load("ubuntu-20.04"), machines=machines,
                       steps=("rocm", "runtime", "services"))
    report = run.reports["gpu-01"]
    assert not report.ok
    assert "Ubuntu 20.04 is not supported" in (report.error or "")
    assert run.commands == [] and run.uploads == []


def test_debian_12_needs_rocm_6_3_1(machines):
    tmp = _tmp_fleet((FIXTURES / "fleet.yml").read_text().replace('"6.4.1"', '"6.2.4"'))
    run = deploy_fleet(FakeMachine.load("debian-12"), machines=machines, path=tmp)
    assert "ROCm 6.2.4 does not support Debian 12" in (run.reports["gpu-01"].error or "")
    assert run.commands == []


def test_lab_settings_skip_the_kernel_visibly_and_use_the_mirror(machines):
    mirror = "http://10.231.0.1:8631"
    settings = {**LAB, "gpufleet_rocm_repo_url": f"{mirror}/rocm/apt",
                "gpufleet_amdgpu_repo_url": f"{mirror}/amdgpu",
                "gpufleet_rocm_key_url": f"{mirror}/rocm/rocm.gpg.key",
                "gpufleet_rocm_packages": ["rocm-smi"]}
    run = deploy_fleet(FakeMachine.load("debian-12"), machines=machines, settings=settings,
                       steps=("rocm", "tuning", "weights"))
    report = run.reports["gpu-01"]
    assert f"{mirror}/rocm/apt/6.4.1 jammy main" in "\n".join(run.uploads)
    assert not any("amdgpu-dkms" in c or "linux-headers" in c or "reboot" in c
                   for c in run.commands)
    assert any("gpufleet_rocm_install_driver is off" in w for w in report.warnings)
    assert any("gpufleet_weights_download is off" in w for w in report.warnings)
    assert not any("sysctl" in c or "update-grub" in c for c in run.commands)


def test_rocm_fails_when_rocm_smi_sees_too_few_gpus(machines):
    machine = settled(gpus=0)
    run = deploy_fleet(machine, machines=machines, fails=("rocm-smi lists",))
    report = run.reports["gpu-01"]
    assert any("rocm-smi lists 0 of 8 GPUs" in c for c in run.commands)
    assert not report.ok
    assert "Ensure rocm-smi sees the host's GPUs. failed" in (report.error or "")


def test_reboot_only_when_the_driver_is_new_and_not_loaded(machines):
    fresh = deploy_fleet(FakeMachine.load("ubuntu-22.04"), machines=machines,
                         settings={"gpufleet_rocm_verify_gpus": False})
    assert any("reboot" in c for c in fresh.commands)
    loaded = FakeMachine.load("ubuntu-22.04")
    loaded.amdgpu = "live"
    again = deploy_fleet(loaded, machines=machines, settings={"gpufleet_rocm_verify_gpus": False})
    assert not any("reboot" in c for c in again.commands)


# ---------------------------------------------------------------- idempotence and services


ALL_STEPS = ("rocm", "runtime", "weights", "services")


def test_a_settled_host_gets_no_commands(machines):
    machine = with_services(settled())
    weights = {"gpufleet_weights_download": False}
    run = deploy_fleet(machine, machines=machines, steps=ALL_STEPS, settings=weights)
    report = run.reports["gpu-01"]
    assert report.ok, report.error
    assert report.changes == []
    assert _mutating(run.commands) == [] and run.uploads == []


def _mutating(commands: list[str]) -> list[str]:
    """Commands other than the fact reads the fake connector also records."""
    return [c for c in commands if "##PYINFRA" not in c]


def test_a_changed_unit_reloads_once_and_restarts_only_its_service(machines):
    machine = with_services(settled())
    unit = "/etc/systemd/system/gpufleet-llama-8b.service"
    machine.files[unit] = machine.files[unit].replace("PartOf", "# old\nPartOf")
    run = deploy_fleet(machine, machines=machines, steps=("services",))
    commands = _mutating(run.commands)
    assert [c for c in commands if "daemon-reload" in c] == ["systemctl daemon-reload"]
    restarts = [c for c in commands if "restart" in c]
    assert restarts == ["systemctl restart gpufleet-llama-8b.service"]
    assert not any(" start " in f" {c} " for c in commands)
    assert [u.split(":")[0] for u in run.uploads] == [unit]


def test_a_changed_env_file_restarts_without_daemon_reload(machines):
    machine = with_services(settled())
    machine.files["/etc/gpufleet/llama-8b.env"] = "HF_TOKEN=old\n"
    run = deploy_fleet(machine, machines=machines, steps=("services",))
    commands = _mutating(run.commands)
    assert not any("daemon-reload" in c for c in commands)
    assert [c for c in commands if "restart" in c] == [
        "systemctl restart gpufleet-llama-8b.service"]


def test_new_units_start_once_and_are_not_restarted(machines):
    run = deploy_fleet(settled(), machines=machines, steps=("services",))
    commands = _mutating(run.commands)
    assert [c for c in commands if "daemon-reload" in c] == ["systemctl daemon-reload"]
    assert not any("restart" in c for c in commands)
    starts = [c for c in commands if c.startswith("systemctl start")]
    assert starts == ["systemctl start gpufleet-llama-8b.service",
                      "systemctl start gpufleet-e5-embed.service",
                      "systemctl start gpufleet.target"]


def test_a_removed_service_is_stopped_disabled_and_deleted(machines):
    machine = with_services(settled())
    machine.files["/etc/systemd/system/gpufleet-old-model.service"] = "[Unit]\n"
    machine.files["/etc/gpufleet/old-model.env"] = "X=1\n"
    machine.running.add("gpufleet-old-model.service")
    machine.enabled.add("gpufleet-old-model.service")
    run = deploy_fleet(machine, machines=machines, steps=("services",))
    commands = _mutating(run.commands)
    assert "systemctl stop gpufleet-old-model.service" in commands
    assert "systemctl disable gpufleet-old-model.service" in commands
    assert any("rm" in c and "/etc/systemd/system/gpufleet-old-model.service" in c
               for c in commands)
    assert any("rm" in c and "/etc/gpufleet/old-model.env" in c for c in commands)
    assert [c for c in commands if "daemon-reload" in c] == ["systemctl daemon-reload"]
    assert not any("restart" in c for c in commands)


# ---------------------------------------------------------------- secrets


def test_the_hf_token_never_appears_in_commands_or_output(machines, caplog):
    caplog.set_level("DEBUG", logger="pyinfra")
    run = deploy_fleet(settled(), machines=machines, steps=ALL_STEPS)
    assert run.reports["gpu-01"].ok, run.reports["gpu-01"].error
    assert not any(TOKEN in c for c in run.commands)
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(run.reports)
    downloads = [c for c in run.commands if "fetch_model.py" in c]
    assert any("--token-file /etc/gpufleet/weights/hf_token.token" in c for c in downloads)
    token_uploads = [u for u in run.uploads if u.startswith("/etc/gpufleet/weights/hf_token")]
    assert token_uploads == [f"/etc/gpufleet/weights/hf_token.token: {TOKEN}"]


def test_secret_files_are_not_diffed(machines):
    machine = with_services(settled())
    machine.files["/etc/gpufleet/llama-8b.env"] = "HF_TOKEN=old\n"
    run = deploy_fleet(machine, machines=machines, steps=("services",), apply=False)
    changes = {c.path: c.diff for c in run.reports["gpu-01"].files}
    assert changes == {"/etc/gpufleet/llama-8b.env": "changed (secret)"}


def test_weights_skip_complete_models(machines):
    machine = settled()
    for pull in _pulls():
        machine.files[weights_deploy.marker_path("/var/lib/gpufleet/models", pull)] = "{}"
    run = deploy_fleet(machine, machines=machines, steps=("weights",))
    assert not any("fetch_model.py --model" in c for c in run.commands)


def _pulls() -> list[Any]:
    plan = build_plan(inventory.load(FIXTURES / "fleet.yml"))
    return runner.host_targets(plan)[0].model_pulls()


# ---------------------------------------------------------------- the pyinfra CLI path


def test_berget_inventory_module_reads_the_yaml():
    out = subprocess.run(
        [sys.executable, "-m", "pyinfra_cli", "inventories/berget.py", "debug-inventory"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    if "No module named pyinfra_cli.__main__" in out.stderr:
        out = subprocess.run([str(Path(sys.executable).with_name("pyinfra")),
                              "inventories/berget.py", "debug-inventory"],
                             cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "[gpu-01]" in out.stdout + out.stderr
    assert "gpu-01.berget.example" in out.stdout + out.stderr


def test_berget_builds_every_step_without_connecting(machines, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    text = (REPO / "inventories" / "berget.yml").read_text()
    text = text.replace("{file: ~/.config/gpufleet/api_key}", "{env: HF_TOKEN}")
    tmp = _tmp_fleet(text)
    run = deploy_fleet(FakeMachine.load("ubuntu-22.04"), machines=machines, path=tmp,
                       steps=("rocm", "tuning", "runtime", "weights", "services"), apply=False)
    report = run.reports["gpu-01"]
    assert report.ok, report.error
    assert "Ensure gpufleet.target is enabled and active." in report.changes
    assert any("daemon-reload" in m or "Reload systemd" in m for m in report.maybe)
    assert _mutating(run.commands) == []


# ---------------------------------------------------------------- gpufleet deploy


@pytest.fixture
def deploy_cli(machines, monkeypatch):
    import functools

    from gpufleet.commands import deploy as command

    monkeypatch.setattr(command, "FleetDeploy", functools.partial(
        runner.FleetDeploy, connector="@fake",
        extra_data={"fake_delay": 0, "fake_delay_jitter": 0}))
    monkeypatch.setattr(command, "fleet_lock", _no_lock)  # @fake hosts have no sshd to lock
    return machines


@contextlib.contextmanager
def _no_lock(*args: Any, **kwargs: Any) -> Any:
    from gpufleet.fleetlock import FleetLock

    yield FleetLock()


def test_cli_dry_run_shows_unit_diffs_and_changes_nothing(deploy_cli, cli):
    machine = with_services(settled())
    unit = "/etc/systemd/system/gpufleet-llama-8b.service"
    machine.files[unit] = machine.files[unit].replace("PartOf", "# old\nPartOf")
    deploy_cli["gpu-01"] = machine
    result = cli("deploy", str(FIXTURES / "fleet.yml"), "--dry-run", "--diff",
                 "--steps", "services")
    assert result.exit_status == 0, result.stderr
    assert f"file {unit}: changes" in result.stdout
    assert "-# old" in result.stdout
    assert "Restart llama-8b because its unit or environment changed." in result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_cli_exit_codes(deploy_cli, cli):
    deploy_cli["gpu-01"] = FakeMachine.load("ubuntu-20.04")
    failed = cli("deploy", str(FIXTURES / "fleet.yml"), "--steps", "rocm")
    assert failed.exit_status == 1
    assert "not supported" in failed.stdout
    bad = cli("deploy", str(FIXTURES / "fleet.yml"), "--steps", "rocm,gpus")
    assert bad.exit_status == 2 and "unknown step" in bad.stderr
    unknown = cli("deploy", str(FIXTURES / "fleet.yml"), "--set", "gpufleet_nope=1")
    assert unknown.exit_status == 2


def test_cli_refuses_a_plan_with_errors_unless_forced(deploy_cli, cli):
    broken = _tmp_fleet((FIXTURES / "fleet.yml").read_text().replace(
        "gpu_memory_utilization: 0.5", "gpu_memory_utilization: 0.99"))
    deploy_cli["gpu-01"] = with_services(settled())
    refused = cli("deploy", str(broken), "--dry-run", "--steps", "services")
    assert refused.exit_status == 2 and "--force" in refused.stderr
    forced = cli("deploy", str(broken), "--dry-run", "--steps", "services", "--force")
    assert forced.exit_status == 0 and "warning" in forced.stderr


# ---------------------------------------------------------------- atomic writes


def test_every_upload_is_atomic_with_owner_and_mode_before_content(machines):
    """Per file: an empty temp file beside the destination with its final owner and mode
    (umask 077 first), then the bytes, then a hash check, fsync, rename and directory fsync."""
    events: list[str] = []
    machine = settled()
    machines["gpu-01"] = machine
    plan = build_plan(inventory.load(FIXTURES / "fleet.yml"))
    run = runner.FleetDeploy(runner.host_targets(plan), steps=("services",), connector="@fake",
                             extra_data={"fake_delay": 0, "fake_delay_jitter": 0})
    run.connect()
    for host in run.state.inventory:
        def put_file(src: Any, remote: str, *args: Any, **kwargs: Any) -> bool:
            events.append(f"UPLOAD {remote}")
            return True
        host.connector.put_file = put_file  # type: ignore[method-assign]
        original = host.connector.run_shell_command

        def run_shell(command: Any, *args: Any, _orig: Any = original, **kwargs: Any) -> Any:
            text = str(command.get_masked_value() if hasattr(command, "get_masked_value")
                       else command)
            if "##PYINFRA" not in text:
                events.append(text)
            return _orig(command, *args, **kwargs)
        host.connector.run_shell_command = run_shell  # type: ignore[method-assign]
    run.prepare()
    run.apply()
    run.close()
    env, temp = "/etc/gpufleet/llama-8b.env", "/etc/gpufleet/.llama-8b.env.gpufleet-new"
    upload = events.index(f"UPLOAD {temp}")
    prepare, commit = events[upload - 1], events[upload + 1]
    assert "umask 077" in prepare and f"chmod 600 {temp}" in prepare
    assert prepare.index("umask 077") < prepare.index(f"chmod 600 {temp}")
    assert "df -Pk /etc/gpufleet" in prepare  # a full disk is found before any byte
    assert commit.index("sha256sum") < commit.index(f"sync {temp}") < \
        commit.index(f"mv -f {temp} {env}") < commit.rindex("sync /etc/gpufleet")
    assert not any(e == f"UPLOAD {env}" for e in events)  # never written in place


def test_a_full_disk_is_reported_as_such(machines):
    machine = settled()
    run = deploy_fleet(machine, machines=machines, steps=("services",),
                       fails=("df -Pk /etc/gpufleet",))
    report = run.reports["gpu-01"]
    assert not report.ok
    # the fake connector's stderr is "failed"; the wording for a real full disk is checked on
    # lab hosts (tests/e2e/test_fleet_safety.py); here: nothing after the failed check ran
    assert not any(c.startswith("set -e; got=") for c in run.commands)


def test_disk_full_message_names_the_host_and_folder():
    text = runner.operation_error("gpu-01", "Ensure /etc/gpufleet/x.env is up to date.",
                                  ["no space left on /etc/gpufleet (needs 16 KiB, 0 KiB free)"])
    assert text.startswith("host gpu-01: no space left on /etc/gpufleet (needs 16 KiB")
