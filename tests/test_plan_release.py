"""The fleet's vLLM release as the plan checks it: flags the release's own parser lacks or
refuses, versions gpufleet has not read, images of another release, ROCm builds and pairing."""

from __future__ import annotations

import pytest
import yaml
from support import INVENTORIES

from gpufleet import inventory
from gpufleet.plan import build_plan
from gpufleet.vllm import flags, versions

BERGET = yaml.safe_load((INVENTORIES / "berget.yml").read_text())


def plan_of(fleet: dict | None = None, extra_args: list[str] | None = None, drop=()):
    data = yaml.safe_load(yaml.safe_dump(BERGET))
    data["fleet"].update(fleet or {})
    for key in drop:
        data["fleet"].pop(key, None)
    if extra_args is not None:
        data["hosts"]["gpu-01"]["services"][0]["extra_args"] = extra_args
    return build_plan(inventory.loads(yaml.safe_dump(data), "inv.yml"))


def found(plan, code):
    return [f for f in plan.findings if f.code == code]


def at(version: str) -> dict:
    return {"vllm_version": version, "image": f"vllm/vllm-openai-rocm:v{version}"}


@pytest.mark.parametrize("args", [["--swap-space", "4"], ["--disable-log-requests"],
                                  ["--override-pooler-config", "{}"]])
def test_flags_0_19_1_no_longer_has_are_plan_errors(args):
    assert not found(plan_of(at("0.11.0"), args), "flag_not_in_release")
    [finding] = found(plan_of(at("0.19.1"), args), "flag_not_in_release")
    assert finding.severity == "error" and finding.service == "llama-8b"
    assert f"vLLM 0.19.1 has no {args[0]} flag" in finding.message


def test_a_value_outside_the_release_s_choices_is_a_plan_error():
    args = ["--tokenizer-mode", "bogus"]
    [finding] = found(plan_of(at("0.11.0"), args), "flag_not_in_release")
    assert "--tokenizer-mode takes auto, custom, mistral, slow, not 'bogus'" in finding.message
    assert not found(plan_of(at("0.19.1"), args), "flag_not_in_release")  # free-form there


@pytest.mark.parametrize("args", [["-O3"], ["--max_logprobs=5"],
                                  ["--no-enable-prefix-caching"], ["--kv-cache-metrics"]])
def test_spellings_vllm_accepts_pass(args):
    assert not found(plan_of(at("0.33.0"), args), "flag_not_in_release"), args


@pytest.mark.parametrize("version", versions.supported())
def test_every_flag_the_example_renders_is_in_its_release(version):
    """The plan's own words (host, port, served model name, runner/convert, knobs) exist in
    every release read, for every service of the example fleet."""
    plan = plan_of(at(version))
    assert not found(plan, "flag_not_in_release"), found(plan, "flag_not_in_release")
    release = versions.release(version)
    for svc in plan.hosts[0].services:
        assert not flags.release_problems(list(svc.vllm_args[2:]), release)


def test_an_unset_version_comes_from_the_image_or_the_newest_release():
    plan = plan_of({"image": "vllm/vllm-openai-rocm:v0.33.0"}, drop=["vllm_version"])
    assert plan.inventory.fleet.vllm_version == "0.33.0"
    [finding] = found(plan, "vllm_version_unset")
    assert "the tag of vllm/vllm-openai-rocm:v0.33.0" in finding.message
    plan = plan_of({"image": "vllm/vllm-openai-rocm:latest"}, drop=["vllm_version"])
    assert plan.inventory.fleet.vllm_version == versions.newest()


def test_an_image_of_another_release_is_an_error():
    plan = plan_of({"vllm_version": "0.19.1", "image": "vllm/vllm-openai-rocm:v0.33.0"})
    [finding] = found(plan, "vllm_version_image")
    assert finding.severity == "error" and 'vllm_version: "0.33.0"' in finding.hint


def test_an_unread_release_is_planned_as_its_nearest_and_said_so():
    [finding] = found(plan_of(at("0.20.1")), "vllm_version_unread")
    assert "planned as 0.20.2" in finding.message
    [old] = found(plan_of(at("0.9.2")), "vllm_version_unread")
    assert "older than the releases gpufleet has read" in old.message


def test_the_venv_runtime_needs_a_rocm_wheel():
    venv = {"runtime": "venv", "vllm_version": "0.11.0", "image": None}
    [finding] = found(plan_of(venv), "venv_without_rocm_wheel")
    assert finding.severity == "error"
    assert not found(plan_of({**venv, "vllm_version": "0.33.0"}), "venv_without_rocm_wheel")


def test_hosts_below_the_release_s_rocm_minimum_are_warned():
    [finding] = found(plan_of({**at("0.33.0"), "rocm_version": "6.2.4"}), "rocm_pairing")
    assert "supports ROCm 6.3 or above" in finding.message
    assert not found(plan_of({**at("0.33.0"), "rocm_version": "7.2.1"}), "rocm_pairing")


def test_a_banana_version_is_refused_at_load():
    with pytest.raises(Exception, match="not a vLLM version"):
        plan_of({"vllm_version": "banana"})


def test_plan_runs_every_check_render_runs(tmp_path, cli):
    """A fleet render would refuse (no image for the container runtime) fails `plan` too."""
    data = yaml.safe_load(yaml.safe_dump(BERGET))
    del data["fleet"]["image"]
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump(data))
    result = cli("plan", str(path))
    assert result.exit_status == 1
    assert "[render_refuses]" in result.stdout
    assert "the container runtime needs an image" in result.stdout
    assert cli("render", str(path), "--out", str(tmp_path / "out")).exit_status == 2


def test_an_unknown_model_s_hint_speaks_inventory_keys(tmp_path, cli):
    data = yaml.safe_load(yaml.safe_dump(BERGET))
    data["hosts"]["gpu-01"]["services"][0]["model"] = "nobody/nothing-7b"
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump(data))
    result = cli("plan", str(path))
    assert result.exit_status == 2
    assert "model_path:" in result.stderr and "--config" not in result.stderr
