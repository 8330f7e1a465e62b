"""MI300X host tuning from AMD's system optimization guide: iommu=pt, NUMA balancing off."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from gpufleet.deploys import operations as ops
from gpufleet.deploys.settings import defaults, setting
from gpufleet.deploys.target import HostTarget
from gpufleet.facts import KernelCmdline

GRUB_DROPIN = 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt"\n'
NUMA_KEY = "kernel.numa_balancing"


@deploy("Tuning", data_defaults=defaults())
def tuning(target: HostTarget) -> None:
    if setting("gpufleet_tuning_iommu_pt"):
        iommu_passthrough()
    if setting("gpufleet_tuning_numa_balancing_off"):
        numa_balancing_off()


def iommu_passthrough() -> None:
    dropin = files.put(name="Ensure the kernel command line asks for iommu=pt.",
                       src=StringIO(GRUB_DROPIN), dest=setting("gpufleet_tuning_grub_dropin"),
                       mode="644")
    server.shell(name="Regenerate the GRUB configuration.", commands=["update-grub"],
                 _if=dropin.did_change)
    if "iommu=pt" not in host.get_fact(KernelCmdline):
        ops.warn("iommu=pt is configured but not active: it applies at the next reboot")


def numa_balancing_off() -> None:
    files.put(name="Ensure NUMA balancing stays off after a reboot.",
              src=StringIO(f"{NUMA_KEY} = 0\n"), dest=setting("gpufleet_tuning_sysctl_file"),
              mode="644")
    # Containers may refuse writes to /proc/sys: pyinfra then prints the error as a warning.
    server.sysctl(name="Turn NUMA balancing off now.", key=NUMA_KEY, value=0,
                  _ignore_errors=True)
