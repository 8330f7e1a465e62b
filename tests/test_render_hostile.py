"""Hostile values on their way into unit files, env files and the --out folder.

Each finding of the hostile-input review, reproduced as input. Two layers answer it: the
inventory's schema refuses most values at load (InputError, exit 2), and render checks again
(defence in depth), so the same values handed to render past the schema (objects built without
validation) are refused there too. Values both accept must render so that systemd reads back
exactly what the plan meant (gpufleet.systemd's reader).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import INVENTORIES, REPO

from gpufleet import inventory
from gpufleet.commands.render import destinations
from gpufleet.errors import ExitStatus, InputError
from gpufleet.inventory import Inventory
from gpufleet.plan import Plan, build_plan
from gpufleet.render import (
    RenderedFile,
    env_file_path,
    exec_start_argv,
    launch,
    render_host,
    render_plan,
    unit_name,
)
from gpufleet.systemd import read_env_file, read_exec, read_unit, read_words, resolve_specifiers

FIXTURES = REPO / "tests" / "fixtures" / "render"
Data = dict[str, Any]


# ---------------------------------------------------------------- helpers (also for the
# property test)


def fixture_data(runtime: str) -> Data:
    return yaml.safe_load((FIXTURES / f"{runtime}.yml").read_text())


def dump(data: Data) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def service_of(data: Data, name: str, host: str = "h1") -> Data:
    return next(s for s in data["hosts"][host]["services"] if s["name"] == name)


def render_text(text: str, secrets: dict[str, str] | None = None) -> dict[str, list[RenderedFile]]:
    """load -> plan -> render of every host: the tool's whole path for an inventory text."""
    plan = build_plan(inventory.loads(text, "fleet.yml"))
    return {h.name: render_host(plan, h.name, secrets) for h in plan.hosts}


def parsed_unit(text: str) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values, as systemd reads them."""
    found: dict[tuple[str, str], list[str]] = {}
    for d in read_unit(text):
        found.setdefault((d.section, d.key), []).append(d.value)
    return found


def exec_argv(value: str) -> tuple[str, ...]:
    (command,) = read_exec(value)
    return command.argv


def check_units_mean_the_plan(plan: Plan, host: str, files: list[RenderedFile]) -> None:
    """Every ExecStart= reads back as the plan's argv, with no Exec prefix; every env file
    reads back as the service's env: and secret markers; nothing else runs before it."""
    inv, by_path = plan.inventory, {f.path: f for f in files}
    for ps in plan.host(host).services:
        unit = parsed_unit(by_path[f"/etc/systemd/system/{unit_name(ps.name)}"].content)
        (start,) = unit[("Service", "ExecStart")]
        (command,) = read_exec(start)
        assert command.prefixes == ""
        assert command.argv == exec_start_argv(inv, host, ps)
        run = launch(inv, host, ps)
        if run.image is None:
            assert command.argv == (run.program, *run.args)
        else:
            assert command.argv[-len(run.args) - 2:] == (f"--entrypoint={run.program}", run.image,
                                                         *run.args)
        for key in ("ExecStartPre", "ExecStop"):
            for value in unit.get(("Service", key), []):
                assert read_exec(value)[0].path == "/usr/bin/" + inv.fleet.container_engine
        literal = inv.fleet.runtime != "venv"
        env = read_env_file(by_path[env_file_path(ps.name)].content, literal=literal)
        assert env == {**ps.service.env,
                       **{k: f"<secret:{v}>" for k, v in ps.service.secrets.items()}}


def refused(action: Callable[[], object], *words: str) -> InputError:
    with pytest.raises(InputError) as info:
        action()
    assert info.value.exit_status == ExitStatus.BAD_INPUT
    for word in words:
        assert word in str(info.value)
    return info.value


# Past the schema: the same values as objects nobody validated (defence in depth).


def past_schema(inv: Inventory, *, fleet: Data | None = None, settings: Data | None = None,
                host_name: str | None = None, service: tuple[str, Data] | None = None
                ) -> Inventory:
    model = inv.model
    new_fleet = model.fleet.model_copy(update={
        **(fleet or {}), "settings": {**model.fleet.settings, **(settings or {})}})
    hosts = {}
    for name, host in model.hosts.items():
        services = [s.model_copy(update=service[1]) if service and s.name == service[0] else s
                    for s in host.services]
        renamed = name if host_name is None else host_name
        hosts[renamed] = host.model_copy(update={"services": services})
    return Inventory(model.model_copy(update={"fleet": new_fleet, "hosts": hosts}), inv.source)


