"""`vllm serve` flags, built from the emulated release's own flag data (_serve_flags.json).

The wheel carries that release's `serve_flags` as gpufleet read them from its source (names,
short forms, arity, types, choices), so the double accepts and rejects what that release does:
unknown flags and bad values fail as argparse does in vLLM (exit 2); out-of-range values fail like
vLLM's pydantic config classes (exit 1 with a ValidationError). The argv rewriting is vLLM's
FlexibleArgumentParser's: `--max_model_len`, `-O3`, dotted JSON keys (`--compilation-config.level
3`, `-O.level=3`), `--json-arg.key+ a,b`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _deps

SPEC_FILE = Path(__file__).with_name("_serve_flags.json")
PYDANTIC_DOCS = "https://errors.pydantic.dev/2.11/v"
Spec = dict[str, Any]

# The attributes the double reads, and the values they had before the parser came from data: a
# release without the flag (--task after 0.11, --swap-space) still leaves its attribute.
DEFAULTS: dict[str, Any] = {
    "model_tag": None, "model": None, "host": None, "port": 8000, "api_key": None,
    "uvicorn_log_level": "info", "disable_uvicorn_access_log": False, "served_model_name": None,
    "enable_auto_tool_choice": False, "tool_call_parser": None, "allowed_origins": ["*"],
    "tokenizer_mode": "auto", "config_format": "auto", "load_format": "auto", "dtype": "auto",
    "task": None, "runner": "auto", "convert": "auto", "generation_config": "auto",
    "max_model_len": None, "gpu_memory_utilization": None, "kv_cache_memory_bytes": None,
    "tensor_parallel_size": 1, "pipeline_parallel_size": 1, "data_parallel_size": 1,
    "kv_cache_dtype": "auto", "block_size": None, "swap_space": 4, "max_num_seqs": None,
    "max_num_batched_tokens": None,
}


class ConfigError(Exception):
    """A value vLLM's config classes reject; str() is the text vLLM prints."""


@functools.lru_cache(maxsize=1)
def load_spec() -> Spec:
    """The emulated release's flags: the wheel's copy, else (a source checkout) the lab's data."""
    if SPEC_FILE.exists():
        return dict(json.loads(SPEC_FILE.read_text(encoding="utf-8")))
    from gpufleet_lab.vllm_double import _build  # not in the wheel: only a checkout gets here

    return _build.serve_spec(_deps.emulated_version())


# ---------------------------------------------------------------- value types (vLLM's names)

_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def human_int(text: str, *, tera: bool = True) -> int:
    """vLLM's human_readable_int: 25.6k = 25600, 32K = 32768 (no decimals with K/M/G/T), plain
    digits as int() has them; t/T only from 0.13 on."""
    units = "kKmMgGtT" if tera else "kKmMgG"
    match = re.fullmatch(rf"(\d+(?:\.\d+)?)([{units}])", text.strip())
    if not match:
        return int(text)  # ValueError: argparse says "invalid human_readable_int value"
    number, suffix = match.groups()
    if suffix in _DECIMAL:
        return int(float(number) * _DECIMAL[suffix])
    if "." in number:
        raise argparse.ArgumentTypeError(
            f"Decimals are not allowed with binary suffixes like {suffix}. Did you mean to use "
            f"{number}{suffix.lower()} instead?")
    return int(number) * _BINARY[suffix]


def _human_type(*, tera: bool, auto: bool) -> Callable[[str], int]:
    def human_readable_int(text: str) -> int:
        return human_int(text, tera=tera)

    def human_readable_int_or_auto(text: str) -> int:
        if text.strip() == "-1" or text.strip().lower() == "auto":
            return -1  # vLLM: fit the longest length the KV cache holds
        return human_int(text, tera=tera)

    return human_readable_int_or_auto if auto else human_readable_int


def json_value(text: str) -> Any:
    """vLLM's parse_type(json.loads): any JSON, else an ArgumentTypeError (exit 2)."""
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"Value {text} cannot be converted to <function loads>.") from None


_PLAIN_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "json": json_value}


def _value_type(name: str, entry: dict[str, Any], spec: Spec) -> Callable[[str], Any]:
    kind = entry.get("type")
    if kind == "human_int":
        quirks = spec.get("parser", {})
        auto = name == "--max-model-len" and bool(quirks.get("max_model_len_auto"))
        return _human_type(tera=bool(quirks.get("tera_suffix")), auto=auto)
    # None: a custom callable the data could not name; it takes the text as it is
    return _PLAIN_TYPES.get(kind or "str", str)


