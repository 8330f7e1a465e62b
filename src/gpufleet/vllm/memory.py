"""One vLLM instance: the startup memory arithmetic vLLM itself does, and its three startup checks.

Pure and stdlib-only (it is also vendored into the lab's vLLM test double). The formula follows
vLLM >= 0.9.1 (V1 worker), version-aware where semantics changed:

    budget R      = ceil(T * gpu_memory_utilization)                 (per instance, per rank)
    baseline      = HIP context (+ RCCL buffers for TP/PP > 1), allocated BEFORE the snapshot, so
                    it sits outside R but still occupies the GPU (inside R, together with every
                    other process, in the device-wide versions <= 0.6.2, 0.6.4, 0.8.0-0.9.0)
    non-KV        = weights/rank + non-torch growth + activation peak of the profiling run, where
                    activation = max(forward over the profiled tokens, sampler warm-up buffers)
    G             = CUDA/HIP-graph estimate: inside R from 0.21 on, outside R before (0 if eager)
    KV            = R - non-KV - G                      (or --kv-cache-memory-bytes when given)
    checks        1. free at start >= R   2. KV > 0   3. max_model_len fits in KV - one block

Only the weights and the KV layout follow from the model config exactly; activation, non-torch and
graph memory are calibrated estimates (see benchmarks/planner_accuracy.py for how good they are).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

from gpufleet.errors import InputError
from gpufleet.vllm import messages, releases, versions
from gpufleet.vllm.models import ModelFacts, kv_dtype_bytes
from gpufleet.vllm.releases import parse_version

GIB = 1 << 30
MI300X_TOTAL_BYTES = 206_141_652_992  # hipMemGetInfo total of one MI300X (191.98 GiB)
DEFAULT_VLLM_VERSION = versions.newest()  # `estimate`'s default: the newest release read
DEFAULT_BLOCK_SIZE = 16  # releases before those read from source

# Calibrated constants (per rank). Sources: ../shared/facts/vllm-memory.md (sections named) and
# the real cases of ../shared/data/vllm_cases.yaml (ids named); fitted with
# benchmarks/planner_accuracy.py, which prints how well they reproduce those cases.
CONTEXT_BYTES = int(0.50 * GIB)  # CUDA/HIP context + cuBLAS workspaces before the snapshot:
#   facts §2.1 "≈ 0.3-0.6 GiB"; vllm-19125 ~0.3 GiB outside the budget; 0.6.4 charged 0.35 GiB
#   context + non-torch inside it (vllm-10517). 0.5 keeps co-location on the safe side.
COLLECTIVE_BYTES = int(1.00 * GIB)  # RCCL/NCCL communicators set up before the snapshot (TP/PP>1)
NON_TORCH_BYTES = int(0.25 * GIB)  # non-torch growth inside the profiling window, one rank:
#   vllm-10517 0.35, vllm-14447 0.20, vllm-13882 0.03 (TP1; 10511's 1.79 on an NVLink box is an
#   outlier), median ~0.25
NON_TORCH_MULTI_RANK_BYTES = int(0.10 * GIB)  # extra with TP/PP > 1 (lazy NCCL buffers, custom
#   all-reduce): vllm-13061 0.25 and vllm-15815 0.30 (TP2), vllm-16570 0.34-0.43 (TP4)
CUDAGRAPH_BYTES = int(0.35 * GIB)  # graph pool estimate: 0.17-0.36 GiB in v0.2x logs (facts §3)
FORWARD_BYTES_PER_HIDDEN = 26  # peak bytes per profiled token per hidden unit (13 bf16 widths):
#   vllm-10517 +0.92 GiB per +9000 tokens on Llama-3.1-8B (hidden 4096) = 26.8; vllm-15815
#   1.26 GiB at 10000 tokens on Qwen2.5-32B TP2 (hidden 5120) = 26.4. No visible TP or
#   intermediate-size dependence in these logs, so neither is modelled.
SAMPLER_BUFFERS = 9.5  # fp32 rows x vocab buffers alive in the sampler warm-up (logits, sorted
#   values + int64 indices, softmax, cumsum, probs, noise): vllm-13882 and the driver rank of
#   vllm-13061 (256 x 152064: 1.42 GiB -> 9.8), vllm-10511 (256 x 128256: 1.26 -> 10.3),
#   vllm-23278 (1024 x 201088: ~7.3 GiB of non-KV beside the weights -> 9.4); the same value
#   reproduces the 0.4.1 block counts of vllm-4454 within 1 %
V0_MAX_NUM_SEQS = 256  # V0 scheduler default (vllm-13882, vllm-15815 logs; facts §3.1)
V0_MIN_BATCHED_TOKENS = 2048  # V0 profiles max(max_model_len, 2048) tokens (facts §3.1)
V0_LONG_CONTEXT = 32768  # above it V0 turns chunked prefill on (facts §3.1, vllm-10517 notes)
V0_CHUNKED_TOKENS = 2048  # ... and profiles its server default batch (vllm-13061: 0.19 GiB)
SAMPLER_BYTES = 4  # fp32 logits

# Sane bounds on an instance's numbers (far above any real one, low enough that the arithmetic
# stays exact and instant): what `estimate` flags and estimate() accept.
MAX_PARALLEL_SIZE = 1024  # tensor / pipeline parallel size
MAX_MODEL_LEN = 1 << 31  # tokens
MAX_NUM_SEQS = 1 << 20
MAX_BATCHED_TOKENS = 1 << 31
MAX_GPU_BYTES = 1 << 50  # 1 PiB: GPU total memory, kv_cache_memory_bytes
MAX_BLOCK_SIZE = 1 << 16


def _shown(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def has(vllm_version: str, behaviour: str) -> bool:
    """Whether a release has a behaviour of gpufleet.vllm.releases (the version checked)."""
    return releases.has(vllm_version, behaviour)


def is_v0(vllm_version: str) -> bool:
    """Before 0.8 the V0 engine was the default: other messages, other profiling batch."""
    return not has(vllm_version, "v1_engine")


def device_wide_accounting(vllm_version: str) -> bool:
    """Versions that charged everything on the device (own context, other processes) to the
    budget: <= 0.6.2 (`T*u - (T - free)`), 0.6.4 ("initial_memory_usage") and V1 0.8.0-0.9.0
    (`(T - free) - torch_allocated`, fixed by PR #18974) (facts §2.2; vllm-4242, vllm-10533,
    vllm-14376). There a second instance gets less KV instead of failing the free-memory check.
    """
    return has(vllm_version, "device_wide_accounting")


def checks_free_memory(vllm_version: str) -> bool:
    """The explicit 'Free memory on device' check exists since V1 0.9.1 (facts §2.2)."""
    return has(vllm_version, "free_memory_check")


def default_utilization(vllm_version: str) -> float:
    """vLLM's default --gpu-memory-utilization, read from the release (0.92 from 0.20.0, 0.9
    before); releases older than those read follow the rows."""
    if versions.known(vllm_version):
        return versions.release(vllm_version).default_utilization
    return 0.92 if has(vllm_version, "default_utilization_0_92") else 0.9


def default_block_size(vllm_version: str) -> int:
    """Tokens per KV block when --block-size is not given: 16, and 64 from 0.34.0."""
    if versions.known(vllm_version):
        return versions.release(vllm_version).default_block_size
    return DEFAULT_BLOCK_SIZE


def default_batching(gpu_total_bytes: int, vllm_version: str | None = None) -> tuple[int, int]:
    """Server defaults (max_num_batched_tokens, max_num_seqs) of V1 by the device's total memory.

    The tier uses the whole device, not util * T: an MI300X profiles 16384 tokens and 1024 seqs
    even for a tiny model at util 0.05 (vllm arg_utils; PR #51726, issue #53961). That tier is
    absent in [0.21.0] (MI300X was in the >= 70 GiB one); it is assumed from 0.22 on, the first
    release it can be in. vLLM also keeps A100s in the small tier; only the total is known here.
    """
    if vllm_version is not None and versions.known(vllm_version):
        return versions.release(vllm_version).batching(gpu_total_bytes)
    gib = gpu_total_bytes / GIB
    if gib >= 160 and (vllm_version is None or has(vllm_version, "batching_tier_160gib")):
        return 16384, 1024
    if gib >= 70:
        return 8192, 1024
    return 2048, 256


def _v0_profile_tokens(model_len: int) -> int:
    """V0 profiles a whole max-length prompt unless long context switched chunked prefill on."""
    if model_len > V0_LONG_CONTEXT:
        return V0_CHUNKED_TOKENS
    return max(model_len, V0_MIN_BATCHED_TOKENS)


@dataclass(frozen=True)
class InstanceSpec:
    """What one vLLM process is asked to do, on GPUs of `gpu_total_bytes` each."""

    facts: ModelFacts
    gpu_total_bytes: int = MI300X_TOTAL_BYTES
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    dtype: str | None = "auto"
    quantization: str | None = None
    kv_cache_dtype: str | None = "auto"
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    enforce_eager: bool = False
    kv_cache_memory_bytes: int | None = None
    vllm_version: str = DEFAULT_VLLM_VERSION
    block_size: int | None = None  # None: the release's default
    free_bytes_at_start: int | None = None  # None: an otherwise empty GPU
    platform: str = "rocm"  # rocm | cuda: what counts inside the budget differs by release

    @property
    def kv_block_size(self) -> int:
        return self.block_size or default_block_size(self.vllm_version)

    @property
    def utilization(self) -> float:
        if self.gpu_memory_utilization is None:
            return default_utilization(self.vllm_version)
        return self.gpu_memory_utilization

    @property
    def batching(self) -> tuple[int, int]:
        """(tokens, sequences) of the profiling run: the flags, else vLLM's defaults."""
        if is_v0(self.vllm_version):
            tokens = self.max_num_batched_tokens or _v0_profile_tokens(self.model_len)
            return tokens, self.max_num_seqs or V0_MAX_NUM_SEQS
        mbt, seqs = default_batching(self.gpu_total_bytes, self.vllm_version)
        return (self.max_num_batched_tokens or mbt, self.max_num_seqs or seqs)

    @property
    def model_len(self) -> int:
        if self.max_model_len:
            return self.max_model_len
        return self.facts.max_position_embeddings or 2048


@dataclass(frozen=True)
class Estimate:
    """What vLLM would report at startup, per rank, in bytes; plus the advice when it fails."""

    starts: bool
    error_kind: str | None  # free_memory | no_kv_memory | max_model_len | parallelism
    error: str | None
    budget_bytes: int
    baseline_bytes: int
    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cudagraph_bytes: int
    non_kv_bytes: int
    kv_cache_bytes: int
    kv_tokens: int
    block_bytes: int
    max_model_len: int
    max_model_len_fit: int | None
    min_util_for_max_model_len: float | None
    max_concurrency: float
    used_bytes: int  # what the process holds on each of its GPUs once it runs
    utilization: float
    notes: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------- the pieces


def baseline_bytes(spec: InstanceSpec) -> int:
    """Memory taken before vLLM's snapshot: outside the budget but on the GPU all the same."""
    ranks = spec.tensor_parallel_size * spec.pipeline_parallel_size
    return CONTEXT_BYTES + (COLLECTIVE_BYTES if ranks > 1 else 0)


def activation_bytes(spec: InstanceSpec) -> int:
    """Transient peak of the profiling run above the weights, per rank.

    The larger of the forward pass (hidden-size activations of every profiled token) and the
    sampler warm-up (fp32 buffers of min(max_num_seqs, tokens) rows over the whole vocabulary,
    gathered on every rank): the forward's intermediates are freed before sampling.
    """
    facts = spec.facts
    tokens, seqs = spec.batching
    forward = tokens * facts.hidden_size * FORWARD_BYTES_PER_HIDDEN
    if facts.is_pooling:
        return forward
    sampler = min(seqs, tokens) * facts.vocab_size * SAMPLER_BYTES * SAMPLER_BUFFERS
    return int(max(forward, sampler))


def non_torch_bytes(spec: InstanceSpec) -> int:
    """Non-torch growth during profiling (NCCL buffers, allocator slack), per rank."""
    ranks = spec.tensor_parallel_size * spec.pipeline_parallel_size
    return NON_TORCH_BYTES + (NON_TORCH_MULTI_RANK_BYTES if ranks > 1 else 0)


def cudagraph_bytes(spec: InstanceSpec) -> int:
    return 0 if spec.enforce_eager else CUDAGRAPH_BYTES


def graphs_in_budget(vllm_version: str, platform: str = "rocm") -> bool:
    """Whether vLLM profiles graph memory and takes it out of the budget: on CUDA from 0.20.0,
    on ROCm only from 0.26.0 (read from each release's gpu_worker.py)."""
    if versions.known(vllm_version):
        return versions.release(vllm_version).graphs_in_budget.get(platform, False)
    return has(vllm_version, f"graphs_in_budget_{platform}")


def extensible_kv_cache(spec: InstanceSpec) -> bool:
    """0.34.0's extensible KV cache, on by default on CUDA and ROCm unless the KV size is given:
    the cache is sized after graph capture from what is really free (within the budget), and
    the free-memory check at startup is skipped (vllm/config/vllm.py, v1/worker/utils.py)."""
    return (versions.known(spec.vllm_version) and spec.kv_cache_memory_bytes is None
            and versions.release(spec.vllm_version).kv_sized_after_graphs)


@dataclass(frozen=True)
class KvLayout:
    """How the KV cache of one rank is cut into blocks (vLLM's KV-cache groups)."""

    block_bytes: int  # bytes of one block across the layers of one group
    full_groups: int
    sliding_groups: int
    window: int
    block_size: int
    cross_tokens: int = 0  # encoder-decoder: encoder frames each request's cross-attention holds

    def blocks_per_request(self, length: int, in_flight: int) -> int:
        full = self.full_groups * math.ceil(length / self.block_size)
        swa_len = min(self.window - 1 + in_flight, length)
        sliding = self.sliding_groups * (math.ceil(swa_len / self.block_size) + 1)
        cross = math.ceil(self.cross_tokens / self.block_size)  # a group of its own
        return full + sliding + cross


def kv_layout(spec: InstanceSpec) -> KvLayout:
    """Full-attention models: one group of all layers. Hybrid sliding/full models: groups of equal
    layer counts drawing on one pool (vLLM kv_cache_planning
    `_get_kv_cache_groups_uniform_page_size`).
    """
    facts = spec.facts
    kv_bytes = kv_dtype_bytes(spec.kv_cache_dtype, facts.dtype_bytes(spec.dtype))
    per_layer = facts.kv_bytes_per_token_layer(spec.tensor_parallel_size, kv_bytes)
    page = per_layer * spec.kv_block_size
    layers = math.ceil(facts.num_layers / spec.pipeline_parallel_size)
    sliding = math.ceil(facts.num_sliding_layers / spec.pipeline_parallel_size)
    full = layers - sliding
    if facts.encoder_tokens:  # Whisper: self- and cross-attention layers, two equal groups
        return KvLayout(layers * page, 1, 0, 0, spec.kv_block_size, facts.encoder_tokens)
    if not sliding or not facts.sliding_window or not full:
        return KvLayout(layers * page, 1, 0, 0, spec.kv_block_size)
    small, large = sorted((full, sliding))
    group = large if large < 1.5 * small else small
    return KvLayout(
        group * page,
        math.ceil(full / group),
        math.ceil(sliding / group),
        facts.sliding_window,
        spec.kv_block_size,
    )


# ---------------------------------------------------------------- messages (vLLM's own words)


def free_memory_message(spec: InstanceSpec, free: int, budget: int) -> str:
    return messages.free_memory(spec.vllm_version, free, spec.gpu_total_bytes, spec.utilization,
                                budget)


def no_kv_message(spec: InstanceSpec) -> str:
    return messages.no_kv_memory(spec.vllm_version, spec.utilization)


def max_len_message(spec: InstanceSpec, needed: int, avail: int, fit: int, tokens: int) -> str:
    return messages.max_seq_len(spec.vllm_version, spec.model_len, needed, avail, fit, tokens,
                                spec.utilization)


def parallelism_error(spec: InstanceSpec) -> str | None:
    heads, tp = spec.facts.num_attention_heads, spec.tensor_parallel_size
    if heads % tp:
        return (
            f"Total number of attention heads ({heads}) must be divisible by tensor parallel "
            f"size ({tp})."
        )
    kv = spec.facts.num_kv_heads
    if (kv >= tp and kv % tp) or (kv < tp and tp % kv):
        # vLLM's attention layers split the KV heads over the ranks, or replicate them when there
        # are fewer heads than ranks (then the ranks must be a multiple of the heads): else
        # model construction fails (an assertion, no message of its own)
        return (
            f"The number of KV heads ({kv}) cannot be split over tensor parallel size ({tp}): "
            "it must be a multiple of it, or a divisor of it when heads are replicated."
        )
    layers, pp = spec.facts.num_layers, spec.pipeline_parallel_size
    if pp > layers:
        return f"Pipeline parallel size ({pp}) is larger than the number of layers ({layers})."
    return None


# ---------------------------------------------------------------- the estimate


def _check_int(name: str, value: object, low: int, high: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(f"{name} {_shown(value)} is out of range", hint=f"use {low} to {high}")


def check_spec(spec: InstanceSpec) -> None:
    """Every number of an instance within sane bounds: NaN, infinity, 0 and absurd sizes are
    InputErrors here, not a crash (or a hang) in the arithmetic below."""
    util = spec.gpu_memory_utilization
    if util is not None and (
        not isinstance(util, (int, float)) or not math.isfinite(util) or not 0 < util <= 1
    ):
        raise InputError(
            f"gpu_memory_utilization {_shown(util)} is out of range", hint="use a value in (0, 1]"
        )
    _check_int("GPU total memory (bytes)", spec.gpu_total_bytes, 1, MAX_GPU_BYTES)
    _check_int("tensor_parallel_size", spec.tensor_parallel_size, 1, MAX_PARALLEL_SIZE)
    _check_int("pipeline_parallel_size", spec.pipeline_parallel_size, 1, MAX_PARALLEL_SIZE)
    _check_int("max_model_len", spec.max_model_len, 1, MAX_MODEL_LEN, optional=True)
    _check_int("max_num_seqs", spec.max_num_seqs, 1, MAX_NUM_SEQS, optional=True)
    _check_int("max_num_batched_tokens", spec.max_num_batched_tokens, 1, MAX_BATCHED_TOKENS,
               optional=True)  # fmt: skip
    _check_int("kv_cache_memory_bytes", spec.kv_cache_memory_bytes, 1, MAX_GPU_BYTES,
               optional=True)  # fmt: skip
    _check_int("block_size", spec.block_size, 1, MAX_BLOCK_SIZE, optional=True)
    _check_int("free memory at start (bytes)", spec.free_bytes_at_start, -MAX_GPU_BYTES * 64,
               MAX_GPU_BYTES, optional=True)  # fmt: skip
    parse_version(spec.vllm_version)


@functools.lru_cache(maxsize=8192)  # pure, and a fleet repeats the same instances host after host
def estimate(spec: InstanceSpec) -> Estimate:
    """Reproduce vLLM's startup for one instance: what it reports, whether it starts, what fits."""
    check_spec(spec)
    budget = math.ceil(spec.gpu_total_bytes * spec.utilization)
    base = baseline_bytes(spec)
    free = (
        spec.gpu_total_bytes - base
        if spec.free_bytes_at_start is None
        else spec.free_bytes_at_start
    )
    weights = spec.facts.weight_bytes_per_rank(
        spec.tensor_parallel_size, spec.pipeline_parallel_size, spec.dtype, spec.quantization,
        spec.platform, spec.vllm_version,  # MXFP4 experts are padded per platform and release
    )
    act, torchless, graphs = activation_bytes(spec), non_torch_bytes(spec), cudagraph_bytes(spec)
    extensible = extensible_kv_cache(spec)
    graph_cost = graphs if extensible or graphs_in_budget(spec.vllm_version, spec.platform) else 0
    non_kv = weights + torchless + act + _charged_before(spec, free)
    if spec.facts.is_pooling:
        kv_avail = 0  # encoder-only models get no KV cache at all
    elif spec.kv_cache_memory_bytes is not None:
        kv_avail = spec.kv_cache_memory_bytes
    elif extensible:  # sized after warm-up from what is free, never beyond the budget
        kv_avail = min(budget, free) - non_kv - graph_cost
    else:
        kv_avail = budget - non_kv - graph_cost
    layout = kv_layout(spec)
    fit = _fit(spec, layout, kv_avail)
    needed = _needed(spec, layout, spec.model_len)
    tokens, concurrency = _capacity(spec, layout, kv_avail)
    kind, error = _first_failure(spec, free, budget, kv_avail, needed, layout, fit, tokens)
    return Estimate(
        starts=kind is None,
        error_kind=kind,
        error=error,
        budget_bytes=budget,
        baseline_bytes=base,
        weights_bytes=weights,
        activation_bytes=act,
        non_torch_bytes=torchless,
        cudagraph_bytes=graphs,
        non_kv_bytes=non_kv,
        kv_cache_bytes=kv_avail,
        kv_tokens=max(tokens, 0),
        block_bytes=layout.block_bytes,
        max_model_len=spec.model_len,
        max_model_len_fit=fit,
        min_util_for_max_model_len=_min_util(
            spec, non_kv + graph_cost + needed + layout.block_bytes
        ),
        max_concurrency=round(concurrency, 2),
        used_bytes=_used_bytes(spec, budget, base, non_kv, kv_avail, graphs, graph_cost),
        utilization=spec.utilization,
    )


def _charged_before(spec: InstanceSpec, free: int) -> int:
    """What device-wide versions charge to the budget of memory in use before the snapshot: the
    own context and every other process (facts §2.2); per-instance versions charge nothing."""
    if not device_wide_accounting(spec.vllm_version) or spec.kv_cache_memory_bytes is not None:
        return 0
    return max(spec.gpu_total_bytes - free, 0)


def _capacity(spec: InstanceSpec, layout: KvLayout, kv_avail: int) -> tuple[int, float]:
    """vLLM's "GPU KV cache size" tokens and maximum concurrency at max_model_len."""
    blocks = max(kv_avail, 0) // layout.block_bytes if layout.block_bytes else 0
    per_request = layout.blocks_per_request(spec.model_len, spec.batching[0]) or 1
    concurrency = blocks / per_request
    if layout.sliding_groups:  # hybrid: concurrency x max_model_len, not a capacity
        return int(concurrency * spec.model_len), concurrency
    return blocks * spec.kv_block_size, concurrency


def _checks_free(spec: InstanceSpec) -> bool:
    """Check #1 runs since 0.9.1. Older per-instance versions have no such check, but on a GPU
    that others already use they run out of memory allocating the KV cache all the same; the
    device-wide ones shrink the KV cache instead (see _charged_before)."""
    if extensible_kv_cache(spec):
        return False
    if checks_free_memory(spec.vllm_version):
        return True
    return spec.free_bytes_at_start is not None and not device_wide_accounting(spec.vllm_version)


def _first_failure(
    spec: InstanceSpec,
    free: int,
    budget: int,
    kv_avail: int,
    needed: int,
    layout: KvLayout,
    fit: int | None,
    tokens: int,
) -> tuple[str | None, str | None]:
    """vLLM's checks in the order it runs them; the first one that fails is what it prints."""
    if (message := parallelism_error(spec)) is not None:
        return "parallelism", message
    if _checks_free(spec) and free < budget:
        return "free_memory", free_memory_message(spec, free, budget)
    if spec.facts.is_pooling:  # encoder-only: no KV cache, so no KV checks (facts §4)
        return None, None
    if kv_avail <= 0 or kv_avail < layout.block_bytes:
        return "no_kv_memory", no_kv_message(spec)
    if needed > kv_avail - layout.block_bytes:
        return "max_model_len", max_len_message(spec, needed, kv_avail, fit or 0, tokens)
    return None, None


def _needed(spec: InstanceSpec, layout: KvLayout, length: int) -> int:
    """KV bytes one request of `length` tokens needs (vLLM's max-seq-len check)."""
    if spec.facts.is_pooling:
        return 0
    return layout.blocks_per_request(length, spec.batching[0]) * layout.block_bytes


def _fit(spec: InstanceSpec, layout: KvLayout, kv_avail: int) -> int | None:
    """Largest max_model_len the KV cache holds (block granularity), capped at the model's limit."""
    if spec.facts.is_pooling:
        return spec.model_len
    room = kv_avail - layout.block_bytes
    limit = spec.facts.max_position_embeddings or spec.model_len
    if room < _needed(spec, layout, 1):
        return None
    lo, hi = 1, max(limit, spec.model_len)
    while lo < hi:  # needed() is monotonic in length: binary search like vLLM's auto-fit
        mid = (lo + hi + 1) // 2
        if _needed(spec, layout, mid) <= room:
            lo = mid
        else:
            hi = mid - 1
    return (lo // spec.kv_block_size) * spec.kv_block_size or lo


def _min_util(spec: InstanceSpec, required: int) -> float | None:
    """Smallest utilization (two decimals, rounded up) whose budget holds non-KV + one request."""
    if spec.kv_cache_memory_bytes is not None or spec.facts.is_pooling:
        return None  # no KV cache is sized from the budget
    util = math.ceil(required / spec.gpu_total_bytes * 100) / 100
    return util if util <= 1.0 else None


def _used_bytes(
    spec: InstanceSpec, budget: int, base: int, non_kv: int, kv: int, graphs: int, graph_cost: int
) -> int:
    """Memory the running process holds per GPU: the whole budget (vLLM fills it with KV) plus
    the baseline (inside the budget in device-wide versions), plus graphs when they lived
    outside the budget (< 0.21)."""
    outside = graphs - graph_cost
    if spec.facts.is_pooling:  # no KV cache fills the budget: the process holds what it uses
        return base + non_kv + graphs
    if spec.kv_cache_memory_bytes is not None:
        return base + non_kv + max(kv, 0) + graphs
    if device_wide_accounting(spec.vllm_version):
        return budget + outside
    if extensible_kv_cache(spec):  # it commits what is free, at most the budget
        return base + non_kv + max(kv, 0) + graph_cost
    return budget + base + outside


def with_free_memory(spec: InstanceSpec, free_bytes: int) -> InstanceSpec:
    """The same instance, started when `free_bytes` are free on its GPU (co-location)."""
    return replace(spec, free_bytes_at_start=free_bytes)