def clean(runtime: str = "venv") -> Inventory:
    return inventory.loads(dump(fixture_data(runtime)), "fleet.yml")


def render_past_schema(inv: Inventory) -> dict[str, list[RenderedFile]]:
    return render_plan(build_plan(inv))


# ---------------------------------------------------------------- the findings


NEWLINE_USER = "gpufleet\nExecStartPre=+/bin/sh -c 'id > /tmp/pwned'"


@pytest.mark.parametrize("user", [NEWLINE_USER, "", "Gpufleet", "a b", "root\r", "x%n", "-x"])
def test_service_user_must_be_a_user_name(user: str):
    """A newline in gpufleet_service_user started a directive (ExecStartPre=+ runs as root);
    an empty one rendered `User=` (the service ran as root)."""
    data = fixture_data("venv")
    data["fleet"]["settings"] = {"gpufleet_service_user": user}
    refused(lambda: render_text(dump(data)), "gpufleet_service_user")
    refused(lambda: render_past_schema(past_schema(clean(), settings={
        "gpufleet_service_user": user})), "gpufleet_service_user")


@pytest.mark.parametrize("groups", [[], [""], ["render video"], ["video\nUser=root"], "video"])
def test_gpu_groups_must_be_group_names(groups: Any):
    refused(lambda: render_past_schema(past_schema(clean(), settings={
        "gpufleet_gpu_groups": groups})), "gpufleet_gpu_groups")


@pytest.mark.parametrize("end", ["\n", "\r", "\0"])
@pytest.mark.parametrize("field", ["extra_args", "command", "env"])
def test_line_ends_in_exec_words_and_env_values_are_refused(end: str, field: str):
    """`\\n`, `\\r` or NUL inside an Exec argument ended the line (or cut an env file short)."""
    hostile = f"x{end}ExecStartPre=/bin/sh"
    updates: Data = {"extra_args": ["--label", hostile],
                     "command": ["/usr/local/bin/tool-server", hostile],
                     "env": {"TOOL_GREETING": hostile}}
    data = fixture_data("venv")
    service_of(data, "tool")[field] = updates[field]
    refused(lambda: render_text(dump(data)))
    for runtime in ("venv", "container"):
        inv = past_schema(clean(runtime), service=("tool", {field: updates[field]}))
        refused(lambda inv=inv: render_past_schema(inv), "tool")


@pytest.mark.parametrize("program", ["+/bin/sh", "-/bin/sh", "@/bin/sh", "!/bin/sh", ":/bin/sh",
                                     "!!/bin/sh", "|/bin/sh", "bin/sh", "/bin/../sh", "/bin/s\"h"])
def test_a_program_with_an_exec_prefix_is_refused(program: str):
    """`+/bin/sh` as a custom command's program ran it with full privileges (no User=)."""
    data = fixture_data("venv")
    service_of(data, "tool")["command"] = [program, "-c", "id"]
    refused(lambda: render_text(dump(data)), "command")
    inv = past_schema(clean(), service=("tool", {"command": [program, "-c", "id"]}))
    refused(lambda: render_past_schema(inv), "command")


def test_in_a_container_the_program_is_only_the_entrypoint_argument():
    data = fixture_data("container")
    service_of(data, "tool")["command"] = ["+/bin/sh", "-c", "echo %n $HOME"]
    plan = build_plan(inventory.loads(dump(data), "fleet.yml"))
    files = render_host(plan, "h1")
    check_units_mean_the_plan(plan, "h1", files)
    tool = parsed_unit(next(f.content for f in files if f.path.endswith("gpufleet-tool.service")))
    (command,) = read_exec(tool[("Service", "ExecStart")][0])
    assert (command.prefixes, command.path) == ("", "/usr/bin/docker")
    assert command.argv[-4:] == ("--entrypoint=+/bin/sh", "registry.example/tool:1.2", "-c",
                                 "echo %n $HOME")


def test_specifiers_dollars_quotes_and_backslashes_reach_the_program_as_written():
    words = ["/usr/local/bin/tool-server", "%n", "%%", "$HOME", "${HOME}", "$$", 'a"b', "it's",
             "x\\y", ";", "\\;", "#x", "[Service]", "ExecStartPre=/bin/sh", "é😀", " ", ""]
    for runtime in ("venv", "container"):
        data = fixture_data(runtime)
        service_of(data, "tool")["command"] = words
        service_of(data, "tool")["env"] = {"TOOL_GREETING": "it's \"$x\" \\ %n `id` #"}
        plan = build_plan(inventory.loads(dump(data), "fleet.yml"))
        files = render_host(plan, "h1")
        check_units_mean_the_plan(plan, "h1", files)
        tool = parsed_unit(next(f.content for f in files
                                if f.path.endswith("gpufleet-tool.service")))
        argv = exec_argv(tool[("Service", "ExecStart")][0])
        if runtime == "container":
            assert argv[argv.index("--entrypoint=" + words[0]) + 2:] == tuple(words[1:])
        else:
            assert argv == tuple(words)


