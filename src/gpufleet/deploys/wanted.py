"""What a host must look like after each deploy step, as plain data (no pyinfra, no SSH).

The deploys write the files listed here, and the survey (gpufleet.survey) compares a host with
the same description in one round trip: the two cannot disagree about a file's bytes, mode or
owner. Settings arrive as one resolved mapping (group_data defaults < fleet < host < --set).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpufleet.deploys.target import HostTarget, ModelPull
from gpufleet.host.layout import TARGET, UNIT_DIR, unit_name
from gpufleet.inventory import Kind, marker_file, token_file
from gpufleet.vllm import versions

Settings = Mapping[str, Any]
PIN_FILE = "/etc/apt/preferences.d/rocm-pin-600"
SOURCES_DIR = "/etc/apt/sources.list.d"
GRUB_DROPIN = 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt"\n'
NUMA_KEY = "kernel.numa_balancing"
FETCH_SCRIPT = Path(__file__).parents[1] / "host" / "scripts" / "fetch_model.py"

# (distribution, major version) -> (AMD repository codename, oldest ROCm release supporting it)
SUPPORTED = {
    ("ubuntu", 22): ("jammy", (6, 0, 0)),
    ("ubuntu", 24): ("noble", (6, 2, 0)),
    ("debian", 12): ("jammy", (6, 3, 1)),
}


class UnsupportedHost(Exception):
    """The host's OS (or its pairing with the fleet's ROCm) is not supported; str() says why."""


@dataclass(frozen=True)
class RocmRelease:
    """The repository coordinates of one host: codename and versions in the URLs."""

    codename: str
    rocm_version: str
    amdgpu_version: str

    @property
    def major(self) -> int:
        return int(self.rocm_version.split(".")[0])


@dataclass(frozen=True)
class WantedFile:
    path: str
    content: str
    mode: str  # "644", "600"
    user: str = "root"
    group: str = "root"
    secret: bool = False


@dataclass(frozen=True)
class WantedVenv:
    path: str
    dist: str  # distribution name
    version: str | None  # an == pin, or None for "any version"


@dataclass
class StepWanted:
    """One step's end state: what the survey checks before pyinfra is asked to do anything."""

    files: list[WantedFile] = field(default_factory=list)
    debs: list[str] = field(default_factory=list)
    dirs: list[tuple[str, str, str, str]] = field(default_factory=list)  # path, mode, user, group
    venvs: list[WantedVenv] = field(default_factory=list)
    units: list[str] = field(default_factory=list)  # enabled and active
    unit_set: list[str] | None = None  # the exact gpufleet-*.service set (services step)
    images: list[str] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)
    sysctl: dict[str, int] = field(default_factory=dict)
    account: tuple[str, tuple[str, ...], str] | None = None  # user, groups, home
    gpus: int | None = None  # rocm-smi must list at least this many
    kernel_headers: bool = False
    keyring: str | None = None
    cmdline: list[str] = field(default_factory=list)  # words wanted on /proc/cmdline (warn)
    warnings: list[str] = field(default_factory=list)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def release_for(distro_id: str, major: int, shown: str, host_name: str, rocm_version: str,
                settings: Settings) -> RocmRelease:
    """The host's ROCm coordinates, or UnsupportedHost naming the host, OS and what works."""
    key = (distro_id.lower(), major)
    if key not in SUPPORTED:
        raise UnsupportedHost(f"{host_name}: {shown} is not supported; gpufleet installs ROCm on "
                              "Ubuntu 22.04, Ubuntu 24.04 and Debian 12")
    codename, since = SUPPORTED[key]
    if version_tuple(rocm_version) < since:
        raise UnsupportedHost(
            f"{host_name}: ROCm {rocm_version} does not support {shown} (needs ROCm "
            f"{'.'.join(map(str, since))} or later); change fleet.rocm_version")
    pinned = settings["gpufleet_amdgpu_version"]
    if not pinned and version_tuple(rocm_version) >= (7,):
        raise UnsupportedHost(f"{host_name}: ROCm {rocm_version} versions its driver separately: "
                              "set gpufleet_amdgpu_version (e.g. 30.10.1 for ROCm 7.0.1)")
    return RocmRelease(codename, rocm_version, str(pinned or rocm_version))


def repo_lines(release: RocmRelease, settings: Settings) -> dict[str, str]:
    """The two apt source files (name -> content) of AMD's recipe, pointing at the settings."""
    signed = f"[arch=amd64 signed-by={settings['gpufleet_rocm_keyring']}]"
    tail = f"{release.codename} main"
    amdgpu = f"{settings['gpufleet_amdgpu_repo_url']}/{release.amdgpu_version}/ubuntu"
    rocm = [f"deb {signed} {settings['gpufleet_rocm_repo_url']}/{release.rocm_version} {tail}"]
    if release.major >= 7:
        graphics = f"{settings['gpufleet_graphics_repo_url']}/{release.rocm_version}/ubuntu"
        rocm.append(f"deb {signed} {graphics} {tail}")
    return {"amdgpu": f"deb {signed} {amdgpu} {tail}\n", "rocm": "\n".join(rocm) + "\n"}


def pin_text(settings: Settings) -> str:
    priority = settings["gpufleet_rocm_pin_priority"]
    return f"Package: *\nPin: release o=repo.radeon.com\nPin-Priority: {priority}\n"


def account(settings: Settings) -> tuple[str, tuple[str, ...], str]:
    return (settings["gpufleet_service_user"], tuple(settings["gpufleet_gpu_groups"]),
            settings["gpufleet_service_home"])


# ---------------------------------------------------------------- the steps


