"""The GPU vendor seam: what gpufleet must know about an accelerator to pin, run and read it.

An `Accelerator` says which variable picks a process's devices, which variables the plan owns,
what a container needs to reach the devices, how the driver lists the GPUs (the survey), and
how to read memory and processes on a host (its SMI tool and parser). `amd` is the one
implementation today; NVIDIA support is one more module here (and its SMI parser in `smi/`),
registered in ACCELERATORS. The GPU models and their memory (`models`) serve every vendor: the
planner sizes H100 cases as well as MI300X ones.
"""

from __future__ import annotations

from typing import Any, Protocol

from gpufleet.errors import InputError
from gpufleet.gpu import amd
from gpufleet.gpu.amd import Advice, Serving
from gpufleet.gpu.models import gpu_model
from gpufleet.gpu.smi import Snapshot

__all__ = ["ACCELERATORS", "Accelerator", "Advice", "Serving", "accelerator", "vendor_rules"]


class Accelerator(Protocol):
    """One GPU vendor's rules (see gpufleet.gpu.amd for the first implementation)."""

    @property
    def vendor(self) -> str: ...
    @property
    def visible_devices_env(self) -> str:
        """The variable a unit sets to pin its GPUs."""
        ...
    @property
    def device_env(self) -> tuple[str, ...]:
        """Every variable that selects devices: the plan owns them."""
        ...
    @property
    def driver_step(self) -> str:
        """The deploy step that installs the driver and its runtime."""
        ...
    @property
    def unit_groups(self) -> tuple[str, ...]:
        """Groups a unit's user needs to open the devices (gpufleet_gpu_groups' default)."""
        ...

    def container_device_args(self) -> list[list[str]]:
        """`docker run` arguments that give a container the GPUs, one group per unit line."""
        ...

    def survey_gpus_script(self) -> str:
        """POSIX sh printing one `GPU[<card>]` line per GPU the driver sees (no SMI start)."""
        ...

    def read_snapshot(self, session: Any) -> Snapshot:
        """Memory and processes of every GPU of a host, over an open SSH session."""
        ...

    @property
    def release_behaviours(self) -> tuple[str, ...]:
        """Named vLLM release behaviours (gpufleet.vllm.releases) its rules look at."""
        ...

    def serving_advice(self, serving: Serving) -> list[Advice]:
        """The vendor's rules for one vLLM service: what will not run, what to set."""
        ...


ACCELERATORS: dict[str, Accelerator] = {"amd": amd.AMD}


def vendor_rules(gpu: str) -> Accelerator | None:
    """The accelerator whose serving rules apply to a GPU model; None for a vendor gpufleet
    plans but does not run (its rules are not written yet)."""
    return ACCELERATORS.get(gpu_model(gpu).vendor)


def accelerator(gpu: str, *, where: str | None = None) -> Accelerator:
    """The accelerator of a GPU model name (`mi300x`): its vendor's implementation."""
    vendor = gpu_model(gpu, where=where).vendor
    if vendor in ACCELERATORS:
        return ACCELERATORS[vendor]
    raise InputError(
        f"GPU {gpu!r} is a {vendor} GPU: gpufleet plans for it, but renders, deploys and reads "
        f"only {', '.join(sorted(ACCELERATORS))} GPUs", where=where,
        hint=f"`gpufleet plan` and `estimate` work for {gpu}; running it needs a "
             f"gpufleet/gpu/{vendor}.py accelerator")
