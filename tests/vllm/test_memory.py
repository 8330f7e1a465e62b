"""Unit tests of gpufleet.vllm.memory on hand-built ModelFacts (no catalog, no shared data)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from gpufleet.vllm.memory import (
    CUDAGRAPH_BYTES,
    GIB,
    MI300X_TOTAL_BYTES,
    InstanceSpec,
    activation_bytes,
    baseline_bytes,
    default_batching,
    default_utilization,
    estimate,
    with_free_memory,
)
from gpufleet.vllm.models import ModelFacts
from gpufleet.vllm.releases import parse_version

H100 = int(79.1 * GIB)
SMALL = int(23.58 * GIB)  # RTX 3090


def facts(**overrides: object) -> ModelFacts:
    """A Llama-3-8B-shaped model: 32 layers, 8 KV heads of 128 -> 128 KiB/token in bf16."""
    base: dict[str, object] = dict(
        model_id="test/llama-like", architecture="LlamaForCausalLM", num_layers=32,
        num_attention_heads=32, num_kv_heads=8, head_dim=128, head_dim_v=128, hidden_size=4096,
        vocab_size=128256, max_position_embeddings=8192, torch_dtype="bfloat16", is_mla=False,
        sliding_window=None, num_sliding_layers=0, param_count=8_000_000_000,
        checkpoint_bytes=None, checkpoint_quantization=None, is_pooling=False, sources=("test",),
    )  # fmt: skip
    base.update(overrides)
    return ModelFacts(**base)  # type: ignore[arg-type]


def mla_facts() -> ModelFacts:
    """DeepSeek-V3-like latent attention: one 576-wide latent per token and layer."""
    return facts(
        num_layers=61, num_attention_heads=128, num_kv_heads=1, head_dim=576, head_dim_v=0,
        hidden_size=7168, vocab_size=129280, is_mla=True, param_count=1_000_000_000,
    )  # fmt: skip


def spec(**overrides: object) -> InstanceSpec:
    base: dict[str, object] = dict(
        facts=facts(), gpu_total_bytes=H100, gpu_memory_utilization=0.9, vllm_version="0.11.0",
        platform="cuda",
    )
    base.update(overrides)
    return InstanceSpec(**base)  # type: ignore[arg-type]


def kv_mode(nbytes: int, **overrides: object) -> InstanceSpec:
    """KV size fixed with --kv-cache-memory-bytes, so the checks see exactly `nbytes`."""
    return spec(kv_cache_memory_bytes=nbytes, **overrides)


# ---------------------------------------------------------------- budget and defaults


def test_budget_is_ceil_of_total_times_util():
    total = 25_769_803_777  # odd, so that T * u is not an integer
    est = estimate(spec(gpu_total_bytes=total, gpu_memory_utilization=0.37))
    assert est.budget_bytes == math.ceil(total * 0.37)


@pytest.mark.parametrize(
    ("version", "util"),
    [("0.6.3.post1", 0.9), ("0.19.1", 0.9), ("0.20.0", 0.92), ("0.21.0", 0.92), ("0.33.0", 0.92)],
)
def test_default_utilization_092_from_020(version, util):
    assert default_utilization(version) == util
    est = estimate(spec(gpu_memory_utilization=None, vllm_version=version))
    assert est.utilization == util
    assert est.budget_bytes == math.ceil(H100 * util)


def test_parse_version_tolerates_suffixes():
    assert parse_version("0.6.3.post1") == (0, 6, 3)
    assert parse_version("0.9.1+rocm") == (0, 9, 1)
    assert parse_version("0.28.1rc1.dev452") == (0, 28, 1)
    assert parse_version("0.8") == (0, 8, 0)


def test_default_batching_tiers():
    assert default_batching(MI300X_TOTAL_BYTES) == (16384, 1024)  # >= 160 GiB tier (PR #51726)
    assert default_batching(MI300X_TOTAL_BYTES, "0.33.0") == (16384, 1024)
    assert default_batching(MI300X_TOTAL_BYTES, "0.21.0") == (8192, 1024)  # tier absent then
    assert default_batching(H100) == (8192, 1024)
    assert default_batching(int(44.42 * GIB)) == (2048, 256)
    assert default_batching(int(70 * GIB)) == (8192, 1024)
    assert default_batching(int(69.9 * GIB)) == (2048, 256)


def test_tiny_model_on_mi300x_still_profiles_the_big_tier():
    tiny = spec(
        facts=facts(hidden_size=896, vocab_size=151936, param_count=500_000_000),
        gpu_total_bytes=MI300X_TOTAL_BYTES, gpu_memory_utilization=0.05, vllm_version="0.33.0",
    )  # fmt: skip
    assert tiny.batching == (16384, 1024)
    explicit = replace(tiny, max_num_seqs=64, max_num_batched_tokens=2048)
    assert explicit.batching == (2048, 64)
    assert activation_bytes(explicit) < activation_bytes(tiny) / 4


def test_v0_profiles_max_model_len_unless_long_context():
    v0 = spec(vllm_version="0.6.3", max_model_len=20000)
    assert v0.batching == (20000, 256)
    assert spec(vllm_version="0.6.3", max_model_len=1024).batching == (2048, 256)
    assert spec(vllm_version="0.7.3", max_model_len=131072).batching == (2048, 256)
    # V1 profiles max_num_batched_tokens whatever max_model_len is
    assert spec(max_model_len=20000).batching == (8192, 1024)


def test_activation_grows_with_profiled_tokens_and_sequences():
    low = activation_bytes(spec(max_num_batched_tokens=4096, max_num_seqs=4))
    more_tokens = activation_bytes(spec(max_num_batched_tokens=16384, max_num_seqs=4))
    more_seqs = activation_bytes(spec(max_num_batched_tokens=4096, max_num_seqs=1024))
    assert low < more_tokens
    assert low < more_seqs
    pooling = spec(facts=facts(is_pooling=True), max_num_batched_tokens=4096, max_num_seqs=1024)
    assert activation_bytes(pooling) == low  # no sampler for pooling models


# ---------------------------------------------------------------- check 1: free memory


def test_free_memory_check_with_vllms_words():
    s = spec(gpu_memory_utilization=0.5)
    budget = math.ceil(H100 * 0.5)
    free = budget - 1
    est = estimate(with_free_memory(s, free))
    assert not est.starts
    assert est.error_kind == "free_memory"
    assert est.error == (  # 0.11.0's words: the device is named from 0.14
        f"Free memory on device ({free / GIB:.2f}/{H100 / GIB:.2f} GiB) on startup is "
        f"less than desired GPU memory utilization (0.5, {budget / GIB:.2f} GiB). Decrease GPU "
        "memory utilization or reduce GPU memory used by other processes."
    )
    assert estimate(with_free_memory(s, budget)).error_kind != "free_memory"


def test_free_memory_message_has_no_device_name_in_0_10():
    s = spec(gpu_memory_utilization=0.5, vllm_version="0.10.2")
    est = estimate(with_free_memory(s, int(10 * GIB)))
    assert est.error_kind == "free_memory"
    assert est.error is not None
    assert est.error.startswith("Free memory on device (10.00/79.10 GiB) on startup")


def test_empty_gpu_passes_the_free_memory_check():
    est = estimate(spec(gpu_memory_utilization=0.95))
    assert est.error_kind != "free_memory"


def test_device_wide_versions_shrink_kv_instead_of_failing():
    """V1 0.8.x charged other processes' memory to the budget (#14376, fixed in 0.9.1)."""
    first = spec(gpu_memory_utilization=0.3, vllm_version="0.8.5", max_model_len=1024)
    alone = estimate(first)
    occupied = int(10 * GIB)
    second = with_free_memory(first, H100 - occupied - baseline_bytes(first))
    shared = estimate(second)
    assert shared.error_kind != "free_memory"
    assert alone.kv_cache_bytes - shared.kv_cache_bytes == occupied
    fails = estimate(with_free_memory(first, H100 - int(25 * GIB)))
    assert fails.error_kind == "no_kv_memory"


