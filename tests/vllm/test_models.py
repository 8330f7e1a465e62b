"""Tests for gpufleet.vllm.models: parameter counts, KV bytes per token, weight bytes, loading."""

from __future__ import annotations

import ast
import json
import struct
import sys
from pathlib import Path

import pytest

import gpufleet.vllm.models as models
from gpufleet.errors import InputError
from gpufleet.vllm.models import (
    catalog_entry,
    catalog_ids,
    find_model,
    kv_dtype_bytes,
    load_model_dir,
)

GIB = 2**30
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 2048,
    "torch_dtype": "bfloat16",
}


@pytest.fixture(autouse=True)
def _no_real_hf_cache(tmp_path, monkeypatch):
    """Catalog lookups must not see a developer's real Hugging Face cache."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def load_model_dir_from(config: dict, name: str = "m") -> models.ModelFacts:
    """Facts of a config dict, without a folder (config.json as vLLM would read it)."""
    return models._facts_from_config(
        config, model_id=name, where="test config", sources=(), checkpoint_bytes=None
    )


def catalog(model_id: str) -> models.ModelFacts:
    return find_model(model_id)


def write_model(folder: Path, config: dict | str, index_total: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = config if isinstance(config, str) else json.dumps(config)
    (folder / "config.json").write_text(text)
    if index_total is not None:
        index = {"metadata": {"total_size": index_total}, "weight_map": {}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


# ---------------------------------------------------------------- parameter counts

# Published totals: model cards / Hugging Face parameter counts (gemma-3-27b incl. vision tower).
PUBLISHED_PARAMS = {
    "meta-llama/Llama-3.1-8B-Instruct": 8.03e9,
    "meta-llama/Llama-3.3-70B-Instruct": 70.6e9,
    "Qwen/Qwen2.5-7B": 7.61e9,
    "deepseek-ai/DeepSeek-V3": 671e9,
    "mistralai/Mistral-Small-24B-Instruct-2501": 23.6e9,
    "Qwen/Qwen3-32B": 32.8e9,
    "google/gemma-3-27b-it": 27.4e9,
    "Qwen/Qwen3-30B-A3B": 30.5e9,
    "Qwen/Qwen3-235B-A22B": 235e9,
    "openai/gpt-oss-120b": 116.8e9,
    "openai/gpt-oss-20b": 20.9e9,
    "openai/whisper-large-v3": 1.54e9,
    "intfloat/multilingual-e5-large": 560e6,
    "BAAI/bge-reranker-v2-m3": 568e6,
    "facebook/opt-125m": 125e6,
    "mgoin/phi-2-super-marlin": 2.78e9,
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": 1.1e9,
    "meta-llama/Llama-2-7b-hf": 6.74e9,
    "Qwen/Qwen2.5-VL-72B-Instruct": 73.4e9,
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503": 24.0e9,
    "deepseek-ai/DeepSeek-V4-Flash": 284e9,
    "MiniMaxAI/MiniMax-M2": 230e9,
}


@pytest.mark.parametrize(("model_id", "published"), sorted(PUBLISHED_PARAMS.items()))
def test_param_count_within_2_percent_of_published(model_id, published):
    assert catalog(model_id).param_count == pytest.approx(published, rel=0.02)


def test_llama_param_count_is_exact():
    # 2 x vocab x hidden + layers x (attention + gated MLP + 2 norms) + final norm
    assert catalog("meta-llama/Llama-3.1-8B-Instruct").param_count == 8_030_261_248
    assert catalog("meta-llama/Llama-3.3-70B-Instruct").param_count == 70_553_706_496


def test_tied_embeddings_count_one_table():
    tied = catalog("Qwen/Qwen2.5-0.5B-Instruct")
    assert tied.tied_embeddings
    assert tied.params is not None
    assert tied.params.embedding == 151936 * 896


# ---------------------------------------------------------------- KV bytes per token

# vllm-memory.md section 1 "Examples" (bf16 KV); DeepSeek MLA = 61 x 576 x 2 on every rank.
KV_EXAMPLES = [
    ("meta-llama/Llama-3.1-8B-Instruct", 1, 128 * 1024),
    ("meta-llama/Llama-3.1-70B-Instruct", 1, 320 * 1024),
    ("Qwen/Qwen2.5-7B", 1, 56 * 1024),
    ("Qwen/Qwen2.5-32B-Instruct", 1, 256 * 1024),
    ("Qwen/Qwen3-30B-A3B", 1, 96 * 1024),
    ("Qwen/Qwen3-235B-A22B", 1, 188 * 1024),
    ("Qwen/Qwen3-235B-A22B-FP8", 4, 47 * 1024),
    ("deepseek-ai/DeepSeek-V3", 1, 61 * 576 * 2),
    ("deepseek-ai/DeepSeek-R1", 8, 61 * 576 * 2),
    ("microsoft/MAI-DS-R1", 8, 61 * 576 * 2),
]


@pytest.mark.parametrize(("model_id", "tp", "expected"), KV_EXAMPLES)
def test_kv_bytes_per_token_examples(model_id, tp, expected):
    assert catalog(model_id).kv_bytes_per_token(tp=tp) == expected


@pytest.mark.parametrize("model_id", catalog_ids())
def test_catalog_kv_cross_check(model_id):
    """Each entry records a hand-derived bf16 TP1 value; the code must agree with it."""
    expected = catalog_entry(model_id)["kv_bytes_per_token_bf16_tp1"]
    assert catalog(model_id).kv_bytes_per_token() == expected


def test_mla_kv_is_replicated_not_divided_by_tp():
    r1 = catalog("deepseek-ai/DeepSeek-R1")
    assert r1.is_mla and r1.head_dim == 576 and r1.head_dim_v == 0
    assert {r1.kv_bytes_per_token(tp=tp) for tp in (1, 2, 4, 8, 16)} == {61 * 576 * 2}
    assert r1.kv_bytes_per_token_layer(tp=8, kv_bytes=2) == 576 * 2


def test_kv_heads_replicated_when_tp_exceeds_kv_heads():
    qwen = catalog("Qwen/Qwen2.5-7B")  # 4 KV heads
    assert qwen.num_kv_heads == 4
    assert qwen.kv_bytes_per_token(tp=4) == 56 * 1024 // 4
    assert qwen.kv_bytes_per_token(tp=8) == qwen.kv_bytes_per_token(tp=4)


def test_fp8_kv_cache_halves_bytes():
    llama = catalog("meta-llama/Llama-3.1-8B-Instruct")
    for kv_dtype in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        assert llama.kv_bytes_per_token(kv_cache_dtype=kv_dtype) == 64 * 1024
    assert catalog("deepseek-ai/DeepSeek-V3").kv_bytes_per_token(kv_cache_dtype="fp8") == 61 * 576


def test_kv_dtype_bytes_and_unknown_value():
    assert kv_dtype_bytes("auto", 2) == 2
    assert kv_dtype_bytes(None, 4) == 4
    assert kv_dtype_bytes("fp8", 2) == 1
    with pytest.raises(InputError) as err:
        kv_dtype_bytes("int3", 2)
    assert "fp8_e4m3" in str(err.value) and "auto" in str(err.value)


@pytest.mark.parametrize(
    ("model_id", "head_dim", "derived"),
    [
        ("Qwen/Qwen3-32B", 128, 5120 // 64),
        ("google/gemma-3-27b-it", 128, 5376 // 32),
        ("mistralai/Mistral-Small-24B-Instruct-2501", 128, 5120 // 32),
    ],
)
def test_explicit_head_dim_is_honored(model_id, head_dim, derived):
    facts = catalog(model_id)
    assert head_dim != derived
    assert facts.head_dim == facts.head_dim_v == head_dim


def test_qwen3_32b_kv_uses_explicit_head_dim():
    assert catalog("Qwen/Qwen3-32B").kv_bytes_per_token() == 64 * 2 * 8 * 128 * 2


def test_gemma3_sliding_pattern():
    gemma = catalog("google/gemma-3-27b-it")
    assert gemma.sliding_window == 1024
    assert (gemma.num_layers, gemma.num_sliding_layers) == (62, 52)  # every 6th layer global
    assert gemma.kv_bytes_per_token() == 62 * 2 * 16 * 128 * 2  # all layers, full + sliding


def test_gpt_oss_alternating_sliding_layers():
    gpt = catalog("openai/gpt-oss-120b")
    assert (gpt.num_layers, gpt.num_sliding_layers, gpt.sliding_window) == (36, 18, 128)
    assert gpt.head_dim == 64


def test_sliding_window_flags():
    assert catalog("Qwen/Qwen2.5-7B").num_sliding_layers == 0  # use_sliding_window: false
    assert catalog("teknium/OpenHermes-2.5-Mistral-7B").num_sliding_layers == 32  # every layer
    assert catalog("Qwen/Qwen3-32B").sliding_window is None


def test_gemma4_sliding_layers_have_their_own_kv_shape():
    gemma4 = catalog("google/gemma-4-26B-A4B")
    assert (gemma4.num_kv_heads, gemma4.head_dim) == (2, 512)
    assert (gemma4.sliding_num_kv_heads, gemma4.sliding_head_dim) == (8, 256)
    assert gemma4.kv_bytes_per_token() == 5 * 2 * 2 * 512 * 2 + 25 * 2 * 8 * 256 * 2
    assert gemma4.kv_caveat


def test_pooling_models_have_no_kv_cache():
    for model_id in ("BAAI/bge-reranker-v2-m3", "intfloat/multilingual-e5-large"):
        facts = catalog(model_id)
        assert facts.is_pooling
        assert facts.kv_bytes_per_token(tp=1) == 0


def test_whisper_kv_from_decoder_layers():
    whisper = catalog("KBLab/kb-whisper-large")
    assert not whisper.is_pooling
    assert (whisper.num_layers, whisper.num_kv_heads, whisper.head_dim) == (32, 20, 64)
    assert whisper.kv_bytes_per_token() == 32 * 2 * 1280 * 2
    assert whisper.kv_caveat is None  # cross-attention is modelled: encoder frames per request
    assert whisper.encoder_tokens == 1500


# ---------------------------------------------------------------- weight bytes


def test_bf16_weights_match_the_safetensors_total():
    llama = catalog("meta-llama/Llama-3.1-8B-Instruct")
    assert llama.checkpoint_bytes == 16_060_522_496
    assert llama.weight_bytes() == 16_060_522_496
    assert llama.weight_bytes(dtype="float32") == 2 * 16_060_522_496


def test_online_fp8_keeps_embeddings_16_bit():
    llama = catalog("meta-llama/Llama-3.1-8B-Instruct")
    split = llama.params
    assert split is not None
    fp8 = llama.weight_bytes(quantization="fp8")
    assert fp8 == split.linear + split.experts + 2 * (split.embedding + split.small)
    assert 0.55 < fp8 / llama.weight_bytes() < 0.58


def test_awq_checkpoint_weights():
    # HF file listing shows a single model.safetensors of 4.15 GB (rounded)
    awq = catalog("TheBloke/zephyr-7B-beta-AWQ")
    assert awq.checkpoint_quantization == "awq"
    assert awq.weight_bytes() == pytest.approx(4.15e9, rel=0.02)
    assert awq.weight_bytes(quantization="awq_marlin") == awq.weight_bytes()


def test_w8a8_checkpoint_matches_vllm_report():
    # vLLM case: neuralmagic 70B w8a8 at TP1 loaded 67.7229 GiB of weights
    w8a8 = catalog("neuralmagic/Meta-Llama-3.1-70B-Instruct-quantized.w8a8")
    assert w8a8.weight_bytes() / GIB == pytest.approx(67.7229, rel=0.01)


def test_fp8_deepseek_weights_about_one_byte_per_param():
    r1 = catalog("deepseek-ai/DeepSeek-R1")
    assert r1.checkpoint_quantization == "fp8"
    assert 642e9 < r1.weight_bytes() < 690e9
    assert catalog("microsoft/MAI-DS-R1-FP8").weight_bytes() == r1.weight_bytes()


def test_mxfp4_quantizes_only_experts():
    gpt = catalog("openai/gpt-oss-120b")
    split = gpt.params
    assert split is not None
    non_expert = split.embedding + split.linear + split.small
    assert gpt.weight_bytes() == pytest.approx(split.experts * (0.5 + 1 / 32) + 2 * non_expert)


def test_float32_checkpoint_is_served_16_bit():
    reranker = catalog("BAAI/bge-reranker-v2-m3")
    assert reranker.torch_dtype == "float32"
    assert reranker.dtype_bytes("auto") == 2
    assert reranker.weight_bytes() == 2 * reranker.param_count
    assert reranker.weight_bytes(dtype="float32") == 4 * reranker.param_count


def test_fp32_checkpoint_bytes_are_scaled_to_the_serving_dtype(tmp_path):
    config = dict(TINY_LLAMA, torch_dtype="float32")
    facts = load_model_dir(write_model(tmp_path / "m", config, index_total=4_000_000))
    assert facts.weight_bytes() == 2_000_000


def test_quantization_requests_that_vllm_cannot_do():
    with pytest.raises(InputError, match="cannot quantize"):
        catalog("Qwen/Qwen3-32B").weight_bytes(quantization="awq")
    with pytest.raises(InputError, match="already quantized"):
        catalog("TheBloke/zephyr-7B-beta-AWQ").weight_bytes(quantization="gptq")


def test_unknown_dtype_is_an_input_error():
    with pytest.raises(InputError, match="float16"):
        catalog("Qwen/Qwen3-32B").dtype_bytes("float13")


def test_weight_bytes_per_rank():
    llama = catalog("meta-llama/Llama-3.1-8B-Instruct")
    whole = llama.weight_bytes()
    assert llama.weight_bytes_per_rank(1, 1) == whole
    # #10511: 14.96 GiB at TP1, 7.48 GiB per rank at TP2
    assert llama.weight_bytes_per_rank(2, 1) / GIB == pytest.approx(7.48, rel=0.01)
    assert whole / 2 < llama.weight_bytes_per_rank(1, 2) < 0.6 * whole  # one vocab table/stage
    big = catalog("deepseek-ai/DeepSeek-R1")
    assert big.weight_bytes_per_rank(8, 1) == pytest.approx(big.weight_bytes() / 8, rel=0.01)
    with pytest.raises(InputError):
        llama.weight_bytes_per_rank(0, 1)


# ---------------------------------------------------------------- loading a folder


def test_load_model_dir_reads_config_and_index(tmp_path):
    folder = write_model(tmp_path / "tiny", TINY_LLAMA, index_total=123_456)
    facts = load_model_dir(folder, "acme/tiny")
    assert facts.model_id == "acme/tiny"
    assert facts.architecture == "LlamaForCausalLM"
    assert (facts.num_layers, facts.num_kv_heads, facts.head_dim) == (2, 2, 64)
    assert facts.checkpoint_bytes == 123_456
    assert facts.weight_bytes() == 123_456  # the safetensors total wins over the param count
    assert str(folder / "config.json") in facts.sources
    assert str(folder / "model.safetensors.index.json") in facts.sources


def test_single_safetensors_file_gives_checkpoint_bytes(tmp_path):
    folder = write_model(tmp_path / "single", TINY_LLAMA)
    header = b'{"__metadata__":{}}'
    body = b"\0" * 1000
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + body)
    assert load_model_dir(folder).checkpoint_bytes == 1000


def test_load_model_dir_missing_folder(tmp_path):
    with pytest.raises(InputError) as err:
        load_model_dir(tmp_path / "nope")
    assert err.value.where == str(tmp_path / "nope")
    assert err.value.hint


def test_load_model_dir_missing_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as err:
        load_model_dir(tmp_path / "empty")
    assert err.value.where == str(tmp_path / "empty" / "config.json")


def test_load_model_dir_bad_json(tmp_path):
    folder = write_model(tmp_path / "bad", '{"hidden_size": 4096,\n  oops}')
    with pytest.raises(InputError) as err:
        load_model_dir(folder)
    assert err.value.where == f"{folder / 'config.json'}:2:3"
    assert "invalid JSON" in err.value.what


def test_load_model_dir_missing_key(tmp_path):
    config = {k: v for k, v in TINY_LLAMA.items() if k != "hidden_size"}
    folder = write_model(tmp_path / "partial", config)
    with pytest.raises(InputError) as err:
        load_model_dir(folder)
    assert err.value.where == str(folder / "config.json")
    assert "hidden_size" in err.value.what
    assert err.value.hint


def test_load_model_dir_wrong_type(tmp_path):
    folder = write_model(tmp_path / "typed", dict(TINY_LLAMA, num_hidden_layers="32"))
    with pytest.raises(InputError, match="num_hidden_layers"):
        load_model_dir(folder)


# ---------------------------------------------------------------- HF cache and catalog


def fake_hf_cache(home: Path, model_id: str, config: dict, commit: str = "abc123") -> Path:
    repo = home / "hub" / ("models--" + model_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit + "\n")
    return write_model(repo / "snapshots" / commit, config)


def test_find_model_from_hf_cache(tmp_path):
    snapshot = fake_hf_cache(tmp_path, "acme/tiny", TINY_LLAMA)
    facts = find_model("acme/tiny", hf_home=tmp_path)
    assert facts.model_id == "acme/tiny"
    assert str(snapshot / "config.json") in facts.sources
    assert find_model("acme/tiny", "abc123", hf_home=tmp_path).num_layers == 2


def test_find_model_prefers_hf_cache_over_catalog(tmp_path):
    fake_hf_cache(tmp_path, "Qwen/Qwen3-32B", TINY_LLAMA)
    assert find_model("Qwen/Qwen3-32B", hf_home=tmp_path).num_layers == 2
    assert find_model("Qwen/Qwen3-32B", hf_home=tmp_path / "other").num_layers == 64


def test_find_model_reads_hf_home_from_environment(tmp_path, monkeypatch):
    fake_hf_cache(tmp_path, "acme/tiny", TINY_LLAMA)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert find_model("acme/tiny").num_layers == 2


def test_unknown_model_id(tmp_path):
    with pytest.raises(InputError) as err:
        find_model("meta-llama/Llama-3.1-8B-Instrcut", hf_home=tmp_path)
    assert "--config" in (err.value.hint or "")
    assert "meta-llama/Llama-3.1-8B-Instruct" in (err.value.hint or "")  # close match offered


REQUIRED_IDS = [
    "meta-llama/Llama-3.1-8B-Instruct",
    "KBLab/kb-whisper-large",
    "agentica-org/DeepCoder-14B-Preview",
    "mistralai/Devstral-Small-2505",
    "meta-llama/Llama-3.3-70B-Instruct",
    "mistralai/Mistral-Small-24B-Instruct-2501",
    "BAAI/bge-reranker-v2-m3",
    "intfloat/multilingual-e5-large",
    "microsoft/MAI-DS-R1",
    "google/gemma-3-27b-it",
    "Qwen/Qwen3-32B",
]


def test_catalog_covers_the_example_fleet():
    assert set(REQUIRED_IDS) <= set(catalog_ids())


@pytest.mark.parametrize("model_id", catalog_ids())
def test_catalog_entries_are_sourced(model_id):
    entry = catalog_entry(model_id)
    assert entry["model_id"] == model_id
    assert entry["sources"], "every catalog entry says where its numbers come from"
    facts = catalog(model_id)
    assert facts.param_count > 0
    assert any(s.startswith("gpufleet catalog") for s in facts.sources)


def test_catalog_lookup_ignores_case():
    assert catalog_entry("qwen/qwen3-32b")["model_id"] == "Qwen/Qwen3-32B"


def test_models_module_uses_only_the_standard_library():
    tree = ast.parse(Path(models.__file__).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    outside = {
        name
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names and name != "gpufleet.errors"
    }
    assert outside == set()


def test_load_model_dir_config_not_an_object(tmp_path):
    folder = write_model(tmp_path / "list", "[1, 2]")
    with pytest.raises(InputError, match="JSON object") as err:
        load_model_dir(folder)
    assert err.value.where == str(folder / "config.json")


def test_bad_safetensors_index_names_the_index(tmp_path):
    folder = write_model(tmp_path / "idx", TINY_LLAMA)
    (folder / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(InputError) as err:
        load_model_dir(folder)
    assert str(folder / "model.safetensors.index.json") in (err.value.where or "")


# ---------------------------------------------------------------- issue 10: fidelity

TEST_CONFIGS = Path(__file__).resolve().parents[1] / "data" / "hf-configs"
GPT_OSS_20B = {
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "head_dim": 64,
    "hidden_size": 2880, "intermediate_size": 2880, "num_attention_heads": 64,
    "num_key_value_heads": 8, "num_hidden_layers": 24, "num_local_experts": 32,
    "num_experts_per_tok": 4, "vocab_size": 201088, "max_position_embeddings": 131072,
    "sliding_window": 128, "tie_word_embeddings": False,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "quantization_config": {"quant_method": "mxfp4"},
}  # fmt: skip


def test_gemma4_e4b_counts_the_per_layer_input_embeddings():
    """vllm gemma4.py: embed_tokens_per_layer is a 262144 x (42 x 256) vocab-parallel table,
    plus per_layer_model_projection and a replicated gate/projection pair in every layer."""
    facts = load_model_dir(TEST_CONFIGS / "google--gemma-4-E4B-it", "google/gemma-4-E4B-it")
    split = facts.params
    assert split is not None
    assert split.layer_embedding == 262144 * 42 * 256
    assert facts.per_layer_vocab == 262144
    # the text model alone is ~7.5e9 parameters (bf16 14.0 GiB); without the table 4.7e9
    assert 7.4e9 < split.total < 7.6e9
    weights = facts.weight_bytes_per_rank(1, 1) / GIB
    assert 13.9 < weights < 14.1  # vLLM loaded 15.18 GiB incl. the (unconfigured) towers
    # vocab-parallel: the table splits over TP like the token embedding
    assert facts.weight_bytes_per_rank(2, 1) < 0.55 * facts.weight_bytes_per_rank(1, 1)


def test_per_layer_inputs_absent_without_the_keys():
    facts = load_model_dir_from(TINY_LLAMA)
    assert facts.params is not None and facts.params.layer_embedding == 0


def test_gemma4_double_wide_mlp_on_kv_shared_layers():
    """gemma4.py: use_double_wide_mlp doubles intermediate_size on the KV-shared layers."""
    base = {
        "architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text", "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 1000,
        "num_kv_shared_layers": 2, "max_position_embeddings": 4096,
    }  # fmt: skip
    narrow = load_model_dir_from(base).params
    wide = load_model_dir_from(dict(base, use_double_wide_mlp=True)).params
    assert narrow is not None and wide is not None
    assert wide.linear - narrow.linear == 2 * 3 * 64 * 128  # two layers, MLP doubled


def test_gemma4_k_eq_v_layers_allocate_the_v_slot():
    """vLLM's QKVParallelLinear allocates V for attention_k_eq_v full layers (K loaded twice)."""
    cfg = {
        "architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text", "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 2, "head_dim": 16, "global_head_dim": 32,
        "num_global_key_value_heads": 1, "attention_k_eq_v": True, "vocab_size": 1000,
        "layer_types": ["sliding_attention", "full_attention"], "sliding_window": 64,
    }  # fmt: skip
    split = load_model_dir_from(cfg).params
    assert split is not None
    sliding = 64 * (2 * 16 + 2 * 2 * 16) + 2 * 16 * 64
    full = 64 * (2 * 32 + 2 * 1 * 32) + 2 * 32 * 64  # q, k and the V slot
    assert split.linear == sliding + full + 2 * 3 * 64 * 128


