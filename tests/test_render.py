"""Render: plan -> units, env files, target and plan.json; `gpufleet render`; secret resolution.

Snapshots live in tests/snapshots/render/<runtime>/<path on the host>; regenerate them with
GPUFLEET_UPDATE_SNAPSHOTS=1 and review the diff. plan.json is checked by structure instead:
its memory numbers belong to the memory model and change with it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from support import INVENTORIES, REPO

from gpufleet import inventory
from gpufleet.errors import ExitStatus, InputError
from gpufleet.plan import Plan, build_plan
from gpufleet.render import (
    RenderedFile,
    exec_lines,
    exec_quote,
    render_host,
    render_plan,
    unit_name,
)
from gpufleet.secrets import resolve_secrets

FIXTURES = REPO / "tests" / "fixtures" / "render"
SNAPSHOTS = REPO / "tests" / "snapshots" / "render"
RUNTIMES = ["container", "venv"]
SECRETS = {"hf_token": "hf_SECRET_TOKEN_123", "api_key": "sk-SECRET-KEY-456"}
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
SYSTEMD_UNITS = Path("/usr/lib/systemd/system")


def fixture_text(runtime: str) -> str:
    """container.yml or venv.yml; "podman" is container.yml with the other engine."""
    if runtime == "podman":
        return fixture_text("container").replace("engine: docker", "engine: podman")
    return (FIXTURES / f"{runtime}.yml").read_text()


def plan_of(text: str) -> Plan:
    return build_plan(inventory.loads(text, "fleet.yml"))


def rendered(runtime: str, secrets: dict[str, str] | None = None) -> dict[str, RenderedFile]:
    return {f.path: f for f in render_host(plan_of(fixture_text(runtime)), "h1", secrets)}


def units(files: dict[str, RenderedFile]) -> dict[str, str]:
    return {p: f.content for p, f in files.items() if p.endswith(".service")}


def unit_of(files: dict[str, RenderedFile], service: str) -> str:
    return files[f"/etc/systemd/system/{unit_name(service)}"].content


def directives(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


# ---------------------------------------------------------------- snapshots


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_files_match_snapshots(runtime: str):
    files = {p: f.content for p, f in rendered(runtime).items() if not p.endswith("plan.json")}
    root = SNAPSHOTS / runtime
    if os.environ.get("GPUFLEET_UPDATE_SNAPSHOTS") == "1":
        shutil.rmtree(root, ignore_errors=True)
        for path, content in files.items():
            (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / path.lstrip("/")).write_text(content)
    stored = {"/" + str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}
    assert sorted(files) == sorted(stored), "files added or removed: GPUFLEET_UPDATE_SNAPSHOTS=1"
    for path, content in files.items():
        assert content == stored[path], f"{path} differs from its snapshot"


def test_snapshots_cover_every_kind():
    services = inventory.loads(fixture_text("venv"), "f.yml").hosts["h1"].services
    kinds = {s.kind.value for s in services}
    assert kinds == {"llm", "embed", "rerank", "whisper", "docling", "custom"}


# ---------------------------------------------------------------- systemd accepts the units


def verify_units(root: Path, files: list[RenderedFile]) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` in a scratch root holding the units, stub programs and the
    distribution's own units (sysinit.target & co.); any output at all counts as a failure."""
    shutil.copytree(SYSTEMD_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/docker.service").write_text(
        "[Unit]\nDescription=stub\n[Service]\nExecStart=/usr/bin/docker\n")
    for f in files:
        (root / f.path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / f.path.lstrip("/")).write_text(f.content)
        for program in exec_programs(f.content):
            stub(root / program.lstrip("/"))
    names = [f.path for f in files if f.path.startswith("/etc/systemd/system/")]
    return subprocess.run([SYSTEMD_ANALYZE or "systemd-analyze", "verify", "--man=no",
                           f"--root={root}", *names], capture_output=True, text=True, timeout=120)


