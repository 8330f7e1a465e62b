"""Hostile model input: config.json files, safetensors sizes, model ids and revisions used as cache
paths, and `estimate` flags. Each ends in a clear InputError (exit 2) or a correct answer, fast."""

from __future__ import annotations

import json
import math
import os
import struct
import time
from pathlib import Path

import pytest
from support import run_cli

from gpufleet.errors import InputError
from gpufleet.vllm.memory import InstanceSpec, estimate
from gpufleet.vllm.models import (
    MAX_JSON_BYTES,
    catalog_ids,
    check_model_id,
    check_revision,
    find_model,
    load_model_dir,
)
from gpufleet.vllm.releases import check_vllm_version, parse_version

TINY = {
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
MOE = dict(TINY, num_experts=4, moe_intermediate_size=128, model_type="qwen3_moe")


@pytest.fixture(autouse=True)
def _no_real_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def model_dir(folder: Path, config: dict | str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(config, dict):
        config = json.dumps(config)
    data = config if isinstance(config, bytes) else config.encode()
    (folder / "config.json").write_bytes(data)
    return folder


def load_error(folder: Path) -> InputError:
    start = time.monotonic()
    with pytest.raises(InputError) as info:
        load_model_dir(folder)
    assert time.monotonic() - start < 5
    return info.value


def assert_cli_exit_2(*args: str) -> None:
    result = run_cli(*args)
    assert result.exit_status == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- config.json values


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("num_attention_heads", 0, "is 0"),
        ("num_key_value_heads", 0, "is 0"),
        ("num_hidden_layers", 0, "is 0"),
        ("hidden_size", -1, "is -1"),
        ("intermediate_size", -5, "is -5"),
        ("vocab_size", -1000, "is -1000"),
        ("num_hidden_layers", "32", "must be an integer"),
        ("num_hidden_layers", [32], "must be an integer"),
        ("num_hidden_layers", True, "must be an integer"),
        ("num_hidden_layers", 32.0, "must be an integer"),
        ("hidden_size", {"a": 1}, "must be an integer"),
        ("num_hidden_layers", 10**12, "10,000"),
        ("hidden_size", 10**7, "1,000,000"),
        ("vocab_size", 10**8, "10,000,000"),
        ("num_attention_heads", 10**6, "100,000"),
        ("max_position_embeddings", 10**15, "must be"),
        ("head_dim", 0, "is 0"),
        ("sliding_window", "4096", "must be an integer"),
        ("torch_dtype", ["bfloat16"], "must be a string"),
    ],
)
def test_bad_config_values_name_file_and_key(tmp_path, key, value, what):
    folder = model_dir(tmp_path / "m", dict(TINY, **{key: value}))
    err = load_error(folder)
    assert err.where == str(folder / "config.json")
    assert key in err.what and what in err.what


@pytest.mark.parametrize("key", ["num_attention_heads", "hidden_size", "vocab_size"])
def test_missing_keys_name_the_key(tmp_path, key):
    folder = model_dir(tmp_path / "m", {k: v for k, v in TINY.items() if k != key})
    err = load_error(folder)
    assert f"missing key '{key}'" in err.what


def test_nan_and_infinity_in_config_json(tmp_path):
    for literal in ("NaN", "Infinity", "-Infinity"):
        text = json.dumps(TINY).replace('"num_hidden_layers": 2', f'"num_hidden_layers": {literal}')
        err = load_error(model_dir(tmp_path / literal, text))
        assert "num_hidden_layers" in err.what


