"""The fleet plan: the example fleet plans cleanly; the published version fails where vLLM would."""

from __future__ import annotations

import json
import textwrap

import pytest
from support import INVENTORIES

from gpufleet import inventory
from gpufleet.plan import build_plan, start_order_groups

BERGET = INVENTORIES / "berget.yml"
PUBLISHED = INVENTORIES / "examples" / "berget-as-published.yml"


@pytest.fixture(scope="module")
def berget():
    return build_plan(inventory.load(BERGET))


@pytest.fixture(scope="module")
def published():
    return build_plan(inventory.load(PUBLISHED))


def codes(plan, severity="error"):
    return sorted(
        (f.code, f.service or f"gpu{f.gpu}") for f in plan.findings if f.severity == severity
    )


def test_berget_plans_cleanly(berget):
    assert not berget.has_errors, codes(berget)
    host = berget.hosts[0]
    assert all(g.free_bytes > 0 for g in host.gpus)
    assert all(s.estimate is None or s.estimate.starts for s in host.services)


def test_published_fails_where_vllm_would(published):
    assert codes(published) == [
        ("free_memory", "devstral-small"),
        ("gpu_overcommitted", "gpu1"),
        ("parallelism", "mai-ds-r1"),
    ]
    message = next(f for f in published.findings if f.code == "free_memory").message
    assert message.startswith("Free memory on device cuda:0 (")
    assert "is less than desired GPU memory utilization (0.5, 95.99 GiB)" in message


def test_published_hints_say_what_to_change(published):
    hints = {f.code: f.hint or "" for f in published.findings}
    assert "gpu_memory_utilization <= 0.49" in hints["free_memory"]
    assert "pipeline_parallel_size 3" in hints["parallelism"]
    assert "quantized checkpoint" in hints["parallelism"]


def test_co_located_services_start_one_after_another(berget):
    host = berget.hosts[0]
    assert host.service("kb-whisper").start_after == ("llama-8b",)
    assert host.service("e5-embed").start_after == ("mistral-small", "docling", "bge-reranker")
    assert host.service("llama-70b").start_after == ()
    waves = start_order_groups(host)
    assert waves[0] == ["llama-8b", "deepcoder-14b", "llama-70b", "mistral-small", "mai-ds-r1"]
    assert waves[-1] == ["gemma-3"]


def test_second_instance_sees_what_the_first_left(berget):
    host = berget.hosts[0]
    first, second = host.service("deepcoder-14b"), host.service("devstral-small")
    total = host.gpus[1].total_bytes
    assert second.estimate.starts
    assert first.footprint_bytes + second.footprint_bytes < total


def test_plan_json_contract(berget):
    data = json.loads(json.dumps(berget.to_dict()))
    assert set(data) >= {"hosts", "findings"}
    host = data["hosts"][0]
    assert set(host) >= {"gpus", "services"}
    assert {"index", "total_gib", "planned_gib", "free_gib", "utilization_sum", "services"} <= set(
        host["gpus"][0]
    )
    svc = host["services"][0]
    assert {"name", "gpus", "port", "kv_tokens", "max_concurrency", "start_after"} <= set(svc)


def test_findings_json_fields(published):
    for finding in published.to_dict()["findings"]:
        assert set(finding) >= {"severity", "code", "host", "gpu", "service", "message"}


def test_vllm_args_are_explicit(berget):
    args = berget.hosts[0].service("llama-8b").vllm_args
    assert args[:2] == ("serve", "meta-llama/Llama-3.1-8B-Instruct")
    assert "--gpu-memory-utilization" in args and "--max-model-len" in args
    embed = berget.hosts[0].service("e5-embed").vllm_args
    assert "--runner" in embed and "pooling" in embed


