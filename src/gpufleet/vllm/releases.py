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
    Semantics("default_utilization_0_92", since((0, 21, 0)),
              "--gpu-memory-utilization defaults to 0.92 (0.9 before)", "vLLM PR #38284"),
    Semantics("batching_tier_160gib", since((0, 22, 0)),
              "devices of >= 160 GiB profile 16384 tokens and 1024 sequences by default",
              "vLLM arg_utils; PR #51726, issue #53961; absent in 0.21.0"),
    Semantics("graphs_in_budget", since((0, 21, 0)),
              "graph memory is profiled and taken out of the budget", "vLLM PR #38284"),
    Semantics("free_memory_names_device", since((0, 11, 0)),
              "the free-memory error names the device ('cuda:0')",
              "vllm#36720, pytorch#175666; 0.11.0 is the earliest release assumed"),
    Semantics("model_s_max_seq_len_wording", since((0, 22, 0)),
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
