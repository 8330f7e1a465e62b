"""vLLM's startup with the GPU and the weights emulated: checks, load time, VRAM claims.

Order as in vLLM's V1 worker: config checks; HIP context (baseline) on each GPU; the free-memory
check against the budget; weight loading; the profiling run (memory other processes allocate
meanwhile is charged to this one, vllm#55827); KV-cache allocation. The numbers are the double's
own (_startup.py, startups.json, or a test's VLLM_TEST_DOUBLE_MEMORY), never gpufleet's planner;
VRAM is claimed on the lab's emulated GPUs (fakegpu).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import _deps, _startup
from . import args as cli_args
from ._log import error, info, warning

GIB = 1 << 30
LOAD_SECONDS_ENV = "VLLM_TEST_DOUBLE_LOAD_SECONDS"
DEVIATION_ENV = "VLLM_TEST_DOUBLE_VRAM_DEVIATION"
FAIL_ENV = "VLLM_TEST_DOUBLE_FAIL"
# A test knob, not vLLM's: bytes each served request adds to the claim on every GPU (a leak).
LEAK_ENV = "VLLM_TEST_DOUBLE_LEAK_BYTES_PER_REQUEST"
ENGINE_FAILED = (
    "RuntimeError: Engine core initialization failed. See root cause above. "
    "Failed core proc(s): {}"
)


class StartupError(Exception):
    """vLLM would die here; str() is the root-cause line it prints (exception type included)."""


@dataclass
class Engine:
    """A started instance: what the server needs to answer like this model would."""

    args: argparse.Namespace
    facts: _startup.Profile
    task: str  # generate | transcription | embed | classify
    gpus: list[int]  # physical card indices, one per rank
    served_names: list[str]
    max_model_len: int
    startup: _startup.Startup | None = None
    claimed: int = 0  # bytes held on each GPU
    fail_mode: str = field(default_factory=lambda: os.environ.get(FAIL_ENV, ""))
    leak_bytes: int = field(default_factory=lambda: int(os.environ.get(LEAK_ENV, "0") or 0))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.served_names[0]


# ---------------------------------------------------------------- which GPUs, which model


def visible_gpus(count: int, env: dict[str, str]) -> list[int]:
    """Physical indices this process sees: ROCR filters first, HIP/CUDA index what is left.

    As in HIP/CUDA, the list stops at the first entry that is not a valid index.
    """
    hip, cuda = env.get("HIP_VISIBLE_DEVICES"), env.get("CUDA_VISIBLE_DEVICES")
    if hip is not None and cuda is not None and hip != cuda:
        raise StartupError(
            f"ValueError: Inconsistent GPU visibility env vars: HIP_VISIBLE_DEVICES={hip} vs "
            f"CUDA_VISIBLE_DEVICES={cuda}. Please set only one, or ensure they match.")
    seen = _select(list(range(count)), env.get("ROCR_VISIBLE_DEVICES"))
    return _select(seen, hip if hip is not None else cuda)


def _select(devices: list[int], spec: str | None) -> list[int]:
    if spec is None:
        return devices
    chosen: list[int] = []
    for token in (t.strip() for t in spec.split(",")) if spec.strip() else ():
        if not token.isdigit() or int(token) >= len(devices) or devices[int(token)] in chosen:
            break
        chosen.append(devices[int(token)])
    return chosen


def model_task(facts: Any, args: argparse.Namespace) -> str:
    """What the model serves, as vLLM picks it from --task / --runner / --convert / the arch."""
    by_task = {"generate": "generate", "embedding": "embed", "embed": "embed", "reward": "embed",
               "classify": "classify", "score": "classify", "transcription": "transcription"}
    if args.task and args.task in by_task:
        return by_task[args.task]
    if args.convert in ("embed", "reward"):
        return "embed"
    if args.convert == "classify":
        return "classify"
    arch = facts.architecture
    if args.runner != "pooling" and "Whisper" in arch:
        return "transcription"
    if args.runner == "pooling" or facts.task in ("embed", "classify"):
        return "classify" if arch.endswith("ForSequenceClassification") else "embed"
    return "generate"


def load_facts(args: argparse.Namespace) -> _startup.Profile:
    """How the model starts (startups.json, a test's overrides); the lab knows its models."""
    name = args.model.rstrip("/")
    try:
        found = _startup.profile(name) or _startup.profile("/".join(name.split("/")[-2:]))
    except _startup.MemoryError_ as e:
        raise StartupError(f"ValueError: {e}") from e
    if found is None:
        raise StartupError(
            f"OSError: {args.model} is not a local folder and is not a valid model identifier "
            "listed on 'https://huggingface.co/models' (vllm-test-double: not one of the models "
            "in its startups.json)")
    return found


DEFAULT_UTILIZATION = 0.9  # vLLM's default before 0.20, where the release data has none


def utilization(args: argparse.Namespace) -> float:
    value = args.gpu_memory_utilization
    if value is None:
        return float(cli_args.release_default("gpu_memory_utilization", DEFAULT_UTILIZATION))
    return float(value)


def block_size(args: argparse.Namespace) -> int:
    return int(args.block_size or cli_args.release_default("block_size", 16))


def requested_len(args: argparse.Namespace) -> int | None:
    """--max-model-len as given; -1 ('auto', 0.14.1+) is the model's own length, as unset is.
    (vLLM then shrinks it to what the KV cache holds; the double does not.)"""
    value = args.max_model_len
    return None if value == -1 else value


def batched_tokens(args: argparse.Namespace, facts: _startup.Profile) -> int:
    """The profiling run's token count: --max-num-batched-tokens, else vLLM's default."""
    return int(args.max_num_batched_tokens or max(8192, requested_len(args) or 0))


def check_max_model_len(args: argparse.Namespace, facts: Any) -> None:
    """vLLM refuses a max_model_len above the config's unless explicitly allowed."""
    derived = getattr(facts, "max_position_embeddings", None)
    if not (requested_len(args) and derived and args.max_model_len > derived):
        return
    if os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN") == "1":
        warning("model.py:1792", f"User-specified max_model_len ({args.max_model_len}) is "
                f"greater than the derived max_model_len ({derived}). Allowed by env.")
        return
    raise StartupError(
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
        f"  Value error, User-specified max_model_len ({args.max_model_len}) is greater than the "
        f"derived max_model_len (max_position_embeddings={derived} or model_max_length=None in "
        "model's config.json). To allow overriding this maximum, set the env var "
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with "
        "extreme caution.")


# ---------------------------------------------------------------- startup


def configure(args: argparse.Namespace, env: dict[str, str]) -> Engine:
    """Everything vLLM checks before touching a GPU (config time)."""
    fakegpu = _deps.fakegpu()
    try:
        cards = fakegpu.gpus()
    except FileNotFoundError as e:  # no emulated GPUs on this host
        raise StartupError("RuntimeError: Failed to infer device type") from e
    visible = visible_gpus(len(cards), env)
    if not visible:
        raise StartupError("RuntimeError: No HIP GPUs are available")
    facts = load_facts(args)
    check_max_model_len(args, facts)
    world = args.tensor_parallel_size * args.pipeline_parallel_size
    if world > len(visible):
        raise StartupError(
            "pydantic_core._pydantic_core.ValidationError: 1 validation error for ParallelConfig\n"
            f"  Value error, World size ({world}) is larger than the number of available GPUs "
            f"({len(visible)}) in this node. If this is intentional and you are using:\n"
            "- ray, set '--distributed-executor-backend ray'.\n"
            "- multiprocessing, set '--nnodes' appropriately.")
    problem = _startup.parallelism_problem(facts, args.tensor_parallel_size)
    if problem:
        raise StartupError(f"ValueError: {problem}")
    names = args.served_model_name or [args.model]
    length = requested_len(args) or facts.max_position_embeddings
    return Engine(args, facts, model_task(facts, args), visible[:world], names, length)


def _load_seconds() -> float:
    return float(os.environ.get(LOAD_SECONDS_ENV, "3"))


def _deviation() -> float:
    return float(os.environ.get(DEVIATION_ENV, "0") or 0)


def _claim(engine: Engine, per_gpu: int) -> None:
    fakegpu = _deps.fakegpu()
    try:
        fakegpu.claim(os.getpid(), {i: per_gpu for i in engine.gpus})
    except fakegpu.OutOfMemory as e:
        raise StartupError(
            f"torch.OutOfMemoryError: HIP out of memory. Tried to allocate "
            f"{(e.requested - engine.claimed) / GIB:.2f} GiB. GPU {engine.gpus.index(e.index)} "
            f"has a total capacity of {e.total / GIB:.2f} GiB of which "
            f"{max(e.free - engine.claimed, 0) / GIB:.2f} GiB is free.") from e
    engine.claimed = per_gpu


def _others(engine: Engine) -> dict[int, int]:
    """Bytes other processes hold on each of this engine's GPUs (after dead ones are freed)."""
    states = {s.index: s for s in _deps.fakegpu().gpus()}
    return {i: states[i].used_bytes - engine.claimed for i in engine.gpus}


def _free_at_snapshot(engine: Engine) -> tuple[int, int]:
    """(free, total) of the fullest GPU after this process's context exists (vLLM's F0)."""
    states = {s.index: s for s in _deps.fakegpu().gpus()}
    worst = min((states[i] for i in engine.gpus), key=lambda s: s.free_bytes)
    return worst.free_bytes, worst.total_bytes


def start(engine: Engine) -> None:
    """Context, free-memory check, weights, profile, KV cache; raises StartupError like vLLM."""
    args, facts = engine.args, engine.facts
    tp, pp = args.tensor_parallel_size, args.pipeline_parallel_size
    _claim(engine, facts.baseline_bytes)  # HIP context (+ RCCL) before the snapshot
    free, total = _free_at_snapshot(engine)
    problem = _startup.free_memory_problem(total, free, utilization(args))
    if problem:
        raise StartupError(f"ValueError: {problem}")
    others = _others(engine)
    weights = facts.weights_bytes // max(tp * pp, 1)
    info("gpu_model_runner.py:2602", f"Starting to load model {args.model}...")
    time.sleep(_load_seconds())
    _claim(engine, facts.baseline_bytes + weights)
    info("gpu_model_runner.py:2653", f"Model loading took {weights / GIB:.4f} GiB "
         f"and {_load_seconds():.6f} seconds")
    time.sleep(min(0.5, 0.2 * _load_seconds()))  # the profiling run
    charged = max(max(0, now - before) for now, before in zip(
        _others(engine).values(), others.values(), strict=True))
    if charged and facts.has_kv_cache:
        warning("gpu_worker.py:300", f"{charged / GIB:.2f} GiB allocated by other processes "
                "during memory profiling is charged to this instance (concurrent startup on "
                "one GPU)")
    try:
        done = _startup.start(
            facts, total=total, utilization=utilization(args),
            max_model_len=engine.max_model_len, batched_tokens=batched_tokens(args, facts),
            kv_cache_dtype=args.kv_cache_dtype, tp=tp, pp=pp, block_size=block_size(args),
            charged=charged if facts.has_kv_cache else 0)
    except _startup.MemoryError_ as e:
        raise StartupError(f"ValueError: {e}") from e
    engine.startup = done
    _claim(engine, int(done.held_bytes * (1 + _deviation())))
    _log_kv(engine, done)


def _log_kv(engine: Engine, done: _startup.Startup) -> None:
    length = done.max_model_len
    if not engine.facts.has_kv_cache:
        info("gpu_worker.py:298", "Encoder-only model: no KV cache is allocated")
    else:
        info("gpu_worker.py:298", f"Available KV cache memory: {done.kv_cache_bytes / GIB:.2f} "
             "GiB")
        info("kv_cache_utils.py:1087", f"GPU KV cache size: {done.kv_tokens:,} tokens")
        info("kv_cache_utils.py:1091", f"Maximum concurrency for {length:,} tokens per request:"
             f" {done.kv_tokens / max(length, 1):.2f}x")
    info("core.py:210", f"init engine (profile, create kv cache, warmup model) took "
         f"{_load_seconds():.2f} seconds (vllm-test-double: {engine.claimed:,} B claimed on "
         f"GPU(s) {','.join(map(str, engine.gpus))})")


# ---------------------------------------------------------------- serving


def serve_request(engine: Engine) -> None:
    """What one request does to the GPU memory, as vLLM: nothing an SMI tool sees. The KV cache
    was allocated whole at startup, and a forward pass never schedules more than
    max_num_batched_tokens, the profiling run's size, so its activations reuse the peak that
    PyTorch's caching allocator reserved then (and the startup claim holds): a well-planned
    instance stays at its startup claim under any load. Only the test knob LEAK_ENV grows the
    claim, by its bytes per request on every GPU; once the leak no longer fits, the request
    fails with HIP's out-of-memory error (StartupError's text), as a real leak would."""
    if engine.leak_bytes <= 0:
        return
    with engine.lock:
        _claim(engine, engine.claimed + engine.leak_bytes)


def release(engine: Engine | None) -> None:
    """What process exit does on a real GPU, done at once (no waiting for the sweep)."""
    if engine is not None and engine.claimed:
        _deps.fakegpu().release(os.getpid())
        engine.claimed = 0


def report_failure(message: str) -> None:
    """The tail of vLLM's output when the engine core dies at startup."""
    error("core.py:708", "EngineCore failed to start.")
    for line in message.splitlines():
        error("core.py:708", line)
    print(ENGINE_FAILED, flush=True, file=sys.stderr)
