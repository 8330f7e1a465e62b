"""MI300X host tuning from AMD's system optimization guide: iommu=pt, NUMA balancing off."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from gpufleet.deploys import operations as ops
from gpufleet.deploys import wanted
from gpufleet.deploys.settings import defaults, setting, settings_now
from gpufleet.deploys.target import HostTarget
from gpufleet.deploys.wanted import GRUB_DROPIN, NUMA_KEY
from gpufleet.facts import KernelCmdline

__all__ = ["GRUB_DROPIN", "NUMA_KEY", "tuning"]


@deploy("Tuning", data_defaults=defaults())
def tuning(target: HostTarget) -> None:
    files = {f.path: f for f in wanted.tuning(target, settings_now()).files}
    batch = tuple(files)
    if setting("gpufleet_tuning_iommu_pt"):
        iommu_passthrough(files[setting("gpufleet_tuning_grub_dropin")], batch)
    if setting("gpufleet_tuning_numa_balancing_off"):
        numa_balancing_off(files[setting("gpufleet_tuning_sysctl_file")], batch)


def iommu_passthrough(file: wanted.WantedFile, batch: tuple[str, ...]) -> None:
    dropin = ops.atomic_file(name="Ensure the kernel command line asks for iommu=pt.",
                             dest=file.path, content=file.content, mode=file.mode, batch=batch)
    server.shell(name="Regenerate the GRUB configuration.", commands=["update-grub"],
                 _if=dropin.did_change)
    if "iommu=pt" not in host.get_fact(KernelCmdline):
        ops.warn("iommu=pt is configured but not active: it applies at the next reboot")


def numa_balancing_off(file: wanted.WantedFile, batch: tuple[str, ...]) -> None:
    ops.atomic_file(name="Ensure NUMA balancing stays off after a reboot.", dest=file.path,
                    content=file.content, mode=file.mode, batch=batch)
    # Containers may refuse writes to /proc/sys: pyinfra then prints the error as a warning.
    server.sysctl(name="Turn NUMA balancing off now.", key=NUMA_KEY, value=0,
                  _ignore_errors=True)
