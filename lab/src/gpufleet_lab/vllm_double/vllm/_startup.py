"""The double's own startup memory, in the order vLLM's V1 worker does it (0.11–0.21 wording).

Per model, the numbers come from startups.json or from a test (VLLM_TEST_DOUBLE_MEMORY, JSON with
the same keys): never from gpufleet's planner, so a planner error shows in the lab as a failed
start or a finding, as it would on a real host. startups.json is generated (by the lab's
gpufleet_lab/vllm_double/recorded.py, not shipped in the wheel) from recorded_startups.yaml:
real vLLM startup logs quoted verbatim with their URLs ("Model loading took X GiB", the
profiling run's activation peak / its max_num_batched_tokens, non-torch memory, graph capture),
or a cited checkpoint fact for a model no log was found for. Each number there names its quote.

    budget      = gpu_memory_utilization x total memory of the GPU
    free check  : the free memory after this process's HIP context must hold the budget
    non-KV      = weights + activation peak (per scheduled token) + non-torch allocations
    KV cache    = budget - non-KV (none at all for encoder-only models), in whole blocks
    checks      : some KV memory left; one request of max_model_len tokens fits
    held        = HIP context + budget (+ graphs, captured after the budget on ROCm)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

GIB = 1 << 30
MEMORY_ENV = "VLLM_TEST_DOUBLE_MEMORY"
STARTUPS = Path(__file__).with_name("startups.json")  # generated: see recorded_startups.yaml
NO_KV = ("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
         "when initializing the engine.")


class MemoryError_(Exception):
    """vLLM refuses to start: str() is its message (without the exception type)."""


@dataclass(frozen=True)
class Profile:
    """How one model starts (startups.json: recorded startups; structure from config.json)."""

    model: str
    architecture: str
    task: str  # generate | embed | classify | transcription
    weights_bytes: int
    hidden_size: int
    num_attention_heads: int
    num_layers: int
    kv_bytes_per_token: int  # 0: encoder-only, no KV cache
    max_position_embeddings: int
    activation_bytes_per_token: int
    baseline_bytes: int
    non_torch_bytes: int
    graph_bytes: int

    @property
    def has_kv_cache(self) -> bool:
        return self.kv_bytes_per_token > 0


@dataclass(frozen=True)
class Startup:
    """What the worker found: the budget's parts, the KV cache, what the process holds."""

    budget_bytes: int
    weights_bytes: int
    activation_bytes: int
    kv_cache_bytes: int
    kv_tokens: int
    max_model_len: int
    held_bytes: int  # per GPU, once serving


def _known() -> dict[str, Any]:
    return dict(json.loads(STARTUPS.read_text(encoding="utf-8")))


def profile(model: str, environ: dict[str, str] | None = None) -> Profile | None:
    """The model's profile with a test's overrides applied; None for a model the lab lacks."""
    environ = dict(os.environ) if environ is None else environ
    known = _known()
    entry = known.get(model)
    if entry is None:
        return None
    names = {f.name for f in fields(Profile)}
    overrides = _overrides(environ.get(MEMORY_ENV) or "{}", names)
    values = {**known["_defaults"], **entry, **overrides, "model": model}
    return Profile(**{k: v for k, v in values.items() if k in names})


def _overrides(text: str, names: set[str]) -> dict[str, Any]:
    """A test's numbers: a JSON object of Profile keys (a typo must not pass unnoticed)."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise MemoryError_(f"{MEMORY_ENV} is not JSON: {e}") from None
    if not isinstance(values, dict):
        raise MemoryError_(f"{MEMORY_ENV} must be a JSON object")
    unknown = sorted(set(values) - names)
    if unknown:
        raise MemoryError_(f"{MEMORY_ENV} has unknown keys {unknown}; known: {sorted(names)}")
    return values


def kv_bytes_per_token(p: Profile, kv_cache_dtype: str | None, tp: int, pp: int) -> int:
    """fp8 KV halves a bf16/fp16 cache; TP splits the heads, PP the layers (per GPU)."""
    per_token = p.kv_bytes_per_token // (2 if (kv_cache_dtype or "auto").startswith("fp8") else 1)
    return max(per_token // max(tp * pp, 1), 1) if per_token else 0


def parallelism_problem(p: Profile, tp: int) -> str | None:
    if p.num_attention_heads % tp:
        return (f"Total number of attention heads ({p.num_attention_heads}) must be divisible by "
                f"tensor parallel size ({tp}).")
    return None


def free_memory_problem(total: int, free: int, utilization: float) -> str | None:
    budget = int(utilization * total)
    if free >= budget:
        return None
    return (f"Free memory on device cuda:0 ({free / GIB:.2f}/{total / GIB:.2f} GiB) on startup "
            f"is less than desired GPU memory utilization ({utilization}, {budget / GIB:.2f} "
            "GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.")


def start(p: Profile, *, total: int, utilization: float, max_model_len: int | None,
          batched_tokens: int, kv_cache_dtype: str | None = None, tp: int = 1, pp: int = 1,
          block_size: int = 16, charged: int = 0) -> Startup:
    """The worker's arithmetic after loading; raises MemoryError_ with vLLM's words.
    `charged`: bytes other processes allocated during this one's profiling run."""
    budget = int(utilization * total)
    weights = p.weights_bytes // max(tp * pp, 1)
    activation = p.activation_bytes_per_token * batched_tokens
    length = max_model_len or p.max_position_embeddings
    if not p.has_kv_cache:  # encoder-only: profiled, but no KV cache and no budget held
        held = p.baseline_bytes + weights + activation + p.non_torch_bytes
        return Startup(budget, weights, activation, 0, 0, length, held)
    kv = budget - weights - activation - p.non_torch_bytes - charged
    per_token = kv_bytes_per_token(p, kv_cache_dtype, tp, pp)
    if kv <= 0:
        raise MemoryError_(NO_KV)
    tokens = kv // per_token // block_size * block_size
    if tokens < length:
        needed = length * per_token
        raise MemoryError_(
            f"To serve at least one request with the models's max seq len ({length}), "
            f"({needed / GIB:.2f} GiB KV cache is needed, which is larger than the available KV "
            f"cache memory ({kv / GIB:.2f} GiB). Based on the available memory, the estimated "
            f"maximum model length is {tokens}. Try increasing `gpu_memory_utilization` or "
            "decreasing `max_model_len` when initializing the engine.")
    held = p.baseline_bytes + budget - charged + p.graph_bytes
    return Startup(budget, weights, activation, kv, tokens, length, held)
