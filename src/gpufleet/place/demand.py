"""What one service needs of a GPU: the smallest utilization that meets its requirement.

The oracle is the planner's own arithmetic (`gpufleet.vllm.memory.estimate`), so what `place`
chooses is what `gpufleet plan` will check: a utilization is searched in thousandths, and the
footprint of an instance on each of its GPUs is the plan's `used_bytes` at that utilization.

A requirement is KV tokens: `kv_tokens: N`, or `concurrency: N` requests of max_model_len held
at once (one request when neither is given). The fleet's margin is a share of the budget kept
over the predicted minimum, because the planner's measured error is a share of the budget (see
the README: worst 4.7 % of the budget on the real startup cases).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gpufleet.gpu.models import GIB
from gpufleet.inventory import Service
from gpufleet.plan import valid_split
from gpufleet.vllm import knobs
from gpufleet.vllm.memory import Estimate, InstanceSpec, estimate
from gpufleet.vllm.models import ModelFacts

STEPS = 1000  # utilizations are chosen in thousandths


@dataclass(frozen=True)
class Need:
    """What the KV cache of one instance must hold."""

    kv_tokens: int | None  # tokens held at once
    concurrency: int | None  # requests of max_model_len held at once
    stated: bool  # False: nothing was asked, one full-length request is assumed

    @classmethod
    def of(cls, svc: Service) -> Need:
        if svc.kv_tokens is None and svc.concurrency is None:
            return cls(None, 1, False)
        return cls(svc.kv_tokens, svc.concurrency, True)

    def describe(self, model_len: int) -> str:
        parts = ([f"{self.kv_tokens:,} KV tokens"] if self.kv_tokens is not None else []) + (
            [f"{self.concurrency} x {model_len:,} tokens"] if self.concurrency else [])
        return " and ".join(parts)


@dataclass(frozen=True)
class Sizing:
    """One instance as `place` sizes it for GPUs of one size."""

    utilization: float | None  # None: not a vLLM kind, or the operator's own value kept
    tensor_parallel_size: int
    pipeline_parallel_size: int
    used_bytes: int  # held on each of its GPUs once running (the plan's footprint)
    kv_tokens: int | None  # what the plan predicts the KV cache holds

    @property
    def ranks(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


@dataclass(frozen=True)
class Shortfall:
    """Why a service fits no GPU of this size, in an operator's words."""

    reason: str
    missing_bytes: int


def spec_for(svc: Service, facts: ModelFacts, total_bytes: int, vllm_version: str,
             platform: str, tp: int, pp: int, util: float | None) -> InstanceSpec:
    values = {**knobs.spec_values(svc), "tensor_parallel_size": tp,
              "pipeline_parallel_size": pp, "gpu_memory_utilization": util}
    return InstanceSpec(facts=facts, gpu_total_bytes=total_bytes, vllm_version=vllm_version,
                        platform=platform, **values)


def meets(est: Estimate, need: Need, margin: float) -> bool:
    """Whether an estimate holds the need with `margin` of the budget to spare."""
    if not est.starts or est.kv_cache_bytes <= 0:
        return False
    spare = est.kv_cache_bytes - margin * est.budget_bytes
    if spare <= 0:
        return False
    share = spare / est.kv_cache_bytes  # what is left of the cache once the margin is set aside
    if need.kv_tokens is not None and est.kv_tokens * share < need.kv_tokens:
        return False
    if need.concurrency is None:
        return True
    # Also in tokens: max_concurrency is rounded to two decimals, so 13.996 requests read as 14
    # and, with no margin, the cache held a few blocks fewer than concurrency x max_model_len.
    return (est.max_concurrency * share >= need.concurrency
            and est.kv_tokens * share >= need.concurrency * est.max_model_len)


def smallest_utilization(spec: InstanceSpec, need: Need, margin: float,
                         capacity_bytes: int) -> tuple[float, Estimate] | Shortfall:
    """The smallest utilization (thousandths) whose estimate meets the need on an empty GPU of
    the spec's size, its footprint within `capacity_bytes`; else why not."""
    roomy = replace(spec, free_bytes_at_start=spec.gpu_total_bytes)  # the free check apart
    if spec.facts.is_pooling:  # no KV cache: the budget only has to cover the process
        probe = estimate(replace(roomy, gpu_memory_utilization=0.5))
        need_bytes = (probe.non_kv_bytes + probe.cudagraph_bytes) * (1 + margin)
        steps = max(math.ceil(need_bytes / spec.gpu_total_bytes * STEPS), 1)
        return _checked(spec, min(steps, STEPS), capacity_bytes)
    lo, hi = 1, STEPS
    if not meets(_at(roomy, hi), need, margin):
        return _shortfall(roomy, need, margin)
    while lo < hi:  # meets() grows with the budget: the KV cache is budget minus the rest
        mid = (lo + hi) // 2
        if meets(_at(roomy, mid), need, margin):
            hi = mid
        else:
            lo = mid + 1
    return _checked(spec, lo, capacity_bytes)


def _at(spec: InstanceSpec, steps: int) -> Estimate:
    return estimate(replace(spec, gpu_memory_utilization=steps / STEPS))


def _checked(spec: InstanceSpec, steps: int, capacity_bytes: int
             ) -> tuple[float, Estimate] | Shortfall:
    est = _at(spec, steps)
    if not est.starts:
        return Shortfall(est.error or "vLLM would not start", 0)
    if est.used_bytes > capacity_bytes:
        return Shortfall(
            f"needs {est.used_bytes / GIB:.1f} GiB per GPU at utilization {steps / STEPS:g}, "
            f"{capacity_bytes / GIB:.1f} GiB can be given", est.used_bytes - capacity_bytes)
    return steps / STEPS, est


def _shortfall(spec: InstanceSpec, need: Need, margin: float) -> Shortfall:
    """Even the whole GPU falls short: by how much, in KV terms."""
    est = _at(spec, STEPS)
    if est.error_kind == "parallelism" or (not est.starts and est.kv_cache_bytes <= 0
                                           and est.weights_bytes >= est.budget_bytes):
        return Shortfall(est.error or "the weights do not fit", max(
            est.non_kv_bytes - est.budget_bytes, 0))
    per_token = est.kv_cache_bytes / est.kv_tokens if est.kv_tokens else est.block_bytes
    wanted = max(need.kv_tokens or 0, (need.concurrency or 0) * est.max_model_len)
    want_bytes = int(wanted * per_token + margin * est.budget_bytes)
    missing = max(want_bytes - max(est.kv_cache_bytes, 0), 0)
    return Shortfall(f"asks for {need.describe(est.max_model_len)}; a whole GPU's budget holds "
                     f"{max(est.kv_tokens, 0):,} after {est.non_kv_bytes / GIB:.1f} GiB of "
                     f"weights and activations per rank", missing)


def splits(facts: ModelFacts, most: int) -> list[tuple[int, int]]:
    """Valid (tp, pp) shapes by number of GPUs, one per count vLLM accepts."""
    return [s for n in range(1, most + 1) if (s := valid_split(facts, n)) is not None]