def test_gemma3n_per_layer_intermediate_sizes_are_read():
    cfg = {
        "architectures": ["Gemma3nForCausalLM"], "model_type": "gemma3n_text",
        "hidden_size": 64, "intermediate_size": [128, 256], "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
        "vocab_size": 1000, "hidden_size_per_layer_input": 8, "vocab_size_per_layer_input": 500,
        "altup_num_inputs": 4, "laurel_rank": 16, "max_position_embeddings": 4096,
    }  # fmt: skip
    split = load_model_dir_from(cfg).params
    assert split is not None
    assert split.layer_embedding == 500 * 2 * 8
    attention = 2 * (64 * (64 + 64) + 64 * 64)
    mlp = 3 * 64 * (128 + 256)
    altup = 2 * 3 * 64 * 64 + 2 * 2 * 64 * 16  # (n-1) projections x 2, LAuReL pairs
    assert split.linear == attention + mlp + 64 * 2 * 8 + altup


@pytest.mark.parametrize(
    ("platform", "version", "tp", "hidden", "inter"),
    [
        ("rocm", None, 1, 3072, 3072),  # 0.19+: both round_up 256
        ("rocm", "0.19.0", 2, 3072, 1536),
        ("rocm", "0.14.1", 1, 2944, 2944),  # get_padding_alignment() = 128 off gfx950
        ("rocm", "0.11.0", 1, 3072, 3072),
        ("rocm", "0.10.2", 1, 2944, 2944),
        ("rocm", "0.10.1.1", 1, 2880, 2944),  # intermediate only
        ("cuda", "0.19.0", 1, 3072, 2944),  # Marlin rule; fits the Triton-on-Hopper logs
        ("cuda", "0.19.0", 2, 3072, 1536),
    ],
)
def test_mxfp4_expert_padding(platform, version, tp, hidden, inter):
    facts = load_model_dir_from(GPT_OSS_20B)
    assert facts.moe_shape == (24, 32, 2880, 2880)
    extra = facts.mxfp4_padding_bytes(tp, 1, platform, version)
    expected = 24 * 32 * 3 * (hidden * inter - 2880 * (2880 // tp)) * (0.5 + 1 / 32)
    assert extra == pytest.approx(expected, abs=1)
    unpadded = facts.weight_bytes_per_rank(tp, 1) - facts.mxfp4_padding_bytes(tp)
    assert facts.weight_bytes_per_rank(tp, 1, platform=platform, vllm_version=version) == (
        unpadded + extra
    )


@pytest.mark.parametrize(
    ("tp", "reported"),
    [(1, 13.64), (2, 7.01)],  # llm-d-planner v0.19.0 H100 logs (tests/data/vllm_cases_more.yaml)
)
def test_gpt_oss_20b_weights_match_vllm_on_h100(tp, reported):
    facts = load_model_dir_from(GPT_OSS_20B)
    assert facts.weight_bytes_per_rank(tp, 1) / GIB < reported * 1.04  # ROCm rule pads more
    got = facts.weight_bytes_per_rank(tp, 1, platform="cuda", vllm_version="0.19.0") / GIB
    assert got == pytest.approx(reported, rel=0.01)


def test_no_mxfp4_padding_for_other_checkpoints():
    assert load_model_dir_from(TINY_LLAMA).mxfp4_padding_bytes(1) == 0
    dense = dict(GPT_OSS_20B)
    del dense["quantization_config"]
    assert load_model_dir_from(dense).mxfp4_padding_bytes(1) == 0


@pytest.mark.parametrize(
    ("extra", "limit"),
    [
        ({}, 32768),  # Qwen2.5-72B-Instruct as shipped (vllm#8793: 131072 refused)
        ({"rope_scaling": {"type": "yarn", "factor": 4.0,
                           "original_max_position_embeddings": 32768}}, 131072),  # model card
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, 131072),  # original absent
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, 65536),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, 65536),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                           "original_max_position_embeddings": 8192}}, 32768),
        ({"rope_scaling": {"type": "su", "long_factor": [1.0], "short_factor": [1.0]}}, 32768),
        ({"rope_scaling": {"type": "longrope", "factor": 4.0}}, 32768),
        ({"rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}, 32768),
        ({"rope_scaling": {"rope_type": "default", "factor": None}}, 32768),
        ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 2.0},
                              "sliding_attention": {"rope_type": "default"}}}, 65536),
        ({"model_max_length": 16384}, 16384),
        ({"seq_length": 8192}, 8192),
    ],
)  # fmt: skip
def test_derived_max_model_len_follows_vllm(extra, limit):
    raw = json.loads((TEST_CONFIGS / "Qwen--Qwen2.5-72B-Instruct" / "config.json").read_text())
    assert models.derived_max_model_len({**raw, **extra}) == limit
    assert load_model_dir_from({**raw, **extra}).max_position_embeddings == limit