@pytest.mark.parametrize("host", ["h1\nConflicts=ssh.service sshd.service", "../../x", "/tmp/x",
                                  "a/b", "h1 x", "h1%n", "", ".", "h1\\"])
def test_host_names_are_refused_unless_plain(host: str):
    """A host name with a newline put `Conflicts=ssh.service sshd.service` into gpufleet.target
    (and was unquoted in Description= and comments); a path wrote outside --out."""
    data = fixture_data("venv")
    data["hosts"] = {host: data["hosts"]["h1"]}
    refused(lambda: render_text(dump(data)))
    refused(lambda: render_past_schema(past_schema(clean(), host_name=host)), "host")


def test_the_target_of_a_plain_host_has_only_its_own_directives():
    files = render_text(dump(fixture_data("venv")))["h1"]
    target = next(f.content for f in files if f.path.endswith("gpufleet.target"))
    keys = {(d.section, d.key) for d in read_unit(target)}
    assert keys == {("Unit", "Description"), ("Unit", "Wants"), ("Install", "WantedBy")}


@pytest.mark.parametrize("model", ["Qwen/Qwen2.5-7B-Instruct\nExecStartPre=/bin/sh",
                                   "Qwen/Qwen\r2.5", "Qwen/Qwen%n", "Qwen/x\\", "Qwen/\tx"])
def test_model_ids_in_description_are_refused_or_escaped(model: str):
    data = fixture_data("venv")
    service_of(data, "chat")["model"] = model
    refused(lambda: render_text(dump(data)))
    # Past the schema and the planner: the plan's own service carries the hostile id.
    plan = build_plan(clean())
    host = plan.host("h1")
    index = [s.name for s in host.services].index("chat")
    chat = host.services[index]
    host.services[index] = dataclasses.replace(
        chat, service=chat.service.model_copy(update={"model": model}))
    if "%" in model:  # systemd would read `%n` as the unit's name: it must arrive doubled
        files = {f.path: f for f in render_host(plan, "h1")}
        unit = parsed_unit(files["/etc/systemd/system/gpufleet-chat.service"].content)
        (description,) = unit[("Unit", "Description")]
        assert model in resolve_specifiers(description)
    else:
        refused(lambda: render_host(plan, "h1"), "model")


@pytest.mark.parametrize("name", ["snap\nExecStartPre=/bin/sh", "snap%n", "Snap", "s/n"])
def test_fleet_names_are_refused_unless_plain(name: str):
    data = fixture_data("venv")
    data["fleet"]["name"] = name
    refused(lambda: render_text(dump(data)))
    refused(lambda: render_past_schema(past_schema(clean(), fleet={"name": name})), "fleet")


@pytest.mark.parametrize("key", ["BAD NAME", "BAD-NAME", "1X", "X\nY", "X=Y"])
def test_secret_and_env_names_must_be_posix_names(key: str):
    for field in ("secrets", "env"):
        data = fixture_data("venv")
        service_of(data, "tool")[field] = {key: "hf_token" if field == "secrets" else "v"}
        refused(lambda data=data: render_text(dump(data)))
        update = {field: {key: "hf_token" if field == "secrets" else "v"}}
        inv = past_schema(clean(), service=("tool", update))
        refused(lambda inv=inv: render_past_schema(inv), key.split("\n")[0])


@pytest.mark.parametrize("value", ["hf_abc\0rest", "hf_abc\nEVIL=1", "hf_abc\rEVIL=1"])
@pytest.mark.parametrize("runtime", ["venv", "container"])
def test_a_secret_value_that_would_cut_or_extend_the_env_file_is_refused(value: str,
                                                                         runtime: str):
    """A NUL cut the env file short (the variables after it were lost); the message names the
    secret, never its value."""
    plan = build_plan(clean(runtime))
    error = refused(lambda: render_host(plan, "h1", {"hf_token": value, "api_key": "k"}),
                    "hf_token")
    assert "hf_abc" not in str(error) and "rest" not in str(error)


