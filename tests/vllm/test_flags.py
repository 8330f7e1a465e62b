"""`extra_args` are parsed, not pasted: only known `vllm serve` flags, none the plan decides."""

from __future__ import annotations

import ast
import inspect
import re

import pytest
import yaml

from gpufleet import inventory
from gpufleet.errors import InputError
from gpufleet.plan import build_plan
from gpufleet.vllm import flags as vllm_flags

INVENTORY = """\
fleet: {{name: t, vllm_version: "0.19.1"}}
hosts:
  h1:
    address: h1.example
    gpu_count: 2
    services:
      - name: chat
        kind: {kind}
        model: Qwen/Qwen2.5-0.5B-Instruct
        gpus: [0]
        port: 8000
        gpu_memory_utilization: 0.3
        max_model_len: 4096
        extra_args: {args}
"""


def text(args: list[str], kind: str = "llm") -> str:
    body = INVENTORY.format(kind=kind, args=yaml.safe_dump(args, default_flow_style=True).strip())
    if kind in ("llm", "embed", "rerank", "whisper"):
        return body
    return body.replace("        model: Qwen/Qwen2.5-0.5B-Instruct\n", "").replace(
        "gpu_memory_utilization: 0.3\n        max_model_len: 4096\n",
        "memory_gib: 1.0\n        command: [/bin/tool]\n")


def refused(args: list[str], kind: str = "llm") -> str:
    with pytest.raises(InputError) as info:
        inventory.loads(text(args, kind), "inv.yml")
    assert info.value.exit_status == 2
    return str(info.value)


def accepted(args: list[str], kind: str = "llm") -> inventory.Inventory:
    return inventory.loads(text(args, kind), "inv.yml")


def test_gpu_memory_utilization_in_extra_args_points_at_the_key(tmp_path, cli):
    message = refused(["--gpu-memory-utilization", "0.5"])
    assert message.startswith("inv.yml:14:")
    assert "extra_args sets --gpu-memory-utilization" in message
    assert "gpu_memory_utilization" in message.split("hint:")[1]
    path = tmp_path / "inv.yml"
    path.write_text(text(["--gpu-memory-utilization", "0.5"]))
    result = cli("plan", str(path))
    assert result.exit_status == 2
    assert f"{path}:14:" in result.stderr


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--gpu-memory-utilization=0.5"], "gpu_memory_utilization"),
        (["--max_model_len", "8192"], "max_model_len"),
        (["--max-model-len=8k"], "max_model_len"),
        (["-tp", "2"], "tensor_parallel_size"),
        (["--tensor-parallel-size", "2"], "tensor_parallel_size"),
        (["-pp=2"], "pipeline_parallel_size"),
        (["--dtype", "half"], "dtype"),
        (["-q", "fp8"], "quantization"),
        (["--quantization=awq"], "quantization"),
        (["--kv-cache-dtype", "fp8"], "kv_cache_dtype"),
        (["--kv-cache-memory", "1G"], "kv_cache_memory_bytes"),
        (["--kv_cache_memory_bytes=1"], "kv_cache_memory_bytes"),
        (["--port", "9000"], "port"),
        (["--host", "0.0.0.0"], "bind"),
        (["--max-num-seqs", "4"], "max_num_seqs"),
        (["--max-num-batched-tokens", "4096"], "max_num_batched_tokens"),
        (["--enforce-eager"], "enforce_eager"),
        (["--no-enforce-eager"], "enforce_eager"),
        (["--model", "x/y"], "model"),
        (["--revision", "abc"], "revision"),
        (["--served-model-name", "alias"], "under its id"),
        (["--api-key", "s3cret"], "VLLM_API_KEY"),
        (["--hf-token", "hf_x"], "HF_TOKEN"),
        (["--task", "embed"], "kind"),
        (["--config", "/etc/vllm.yaml"], "config file"),
    ],
)
def test_flags_the_plan_decides_point_at_the_inventory_key(args, key):
    message = refused(args)
    assert "which the plan decides" in message
    assert key in message.split("hint:")[1]


