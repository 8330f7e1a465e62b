"""Vendor rules live with the vendor (gpufleet.gpu.amd) and see only plain facts; the plan
turns their advice into findings."""

from __future__ import annotations

from gpufleet.gpu import ACCELERATORS, Serving, vendor_rules

AMD = ACCELERATORS["amd"]


def test_whisper_needs_a_release_whose_rocm_backends_have_cross_attention():
    old = Serving("whisper", "0.11.0", frozenset())
    [advice] = AMD.serving_advice(old)
    assert (advice.severity, advice.code) == ("error", "whisper_on_rocm")
    new = Serving("whisper", "0.33.0", frozenset({"rocm_encoder_decoder"}))
    assert AMD.serving_advice(new) == []
    assert AMD.serving_advice(Serving("llm", "0.11.0", frozenset())) == []


def test_whisper_with_aiter_needs_a_backend_with_cross_attention():
    aiter = Serving("whisper", "0.33.0", frozenset({"rocm_encoder_decoder"}),
                    env={"VLLM_ROCM_USE_AITER": "1"})
    assert [a.code for a in AMD.serving_advice(aiter)] == ["whisper_aiter"]
    named = Serving("whisper", "0.33.0", frozenset({"rocm_encoder_decoder"}),
                    env={"VLLM_ROCM_USE_AITER": "1"}, attention_backend="TRITON_ATTN")
    assert AMD.serving_advice(named) == []


def test_a_vendor_without_an_accelerator_has_no_rules_yet():
    assert vendor_rules("h100") is None
    assert vendor_rules("mi300x") is AMD


def test_the_plan_reports_the_vendor_s_advice():
    import yaml
    from support import INVENTORIES

    from gpufleet import inventory
    from gpufleet.plan import build_plan

    data = yaml.safe_load((INVENTORIES / "berget.yml").read_text())
    data["fleet"].update(vllm_version="0.11.0", image="vllm/vllm-openai-rocm:v0.11.0")
    plan = build_plan(inventory.loads(yaml.safe_dump(data), "inv.yml"))
    [finding] = [f for f in plan.findings if f.code == "whisper_on_rocm"]
    assert finding.service == "kb-whisper" and finding.host == "gpu-01"
