"""GPU models gpufleet knows: the total memory each reports to the runtime (hipMemGetInfo)."""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.errors import InputError

GIB = 1 << 30


@dataclass(frozen=True)
class GpuModel:
    name: str
    total_bytes: int  # what vLLM sees as total device memory
    vendor: str
    note: str


# Totals are what the runtime reports (not the marketing size): MI300X's 192 GB HBM3 shows as
# 206141652992 B = 191.98 GiB; the NVIDIA values are those printed in vLLM logs of real cases.
GPU_MODELS: dict[str, GpuModel] = {
    g.name: g
    for g in (
        GpuModel("mi300x", 206_141_652_992, "amd", "AMD Instinct MI300X, 192 GB HBM3"),
        GpuModel("mi325x", 274_877_906_944, "amd", "AMD Instinct MI325X, 256 GB HBM3E"),
        GpuModel("mi308x", 206_141_652_992, "amd", "AMD Instinct MI308X, 192 GB HBM3"),
        GpuModel("mi250x-gcd", 68_702_699_520, "amd", "one GCD of an MI250X, 64 GiB"),
        GpuModel("mi210", 68_702_699_520, "amd", "AMD Instinct MI210, 64 GiB"),
        GpuModel("h200", int(139.8 * GIB), "nvidia", "NVIDIA H200 141 GB"),
        GpuModel("h100", int(79.1 * GIB), "nvidia", "NVIDIA H100 80 GB"),
        GpuModel("a100-80g", int(79.15 * GIB), "nvidia", "NVIDIA A100 80 GB"),
        GpuModel("a100-40g", int(39.38 * GIB), "nvidia", "NVIDIA A100 40 GB"),
        GpuModel("l40s", int(44.42 * GIB), "nvidia", "NVIDIA L40S 48 GB"),
        GpuModel("rtx4090", int(23.55 * GIB), "nvidia", "NVIDIA RTX 4090 24 GB"),
        GpuModel("rtx3090", int(23.58 * GIB), "nvidia", "NVIDIA RTX 3090 24 GB"),
    )
}


def gpu_model(name: str, *, where: str | None = None) -> GpuModel:
    """Look a GPU model up by name (case-insensitive); unknown names are input errors."""
    key = name.strip().lower()
    if key in GPU_MODELS:
        return GPU_MODELS[key]
    raise InputError(
        f"unknown GPU model {name!r}",
        where=where,
        hint=f"use one of {', '.join(GPU_MODELS)}, or give the memory in GiB explicitly",
    )
