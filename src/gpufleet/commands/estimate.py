"""`gpufleet estimate`: one vLLM instance, vLLM's startup arithmetic, before anything runs."""

from __future__ import annotations

import argparse
import json
import math

from gpufleet.commands import SUMMARIES
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus, InputError
from gpufleet.gpu.models import GIB, gpu_model
from gpufleet.vllm import knobs
from gpufleet.vllm.memory import (
    DEFAULT_VLLM_VERSION,
    MAX_GPU_BYTES,
    Estimate,
    InstanceSpec,
    estimate,
)
from gpufleet.vllm.models import find_model, load_model_dir
from gpufleet.vllm.releases import check_vllm_version


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(
        "estimate",
        help=SUMMARIES["estimate"],
        description=__doc__,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--config",
        metavar="PATH",
        help="folder holding config.json (and optionally model.safetensors.index.json)",
    )
    src.add_argument("--model", metavar="ID", help="model id from the catalog or the HF cache")
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", metavar="NAME", default=None, help="GPU model (default mi300x)")
    gpu.add_argument("--gpu-mem-gib", type=float, metavar="FLOAT", help="GPU total memory in GiB")
    knobs.add_estimate_options(p)  # --util, --tp, --max-model-len, ... (gpufleet.vllm.knobs)
    p.add_argument("--vllm-version", default=DEFAULT_VLLM_VERSION)
    p.add_argument("--json", action="store_true", help="print the estimate as JSON (see README)")
    p.set_defaults(func=run)
    return p


MIN_GPU_MEM_GIB = 0.001  # about 1 MiB: below it the byte count rounds to nothing
MAX_GPU_MEM_GIB = MAX_GPU_BYTES / GIB
def _check_ranges(args: argparse.Namespace) -> None:
    """The GPU size and the version in range (the knobs check their own: knobs.estimate_values)."""
    gib = args.gpu_mem_gib
    if gib is not None and not (math.isfinite(gib) and MIN_GPU_MEM_GIB <= gib <= MAX_GPU_MEM_GIB):
        raise InputError(
            f"--gpu-mem-gib {gib} is out of range",
            hint=f"use a size in GiB from {MIN_GPU_MEM_GIB:g} to {MAX_GPU_MEM_GIB:.0f}",
        )
    check_vllm_version(args.vllm_version)


def spec_from_args(args: argparse.Namespace) -> InstanceSpec:
    _check_ranges(args)
    values = knobs.estimate_values(args)
    facts = load_model_dir(args.config) if args.config else find_model(args.model)
    total = (
        int(args.gpu_mem_gib * GIB)
        if args.gpu_mem_gib is not None
        else gpu_model(args.gpu or "mi300x").total_bytes
    )
    return InstanceSpec(
        facts=facts,
        gpu_total_bytes=total,
        **values,
        vllm_version=args.vllm_version,
    )


def estimate_dict(est: Estimate, spec: InstanceSpec) -> dict[str, object]:
    """The `estimate --json` contract (documented in the README)."""

    def g(v: int) -> float:
        return round(v / GIB, 3)

    return {
        "model": spec.facts.model_id,
        "vllm_version": spec.vllm_version,
        "gpu_total_gib": g(spec.gpu_total_bytes),
        "gpu_memory_utilization": est.utilization,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "pipeline_parallel_size": spec.pipeline_parallel_size,
        "starts": est.starts,
        "error_kind": est.error_kind,
        "error": est.error,
        "budget_gib": g(est.budget_bytes),
        "baseline_gib": g(est.baseline_bytes),
        "weights_gib": g(est.weights_bytes),
        "activation_gib": g(est.activation_bytes),
        "cudagraph_gib": g(est.cudagraph_bytes),
        "non_kv_gib": g(est.non_kv_bytes),
        "kv_cache_gib": g(est.kv_cache_bytes),
        "kv_tokens": est.kv_tokens,
        "max_concurrency": est.max_concurrency,
        "used_gib": g(est.used_bytes),
        "max_model_len": est.max_model_len,
        "max_model_len_fit": est.max_model_len_fit,
        "min_util_for_max_model_len": est.min_util_for_max_model_len,
    }


def run(args: argparse.Namespace, env: Environment) -> int:
    from gpufleet.views import show_estimate

    spec = spec_from_args(args)
    est = estimate(spec)
    if args.json:
        env.write_json(json.dumps(estimate_dict(est, spec), indent=2))
    else:
        show_estimate(est, env.out, spec.facts.model_id)
    return ExitStatus.OK if est.starts else ExitStatus.FINDINGS