def exec_programs(unit: str) -> set[str]:
    joined = unit.replace("\\\n", " ")
    found = re.findall(r"^Exec\w+=[-@:+!]*(\S+)", joined, flags=re.M)
    return {"/usr/bin/docker", *found}


def stub(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None or not SYSTEMD_UNITS.is_dir(), reason="needs systemd-analyze"
)


@needs_systemd
@pytest.mark.parametrize("runtime", [*RUNTIMES, "podman"])
def test_units_pass_systemd_analyze_verify(runtime: str, tmp_path: Path):
    files = [f for f in rendered(runtime).values() if f.path.startswith("/etc/systemd/")]
    result = verify_units(tmp_path, files)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr


@needs_systemd
def test_berget_units_pass_systemd_analyze_verify(tmp_path: Path):
    files = render_host(build_plan(inventory.load(INVENTORIES / "berget.yml")), "gpu-01")
    result = verify_units(tmp_path, [f for f in files if f.path.startswith("/etc/systemd/")])
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr


@needs_systemd
def test_verify_catches_a_broken_unit(tmp_path: Path):
    good = rendered("venv")["/etc/systemd/system/gpufleet-chat.service"]
    broken = RenderedFile(good.path, good.content.replace("Restart=", "Restartt="))
    result = verify_units(tmp_path, [broken])
    assert "Unknown key" in result.stderr


# ---------------------------------------------------------------- start order


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_co_located_services_start_after_earlier_ones_without_requiring_them(runtime: str):
    files = rendered(runtime)
    after = {svc: directives(unit_of(files, svc), "After") for svc in
             ["chat", "asr", "embed", "rerank", "big", "docs", "tool"]}
    ours = {svc: [u for line in lines for u in line.split() if u.startswith("gpufleet-")]
            for svc, lines in after.items()}
    assert ours == {"chat": [], "asr": ["gpufleet-chat.service"], "embed": [],
                    "rerank": ["gpufleet-embed.service"], "big": [],
                    "docs": ["gpufleet-big.service"], "tool": ["gpufleet-big.service"]}
    for text in units(files).values():
        assert not any("gpufleet-" in v for key in ("Requires", "BindsTo", "Requisite")
                       for v in directives(text, key))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_unit_waits_until_its_health_url_answers(runtime: str):
    files = rendered(runtime)
    for svc, port, path in [("chat", 8000, "/health"), ("docs", 5001, "/health"),
                            ("tool", 9000, "/healthz")]:
        (post,) = directives(unit_of(files, svc), "ExecStartPost")
        assert f"http://127.0.0.1:{port}{path})\" = 200" in post
        assert "kill -0 $$MAINPID" in post  # gives up when the service itself died
    for text in units(files).values():  # the rollout's health gate (fleet.rollout default)
        assert directives(text, "TimeoutStartSec") == ["900"]


def test_target_wants_every_service_in_start_order():
    target = rendered("container")["/etc/systemd/system/gpufleet.target"].content
    order = ["chat", "asr", "embed", "rerank", "big", "docs", "tool"]
    assert directives(target, "Wants") == [unit_name(s) for s in order]
    assert directives(target, "WantedBy") == ["multi-user.target"]


# ---------------------------------------------------------------- GPUs and environment


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_hip_visible_devices_matches_the_plan_and_no_other_gpu_mask(runtime: str):
    plan = plan_of(fixture_text(runtime))
    files = {f.path: f for f in render_host(plan, "h1")}
    for ps in plan.host("h1").services:
        text = unit_of(files, ps.name)
        assert re.findall(r"HIP_VISIBLE_DEVICES=(\S+)", text) == [",".join(map(str, ps.gpus))]
    for f in files.values():
        assert "CUDA_VISIBLE_DEVICES" not in f.content and "ROCR_VISIBLE_DEVICES" not in f.content


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_unit_runs_exactly_the_planned_vllm_args(runtime: str):
    plan = plan_of(fixture_text(runtime))
    files = {f.path: f for f in render_host(plan, "h1")}
    for ps in plan.host("h1").services:
        if ps.vllm_args:
            exec_start = unit_of(files, ps.name).replace(" \\\n    ", " ")
            assert " ".join(exec_quote(a) for a in ps.vllm_args) in exec_start