def test_qwen3_30b_a3b_with_yarn_factor_4_accepts_131072():
    """code39152366792: --rope-scaling yarn factor 4 (original 32768) -> 131072 accepted; the
    stock config's 40960 refuses it."""
    raw = catalog_entry("Qwen/Qwen3-30B-A3B")["config"]
    assert models.derived_max_model_len(raw) == 40960
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert models.derived_max_model_len({**raw, "rope_scaling": yarn}) == 131072


def test_gemma3_rope_factor_is_not_applied_again():
    raw = {"model_type": "gemma3_text", "max_position_embeddings": 131072,
           "rope_scaling": {"rope_type": "linear", "factor": 8.0}}  # fmt: skip
    assert models.derived_max_model_len(raw) == 131072


def test_gpt_oss_yarn_limit_is_original_times_factor():
    raw = dict(GPT_OSS_20B, rope_scaling={"rope_type": "yarn", "factor": 32.0,
                                          "original_max_position_embeddings": 4096})  # fmt: skip
    assert models.derived_max_model_len(raw) == 131072


def test_longrope_default_max_model_len_is_the_original():
    raw = dict(TINY_LLAMA, max_position_embeddings=131072, original_max_position_embeddings=4096,
               rope_scaling={"type": "longrope", "long_factor": [1.0], "short_factor": [1.0]})
    facts = load_model_dir_from(raw)
    assert (facts.max_position_embeddings, facts.default_max_model_len) == (131072, 4096)
    assert load_model_dir_from(TINY_LLAMA).default_max_model_len is None


