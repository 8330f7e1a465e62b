"""`vllm serve` flags as vLLM's own parser has them (names, short forms, choices, defaults).

Unknown flags fail as argparse does in vLLM (exit 2); out-of-range values fail like vLLM's
pydantic config classes (exit 1 with a ValidationError).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc")
QUANTIZATIONS = (
    "aqlm", "awq", "deepspeedfp", "tpu_int8", "fp8", "ptpc_fp8", "fbgemm_fp8", "modelopt",
    "modelopt_fp4", "marlin", "bitblas", "gguf", "gptq_marlin_24", "gptq_marlin", "gptq_bitblas",
    "awq_marlin", "gptq", "compressed-tensors", "bitsandbytes", "qqq", "hqq", "experts_int8",
    "ipex", "quark", "moe_wna16", "torchao", "auto-round", "rtn", "inc", "mxfp4", "petit_nvfp4",
)  # fmt: skip
LOAD_FORMATS = (
    "auto", "pt", "safetensors", "npcache", "dummy", "tensorizer", "sharded_state", "gguf",
    "bitsandbytes", "mistral", "runai_streamer", "runai_streamer_sharded", "fastsafetensors",
)  # fmt: skip
TASKS = ("auto", "generate", "embedding", "embed", "classify", "score", "reward",
         "transcription", "draft")
PYDANTIC_DOCS = "https://errors.pydantic.dev/2.11/v"


class ConfigError(Exception):
    """A value vLLM's config classes reject; str() is the text vLLM prints."""


def human_int(text: str) -> int:
    """vLLM's human-readable ints: 32k = 32000, 32K = 32768, plain digits as they are."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid human-readable integer: {text!r}")
    number, unit = float(match[1]), match[2]
    scale = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
             "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(unit, 1)
    return int(number * scale)


def _json_dict(text: str) -> dict[str, object]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


class _Parser(argparse.ArgumentParser):
    """vLLM's FlexibleArgumentParser also takes --max_model_len for --max-model-len."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def,override]
        fixed = [re.sub(r"^(--[^=]+)", lambda m: m[1].replace("_", "-"), a) if a.startswith("--")
                 else a for a in (args or [])]
        return super().parse_args(fixed, namespace)


def _bool(parser: argparse.ArgumentParser, *names: str) -> None:
    parser.add_argument(*names, action=argparse.BooleanOptionalAction, default=None)


def _server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None)
    p.add_argument("--uvicorn-log-level", default="info",
                   choices=("debug", "info", "warning", "error", "critical", "trace"))
    p.add_argument("--disable-uvicorn-access-log", action="store_true")
    p.add_argument("--disable-log-requests", action="store_true")
    p.add_argument("--enable-log-requests", action="store_true")
    p.add_argument("--disable-log-stats", action="store_true")
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--chat-template", default=None)
    p.add_argument("--enable-auto-tool-choice", action="store_true")
    p.add_argument("--tool-call-parser", default=None)
    p.add_argument("--reasoning-parser", default=None)
    p.add_argument("--root-path", default=None)
    p.add_argument("--allowed-origins", type=json.loads, default=["*"])


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None)
    p.add_argument("--revision", default=None)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--tokenizer-mode", default="auto",
                   choices=("auto", "slow", "mistral", "custom"))
    p.add_argument("--config-format", default="auto", choices=("auto", "hf", "mistral"))
    p.add_argument("--load-format", default="auto", choices=LOAD_FORMATS)
    p.add_argument("--download-dir", default=None)
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    p.add_argument("--quantization", "-q", default=None, choices=QUANTIZATIONS)
    p.add_argument("--max-model-len", type=human_int, default=None)
    p.add_argument("--task", default=None, choices=TASKS)
    p.add_argument("--runner", default="auto", choices=("auto", "generate", "pooling", "draft"))
    p.add_argument("--convert", default="auto",
                   choices=("auto", "none", "embed", "classify", "reward"))
    p.add_argument("--generation-config", default="auto")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--limit-mm-per-prompt", type=_json_dict, default=None)
    p.add_argument("--hf-overrides", type=_json_dict, default=None)
    p.add_argument("--override-pooler-config", "--pooler-config", type=_json_dict, default=None)
    _bool(p, "--trust-remote-code")