def test_whisper_and_pooling_units_carry_the_plan_runner_flags():
    files = rendered("venv")
    assert "--runner pooling \\\n    --convert embed" in unit_of(files, "embed")
    assert "--runner pooling \\\n    --convert classify" in unit_of(files, "rerank")
    assert "serve KBLab/kb-whisper-large" in unit_of(files, "asr")


def test_venv_units_run_as_gpufleet_offline_and_sandboxed():
    files = rendered("venv")
    chat, docs = unit_of(files, "chat"), unit_of(files, "docs")
    assert directives(chat, "User") == ["gpufleet"]
    assert directives(chat, "SupplementaryGroups") == ["render video"]
    assert "HF_HUB_OFFLINE=1" in directives(chat, "Environment")
    assert directives(chat, "ExecStart")[0].startswith("/opt/gpufleet/venv/bin/vllm \\")
    assert directives(docs, "ExecStart")[0].startswith("/opt/gpufleet/docling/bin/docling-serve")
    assert "--port 5001" in docs
    assert directives(chat, "ReadWritePaths") == ["/var/lib/gpufleet/models"]


def test_container_units_use_the_documented_rocm_flags():
    text = unit_of(rendered("container"), "chat")
    for flag in ["--network=host", "--ipc=host", "--device=/dev/kfd", "--device=/dev/dri",
                 "--group-add=video", "--cap-add=SYS_PTRACE", "--security-opt seccomp=unconfined",
                 "--env-file=/etc/gpufleet/chat.env", "-e HF_HOME=/var/lib/gpufleet/models",
                 "-v /var/lib/gpufleet/models:/var/lib/gpufleet/models", "--pull=never",
                 "--entrypoint=vllm rocm/vllm:rocm6.4.1_vllm_0.11.0"]:
        assert flag in text
    assert directives(text, "ExecStop") == ["/usr/bin/docker stop --time=60 gpufleet-chat"]
    assert "EnvironmentFile" not in text  # the engine reads it, not systemd


def test_container_docling_and_custom_use_their_own_image_and_program():
    files = rendered("container")
    assert ("--entrypoint=docling-serve quay.io/docling-project/docling-serve-rocm:v1.0.0"
            in unit_of(files, "docs"))
    tool = unit_of(files, "tool")
    assert "--entrypoint=/usr/local/bin/tool-server registry.example/tool:1.2" in tool
    assert '--label "GPU 3 tool"' in tool


def test_podman_engine():
    chat = unit_of(rendered("podman"), "chat")
    assert directives(chat, "ExecStart")[0].startswith("/usr/bin/podman run")
    assert "docker" not in chat


def test_specifiers_and_dollars_are_escaped_in_unit_text():
    for runtime in RUNTIMES:
        for text in units(rendered(runtime)).values():
            assert not re.search(r"(?<!%)%(?!%)", text.replace("%%", ""))
            assert "$$(" in text and not re.search(r"(?<!\$)\$\(", text)


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_secrets_only_in_root_only_env_files(runtime: str):
    files = rendered(runtime, SECRETS)
    holders = {p for p, f in files.items() if any(v in f.content for v in SECRETS.values())}
    assert holders == {f"/etc/gpufleet/{s}.env" for s in ("chat", "asr", "big")}
    assert {p for p, f in files.items() if f.secret} == holders
    chat = files["/etc/gpufleet/chat.env"]
    assert (chat.mode, chat.owner, chat.group) == ("0600", "root", "root")
    assert "HF_TOKEN=hf_SECRET_TOKEN_123\nVLLM_API_KEY=sk-SECRET-KEY-456" in chat.content
    assert all(f.mode == "0600" for p, f in files.items() if p.endswith(".env"))


