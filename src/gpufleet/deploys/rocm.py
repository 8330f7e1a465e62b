"""ROCm on the host: AMD's key, repositories and pin, the driver, the SMI tools, a GPU check.

Follows AMD's package-manager recipe (shared/facts/rocm.md section 1). Debian 12 uses AMD's
Ubuntu jammy repositories. An unsupported distribution or ROCm/distribution pair stops the
host before any change.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.facts.server import KernelVersion, LinuxDistribution
from pyinfra.operations import apt, server
from pyinfra.operations.util import any_changed

from gpufleet.deploys import operations as ops
from gpufleet.deploys import wanted
from gpufleet.deploys.account import service_user
from gpufleet.deploys.settings import defaults, setting, settings_now
from gpufleet.deploys.target import HostTarget
from gpufleet.deploys.wanted import (
    PIN_FILE,
    SUPPORTED,
    RocmRelease,
    UnsupportedHost,
    pin_text,
    release_for,
    repo_lines,
)
from gpufleet.facts import AmdgpuInitstate

__all__ = ["PIN_FILE", "SUPPORTED", "RocmRelease", "check_supported", "pin_text", "repo_lines",
           "rocm"]


def check_supported(rocm_version: str) -> RocmRelease:
    """The host's ROCm coordinates, or a DeployError naming the host, OS and what is supported.

    Reads only facts that no operation changes (the distribution), so it is safe at prepare
    time: the error comes before any change on the host.
    """
    distro = host.get_fact(LinuxDistribution)
    name = (distro.get("release_meta", {}).get("ID") or distro.get("name") or "?").lower()
    shown = f"{distro.get('name') or name} {distro.get('major')}.{distro.get('minor') or 0:02}"
    try:
        return release_for(name, distro.get("major") or 0, shown, host.name, rocm_version,
                           settings_now())
    except UnsupportedHost as exc:
        raise DeployError(str(exc)) from None


def _wanted(target: HostTarget, release: RocmRelease) -> wanted.StepWanted:
    return wanted.rocm(target, settings_now(), release)


@deploy("ROCm", data_defaults=defaults())
def rocm(target: HostTarget) -> None:
    release = check_supported(target.fleet.rocm_version)
    want = _wanted(target, release)
    sources = _repositories(want, target)
    apt.update(name="Refresh apt lists after the ROCm sources changed.",
               _if=any_changed(*sources))
    driver = None
    if setting("gpufleet_rocm_install_driver"):
        driver = _driver()
    else:
        ops.warn("gpufleet_rocm_install_driver is off: skipping kernel headers, amdgpu-dkms "
                 "and the reboot")
    ops.debs(name="Ensure the ROCm packages are installed.",
             packages=setting("gpufleet_rocm_packages"))
    service_user()  # group membership, so the units can open /dev/kfd
    if driver is not None:
        _reboot_if_needed(driver)
    if setting("gpufleet_rocm_verify_gpus"):
        ops.gpus_visible(name="Ensure rocm-smi sees the host's GPUs.",
                         expected=target.planned.host.gpu_count)


def _repositories(want: wanted.StepWanted, target: HostTarget) -> list:
    ops.debs(name="Ensure the tools to fetch AMD's key are installed.",
             packages=setting("gpufleet_rocm_prerequisite_packages"))
    changed = [ops.keyring(name="Ensure the AMD ROCm signing key is present.",
                           src=setting("gpufleet_rocm_key_url"),
                           dest=setting("gpufleet_rocm_keyring"))]
    batch = tuple(f.path for f in want.files)
    for file in host.loop(want.files):
        what = ("repo.radeon.com packages are pinned above the distro" if file.path == PIN_FILE
                else f"the {file.path.rsplit('/', 1)[-1].removesuffix('.list')} apt repository "
                "is present")
        changed.append(ops.atomic_file(name=f"Ensure {what}.", dest=file.path,
                                       content=file.content, mode=file.mode, batch=batch))
    return changed


def _driver():
    """Kernel headers and amdgpu-dkms; returns the op whose change means 'new driver'."""
    ops.kernel_headers(name="Ensure the running kernel's headers are installed.",
                       kernel=host.get_fact(KernelVersion))
    return ops.debs(name="Ensure the amdgpu kernel driver (DKMS) is installed.",
                    packages=setting("gpufleet_rocm_driver_packages"))


def _reboot_if_needed(driver) -> None:
    def not_live() -> bool:
        return host.get_fact(AmdgpuInitstate) != "live"

    if not setting("gpufleet_rocm_reboot"):
        ops.warn("gpufleet_rocm_reboot is off: reboot the host yourself once amdgpu-dkms is new")
        return
    server.reboot(name="Reboot to load the newly installed amdgpu driver.",
                  reboot_timeout=setting("gpufleet_rocm_reboot_timeout"),
                  _if=[driver.did_change, not_live])