@pytest.mark.parametrize("runtime", ["venv", "container"])
def test_secret_values_read_back_exactly(runtime: str):
    secrets = {"hf_token": "hf_'quoted' \"and\" $dollar \\ %n #", "api_key": " spaced "}
    files = {f.path: f for f in render_host(build_plan(clean(runtime)), "h1", secrets)}
    env = read_env_file(files["/etc/gpufleet/chat.env"].content, literal=runtime != "venv")
    assert env == {"HF_TOKEN": secrets["hf_token"], "VLLM_API_KEY": " spaced ",
                   "VLLM_ROCM_USE_AITER": "1"}


@pytest.mark.parametrize("paths", [["/run/a b"], ["/run/../etc"], ["run"], ["/run/%n"],
                                   ["/run/x\n"], "/run", [""], ["//run"]])
def test_read_write_paths_must_be_plain_absolute_paths(paths: Any):
    refused(lambda: render_past_schema(past_schema(clean(), settings={
        "gpufleet_unit_read_write_paths": paths})), "gpufleet_unit_read_write_paths")


def test_read_write_paths_read_back_as_listed():
    inv = past_schema(clean(), settings={"gpufleet_unit_read_write_paths": ["/run/fakegpu",
                                                                            "/srv/a_b-c.d"]})
    files = {f.path: f for f in render_past_schema(inv)["h1"]}
    unit = parsed_unit(files["/etc/systemd/system/gpufleet-chat.service"].content)
    (paths,) = unit[("Service", "ReadWritePaths")]
    assert read_words(paths) == ["/var/lib/gpufleet/models", "/run/fakegpu", "/srv/a_b-c.d"]


@pytest.mark.parametrize("update", [
    {"fleet": {"model_cache": "/var/lib/%n"}}, {"fleet": {"model_cache": "/var/../etc"}},
    {"settings": {"gpufleet_venv_dir": "/opt/x y"}}, {"settings": {"gpufleet_venv_dir": "opt"}},
    {"service": ("docs", {"health_path": "/h'; reboot"})},
    {"service": ("docs", {"health_path": "/h\nExecStartPre=/bin/sh"})},
    {"service": ("docs", {"port": 0})}, {"service": ("docs", {"port": True})},
])
def test_paths_and_the_health_url_are_checked_before_they_reach_a_unit(update: Data):
    refused(lambda: render_past_schema(past_schema(clean(), **update)))


def test_an_ipv6_health_url_is_quoted_for_the_shell():
    data = fixture_data("venv")
    data["fleet"]["bind"] = "::"
    plan = build_plan(inventory.loads(dump(data), "fleet.yml"))
    files = {f.path: f for f in render_host(plan, "h1")}
    unit = parsed_unit(files["/etc/systemd/system/gpufleet-embed.service"].content)
    (post,) = unit[("Service", "ExecStartPost")]
    assert exec_argv(post)[:2] == ("/bin/sh", "-c")
    assert '"http://[::1]:8010/health")" = 200 ]' in exec_argv(post)[2]


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), 0.0, -1.0])
def test_the_start_timeout_is_a_finite_positive_number(seconds: float):
    inv = clean()
    rollout = inv.fleet.rollout.model_copy(update={"health_timeout_s": seconds})
    refused(lambda: render_past_schema(past_schema(inv, fleet={"rollout": rollout})),
            "health_timeout_s")


def test_a_fractional_start_timeout_rounds_up_not_to_no_timeout():
    data = fixture_data("venv")
    data["fleet"]["rollout"] = {"health_timeout_s": 0.4}
    files = render_text(dump(data))["h1"]
    unit = parsed_unit(next(f.content for f in files if f.path.endswith("gpufleet-chat.service")))
    assert unit[("Service", "TimeoutStartSec")] == ["1"]  # 0 would mean: never time out


@pytest.mark.parametrize("runtime", ["venv", "container"])
def test_the_bundled_units_read_back_as_the_plan(runtime: str):
    text = (INVENTORIES / "berget.yml").read_text().replace("runtime: container",
                                                            f"runtime: {runtime}")
    plan = build_plan(inventory.loads(text, "berget.yml"))
    for host in plan.hosts:
        check_units_mean_the_plan(plan, host.name, render_host(plan, host.name))


# ---------------------------------------------------------------- `gpufleet render --out`