def test_without_secrets_the_env_file_holds_markers():
    env = rendered("container")["/etc/gpufleet/chat.env"].content
    assert "HF_TOKEN=<secret:hf_token>\nVLLM_API_KEY=<secret:api_key>\nVLLM_ROCM_USE_AITER=1" in env


def test_venv_env_file_quotes_what_systemd_would_unquote():
    env = rendered("venv")
    assert "HF_TOKEN='<secret:hf_token>'" in env["/etc/gpufleet/chat.env"].content
    assert "TOOL_GREETING='hello world'" in env["/etc/gpufleet/tool.env"].content


def test_a_missing_secret_value_is_an_input_error():
    with pytest.raises(InputError, match="api_key"):
        rendered("container", {"hf_token": "x"})


# ---------------------------------------------------------------- determinism and plan.json


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_rendering_is_deterministic(runtime: str):
    first = [(f.path, f.content.encode(), f.mode) for f in rendered(runtime).values()]
    second = [(f.path, f.content.encode(), f.mode) for f in rendered(runtime).values()]
    assert first == second


def test_plan_json_is_the_host_slice_of_the_plan():
    data = json.loads(rendered("container")["/etc/gpufleet/plan.json"].content)
    assert (data["name"], data["fleet"], data["runtime"], data["ok"]) == ("h1", "snap",
                                                                         "container", True)
    assert data["start_order"] == [["chat", "embed", "big"], ["asr", "rerank", "docs", "tool"]]
    big = next(s for s in data["services"] if s["name"] == "big")
    assert (big["gpus"], big["port"], big["unit"], big["hip_visible_devices"]) == (
        [2, 3], 8020, "gpufleet-big.service", "2,3")
    assert big["secret_env"] == ["HF_TOKEN"] and big["footprint_gib"] > 0
    assert [g["index"] for g in data["gpus"]] == [0, 1, 2, 3]


def test_render_plan_covers_every_host():
    plan = plan_of(fixture_text("container"))
    assert list(render_plan(plan)) == ["h1"]


# ---------------------------------------------------------------- what render refuses


def test_env_must_not_override_gpu_pinning():
    text = fixture_text("venv").replace('{VLLM_ROCM_USE_AITER: "1"}', '{CUDA_VISIBLE_DEVICES: "1"}')
    with pytest.raises(InputError, match="CUDA_VISIBLE_DEVICES") as info:
        render_host(plan_of(text), "h1")
    assert info.value.where and info.value.where.startswith("fleet.yml:")


def test_docling_in_a_container_needs_its_image():
    text = fixture_text("container").replace(
        "        image: quay.io/docling-project/docling-serve-rocm:v1.0.0\n", "")
    with pytest.raises(InputError, match="needs an image"):
        render_host(plan_of(text), "h1")


def test_health_path_must_be_a_plain_path():
    text = fixture_text("venv").replace("health_path: /healthz", "health_path: \"/h'; reboot\"")
    with pytest.raises(InputError, match="health_path"):
        render_host(plan_of(text), "h1")


def test_unknown_host_is_an_input_error():
    with pytest.raises(InputError, match="nope"):
        render_host(plan_of(fixture_text("venv")), "nope")


def test_exec_quoting():
    assert exec_quote("--port") == "--port"
    assert exec_quote("a b") == '"a b"'
    # A word with double quotes and no single quote goes in single quotes: no escapes needed.
    assert exec_quote('{"k": "v"}') == "'{\"k\": \"v\"}'"
    assert exec_quote("it's \"x\"") == '"it\'s \\"x\\""'
    assert exec_quote("50%") == "50%%" and exec_quote("$HOME") == '"$$HOME"'
    lines = exec_lines(("serve", "m", "--port", "1", "--x"))
    assert lines == "serve m \\\n    --port 1 \\\n    --x"


# ---------------------------------------------------------------- `gpufleet render`


@pytest.fixture
def render_cli(cli):
    return cli