# ---------------------------------------------------------------- check 2: no KV memory


def test_no_kv_memory():
    est = estimate(spec(facts=facts(param_count=60_000_000_000)))  # 112 GiB of weights
    assert not est.starts
    assert est.error_kind == "no_kv_memory"
    assert est.error.startswith("No available memory for the cache blocks.")


# ---------------------------------------------------------------- check 3: max seq len


def block_bytes() -> int:
    return 16 * 32 * 2 * 8 * 128 * 2  # block_size x layers x (K+V) x kv heads x head_dim x bf16


def test_max_seq_len_check_at_block_granularity():
    length = 1000  # 63 blocks (62.5 rounded up)
    needed = math.ceil(length / 16) * block_bytes()
    ok = estimate(kv_mode(needed + block_bytes(), max_model_len=length))
    assert ok.starts
    short = estimate(kv_mode(needed + block_bytes() - 1, max_model_len=length))
    assert not short.starts
    assert short.error_kind == "max_model_len"
    assert short.error is not None
    for fragment in (
        f"max seq len ({length})", "KV cache is needed", "available KV cache memory (",
        "estimated maximum model length is",
    ):  # fmt: skip
        assert fragment in short.error
    assert "models's max seq len" in short.error  # the V1 typo up to 0.21


def test_max_seq_len_message_v0_and_new_wording():
    length, kv = 8192, 100 * block_bytes()
    v0 = estimate(kv_mode(kv, max_model_len=length, vllm_version="0.6.3"))
    assert v0.error == (
        f"The model's max seq len ({length}) is larger than the maximum number of tokens that "
        f"can be stored in KV cache ({100 * 16}). Try increasing `gpu_memory_utilization` or "
        "decreasing `max_model_len` when initializing the engine."
    )
    new = estimate(kv_mode(kv, max_model_len=length, vllm_version="0.33.0"))
    assert new.error is not None
    assert "the model's max seq len (8192)" in new.error
    assert "(which also controls CPU memory on the CPU backend)" in new.error