@pytest.mark.parametrize(
    "rope", [{"rope_type": "yarn", "factor": "4"}, {"rope_type": "dynamic", "factor": -1.0}, "x"]
)
def test_bad_rope_scaling_is_an_input_error(rope):
    with pytest.raises(InputError, match="rope_scaling|factor"):
        load_model_dir_from(dict(TINY_LLAMA, rope_scaling=rope))


def test_no_length_key_gives_none():
    raw = {k: v for k, v in TINY_LLAMA.items() if k != "max_position_embeddings"}
    assert models.derived_max_model_len(raw) is None


def _real_values(model_id: str) -> dict[str, object]:
    """Values read from a public copy of the model's OWN config.json: a folder of the same
    name in tests/data/hf-configs, and/or the entry's `real_config.values` (with its sources)."""
    entry = catalog_entry(model_id)
    values: dict[str, object] = {}
    folder = TEST_CONFIGS / model_id.replace("/", "--", 1)
    if (folder / "config.json").is_file():
        values.update(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    real = entry.get("real_config")
    if real is not None:
        assert real.get("sources"), f"{model_id}: real_config without sources"
        values.update(real["values"])
    return values


CHECKED = [m for m in catalog_ids() if _real_values(m)]


def test_catalog_real_config_checks_cover_the_entries_with_a_public_config():
    assert {"Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-72B-Instruct",
            "google/gemma-4-E4B-it"} <= set(CHECKED)  # fmt: skip


@pytest.mark.parametrize("model_id", CHECKED)
def test_catalog_entry_matches_its_real_config(model_id):
    """A catalog entry (composed from a sibling or not) must agree with every key that a public
    copy of its own config.json states; keys the entry lacks are only reported if memory
    relevant ones (the shape keys) are missing."""
    config = models._text_config(catalog_entry(model_id)["config"])
    real = models._text_config(_real_values(model_id))
    shape = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "vocab_size", "max_position_embeddings")  # fmt: skip
    for key, value in real.items():
        if key in config or key in shape:
            assert config.get(key) == value, (model_id, key)