def _engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu-memory-utilization", type=float, default=None)
    p.add_argument("--kv-cache-memory-bytes", "--kv-cache-memory", type=human_int, default=None)
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    p.add_argument("--data-parallel-size", "-dp", type=int, default=1)
    p.add_argument("--distributed-executor-backend", default=None,
                   choices=("ray", "mp", "uni", "external_launcher"))
    p.add_argument("--kv-cache-dtype", default="auto", choices=KV_CACHE_DTYPES)
    p.add_argument("--block-size", type=int, default=None, choices=(1, 8, 16, 32, 64, 128))
    p.add_argument("--swap-space", type=float, default=4)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--max-num-batched-tokens", type=human_int, default=None)
    p.add_argument("--attention-backend", default=None)
    _bool(p, "--enforce-eager")
    _bool(p, "--enable-prefix-caching")
    _bool(p, "--enable-chunked-prefill")
    _bool(p, "--enable-expert-parallel")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vllm serve", usage="vllm serve [model_tag] [options]",
                     description="Launch a local OpenAI-compatible API server (vllm-test-double).")
    parser.add_argument("model_tag", nargs="?", default=None)
    _server_flags(parser)
    _model_flags(parser)
    _engine_flags(parser)
    return parser


# ---------------------------------------------------------------- validation (vLLM's configs)


@dataclass(frozen=True)
class _Rule:
    config: str
    field: str
    op: str  # gt | ge | le
    bound: float


RULES = (
    _Rule("CacheConfig", "gpu_memory_utilization", "gt", 0),
    _Rule("CacheConfig", "gpu_memory_utilization", "le", 1),
    _Rule("CacheConfig", "swap_space", "ge", 0),
    _Rule("ParallelConfig", "tensor_parallel_size", "ge", 1),
    _Rule("ParallelConfig", "pipeline_parallel_size", "ge", 1),
    _Rule("SchedulerConfig", "max_num_seqs", "ge", 1),
    _Rule("SchedulerConfig", "max_num_batched_tokens", "ge", 1),
    _Rule("ModelConfig", "max_model_len", "ge", 1),
    _Rule("CacheConfig", "kv_cache_memory_bytes", "ge", 0),
)
_WORDS = {"gt": ("greater than", "greater_than"), "ge": ("greater than or equal to",
          "greater_than_equal"), "le": ("less than or equal to", "less_than_equal")}


def _breaks(rule: _Rule, value: float) -> bool:
    return {"gt": value <= rule.bound, "ge": value < rule.bound, "le": value > rule.bound}[rule.op]


def _pydantic(rule: _Rule, value: float) -> str:
    words, kind = _WORDS[rule.op]
    bound = int(rule.bound) if float(rule.bound).is_integer() else rule.bound
    return (
        f"pydantic_core._pydantic_core.ValidationError: 1 validation error for {rule.config}\n"
        f"{rule.field}\n  Input should be {words} {bound} [type={kind}, input_value={value}, "
        f"input_type={type(value).__name__}]\n    For further information visit "
        f"{PYDANTIC_DOCS}/{kind}"
    )


def validate(args: argparse.Namespace) -> None:
    """Raise ConfigError with vLLM's text for the first value its configs reject."""
    for rule in RULES:
        value = getattr(args, rule.field)
        if value is not None and _breaks(rule, value):
            raise ConfigError(_pydantic(rule, value))
    if args.enable_auto_tool_choice and not args.tool_call_parser:
        raise ConfigError("TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser")
    if not args.model:
        raise ConfigError("ValueError: No model was given: `vllm serve MODEL`")


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse `vllm serve` arguments (SystemExit 2 on unknown flags, like vLLM)."""
    args = build_parser().parse_args(argv)
    args.model = args.model_tag or args.model
    args.api_key = args.api_key or os.environ.get("VLLM_API_KEY") or None
    return args