@pytest.mark.parametrize("version", ["0.11.0", "0.33.0"])
def test_max_model_len_fit_is_the_largest_that_passes(version):
    s = spec(max_model_len=131072, facts=facts(max_position_embeddings=131072),
             gpu_total_bytes=SMALL, vllm_version=version)  # fmt: skip
    est = estimate(s)
    assert est.error_kind == "max_model_len"
    fit = est.max_model_len_fit
    assert fit is not None and fit % 16 == 0
    assert estimate(replace(s, max_model_len=fit)).starts
    assert estimate(replace(s, max_model_len=fit + 16)).error_kind == "max_model_len"
    assert f"estimated maximum model length is {fit}." in (est.error or "")


def test_min_util_for_max_model_len():
    s = spec(max_model_len=131072, facts=facts(max_position_embeddings=131072),
             gpu_memory_utilization=0.4)  # fmt: skip
    est = estimate(s)
    assert not est.starts
    util = est.min_util_for_max_model_len
    assert util is not None and 0.4 < util <= 1.0
    assert estimate(replace(s, gpu_memory_utilization=util)).starts
    below = estimate(replace(s, gpu_memory_utilization=round(util - 0.01, 2)))
    assert not below.starts


# ---------------------------------------------------------------- KV layout


def test_kv_cache_memory_bytes_mode_ignores_utilization():
    kv = 4000 * block_bytes() + 123
    a = estimate(kv_mode(kv, gpu_memory_utilization=0.5))
    b = estimate(kv_mode(kv, gpu_memory_utilization=0.9))
    assert a.kv_cache_bytes == b.kv_cache_bytes == kv
    assert a.kv_tokens == b.kv_tokens == 4000 * 16
    assert a.block_bytes == block_bytes()
    assert a.min_util_for_max_model_len is None


def test_gqa_kv_splits_across_tp_but_mla_is_replicated():
    kv = 10 * GIB
    gqa1, gqa2 = (estimate(kv_mode(kv, tensor_parallel_size=tp)) for tp in (1, 2))
    assert gqa2.block_bytes * 2 == gqa1.block_bytes
    assert gqa2.kv_tokens == pytest.approx(2 * gqa1.kv_tokens, abs=16)
    mla1, mla8 = (
        estimate(kv_mode(kv, facts=mla_facts(), tensor_parallel_size=tp)) for tp in (1, 8)
    )
    assert mla1.block_bytes == mla8.block_bytes == 16 * 61 * 576 * 2
    assert mla1.kv_tokens == mla8.kv_tokens