# ---------------------------------------------------------------- one flag from its data


def _arity_kwargs(entry: dict[str, Any]) -> dict[str, Any]:
    arity = entry.get("arity")
    if arity == "bool":
        return {"action": argparse.BooleanOptionalAction if entry.get("negatable")
                else "store_true"}
    if arity == "many":
        return {"nargs": entry.get("nargs", "+")}  # "+" unless the data says otherwise
    kwargs: dict[str, Any] = {}
    if entry.get("value_optional"):
        kwargs.update(nargs="?", const=True)  # vLLM's `bool | str` fields (--hf-token)
    if entry.get("repeatable"):
        kwargs["action"] = "append"
    return kwargs


def add_flag(parser: argparse.ArgumentParser, name: str, entry: dict[str, Any],
             spec: Spec) -> argparse.Action:
    kwargs = _arity_kwargs(entry)
    if entry.get("arity") != "bool":
        kwargs["type"] = _value_type(name, entry, spec)
        if entry.get("choices"):
            kwargs["choices"] = entry["choices"]
    default = None if kwargs.get("action") != "store_true" else False
    return parser.add_argument(name, *entry.get("aliases", []), default=default, **kwargs)


# ---------------------------------------------------------------- FlexibleArgumentParser's argv


def _dashes(arg: str) -> str:
    """--max_model_len=8 -> --max-model-len=8: the name only, up to its first '.'."""
    key, eq, value = arg.partition("=")
    return re.sub(r"(?<=--)[^.]*", lambda m: m[0].replace("_", "-"), key, count=1) + eq + value


def _dash_o_target(spec: Spec) -> tuple[str, bool] | None:
    """(flag, is JSON) that -O belongs to: --compilation-config to 0.11, then
    --optimization-level."""
    for name, entry in spec["serve_flags"].items():
        if "-O" in entry.get("aliases", []):
            return name, entry.get("arity") == "json"
    return None


def _dash_o(arg: str, following: str | None, spec: Spec) -> list[str]:
    """-O3, -O=3, -O 3 as the release spells them: -O.level=3 (JSON -O) or
    --optimization-level 3; -O.x stays a dotted key to 0.11, is -cc.x in 0.12, a level after."""
    target = _dash_o_target(spec)
    if target is None:
        return [arg]
    flag, is_json = target
    if arg.startswith("-O") and arg != "-O":
        if arg[2] == "." and (is_json or spec.get("parser", {}).get("dash_o_dot_to_cc")):
            return [arg] if is_json else ["-cc" + arg[2:]]
        level = arg[3:] if arg[2] == "=" else arg[2:]
        return [f"-O.level={level}"] if is_json else [flag, level]
    if arg == "-O" and following in {"0", "1", "2", "3"}:
        return ["-O.level"] if is_json else [flag]
    return [arg]


def _spellings(argv: list[str], spec: Spec) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            out.append(_dashes(arg))
        elif arg.startswith("-O"):
            out += _dash_o(arg, argv[i + 1] if i + 1 < len(argv) else None, spec)
        else:
            out.append(arg)
    return out


def _nested(keys: list[str], value: Any) -> Any:
    for key in reversed(keys):
        value = {key: value}
    return value


