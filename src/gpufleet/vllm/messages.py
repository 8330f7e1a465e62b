"""vLLM's own words when it refuses to start, per release (gpufleet.vllm.releases says which
wording a release has). The planner reports these so an operator recognises them in the logs."""

from __future__ import annotations

from gpufleet.vllm import releases

GIB = 1 << 30
NO_KV = ("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
         "initializing the engine.")


def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def free_memory(version: str, free: int, total: int, utilization: float, budget: int) -> str:
    # no device name in [0.10.2] (facts §2.1) nor in vllm-omni-276 (Dec 2025, vLLM version not
    # stated); "cuda:0" in vllm-36720 and pytorch-175666 (2026). 0.11.0 is an unverified guess.
    device = "cuda:0 " if releases.has(version, "free_memory_names_device") else ""
    return (
        f"Free memory on device {device}({_gib(free)}/{_gib(total)} GiB) on startup "
        f"is less than desired GPU memory utilization ({utilization}, {_gib(budget)} GiB). "
        "Decrease GPU memory utilization or reduce GPU memory used by other processes."
    )


def max_seq_len(version: str, length: int, needed: int, avail: int, fit: int,
                tokens: int) -> str:
    if not releases.has(version, "v1_engine"):
        return (
            f"The model's max seq len ({length}) is larger than the maximum number of tokens that "
            f"can be stored in KV cache ({tokens}). Try increasing `gpu_memory_utilization` or "
            "decreasing `max_model_len` when initializing the engine."
        )
    new = releases.has(version, "model_s_max_seq_len_wording")
    return (
        f"To serve at least one request with the {'model' if new else 'models'}'s max seq len "
        f"({length}), ({_gib(needed)} GiB KV cache is needed, which is larger than the available "
        f"KV cache memory ({_gib(avail)} GiB). Based on the available memory, the estimated "
        f"maximum model length is {fit}. Try increasing `gpu_memory_utilization` "
        f"{'(which also controls CPU memory on the CPU backend) ' if new else ''}or decreasing "
        "`max_model_len` when initializing the engine."
    )