def rocm(target: HostTarget, settings: Settings, release: RocmRelease) -> StepWanted:
    want = StepWanted(account=account(settings), keyring=settings["gpufleet_rocm_keyring"])
    want.debs += settings["gpufleet_rocm_prerequisite_packages"]
    for name, text in repo_lines(release, settings).items():
        want.files.append(WantedFile(f"{SOURCES_DIR}/{name}.list", text, "644"))
    want.files.append(WantedFile(PIN_FILE, pin_text(settings), "644"))
    if settings["gpufleet_rocm_install_driver"]:
        want.kernel_headers = True
        want.debs += settings["gpufleet_rocm_driver_packages"]
    else:
        want.warnings.append("gpufleet_rocm_install_driver is off: skipping kernel headers, "
                             "amdgpu-dkms and the reboot")
    want.debs += settings["gpufleet_rocm_packages"]
    if settings["gpufleet_rocm_verify_gpus"]:
        want.gpus = target.planned.host.gpu_count
    return want


def tuning(target: HostTarget, settings: Settings) -> StepWanted:
    want = StepWanted()
    if settings["gpufleet_tuning_iommu_pt"]:
        want.files.append(WantedFile(settings["gpufleet_tuning_grub_dropin"], GRUB_DROPIN, "644"))
        want.cmdline.append("iommu=pt")
    if settings["gpufleet_tuning_numa_balancing_off"]:
        want.files.append(WantedFile(settings["gpufleet_tuning_sysctl_file"],
                                     f"{NUMA_KEY} = 0\n", "644"))
        want.sysctl[NUMA_KEY] = 0
    return want


def runtime(target: HostTarget, settings: Settings) -> StepWanted:
    user = settings["gpufleet_service_user"]
    want = StepWanted(account=account(settings))
    want.dirs.append((target.fleet.model_cache, "755", user, user))
    if target.fleet.runtime == "container":
        engine = target.fleet.container_engine
        want.debs += settings["gpufleet_container_packages"][engine]
        if engine == "docker":
            want.units.append("docker.service")
        want.images += images(target)
        return want
    want.debs.append("python3-venv")
    requirement = settings["gpufleet_vllm_requirement"].format(
        **vllm_words(target.fleet.vllm_version))
    want.venvs.append(venv(settings["gpufleet_venv_dir"], requirement))
    if any(p.service.kind is Kind.DOCLING for p in target.services):
        want.venvs.append(venv(settings["gpufleet_docling_venv_dir"],
                               settings["gpufleet_docling_requirement"]))
    return want


def vllm_words(version: str) -> dict[str, str]:
    """What {version} and {rocm_variant} stand for in the vLLM venv's settings."""
    return {"version": version, "rocm_variant": versions.release(version).wheel_variant or ""}


def images(target: HostTarget) -> list[str]:
    """Images the host's services run: the fleet's vLLM image and any per-service image."""
    wanted: list[str] = []
    for planned in target.services:
        svc = planned.service
        image = svc.image or (target.fleet.image if svc.kind.runs_vllm else None)
        if image and image not in wanted:
            wanted.append(image)
    return wanted


def venv(path: str, requirement: str) -> WantedVenv:
    name, _, version = requirement.partition("==")
    return WantedVenv(path, name.strip(), version.strip() or None)


def weights(target: HostTarget, settings: Settings) -> StepWanted:
    want = StepWanted()
    pulls = target.model_pulls()
    if not settings["gpufleet_weights_download"]:
        want.warnings.append("gpufleet_weights_download is off: not downloading "
                             f"{len(pulls)} model(s); units start from what is in the cache")
        return want
    if not pulls:
        return want
    state_dir = settings["gpufleet_weights_state_dir"]
    want.debs.append("python3-venv")
    want.venvs.append(venv(settings["gpufleet_weights_venv_dir"],
                           settings["gpufleet_weights_requirement"]))
    want.dirs.append((state_dir, "700", "root", "root"))
    want.files.append(WantedFile(f"{state_dir}/fetch_model.py", FETCH_SCRIPT.read_text(), "600"))
    for secret in sorted({p.token_secret for p in pulls if p.token_secret}):
        want.files.append(WantedFile(token_path(settings, secret), target.tokens.get(secret, ""),
                                     "600", secret=True))
    want.markers += [marker_path(target.fleet.model_cache, p) for p in pulls]
    return want


def token_path(settings: Settings, secret: str) -> str:
    return token_file(settings["gpufleet_weights_state_dir"], secret)


def marker_path(cache: str, pull: ModelPull) -> str:
    return marker_file(cache, pull.model, pull.revision)


def services(target: HostTarget) -> StepWanted:
    want = StepWanted(unit_set=[unit_name(p.name) for p in target.services])
    for rendered in target.files:
        want.files.append(WantedFile(rendered.path, rendered.content, rendered.mode.lstrip("0"),
                                     rendered.owner, rendered.group, rendered.secret))
    want.units += [unit_name(p.name) for p in target.services]
    if any(f.path == f"{UNIT_DIR}/{TARGET}" for f in target.files):
        want.units.append(TARGET)
    return want


def host_wanted(target: HostTarget, settings: Settings, steps: list[str],
                release: RocmRelease | None) -> dict[str, StepWanted]:
    """Step -> its end state, for the chosen steps (rocm needs the host's release)."""
    builders = {
        "rocm": lambda: rocm(target, settings, release) if release else StepWanted(),
        "tuning": lambda: tuning(target, settings),
        "runtime": lambda: runtime(target, settings),
        "weights": lambda: weights(target, settings),
        "services": lambda: services(target),
    }
    return {step: builders[step]() for step in steps}


def managed_paths(wanted: Mapping[str, StepWanted]) -> tuple[str, ...]:
    """Every file the steps write: read in one command by the deploys' FileStates fact."""
    return tuple(sorted({f.path for w in wanted.values() for f in w.files}))