def _merge(original: dict[str, Any], update: dict[str, Any]) -> None:
    """vLLM's recursive_dict_update: dicts merge, lists extend, anything else is replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(original.get(key), dict):
            _merge(original[key], value)
        elif isinstance(value, list) and isinstance(original.get(key), list):
            original[key] += value
        else:
            original[key] = value


def _dotted(arg: str, following: str | None) -> tuple[str, str, bool] | None:
    """(name, value text, value was the next arg) of a dotted key, else None."""
    if not (arg.startswith("-") and "." in arg):
        return None
    if "=" in arg:
        name, value = arg.split("=", 1)
        return (name, value, False) if "." in name else None  # the '.' was in the value
    return None if following is None else (arg, following, True)


def _add_key(merged: dict[str, dict[str, Any]], name: str, text: str) -> None:
    if name.endswith("+"):  # --json-arg.key+ a,b: list elements
        name, text = name[:-1], json.dumps(text.split(","))
    key, *keys = name.split(".")
    try:
        value = json.loads(text)
    except ValueError:
        value = text  # vLLM keeps a non-JSON value as a string
    _merge(merged.setdefault(key, {}), _nested(keys, value))


def _json_keys(args: list[str]) -> list[str]:
    """--cc.level 3 --cc.mode=x -> --cc '{"level": 3, "mode": "x"}', appended as vLLM does."""
    out: list[str] = []
    merged: dict[str, dict[str, Any]] = {}
    i = 0
    while i < len(args):
        found = _dotted(args[i], args[i + 1] if i + 1 < len(args) else None)
        if found is None:
            out.append(args[i])
        else:
            _add_key(merged, found[0], found[1])
        i += 2 if found and found[2] else 1
    return out + [s for key, value in merged.items() for s in (key, json.dumps(value))]


class _Parser(argparse.ArgumentParser):
    """argparse with vLLM's FlexibleArgumentParser's argv rewriting in front."""

    def __init__(self, spec: Spec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def parse_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def,override]
        rewritten = _json_keys(_spellings(list(args or []), self.spec))
        return super().parse_args(rewritten, namespace)


def build_parser(spec: Spec | None = None) -> argparse.ArgumentParser:
    """The `vllm serve` parser of the release in `spec` (default: the one the wheel emulates)."""
    spec = load_spec() if spec is None else spec
    parser = _Parser(spec, prog="vllm serve", usage="vllm serve [model_tag] [options]",
                     description="Launch a local OpenAI-compatible API server "
                     "(vllm-test-double).")
    parser.add_argument("model_tag", nargs="?", default=None)
    for name, entry in spec["serve_flags"].items():
        add_flag(parser, name, entry, spec)
    parser.set_defaults(**DEFAULTS)
    return parser


def release_default(key: str, fallback: Any, spec: Spec | None = None) -> Any:
    """A default of the emulated release's configs (gpu_memory_utilization, block_size)."""
    value = (load_spec() if spec is None else spec).get("defaults", {}).get(key)
    return fallback if value is None else value


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


def _rule_for(rule: _Rule, spec: Spec) -> _Rule:
    """Releases whose --max-model-len takes 'auto' declare max_model_len Field(ge=-1)."""
    if rule.field == "max_model_len" and spec.get("parser", {}).get("max_model_len_auto"):
        return _Rule(rule.config, rule.field, rule.op, -1)
    return rule


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


def validate(args: argparse.Namespace, spec: Spec | None = None) -> None:
    """Raise ConfigError with vLLM's text for the first value its configs reject."""
    spec = load_spec() if spec is None else spec
    for rule in (_rule_for(r, spec) for r in RULES):
        value = getattr(args, rule.field, None)
        if isinstance(value, (int, float)) and _breaks(rule, value):
            raise ConfigError(_pydantic(rule, value))
    if args.enable_auto_tool_choice and not args.tool_call_parser:
        raise ConfigError("TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser")
    if not args.model:
        raise ConfigError("ValueError: No model was given: `vllm serve MODEL`")
    _check_load_format(args, spec)


def _check_load_format(args: argparse.Namespace, spec: Spec) -> None:
    """--load-format is free-form in the parser, but vLLM's model loader refuses a format it
    has no loader for (model_loader/__init__.py get_model_loader): the start fails then."""
    known = spec["serve_flags"].get("--load-format", {}).get("known_values")
    value = getattr(args, "load_format", None)
    if known and value is not None and value not in known:
        raise ConfigError(f"ValueError: Load format `{value}` is not supported")


def api_keys(args: argparse.Namespace) -> list[str]:
    """--api-key takes one key to 0.10.0 and several after; VLLM_API_KEY when none is given."""
    given = args.api_key
    keys = [given] if isinstance(given, str) else list(given or [])
    return keys or [k for k in [os.environ.get("VLLM_API_KEY")] if k]


def parse(argv: list[str], spec: Spec | None = None) -> argparse.Namespace:
    """Parse `vllm serve` arguments (SystemExit 2 on unknown flags, like vLLM)."""
    args = build_parser(spec).parse_args(argv)
    args.model = args.model_tag or args.model
    args.api_key = api_keys(args) or None
    return args