def test_more_heads_than_hidden_size(tmp_path):
    err = load_error(model_dir(tmp_path / "m", dict(TINY, hidden_size=2, num_attention_heads=4,
                                                      num_key_value_heads=4)))  # fmt: skip
    assert "head" in err.what


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"n_shared_experts": "9" * 50}, "n_shared_experts"),  # str * int: a memory bomb
        ({"shared_expert_intermediate_size": "x"}, "shared_expert_intermediate_size"),
        ({"num_experts": [1, 2]}, "num_experts"),
        ({"first_k_dense_replace": "1"}, "first_k_dense_replace"),
        ({"mlp_only_layers": 5}, "mlp_only_layers"),
        ({"moe_intermediate_size": -1}, "moe_intermediate_size"),
    ],
)
def test_bad_moe_values(tmp_path, extra, key):
    err = load_error(model_dir(tmp_path / "m", dict(MOE, **extra)))
    assert key in err.what


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"layer_types": "sliding_attention", "sliding_window": 64}, "layer_types"),
        ({"layer_types": ["sliding_attention"], "sliding_window": 64}, "layer_types"),
        ({"sliding_window": 64, "sliding_window_pattern": "2"}, "sliding_window_pattern"),
        ({"vision_config": {"depth": "32", "hidden_size": 8, "intermediate_size": 8}}, "depth"),
        (
            {
                "vision_config": {
                    "depth": 2,
                    "hidden_size": 8,
                    "intermediate_size": 8,
                    "patch_size": 10**9,
                }
            },
            "patch_size",
        ),  # fmt: skip
        ({"quantization_config": {"quant_method": "gptq", "bits": "4"}}, "bits"),
        ({"quantization_config": {"quant_method": "gptq", "bits": 4096}}, "bits"),
        ({"quantization_config": {"quant_method": "awq", "group_size": "x"}}, "group_size"),
        ({"quantization_config": {"quant_method": ["gptq"]}}, "quant_method"),
        (
            {
                "quantization_config": {
                    "quant_method": "compressed-tensors",
                    "config_groups": {"g": {"weights": {"num_bits": "8"}}},
                }
            },
            "num_bits",
        ),  # fmt: skip
    ],
)
def test_bad_nested_values(tmp_path, extra, key):
    err = load_error(model_dir(tmp_path / "m", dict(TINY, **extra)))
    assert key in err.what
    assert err.where == str(tmp_path / "m" / "config.json")


def test_a_false_sliding_window_means_none(tmp_path):
    facts = load_model_dir(model_dir(tmp_path / "m", dict(TINY, sliding_window=False)))
    assert facts.sliding_window is None and facts.num_sliding_layers == 0


# ---------------------------------------------------------------- config.json as a file


@pytest.mark.parametrize("text", ['{"hidden_size": 4', "[1, 2]", '"x"', "1", "null", ""])
def test_truncated_or_non_object_json(tmp_path, text):
    err = load_error(model_dir(tmp_path / "m", text))
    assert err.where and err.where.startswith(str(tmp_path / "m" / "config.json"))
    assert "JSON" in err.what


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"hidden_size": ' + "9" * 5000 + "}", b'{"model_type": "caf\xe9"}'],
)
def test_json_that_breaks_the_parser(tmp_path, text):
    err = load_error(model_dir(tmp_path / "m", text))
    assert err.where == str(tmp_path / "m" / "config.json")


def test_huge_config_json_is_capped(tmp_path):
    folder = model_dir(tmp_path / "m", b" " * (MAX_JSON_BYTES + 1))
    err = load_error(folder)
    assert "larger than 10 MiB" in err.what


def test_config_path_is_a_file(tmp_path):
    folder = model_dir(tmp_path / "m", TINY)
    err = load_error(folder / "config.json")
    assert "not a folder" in err.what
    assert_cli_exit_2("estimate", "--config", str(folder / "config.json"))


def test_config_json_is_a_folder_or_a_fifo(tmp_path):
    (tmp_path / "a" / "config.json").mkdir(parents=True)
    assert "not a regular file" in load_error(tmp_path / "a").what
    (tmp_path / "b").mkdir()
    os.mkfifo(tmp_path / "b" / "config.json")  # reading it would block forever
    assert "not a regular file" in load_error(tmp_path / "b").what
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").symlink_to("/dev/zero")
    assert "not a regular file" in load_error(tmp_path / "c").what


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_config_json(tmp_path):
    folder = model_dir(tmp_path / "m", TINY)
    (folder / "config.json").chmod(0)
    assert "cannot read" in load_error(folder).what


