"""drift: pure comparisons of a host's files, processes and versions with the plan."""

from __future__ import annotations

import pytest
from support import INVENTORIES

from gpufleet import inventory
from gpufleet.adopt import RunningVllm, with_container_units
from gpufleet.drift import (
    DriftReading,
    compare_files,
    compare_processes,
    compare_versions,
    parse_hashes,
    sha256,
)
from gpufleet.plan import build_plan
from gpufleet.render import render_host


@pytest.fixture(scope="module")
def plan():
    return build_plan(inventory.load(INVENTORIES / "berget.yml"))


def test_files_match_then_edited_unit_reported(plan):
    files = render_host(plan, "gpu-01", {"hf_token": "t", "api_key": "k"})
    hashes = {f.path: sha256(f.content) for f in files}
    assert compare_files("gpu-01", files, hashes, True) == []
    unit = "/etc/systemd/system/gpufleet-llama-8b.service"
    hashes[unit] = sha256("edited by hand")
    hashes["/etc/systemd/system/gpufleet-old.service"] = sha256("x")
    codes = [(f.code, f.message.split()[0]) for f in compare_files("gpu-01", files, hashes, True)]
    assert codes == [
        ("file_changed", unit),
        ("file_unplanned", "/etc/systemd/system/gpufleet-old.service"),
    ]


def test_env_files_skipped_without_secrets(plan):
    files = render_host(plan, "gpu-01")
    hashes = {f.path: sha256(f.content) for f in files if not f.secret}
    assert compare_files("gpu-01", files, hashes, False) == []


def test_running_flags_and_hand_started_process(plan):
    host = plan.hosts[0]
    svc = host.service("llama-8b")
    same = RunningVllm("gpufleet-llama-8b", ["/opt/venv/bin/vllm", *svc.vllm_args], {})
    assert compare_processes(host, [same]) == []
    args = list(svc.vllm_args)
    args[args.index("--max-model-len") + 1] = "4096"
    changed = RunningVllm("gpufleet-llama-8b", ["vllm", *args], {})
    hand = RunningVllm(None, ["vllm", "serve", "Qwen/Qwen3-32B", "--port", "9999"], {})
    found = compare_processes(host, [changed, hand])
    assert [f.code for f in found] == ["flags_drifted", "unmanaged_process"]
    assert "max_model_len: 4096 (plan 131072)" in found[0].message
    assert "Qwen/Qwen3-32B" in found[1].message


def test_versions(plan):
    host = plan.hosts[0]
    reading = DriftReading(
        "gpu-01", rocm_version="6.3.0-1", vllm_version="0.11.0", images={"gpufleet-a": "img:old"}
    )
    codes = [
        f.code
        for f in compare_versions(host, reading, "6.4.1", "0.11.0", {"gpufleet-a": "img:new"})
    ]
    assert codes == ["rocm_version", "image_drifted"]


def test_parse_hashes_and_container_units():
    digest = "a" * 64
    assert parse_hashes(f"{digest}  /etc/gpufleet/x.env\nnoise\n") == {
        "/etc/gpufleet/x.env": digest
    }
    proc = RunningVllm(None, ["vllm"], {}, "0::/system.slice/docker-0123456789abcdef.scope")
    (named,) = with_container_units([proc], {"0123456789ab": "gpufleet-x"})
    assert named.unit == "gpufleet-x"
