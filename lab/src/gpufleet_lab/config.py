"""Lab settings and the handles `up` returns: pure data, no side effects."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# `<prefix><n>-h` must fit IFNAMSIZ (15): 6 + 2 digits + 2 leaves room; a trailing digit in the
# prefix would make `gf1` + `1` look like host 11 of prefix `gf`, breaking leftover detection.
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,4}[a-z]$|^[a-z]$")
_NET_RE = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}$")
MAX_HOSTS = 99

BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-venv",
    "sudo",
    "iproute2",
    "curl",
    "ca-certificates",
    "procps",
    "gnupg",
)


@dataclass(frozen=True)
class LabConfig:
    """Where and how a lab lives. Two labs at once need distinct prefix, net, bridge and port."""

    prefix: str = "gf"
    net: str = "10.231.0"
    bridge: str = ""  # default: "<prefix>br0"
    state_dir: Path | None = None  # runtime; default /run/gpufleet-lab/<prefix>
    cache_dir: Path = Path("/var/lib/gpufleet-lab")  # cached base rootfs, debs, mirror GPG key
    extra_packages: tuple[str, ...] = ()
    fake_gpus: int = 8
    gpu_model: str = "mi300x"
    mirror_port: int = 8631
    debian_mirror: str = "http://deb.debian.org/debian"
    suite: str = "bookworm"
    mirror_packages: tuple[str, ...] = ("rocm-smi",)  # served by the lab's fake repo.radeon.com
    boot_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(
                f"lab prefix {self.prefix!r}: 1-6 lowercase letters/digits, "
                "starting and ending with a letter"
            )
        if not _NET_RE.match(self.net):
            raise ValueError(f"lab net {self.net!r}: want the first three octets, e.g. 10.231.0")
        if len(self.bridge_name) > 15:
            raise ValueError(f"bridge name {self.bridge_name!r} is longer than 15 characters")

    @property
    def bridge_name(self) -> str:
        return self.bridge or f"{self.prefix}br0"

    @property
    def run_dir(self) -> Path:
        return self.state_dir or Path("/run/gpufleet-lab") / self.prefix

    @property
    def bridge_ip(self) -> str:
        return f"{self.net}.1"

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(sorted(set(BASE_PACKAGES) | set(self.extra_packages)))

    @property
    def mirror_url(self) -> str:
        return f"http://{self.bridge_ip}:{self.mirror_port}"

    @property
    def wheels_dir(self) -> Path:
        return self.run_dir / "wheels"

    @property
    def cgroup_rel(self) -> str:
        """Cgroup path (relative) that holds all hosts of this lab, in every hierarchy."""
        return f"gpufleet-lab/{self.prefix}"

    def host_name(self, n: int) -> str:
        return f"{self.prefix}{n}"

    def host_address(self, n: int) -> str:
        return f"{self.net}.{10 + n}"

    def host_index(self, name: str) -> int:
        m = re.fullmatch(re.escape(self.prefix) + r"(\d{1,2})", name)
        if not m or not 1 <= int(m.group(1)) <= MAX_HOSTS:
            raise ValueError(f"{name!r} is not a host of lab {self.prefix!r}")
        return int(m.group(1))

    def is_host_name(self, name: str) -> bool:
        try:
            self.host_index(name)
        except ValueError:
            return False
        return True

    def host_dir(self, name: str) -> Path:
        return self.run_dir / "hosts" / name


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    ssh_port: int = 22
    user: str = "root"


@dataclass
class Lab:
    """A running lab: its hosts and the client-side ssh files that reach them."""

    config: LabConfig
    hosts: list[LabHost] = field(default_factory=list)

    @property
    def key(self) -> Path:
        return self.config.run_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.config.run_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.config.run_dir / "ssh_config"

    @property
    def mirror_url(self) -> str:
        return self.config.mirror_url

    @property
    def wheels_dir(self) -> Path:
        return self.config.wheels_dir

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)
