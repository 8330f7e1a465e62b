"""ROCm on the host: AMD's key, repositories and pin, the driver, the SMI tools, a GPU check.

Follows AMD's package-manager recipe (shared/facts/rocm.md section 1). Debian 12 uses AMD's
Ubuntu jammy repositories. An unsupported distribution or ROCm/distribution pair stops the
host before any change.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import StringIO

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.facts.server import KernelVersion, LinuxDistribution
from pyinfra.operations import apt, files, server
from pyinfra.operations.util import any_changed

from gpufleet.deploys import operations as ops
from gpufleet.deploys.account import service_user
from gpufleet.deploys.settings import defaults, setting
from gpufleet.deploys.target import HostTarget
from gpufleet.facts import AmdgpuInitstate

# (distribution, major version) -> (AMD repository codename, oldest ROCm release supporting it)
SUPPORTED = {
    ("ubuntu", 22): ("jammy", (6, 0, 0)),
    ("ubuntu", 24): ("noble", (6, 2, 0)),
    ("debian", 12): ("jammy", (6, 3, 1)),
}
PIN_FILE = "/etc/apt/preferences.d/rocm-pin-600"


@dataclass(frozen=True)
class RocmRelease:
    """The repository coordinates of one host: codename and versions in the URLs."""

    codename: str
    rocm_version: str
    amdgpu_version: str

    @property
    def major(self) -> int:
        return int(self.rocm_version.split(".")[0])


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def check_supported(rocm_version: str) -> RocmRelease:
    """The host's ROCm coordinates, or a DeployError naming the host, OS and what is supported.

    Reads only facts that no operation changes (the distribution), so it is safe at prepare
    time: the error comes before any change on the host.
    """
    distro = host.get_fact(LinuxDistribution)
    name = (distro.get("release_meta", {}).get("ID") or distro.get("name") or "?").lower()
    key = (name, distro.get("major") or 0)
    shown = f"{distro.get('name') or name} {distro.get('major')}.{distro.get('minor') or 0:02}"
    if key not in SUPPORTED:
        raise DeployError(
            f"{host.name}: {shown} is not supported; gpufleet installs ROCm on Ubuntu 22.04, "
            "Ubuntu 24.04 and Debian 12"
        )
    codename, since = SUPPORTED[key]
    if _version(rocm_version) < since:
        raise DeployError(
            f"{host.name}: ROCm {rocm_version} does not support {shown} (needs ROCm "
            f"{'.'.join(map(str, since))} or later); change fleet.rocm_version"
        )
    return RocmRelease(codename, rocm_version, _amdgpu_version(rocm_version))


def _amdgpu_version(rocm_version: str) -> str:
    pinned = setting("gpufleet_amdgpu_version")
    if pinned:
        return str(pinned)
    if _version(rocm_version) >= (7,):
        raise DeployError(
            f"{host.name}: ROCm {rocm_version} versions its driver separately: set "
            "gpufleet_amdgpu_version (e.g. 30.10.1 for ROCm 7.0.1)"
        )
    return rocm_version


def repo_lines(release: RocmRelease) -> dict[str, str]:
    """The two apt source files (name -> content) of AMD's recipe, pointing at the settings."""
    signed = f"[arch=amd64 signed-by={setting('gpufleet_rocm_keyring')}]"
    tail = f"{release.codename} main"
    amdgpu = f"{setting('gpufleet_amdgpu_repo_url')}/{release.amdgpu_version}/ubuntu"
    rocm = [f"deb {signed} {setting('gpufleet_rocm_repo_url')}/{release.rocm_version} {tail}"]
    if release.major >= 7:
        graphics = f"{setting('gpufleet_graphics_repo_url')}/{release.rocm_version}/ubuntu"
        rocm.append(f"deb {signed} {graphics} {tail}")
    return {"amdgpu": f"deb {signed} {amdgpu} {tail}\n", "rocm": "\n".join(rocm) + "\n"}


def pin_text() -> str:
    priority = setting("gpufleet_rocm_pin_priority")
    return f"Package: *\nPin: release o=repo.radeon.com\nPin-Priority: {priority}\n"


@deploy("ROCm", data_defaults=defaults())
def rocm(target: HostTarget) -> None:
    release = check_supported(target.fleet.rocm_version)
    sources = _repositories(release)
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


def _repositories(release: RocmRelease) -> list:
    ops.debs(name="Ensure the tools to fetch AMD's key are installed.",
             packages=setting("gpufleet_rocm_prerequisite_packages"))
    changed = [apt.key(name="Ensure the AMD ROCm signing key is present.",
                       src=setting("gpufleet_rocm_key_url"),
                       dest=setting("gpufleet_rocm_keyring"))]
    for name, text in host.loop(repo_lines(release).items()):
        changed.append(files.put(name=f"Ensure the {name} apt repository is present.",
                                 src=StringIO(text), dest=f"/etc/apt/sources.list.d/{name}.list",
                                 mode="644"))
    changed.append(files.put(name="Ensure repo.radeon.com packages are pinned above the distro.",
                             src=StringIO(pin_text()), dest=PIN_FILE, mode="644"))
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