# ---------------------------------------------------------------- checkpoint sizes


def safetensors(folder: Path, data: bytes) -> None:
    (folder / "model.safetensors").write_bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01" * 8,
        b"\xff" * 9,  # the reproducer: weights_gib -17179869184 before
        struct.pack("<Q", 1000) + b"{}",  # header longer than the file
        struct.pack("<Q", 2) + b"[]" + b"\0" * 100,  # not a JSON object header
        struct.pack("<Q", 2) + b"{}",  # no tensor data at all
    ],
)
def test_inconsistent_safetensors_is_an_error(tmp_path, data):
    folder = model_dir(tmp_path / "m", TINY)
    safetensors(folder, data)
    err = load_error(folder)
    assert err.where == str(folder / "model.safetensors")


def test_nine_byte_safetensors_in_estimate_json(tmp_path):
    folder = model_dir(tmp_path / "m", TINY)
    safetensors(folder, b"\xff" * 9)
    result = run_cli("estimate", "--config", str(folder), "--json")
    assert result.exit_status == 2
    assert result.stdout == ""  # no JSON with a negative weight size
    assert "model.safetensors" in result.stderr


def test_consistent_safetensors_still_counts(tmp_path):
    folder = model_dir(tmp_path / "m", TINY)
    header = b'{"__metadata__":{}}  '
    safetensors(folder, struct.pack("<Q", len(header)) + header + b"\0" * 4096)
    assert load_model_dir(folder).checkpoint_bytes == 4096


@pytest.mark.parametrize(
    "total", ["-1", '"123"', "NaN", "1.5", "true", "0", str(10**20), "[1]", "Infinity"]
)
def test_bad_index_total_size(tmp_path, total):
    folder = model_dir(tmp_path / "m", TINY)
    (folder / "model.safetensors.index.json").write_text(
        '{"metadata": {"total_size": ' + total + '}, "weight_map": {}}'
    )
    err = load_error(folder)
    assert err.where == str(folder / "model.safetensors.index.json")
    assert "total_size" in err.what


@pytest.mark.parametrize("index", ["[1]", '{"metadata": 5}', '{"metadata": []}'])
def test_bad_index_shape(tmp_path, index):
    folder = model_dir(tmp_path / "m", TINY)
    (folder / "model.safetensors.index.json").write_text(index)
    assert load_error(folder).where == str(folder / "model.safetensors.index.json")


def test_index_without_total_size_falls_back_to_the_architecture(tmp_path):
    folder = model_dir(tmp_path / "m", TINY)
    (folder / "model.safetensors.index.json").write_text('{"metadata": {}, "weight_map": {}}')
    assert load_model_dir(folder).checkpoint_bytes is None


# ---------------------------------------------------------------- model ids and revisions


@pytest.mark.parametrize(
    "model_id",
    ["meta-llama/Llama-3.1-8B-Instruct", "gpt2", "a/b", "org_x/m.v1_2", "o/" + "n" * 96,
     "Qwen/Qwen2.5-0.5B-Instruct", "_a/_b"],
)  # fmt: skip
def test_valid_model_ids(model_id):
    assert check_model_id(model_id) == model_id


def test_every_catalog_id_is_valid():
    for model_id in catalog_ids():
        check_model_id(model_id)


