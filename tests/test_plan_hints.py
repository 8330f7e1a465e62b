"""Fix hints are always valid advice: a TP size vLLM accepts, never more GPUs than the host
has, a utilization that also passes the free-memory check (property-based)."""

from __future__ import annotations

import re
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from gpufleet import plan as planning
from gpufleet.vllm.memory import GIB, MI300X_TOTAL_BYTES, InstanceSpec, estimate
from gpufleet.vllm.models import find_model

LLAMA_70B = find_model("meta-llama/Llama-3.3-70B-Instruct")


@st.composite
def shapes(draw):
    kv = draw(st.sampled_from([1, 2, 4, 8, 16]))
    heads = kv * draw(st.integers(1, 16))
    return replace(LLAMA_70B, num_attention_heads=heads, num_kv_heads=kv), draw(st.integers(1, 16))


@given(shapes())
@settings(max_examples=300, deadline=None)
def test_every_proposed_split_is_one_vllm_accepts(shape):
    facts, n = shape
    split = planning.valid_split(facts, n)
    if split is None:
        return
    tp, pp = split
    assert tp * pp == n
    assert facts.num_attention_heads % tp == 0
    kv = facts.num_kv_heads
    assert (kv % tp == 0) if kv >= tp else (tp % kv == 0)


class _Svc:
    tensor_parallel_size = 1
    pipeline_parallel_size = 1
    max_num_seqs = None
    gpus = [0]


@given(shapes(), st.floats(0.05, 1.0))
@settings(max_examples=200, deadline=None)
def test_a_too_big_model_is_never_told_to_use_more_gpus_than_the_host_has(shape, util):
    facts, gpu_count = shape
    facts = replace(facts, param_count=facts.param_count * 4)  # ~280B: rarely fits one GPU
    spec = InstanceSpec(facts=facts, gpu_memory_utilization=round(util, 2), max_model_len=4096,
                        vllm_version="0.33.0")
    est = estimate(spec)
    hint = planning._too_big_hint(_Svc(), spec, est, gpu_count)
    wanted = re.search(r"give it (\d+) GPUs \(tensor_parallel_size (\d+)", hint)
    if wanted:
        n, tp = int(wanted[1]), int(wanted[2])
        assert n <= gpu_count
        assert planning._tp_ok(facts, tp) and n % tp == 0
    else:
        assert "quantized checkpoint" in hint


@given(st.floats(0.1, 0.99), st.integers(0, 150))
@settings(max_examples=200, deadline=None)
def test_a_suggested_utilization_passes_the_free_memory_check(util, used_gib):
    spec = InstanceSpec(facts=LLAMA_70B, gpu_memory_utilization=round(util, 2),
                        max_model_len=131072, vllm_version="0.33.0",
                        free_bytes_at_start=MI300X_TOTAL_BYTES - used_gib * GIB)
    est = estimate(spec)
    if est.starts:
        return
    hint = planning._fix_hint(_Svc(), spec, est, 8)
    for found in re.findall(r"gpu_memory_utilization >= ([0-9.]+)", hint):
        suggested = replace(spec, gpu_memory_utilization=float(found))
        assert estimate(suggested).error_kind != "free_memory", hint


def test_a_64_head_model_is_never_split_three_ways():
    facts = replace(LLAMA_70B, num_attention_heads=64, num_kv_heads=8)
    assert planning.valid_split(facts, 3) == (1, 3)
    spec = InstanceSpec(facts=replace(facts, param_count=facts.param_count * 3),
                        gpu_memory_utilization=0.9, max_model_len=4096, vllm_version="0.33.0")
    hint = planning._too_big_hint(_Svc(), spec, estimate(spec), 8)
    assert "give it 2 GPUs (tensor_parallel_size 2)" in hint or "give it 4 GPUs" in hint
