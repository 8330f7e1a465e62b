"""vLLM's own words when it refuses to start, per release. The planner reports these so an
operator recognises them in the logs.

For the releases read from source (gpufleet.vllm.versions) the words are that release's own
template, its placeholders filled with the plan's numbers; for older releases (public cases
only) they follow gpufleet.vllm.releases' rows.
"""

from __future__ import annotations

import re

from gpufleet.vllm import releases, versions

GIB = 1 << 30
NO_KV = ("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
         "initializing the engine.")
DEVICE = "cuda:0"  # torch names HIP devices cuda too; the plan's instance sees its GPU as 0
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# What a placeholder's expression names -> the value's key below (first match wins: the
# expressions differ between releases, `GiB(self.requested_memory)` vs `format_gib(...)`).
_KEYS = (("device_", "device"), ("free_memory", "free"), ("total_memory", "total"),
         ("requested_memory", "budget"), ("gpu_memory_utilization", "utilization"),
         ("needed_memory", "needed"), ("available_memory", "available"),
         ("estimated_msg", "estimated"), ("max_model_len", "length"), ("hint", "hint"))


def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def placeholder_key(expression: str) -> str | None:
    """Which plan value a template's `{expression}` stands for; None if none."""
    return next((key for word, key in _KEYS if word in expression), None)


def fill(template: str, values: dict[str, str]) -> str:
    """A release's template with each placeholder replaced by the plan's value for it."""
    def value(match: re.Match[str]) -> str:
        key = placeholder_key(match.group(1))
        return values.get(key, "?") if key else "?"

    text = _PLACEHOLDER.sub(value, template)
    return re.sub(r" {2,}", " ", text)  # an empty estimate or hint leaves no double space


def _template(version: str, name: str) -> str | None:
    if not versions.known(version):
        return None
    return versions.release(version).messages.get(name)


def _more_memory_hint(version: str, utilization: float) -> str:
    """vLLM's advice inside its KV errors: from 0.34.0, with the extensible KV cache (sized
    after graph capture), it names what takes the memory (kv_cache_planning.py:64-95)."""
    if not versions.known(version) or not versions.release(version).kv_sized_after_graphs:
        return ("Try increasing `gpu_memory_utilization` when initializing the engine (this flag "
                "also controls CPU memory reservation on the CPU backend, despite its name).")
    return ("The KV cache gets what is left after the model, its activations, CUDA graphs and "
            f"warmup within `gpu_memory_utilization`={utilization}; increase it (with the "
            "extensible KV cache it defaults to 1.0) or decrease `max_model_len` or "
            "`max_num_seqs`. CUDA graphs take less with fewer or smaller capture sizes in the "
            "compilation config.")


def free_memory(version: str, free: int, total: int, utilization: float, budget: int) -> str:
    template = _template(version, "free_memory")
    if template is not None:
        return fill(template, {"device": DEVICE, "free": _gib(free), "total": _gib(total),
                               "utilization": str(utilization), "budget": _gib(budget)})
    # no device name in [0.10.2] (facts §2.1); older releases are not read from source
    device = f"{DEVICE} " if releases.has(version, "free_memory_names_device") else ""
    return (
        f"Free memory on device {device}({_gib(free)}/{_gib(total)} GiB) on startup "
        f"is less than desired GPU memory utilization ({utilization}, {_gib(budget)} GiB). "
        "Decrease GPU memory utilization or reduce GPU memory used by other processes."
    )


def no_kv_memory(version: str, utilization: float) -> str:
    template = _template(version, "no_cache_memory")
    if template is None:
        return NO_KV
    return fill(template, {"hint": _more_memory_hint(version, utilization)})


def max_seq_len(version: str, length: int, needed: int, avail: int, fit: int, tokens: int,
                utilization: float = 0.9) -> str:
    template = _template(version, "max_seq_len")
    if template is not None:
        estimated = (f"Based on the available memory, the estimated maximum model length is "
                     f"{fit}. " if fit > 0 else "")
        return fill(template, {"length": str(length), "needed": _gib(needed),
                               "available": _gib(avail), "estimated": estimated,
                               "hint": _more_memory_hint(version, utilization)})
    if not releases.has(version, "v1_engine"):
        return (
            f"The model's max seq len ({length}) is larger than the maximum number of tokens that "
            f"can be stored in KV cache ({tokens}). Try increasing `gpu_memory_utilization` or "
            "decreasing `max_model_len` when initializing the engine."
        )
    return (
        f"To serve at least one request with the models's max seq len ({length}), "
        f"({_gib(needed)} GiB KV cache is needed, which is larger than the available KV cache "
        f"memory ({_gib(avail)} GiB). Based on the available memory, the estimated maximum "
        f"model length is {fit}. Try increasing `gpu_memory_utilization` or decreasing "
        "`max_model_len` when initializing the engine."
    )