@pytest.mark.parametrize(
    "model_id",
    ["../../etc", "..", ".", "/etc/passwd", "/abs", "a/../b", "a/b/c", "", "-a/b", "a-/b",
     "a./b", "a/b-", "a/.b", ".hidden/x", "a--b/c", "a/b..c", "a b/c", "a/b\n", "a/b\x00",
     "x" * 97, "o/" + "n" * 97, "org/", "/name", "C:\\x", "~root/x", "a/[red]", "a/ü", None, 3],
)  # fmt: skip
def test_invalid_model_ids(model_id):
    with pytest.raises(ValueError):
        check_model_id(model_id)


@pytest.mark.parametrize(
    "revision", ["0e9e39f249a16976918f6564b8830bc894c89659", "main", "v1.0", "refs/pr/1",
                 "feature/x", "abc123", "release-2024_01"],
)  # fmt: skip
def test_valid_revisions(revision):
    assert check_revision(revision) == revision


@pytest.mark.parametrize(
    "revision",
    ["../../x", "..", "a/../b", "/abs", "a//b", "a/", ".hidden", "a/.b", "x.lock", "a b",
     "a\x00b", "a\nb", "a\tb", "-x", "--force", "@", "a@{b", "x~1", "x^", "a:b", "a?b", "a*",
     "a[b", "a\\b", "x" * 300, "", "a.", "ü", None],
)  # fmt: skip
def test_invalid_revisions(revision):
    with pytest.raises(ValueError):
        check_revision(revision)


def write_tiny(folder: Path) -> Path:
    return model_dir(folder, TINY)


def test_revision_cannot_climb_out_of_the_cache(tmp_path):
    home = tmp_path / "home"
    (home / "hub" / "models--acme--tiny" / "snapshots").mkdir(parents=True)
    write_tiny(tmp_path / "outside")
    for revision in ("../../../../outside", str(tmp_path / "outside")):
        with pytest.raises(InputError, match="revision"):
            find_model("acme/tiny", revision, hf_home=home)


def test_model_id_cannot_climb_out_of_the_cache(tmp_path):
    for model_id in ("../../etc", str(tmp_path), "acme/../../x"):
        with pytest.raises(InputError, match="model id"):
            find_model(model_id, hf_home=tmp_path)


def test_a_ref_file_that_points_outside_is_an_error(tmp_path):
    repo = tmp_path / "hub" / "models--acme--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("../../../../outside\n")
    write_tiny(tmp_path / "outside")
    with pytest.raises(InputError, match="does not name a commit"):
        find_model("acme/tiny", hf_home=tmp_path)


def test_branch_refs_with_slashes_still_resolve(tmp_path):
    repo = tmp_path / "hub" / "models--acme--tiny"
    (repo / "refs" / "pr").mkdir(parents=True)
    commit = "0" * 40
    (repo / "refs" / "pr" / "1").write_text(commit)
    write_tiny(repo / "snapshots" / commit)
    assert find_model("acme/tiny", "pr/1", hf_home=tmp_path).num_layers == 2


def test_estimate_rejects_path_like_model_ids():
    for model_id in ("../../etc", "/etc/passwd", "a/b/c"):
        result = run_cli("estimate", "--model", model_id)
        assert result.exit_status == 2
        assert "model id" in result.stderr


# ---------------------------------------------------------------- estimate flags and numbers


@pytest.mark.parametrize(
    "flags",
    [
        ["--util", "nan"], ["--util", "inf"], ["--util=-inf"], ["--util", "0"],
        ["--util", "1.5"], ["--max-model-len", "0"], ["--max-model-len", str(10**30)],
        ["--gpu-mem-gib", "inf"], ["--gpu-mem-gib", "nan"], ["--gpu-mem-gib", "0"],
        ["--gpu-mem-gib=-1"], ["--gpu-mem-gib", "1e-300"], ["--gpu-mem-gib", "1e300"],
        ["--tp", "0"], ["--tp=-1"], ["--tp", "100000"], ["--pp", "0"],
        ["--max-num-seqs", "0"], ["--max-num-batched-tokens", str(10**20)],
        ["--kv-cache-memory-bytes", "0"], ["--kv-cache-memory-bytes=-1"],
        ["--kv-cache-memory-bytes", str(10**20)],
        ["--vllm-version", "1." + "9" * 5000], ["--vllm-version", ""],
        ["--vllm-version", "[red]x"], ["--vllm-version", "0." + "1" * 7 + ".0"],
    ],
)  # fmt: skip
def test_estimate_numeric_flags_are_range_checked(flags):
    start = time.monotonic()
    result = run_cli("estimate", "--model", "Qwen/Qwen2.5-0.5B-Instruct", *flags)
    assert time.monotonic() - start < 10
    assert result.exit_status == 2
    assert result.stderr.startswith("error: --") or "version" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flags", [["--max-model-len", "1e400"], ["--tp", "9" * 5000]])
