"""What each supported vLLM release is, read from that release's own source.

`tools/read_vllm_source.py` downloads each release's sdist, reads it statically and writes
`data/releases/<version>.json`: the serve flags (names, short forms, arity, choices), the
defaults (utilization, block size), the batching defaults per device-memory tier, what counts
inside the memory budget per platform, and the startup error wordings, each with the file:line
it was read from (`evidence`). The planner, the flag check and the lab's vLLM double read these
files; nothing here is extrapolated from a neighbouring release.

A release without a file is planned as its nearest known one: the newest known release of the
same minor line (0.20.0 -> 0.20.2), else the nearest lower one, else the oldest; the plan says
which it used (`Release.exact`).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gpufleet.vllm.releases import Release as Triple
from gpufleet.vllm.releases import parse_version

GIB = 1 << 30


@dataclass(frozen=True)
class Tier:
    """vLLM's default (max_num_batched_tokens, max_num_seqs) for devices of >= min_gib."""

    min_gib: float
    max_num_batched_tokens: int
    max_num_seqs: int


@dataclass(frozen=True)
class Release:
    """One supported vLLM release as its source has it (see the module docstring)."""

    version: str  # the release read: the asked one, or its nearest known one
    asked: str
    serve_flags: dict[str, dict[str, Any]]
    aliases: dict[str, str]  # short or alternative spelling -> canonical flag
    default_utilization: float
    default_block_size: int
    tiers: tuple[Tier, ...]  # largest first
    graphs_in_budget: dict[str, bool]  # platform (cuda, rocm) -> graph memory inside the budget
    kv_sized_after_graphs: bool
    encoder_only_no_kv: bool
    messages: dict[str, str]
    evidence: dict[str, str]
    image_rocm: str | None = None  # the ROCm its vllm/vllm-openai-rocm image is built on
    wheel_variant: str | None = None  # its ROCm wheels on wheels.vllm.ai (rocm700, ...), if any
    host_rocm_min: str | None = None  # "vLLM supports AMD GPUs with ROCm X or above"

    @property
    def exact(self) -> bool:
        return parse_version(self.version) == parse_version(self.asked)

    def batching(self, gpu_total_bytes: int) -> tuple[int, int]:
        """The server's default (tokens, sequences) on a device of this total memory."""
        gib = gpu_total_bytes / GIB
        tier = next((t for t in self.tiers if gib >= t.min_gib), self.tiers[-1])
        return tier.max_num_batched_tokens, tier.max_num_seqs

    def has_flag(self, flag: str) -> bool:
        return flag in self.serve_flags or flag in self.aliases


def _folder() -> Any:
    return resources.files("gpufleet.vllm") / "data" / "releases"


@functools.cache
def supported() -> tuple[str, ...]:
    """The releases with a data file, oldest first."""
    names = [f.name[: -len(".json")] for f in _folder().iterdir() if f.name.endswith(".json")]
    return tuple(sorted(names, key=_order))


def newest() -> str:
    return supported()[-1]


def _order(version: str) -> tuple[Triple, tuple[int, ...]]:
    """Sort key: the release triple, then any fourth component (0.10.1.1 after 0.10.1)."""
    extra = tuple(int(p) for p in version.split(".")[3:] if p.isdigit())
    return parse_version(version), extra


def nearest(version: str) -> str:
    """The known release a version is planned as (itself when known)."""
    if version in supported():
        return version
    triple = parse_version(version)
    same_line = [v for v in supported() if parse_version(v)[:2] == triple[:2]]
    if same_line:
        return same_line[-1]
    lower = [v for v in supported() if parse_version(v) < triple]
    return lower[-1] if lower else supported()[0]


@functools.lru_cache(maxsize=64)
def release(version: str) -> Release:
    """The data of `version`'s nearest known release (see nearest())."""
    known = nearest(version)
    raw = json.loads((_folder() / f"{known}.json").read_text(encoding="utf-8"))
    return _release(raw, version)


def _release(raw: dict[str, Any], asked: str) -> Release:
    flags = raw["serve_flags"]
    semantics = raw["semantics"]
    return Release(
        version=raw["version"],
        asked=asked,
        serve_flags=flags,
        aliases={a: name for name, f in flags.items() for a in f.get("aliases", [])},
        default_utilization=float(raw["defaults"]["gpu_memory_utilization"]),
        # 0.13-0.17 leave it to the platform, which sets 16 on CUDA and ROCm (facts §4.2)
        default_block_size=int(raw["defaults"]["block_size"] or 16),
        tiers=tuple(Tier(float(t["min_device_gib"]), int(t["max_num_batched_tokens"]),
                         int(t["max_num_seqs"])) for t in raw["batching_defaults"]),
        graphs_in_budget=dict(semantics["graphs_in_budget"]),
        kv_sized_after_graphs=bool(semantics["kv_sized_after_graphs"]),
        encoder_only_no_kv=bool(semantics["encoder_only_no_kv"]),
        messages=dict(raw.get("messages") or {}),
        evidence=dict(raw.get("evidence") or {}),
        **{key: (raw.get("rocm") or {}).get(key)
           for key in ("image_rocm", "wheel_variant", "host_rocm_min")},
    )


def known(version: str) -> bool:
    """Whether `version` is at or after the oldest release with a data file (older releases
    are planned by gpufleet.vllm.releases' rows alone, as the public cases need)."""
    return parse_version(version) >= parse_version(supported()[0])


# vllm/vllm-openai[-rocm]:v0.33.0[-rocm72] and AMD's rocm/vllm:rocm7.13.0_..._vllm_0.19.1 (or
# ..._vllm0.7.3_...): the tags that say which vLLM an image holds.
_IMAGE_TAGS = (re.compile(r"^v?(\d+\.\d+\.\d+(?:\.post\d+)?)(?:[-+].*)?$"),
               re.compile(r"(?:^|_)vllm_?(\d+\.\d+\.\d+)(?:_|$)"))


def vllm_version_of_image(image: str) -> str | None:
    """The vLLM release a vLLM image's tag names; None for other images and moving tags."""
    name, _, tag = image.split("@", 1)[0].rpartition(":")
    if not name or "/" in tag or "vllm" not in name.rsplit("/", 1)[-1]:
        return None
    for pattern in _IMAGE_TAGS:
        if found := pattern.search(tag):
            return found.group(1)
    return None