def test_unset_utilization_warns_with_vllm_default(tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text(
        textwrap.dedent("""\
        fleet: {name: t}
        hosts:
          h:
            address: h.example
            services:
              - {name: a, kind: llm, model: meta-llama/Llama-3.1-8B-Instruct, gpus: [0], port: 1}
    """)
    )
    plan = build_plan(inventory.load(inv))
    warned = {f.code for f in plan.findings if f.severity == "warning"}
    assert {"default_utilization", "default_max_model_len"} <= warned


def test_max_model_len_too_big_for_utilization(tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text(
        textwrap.dedent("""\
        fleet: {name: t}
        hosts:
          h:
            address: h.example
            services:
              - {name: a, kind: llm, model: meta-llama/Llama-3.3-70B-Instruct, gpus: [0],
                 port: 1, gpu_memory_utilization: 0.8, max_model_len: 131072}
    """)
    )
    plan = build_plan(inventory.load(inv))
    (finding,) = [f for f in plan.findings if f.severity == "error"]
    assert finding.code == "max_model_len"
    assert "max seq len (131072)" in finding.message
    assert "gpu_memory_utilization >=" in finding.hint and "max_model_len <=" in finding.hint


def test_plan_cli_exit_codes(cli):
    assert cli("plan", str(BERGET)).exit_status == 0
    bad = cli("plan", str(PUBLISHED))
    assert bad.exit_status == 1
    assert "[parallelism]" in bad.stdout
    data = json.loads(cli("plan", str(BERGET), "--json").stdout)
    assert data["ok"] is True


def test_plan_unknown_host(cli):
    result = cli("plan", str(BERGET), "--host", "nope")
    assert result.exit_status == 2 and "no host 'nope'" in result.stderr


def test_unknown_model_is_located(cli, tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text(
        textwrap.dedent("""\
        fleet: {name: t}
        hosts:
          h:
            address: h.example
            services:
              - {name: a, kind: llm, model: acme/unknown-7b, gpus: [0], port: 1}
    """)
    )
    result = cli("plan", str(inv))
    assert result.exit_status == 2
    assert f"{inv}:6:" in result.stderr and "acme/unknown-7b" in result.stderr


def test_estimate_json_contract(cli):
    result = cli(
        "estimate",
        "--model",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--util",
        "0.5",
        "--max-model-len",
        "32768",
        "--json",
    )
    data = json.loads(result.stdout)
    for key in (
        "starts",
        "error_kind",
        "error",
        "budget_gib",
        "weights_gib",
        "non_kv_gib",
        "kv_cache_gib",
        "kv_tokens",
        "max_model_len",
        "max_model_len_fit",
        "min_util_for_max_model_len",
    ):
        assert key in data
    assert data["starts"] is True and result.exit_status == 0
    assert data["budget_gib"] == pytest.approx(95.99, abs=0.01)


def test_estimate_failure_exit_1(cli):
    result = cli(
        "estimate",
        "--model",
        "meta-llama/Llama-3.3-70B-Instruct",
        "--gpu",
        "h100",
        "--util",
        "0.9",
        "--json",
    )
    data = json.loads(result.stdout)
    assert result.exit_status == 1 and data["starts"] is False
    assert data["error_kind"] == "no_kv_memory"


def test_estimate_bad_flags_exit_2(cli):
    assert cli("estimate", "--model", "x/y", "--util", "1.5").exit_status == 2
    assert cli("estimate", "--util", "0.5").exit_status == 2  # neither --config nor --model
    assert cli("estimate", "--model", "acme/none").exit_status == 2


SCHEDULER = """\
fleet: {{name: sched, vllm_version: "0.19.1", runtime: venv}}
hosts:
  h1:
    address: h1.sched.example
    gpu_count: 2
    services:
      - {{name: chat, kind: llm, model: Qwen/Qwen2.5-0.5B-Instruct, gpus: [0], port: 8000,
         gpu_memory_utilization: 0.3, max_model_len: 8192, {chat}}}
      - {{name: embed, kind: embed, model: intfloat/multilingual-e5-large, gpus: [1],
         port: 8001, gpu_memory_utilization: 0.05, max_model_len: 512, {embed}}}
"""


def scheduler_findings(chat: str, embed: str) -> dict[tuple[str, str], str]:
    from gpufleet import inventory

    text = SCHEDULER.format(chat=chat, embed=embed)
    plan = build_plan(inventory.loads(text, "sched.yml"))
    return {(f.service or "", f.code): f.severity for f in plan.findings}


def test_vllms_scheduler_refusals_are_plan_errors() -> None:
    found = scheduler_findings("max_num_seqs: 256, max_num_batched_tokens: 128",
                               "max_num_batched_tokens: 256")
    assert found[("chat", "batched_tokens_below_seqs")] == "error"
    assert found[("embed", "batched_tokens_below_max_model_len")] == "error"
    # a generative model chunks its prefill: fewer batched tokens than max_model_len is fine
    assert ("chat", "batched_tokens_below_max_model_len") not in found
    ok = scheduler_findings("max_num_seqs: 64, max_num_batched_tokens: 2048",
                            "max_num_batched_tokens: 512")
    assert not {code for (_, code) in ok} & {"batched_tokens_below_seqs",
                                               "batched_tokens_below_max_model_len"}