def test_cli_writes_the_tree_for_berget(render_cli, tmp_path: Path):
    result = render_cli("render", str(INVENTORIES / "berget.yml"), "--out", str(tmp_path))
    assert result.exit_status == ExitStatus.OK, result.stderr
    host = tmp_path / "gpu-01"
    assert (host / "etc/systemd/system/gpufleet-llama-8b.service").is_file()
    assert (host / "etc/systemd/system/gpufleet.target").is_file()
    assert json.loads((host / "etc/gpufleet/plan.json").read_text())["name"] == "gpu-01"
    env = host / "etc/gpufleet/llama-8b.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert "HF_TOKEN=<secret:hf_token>" in env.read_text()
    assert "gpu-01: " in result.stdout and "/etc/gpufleet/llama-8b.env" in result.stdout


def test_cli_refuses_a_plan_with_errors_unless_forced(render_cli, tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text(fixture_text("container").replace("gpu_memory_utilization: 0.45",
                                                     "gpu_memory_utilization: 0.01"))
    refused = render_cli("render", str(bad), "--out", str(tmp_path / "out"))
    assert refused.exit_status == ExitStatus.FINDINGS
    assert "chat" in refused.stderr and not (tmp_path / "out").exists()
    forced = render_cli("render", str(bad), "--out", str(tmp_path / "out"), "--force")
    assert forced.exit_status == ExitStatus.OK
    assert (tmp_path / "out/h1/etc/systemd/system/gpufleet-chat.service").is_file()


def test_cli_host_filter_and_unknown_host(render_cli, tmp_path: Path):
    inv = str(FIXTURES / "venv.yml")
    assert render_cli("render", inv, "--out", str(tmp_path), "--host", "h1").exit_status == 0
    assert render_cli("render", inv, "--out", str(tmp_path), "--host", "x").exit_status == 2


# ---------------------------------------------------------------- resolve_secrets


def secret_fleet(tmp_path: Path, mode: int = 0o600) -> inventory.Fleet:
    key = tmp_path / "api_key"
    key.write_text("sk-from-file\n")
    key.chmod(mode)
    text = fixture_text("venv").replace("~/.config/gpufleet/api_key", str(key))
    return inventory.loads(text, "f.yml").fleet


def test_resolve_secrets_reads_env_and_file(tmp_path: Path):
    values = resolve_secrets(secret_fleet(tmp_path), {"HF_TOKEN": "hf_x"})
    assert values == {"api_key": "sk-from-file", "hf_token": "hf_x"}


def test_resolve_secrets_expands_home(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".config/gpufleet").mkdir(parents=True)
    (tmp_path / ".config/gpufleet/api_key").write_text("k")
    (tmp_path / ".config/gpufleet/api_key").chmod(0o600)
    fleet = inventory.loads(fixture_text("venv"), "f.yml").fleet
    assert resolve_secrets(fleet, {"HF_TOKEN": "t"})["api_key"] == "k"


def test_resolve_secrets_names_every_missing_source(tmp_path: Path):
    fleet = secret_fleet(tmp_path)
    (tmp_path / "api_key").unlink()
    with pytest.raises(InputError) as info:
        resolve_secrets(fleet, {})
    message = str(info.value)
    assert "HF_TOKEN is not set" in message and "does not exist" in message
    assert info.value.exit_status == ExitStatus.BAD_INPUT


def test_resolve_secrets_refuses_a_world_readable_file(tmp_path: Path):
    with pytest.raises(InputError, match="readable by every user") as info:
        resolve_secrets(secret_fleet(tmp_path, 0o644), {"HF_TOKEN": "t"})
    assert "chmod 600" in str(info.value)


def test_resolve_secrets_refuses_empty_and_multiline_values(tmp_path: Path):
    fleet = secret_fleet(tmp_path)
    with pytest.raises(InputError, match="empty"):
        resolve_secrets(fleet, {"HF_TOKEN": ""})
    with pytest.raises(InputError, match="several lines"):
        resolve_secrets(fleet, {"HF_TOKEN": "a\nb"})


# ---------------------------------------------------------------- re-rendering into a folder


def retire_copy(out: Path, name: str, fleet: str = "snap") -> Path:
    """A folder as an earlier render wrote it for host `name` of `fleet` (a copy of h1's)."""
    folder = out / name
    shutil.copytree(out / "h1", folder)
    plan = folder / "etc/gpufleet/plan.json"
    plan.write_text(json.dumps({**json.loads(plan.read_text()), "name": name, "fleet": fleet}))
    return folder


def test_cli_removes_the_files_of_a_host_no_longer_in_the_inventory(render_cli, tmp_path: Path):
    inv, out = str(FIXTURES / "venv.yml"), tmp_path / "out"
    assert render_cli("render", inv, "--out", str(out)).exit_status == ExitStatus.OK
    gone = retire_copy(out, "h9")
    (gone / "etc/gpufleet/notes.txt").write_text("mine\n")  # not a gpufleet name: kept
    other_fleet = retire_copy(out, "h8", fleet="another")  # not this fleet's render: untouched
    not_rendered = out / "h7/etc/systemd/system"
    not_rendered.mkdir(parents=True)
    (not_rendered / "gpufleet-chat.service").write_text("x\n")  # no plan.json: not ours
    result = render_cli("render", inv, "--out", str(out))
    assert result.exit_status == ExitStatus.OK, result.stderr
    assert sorted(str(p.relative_to(gone)) for p in gone.rglob("*") if p.is_file()) \
        == ["etc/gpufleet/notes.txt"]
    assert not (gone / "etc/systemd").exists()  # emptied folders render made are pruned
    assert "removed etc/systemd/system/gpufleet-chat.service (host h9 no longer planned)" \
        in result.stdout
    assert "removed etc/gpufleet/plan.json (host h9 no longer planned)" in result.stdout
    assert (other_fleet / "etc/systemd/system/gpufleet-chat.service").is_file()
    assert (not_rendered / "gpufleet-chat.service").is_file()


def test_cli_host_filter_leaves_other_host_folders_alone(render_cli, tmp_path: Path):
    inv, out = str(FIXTURES / "venv.yml"), tmp_path / "out"
    assert render_cli("render", inv, "--out", str(out)).exit_status == ExitStatus.OK
    gone = retire_copy(out, "h9")
    assert render_cli("render", inv, "--out", str(out), "--host", "h1").exit_status == 0
    assert (gone / "etc/systemd/system/gpufleet-chat.service").is_file()


def test_cli_removes_temporaries_an_interrupted_render_left(render_cli, tmp_path: Path):
    inv, out = str(FIXTURES / "venv.yml"), tmp_path / "out"
    config = out / "h1/etc/gpufleet"
    config.mkdir(parents=True)
    (config / ".chat.env.gpufleet-new").write_text("half")
    (config / ".plan.json.gpufleet-new").write_text("half")
    (config / ".notes.gpufleet-new").write_text("not ours")
    result = render_cli("render", inv, "--out", str(out))
    assert result.exit_status == ExitStatus.OK, result.stderr
    assert sorted(p.name for p in config.glob(".*")) == [".notes.gpufleet-new"]
    assert "removed etc/gpufleet/.chat.env.gpufleet-new" in result.stdout


def test_cli_writes_atomically_a_failed_write_keeps_the_old_file(
    render_cli, tmp_path: Path, monkeypatch
):
    inv, out = str(FIXTURES / "venv.yml"), tmp_path / "out"
    assert render_cli("render", inv, "--out", str(out)).exit_status == ExitStatus.OK
    env = out / "h1/etc/gpufleet/chat.env"
    env.write_text("OLD=1\n")

    replace = os.replace

    def full_disk(src: Path, dst: Path) -> None:  # the new chat.env cannot be committed
        if Path(dst) == env:
            raise OSError(28, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    result = render_cli("render", inv, "--out", str(out))
    assert result.exit_status == ExitStatus.BAD_INPUT
    assert "No space left on device" in result.stderr
    assert env.read_text() == "OLD=1\n"  # never half-written, never truncated
    assert not list(out.rglob("*.gpufleet-new"))
