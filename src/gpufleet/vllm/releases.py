"""What changed between vLLM releases, as rows: the planner asks `has(version, NAME)` instead of
comparing version numbers inline, and each row says where its boundary comes from.

A row holds the releases where a behaviour applies, as half-open ranges [from, until). When a
boundary is corrected (read from a release's own source), only its row changes.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from gpufleet.errors import InputError

Release = tuple[int, int, int]
NEVER: Release = (10**6, 0, 0)


@dataclass(frozen=True)
class Semantics:
    name: str
    ranges: tuple[tuple[Release, Release], ...]  # [from, until) pairs
    what: str
    source: str

    def applies(self, release: Release) -> bool:
        return any(start <= release < until for start, until in self.ranges)


def since(release: Release) -> tuple[tuple[Release, Release], ...]:
    return ((release, NEVER),)


def before(release: Release) -> tuple[tuple[Release, Release], ...]:
    return (((0, 0, 0), release),)


ROWS = (
    Semantics("v1_engine", since((0, 8, 0)),
              "the V1 engine is the default: V1 profiling and messages",
              "vLLM 0.8.0 release notes; facts/vllm-memory.md §2"),
    Semantics("device_wide_accounting",
              (((0, 0, 0), (0, 6, 3)), ((0, 6, 4), (0, 6, 5)), ((0, 8, 0), (0, 9, 1))),
              "everything on the device (own context, other processes) is charged to the budget",
              "facts §2.2; vllm#4242, vllm#10533, vllm#14376; fixed by PR #18974"),
    Semantics("free_memory_check", since((0, 9, 1)),
              "the explicit 'Free memory on device' check before loading", "facts §2.2"),
    Semantics("default_utilization_0_92", since((0, 20, 0)),
              "--gpu-memory-utilization defaults to 0.92 (0.9 before)",
              "vllm/config/cache.py of each release (data/releases: 0.19.1 0.9, 0.20.0 0.92)"),
    Semantics("batching_tier_160gib", since((0, 28, 0)),
              "devices of >= 160 GiB profile 16384 tokens and 1024 sequences by default",
              "vllm/engine/arg_utils.py of each release (absent in 0.27.1, present in 0.28.0)"),
    Semantics("graphs_in_budget_cuda", since((0, 20, 0)),
              "on CUDA graph memory is profiled and taken out of the budget",
              "vllm/v1/worker/gpu_worker.py + envs.py: VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS "
              "defaults to 1 from 0.20.0"),
    Semantics("graphs_in_budget_rocm", since((0, 26, 0)),
              "on ROCm graph memory is profiled and taken out of the budget",
              "vllm/v1/worker/gpu_worker.py: `not is_rocm()` guard until 0.25.1, "
              "`is_cuda_alike()` from 0.26.0"),
    Semantics("kv_sized_after_graphs", since((0, 34, 0)),
              "the extensible KV cache (default on CUDA and ROCm) is sized after graph capture "
              "and skips the free-memory check",
              "vllm/config/vllm.py _resolve_extensible_kv_cache, v1/worker/utils.py (0.34.0)"),
    Semantics("block_size_64", since((0, 34, 0)),
              "the default KV block is 64 tokens (16 before)",
              "vllm/config/cache.py DEFAULT_BLOCK_SIZE (0.34.0)"),
    Semantics("free_memory_names_device", since((0, 14, 0)),
              "the free-memory error names the device ('cuda:0')",
              "the error's template in v1/worker/utils.py: without the device in 0.13.0, with "
              "it in 0.14.1"),
    Semantics("model_s_max_seq_len_wording", since((0, 22, 0)),  # confirmed: 0.21.0 / 0.22.1
              "the max seq len error says \"model's\" and mentions the CPU backend",
              "vllm#44376 (v0.22)"),
    Semantics("runner_convert_flags", since((0, 10, 1)),
              "pooling and transcription models take --runner/--convert (--task before)",
              "the serve parser of 0.10.1 (gpufleet's earlier rule, kept as it was)"),
    Semantics("rocm_encoder_decoder", since((0, 14, 0)),
              "encoder-decoder models (Whisper) run on ROCm",
              "vllm#31406 (Triton backend gained cross-attention, Dec 2025, in 0.14); vllm#28184"),
)
BY_NAME = {row.name: row for row in ROWS}
MAX_VERSION_CHARS = 64
MAX_VERSION_DIGITS = 6  # per release component: 0.11.0, never 0.1000000.0
_VERSION_CHARS = re.compile(r"[0-9][A-Za-z0-9.+_-]*")
_VERSION_HINT = "give a vLLM release such as 0.11.0 (suffixes like .post1, +rocm, rc1 are fine)"


def _shown(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@functools.lru_cache(maxsize=1024)  # a fleet plan asks for the same few versions 100,000s of times
def parse_version(text: str) -> Release:
    """'0.10.2' -> (0, 10, 2); tolerant of suffixes: '0.6.3.post1', '0.9.1+rocm', '0.28.1rc1'.

    An absurd version (too long, or a component of more than 6 digits) is an InputError."""
    if not isinstance(text, str) or len(text) > MAX_VERSION_CHARS:
        raise InputError(f"vLLM version {_shown(text)} is not a version", hint=_VERSION_HINT)
    parts: list[int] = []
    for piece in text.replace("+", ".").split(".")[:3]:
        digits = re.match(r"\d+", piece.strip())  # '1rc1' -> 1, not 11
        if digits and len(digits.group(0)) > MAX_VERSION_DIGITS:
            raise InputError(f"vLLM version {_shown(text)} is not a version", hint=_VERSION_HINT)
        parts.append(int(digits.group(0)) if digits else 0)
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def check_vllm_version(text: str) -> str:
    """A vLLM version as a user gives it (flag or inventory): digits first, short, parseable."""
    if not isinstance(text, str) or not _VERSION_CHARS.fullmatch(text):
        raise InputError(f"vLLM version {_shown(text)} is not a version", hint=_VERSION_HINT)
    parse_version(text)
    return text


@functools.lru_cache(maxsize=4096)
def has(version: str | Release, name: str) -> bool:
    """Whether the named behaviour applies in this release (a KeyError names a typo)."""
    release = parse_version(version) if isinstance(version, str) else version
    return BY_NAME[name].applies(release)
