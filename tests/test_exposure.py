"""Safe network defaults: where each service listens (PlannedService.bind), and the plan's
warnings about exposure, unpinned weights and moving image tags."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from gpufleet import inventory
from gpufleet.errors import InputError
from gpufleet.plan import Plan, build_plan

BASE: dict[str, Any] = {
    "fleet": {"name": "t", "vllm_version": "0.19.1", "image": "vllm/vllm-openai-rocm:v0.19.1",
              "secrets": {"api_key": {"env": "API_KEY"}}},
    "hosts": {
        "h1": {
            "address": "h1.example",
            "gpu_count": 2,
            "services": [
                {"name": "open", "kind": "llm", "model": "Qwen/Qwen2.5-0.5B-Instruct",
                 "revision": "a" * 40, "gpus": [0], "port": 8000,
                 "gpu_memory_utilization": 0.3, "max_model_len": 4096},
                {"name": "keyed", "kind": "embed", "model": "intfloat/multilingual-e5-large",
                 "revision": "b" * 40, "gpus": [1], "port": 8001,
                 "gpu_memory_utilization": 0.05, "max_model_len": 512,
                 "secrets": {"VLLM_API_KEY": "api_key"}},
                {"name": "docs", "kind": "docling", "gpus": [1], "port": 5001,
                 "memory_gib": 1.0, "image": "quay.io/docling-project/docling-serve-rocm:v1.0.0"},
                {"name": "tool", "kind": "custom", "gpus": [1], "port": 9000, "memory_gib": 1.0,
                 "image": "registry.example/tool:1.2", "command": ["/bin/tool"]},
            ],
        }
    },
}  # fmt: skip


def plan_of(data: dict[str, Any]) -> Plan:
    return build_plan(inventory.loads(yaml.safe_dump(data, sort_keys=False), "inv.yml"))


def base(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for index, update in changes.items():
        data["hosts"]["h1"]["services"][int(index[1:])].update(update)
    return data


def findings(plan: Plan, code: str) -> list[str | None]:
    return [f.service for f in plan.findings if f.code == code]


def test_default_bind_is_loopback_without_an_api_key_and_any_with_one():
    host = plan_of(BASE).hosts[0]
    assert host.service("open").bind == "127.0.0.1"
    assert host.service("keyed").bind == "0.0.0.0"
    assert host.service("docs").bind == "127.0.0.1"
    args = host.service("open").vllm_args
    assert args[args.index("--host") + 1] == "127.0.0.1"
    args = host.service("keyed").vllm_args
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args.count("--host") == 1


def test_docling_with_its_api_key_listens_everywhere():
    data = base(s2={"secrets": {"DOCLING_SERVE_API_KEY": "api_key"}})
    assert plan_of(data).hosts[0].service("docs").bind == "0.0.0.0"


def test_bind_precedence_service_over_host_over_fleet():
    data = base(s0={"bind": "10.0.0.5"})
    data["fleet"]["bind"] = "0.0.0.0"
    data["hosts"]["h1"]["bind"] = "::"
    host = plan_of(data).hosts[0]
    assert host.service("open").bind == "10.0.0.5"
    assert host.service("keyed").bind == "::"
    data["hosts"]["h1"].pop("bind")
    assert plan_of(data).hosts[0].service("keyed").bind == "0.0.0.0"


def test_bind_is_in_the_plan_json():
    services = plan_of(BASE).to_dict()["hosts"][0]["services"]  # type: ignore[index]
    assert {s["name"]: s["bind"] for s in services}["keyed"] == "0.0.0.0"


@pytest.mark.parametrize(
    ("bind", "probe"),
    [("0.0.0.0", "127.0.0.1"), ("127.0.0.1", "127.0.0.1"), ("::", "[::1]"),
     ("10.0.0.5", "10.0.0.5"), ("fd00::5", "[fd00::5]")],
)  # fmt: skip
def test_probe_host_reaches_the_service_from_the_host(bind, probe):
    assert plan_of(base(s0={"bind": bind})).hosts[0].service("open").probe_host == probe


def test_exposed_without_api_key_warns_when_explicitly_bound_beyond_loopback():
    assert findings(plan_of(BASE), "exposed_without_api_key") == []
    data = copy.deepcopy(BASE)
    data["fleet"]["bind"] = "0.0.0.0"
    plan = plan_of(data)
    assert sorted(findings(plan, "exposed_without_api_key")) == ["docs", "open"]  # type: ignore
    (finding,) = [f for f in plan.findings if f.code == "exposed_without_api_key"
                  and f.service == "open"]  # fmt: skip
    assert finding.severity == "warning" and "VLLM_API_KEY" in (finding.hint or "")
    assert findings(plan_of(base(s0={"bind": "127.0.0.1"})), "exposed_without_api_key") == []


@pytest.mark.parametrize("bind", ["localhost", "0.0.0.0; rm -rf /", "::1%eth0", "[::1]", "", 0])
def test_bind_must_be_an_ip_literal(bind):
    with pytest.raises(InputError) as info:
        plan_of(base(s0={"bind": bind}))
    assert "bind" in str(info.value) and str(info.value).startswith("inv.yml:")


def test_bind_on_a_custom_service_is_refused():
    with pytest.raises(InputError) as info:
        plan_of(base(s3={"bind": "0.0.0.0"}))
    assert "its command decides" in str(info.value)


def test_unpinned_revision_warns_for_vllm_services():
    assert findings(plan_of(BASE), "unpinned_revision") == []
    plan = plan_of(base(s0={"revision": None}, s1={"revision": "main"}))
    assert findings(plan, "unpinned_revision") == ["open", "keyed"]
    assert all(f.severity == "warning" for f in plan.findings if f.code == "unpinned_revision")


@pytest.mark.parametrize(
    ("image", "warns"),
    [("vllm/vllm-openai-rocm:latest", True), ("vllm/vllm-openai-rocm", True),
     ("vllm/vllm-openai-rocm:nightly", True), ("vllm/vllm-openai-rocm:v0.19.1", False),
     ("vllm/vllm-openai-rocm:latest@sha256:" + "c" * 64, False),
     ("vllm/vllm-openai-rocm@sha256:" + "c" * 64, False)],
)  # fmt: skip
def test_mutable_image_tag(image, warns):
    data = copy.deepcopy(BASE)
    data["fleet"]["image"] = image
    assert findings(plan_of(data), "mutable_image_tag") == (["open", "keyed"] if warns else [])


def test_mutable_image_tag_of_a_service_image_and_not_in_a_venv():
    data = base(s2={"image": "quay.io/docling-project/docling-serve-rocm:latest"})
    assert findings(plan_of(data), "mutable_image_tag") == ["docs"]
    data["fleet"]["runtime"] = "venv"
    assert findings(plan_of(data), "mutable_image_tag") == []