def test_estimate_non_integer_flags_are_usage_errors(flags, capsys):
    result = run_cli("estimate", "--model", "Qwen/Qwen2.5-0.5B-Instruct", *flags)
    assert result.exit_status == 2
    assert "invalid int value" in capsys.readouterr().err


def test_estimate_in_range_still_works():
    result = run_cli("estimate", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--util", "0.3",
                     "--gpu-mem-gib", "80", "--vllm-version", "0.9.1+rocm", "--json")  # fmt: skip
    assert result.exit_status == 0
    assert json.loads(result.stdout)["weights_gib"] > 0


def test_parse_version_with_thousands_of_digits_is_fast():
    start = time.monotonic()
    with pytest.raises(InputError, match="not a version"):
        parse_version("1." + "9" * 5000)
    with pytest.raises(InputError, match="not a version"):
        parse_version("9" * 100_000)
    assert time.monotonic() - start < 1
    assert parse_version("0.6.3.post1") == (0, 6, 3)
    assert parse_version("0.28.1rc1") == (0, 28, 1)
    assert check_vllm_version("0.9.1+rocm") == "0.9.1+rocm"


@pytest.mark.parametrize(
    "change",
    [
        {"gpu_memory_utilization": math.nan}, {"gpu_memory_utilization": math.inf},
        {"gpu_memory_utilization": 0.0}, {"gpu_total_bytes": 0}, {"gpu_total_bytes": -1},
        {"tensor_parallel_size": 0}, {"pipeline_parallel_size": 0},
        {"max_model_len": 10**400}, {"max_model_len": 0}, {"max_num_seqs": 0},
        {"max_num_batched_tokens": 10**40}, {"kv_cache_memory_bytes": 0}, {"block_size": 0},
        {"vllm_version": "1." + "9" * 5000},
    ],
)  # fmt: skip
def test_estimate_refuses_absurd_specs(change):
    facts = find_model("Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(InputError):
        estimate(InstanceSpec(facts=facts, **change))


INVENTORY = """\
fleet:
  name: lab
hosts:
  h1:
    address: h1.test.example
    gpu_count: 1
    services:
      - name: small
        kind: llm
        model: {model}
        revision: {revision}
        gpus: [0]
        port: 8000
        gpu_memory_utilization: 0.3
        max_model_len: 4096
"""


@pytest.mark.parametrize(
    ("model", "revision", "what"),
    [("../../etc", "null", "model id"), ("/etc/passwd", "null", "model id"),
     ("Qwen/Qwen2.5-0.5B-Instruct", "../../x", "revision"),
     ("Qwen/Qwen2.5-0.5B-Instruct", "'/abs/x'", "revision")],
)  # fmt: skip
def test_plan_refuses_path_like_model_and_revision(tmp_path, model, revision, what):
    path = tmp_path / "inv.yml"
    path.write_text(INVENTORY.format(model=model, revision=revision))
    result = run_cli("plan", str(path))
    assert result.exit_status == 2
    line = "10:16" if what == "model id" else "11:19"  # the key that holds the bad value
    assert f"{path}:{line}: service small: {what}" in result.stderr
