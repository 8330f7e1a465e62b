"""One settings resolver: a knob given on any channel reaches the rendered unit AND the deploy.

Channels: the inventory (fleet and host `settings:`), `gpufleet deploy --set`, and under
pyinfra's CLI the host's pyinfra data (`--data`, the GPUFLEET_SETTINGS file, group_data files).
For every knob that shapes a unit, each channel is checked end to end: the unit render made
names the value, and what the deploys read for the host (the pyinfra host data the runtime step
installs from) is the same value.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api import Config, Inventory, State
from pyinfra.context import ctx_host, ctx_state

from gpufleet import inventory
from gpufleet.commands.deploy import deploy_plan
from gpufleet.deploy import FleetDeploy, cli_target, host_targets, pyinfra_hosts
from gpufleet.deploys import wanted
from gpufleet.deploys.settings import settings_now
from gpufleet.deploys.target import HostTarget
from gpufleet.render import RenderedFile

FLEET = """\
fleet:
  name: knobs
  vllm_version: "0.19.1"
  runtime: venv
  model_cache: /var/lib/gpufleet/models
hosts:
  h1:
    address: h1.knobs.example
    gpu_count: 2
    services:
      - name: chat
        kind: llm
        model: Qwen/Qwen2.5-0.5B-Instruct
        gpus: [0]
        port: 8000
        gpu_memory_utilization: 0.5
        max_model_len: 4096
      - name: docs
        kind: docling
        gpus: [1]
        port: 8100
        memory_gib: 4
"""

# knob -> (a value other than the default, the unit line that must carry it)
KNOBS: dict[str, tuple[Any, Callable[[Any], tuple[str, str]]]] = {
    "gpufleet_venv_dir": ("/srv/vllm-venv",
                          lambda v: ("chat", f"ExecStart={v}/bin/vllm")),
    "gpufleet_docling_venv_dir": ("/srv/docling-venv",
                                  lambda v: ("docs", f"ExecStart={v}/bin/docling-serve")),
    "gpufleet_service_user": ("inference", lambda v: ("chat", f"User={v}")),
    "gpufleet_gpu_groups": (["render", "gpuusers"],
                            lambda v: ("chat", f"SupplementaryGroups={' '.join(v)}")),
    "gpufleet_unit_read_write_paths": (["/srv/scratch"], lambda v: ("chat", "/srv/scratch")),
}


def write_fleet(tmp_path: Path, fleet_settings: dict[str, Any] | None = None,
                host_settings: dict[str, Any] | None = None) -> Path:
    doc = yaml.safe_load(FLEET)
    if fleet_settings:
        doc["fleet"]["settings"] = fleet_settings
    if host_settings:
        doc["hosts"]["h1"]["settings"] = host_settings
    path = tmp_path / "knobs.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def unit(files: tuple[RenderedFile, ...] | list[RenderedFile], service: str) -> str:
    return next(f.content for f in files if f.path.endswith(f"/gpufleet-{service}.service"))


def gpufleet_channel(path: Path, sets: list[str]) -> tuple[HostTarget, dict[str, Any]]:
    """`gpufleet deploy [--set ...]`: the command's plan, its targets, the pyinfra host data."""
    plan = deploy_plan(str(path), None, sets)
    target = host_targets(plan)[0]
    return target, FleetDeploy([target]).settings_of(target.name)


def pyinfra_channel(path: Path, override: dict[str, Any] | None = None,
                    group: dict[str, Any] | None = None) -> tuple[HostTarget, dict[str, Any]]:
    """`pyinfra inventories/<fleet>.py deploys/site.py [--data k=v]`, with group data."""
    rows = pyinfra_hosts(path)
    groups = {"gpu_hosts": ([name for name, _ in rows], group)} if group else {}
    state = State(Inventory((rows, {}), override_data=override, **groups), Config())
    host = state.inventory.get_host("h1")
    with ctx_state.use(state), ctx_host.use(host):
        return cli_target(), settings_now()


def yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


CHANNELS = ["fleet settings", "host settings", "--set", "pyinfra --data", "GPUFLEET_SETTINGS",
            "pyinfra group data"]


def through(channel: str, knob: str, value: Any, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> tuple[HostTarget, dict[str, Any]]:
    if channel == "fleet settings":
        return gpufleet_channel(write_fleet(tmp_path, fleet_settings={knob: value}), [])
    if channel == "host settings":
        return gpufleet_channel(write_fleet(tmp_path, host_settings={knob: value}), [])
    if channel == "--set":
        return gpufleet_channel(write_fleet(tmp_path), [f"{knob}={yaml_value(value)}"])
    if channel == "pyinfra --data":
        return pyinfra_channel(write_fleet(tmp_path), override={knob: value})
    if channel == "GPUFLEET_SETTINGS":
        settings = tmp_path / "settings.yml"
        settings.write_text(yaml.safe_dump({knob: value}))
        monkeypatch.setenv("GPUFLEET_SETTINGS", str(settings))
        return pyinfra_channel(write_fleet(tmp_path))
    assert channel == "pyinfra group data"
    return pyinfra_channel(write_fleet(tmp_path), group={knob: value})


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("knob", list(KNOBS))
def test_a_knob_on_any_channel_reaches_the_unit_and_the_deploy(
        knob: str, channel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    value, line = KNOBS[knob]
    target, deploy_settings = through(channel, knob, value, tmp_path, monkeypatch)
    service, text = line(value)
    assert text in unit(target.files, service), f"{knob} via {channel} is not in the unit"
    assert deploy_settings[knob] == value, f"{knob} via {channel} does not reach the deploy"
    assert target.settings[knob] == value


@pytest.mark.parametrize("channel", CHANNELS)
def test_the_runtime_step_installs_where_the_units_run(
        channel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The original bug: `--set gpufleet_venv_dir=...` installed vLLM in one place while the
    unit ran it from another."""
    target, deploy_settings = through(channel, "gpufleet_venv_dir", "/srv/vllm-venv", tmp_path,
                                      monkeypatch)
    installs = [v.path for v in wanted.runtime(target, deploy_settings).venvs]
    runs = unit(target.files, "chat").split("ExecStart=", 1)[1].split("/bin/vllm", 1)[0]
    assert runs in installs and runs == "/srv/vllm-venv"


def test_precedence_is_one_order_everywhere(tmp_path: Path) -> None:
    """defaults < fleet settings < host settings < --set, for render and deploy alike."""
    path = write_fleet(tmp_path, fleet_settings={"gpufleet_venv_dir": "/srv/fleet"},
                       host_settings={"gpufleet_venv_dir": "/srv/host"})
    target, seen = gpufleet_channel(path, [])
    assert "ExecStart=/srv/host/bin/vllm" in unit(target.files, "chat")
    assert seen["gpufleet_venv_dir"] == "/srv/host"
    target, seen = gpufleet_channel(path, ["gpufleet_venv_dir=/srv/set"])
    assert "ExecStart=/srv/set/bin/vllm" in unit(target.files, "chat")
    assert seen["gpufleet_venv_dir"] == "/srv/set"


def test_a_bad_value_on_a_pyinfra_channel_is_refused_with_its_name(tmp_path: Path) -> None:
    from pyinfra.api.exceptions import DeployError

    with pytest.raises(DeployError, match="gpufleet_venv_dir"):
        pyinfra_channel(write_fleet(tmp_path), override={"gpufleet_venv_dir": "relative/path"})


def test_the_inventory_without_overrides_is_unchanged(tmp_path: Path) -> None:
    inv = inventory.load(write_fleet(tmp_path))
    assert inv.overrides == {}
    assert inv.with_overrides({"gpufleet_venv_dir": "/x"}).overrides == {"gpufleet_venv_dir": "/x"}
    assert inv.overrides == {}  # with_overrides makes a new inventory