@pytest.mark.parametrize("host", ["../../x", "/tmp/abs", "a/b", ".", "..", "", "x\0y"])
def test_destinations_outside_the_host_folder_are_refused(tmp_path: Path, host: str):
    files = render_text(dump(fixture_data("venv")))["h1"]
    refused(lambda: destinations(tmp_path / "out", {"h1": files, host: files}))
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("path", ["etc/x", "/etc/../../../x", "/etc//x", "/etc/./x"])
def test_file_paths_must_be_plain_absolute_paths(tmp_path: Path, path: str):
    refused(lambda: destinations(tmp_path, {"h1": [RenderedFile(path, "x")]}))


def test_a_symlink_in_out_pointing_elsewhere_is_refused(tmp_path: Path):
    (tmp_path / "out/h1/etc").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "out/h1/etc/systemd")
    files = render_text(dump(fixture_data("venv")))["h1"]
    refused(lambda: destinations(tmp_path / "out", {"h1": files}), "outside")


def test_cli_refuses_a_host_name_that_is_a_path_and_writes_nothing(cli, tmp_path: Path):
    data = fixture_data("venv")
    data["hosts"] = {"../../escaped": data["hosts"]["h1"]}
    bad = tmp_path / "in" / "bad.yml"
    bad.parent.mkdir()
    bad.write_text(dump(data))
    out = tmp_path / "a" / "b" / "out"
    result = cli("render", str(bad), "--out", str(out))
    assert result.exit_status == ExitStatus.BAD_INPUT
    assert not (tmp_path / "a").exists() and not list(tmp_path.rglob("*.service"))


def test_cli_checks_every_destination_before_writing_any(cli, tmp_path: Path, monkeypatch):
    files = render_text(dump(fixture_data("venv")))["h1"]
    monkeypatch.setattr("gpufleet.commands.render.render_plan",
                        lambda plan: {"h1": files, "../../escaped": files})
    result = cli("render", str(FIXTURES / "venv.yml"), "--out", str(tmp_path / "out"))
    assert result.exit_status == ExitStatus.BAD_INPUT
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped").exists()


def test_cli_removes_the_units_of_services_no_longer_planned(cli, tmp_path: Path):
    full = tmp_path / "full.yml"
    full.write_text(dump(fixture_data("venv")))
    out = tmp_path / "out"
    assert cli("render", str(full), "--out", str(out)).exit_status == ExitStatus.OK
    units = out / "h1/etc/systemd/system"
    (units / "other.service").write_text("not ours\n")  # not a gpufleet name: kept
    (units / "gpufleet-NOT-OURS.service").write_text("x\n")  # not a name render writes: kept
    data = fixture_data("venv")
    data["hosts"]["h1"]["services"] = [s for s in data["hosts"]["h1"]["services"]
                                       if s["name"] != "tool"]
    fewer = tmp_path / "fewer.yml"
    fewer.write_text(dump(data))
    result = cli("render", str(fewer), "--out", str(out))
    assert result.exit_status == ExitStatus.OK, result.stderr
    assert not (units / "gpufleet-tool.service").exists()
    assert not (out / "h1/etc/gpufleet/tool.env").exists()
    assert (units / "gpufleet-chat.service").exists() and (units / "other.service").exists()
    assert (units / "gpufleet-NOT-OURS.service").exists()
    assert "removed etc/systemd/system/gpufleet-tool.service" in result.stdout
    assert "removed etc/gpufleet/tool.env" in result.stdout
    target = (units / "gpufleet.target").read_text()
    assert "gpufleet-tool.service" not in target


def test_cli_never_writes_through_a_symlink(cli, tmp_path: Path):
    out = tmp_path / "out"
    env = out / "h1/etc/gpufleet/chat.env"
    env.parent.mkdir(parents=True)
    os.symlink(tmp_path / "target", env)  # would put the env file outside --out
    result = cli("render", str(FIXTURES / "venv.yml"), "--out", str(out))
    assert result.exit_status == ExitStatus.BAD_INPUT
    assert not (tmp_path / "target").exists() and not list(out.rglob("*.service"))


def test_cli_writes_env_files_private_from_the_first_byte(cli, tmp_path: Path):
    out = tmp_path / "out"
    assert cli("render", str(FIXTURES / "venv.yml"), "--out", str(out)).exit_status == 0
    for env in (out / "h1/etc/gpufleet").glob("*.env"):
        assert env.stat().st_mode & 0o777 == 0o600
    (out / "h1/etc/gpufleet/chat.env").chmod(0o644)  # a re-render puts the mode back
    assert cli("render", str(FIXTURES / "venv.yml"), "--out", str(out)).exit_status == 0
    assert (out / "h1/etc/gpufleet/chat.env").stat().st_mode & 0o777 == 0o600