def test_an_unknown_flag_names_the_nearest_known_ones():
    message = refused(["--enable-prefx-caching"])
    assert message.startswith("inv.yml:14:")
    assert "'--enable-prefx-caching' is not a `vllm serve` flag" in message
    assert "--enable-prefix-caching" in message.split("hint:")[1]


def test_an_unknown_underscore_flag_is_named_as_written():
    assert "'--no_such_flag'" in refused(["--no_such_flag=1"])


def test_a_positional_word_is_refused():
    message = refused(["--enable-prefix-caching", "other/model"])
    assert "positional argument 'other/model'" in message


def test_boolean_flags_take_no_value_and_value_flags_need_one():
    assert "takes no value" in refused(["--enable-prefix-caching=true"])
    assert "needs a value" in refused(["--attention-backend"])
    assert "needs a value" in refused(["--attention-backend", "--enable-prefix-caching"])


@pytest.mark.parametrize("word", ["--x\n--gpu-memory-utilization", "a\rb", "a\x00b"])
def test_control_characters_are_refused_for_every_kind(word):
    for kind in ("llm", "docling", "custom"):
        assert "control character" in refused([word], kind)


@pytest.mark.parametrize(
    "args",
    [
        ["--enable-prefix-caching"],
        ["--no-enable-prefix-caching"],
        ["--attention-backend", "TRITON_ATTN"],
        ["--attention-backend=TRITON_ATTN"],
        ["--trust-remote-code", "--seed", "-1"],
        ["-O3"],
        ["--compilation-config.level", "3"],
        ["--compilation-config", '{"level": 3}'],
        ["--hf-overrides", '{"rope_scaling": null}'],
        ["--cuda-graph-sizes", "1", "2", "4", "--enable-chunked-prefill"],
        ["--enable_chunked_prefill", "--limit-mm-per-prompt", '{"image": 2}'],
    ],
)
def test_known_flags_are_accepted(args):
    assert accepted(args).hosts["h1"].services[0].extra_args == args


def test_docling_extra_args_stay_free_text():
    args = ["--enable-ui", "x y", "anything=goes", "--gpu-memory-utilization", "0.5"]
    for kind in ("docling", "custom"):
        assert accepted(args, kind).hosts["h1"].services[0].extra_args == args


def test_every_flag_of_the_lab_double_is_in_the_table():
    from gpufleet_lab.vllm_double.vllm.args import build_parser

    known = set(vllm_flags.FLAGS) | set(vllm_flags.SHORT)
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option in ("-h", "--help"):
                continue
            if option.startswith("--no-"):  # BooleanOptionalAction's negative form
                assert vllm_flags.canonical(option) == ("--" + option[5:], None, True), option
                continue
            assert option in known, option


def test_the_product_does_not_import_the_lab():
    tree = ast.parse(inspect.getsource(vllm_flags))
    names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [n for n in names if "lab" in n]


def test_aiter_whisper_hint_sees_the_equals_spelling():
    base = text(["--attention-backend=TRITON_ATTN"]).replace("kind: llm", "kind: whisper")
    base = base.replace("Qwen/Qwen2.5-0.5B-Instruct", "openai/whisper-large-v3").replace(
        "max_model_len: 4096", "max_model_len: 448\n        env: {VLLM_ROCM_USE_AITER: '1'}")
    codes = {f.code for f in build_plan(inventory.loads(base, "inv.yml")).findings}
    assert "whisper_aiter" not in codes
    codes = {f.code for f in build_plan(inventory.loads(
        re.sub(r"extra_args: .*", "extra_args: []", base), "inv.yml")).findings}
    assert "whisper_aiter" in codes


def test_planned_args_come_before_the_checked_extra_args():
    plan = build_plan(accepted(["--enable-prefix-caching"]))
    args = plan.hosts[0].services[0].vllm_args
    assert args[-1] == "--enable-prefix-caching"
    assert args.count("--gpu-memory-utilization") == 1
