"""vLLM's engine knobs that gpufleet plans with: one row each, read by every part that spells one.

A row ties the inventory key (also the InstanceSpec field) to its `vllm serve` flag and short
forms, its type, bounds and choices, its inventory default and help. From the table come the
inventory schema's fields (`schema_fields`), the units' flags (`to_argv`), `gpufleet import`'s
reading of a running command line (`FLAGS`), `estimate`'s options (`add_estimate_options`,
`estimate_values`), the instance spec's knob fields (`spec_values`), and the extra_args refusals
for flags the plan decides (gpufleet.vllm.flags). Adding a knob is one row here (and its tests).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, Strict, StrictBool, StrictInt, StrictStr

from gpufleet.errors import InputError
from gpufleet.vllm import versions


@dataclass(frozen=True)
class Knob:
    key: str  # inventory key and InstanceSpec field
    flag: str  # `vllm serve` flag
    kind: type  # int, float, str or bool (a bool is a flag without a value)
    help: str
    default: Any = None  # the inventory's default: None means vLLM decides
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the low bound itself is refused (utilization > 0)
    choices: tuple[str, ...] = ()
    pattern: tuple[str, str] | None = None  # (regex, what it allows) for free-form names
    aliases: tuple[str, ...] = ()  # vLLM's short forms (-tp, -pp, -q)
    estimate: str | None = None  # `gpufleet estimate`'s own spelling, when shorter
    always: bool = False  # the plan always writes it (it decides the value)

    @property
    def option(self) -> str:
        return self.estimate or self.flag

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")

    def in_range(self, value: Any) -> bool:
        if self.kind is float and not (isinstance(value, int | float) and math.isfinite(value)):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or value <= self.high

    def bounds(self) -> str:
        low = f"more than {self.low:g}" if self.low_open else f"{self.low:g}"
        return f"{low} to {self.high:g}"


KNOBS: tuple[Knob, ...] = (  # in the order the units write them
    Knob("kv_cache_memory_bytes", "--kv-cache-memory-bytes", int,
         "KV cache size in bytes: replaces the utilization's KV share", low=1, high=2**50),
    Knob("gpu_memory_utilization", "--gpu-memory-utilization", float,
         "share of each GPU's memory the instance may use", low=0, high=1, low_open=True,
         estimate="--util", always=True),
    Knob("max_model_len", "--max-model-len", int, "context length in tokens", low=1,
         high=10**8, always=True),
    Knob("tensor_parallel_size", "--tensor-parallel-size", int, "GPUs the layers are split over",
         default=1, low=1, high=64, aliases=("-tp",), estimate="--tp"),
    Knob("pipeline_parallel_size", "--pipeline-parallel-size", int,
         "GPUs the layer stack is cut over", default=1, low=1, high=64, aliases=("-pp",),
         estimate="--pp"),
    Knob("dtype", "--dtype", str, "weight and activation precision", default="auto",
         choices=("auto", "bfloat16", "float16", "half", "float32")),
    Knob("quantization", "--quantization", str, "the checkpoint's quantization method",
         pattern=(r"[a-z0-9][a-z0-9_-]{0,31}", "a quantization method as vLLM names them "
                  "(lower-case letters, digits, '_', '-'; at most 32), e.g. fp8, awq, gptq"),
         aliases=("-q",)),
    Knob("kv_cache_dtype", "--kv-cache-dtype", str, "KV cache precision (fp8 halves it)",
         default="auto", choices=("auto", "fp8", "fp8_e4m3", "fp8_e5m2")),
    Knob("max_num_seqs", "--max-num-seqs", int, "requests in one batch", low=1, high=10**6),
    Knob("max_num_batched_tokens", "--max-num-batched-tokens", int,
         "tokens in one scheduler step", low=1, high=10**8),
    Knob("enforce_eager", "--enforce-eager", bool, "no CUDA/HIP graphs", default=False),
    Knob("block_size", "--block-size", int, "tokens per KV cache block (the KV cache is whole "
         "blocks; unset: the release's default, 16, or 64 from 0.34.0)", low=1, high=1 << 16),
)
BY_KEY = {k.key: k for k in KNOBS}


def releases_with(knob: Knob) -> tuple[str, ...]:
    """The releases read from vLLM's source (gpufleet.vllm.versions) whose serve parser has the
    knob's flag: the table's "releases that have it" column, from vLLM itself."""
    return tuple(v for v in versions.supported() if versions.release(v).has_flag(knob.flag))


def since(knob: Knob) -> str:
    """`0.10.2+` (every release read from then on), or the list where it comes and goes."""
    have = releases_with(knob)
    later = versions.supported()[versions.supported().index(have[0]):] if have else ()
    return f"{have[0]}+" if have and have == later else ", ".join(have) or "none read"
# `vllm serve` flag (and short form) -> its knob, for reading a running command line.
FLAGS = {name: k for k in KNOBS for name in (k.flag, *k.aliases)}


def to_argv(values: Mapping[str, Any]) -> list[str]:
    """The knobs' flags for these values, in table order: those the plan always decides, and
    the others only when they differ from the inventory's default (vLLM's own then applies)."""
    argv: list[str] = []
    for knob in KNOBS:
        value = values.get(knob.key)
        if value is None or (not knob.always and value == knob.default):
            continue
        if knob.kind is bool:
            argv += [knob.flag] if value else []
        else:
            argv += [knob.flag, f"{value:g}" if knob.kind is float else str(value)]
    return argv


def schema_type(knob: Knob) -> Any:
    """The inventory field's type: strict, bounded, with the table's choices or name rule."""
    kind: Any
    if knob.kind is bool:
        kind = StrictBool
    elif knob.kind is int:
        kind = Annotated[StrictInt, Field(ge=knob.low, le=knob.high)]
    elif knob.kind is float:
        bound = (Field(gt=knob.low, le=knob.high, allow_inf_nan=False) if knob.low_open
                 else Field(ge=knob.low, le=knob.high, allow_inf_nan=False))
        kind = Annotated[float, Strict(), bound]
    elif knob.choices:
        kind = Literal[knob.choices]
    else:
        assert knob.pattern is not None, f"{knob.key}: a free-form string needs a pattern"
        kind = Annotated[StrictStr, AfterValidator(_rule(*knob.pattern))]
    return kind if knob.default is not None else kind | None


def _rule(pattern: str, what: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"not {what}")
        return value

    return check


def schema_fields() -> dict[str, Any]:
    """key -> (type, Field) for pydantic's create_model: the inventory's knob fields."""
    return {k.key: (schema_type(k), Field(k.default, description=k.help)) for k in KNOBS}


def spec_values(source: Any) -> dict[str, Any]:
    """Every knob's value on an object with the knobs as attributes (a Service): the
    InstanceSpec fields."""
    return {k.key: getattr(source, k.key) for k in KNOBS}


# ---------------------------------------------------------------- `gpufleet estimate`


def add_estimate_options(parser: argparse.ArgumentParser) -> None:
    for knob in KNOBS:
        if knob.kind is bool:
            parser.add_argument(knob.option, action="store_true", help=knob.help)
        else:
            parser.add_argument(knob.option, type=knob.kind, default=knob.default,
                                metavar=knob.dest.upper() if knob.kind is not str else None,
                                help=f"{knob.help} ({knob.flag})" if knob.estimate
                                else knob.help)


def estimate_values(args: argparse.Namespace) -> dict[str, Any]:
    """estimate's options -> InstanceSpec knob fields; a value out of range is an input error
    (exit 2) naming the option and its bounds."""
    values = {}
    for knob in KNOBS:
        value = getattr(args, knob.dest)
        if value is not None and knob.low is not None and not knob.in_range(value):
            raise InputError(f"{knob.option} {value} is out of range",
                             hint=f"use {knob.bounds()}")
        values[knob.key] = value
    return values