def test_fp8_kv_halves_bytes_and_doubles_tokens():
    kv = 10 * GIB
    bf16 = estimate(kv_mode(kv))
    fp8 = estimate(kv_mode(kv, kv_cache_dtype="fp8"))
    assert fp8.block_bytes * 2 == bf16.block_bytes
    assert fp8.kv_tokens == pytest.approx(2 * bf16.kv_tokens, abs=16)


# ---------------------------------------------------------------- CUDA graphs


def test_enforce_eager_removes_graph_memory():
    graphs = estimate(spec(vllm_version="0.21.0"))
    eager = estimate(spec(vllm_version="0.21.0", enforce_eager=True))
    assert graphs.cudagraph_bytes == CUDAGRAPH_BYTES
    assert eager.cudagraph_bytes == 0
    assert eager.kv_cache_bytes - graphs.kv_cache_bytes == CUDAGRAPH_BYTES  # inside the budget


def test_graphs_outside_the_budget_before_0_20_on_cuda():
    graphs = estimate(spec(vllm_version="0.19.1"))
    eager = estimate(spec(vllm_version="0.19.1", enforce_eager=True))
    assert graphs.kv_cache_bytes == eager.kv_cache_bytes  # not budgeted ...
    assert graphs.used_bytes - eager.used_bytes == CUDAGRAPH_BYTES  # ... but on the GPU
    assert graphs.used_bytes == graphs.budget_bytes + graphs.baseline_bytes + CUDAGRAPH_BYTES
    inside = estimate(spec(vllm_version="0.20.0"))
    assert inside.used_bytes == inside.budget_bytes + inside.baseline_bytes


@pytest.mark.parametrize(("version", "inside"), [("0.25.1", False), ("0.26.0", True)])
def test_graphs_enter_the_budget_on_rocm_only_from_0_26(version, inside):
    graphs = estimate(spec(vllm_version=version, platform="rocm"))
    eager = estimate(spec(vllm_version=version, platform="rocm", enforce_eager=True))
    assert (eager.kv_cache_bytes - graphs.kv_cache_bytes == CUDAGRAPH_BYTES) is inside


def test_0_34_sizes_the_kv_cache_from_what_is_free_and_skips_the_free_check():
    s = spec(vllm_version="0.34.0", gpu_memory_utilization=0.5)
    alone = estimate(s)
    squeezed = estimate(with_free_memory(s, alone.budget_bytes - int(4 * GIB)))
    assert squeezed.starts  # no "Free memory on device" refusal: the cache is extensible
    assert alone.kv_cache_bytes - squeezed.kv_cache_bytes == int(4 * GIB)
    assert s.kv_block_size == 64


# ---------------------------------------------------------------- parallelism


@pytest.mark.parametrize(("heads", "kv", "tp", "ok"), [
    (48, 8, 6, False),  # 8 KV heads over 6 ranks: neither a multiple nor a divisor
    (48, 8, 3, False),
    (28, 4, 7, False),  # 4 KV heads at TP 7 (a Qwen2.5-7B shape)
    (32, 8, 4, True), (32, 8, 8, True),
    (32, 8, 16, True),  # 16 ranks over 8 heads: each head replicated twice
    (32, 4, 8, True), (28, 4, 14, False),
])
def test_kv_heads_must_split_over_tensor_parallel_ranks(heads, kv, tp, ok):  # type: ignore[no-untyped-def]
    est = estimate(spec(facts=facts(num_attention_heads=heads, num_kv_heads=kv),
                        tensor_parallel_size=tp, gpu_total_bytes=8 * H100))  # fmt: skip
    if ok:
        assert est.error_kind != "parallelism"
    else:
        assert est.error_kind == "parallelism"
        assert f"The number of KV heads ({kv}) cannot be split over tensor parallel size " \
               f"({tp})" in (est.error or "")


def test_mla_latents_are_replicated_on_every_rank():
    est = estimate(spec(facts=mla_facts(), tensor_parallel_size=8, gpu_total_bytes=8 * H100))
    assert est.error_kind != "parallelism"


def test_parallelism_error_when_heads_not_divisible():
    est = estimate(spec(facts=facts(num_attention_heads=40, num_kv_heads=8),
                        tensor_parallel_size=3))  # fmt: skip
    assert not est.starts
    assert est.error_kind == "parallelism"
    assert est.error == (
        "Total number of attention heads (40) must be divisible by tensor parallel size (3)."
    )
